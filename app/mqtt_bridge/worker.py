"""One bridge worker: at-least-once in, exactly-once effect, acks after commit.

* A persistent MQTT 5 session (clean start off, session expiry > 0), QoS 1, and
  paho's manual acknowledgement: a message is acked only after the database
  transaction that applied it has committed. A crash in between means the
  broker redelivers, and the inbox makes the second copy a no-op.
* Messages are applied in micro-batches (one transaction per batch), which is
  what lets one worker keep up with tens of thousands of piles.
* Malformed, oversized, unknown-pile, wrong-schema and wrong-version payloads
  are recorded as rejects, counted, logged with the pile id and *acked*, so
  they are never redelivered forever and never stall the worker.
* The outbox loop sends due commands and expires unacknowledged ones.
"""

from __future__ import annotations

import gc
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as mqtt
from flask import Flask
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy.exc import SQLAlchemyError

from app import protocol
from app.extensions import db
from app.models import BridgeStatus
from app.models.base import utcnow
from app.mqtt_bridge.link import (
    Inbound,
    InboundQueue,
    LinkConfig,
    PahoLink,
    ProcessLink,
    parse_mqtt_url,
)
from app.services import outbox
from app.services.telemetry import (
    BatchResult,
    Outcome,
    PileDirectory,
    Rejected,
    Uplink,
    apply_uplinks,
)
from app.services.uow import UnitOfWork

log = logging.getLogger("evc.bridge")

UPLINK_FILTER = "piles/+/up/#"
SESSION_EXPIRY_S = 24 * 3600  # the broker keeps our queue this long while we are away
BATCH_MAX = 1000
# MQTT 5 Receive Maximum: how many unacked QoS 1 messages the broker may have out to us.
# Messages are acked only after their batch commits, so with a maximum equal to one
# batch the broker stops sending while we commit; four batches keep the next ones
# arriving meanwhile (bench/ingest.py; docs/broker.md).
RECEIVE_MAXIMUM = 4 * BATCH_MAX


@dataclass
class BridgeStats:
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    commit_failures: int = 0
    commands_sent: int = 0
    commands_expired: int = 0
    connected: bool = False
    connects: int = 0
    last_lag_ms: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def snapshot(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {
            "received": self.received, "applied": self.applied, "duplicates": self.duplicates,
            "rejected": self.rejected, "reject_reasons": dict(self.reasons),
            "batches": self.batches, "commit_failures": self.commit_failures,
            "commands_sent": self.commands_sent, "commands_expired": self.commands_expired,
            "connects": self.connects, "lag_ms": round(self.last_lag_ms, 1),
            "rate_per_s": round(self.applied / elapsed, 1), "uptime_s": round(elapsed),
        }


def to_uplink(msg: Inbound) -> Uplink | Rejected:
    """Validate one message; anything wrong becomes a Rejected with a reason code."""
    parts = msg.topic.split("/")
    serial: str | None = parts[1] if len(parts) > 2 else None  # for the log, even if unknown
    try:
        serial, direction, msg_type = protocol.parse_topic(msg.topic)
        if direction != "up":
            raise protocol.ProtocolError("unknown_type", "not an uplink topic")
        body = protocol.validate_uplink(msg.topic, msg.payload)
    except protocol.ProtocolError as exc:
        return Rejected(msg.topic, serial, exc.code, str(exc),
                        msg.payload[:200].decode("utf-8", "replace"))
    return Uplink(msg_type, serial, body)


class BridgeWorker:
    """One worker: the MQTT link, the ingest loop, the outbox loop, health.

    ``link="process"`` runs paho in a child process (``flask bridge run``): paho and
    the ingest then use two cores instead of taking turns on the GIL. ``"thread"``
    keeps everything in this process (tests, the demo); see app.mqtt_bridge.link."""

    def __init__(
        self,
        app: Flask,
        *,
        worker: str = "1",
        group: str = "bridge",
        batch_max: int = BATCH_MAX,
        batch_wait_s: float = 0.01,
        outbox_interval_s: float = 0.2,
        session_expiry_s: int = SESSION_EXPIRY_S,
        link: Literal["thread", "process"] = "thread",
        lanes: int = 1,
    ) -> None:
        self.app = app
        settings = app.config["SETTINGS"]
        host, port, tls = parse_mqtt_url(settings.mqtt_url)
        self.client_id = f"{settings.mqtt_client_prefix}-bridge-{worker}"
        self.worker = worker
        self.batch_max = batch_max
        self.batch_wait_s = batch_wait_s
        self.outbox_interval_s = outbox_interval_s
        self.stats = BridgeStats()
        self.directory = PileDirectory()
        if lanes < 1 or (lanes > 1 and settings.database_url.startswith("sqlite")):
            raise ValueError("lanes: 1 on SQLite (one writer), 1 or more on PostgreSQL")
        # Ingest lanes: each pile always goes to the same lane (its messages stay in one
        # ordered stream, its rows are locked by one lane only), each lane has its own
        # thread and database connection, so one lane's SQL overlaps another's Python.
        self.lanes = lanes
        self._queues = [InboundQueue() for _ in range(lanes)]
        self._carry: list[dict[str, Any]] = [{} for _ in range(lanes)]  # hooks' caches
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()
        self._nudge = threading.Event()
        self._threads: list[threading.Thread] = []
        config = LinkConfig(host, port, tls, settings.mqtt_username or None,
                            settings.mqtt_password or None, self.client_id,
                            f"$share/{group}/{UPLINK_FILTER}", session_expiry_s,
                            RECEIVE_MAXIMUM)
        self.link: PahoLink | ProcessLink = (
            ProcessLink(config, self) if link == "process" else PahoLink(config, self))

    @property
    def client(self) -> mqtt.Client:
        """The paho client of an in-process link (tests reach into it)."""
        assert isinstance(self.link, PahoLink), "the paho client lives in the link process"
        return self.link.client

    # --- link events (the link's threads) -----------------------------------------------

    def on_connected(self, generation: int) -> None:
        self.stats.connected = True
        self.stats.connects += 1
        log.info("bridge %s connected (generation %d)", self.worker, generation)

    def on_disconnected(self, reason: str) -> None:
        self.stats.connected = False
        # Unacked messages will be redelivered on the next connection; drop our copies.
        for q in self._queues:
            q.clear()
        if not self._stop.is_set():
            log.warning("bridge %s disconnected: %s; reconnecting", self.worker, reason)

    def on_messages(self, items: list[Inbound]) -> None:
        if self.lanes == 1:
            self._queues[0].put_many(items)
            return
        routed: list[list[Inbound]] = [[] for _ in range(self.lanes)]
        for item in items:  # piles/{serial}/up/{type}: the serial picks the lane
            routed[hash(item.topic.split("/", 2)[1]) % self.lanes].append(item)
        for q, part in zip(self._queues, routed, strict=True):
            if part:
                q.put_many(part)

    def on_nudge(self) -> None:
        self._nudge.set()

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self.link.start()
        loops: list[tuple[Callable[..., None], str, tuple[Any, ...]]] = [
            (self._ingest_loop, f"ingest-{lane}", (lane,)) for lane in range(self.lanes)]
        loops += [(self._outbox_loop, "outbox", ()), (self._status_loop, "status", ())]
        if self.app.config["SETTINGS"].database_url.startswith("postgresql"):
            loops.append((self._listen_loop, "listen", ()))
        for target, name, args in loops:
            thread = threading.Thread(target=target, args=args, name=f"bridge-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, *, disconnect: bool = True) -> None:
        self._stop.set()
        self._nudge.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.link.stop(disconnect=disconnect)
        log.info("bridge %s stopped: %s", self.worker, self.stats.snapshot())

    def run_forever(self) -> None:
        settle_garbage_collector()
        self.start()
        try:
            while not self._stop.wait(1):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # --- ingest -----------------------------------------------------------------------

    def _ingest_loop(self, lane: int) -> None:
        queue = self._queues[lane]
        with self.app.app_context():
            while not self._stop.is_set():
                batch = queue.take(self.batch_max, 0.2, self.batch_wait_s)
                if batch:
                    self.process(batch, lane)

    def process(self, batch: list[Inbound], lane: int = 0) -> None:
        """Validate, apply in one transaction, then ack — retrying the DB, never acking early."""
        carry = self._carry[lane]
        uplinks: list[Uplink] = []
        rejected: list[Rejected] = []
        for msg in batch:
            item = to_uplink(msg)
            if isinstance(item, Rejected):
                rejected.append(item)
                log.warning("rejected uplink from %s on %s: %s (%s)", item.pile_serial or "?",
                            item.topic, item.reason, item.message)
            else:
                uplinks.append(item)
        result = self._apply_with_retry(uplinks, rejected, carry=carry)
        if result is None:
            return  # stopping: unacked messages come back after the restart
        unknown = [u for u, o in zip(uplinks, result.outcomes, strict=True)
                   if o == "unknown_pile"]
        for u in unknown:
            log.warning("uplink from unknown pile %s (%s) rejected", u.pile_serial, u.msg_type)
        self.link.ack([(msg.mid, msg.qos, msg.generation) for msg in batch])
        now = time.monotonic()
        with self._stats_lock:  # lanes finish batches concurrently
            stats = self.stats
            stats.reasons.update(r.reason for r in rejected)
            if unknown:
                stats.reasons["unknown_pile"] += len(unknown)
            stats.received += len(batch)
            stats.applied += result.counters.get("applied", 0)
            stats.duplicates += result.counters.get("duplicate", 0)
            stats.rejected += len(rejected) + len(unknown)
            stats.batches += 1
            stats.last_lag_ms = (now - batch[0].arrived) * 1000
        if result.nudge or any(u.msg_type in ("cmd_ack", "config_ack", "online")
                               for u in uplinks):
            self._nudge.set()

    def _apply_with_retry(self, uplinks: list[Uplink], rejected: list[Rejected], *,
                          carry: dict[str, Any], isolate: bool = True) -> BatchResult | None:
        """Keep trying while the database is away; the broker keeps what we have not acked."""
        delay = 0.2
        while not self._stop.is_set():
            try:
                return apply_uplinks(UnitOfWork(), uplinks, rejected, self.directory, carry)
            except SQLAlchemyError:
                self.stats.commit_failures += 1
                db.session.rollback()
                log.exception("bridge %s: batch not applied; retrying in %.1fs", self.worker,
                              delay)
                time.sleep(delay + random.random() * delay)
                delay = min(delay * 2, 10)
            except Exception:
                if not isolate:
                    raise
                # A handler bug or a rule violation in one message: find it by applying the
                # batch message by message, so the others still land and the worker lives.
                db.session.rollback()
                log.exception("bridge %s: a message in the batch failed; isolating it",
                              self.worker)
                return self._apply_one_by_one(uplinks, rejected, carry)
            finally:
                db.session.remove()
        return None

    def _apply_one_by_one(self, uplinks: list[Uplink], rejected: list[Rejected],
                          carry: dict[str, Any]) -> BatchResult | None:
        outcomes: list[Outcome] = []
        counters: Counter[str] = Counter()
        nudge = False
        for uplink in uplinks:
            try:
                one = self._apply_with_retry([uplink], [], carry=carry, isolate=False)
            except Exception as exc:  # the poison message itself: record it and move on
                db.session.rollback()
                db.session.remove()
                log.exception("uplink %s from %s failed in its handler", uplink.msg_type,
                              uplink.pile_serial)
                with self._stats_lock:
                    self.stats.reasons["handler_error"] += 1
                rejected = [*rejected, Rejected(
                    f"piles/{uplink.pile_serial}/up/{uplink.msg_type}", uplink.pile_serial,
                    "handler_error", f"{type(exc).__name__}: {exc}"[:300],
                    str(dict(uplink.body))[:200])]
                outcomes.append(Outcome.FAILED)
                continue
            if one is None:
                return None
            outcomes.extend(one.outcomes)
            counters.update(one.counters)
            nudge = nudge or one.nudge
        rest = self._apply_with_retry([], rejected, carry=carry, isolate=False)
        if rest is None:
            return None
        counters.update(rest.counters)
        return BatchResult(outcomes, dict(counters), nudge)

    # --- outbox -----------------------------------------------------------------------

    def _outbox_loop(self) -> None:
        with self.app.app_context():
            while not self._stop.is_set():
                self._nudge.wait(self.outbox_interval_s)
                self._nudge.clear()
                if not self.stats.connected:
                    continue
                try:
                    self.send_due()
                except SQLAlchemyError:
                    log.exception("outbox pass failed")
                    db.session.rollback()
                finally:
                    db.session.remove()

    def send_due(self) -> int:
        session = db.session
        now = utcnow()
        expired = outbox.expire_overdue(session, now)
        due = outbox.claim_due(session, now)
        session.commit()  # marked as sent first: a crash now means a resend, never a loss
        for message in due:
            self.link.publish(message.topic, message.payload, 1)
        self.stats.commands_sent += len(due)
        self.stats.commands_expired += len(expired)
        for command in expired:
            log.warning("command %s (%s) to pile %s expired without ack", command.cmd_id,
                        command.msg_type, command.pile_id)
        return len(due)

    def _listen_loop(self) -> None:
        """PostgreSQL LISTEN: any process that queues a command wakes the outbox at once."""
        import psycopg

        url = self.app.config["SETTINGS"].database_url.replace("postgresql+psycopg://",
                                                               "postgresql://", 1)
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {outbox.NOTIFY_CHANNEL}")
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._nudge.set()
            except psycopg.Error:
                log.exception("outbox LISTEN connection lost; retrying")
                self._stop.wait(2)

    # --- health -----------------------------------------------------------------------

    def _status_loop(self) -> None:
        with self.app.app_context():
            while not self._stop.wait(5):
                self.write_status()

    def write_status(self) -> None:
        try:
            row = db.session.get(BridgeStatus, self.client_id)
            if row is None:
                row = BridgeStatus(worker=self.client_id)
                db.session.add(row)
            row.connected = self.stats.connected
            row.updated_at = utcnow()
            row.stats = self.stats.snapshot()
            db.session.commit()
        except SQLAlchemyError:
            db.session.rollback()
            log.exception("could not write bridge status")
        finally:
            db.session.remove()


def settle_garbage_collector() -> None:
    """A long-running worker: what exists after start-up (the app, its models, the
    SQLAlchemy metadata) is never garbage, so it leaves the collector's sight, and young
    collections run less often. Each batch allocates ~100k short-lived objects; with the
    defaults the collector rescans the whole heap many times a second (about a fifth of
    the ingest's CPU: bench/ingest_profile.py)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def forget_session(app: Flask, worker: str) -> None:
    """Connect once as the worker with clean start and no expiry: the broker drops the
    old session, and with it the worker's place in the shared subscription."""
    settings = app.config["SETTINGS"]
    host, port, tls = parse_mqtt_url(settings.mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"{settings.mqtt_client_prefix}-bridge-{worker}",
                         protocol=mqtt.MQTTv5)
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
    if tls:
        client.tls_set()
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    client.connect(host, port, keepalive=10, clean_start=True, properties=props)
    client.loop_start()
    time.sleep(0.5)
    client.disconnect()
    client.loop_stop()

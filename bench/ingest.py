"""Ingest benchmark: messages per second the bridge PERSISTS, next to a bare paho subscriber.

    python -m bench.ingest                       # realistic mix, 1 and 2 bridge workers
    python -m bench.ingest --readings 10         # every message a meter report of 10 ports
    python -m bench.ingest --messages 40000 --piles 2000 --workers 1,2 --mode drain

One run, all on loopback, all torn down at the end:

1. a fresh PostgreSQL database ``evc_bench_<random>`` built by the migrations, with
   ``--piles`` piles x 10 ports registered through the services and a charge running
   on every port (account, cash top-up, ``charging.open_session``, the pile's ``online``,
   ``cmd_ack`` and ``config_ack`` through the bridge's service), so every meter reading
   names its session and takes the plain ingest path (``--no-sessions``: readings with
   power and no session, which the detectors must look at: the incident path's cost);
2. a private Mosquitto with the project config (deploy/mosquitto: queue limits,
   persistence, ACL) on a free port, one platform account per client (the config
   forces client id = username, so every process needs its own account);
3. per phase, a publisher *process* pre-generates ``--messages`` fresh uplinks with
   the simulator's MessageFactory (new boot ids every phase, so nothing is a
   duplicate) and publishes them at full speed, QoS 1, to N consumers on one
   shared subscription:
   * ``bare xN``: N bare paho subscriber processes (MQTT 5, QoS 1, manual ack,
     acking each message at once); rate = messages received, first to last;
   * ``bridge xN``: N real bridge workers (``flask --app wsgi bridge run``
     subprocesses on ``$share/bridge/piles/+/up/#``) writing to PostgreSQL;
     rate = rows applied to ``pile_inbox`` per second, first to last.
   Two modes (``--mode``, default both):
   * ``live``: consumers connected while the publisher publishes (publisher,
     broker, PostgreSQL and consumers share the 2 cores; a consumer faster than
     the publisher shows the publisher's rate);
   * ``drain``: the consumers' persistent sessions exist but they are away while
     everything is published; then they connect and drain the backlog (what a
     bridge restart looks like): the consumer's own ceiling.
4. prints a table, the ratios bridge / bare, where the CPU went per message (the
   consumer's processes with their children — a bridge worker's MQTT link — the
   broker, every PostgreSQL process), and whether the rate covers 10,000 piles x 10
   ports reporting every 30 s (333 meter msg/s carrying 3,333 readings/s).

Figures are for comparison within one run on this machine, not absolute capacity.
Not part of the test suite; exits 1 only if messages were lost or the run broke.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import multiprocessing as mp
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get("EVC_BENCH_PG_ADMIN_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")
TARGET_PILES, TARGET_PORTS, TARGET_INTERVAL_S = 10_000, 10, 30
TARGET_MSGS = TARGET_PILES / TARGET_INTERVAL_S  # one meter message per pile per interval
TARGET_READINGS = TARGET_PILES * TARGET_PORTS / TARGET_INTERVAL_S
PORTS_PER_PILE = 10
SHARE = {"bare": "$share/bare/piles/+/up/#",
         "bridge": "$share/bridge/piles/+/up/#"}  # BridgeWorker's default group
SECRET = "bench-secret-" + "s" * 40
JWT_SECRET = "bench-jwt-" + "j" * 40


def _launcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "evc_run_broker", ROOT / "deploy" / "mosquitto" / "run_broker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ================================================================== child processes
# Started with "spawn": they import paho and the simulator only, never Flask.


@dataclass
class Fleet:
    """The bench's piles and the charging sessions running on every port.

    Every port charges in a session opened through the services, so the readings
    name a real session and take the plain ingest path (running cost), not the
    detectors' "power with no session" path. ``energy`` is each port's counter,
    carried from phase to phase so counters never go backwards."""

    serials: list[str]
    sessions: dict[str, list[str]]  # serial -> session public id of ports 1..N
    energy: dict[str, list[int]]  # serial -> energy counter (Wh) of ports 1..N


def _pile_clock() -> Callable[[], int]:
    """Wall clock in ms, strictly increasing per pile (a pile never stamps two messages
    with the same ms, so readings sort by time as they were taken)."""
    from simulator.messages import now_ms

    last = 0

    def tick() -> int:
        nonlocal last
        last = max(now_ms(), last + 1)
        return last
    return tick


def generate(fleet: Fleet, count: int, readings: int | None,
             seed: int) -> tuple[list[tuple[str, bytes]], int, dict[str, list[int]]]:
    """``count`` valid uplinks from random piles: (topic, payload) pairs, the number of
    readings, and the energy counters after them (where the next phase starts).

    Readings look like a charge: power within an e-bike charger's range, a socket
    temperature that wanders by a few tenths of a degree around its own level, the
    port's session id. Nothing in them is a safety finding."""
    from simulator.messages import MessageFactory, reading

    rng = random.Random(seed)
    serials = fleet.serials
    factories = {s: MessageFactory(s, rng=random.Random(rng.getrandbits(64)),
                                   clock=_pile_clock()) for s in serials}
    energy = {s: list(fleet.energy[s]) for s in serials}
    base_temp = {s: [random.Random(f"{s}/{p}").randint(250, 330)
                     for p in range(1, PORTS_PER_PILE + 1)] for s in serials}
    statuses = ("idle", "plugged", "charging", "full")

    def session_of(serial: str, port: int) -> str | None:
        return fleet.sessions[serial][port - 1] if fleet.sessions[serial] else None

    out: list[tuple[str, bytes]] = []
    total_readings = 0
    for _ in range(count):
        serial = rng.choice(serials)
        f = factories[serial]
        kind = "meter" if readings else rng.choices(("meter", "heartbeat", "port_status"),
                                                    (70, 20, 10))[0]
        if kind == "meter":
            ports = (range(1, readings + 1) if readings
                     else sorted(rng.sample(range(1, PORTS_PER_PILE + 1), rng.randint(1, 3))))
            rows = []
            for p in ports:
                delta = rng.randint(0, 12)
                energy[serial][p - 1] += delta
                power = rng.randint(80, 900)
                rows.append(reading(p, energy[serial][p - 1], delta_wh=delta, power_w=power,
                                    voltage_dv=rng.randint(2150, 2250),
                                    current_ma=power * 1000 // 220,
                                    temp_dc=base_temp[serial][p - 1] + rng.randint(-3, 3),
                                    session_id=session_of(serial, p)))
            total_readings += len(rows)
            msg = f.meter(rows)
        elif kind == "heartbeat":
            msg = f.heartbeat(port_statuses=[rng.choice(statuses)
                                             for _ in range(PORTS_PER_PILE)],
                              uptime_s=rng.randint(60, 10**6))
        else:
            port = rng.randint(1, PORTS_PER_PILE)
            msg = f.port_status(port=port, status="charging", prev_status="plugged",
                                session_id=session_of(serial, port))
        out.append((msg.topic, f.encode(msg)))
    return out, total_readings, energy


def publisher_main(host: str, port: int, user: str, password: str, fleet: Fleet,
                   count: int, readings: int | None, seed: int, ready: Any, go: Any,
                   results: Any) -> None:
    """Pre-generate, wait for ``go``, publish everything with QoS 1, report when all acked."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    messages, total_readings, energy = generate(fleet, count, readings, seed)
    acked = 0
    all_acked = threading.Event()

    def on_publish(*_a: Any) -> None:
        nonlocal acked
        acked += 1
        if acked == count:
            all_acked.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv311)
    client.username_pw_set(user, password)
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect(host, port, keepalive=60)
    client.loop_start()
    ready.set()
    go.wait(300)
    started_wall, started = time.time(), time.monotonic()
    for topic, payload in messages:
        client.publish(topic, payload, qos=1)
    ok = all_acked.wait(600)
    elapsed = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    results.put({"role": "publisher", "published": count, "acked": acked, "ok": ok,
                 "seconds": elapsed, "bytes": sum(len(p) for _, p in messages),
                 "readings": total_readings, "started_wall": started_wall,
                 "done_wall": started_wall + elapsed, "energy": energy})


def bare_main(host: str, port: int, user: str, password: str, counter: Any,
              ready: Any, done: Any, results: Any, receive_maximum: int) -> None:
    """A bare MQTT 5 subscriber as the bridge connects (persistent session, QoS 1,
    manual ack, the bridge's receive maximum) that acks each message at once."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    state = {"n": 0, "first": 0.0, "last": 0.0}  # wall clock: compared across processes
    subscribed = threading.Event()

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        c.subscribe(SHARE["bare"], qos=1)

    def on_message(c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        if not state["n"]:
            state["first"] = now
        state["n"] += 1
        state["last"] = now
        c.ack(msg.mid, msg.qos)
        counter.value = state["n"]

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5,
                         manual_ack=True)
    client.username_pw_set(user, password)
    client.max_inflight_messages_set(receive_maximum)
    client.on_connect = on_connect
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = receive_maximum
    props.SessionExpiryInterval = 3600
    client.connect(host, port, keepalive=60, clean_start=False, properties=props)
    client.loop_start()
    subscribed.wait(10)
    ready.set()
    done.wait(600)  # the parent says when all members together have everything
    client.disconnect()
    client.loop_stop()
    results.put({"role": "bare", "received": state["n"], "first_wall": state["first"],
                 "last_wall": state["last"]})


# ================================================================== broker sessions


def _mqtt5(env: Env, user: str, *, clean: bool, expiry: int) -> Any:
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, env.accounts[user])
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry
    client.connect(env.broker_host, env.broker_port, keepalive=30, clean_start=clean,
                   properties=props)
    client.loop_start()
    if not connected.wait(10):
        raise RuntimeError(f"{user} could not connect")
    return client


def prepare_sessions(env: Env, users: list[str], topic: str) -> None:
    """Create persistent sessions subscribed to ``topic`` and leave: the broker queues."""
    import threading

    for user in users:
        client = _mqtt5(env, user, clean=True, expiry=3600)
        done = threading.Event()
        client.on_subscribe = lambda *a, d=done: d.set()
        client.subscribe(topic, qos=1)
        if not done.wait(10):
            raise RuntimeError("no SUBACK")
        client.disconnect()
        client.loop_stop()


def wipe_sessions(env: Env, users: list[str]) -> None:
    """Forget these clients' sessions, so no later phase's messages queue for them."""
    for user in users:
        client = _mqtt5(env, user, clean=True, expiry=0)
        client.disconnect()
        client.loop_stop()


# ================================================================== database


@dataclass
class Env:
    url: str  # SQLAlchemy URL of the bench database
    broker_host: str
    broker_port: int
    workdir: Path
    accounts: dict[str, str]
    fleet: Fleet
    app: Any = None
    bridge_logs: list[Path] = field(default_factory=list)
    broker_pid: int | None = None
    bridge_args: list[str] = field(default_factory=list)  # more `flask bridge run` options


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    import psycopg

    name = f"evc_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url.replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def build_app(url: str) -> Any:
    from app import create_app
    from app.config import load_settings

    return create_app(load_settings(environ={}, env="testing", database_url=url,
                                    secret_key=SECRET, jwt_secret_key=JWT_SECRET,
                                    password_hash_method="pbkdf2:sha256:1000"))


BENCH_TARIFF = {"mode": "per_kwh", "energy_fen_per_kwh": 60, "service_fen_per_kwh": 40,
                "minimum_charge_fen": 10}
HOLD_FEN = 5_000  # per session (50 kWh at the bench tariff): far more than any run adds
SEED_CHUNK = 50  # piles brought online and started per step (well inside their keepalive)


def seed_piles(app: Any, piles: int, *, sessions: bool = True) -> Fleet:
    """Migrate, then register ``piles`` piles x 10 ports through the services and, unless
    ``sessions`` is false, start a charge on every port the way a real one starts."""
    import logging

    from flask_migrate import upgrade

    from app.domain.access import Actor, Role
    from app.extensions import db
    from app.models.base import utcnow
    from app.services import accounts, demo, places, tariffs, users, wallet
    from app.services.uow import UnitOfWork

    with app.app_context():
        logging.disable(logging.INFO)  # alembic's per-revision lines
        try:
            upgrade(revision="heads")
        finally:
            logging.disable(logging.NOTSET)
        uow = UnitOfWork()
        admin = demo.create_platform_admin("bench-admin", "bench-pass-2026")
        root = Actor(admin.id, Role.PLATFORM_ADMIN)
        grid = places.create_power_company(uow, root, name="Bench Grid",
                                           grid_price_fen_per_kwh=56)
        company = places.create_property_company(uow, root, power_company_id=grid.id,
                                                 name="Bench Property", contact_phone=None)
        operator = users.create_staff_user(uow, root, username="bench-op",
                                           password="bench-pass-2026",
                                           role="property_operator",
                                           property_company_id=company.id)
        op = Actor(operator.id, Role.PROPERTY_OPERATOR, grid.id, company.id)
        serials: list[str] = []
        account_of: dict[str, int] = {}
        community = None
        for i in range(piles):
            if i % 500 == 0:
                community = places.create_community(
                    uow, op, property_company_id=company.id, name=f"Bench {i // 500}",
                    master_meter_serial=f"BMM{i // 500}")
                tariffs.set_tariff(uow, op, community.id, BENCH_TARIFF,
                                   utcnow() - timedelta(days=1))
            assert community is not None
            serial = f"B{i + 1:05d}"
            places.register_pile(uow, op, community_id=community.id, serial=serial,
                                 port_count=PORTS_PER_PILE)
            serials.append(serial)
            if sessions:
                account = accounts.create_charging_account(
                    uow, op, community_id=community.id, account_no=f"139{i:08d}",
                    pin="135790", holder_name=f"Bench {serial}")
                wallet.record_cash_topup(uow, op, account.id,
                                         amount_fen=HOLD_FEN * PORTS_PER_PILE,
                                         request_id=f"bench-{serial}")
                account_of[serial] = account.id
        rng = random.Random(0)
        fleet = Fleet(serials, {s: [] for s in serials},
                      {s: [rng.randrange(10_000, 900_000) for _ in range(PORTS_PER_PILE)]
                       for s in serials})
        if sessions:
            _in_threads(app, [
                (lambda chunk=serials[i:i + SEED_CHUNK]: _start_sessions(fleet, chunk,
                                                                         account_of))
                for i in range(0, len(serials), SEED_CHUNK)])
        db.session.remove()
        db.engine.dispose()
    return fleet


def _in_threads(app: Any, jobs: list[Callable[[], None]], threads: int = 3) -> None:
    """Run the set-up jobs (disjoint piles) on a few threads, each with its own app
    context and database session: the set-up mostly waits for PostgreSQL."""
    import queue
    import threading

    todo: queue.Queue[Callable[[], None]] = queue.Queue()
    for job in jobs:
        todo.put(job)
    errors: list[BaseException] = []

    def work() -> None:
        from app.extensions import db

        with app.app_context():
            try:
                while not errors:
                    try:
                        job = todo.get_nowait()
                    except queue.Empty:
                        return
                    job()
            except BaseException as exc:  # re-raised in the caller
                errors.append(exc)
            finally:
                db.session.remove()

    workers = [threading.Thread(target=work, name=f"bench-seed-{i}") for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if errors:
        raise errors[0]


def _start_sessions(fleet: Fleet, serials: list[str], account_of: dict[str, int]) -> None:
    """The piles come online (uplinks through the bridge's service), a charge is opened on
    each port (hold, limits, start command: ``charging.open_session``), the piles ack the
    start and their config. Runs inside an app context."""
    from sqlalchemy import select

    from app import protocol
    from app.domain.charging import StartMethod
    from app.extensions import db
    from app.models import ChargingAccount, DownlinkCommand, Pile
    from app.models.base import utcnow
    from app.services import charging
    from app.services.telemetry import PileDirectory, Uplink, apply_uplinks
    from app.services.uow import UnitOfWork
    from simulator.messages import MessageFactory

    directory = PileDirectory()
    factories = {s: MessageFactory(s, rng=random.Random(f"seed/{s}")) for s in serials}

    def send(messages: list[Any]) -> None:
        uplinks = [Uplink(m.type, m["pile_id"], protocol.validate_uplink(m.topic, dict(m)))
                   for m in messages]
        result = apply_uplinks(UnitOfWork(), uplinks, [], directory)
        if result.counters.get("applied") != len(uplinks):
            raise RuntimeError(f"bench set-up uplinks not applied: {result.counters}")

    send([factories[s].online(conn=1, ports=[
        {"port": p, "status": "plugged", "energy_wh": fleet.energy[s][p - 1],
         "session_id": None, "local_id": None} for p in range(1, PORTS_PER_PILE + 1)])
        for s in serials])
    uow = UnitOfWork()
    with uow:
        session = uow.session
        for serial in serials:
            pile = session.execute(select(Pile).where(Pile.serial == serial)).scalar_one()
            account = session.get(ChargingAccount, account_of[serial])
            for port in sorted(pile.ports, key=lambda p: p.number):
                opened = charging.open_session(session, pile=pile, port=port,
                                               method=StartMethod.APP, now=utcnow(),
                                               account=account, amount_fen=HOLD_FEN)
                fleet.sessions[serial].append(opened.session.public_id)
        uow.commit()
        pending = session.execute(
            select(DownlinkCommand.cmd_id, DownlinkCommand.msg_type, DownlinkCommand.payload,
                   Pile.serial)
            .join(Pile, Pile.id == DownlinkCommand.pile_id)
            .where(Pile.serial.in_(serials), DownlinkCommand.status == "pending",
                   DownlinkCommand.msg_type.in_(("start", "config")))).all()
        db.session.rollback()
    acks = []
    for cmd_id, msg_type, payload, serial in pending:
        f = factories[serial]
        if msg_type == "start":
            acks.append(f.cmd_ack(cmd_id=cmd_id, cmd="start", ok=True, port=payload["port"],
                                  session_id=payload["session_id"],
                                  energy_wh=fleet.energy[serial][payload["port"] - 1]))
        else:
            acks.append(f.config_ack(cmd_id=cmd_id, config_id=payload["config_id"], ok=True))
    send(acks)


def reset_telemetry(app: Any) -> None:
    """Empty what ingest writes, so every phase starts from the same table sizes."""
    from sqlalchemy import text

    from app.extensions import db

    with app.app_context():
        tables = [t for t in ("pile_inbox", "meter_readings", "pile_events", "rejected_uplinks")
                  if t in db.metadata.tables]
        db.session.execute(text("TRUNCATE " + ", ".join(tables)))
        db.session.commit()
        db.session.execute(text("ANALYZE"))
        db.session.commit()
        db.session.remove()


def inbox_state(app: Any) -> tuple[int, Any, Any, int]:
    from sqlalchemy import text

    from app.extensions import db

    with app.app_context():
        row = db.session.execute(text(
            "SELECT count(*), min(received_at), max(received_at) FROM pile_inbox")).one()
        readings = db.session.execute(text("SELECT count(*) FROM meter_readings")).scalar_one()
        db.session.rollback()
    return int(row[0]), row[1], row[2], int(readings)


# ================================================================== CPU


def cpu_seconds(pid: int) -> float:
    """utime + stime of a local process and all its threads (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _with_children(pids: list[int]) -> list[int]:
    """The processes and their descendants (a bridge worker's MQTT link process)."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parent_of[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found = set(pids)
    grew = True
    while grew:
        more = {pid for pid, parent in parent_of.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return sorted(found)


def _postgres_pids() -> list[int]:
    """Every PostgreSQL process on this machine (backends, WAL writer, checkpointer)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
    return pids


class CpuMeter:
    """Where the two cores went while the consumers ran: CPU seconds of the consumer
    processes (with their children: a bridge worker's MQTT link), the broker and
    PostgreSQL between two snapshots, per message consumed in between. A process that
    exits in between loses its share (none does here)."""

    def __init__(self, env: Env, consumer_pids: list[int], consumed: int) -> None:
        self.env, self.consumer_pids = env, consumer_pids
        self.consumed = consumed
        self.before = self._snapshot()

    def _snapshot(self) -> dict[str, dict[int, float]]:
        broker = [self.env.broker_pid] if self.env.broker_pid else []
        return {"consumer": {p: cpu_seconds(p) for p in _with_children(self.consumer_pids)},
                "broker": {p: cpu_seconds(p) for p in broker},
                "postgres": {p: cpu_seconds(p) for p in _postgres_pids()}}

    def per_message_us(self, consumed: int) -> dict[str, float]:
        after = self._snapshot()
        n = max(consumed - self.consumed, 1)
        return {role: sum(cpu - self.before[role].get(pid, 0.0)
                          for pid, cpu in after[role].items()) / n * 1e6
                for role in after}


# ================================================================== phases


@dataclass
class Result:
    kind: str  # bare | bridge
    members: int
    mode: str  # live | drain
    consumed: int
    seconds: float
    readings: int
    publisher_rate: float
    note: str = ""
    cpu_us: dict[str, float] = field(default_factory=dict)  # CPU µs per message, by role

    @property
    def name(self) -> str:
        return f"{self.kind} x{self.members}"

    @property
    def rate(self) -> float:
        return self.consumed / self.seconds if self.seconds > 0 else 0.0

    @property
    def readings_rate(self) -> float:
        return self.readings / self.seconds if self.seconds > 0 else 0.0


def _start_publisher(ctx: Any, env: Env, args: argparse.Namespace, seed: int,
                     results: Any) -> tuple[Any, Any]:
    ready, go = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=publisher_main, daemon=True, args=(
        env.broker_host, env.broker_port, "evc-bench-pub", env.accounts["evc-bench-pub"],
        env.fleet, args.messages, args.readings, seed, ready, go, results))
    proc.start()
    if not ready.wait(120):
        raise RuntimeError("publisher did not get ready")
    return proc, go


def _get(results: Any, role: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    stash = []
    try:
        while True:
            item = results.get(timeout=max(0.1, deadline - time.monotonic()))
            if item["role"] == role:
                return item
            stash.append(item)
    finally:
        for item in stash:
            results.put(item)


def _published(env: Env, results: Any) -> dict[str, Any]:
    """The publisher's report; the next phase's counters continue from its last readings."""
    published = _get(results, "publisher", 600)
    env.fleet.energy = published["energy"]
    return published


def _wait_progress(count: Any, expected: int, stall_s: float = 30.0) -> int:
    """Poll ``count()`` until it reaches ``expected`` or stops moving for ``stall_s``."""
    last, stall_deadline = -1, time.monotonic() + stall_s
    while True:
        n = count()
        if n >= expected:
            return n
        if n != last:
            last, stall_deadline = n, time.monotonic() + stall_s
        if time.monotonic() > stall_deadline:
            return n
        time.sleep(0.05)


def phase_bare(ctx: Any, env: Env, args: argparse.Namespace, members: int, mode: str,
               seed: int) -> Result:
    from app.mqtt_bridge.worker import RECEIVE_MAXIMUM  # the same QoS 1 settings

    users = [f"evc-bench-bare-{i}" for i in range(1, members + 1)]
    results = ctx.Queue()
    done = ctx.Event()
    published: dict[str, Any] | None = None
    if mode == "drain":
        prepare_sessions(env, users, SHARE["bare"])
        pub, go = _start_publisher(ctx, env, args, seed, results)
        go.set()
        published = _published(env, results)
    subs, counters = [], []
    for user in users:
        ready = ctx.Event()
        counter = ctx.RawValue("q", 0)
        proc = ctx.Process(target=bare_main, daemon=True, args=(
            env.broker_host, env.broker_port, user, env.accounts[user], counter,
            ready, done, results, RECEIVE_MAXIMUM))
        proc.start()
        if not ready.wait(30):
            raise RuntimeError(f"bare subscriber {user} did not subscribe")
        subs.append(proc)
        counters.append(counter)
    meter = CpuMeter(env, [p.pid for p in subs], sum(c.value for c in counters))
    if mode == "live":
        time.sleep(0.3)
        pub, go = _start_publisher(ctx, env, args, seed, results)
        go.set()
    got_now = _wait_progress(lambda: sum(c.value for c in counters), args.messages)
    cpu = meter.per_message_us(got_now)
    if published is None:
        published = _published(env, results)
    done.set()
    reports = [_get(results, "bare", 30) for _ in subs]
    for proc in (*subs, pub):
        proc.join(10)
    wipe_sessions(env, users)
    got = sum(r["received"] for r in reports)
    seen = [r for r in reports if r["received"]]
    seconds = (max(r["last_wall"] for r in seen) - min(r["first_wall"] for r in seen)
               if seen else 0.0)
    note = "" if got == args.messages else f"received {got} of {args.messages}"
    return Result("bare", members, mode, got, seconds, published["readings"],
                  published["published"] / published["seconds"], note, cpu)


@contextlib.contextmanager
def bridge_workers(env: Env, members: int, tag: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``flask --app wsgi bridge run`` x N against the bench database and broker."""
    procs = []
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("MQTT_", "DATABASE_URL", "EVC_", "FLASK_"))}
    launched = time.time()
    for i in range(1, members + 1):
        user = f"evc-bench-bridge-{i}"
        log = env.workdir / f"bridge-{tag}-{i}.log"
        env.bridge_logs.append(log)
        proc_env = {**base, "EVC_ENV": "testing", "DATABASE_URL": env.url,
                    "MQTT_URL": f"mqtt://{env.broker_host}:{env.broker_port}",
                    "MQTT_USERNAME": user, "MQTT_PASSWORD": env.accounts[user],
                    "SECRET_KEY": SECRET, "JWT_SECRET_KEY": JWT_SECRET,
                    "PYTHONPATH": str(ROOT)}
        with log.open("wb") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wsgi", "bridge", "run",
                 "--worker", str(i), *env.bridge_args], cwd=ROOT, env=proc_env, stdout=out,
                stderr=subprocess.STDOUT))
    try:
        _wait_connected(env, [f"evc-bench-bridge-{i}" for i in range(1, members + 1)],
                        procs, launched)
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _wait_connected(env: Env, users: list[str], procs: list[subprocess.Popen[bytes]],
                    since: float, timeout: float = 60) -> None:
    """Mosquitto logs 'New client connected … as USER'; the SUBSCRIBE follows at once."""
    log = env.workdir / "mosquitto.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a bridge worker exited with {proc.returncode}")
        text = log.read_text(errors="replace") if log.exists() else ""
        fresh = [ln for ln in text.splitlines()
                 if "New client connected" in ln and _log_time(ln) >= int(since)]
        if all(any(f" as {u} " in ln for ln in fresh) for u in users):
            time.sleep(0.5)  # SUBSCRIBE / SUBACK
            return
        time.sleep(0.1)
    raise RuntimeError("bridge workers did not connect")


def _log_time(line: str) -> int:
    from datetime import datetime

    try:
        return int(datetime.strptime(line[:19], "%Y-%m-%dT%H:%M:%S").timestamp())
    except ValueError:
        return 0


def phase_bridge(ctx: Any, env: Env, args: argparse.Namespace, members: int, mode: str,
                 seed: int) -> Result:
    users = [f"evc-bench-bridge-{i}" for i in range(1, members + 1)]
    reset_telemetry(env.app)
    results = ctx.Queue()
    published: dict[str, Any] | None = None
    if mode == "drain":
        prepare_sessions(env, users, SHARE["bridge"])
        pub, go = _start_publisher(ctx, env, args, seed, results)
        go.set()
        published = _published(env, results)
    logs_before = len(env.bridge_logs)
    with bridge_workers(env, members, f"{mode}{members}") as procs:
        meter = CpuMeter(env, [p.pid for p in procs], inbox_state(env.app)[0])
        if mode == "live":
            pub, go = _start_publisher(ctx, env, args, seed, results)
            go.set()
        cpu = meter.per_message_us(_wait_progress(lambda: inbox_state(env.app)[0],
                                                  args.messages))
        if published is None:
            published = _published(env, results)
        pub.join(10)
    wipe_sessions(env, users)
    count, first, last, readings = inbox_state(env.app)
    seconds = (last - first).total_seconds() if count > 1 else 0.0
    notes = []
    if count != args.messages:
        notes.append(f"persisted {count} of {args.messages}")
    if readings != published["readings"]:
        notes.append(f"readings stored {readings} of {published['readings']}")
    failures = sum(log.read_text(errors="replace").count("batch not applied")
                   for log in env.bridge_logs[logs_before:])
    if failures:
        notes.append(f"{failures} batches rolled back and retried (see worker logs)")
    return Result("bridge", members, mode, count, seconds, published["readings"],
                  published["published"] / published["seconds"], "; ".join(notes), cpu)


# ================================================================== report


def report(results: list[Result], args: argparse.Namespace, facts: dict[str, Any]) -> None:
    mix = (f"every message a meter report with {args.readings} readings" if args.readings
           else "mix: 70% meter (1-3 readings), 20% heartbeat, 10% port_status")
    print()
    print(f"ingest: {args.messages} messages per phase from {len(facts['serials'])} piles x "
          f"{PORTS_PER_PILE} ports, {facts['bytes_per_msg']:.0f} B average "
          f"({mix}); QoS 1;")
    print(f"project Mosquitto on 127.0.0.1:{facts['port']}; PostgreSQL; "
          f"{os.cpu_count()} cores shared by everything")
    header = (f"{'mode':<7}{'consumer':<13}{'messages':>9}{'seconds':>9}{'msg/s':>9}"
              f"{'readings/s':>12}{'vs bare x1':>12}{'vs bare xN':>12}{'publisher msg/s':>17}")
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        bare1 = _find(results, "bare", 1, r.mode)
        bare_n = _find(results, "bare", r.members, r.mode)
        r1 = f"{r.rate / bare1.rate:.2f}" if bare1 and bare1.rate else "-"
        rn = f"{r.rate / bare_n.rate:.2f}" if bare_n and bare_n.rate else "-"
        print(f"{r.mode:<7}{r.name:<13}{r.consumed:>9}{r.seconds:>9.2f}{r.rate:>9.0f}"
              f"{r.readings_rate:>12.0f}{r1:>12}{rn:>12}{r.publisher_rate:>17.0f}"
              + (f"   !! {r.note}" if r.note else ""))
    print()
    print("CPU per message consumed (µs; live includes the publisher's competition, "
          "not its CPU):")
    print(f"{'mode':<7}{'consumer':<13}{'consumer':>10}{'broker':>10}{'PostgreSQL':>12}"
          f"{'total':>10}")
    for r in results:
        c = r.cpu_us
        if c:
            print(f"{r.mode:<7}{r.name:<13}{c['consumer']:>10.0f}{c['broker']:>10.0f}"
                  f"{c['postgres']:>12.0f}{sum(c.values()):>10.0f}")
    print()
    for r in results:
        bare = _find(results, "bare", 1, r.mode)
        if r.kind == "bridge" and bare and bare.rate:
            ratio = r.rate / bare.rate
            print(f"{r.mode:<6} {r.name}: {ratio:.2f} x the bare subscriber "
                  f"({'meets' if ratio >= 0.5 else 'BELOW'} the 0.5 target)")
    bridges = [r for r in results if r.kind == "bridge"]
    if bridges:
        print()
        print(f"needed for {TARGET_PILES:,} piles x {TARGET_PORTS} ports every "
              f"{TARGET_INTERVAL_S} s: {TARGET_MSGS:,.0f} meter msg/s = "
              f"{TARGET_READINGS:,.0f} readings/s")
        for r in bridges:
            per_msg = r.readings / max(r.consumed, 1)
            if args.readings == TARGET_PORTS:
                verdict = ("enough" if r.rate >= TARGET_MSGS and r.readings_rate
                           >= TARGET_READINGS else "NOT enough")
            else:
                verdict = (f"{'enough' if r.rate >= TARGET_MSGS else 'NOT enough'} messages; "
                           f"run --readings {TARGET_PORTS} for the readings")
            print(f"{r.mode:<6} {r.name}: {r.rate:,.0f} msg/s = {r.readings_rate:,.0f} "
                  f"readings/s at {per_msg:.1f} readings per message: {verdict} "
                  f"({r.rate / TARGET_MSGS:.1f} x the message rate needed)")


def _find(results: list[Result], kind: str, members: int, mode: str) -> Result | None:
    return next((r for r in results if (r.kind, r.members, r.mode) == (kind, members, mode)),
                None)


# ================================================================== main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=15_000, help="messages per phase")
    p.add_argument("--piles", type=int, default=500, help="piles registered (10 ports each)")
    p.add_argument("--readings", type=int, default=None, choices=range(1, 11),
                   metavar="1-10",
                   help="every message a meter report with this many readings "
                        "(default: the realistic mix)")
    p.add_argument("--workers", default="1,2",
                   help="bridge worker counts to measure, comma-separated (default 1,2)")
    p.add_argument("--mode", choices=("live", "drain", "both"), default="both")
    p.add_argument("--no-sessions", action="store_true",
                   help="start no charges: readings carry power with no session id, so every "
                        "port trips the detectors' 'power with no session' path (what this "
                        "bench measured before sessions were added; the incident path's cost)")
    p.add_argument("--lanes", type=int, default=None,
                   help="ingest lanes per bridge worker (default: flask bridge run's)")
    p.add_argument("--link", choices=("process", "thread"), default=None,
                   help="the bridge's MQTT link (default: flask bridge run's, a process)")
    p.add_argument("--keep-logs", default=None, metavar="DIR",
                   help="keep broker and bridge logs here (default: a temp dir, removed)")
    args = p.parse_args(argv)
    try:
        args.worker_counts = sorted({int(w) for w in str(args.workers).split(",") if w})
    except ValueError:
        p.error("--workers: positive integers, e.g. 1,2")
    if not args.worker_counts or min(args.worker_counts) < 1:
        p.error("--workers: positive integers, e.g. 1,2")
    if args.messages < 100 or args.piles < 1:
        p.error("--messages >= 100 and --piles >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    launcher = _launcher()
    if not Path(launcher.MOSQUITTO).exists():
        print("mosquitto is not installed (apt-get install mosquitto)", file=sys.stderr)
        return 2
    ctx = mp.get_context("spawn")
    t0 = time.monotonic()
    top = max(args.worker_counts)
    accounts = {"evc-bench-pub": secrets.token_urlsafe(12)}
    for i in range(1, top + 1):
        accounts[f"evc-bench-bare-{i}"] = secrets.token_urlsafe(12)
        accounts[f"evc-bench-bridge-{i}"] = secrets.token_urlsafe(12)
    modes = ("live", "drain") if args.mode == "both" else (args.mode,)
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        if args.keep_logs:
            workdir = Path(args.keep_logs).resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="evc-bench-")))
        url = stack.enter_context(bench_database())
        print(f"database {url.rsplit('/', 1)[1]}: migrations, {args.piles} piles x "
              f"{PORTS_PER_PILE} ports through the services ...", flush=True)
        app = build_app(url)
        fleet = seed_piles(app, args.piles, sessions=not args.no_sessions)
        print(f"  ready after {time.monotonic() - t0:.1f} s", flush=True)
        port, broker = stack.enter_context(launcher.run_broker(
            workdir, accounts, platform_users=tuple(accounts)))
        env = Env(url, "127.0.0.1", port, workdir, accounts, fleet, app,
                  broker_pid=broker.pid,
                  bridge_args=[*(["--lanes", str(args.lanes)] if args.lanes else []),
                               *(["--link", args.link] if args.link else [])])
        try:
            seed = 1
            bare_counts = sorted({1, *args.worker_counts})
            for mode in modes:
                for members in bare_counts:
                    print(f"{mode}: bare paho x{members} ...", flush=True)
                    results.append(phase_bare(ctx, env, args, members, mode, seed))
                    seed += 1
                for members in args.worker_counts:
                    print(f"{mode}: bridge x{members} ...", flush=True)
                    results.append(phase_bridge(ctx, env, args, members, mode, seed))
                    seed += 1
        except Exception:
            for log in [workdir / "mosquitto.log", *env.bridge_logs]:
                if log.exists():
                    print(f"--- {log.name} (tail)", file=sys.stderr)
                    print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        broker_log = (workdir / "mosquitto.log").read_text(errors="replace")
        sample, _, _ = generate(fleet, 500, args.readings, 0)
        report(results, args, {"serials": fleet.serials, "port": port,
                               "bytes_per_msg": sum(len(p) for _, p in sample) / len(sample)})
        if re.search(r"Outgoing messages are being dropped", broker_log):
            print("!! the broker logged dropped messages (queue limit)")
        with app.app_context():
            from app.extensions import db

            db.engine.dispose()
    print(f"\ntotal run time {time.monotonic() - t0:.0f} s")
    return 1 if any(r.note.startswith(("received", "persisted")) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

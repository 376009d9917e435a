"""One simulated charging pile speaking docs/protocol.md over a real broker.

The pile behaves as the protocol asks a vendor's firmware to behave:
envelope and seq per boot, last will with the connection counter, commands
de-duplicated by cmd_id and refused when stale, limits enforced locally even
without a link, must-deliver messages kept while offline and sent after
``online``, sessions run offline (card/coin) uploaded in time order, energy
counters that survive reboots.

Time: physics and timestamps follow a simulated clock moved by
``advance(seconds)``; network timeouts (auth/coin answers) use real time,
checked in ``pump()``. With ``broker_url=None`` the pile has an in-memory
link: everything it would publish lands in ``wire`` and ``deliver()`` plays
the platform, which makes deterministic tests without a broker.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from app.protocol import (
    ProtocolError,
    decode,
    downlink_topic,
    encode,
    parse_topic,
    uplink_topic,
    validate_downlink,
)
from simulator.messages import MessageFactory, Uplink, now_ms
from simulator.physics import MAINS_DV, Battery

__all__ = ["DEFAULT_CONFIG", "Faults", "Port", "Session", "SimulatedPile"]

log = logging.getLogger(__name__)

#: Message types that a pile keeps (in flash) while the link is down and sends
#: after reconnecting. Everything else describes "now" and is dropped instead.
MUST_DELIVER = frozenset({"session_end", "alarm", "cmd_ack", "config_ack", "offline_sessions",
                          "master_meter"})
#: How long the pile waits for auth_reply / start after auth_request or coin_insert.
ANSWER_TIMEOUT_S = 15.0
#: Remembered cmd_ids (the protocol asks for at least 64).
CMD_CACHE_SIZE = 256
#: offline_sessions batch size (schema maxItems).
OFFLINE_BATCH = 16

DEFAULT_CONFIG: dict[str, Any] = {
    "config_id": None,
    "tariff": {"tariff_id": "default", "text": "1.00元/度", "energy_fen_per_kwh": 100,
               "time_fen_per_hour": 0},
    "full_power_w": 30,
    "full_minutes": 10,
    "offline_card_limits": {"max_energy_wh": 1000, "max_minutes": 480, "max_amount_fen": None},
    "offline_coin_max_minutes": 600,
}


@dataclass
class Faults:
    """Link misbehaviour to inject, as probabilities per uplink message."""

    dup: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    delay_s: float = 2.0

    @classmethod
    def parse(cls, text: str) -> Faults:
        """``"dup=0.05,reorder=0.05,delay=0.1"`` (``delay_s=`` sets the hold time)."""
        faults = cls()
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = item.partition("=")
            if key not in ("dup", "reorder", "delay", "delay_s"):
                raise ValueError(f"unknown fault {key!r}")
            setattr(faults, key, float(value))
        return faults

    @property
    def any(self) -> bool:
        return bool(self.dup or self.reorder or self.delay)


@dataclass
class Session:
    """A charging session as the pile knows it (platform's or pile-local)."""

    port: int
    method: str  # app | keypad | card | coin
    session_id: str | None  # platform's; None for a local (offline) session
    local_id: str | None
    limits: dict[str, int | None]
    tariff: dict[str, Any]
    started_at: int
    start_mwh: int
    card_uid: str | None = None
    coin_fen: int | None = None
    req_id: str | None = None
    elapsed_s: float = 0.0
    peak_power_w: int = 0
    below_full_s: float = 0.0

    def amount_fen_estimate(self, energy_mwh: int) -> int:
        """The pile's own estimate from the pushed tariff, only to enforce max_amount_fen."""
        used_mwh = energy_mwh - self.start_mwh
        return (used_mwh * self.tariff["energy_fen_per_kwh"]) // 1_000_000 + (
            int(self.elapsed_s) * self.tariff["time_fen_per_hour"]) // 3600


@dataclass
class Port:
    """One socket: plug, battery, cumulative counter (persisted), live readings."""

    number: int
    status: str = "idle"
    battery: Battery | None = None
    session: Session | None = None
    energy_mwh: int = 0
    last_reported_wh: int = 0
    power_w: int = 0
    voltage_dv: int = MAINS_DV
    temp_dc: int = 250
    fault_code: str | None = None

    @property
    def plugged(self) -> bool:
        return self.battery is not None

    @property
    def energy_wh(self) -> int:
        """Cumulative counter in Wh, as reported (floor of the internal mWh)."""
        return self.energy_mwh // 1000


@dataclass
class _Pending:
    """An auth_request or coin_insert waiting for the platform's answer."""

    port: int
    method: str
    deadline: float  # time.monotonic()
    card_uid: str | None = None
    coin_fen: int | None = None
    allowed: bool = False


@dataclass
class _Wire:
    """What was put on the link, for tests (duplicates included)."""

    topic: str
    payload: bytes
    msg_type: str = field(init=False)

    def __post_init__(self) -> None:
        self.msg_type = self.topic.rsplit("/", 1)[-1]

    def json(self) -> dict[str, Any]:
        return decode(self.payload)


class SimulatedPile:
    """A pile with ``ports`` sockets. See the module docstring for the time model.

    Observable state: ``ports[n]`` (1-based; ``status``, ``energy_wh``,
    ``session``), ``sent`` (uplinks created, in order, as dicts), ``wire``
    (what was actually published, faults included), ``received`` (downlinks
    accepted), ``acks_sent``, ``auth_replies``, ``display``.
    """

    def __init__(
        self, pile_id: str, ports: int = 10, broker_url: str | None = "mqtt://127.0.0.1:1883", *,
        username: str | None = None, password: str | None = None,
        keepalive_s: int = 60, meter_interval_s: int = 60,
        model: str = "SIM-EB10", firmware: str = "sim-1.0",
        seed: int | None = None, faults: Faults | None = None,
        start_ms: int | None = None, tls_ca: str | None = None,
        record: bool = True, on_wire: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.pile_id = pile_id
        self.rng = random.Random(seed)
        self.broker_url = broker_url
        self.username = username or pile_id
        self.password = password
        self.keepalive_s = keepalive_s
        self.meter_interval_s = meter_interval_s
        self.model = model
        self.firmware = firmware
        self.faults = faults or Faults()
        self.tls_ca = tls_ca
        self.record = record
        self.on_wire = on_wire
        self.iccid = "8986" + "".join(str(self.rng.randrange(10)) for _ in range(16))
        self._lock = threading.RLock()
        # --- state that a real pile keeps in flash across reboots
        self.ports: dict[int, Port] = {n: Port(n) for n in range(1, ports + 1)}
        self.conn = 0
        self.config: dict[str, Any] = dict(DEFAULT_CONFIG)
        self._cmd_cache: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
        self._backlog: list[tuple[str, bytes]] = []  # must-deliver, created while offline
        self._local_done: list[dict[str, Any]] = []  # ended local sessions not yet uploaded
        self._local_counter = 0
        # --- volatile state (lost on reboot)
        self._start_ms = now_ms() if start_ms is None else start_ms
        self._clock_offset_ms = 0
        self._wall_offset_ms = 0  # host clock correction from time_sync
        self.sim_s = 0.0
        self._boot_sim_s = 0.0
        self.factory = MessageFactory(pile_id, clock=self.now_ms, rng=self.rng)
        self._next_meter_s = float(meter_interval_s)
        self._next_heartbeat_s = float(keepalive_s)
        self._pending: dict[str, _Pending] = {}
        self._held: tuple[str, bytes] | None = None  # reorder fault
        self._delayed: list[tuple[float, str, bytes]] = []  # delay fault
        self._inflight: deque[tuple[mqtt.MQTTMessageInfo, str, bytes]] = deque()
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self._link_wanted = False  # False after drop_link(): stay offline
        self.rssi_dbm = -60 - self.rng.randrange(40)
        # --- observation
        self.sent: list[Uplink] = []
        self.wire: list[_Wire] = []
        self.received: list[dict[str, Any]] = []
        self.acks_sent: list[Uplink] = []
        self.auth_replies: list[dict[str, Any]] = []
        self.display: dict[str, Any] | None = None
        self.events: deque[str] = deque(maxlen=1000)

    # ================================================================ clock
    def now_ms(self) -> int:
        """The pile's clock (simulated), unix ms; time_sync corrects it."""
        return self._start_ms + self._clock_offset_ms + int(self.sim_s * 1000)

    def wall_ms(self) -> int:
        """Real time (host clock + time_sync correction), used for command expiry.

        Commands expire in real time even when the simulation runs faster
        than real time (``--speed``); a real pile has only one clock.
        """
        return now_ms() + self._wall_offset_ms

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def boot_id(self) -> str:
        return self.factory.boot_id

    # ================================================================ link
    def connect(self, timeout: float = 10.0) -> None:
        """Connect (or, with broker_url=None, bring the in-memory link up)."""
        if self.connected:
            return
        self._link_wanted = True
        if self.broker_url is None:
            self._prepare_will()
            self._on_link_up()
            return
        if self._client is None:
            self._client = self._new_client()
        url = urlparse(self.broker_url)
        default_port = 8883 if url.scheme == "mqtts" else 1883
        self._prepare_will()
        self._connect_error = None
        self._client.connect_async(url.hostname or "127.0.0.1", url.port or default_port,
                                   keepalive=self.keepalive_s)
        self._client.loop_start()
        if not self._connected.wait(timeout):
            error = self._connect_error or "timeout"
            self._stop_loop()
            raise ConnectionError(f"{self.pile_id}: cannot connect to {self.broker_url}: {error}")

    def disconnect(self, reason: str = "shutdown") -> None:
        """Clean goodbye: publish ``offline`` (the will is not sent on DISCONNECT)."""
        self._link_wanted = False
        if not self.connected:
            return
        with self._lock:
            self._send(self.factory.offline(conn=self.conn, reason=reason), faults=False)
            infos = [info for info, _, _ in self._inflight]
        self._connected.clear()
        if self._client is not None:
            deadline = time.monotonic() + 5
            for info in infos:
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            self._client.disconnect()
            self._stop_loop()

    def drop_link(self) -> None:
        """Lose the 4G link abruptly (no DISCONNECT): the broker publishes our will."""
        self._link_wanted = False
        with self._lock:
            self._connected.clear()
            self._park_faulty()
        if self._client is not None:
            self._stop_loop()
            sock = self._client.socket()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
        self.events.append("link dropped")

    def restore_link(self, timeout: float = 10.0) -> None:
        """Link back: reconnect (conn + 1, new will), online, backlog, offline sessions."""
        self.connect(timeout)

    def reboot(self, graceful: bool = False, timeout: float = 10.0) -> None:
        """Power cycle: sessions end with power_loss, new boot_id, seq from 1, conn + 1.

        Counters, backlog, unacked messages, the cmd_id cache and ended local
        sessions survive (flash); unacked messages are re-sent byte-identical.
        """
        was_linked = self._link_wanted
        if graceful:
            self.disconnect(reason="reboot")
        else:
            self.drop_link()
        with self._lock:
            for port in self.ports.values():
                if port.session is not None:
                    self._end_session(port, "power_loss", notify_status=False)
                port.power_w = 0
            carried = [(topic, data) for info, topic, data in self._inflight
                       if not info.is_published()]
            self._inflight.clear()
            self._backlog[:0] = carried
            self._client = None
            self._pending.clear()
            self._held, self._delayed = None, []
            self.factory.new_boot()
            self._boot_sim_s = self.sim_s
            self._clock_offset_ms = 0  # the RTC is not trusted until time_sync
            for port in self.ports.values():
                if port.status in ("charging", "full"):
                    port.status = "plugged" if port.plugged else "idle"
        self.events.append("rebooted")
        if was_linked:
            self.connect(timeout)

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.pile_id,
                             clean_session=True, protocol=mqtt.MQTTv311)
        client.username_pw_set(self.username, self.password)
        if self.broker_url and self.broker_url.startswith("mqtts://"):
            client.tls_set(ca_certs=self.tls_ca)
        client.reconnect_delay_set(1, 60)
        client.max_inflight_messages_set(50)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _stop_loop(self) -> None:
        # Never called with self._lock held: the loop thread may be waiting for it.
        if self._client is not None:
            self._client.loop_stop()

    def _prepare_will(self) -> None:
        """Every CONNECT carries a will with the new connection counter."""
        with self._lock:
            self.conn += 1
            will = self.factory.offline(conn=self.conn, reason="link_lost")
            self._record_sent(will)
            if self._client is not None:
                self._client.will_set(uplink_topic(self.pile_id, "offline"), encode(will),
                                      qos=1, retain=False)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            self._connect_error = str(reason_code)
            return
        sock = client.socket()
        if sock is not None and hasattr(sock, "setsockopt"):  # small packets go at once
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(downlink_topic(self.pile_id, "#"), qos=1)
        self._on_link_up()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and self._link_wanted:
            # paho reconnects by itself; the next CONNECT needs a fresh will.
            self.events.append(f"disconnected: {reason_code}")
            self._prepare_will()

    def _on_link_up(self) -> None:
        with self._lock:
            self._send(self.factory.online(
                conn=self.conn, ports=self._snapshot(), firmware=self.firmware, model=self.model,
                keepalive_s=self.keepalive_s, meter_interval_s=self.meter_interval_s,
                config_id=self.config.get("config_id"), iccid=self.iccid), faults=False)
            backlog, self._backlog = self._backlog, []
            for topic, data in backlog:
                self._publish_wire(topic, data)
            self._connected.set()
            self._flush_local_sessions()
        self.events.append(f"online conn={self.conn}")

    # ================================================================ sending
    def _record_sent(self, message: Uplink) -> None:
        if self.record:
            self.sent.append(message)

    def _emit(self, message: Uplink) -> None:
        """Send now, keep for later (must-deliver while offline), or drop."""
        self._record_sent(message)
        if self.connected:
            self._send(message, record=False)
        elif message.type in MUST_DELIVER:
            self._backlog.append((message.topic, encode(message)))

    def _send(self, message: Uplink, *, faults: bool = True, record: bool = True) -> None:
        if record:
            self._record_sent(message)
        topic, data = message.topic, encode(message)
        if not (faults and self.faults.any):
            self._publish_wire(topic, data)
            return
        rng = self.rng
        if rng.random() < self.faults.delay:
            self._delayed.append((time.monotonic() + self.faults.delay_s, topic, data))
            return
        if self._held is None and rng.random() < self.faults.reorder:
            self._held = (topic, data)  # goes out after the next message
            return
        self._publish_wire(topic, data)
        if rng.random() < self.faults.dup:
            self._publish_wire(topic, data)
        if self._held is not None:
            held, self._held = self._held, None
            self._publish_wire(*held)

    def _publish_wire(self, topic: str, data: bytes) -> None:
        if self.record:
            self.wire.append(_Wire(topic, data))
        if self.on_wire is not None:
            self.on_wire(topic, data)
        if self._client is not None:
            info = self._client.publish(topic, data, qos=1)
            self._inflight.append((info, topic, data))
            while self._inflight and self._inflight[0][0].is_published():
                self._inflight.popleft()

    def _park_faulty(self) -> None:
        """Held/delayed messages count as unsent: keep them for after reconnect."""
        if self._held is not None:
            self._backlog.append(self._held)
            self._held = None
        self._backlog.extend((topic, data) for _, topic, data in sorted(self._delayed))
        self._delayed = []

    def flush(self) -> None:
        """Release every held/delayed message now (end of a fault-injection run)."""
        with self._lock:
            if not self.connected:
                return
            if self._held is not None:
                self._publish_wire(*self._held)
                self._held = None
            for _, topic, data in sorted(self._delayed):
                self._publish_wire(topic, data)
            self._delayed = []

    def publish_raw(self, topic_or_type: str, payload: dict[str, Any] | bytes | str,
                    *, qos: int = 1) -> None:
        """Put anything on the wire (tests of what the platform refuses)."""
        topic = topic_or_type if "/" in topic_or_type else uplink_topic(self.pile_id,
                                                                        topic_or_type)
        data = payload if isinstance(payload, bytes) else (
            payload.encode() if isinstance(payload, str) else encode(payload))
        with self._lock:
            if self.record:
                self.wire.append(_Wire(topic, data))
            if self.on_wire is not None:
                self.on_wire(topic, data)
            if self._client is not None:
                self._client.publish(topic, data, qos=qos)

    def wait_published(self, timeout: float = 5.0) -> bool:
        """True once the broker acked everything published so far."""
        deadline = time.monotonic() + timeout
        with self._lock:
            infos = [info for info, _, _ in self._inflight]
        for info in infos:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                info.wait_for_publish(left)
            except (RuntimeError, ValueError):
                return False
            if not info.is_published():
                return False
        return True

    # ================================================================ snapshots
    def _snapshot(self) -> list[dict[str, Any]]:
        return [{"port": p.number, "status": p.status, "energy_wh": p.energy_wh,
                 "session_id": p.session.session_id if p.session else None,
                 "local_id": p.session.local_id if p.session else None}
                for p in self.ports.values()]

    def _set_status(self, port: Port, status: str, *, fault_code: str | None = None) -> None:
        if port.status == status:
            return
        prev, port.status = port.status, status
        port.fault_code = fault_code if status == "fault" else None
        s = port.session
        self._emit(self.factory.port_status(
            port=port.number, status=status, prev_status=prev,
            session_id=s.session_id if s else None, local_id=s.local_id if s else None,
            fault_code=port.fault_code))

    # ================================================================ user actions
    def plug(self, port: int, battery: Battery | None = None) -> Battery:
        """A user plugs a bike in."""
        with self._lock:
            p = self._port(port)
            if p.battery is None:
                p.battery = battery or Battery.random(self.rng)
                if p.status == "idle":
                    self._set_status(p, "plugged")
            return p.battery

    def unplug(self, port: int) -> None:
        """A user pulls the plug: a running session ends with ``unplugged``."""
        with self._lock:
            p = self._port(port)
            if p.session is not None:
                self._end_session(p, "unplugged")
            p.battery = None
            p.power_w = 0
            if p.status in ("plugged", "charging", "full"):
                self._set_status(p, "idle")

    def press_stop(self, port: int) -> None:
        """The user stops at the pile (keypad stop key / same card again)."""
        with self._lock:
            p = self._port(port)
            if p.session is not None:
                self._end_session(p, "stopped_by_user")

    def keypad_login(self, port: int, account_no: str, pin: str) -> str | None:
        """Keypad login; returns the req_id, or None when offline (keypad needs the link)."""
        with self._lock:
            if not self.connected:
                return None
            req_id = self._new_id("r")
            self._pending[req_id] = _Pending(port, "keypad", time.monotonic() + ANSWER_TIMEOUT_S)
            self._emit(self.factory.auth_request(
                req_id=req_id, port=port, account_no=account_no, pin=pin))
            return req_id

    def swipe_card(self, port: int, card_uid: str) -> str | None:
        """Card swipe: auth_request when online (req_id returned), local session offline."""
        card_uid = card_uid.upper()
        with self._lock:
            p = self._port(port)
            if p.session is not None and p.session.card_uid == card_uid:
                self._end_session(p, "stopped_by_user")  # same card again = stop
                return None
            if not self.connected:
                self._start_local(p, "card", card_uid=card_uid)
                return None
            req_id = self._new_id("r")
            self._pending[req_id] = _Pending(port, "card", time.monotonic() + ANSWER_TIMEOUT_S,
                                             card_uid=card_uid)
            self._emit(self.factory.auth_request(
                req_id=req_id, port=port, card_uid=card_uid))
            return req_id

    def insert_coins(self, port: int, fen: int) -> str | None:
        """Coins: coin_insert when online (req_id returned), local session offline."""
        with self._lock:
            p = self._port(port)
            if not self.connected:
                self._start_local(p, "coin", coin_fen=fen)
                return None
            req_id = self._new_id("c")
            self._pending[req_id] = _Pending(port, "coin", time.monotonic() + ANSWER_TIMEOUT_S,
                                             coin_fen=fen)
            self._emit(self.factory.coin_insert(req_id=req_id, port=port,
                                                               coin_fen=fen))
            return req_id

    def raise_alarm(self, port: int | None, kind: str, severity: str, *,
                    value: int | None = None, threshold: int | None = None) -> bool:
        """A sensor trips. Critical alarms cut the port (or the whole pile) off.

        Returns whether power was cut.
        """
        with self._lock:
            targets = [self._port(port)] if port is not None else list(self.ports.values())
            cut = severity == "critical"
            session = targets[0].session if port is not None else None
            self._emit(self.factory.alarm(
                port=port, kind=kind, severity=severity, cut_off=cut, value=value,
                threshold=threshold, session_id=session.session_id if session else None))
            if cut:
                for p in targets:
                    if p.session is not None:
                        self._end_session(p, "alarm")
                    p.power_w = 0
                    self._set_status(p, "fault", fault_code=kind)
            return cut

    def clear_alarm(self, port: int | None, kind: str, severity: str = "minor") -> None:
        """The condition is gone: alarm state=cleared; a faulted port is usable again."""
        with self._lock:
            targets = [self._port(port)] if port is not None else list(self.ports.values())
            self._emit(self.factory.alarm(port=port, kind=kind, severity=severity,
                                                   cut_off=False, state="cleared"))
            for p in targets:
                if p.status == "fault":
                    self._set_status(p, "plugged" if p.plugged else "idle")

    def report_master_meter(self, meter_id: str, energy_wh: int) -> None:
        """This pile doubles as the community's master-meter gateway."""
        with self._lock:
            self._emit(self.factory.master_meter(
                meter_id=meter_id, energy_wh=energy_wh, read_at=self.now_ms()))

    # ================================================================ time
    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass: charge, enforce limits, report."""
        with self._lock:
            remaining = float(seconds)
            while remaining > 1e-9:
                step = min(remaining, 10.0, max(1e-3, self._next_meter_s - self.sim_s),
                           max(1e-3, self._next_heartbeat_s - self.sim_s))
                self.sim_s += step
                self._physics(step)
                remaining -= step
                if self.sim_s + 1e-9 >= self._next_meter_s:
                    self._report_meter()
                    self._next_meter_s += self.meter_interval_s
                if self.sim_s + 1e-9 >= self._next_heartbeat_s:
                    self._heartbeat()
                    self._next_heartbeat_s += self.keepalive_s
        self.pump()

    def pump(self) -> None:
        """Real-time chores: release delayed messages, give up on unanswered requests."""
        now = time.monotonic()
        with self._lock:
            if self._delayed and self.connected:
                due = [d for d in self._delayed if d[0] <= now]
                self._delayed = [d for d in self._delayed if d[0] > now]
                for _, topic, data in sorted(due):
                    self._publish_wire(topic, data)
            for req_id, pending in list(self._pending.items()):
                if pending.deadline > now:
                    continue
                del self._pending[req_id]
                p = self.ports[pending.port]
                gave_up = pending.method == "coin" or (
                    pending.method == "card" and not pending.allowed)
                if gave_up and p.session is None:
                    # No answer: coins are already taken, cards may run offline.
                    self._start_local(p, pending.method, card_uid=pending.card_uid,
                                      coin_fen=pending.coin_fen)

    def _physics(self, dt: float) -> None:
        """The ``dt`` seconds that just ended (sim_s is already at their end)."""
        full_w = self.config["full_power_w"]
        full_s = self.config["full_minutes"] * 60
        for p in self.ports.values():
            s = p.session
            if s is None or p.battery is None or p.status != "charging":
                p.power_w = 0
                continue
            used = dt
            limits = s.limits
            if limits.get("max_minutes") is not None:
                used = min(used, max(0.0, limits["max_minutes"] * 60 - s.elapsed_s))
            power = p.battery.ac_power_w()
            reason: str | None = None
            if used < dt:
                reason = "limit_reached"
            add_mwh = int(p.battery.charge(used) * 1000) if used > 0 else 0
            if limits.get("max_energy_wh") is not None:
                cap_mwh = s.start_mwh + limits["max_energy_wh"] * 1000
                if p.energy_mwh + add_mwh >= cap_mwh:
                    add_mwh = max(0, cap_mwh - p.energy_mwh)
                    reason = "limit_reached"
            p.energy_mwh += add_mwh
            s.elapsed_s += used
            noise = 1 + self.rng.uniform(-0.015, 0.015)
            p.power_w = max(0, round(power * noise))
            p.voltage_dv = MAINS_DV + self.rng.randrange(-40, 41)
            p.temp_dc = 250 + p.power_w // 8 + self.rng.randrange(-5, 6)
            s.peak_power_w = max(s.peak_power_w, p.power_w)
            if limits.get("max_amount_fen") is not None and (
                    s.amount_fen_estimate(p.energy_mwh) >= limits["max_amount_fen"]):
                reason = "limit_reached"
            if power < full_w:
                s.below_full_s += used
                if s.below_full_s >= full_s and reason is None:
                    reason = "full"
            else:
                s.below_full_s = 0.0
            if reason is not None:
                self._end_session(p, reason, at_ms=self.now_ms() - int((dt - used) * 1000))

    def _report_meter(self) -> None:
        readings = []
        for p in self.ports.values():
            if p.session is None and p.energy_wh == p.last_reported_wh:
                continue
            s = p.session
            current_ma = p.power_w * 10_000_000 // (p.voltage_dv * 96) if p.power_w else 0
            readings.append({
                "port": p.number, "energy_wh": p.energy_wh,
                "delta_wh": p.energy_wh - p.last_reported_wh,
                "power_w": p.power_w, "voltage_dv": p.voltage_dv, "current_ma": current_ma,
                "temp_dc": p.temp_dc, "session_id": s.session_id if s else None,
                "local_id": s.local_id if s else None,
            })
            if self.connected:
                p.last_reported_wh = p.energy_wh
        if readings:
            self._emit(self.factory.meter(readings))

    def _heartbeat(self) -> None:
        self._emit(self.factory.heartbeat(
            port_statuses=[p.status for p in self.ports.values()],
            uptime_s=int(self.sim_s - self._boot_sim_s), rssi_dbm=self.rssi_dbm))

    # ================================================================ sessions
    def _start_session(self, p: Port, session: Session) -> None:
        p.session = session
        self._set_status(p, "charging")

    def _start_local(self, p: Port, method: str, *, card_uid: str | None = None,
                     coin_fen: int | None = None) -> bool:
        """Offline session (card/coin) with the limits the last config allows."""
        if p.session is not None or not p.plugged or p.status in ("fault", "offline"):
            return False
        if method == "card":
            limits = self.config.get("offline_card_limits")
            if limits is None:
                return False  # operator forbids offline card sessions
        else:
            limits = {"max_energy_wh": None,
                      "max_minutes": self.config["offline_coin_max_minutes"],
                      "max_amount_fen": coin_fen}
        self._local_counter += 1
        local_id = f"{self.boot_id[:16]}-{self._local_counter}"
        self._start_session(p, Session(
            port=p.number, method=method, session_id=None, local_id=local_id,
            limits=dict(limits), tariff=dict(self.config["tariff"]), started_at=self.now_ms(),
            start_mwh=p.energy_mwh, card_uid=card_uid, coin_fen=coin_fen))
        self.events.append(f"local {method} session {local_id} on port {p.number}")
        return True

    def _end_session(self, p: Port, reason: str, *, at_ms: int | None = None,
                     notify_status: bool = True) -> None:
        s = p.session
        if s is None:
            return
        p.session = None
        p.power_w = 0
        ended_at = self.now_ms() if at_ms is None else at_ms
        energy_end = p.energy_wh
        energy_start = s.start_mwh // 1000
        if s.session_id is not None:
            self._emit(self.factory.session_end(
                session_id=s.session_id, port=p.number, reason=reason,
                energy_start_wh=energy_start, energy_end_wh=energy_end,
                started_at=s.started_at, ended_at=ended_at, peak_power_w=s.peak_power_w))
        else:
            self._local_done.append({
                "local_id": s.local_id, "method": s.method, "card_uid": s.card_uid,
                "coin_fen": s.coin_fen, "port": p.number, "reason": reason,
                "energy_start_wh": energy_start, "energy_end_wh": energy_end,
                "started_at": s.started_at, "ended_at": ended_at,
                "peak_power_w": s.peak_power_w})
            self._flush_local_sessions()
        if notify_status:
            if reason == "full" and p.plugged:
                self._set_status(p, "full")
            elif p.status == "charging":
                self._set_status(p, "plugged" if p.plugged else "idle")

    def _flush_local_sessions(self) -> None:
        if not self.connected or not self._local_done:
            return
        done = sorted(self._local_done, key=lambda r: (r["started_at"], r["local_id"]))
        self._local_done = []
        for i in range(0, len(done), OFFLINE_BATCH):
            self._emit(self.factory.offline_sessions(done[i:i + OFFLINE_BATCH]))

    # ================================================================ downlink
    def deliver(self, topic_or_type: str, payload: dict[str, Any] | bytes) -> None:
        """Hand a downlink to the pile as if it came from the broker."""
        topic = topic_or_type if "/" in topic_or_type else downlink_topic(self.pile_id,
                                                                          topic_or_type)
        data = payload if isinstance(payload, bytes) else encode(payload)
        self._handle_downlink(topic, data)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._handle_downlink(msg.topic, msg.payload)
        except Exception:  # a bad command must never kill the network thread
            log.exception("%s: error handling %s", self.pile_id, msg.topic)

    def _handle_downlink(self, topic: str, data: bytes) -> None:
        try:
            pile_id, direction, msg_type = parse_topic(topic)
        except ProtocolError:
            return
        if pile_id != self.pile_id or direction != "down":
            return
        with self._lock:
            try:
                cmd = validate_downlink(msg_type, data)
            except ProtocolError as exc:
                self.events.append(f"refused {msg_type}: {exc}")
                self._nack_invalid(msg_type, data)
                return
            cached = self._cmd_cache.get(cmd["cmd_id"])
            if cached is not None:  # repeated cmd_id: answer again, do not act twice
                self._emit_ack(*cached, remember_as=None)
                return
            self.received.append({"type": msg_type, **cmd})
            if cmd["expires_at"] < self.wall_ms():
                self.events.append(f"stale {msg_type} {cmd['cmd_id']}")
                if msg_type in ("start", "stop"):
                    self._ack(cmd, msg_type, ok=False, reason="expired")
                elif msg_type == "config":
                    self._ack_config(cmd, ok=False, reason="expired")
                return
            handler = getattr(self, f"_cmd_{msg_type}")
            handler(cmd)

    def _nack_invalid(self, msg_type: str, data: bytes) -> None:
        try:
            raw = decode(data)
        except ProtocolError:
            return
        cmd_id = raw.get("cmd_id")
        if not isinstance(cmd_id, str) or not 8 <= len(cmd_id) <= 64:
            return
        if msg_type in ("start", "stop"):
            self._emit_ack("cmd_ack", {"cmd_id": cmd_id, "cmd": msg_type, "ok": False,
                                       "reason": "invalid", "port": None, "session_id": None,
                                       "energy_wh": None}, remember_as=cmd_id)
        elif msg_type == "config":
            self._emit_ack("config_ack", {"cmd_id": cmd_id, "config_id": None, "ok": False,
                                          "reason": "invalid"}, remember_as=cmd_id)

    def _emit_ack(self, ack_type: str, body: dict[str, Any], *, remember_as: str | None) -> None:
        message = self.factory.build(ack_type, body)
        self.acks_sent.append(message)
        self._emit(message)
        if remember_as is not None:
            self._cmd_cache[remember_as] = (ack_type, body)
            while len(self._cmd_cache) > CMD_CACHE_SIZE:
                self._cmd_cache.popitem(last=False)

    def _ack(self, cmd: dict[str, Any], kind: str, *, ok: bool, reason: str | None = None) -> None:
        port = self.ports.get(cmd["port"])
        self._emit_ack("cmd_ack", {
            "cmd_id": cmd["cmd_id"], "cmd": kind, "ok": ok, "reason": reason,
            "port": cmd["port"] if port else None, "session_id": cmd["session_id"],
            "energy_wh": port.energy_wh if port else None}, remember_as=cmd["cmd_id"])

    def _ack_config(self, cmd: dict[str, Any], *, ok: bool, reason: str | None = None) -> None:
        self._emit_ack("config_ack", {"cmd_id": cmd["cmd_id"], "config_id": cmd.get("config_id"),
                                      "ok": ok, "reason": reason}, remember_as=cmd["cmd_id"])

    def _cmd_start(self, cmd: dict[str, Any]) -> None:
        p = self.ports.get(cmd["port"])
        if p is None:
            self._ack(cmd, "start", ok=False, reason="invalid")
            return
        if p.session is not None and p.session.session_id == cmd["session_id"]:
            self._ack(cmd, "start", ok=True)  # already running: same session, new cmd_id
            return
        pending = self._pending.pop(cmd["req_id"], None) if cmd["req_id"] else None
        if p.status in ("fault", "offline"):
            self._ack(cmd, "start", ok=False, reason="fault")
        elif p.session is not None:
            self._ack(cmd, "start", ok=False, reason="port_busy")
        elif not p.plugged:
            self._ack(cmd, "start", ok=False, reason="not_plugged")
        else:
            self._start_session(p, Session(
                port=p.number, method=cmd["method"], session_id=cmd["session_id"], local_id=None,
                limits=dict(cmd["limits"]), tariff=dict(cmd["tariff"]),
                started_at=self.now_ms(), start_mwh=p.energy_mwh,
                card_uid=pending.card_uid if pending else None,
                coin_fen=pending.coin_fen if pending else None, req_id=cmd["req_id"]))
            self._ack(cmd, "start", ok=True)

    def _cmd_stop(self, cmd: dict[str, Any]) -> None:
        p = self.ports.get(cmd["port"])
        if p is None:
            self._ack(cmd, "stop", ok=False, reason="invalid")
        elif p.session is None or p.session.session_id != cmd["session_id"]:
            self._ack(cmd, "stop", ok=False, reason="unknown_session")
        else:
            # the ack carries the counter at stop; session_end follows it.
            self._ack(cmd, "stop", ok=True)
            self._end_session(p, "stopped_by_platform")

    def _cmd_config(self, cmd: dict[str, Any]) -> None:
        for key in ("config_id", "tariff", "full_power_w", "full_minutes", "offline_card_limits",
                    "offline_coin_max_minutes"):
            self.config[key] = cmd[key]
        self.keepalive_s = cmd["keepalive_s"]
        if cmd["meter_interval_s"] != self.meter_interval_s:
            self.meter_interval_s = cmd["meter_interval_s"]
            self._next_meter_s = self.sim_s + self.meter_interval_s
        self._ack_config(cmd, ok=True)

    def _cmd_time_sync(self, cmd: dict[str, Any]) -> None:
        self._clock_offset_ms += cmd["ts"] - self.now_ms()
        self._wall_offset_ms = cmd["ts"] - now_ms()

    def _cmd_balance(self, cmd: dict[str, Any]) -> None:
        self.display = {"account_hint": cmd["account_hint"], "balance_fen": cmd["balance_fen"],
                        "port": cmd["port"], "reason": cmd["reason"]}

    def _cmd_auth_reply(self, cmd: dict[str, Any]) -> None:
        self.auth_replies.append(cmd)
        pending = self._pending.get(cmd["req_id"])
        if pending is None:
            return
        if cmd["allow"]:
            pending.allowed = True  # wait for the start that follows
            pending.deadline = time.monotonic() + ANSWER_TIMEOUT_S
        else:
            del self._pending[cmd["req_id"]]
        if cmd["balance_fen"] is not None:
            self.display = {"account_hint": "", "balance_fen": cmd["balance_fen"],
                            "port": cmd["port"], "reason": "query"}

    # ================================================================ helpers
    def _port(self, number: int) -> Port:
        try:
            return self.ports[number]
        except KeyError:
            raise ValueError(f"{self.pile_id} has no port {number}") from None

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{self.rng.getrandbits(64):016x}"

    def sent_of(self, msg_type: str) -> list[Uplink]:
        """Uplinks of one type created so far."""
        with self._lock:
            return [m for m in self.sent if m.type == msg_type]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0,
                 interval: float = 0.02) -> bool:
        """Poll ``predicate`` (e.g. a command arrived) until true or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if predicate():
                    return True
            time.sleep(interval)
        with self._lock:
            return predicate()

    def __repr__(self) -> str:
        return f"SimulatedPile({self.pile_id!r}, ports={len(self.ports)}, conn={self.conn})"



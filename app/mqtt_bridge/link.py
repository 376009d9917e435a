"""The bridge worker's MQTT link: paho in this process, or in a process of its own.

A worker is two kinds of work that Python's GIL would otherwise run one at a
time: paho parsing and acknowledging MQTT packets, and the ingest (JSON,
validation, pricing, SQL). ``PahoLink`` runs paho on a thread of the worker's
process (tests, the SQLite demo); ``ProcessLink`` runs the same ``PahoLink``
in a child process and passes messages, acks and publishes over a pipe, so
the two kinds of work use two cores (``flask bridge run``; bench/ingest.py).

Either way the contract is the worker's: messages arrive tagged with the
connection (``generation``) that delivered them, and an ack goes only to that
connection: after a reconnect, or a restarted child, the broker redelivers
whatever was not acked and the inbox makes the second copy a no-op.

This module imports paho and the standard library only: the child process
never loads Flask or SQLAlchemy.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger("evc.bridge")

NUDGE_TOPIC = "evc/bridge/nudge"


class Inbound(NamedTuple):
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int  # which connection delivered it (acks go to that one only)
    arrived: float  # time.monotonic(): one clock for every process of the machine


Ack = tuple[int, int, int]  # (mid, qos, generation)


def no_delay(client: mqtt.Client) -> None:
    """Disable Nagle on our side: a command or an ack is one small packet that must go
    now, not after the peer's delayed ACK (~40 ms on Linux). The project broker config
    does the same on its side (set_tcp_nodelay)."""
    sock = client.socket()
    if sock is not None and hasattr(sock, "setsockopt"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def parse_mqtt_url(url: str) -> tuple[str, int, bool]:
    parsed = urlparse(url)
    tls = parsed.scheme in ("mqtts", "ssl")
    return parsed.hostname or "127.0.0.1", parsed.port or (8883 if tls else 1883), tls


@dataclass(frozen=True)
class LinkConfig:
    """Everything a link needs to connect; plain values, so it crosses to a child."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    client_id: str
    topic: str  # the shared subscription of uplinks
    session_expiry_s: int
    receive_maximum: int
    keepalive: int = 30


class LinkEvents(Protocol):
    """What a link tells its worker (called on the link's threads)."""

    def on_messages(self, items: list[Inbound]) -> None: ...
    def on_connected(self, generation: int) -> None: ...
    def on_disconnected(self, reason: str) -> None: ...
    def on_nudge(self) -> None: ...


class InboundQueue:
    """Messages waiting for the ingest thread; cheaper than queue.Queue per item, and
    a batch from the child process goes in with one call."""

    def __init__(self) -> None:
        self._items: deque[Inbound] = deque()
        self._ready = threading.Condition()

    def put_many(self, items: Iterable[Inbound]) -> None:
        with self._ready:
            self._items.extend(items)
            self._ready.notify()

    def take(self, most: int, wait_s: float, linger_s: float) -> list[Inbound]:
        """Up to ``most`` messages: wait up to ``wait_s`` for the first, then up to
        ``linger_s`` more for the batch to fill."""
        with self._ready:
            if not self._items and not self._ready.wait_for(lambda: self._items, wait_s):
                return []
            if len(self._items) < most and linger_s > 0:
                self._ready.wait_for(lambda: len(self._items) >= most, linger_s)
            n = min(most, len(self._items))
            return [self._items.popleft() for _ in range(n)]

    def clear(self) -> None:
        with self._ready:
            self._items.clear()


class PahoLink:
    """paho on a thread of this process: persistent MQTT 5 session, QoS 1, manual acks."""

    def __init__(self, config: LinkConfig, events: LinkEvents, *,
                 first_generation: int = 1) -> None:
        self.config = config
        self.events = events
        self.generation = first_generation - 1
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=config.client_id,
                                  protocol=mqtt.MQTTv5, manual_ack=True)
        if config.username:
            self.client.username_pw_set(config.username, config.password)
        if config.tls:
            self.client.tls_set()
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.max_inflight_messages_set(config.receive_maximum)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any,
                    _p: Any) -> None:
        if reason.is_failure:
            log.error("%s: connect refused: %s", self.config.client_id, reason)
            return
        no_delay(client)
        self.generation += 1
        # Re-subscribing is harmless with a persistent session and needed without one.
        client.subscribe(self.config.topic, qos=1)
        client.subscribe(NUDGE_TOPIC, qos=0)
        self.events.on_connected(self.generation)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any,
                       _p: Any) -> None:
        self.events.on_disconnected(str(reason))

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == NUDGE_TOPIC:
            self.events.on_nudge()
            return
        self.events.on_messages([Inbound(msg.topic, msg.payload, msg.mid, msg.qos,
                                         self.generation, time.monotonic())])

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.ReceiveMaximum = self.config.receive_maximum
        self.client.connect_async(self.config.host, self.config.port,
                                  keepalive=self.config.keepalive, clean_start=False,
                                  properties=props)
        self.client.loop_start()

    def ack(self, acks: Iterable[Ack]) -> None:
        """Acknowledge on the connection that delivered; older ones are gone."""
        current = self.generation
        for mid, qos, generation in acks:
            if generation == current and qos > 0:
                self.client.ack(mid, qos)

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        self.client.publish(topic, payload, qos=qos)

    def stop(self, *, disconnect: bool = True) -> None:
        if disconnect:
            self.client.disconnect()
        self.client.loop_stop()


# --- the same link in a child process ------------------------------------------------
#
# Child → parent: ("messages", [tuple, ...]) | ("connected", gen) | ("disconnected", why)
#                 | ("nudge",)
# Parent → child: ("ack", [(mid, qos, gen), ...]) | ("publish", topic, payload, qos)
#                 | ("stop", disconnect)

FLUSH_EVERY_S = 0.002  # how long a message may wait in the child to travel with others
FLUSH_AT = 250  # ... or this many go at once


class _PipeEvents:
    """In the child: gathers messages and sends them to the parent in batches."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()  # Connection.send is not thread-safe
        self.pending: list[Inbound] = []
        self.pending_lock = threading.Lock()
        self.wake = threading.Event()

    def send(self, message: tuple[Any, ...]) -> None:
        with self.lock:
            self.conn.send(message)

    def on_messages(self, items: list[Inbound]) -> None:
        with self.pending_lock:
            self.pending.extend(items)
            full = len(self.pending) >= FLUSH_AT
        if full:
            self.wake.set()

    def flush(self) -> None:
        with self.pending_lock:
            batch, self.pending = self.pending, []
        if batch:
            self.send(("messages", [tuple(m) for m in batch]))

    def on_connected(self, generation: int) -> None:
        self.flush()
        self.send(("connected", generation))

    def on_disconnected(self, reason: str) -> None:
        self.flush()
        self.send(("disconnected", reason))

    def on_nudge(self) -> None:
        self.send(("nudge",))


def _child_main(config: LinkConfig, conn: Connection, first_generation: int) -> None:
    """The child process: one PahoLink, a flusher, and the parent's orders."""
    # Ctrl-C reaches the whole process group: the parent decides when the link stops
    # (it acks what committed, then disconnects cleanly).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s[link]: %(message)s")
    events = _PipeEvents(conn)
    link = PahoLink(config, events, first_generation=first_generation)
    stopping = threading.Event()

    def flusher() -> None:
        while not stopping.is_set():
            events.wake.wait(FLUSH_EVERY_S)
            events.wake.clear()
            try:
                events.flush()
            except OSError:  # the parent is gone
                os._exit(0)

    threading.Thread(target=flusher, name="link-flush", daemon=True).start()
    link.start()
    while True:
        try:
            order = conn.recv()
        except (EOFError, OSError):  # the parent died: the broker keeps the unacked
            os._exit(0)
        kind = order[0]
        if kind == "ack":
            link.ack(order[1])
        elif kind == "publish":
            link.publish(order[1], order[2], order[3])
        elif kind == "stop":
            stopping.set()
            link.stop(disconnect=order[1])
            with contextlib.suppress(OSError):
                events.send(("stopped",))
            return


class ProcessLink:
    """PahoLink in a child process; restarted (new connection) if the child dies."""

    RESTART_DELAY_S = 1.0

    def __init__(self, config: LinkConfig, events: LinkEvents) -> None:
        self.config = config
        self.events = events
        self.generation = 0  # the current connection's; acks for others are dropped
        self._epoch = 0
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()
        self._stopping = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        self._spawn()
        self._reader = threading.Thread(target=self._read_loop, name="link-read", daemon=True)
        self._reader.start()

    def _spawn(self) -> None:
        self._epoch += 1
        parent, child = self._ctx.Pipe(duplex=True)
        # generations never repeat across children: a late ack for an old child's
        # message cannot be mistaken for the new connection's
        proc = self._ctx.Process(target=_child_main, name=f"{self.config.client_id}-link",
                                 args=(self.config, child, self._epoch * 1_000_000 + 1),
                                 daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent

    def _read_loop(self) -> None:
        on_messages: Callable[[list[Inbound]], None] = self.events.on_messages
        make = Inbound._make
        while True:
            conn = self._conn
            assert conn is not None
            try:
                message = conn.recv()
            except (EOFError, OSError):
                if self._stopping.is_set():
                    return
                log.error("%s: MQTT link process died (exit %s); restarting",
                          self.config.client_id, self._proc.exitcode if self._proc else "?")
                self.generation = 0
                self.events.on_disconnected("link process died")
                with self._send_lock:
                    conn.close()
                    self._conn = None  # publishes and acks until the new child: dropped
                time.sleep(self.RESTART_DELAY_S)
                if self._stopping.is_set():
                    return
                with self._send_lock:
                    self._spawn()
                continue
            kind = message[0]
            if kind == "messages":
                on_messages(list(map(make, message[1])))
            elif kind == "connected":
                self.generation = message[1]
                self.events.on_connected(message[1])
            elif kind == "disconnected":
                self.events.on_disconnected(message[1])
            elif kind == "nudge":
                self.events.on_nudge()
            elif kind == "stopped":
                return

    def _send(self, order: tuple[Any, ...]) -> None:
        with self._send_lock:
            conn = self._conn
            if conn is None:
                return
            try:
                conn.send(order)
            except OSError:  # the child is gone: the reader restarts it, the broker redelivers
                log.warning("%s: MQTT link process unreachable", self.config.client_id)

    def ack(self, acks: Iterable[Ack]) -> None:
        current = self.generation
        mine = [a for a in acks if a[2] == current and a[1] > 0]
        if mine:
            self._send(("ack", mine))

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        self._send(("publish", topic, payload, qos))

    def stop(self, *, disconnect: bool = True) -> None:
        self._stopping.set()
        self._send(("stop", disconnect))
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self._proc is not None:
            self._proc.join(timeout=5)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=5)
        with self._send_lock:
            if self._conn is not None:
                self._conn.close()

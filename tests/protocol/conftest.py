"""Helpers for the protocol tests: a recording MQTT client and the shared broker."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

SHARED_HOST, SHARED_PORT = "127.0.0.1", 1883


@dataclass
class Received:
    topic: str
    payload: bytes

    @property
    def msg_type(self) -> str:
        return self.topic.rsplit("/", 1)[-1]

    def json(self) -> Any:
        return json.loads(self.payload)


class Recorder:
    """A plain paho client (no simulator code) that records what it receives."""

    def __init__(self, host: str, port: int, *, client_id: str | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self.connect_result: Any = None
        self.disconnected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"rec-{uuid.uuid4().hex[:12]}")
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.disconnected.set()
        self._connected = threading.Event()
        self.suback: list[Any] = []
        self.client.on_subscribe = lambda c, u, mid, codes, props: self.suback.extend(codes)
        self.host, self.port = host, port

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any) -> None:
        self.connect_result = rc
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, msg.payload))
            self._cond.notify_all()

    def start(self, timeout: float = 5.0) -> Recorder:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        assert self._connected.wait(timeout), "no CONNACK"
        return self

    def subscribe(self, topic: str, timeout: float = 5.0) -> None:
        before = len(self.suback)
        self.client.subscribe(topic, qos=1)
        deadline = time.monotonic() + timeout
        while len(self.suback) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.suback) > before, "no SUBACK"

    def publish(self, topic: str, payload: bytes | str, timeout: float = 5.0) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_for(self, predicate: Callable[[list[Received]], bool],
                 timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def of_type(self, msg_type: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.msg_type == msg_type]

    def wait_type(self, msg_type: str, count: int = 1, timeout: float = 10.0) -> list[Received]:
        ok = self.wait_for(lambda ms: sum(m.msg_type == msg_type for m in ms) >= count, timeout)
        assert ok, f"expected {count} {msg_type}, got {[m.msg_type for m in self.messages]}"
        return self.of_type(msg_type)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def shared_broker() -> tuple[str, int]:
    """The anonymous Mosquitto on 127.0.0.1:1883 (skips the test when absent)."""
    if not _reachable(SHARED_HOST, SHARED_PORT):
        pytest.skip("no MQTT broker on 127.0.0.1:1883")
    return SHARED_HOST, SHARED_PORT


@pytest.fixture
def unique_pile_id() -> str:
    """A pile id nobody else's test uses on the shared broker."""
    return f"TP{uuid.uuid4().hex[:10]}"


@pytest.fixture
def recorder_factory() -> Iterator[Callable[..., Recorder]]:
    made: list[Recorder] = []

    def make(host: str, port: int, **kw: Any) -> Recorder:
        rec = Recorder(host, port, **kw)
        made.append(rec)
        return rec

    yield make
    for rec in made:
        rec.stop()

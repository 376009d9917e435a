"""Run a real bridge worker (threads, real broker, real database) inside a test."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
from flask import Flask
from paho.mqtt.enums import CallbackAPIVersion

from app.extensions import db
from app.mqtt_bridge.worker import BridgeWorker, parse_mqtt_url

SHARED_BROKER = "mqtt://127.0.0.1:1883"


def wait_until(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll until ``check()`` is truthy (reading fresh database state each time)."""
    deadline = time.monotonic() + timeout
    while True:
        db.session.rollback()  # see other connections' commits
        db.session.expire_all()
        value = check()
        db.session.rollback()  # never hold SQLite's write lock while we sleep
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {check}")
        time.sleep(interval)


def configure_mqtt(app: Flask, url: str = SHARED_BROKER, **more: Any) -> str:
    """Point the app at a broker with a unique client prefix; returns the prefix.

    Also ends the test's open transaction: on SQLite every transaction takes the
    write lock (BEGIN IMMEDIATE), and the bridge threads need it.
    """
    db.session.commit()
    prefix = f"evc-test-{uuid.uuid4().hex[:8]}"
    app.config["SETTINGS"] = dataclasses.replace(
        app.config["SETTINGS"], mqtt_url=url, mqtt_client_prefix=prefix, **more)
    return prefix


@contextmanager
def running_bridge(app: Flask, worker: str = "1", group: str | None = None,
                   **kw: Any) -> Iterator[BridgeWorker]:
    bridge = BridgeWorker(app, worker=worker, group=group or f"g{uuid.uuid4().hex[:8]}",
                          session_expiry_s=kw.pop("session_expiry_s", 120), **kw)
    db.session.rollback()
    bridge.start()
    deadline = time.monotonic() + 10
    while not bridge.stats.connected:
        if time.monotonic() > deadline:
            bridge.stop()
            raise AssertionError("bridge did not connect")
        time.sleep(0.02)
    time.sleep(0.1)  # the SUBACK
    try:
        yield bridge
    finally:
        db.session.rollback()  # let the bridge threads finish their last transaction
        bridge.stop()


class PileClient:
    """A bare MQTT client speaking as one pile: publish uplinks, collect downlinks."""

    def __init__(self, url: str, pile_id: str, *, username: str | None = None,
                 password: str | None = None, will: tuple[str, bytes] | None = None) -> None:
        host, port, _ = parse_mqtt_url(url)
        self.received: list[mqtt.MQTTMessage] = []
        self.connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=pile_id,
                                  protocol=mqtt.MQTTv311)
        if username:
            self.client.username_pw_set(username, password)
        if will:
            self.client.will_set(will[0], will[1], qos=1)
        self.client.on_connect = lambda c, u, f, rc, p: (
            c.subscribe(f"piles/{pile_id}/down/#", qos=1), self.connected.set())
        self.client.on_message = lambda c, u, m: self.received.append(m)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise AssertionError("pile client did not connect")
        time.sleep(0.05)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout=10)

    def close(self, *, clean: bool = True) -> None:
        if clean:
            self.client.disconnect()
        self.client.loop_stop()

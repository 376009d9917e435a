"""A small per-process MQTT publisher for the web side: nudges and live events.

Commands to piles are never sent from here: they go through the outbox, which
the bridge sends. After a commit, the web process only *nudges* the bridge
(``evc/bridge/nudge``) so a fresh command leaves within milliseconds instead of
at the next outbox poll. Losing a nudge costs latency, never a command.
"""

from __future__ import annotations

import logging
import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from app.config import Settings
from app.mqtt_bridge.link import NUDGE_TOPIC, no_delay, parse_mqtt_url

log = logging.getLogger(__name__)

_lock = threading.Lock()
_clients: dict[str, mqtt.Client] = {}


def _client(settings: Settings) -> mqtt.Client:

    key = f"{settings.mqtt_url}|{settings.mqtt_username}"
    with _lock:
        client = _clients.get(key)
        if client is None:
            host, port, tls = parse_mqtt_url(settings.mqtt_url)
            client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                 client_id=f"{settings.mqtt_client_prefix}-web-"
                                           f"{uuid.uuid4().hex[:8]}")
            if settings.mqtt_username:
                client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
            if tls:
                client.tls_set()
            client.on_connect = lambda c, *_: no_delay(c)
            client.connect_async(host, port, keepalive=30)
            client.loop_start()
            _clients[key] = client
        return client


def nudge_bridge(settings: Settings) -> None:
    """Only needed on SQLite: on PostgreSQL the outbox NOTIFYs the bridges at commit."""
    if settings.database_url.startswith("postgresql"):
        return
    try:
        _client(settings).publish(NUDGE_TOPIC, b"1", qos=0)
    except Exception:  # the outbox poll will send the command anyway
        log.debug("could not nudge the bridge", exc_info=True)

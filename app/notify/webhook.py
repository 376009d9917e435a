"""Webhook: a JSON POST to another system (e.g. a fire-protection IoT platform).

Request::

    POST <NOTIFY_WEBHOOK_URL>
    Content-Type: application/json
    X-EVC-Event: incident.opened | incident.severity_raised | incident.escalated
    X-EVC-Delivery: <notification id; the same on every retry>
    X-EVC-Timestamp: <unix seconds>
    X-EVC-Signature: sha256=<hex HMAC-SHA256(NOTIFY_WEBHOOK_SECRET, timestamp + "." + body)>

    {"event": ..., "delivery_id": ..., "incident": {...the queued payload...}, "text": ...}

The receiver recomputes the HMAC over the raw body bytes with the shared secret, compares
in constant time, refuses timestamps more than 5 minutes old (replays) and de-duplicates by
``X-EVC-Delivery`` (a retry after a lost response repeats the same delivery). Any 2xx is
success; anything else, or no answer within the timeout, is retried.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable

import requests

from app.notify.base import DeliveryError, Message

SIGNATURE_HEADER = "X-EVC-Signature"
TIMESTAMP_HEADER = "X-EVC-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *,
           now: float | None = None, tolerance_s: int = 300) -> bool:
    """What a receiver does (used by the tests, and a reference for integrators)."""
    try:
        age = abs((now if now is not None else time.time()) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookChannel:
    name = "webhook"

    def __init__(self, secret: str, *, timeout_s: float = 5,
                 clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.timeout_s = timeout_s
        self.clock = clock

    def send(self, recipient: str, message: Message) -> None:
        event = f"incident.{message.get('reason', 'opened')}"
        body = json.dumps({
            "event": event, "delivery_id": message.delivery_id,
            "incident": dict(message.payload), "text": message.text,
        }, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        timestamp = str(int(self.clock()))
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "evcharge-notify/1",
            "X-EVC-Event": event,
            "X-EVC-Delivery": str(message.delivery_id),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
        }
        try:
            res = requests.post(recipient, data=body, headers=headers, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise DeliveryError(f"webhook unreachable: {exc.__class__.__name__}") from exc
        if not 200 <= res.status_code < 300:
            # retried even for 4xx: a receiver being redeployed or a secret being rotated
            # must not lose a fire alarm; the attempts are bounded (NOTIFY_MAX_ATTEMPTS)
            raise DeliveryError(f"webhook answered {res.status_code}")

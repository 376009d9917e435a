"""Notification channels, each request captured by a local HTTP server and checked: the
webhook's HMAC-SHA256 signature, the SMS gateway's signed request, WeChat's token fetch
and subscribe message; retries, permanent failures, and sending after the commit from the
dispatcher thread (never inline)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from app.extensions import db
from app.models import IncidentNotification, SharedToken
from app.models.base import utcnow
from app.notify import build_channels
from app.notify.dispatcher import dispatcher_for
from app.notify.webhook import verify
from app.services import incidents, notifications
from app.services.uow import UnitOfWork
from tests.factories import World
from tests.integration.test_ops_support import (
    SMS_SECRET,
    WEBHOOK_SECRET,
    PileFeed,
    contacts,
    incidents_of,
    notify_settings,
    start_session,
    stop_commands,
)
from tests.support.http_capture import Captured, CaptureServer, capture_server


@pytest.fixture
def server(app: Flask) -> Iterator[CaptureServer]:
    with capture_server() as s:
        yield s
    dispatcher_for(app).stop()


@pytest.fixture
def alarm(app: Flask, world: World, server: CaptureServer) -> dict[str, Any]:
    """A smoke alarm on world A's pile, its notifications queued (not sent yet)."""
    app.config["NOTIFY_DISPATCH"] = False
    notify_settings(app, server.url)
    people = contacts(world)
    feed = PileFeed(world.a.pile.serial)
    feed.online()
    sid = start_session(world.a, 2)
    feed.alarm(2, "smoke", "critical", cut_off=True, value=1, threshold=1, session_id=sid)
    [incident] = incidents_of(world.a.pile.id)
    return {"incident": incident.id, "people": people, "session": sid, "feed": feed}


def _rows() -> list[IncidentNotification]:
    db.session.expire_all()
    rows = list(db.session.execute(select(IncidentNotification)
                                   .order_by(IncidentNotification.id)).scalars())
    db.session.rollback()
    return rows


def _deliver(app: Flask, now: Any = None) -> dict[str, int]:
    db.session.rollback()
    return dict(notifications.deliver_due(
        UnitOfWork(), build_channels(app.config["SETTINGS"], db.session), now=now))


def test_webhook_request_is_signed_and_carries_the_incident(
        app: Flask, world: World, server: CaptureServer, alarm: dict[str, Any]) -> None:
    assert _deliver(app) == {"sent": 3}
    [hook] = server.matching(lambda r: r.path == "/fire-platform/hook")
    assert hook.method == "POST" and hook.header("Content-Type").startswith("application/json")
    timestamp, signature = hook.header("X-EVC-Timestamp"), hook.header("X-EVC-Signature")
    expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), f"{timestamp}.".encode()
                                    + hook.body, hashlib.sha256).hexdigest()
    assert signature == expected
    assert verify(WEBHOOK_SECRET, timestamp, hook.body, signature)
    assert not verify("another-secret", timestamp, hook.body, signature)
    assert not verify(WEBHOOK_SECRET, timestamp, hook.body + b" ", signature)
    assert not verify(WEBHOOK_SECRET, str(int(timestamp) - 3600), hook.body, signature)
    assert hook.header("X-EVC-Event") == "incident.opened"
    body = hook.json()
    assert body["event"] == "incident.opened"
    assert body["delivery_id"] == int(hook.header("X-EVC-Delivery"))
    inc = body["incident"]
    assert inc["incident_id"] == alarm["incident"]
    assert (inc["kind"], inc["severity"], inc["port_no"]) == ("smoke", "critical", 2)
    assert inc["pile_serial"] == world.a.pile.serial
    assert inc["community_name"] == "Community A" and inc["stop_scope"] == "pile"
    assert inc["session_id"] == alarm["session"] and inc["level"] == 1
    assert "烟雾报警" in body["text"] and "平台已下发断电指令" in body["text"]
    assert all(r.status == "sent" and r.attempts == 1 for r in _rows())


def test_sms_gateway_request_is_signed_with_the_key_pair(
        app: Flask, world: World, server: CaptureServer, alarm: dict[str, Any]) -> None:
    _deliver(app)
    [sms] = server.matching(lambda r: r.path == "/sms/send")
    assert sms.header("X-SMS-Key") == "key-1"
    ts, nonce = sms.header("X-SMS-Timestamp"), sms.header("X-SMS-Nonce")
    to_sign = "\n".join(["POST", "/sms/send", ts, nonce, hashlib.sha256(sms.body).hexdigest()])
    expected = base64.b64encode(hmac.new(SMS_SECRET.encode(), to_sign.encode(),
                                         hashlib.sha256).digest()).decode()
    assert sms.header("X-SMS-Signature") == expected
    body = sms.json()
    assert body["phone"] == alarm["people"]["operator_phone"]
    assert (body["template"], body["sign_name"]) == ("SMS_ALARM_1", "充电平台")
    assert body["params"]["kind"] == "烟雾报警" and body["params"]["severity"] == "紧急"
    assert body["params"]["id"] == str(alarm["incident"])
    assert body["params"]["place"].endswith(f"桩{world.a.pile.serial} 2号口")
    assert all(len(v) <= 20 for v in body["params"].values())
    assert body["request_id"].startswith("evc-")


def test_wechat_subscribe_message_through_wechatpy(
        app: Flask, world: World, server: CaptureServer, alarm: dict[str, Any]) -> None:
    _deliver(app)
    [token] = server.matching(lambda r: r.path == "/cgi-bin/token")
    settings = app.config["SETTINGS"]
    assert token.query["appid"] == [settings.wechat_appid]
    assert token.query["secret"] == [settings.wechat_secret]
    [send] = server.matching(lambda r: r.path == "/cgi-bin/message/subscribe/send")
    assert send.method == "POST" and send.query["access_token"] == ["TEST_ACCESS_TOKEN"]
    body = send.json()
    assert body["touser"] == alarm["people"]["operator_openid"]
    assert body["template_id"] == "TPL-ALARM"
    assert body["page"] == f"pages/incident/index?incident={alarm['incident']}"
    assert body["data"]["phrase2"] == {"value": "紧急"}
    assert body["data"]["thing3"] == {"value": "烟雾报警"}
    assert body["data"]["thing1"]["value"].endswith(f"桩{world.a.pile.serial} 2号口")
    assert len(body["data"]["time4"]["value"]) == 16  # 2026-01-02 03:04
    # the token is shared through the database: another worker does not fetch it again
    assert db.session.get(SharedToken, f"{settings.wechat_appid}_access_token") is not None
    db.session.rollback()


def test_failures_are_retried_with_backoff_then_given_up(
        app: Flask, world: World, server: CaptureServer, alarm: dict[str, Any]) -> None:
    import dataclasses

    app.config["SETTINGS"] = dataclasses.replace(app.config["SETTINGS"], notify_max_attempts=3)
    server.answer("/fire-platform/hook", 503)
    now = utcnow()
    assert _deliver(app, now) == {"sent": 2, "retry": 1}
    [hook] = [r for r in _rows() if r.channel == "webhook"]
    assert (hook.status, hook.attempts) == ("pending", 1)
    assert hook.last_error == "webhook answered 503"
    assert hook.next_attempt_at == now + timedelta(seconds=10)
    assert _deliver(app, now + timedelta(seconds=9)) == {}  # not due yet
    assert _deliver(app, now + timedelta(seconds=10)) == {"retry": 1}
    assert _deliver(app, now + timedelta(seconds=40)) == {"failed": 1}
    [hook] = [r for r in _rows() if r.channel == "webhook"]
    assert (hook.status, hook.attempts) == ("failed", 3)
    assert len(server.matching(lambda r: r.path == "/fire-platform/hook")) == 3
    # every attempt repeats the same delivery id (receivers de-duplicate on it)
    assert {r.header("X-EVC-Delivery") for r in server.matching(
        lambda r: r.path == "/fire-platform/hook")} == {str(hook.id)}


def test_a_refused_subscription_fails_at_once_and_an_unreachable_hook_is_retried(
        app: Flask, world: World, server: CaptureServer, alarm: dict[str, Any]) -> None:
    server.answer("/cgi-bin/message/subscribe/send",
                  lambda r: (200, {"errcode": 43101, "errmsg": "user refuse to accept"}))
    hook = next(r for r in _rows() if r.channel == "webhook")
    db.session.get(IncidentNotification, hook.id).recipient = "http://127.0.0.1:9/closed"
    db.session.commit()  # as if the webhook pointed at a host that is down
    counts = _deliver(app)
    by_channel = {r.channel: r for r in _rows()}
    assert by_channel["wechat"].status == "failed"
    assert "43101" in (by_channel["wechat"].last_error or "")
    assert by_channel["webhook"].status == "pending"
    assert "unreachable" in (by_channel["webhook"].last_error or "")
    assert counts == {"sent": 1, "failed": 1, "retry": 1}


def test_the_dispatcher_sends_after_the_commit_and_never_inside_the_batch(
        app: Flask, world: World, server: CaptureServer) -> None:
    """The webhook receiver hangs; the batch (and its stop command) commits regardless,
    the notification goes out from the dispatcher thread when the receiver answers."""
    notify_settings(app, server.url)
    contacts(world)
    release = threading.Event()

    def slow(_r: Captured) -> tuple[int, Any]:
        release.wait(20)
        return 200, {}

    server.answer("/fire-platform/hook", slow)
    feed = PileFeed(world.a.pile.serial)
    feed.online()
    sid = start_session(world.a, 1)
    result = feed.alarm(1, "short_circuit", "critical", cut_off=True)
    assert result.nudge
    assert [c["session_id"] for c in stop_commands(world.a.pile.id)] == [sid]
    server.wait_for(lambda r: r.path == "/fire-platform/hook")  # the thread is sending
    assert {r.channel: r.status for r in _rows()}["webhook"] == "sending"
    release.set()
    from tests.support.bridge import wait_until

    wait_until(lambda: all(r.status == "sent" for r in _rows()), timeout=20)
    server.wait_for(lambda r: r.path == "/sms/send")
    server.wait_for(lambda r: r.path == "/cgi-bin/message/subscribe/send")


def test_operations_settings_from_the_environment() -> None:
    from app.config import load_settings
    from app.domain.errors import ConfigurationError

    s = load_settings(environ={
        "NOTIFY_WEBHOOK_URL": "https://fire.example/hook", "NOTIFY_WEBHOOK_SECRET": "k",
        "ESCALATION_CRITICAL_MINUTES": "0,2,4", "ESCALATION_MINOR_MINUTES": "0",
        "LOSS_THRESHOLD_PER_MILLE": "60", "LOSS_MIN_MASTER_WH": "5000"})
    assert s.escalation_critical_minutes == (0, 2, 4) and s.escalation_major_minutes == (0, 30,
                                                                                         120)
    assert (s.loss_threshold_per_mille, s.loss_min_master_wh) == (60, 5000)
    assert incidents.configured_channels(s) == frozenset({"webhook"})
    for bad in ({"NOTIFY_WEBHOOK_URL": "https://fire.example/hook"},
                {"NOTIFY_SMS_URL": "https://sms.example/send"},
                {"ESCALATION_MAJOR_MINUTES": "30,0"},
                {"ESCALATION_CRITICAL_MINUTES": "0,1,2,3"},
                {"ESCALATION_CRITICAL_MINUTES": "soon"},
                {"LOSS_MIN_MASTER_WH": "-1"}):
        with pytest.raises(ConfigurationError):
            load_settings(environ=bad)

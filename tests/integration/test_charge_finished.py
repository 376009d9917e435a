"""The resident's *charge finished* WeChat subscribe message: queued when their session is
settled (spending one accept of the template, once per session), sent to a local stand-in
for WeChat's API, retried by the jobs process when WeChat fails."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import select

from app.config import load_settings
from app.domain.errors import ConfigurationError
from app.extensions import db
from app.jobs.operations import deliver_notifications
from app.models import ChargingSession, User, UserNotification, WeChatSubscription
from app.models.base import utcnow
from app.notify.base import Message, kwh, yuan
from app.notify.dispatcher import dispatcher_for
from app.notify.wechat import charge_finished_data
from app.services import charge_notices, notifications
from tests.factories import ApiClient, World, resident
from tests.integration.test_ops_support import PileFeed, start_session
from tests.support.http_capture import CaptureServer, capture_server

API = "/api/v1"
TEMPLATE = "TPL-DONE"
SEND = "/cgi-bin/message/subscribe/send"


@pytest.fixture
def capture(app: Flask) -> Iterator[CaptureServer]:
    app.config["NOTIFY_DISPATCH"] = False  # delivered by the test (the job), not a thread
    with capture_server() as server:
        yield server
    dispatcher_for(app).stop()


def configure(app: Flask, capture: CaptureServer, template: str = TEMPLATE) -> None:
    """WeChat pointed at the capture server; only the charge-finished template is set (no
    alarm template, no other channel)."""
    app.config["SETTINGS"] = dataclasses.replace(
        app.config["SETTINGS"], wechat_api_base_url=capture.url + "/",
        notify_wechat_charge_finished_template_id=template)


def charger(world: World, api: ApiClient, port_no: int, *accepts: str
            ) -> tuple[ApiClient, int, str]:
    """A resident with an openid, the given templates accepted once each, charging on
    ``port_no`` of world A's pile."""
    openid = f"openid-done-{port_no}"
    me = resident(api, world.a.account, openid=openid)
    if accepts:
        res = me.post(f"{API}/me/subscriptions", json={"subscriptions": [
            {"kind": "alarm" if t == "TPL-ALARM" else "charge_finished", "template_id": t,
             "result": "accept"} for t in accepts]})
        assert res.status_code == 200, res.get_json()
    user_id = db.session.execute(select(User.id).where(User.openid == openid)).scalar_one()
    sid = start_session(world.a, port_no, energy_wh=1000,
                        started_at=utcnow() - timedelta(minutes=40))
    charge_of(sid).user_id = user_id
    db.session.commit()
    return me, user_id, sid


def end(world: World, sid: str, port_no: int, *, reason: str = "full",
        energy_end_wh: int = 2500) -> datetime:
    """The pile's session_end, applied as a bridge batch; returns when it ended."""
    ended = utcnow().replace(microsecond=0) - timedelta(minutes=1)
    feed = PileFeed(world.a.pile.serial)
    feed.apply(feed.factory.session_end(
        session_id=sid, port=port_no, reason=reason, energy_start_wh=1000,
        energy_end_wh=energy_end_wh, started_at=int((ended - timedelta(minutes=39)).timestamp()
                                                    * 1000),
        ended_at=int(ended.timestamp() * 1000), peak_power_w=180))
    return ended


def charge_of(sid: str) -> ChargingSession:
    return db.session.execute(select(ChargingSession).where(
        ChargingSession.public_id == sid)).scalar_one()


def rows() -> list[UserNotification]:
    db.session.expire_all()
    found = list(db.session.execute(select(UserNotification).order_by(UserNotification.id))
                 .scalars())
    db.session.rollback()
    return found


def sends(capture: CaptureServer) -> list[dict[str, Any]]:
    return [r.json() for r in capture.matching(lambda r: r.path == SEND)]


def unused(me: ApiClient) -> list[dict[str, Any]]:
    return list(me.get(f"{API}/me/subscriptions").get_json()["subscriptions"])


def test_a_settled_charge_sends_one_message_with_the_receipt(
        app: Flask, world: World, api: ApiClient, capture: CaptureServer) -> None:
    configure(app, capture)
    me, user_id, sid = charger(world, api, 1, TEMPLATE, "TPL-ALARM")
    ended = end(world, sid, 1, reason="full", energy_end_wh=2500)

    charge = charge_of(sid)
    assert (charge.status, charge.stop_reason, charge.cost_fen) == ("settled", "full", 150)
    [row] = rows()
    assert (row.user_id, row.kind, row.channel, row.recipient, row.template_id, row.status) == (
        user_id, "charge_finished", "wechat", "openid-done-1", TEMPLATE, "pending")
    assert row.dedup_key == f"charge_finished:{sid}"
    # the accept of this template is spent, on this session; the alarm's is untouched
    assert unused(me) == [{"template_id": "TPL-ALARM", "kind": "alarm", "available": 1}]
    spent = db.session.execute(select(WeChatSubscription).where(
        WeChatSubscription.template_id == TEMPLATE)).scalar_one()
    assert spent.used_for == f"session:{sid}" and spent.used_at is not None
    db.session.rollback()
    assert sends(capture) == []  # queued in the settlement, sent after it

    assert deliver_notifications() == {"sent": 1}
    [body] = sends(capture)
    assert body["touser"] == "openid-done-1"
    assert body["template_id"] == TEMPLATE
    assert body["page"] == f"pages/receipt/receipt?session_id={sid}"
    local = ended.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M")
    place = body["data"].pop("thing5")["value"]
    assert place.endswith(f"桩{world.a.pile.serial} 1号口") and len(place) <= 20
    assert body["data"] == {
        "phrase1": {"value": "充满"},
        "character_string2": {"value": "1.50kWh"},
        "amount3": {"value": "¥1.50"},
        "time4": {"value": local},
    }
    [row] = rows()
    assert (row.status, row.attempts, row.last_error) == ("sent", 1, None)
    assert deliver_notifications() == {}  # nothing left


def test_settling_again_or_rerunning_the_hook_sends_nothing_more(
        app: Flask, world: World, api: ApiClient, capture: CaptureServer) -> None:
    configure(app, capture)
    me, _user_id, sid = charger(world, api, 2, TEMPLATE, TEMPLATE)
    end(world, sid, 2, reason="unplugged", energy_end_wh=1800)
    end(world, sid, 2, reason="unplugged", energy_end_wh=1800)  # the pile repeats itself
    charge = charge_of(sid)
    charge_notices.on_settled(db.session, charge, 0)  # a hook run twice for the session
    db.session.commit()

    assert len(rows()) == 1
    assert unused(me) == [{"template_id": TEMPLATE, "kind": "charge_finished",
                           "available": 1}]  # one of the two accepts spent, not both
    assert deliver_notifications() == {"sent": 1}
    [body] = sends(capture)
    assert body["data"]["phrase1"] == {"value": "拔枪"}
    assert body["data"]["character_string2"] == {"value": "0.80kWh"}
    assert body["data"]["amount3"] == {"value": "¥0.80"}


def test_no_accept_of_this_template_no_message(
        app: Flask, world: World, api: ApiClient, capture: CaptureServer) -> None:
    configure(app, capture)
    me, _user_id, sid = charger(world, api, 1, "TPL-ALARM")  # only the alarm accepted
    end(world, sid, 1)
    assert charge_of(sid).status == "settled"
    assert rows() == []
    assert unused(me) == [{"template_id": "TPL-ALARM", "kind": "alarm", "available": 1}]
    assert deliver_notifications() == {}
    assert sends(capture) == []


def test_feature_off_sends_nothing_and_spends_nothing(
        app: Flask, world: World, api: ApiClient, capture: CaptureServer) -> None:
    configure(app, capture, template="")  # NOTIFY_WECHAT_CHARGE_FINISHED_TEMPLATE_ID unset
    me, _user_id, sid = charger(world, api, 1, TEMPLATE)
    end(world, sid, 1)
    assert rows() == []
    assert unused(me) == [{"template_id": TEMPLATE, "kind": "charge_finished",
                           "available": 1}]
    assert deliver_notifications() == {}
    assert capture.requests == []


def test_a_wechat_failure_is_retried_by_the_job_then_sent(
        app: Flask, world: World, api: ApiClient, capture: CaptureServer) -> None:
    configure(app, capture)
    _me, _user_id, sid = charger(world, api, 1, TEMPLATE)
    end(world, sid, 1, reason="stopped_by_user")
    capture.answer(SEND, lambda r: (200, {"errcode": -1, "errmsg": "system error"}))
    now = utcnow()
    assert deliver_notifications(now=now) == {"retry": 1}
    [row] = rows()
    assert (row.status, row.attempts) == ("pending", 1)
    assert "-1" in (row.last_error or "")
    assert row.next_attempt_at == now + timedelta(seconds=10)

    del capture.answers[SEND]  # WeChat is back
    assert deliver_notifications(now=now + timedelta(seconds=9)) == {}  # not due yet
    assert deliver_notifications(now=now + timedelta(seconds=10)) == {"sent": 1}
    [row] = rows()
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)
    first, second = sends(capture)
    assert first == second and second["data"]["phrase1"] == {"value": "用户停止"}


def test_a_refused_message_fails_at_once(
        app: Flask, world: World, api: ApiClient, capture: CaptureServer) -> None:
    configure(app, capture)
    _me, _user_id, sid = charger(world, api, 1, TEMPLATE)
    end(world, sid, 1)
    capture.answer(SEND, lambda r: (200, {"errcode": 43101, "errmsg": "user refuse to accept"}))
    assert deliver_notifications() == {"failed": 1}
    [row] = rows()
    assert row.status == "failed" and "43101" in (row.last_error or "")


def test_the_dispatcher_sends_it_right_after_the_settlement_commits(
        app: Flask, world: World, api: ApiClient, capture: CaptureServer) -> None:
    configure(app, capture)
    _me, _user_id, sid = charger(world, api, 1, TEMPLATE)
    app.config["NOTIFY_DISPATCH"] = True
    end(world, sid, 1)  # no job runs here: the commit kicks the dispatcher thread
    [request] = capture.wait_for(lambda r: r.path == SEND)
    assert request.json()["page"] == f"pages/receipt/receipt?session_id={sid}"


def test_a_broken_queue_never_undoes_the_settlement(
        app: Flask, world: World, api: ApiClient, capture: CaptureServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    configure(app, capture)
    me, _user_id, sid = charger(world, api, 1, TEMPLATE)

    def broken(*_a: Any, **_k: Any) -> bool:
        raise RuntimeError("outbox down")

    monkeypatch.setattr(notifications, "queue_user_message", broken)
    end(world, sid, 1)
    charge = charge_of(sid)
    assert (charge.status, charge.cost_fen) == ("settled", 150)
    assert rows() == []
    assert unused(me) == [{"template_id": TEMPLATE, "kind": "charge_finished",
                           "available": 1}]  # the savepoint gave the accept back


def test_the_template_keywords_come_from_the_setting() -> None:
    settings = load_settings(environ={
        "NOTIFY_WECHAT_CHARGE_FINISHED_TEMPLATE_ID": "TPL-X",
        "NOTIFY_WECHAT_CHARGE_FINISHED_FIELDS": "cost=amount1, reason=thing2"})
    assert settings.notify_wechat_charge_finished_template_id == "TPL-X"
    fields = settings.notify_wechat_charge_finished_fields
    assert fields == (("cost", "amount1"), ("reason", "thing2"))
    message = Message(1, {"type": "charge_finished", "stop_reason": "balance",
                          "cost_fen": 1234, "energy_wh": 0})
    assert charge_finished_data(message, fields) == {"amount1": {"value": "¥12.34"},
                                                     "thing2": {"value": "余额不足"}}
    assert dict(load_settings(environ={}).notify_wechat_charge_finished_fields) == {
        "reason": "phrase1", "energy": "character_string2", "cost": "amount3",
        "ended_at": "time4", "place": "thing5"}
    for bad in ("cost", "price=amount1", "cost=amount", "cost=amount1,reason=amount1",
                "cost=amount1,cost=amount2"):
        with pytest.raises(ConfigurationError):
            load_settings(environ={"NOTIFY_WECHAT_CHARGE_FINISHED_FIELDS": bad})


def test_money_and_energy_are_formatted_from_integers() -> None:
    assert [yuan(f) for f in (0, 5, 150, 123456)] == ["¥0.00", "¥0.05", "¥1.50", "¥1234.56"]
    assert [kwh(w) for w in (0, 4, 5, 1234, 1235, 1_000_000)] == [
        "0.00", "0.00", "0.01", "1.23", "1.24", "1000.00"]

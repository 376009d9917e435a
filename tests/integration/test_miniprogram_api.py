"""What the WeChat mini-program needed from the server (issue 7): the tariff behind a QR
code, the communities near me, subscribe messages accepted (and spent by an alarm on my
charge), and my phone number from WeChat's getPhoneNumber — each with its bad input."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from app.domain.access import Role
from app.domain.geo import Point, haversine_m
from app.extensions import db
from app.models import (
    ChargingSession,
    Community,
    IncidentNotification,
    Pile,
    User,
    WeChatSubscription,
)
from app.models.base import utcnow
from app.notify import build_channels
from app.notify.dispatcher import dispatcher_for
from app.services import notifications, places, tariffs
from app.services.subscriptions import MAX_UNUSED_PER_TEMPLATE
from app.services.uow import UnitOfWork
from tests.factories import TEST_TARIFF, ApiClient, World, resident
from tests.integration.test_ops_support import (
    PileFeed,
    contacts,
    incidents_of,
    notify_settings,
    start_session,
)
from tests.support.fake_wechat import FakeWeChat
from tests.support.http_capture import CaptureServer, capture_server

API = "/api/v1"


def error_code(res: Any, status: int) -> str:
    assert res.status_code == status, (res.status_code, res.get_json())
    body = res.get_json()
    assert set(body) == {"code", "message", "details"}, body
    return str(body["code"])


# --- GET /public/ports/{code}: the tariff in force ---------------------------------------


def _code(pile: Pile, number: int = 1) -> str:
    return next(p.public_code for p in pile.ports if p.number == number)


def test_public_port_carries_the_tariff_in_force(world: World, api: ApiClient) -> None:
    code = _code(world.a.pile)
    res = api.get(f"{API}/public/ports/{code}")  # no token: what a QR code shows anyone
    assert res.status_code == 200, res.get_json()
    body = res.get_json()
    assert body["public_code"] == code and body["community_name"] == "Community A"
    tariff = body["tariff"]
    assert set(tariff) == {"version", "effective_from", "rules"}
    assert tariff["version"] == 1
    assert datetime.fromisoformat(tariff["effective_from"]) == datetime(2020, 1, 1, tzinfo=UTC)
    assert tariff["rules"]["mode"] == "per_kwh"
    assert {k: tariff["rules"][k] for k in TEST_TARIFF} == TEST_TARIFF

    # a version scheduled for tomorrow is not in force yet; one from a minute ago is
    later = {"mode": "per_hour", "fen_per_hour": 50}
    tariffs.set_tariff(UnitOfWork(), world.a.actor, world.a.community.id, later,
                       utcnow() + timedelta(days=1))
    assert api.get(f"{API}/public/ports/{code}").get_json()["tariff"]["version"] == 1
    tariffs.set_tariff(UnitOfWork(), world.a.actor, world.a.community.id, later,
                       utcnow() - timedelta(minutes=1))
    now_in_force = api.get(f"{API}/public/ports/{code}").get_json()["tariff"]
    assert now_in_force["version"] == 3 and now_in_force["rules"]["fen_per_hour"] == 50
    # lower case and spaces as a scanner may deliver them
    assert api.get(f"{API}/public/ports/{code.lower()}").status_code == 200
    # B's port shows B's tariff, never A's
    assert api.get(f"{API}/public/ports/{_code(world.b.pile)}").get_json()["tariff"][
        "version"] == 1


def test_public_port_without_a_tariff_says_null(world: World, api: ApiClient) -> None:
    uow = UnitOfWork()
    community = places.create_community(uow, world.a.actor,
                                        property_company_id=world.a.company.id,
                                        name="No tariff yet")
    pile = places.register_pile(uow, world.a.actor, community_id=community.id,
                                serial="NT-0001", port_count=1).pile
    res = api.get(f"{API}/public/ports/{_code(pile)}")
    assert res.status_code == 200 and res.get_json()["tariff"] is None


@pytest.mark.parametrize("code", ["NOSUCHCODE", "AAAAAAAAAAAAAAAAAAAAAAAA", "%00", "ab cd"])
def test_public_port_unknown_code_is_404(world: World, api: ApiClient, code: str) -> None:
    assert error_code(api.get(f"{API}/public/ports/{code}"), 404) == "not_found"


def test_public_port_of_a_disabled_pile_is_404(world: World, api: ApiClient) -> None:
    code = _code(world.a.pile)
    db.session.get(Pile, world.a.pile.id).enabled = False  # type: ignore[union-attr]
    db.session.commit()
    assert error_code(api.get(f"{API}/public/ports/{code}"), 404) == "not_found"


# --- GET /public/communities?lat&lng&limit -----------------------------------------------


@pytest.fixture
def located(world: World) -> dict[str, int]:
    """A at (30, 120) with an online pile (port 1 idle, port 2 charging) and a disabled
    one; B 0.1° north with its pile offline (idle ports, but nobody can charge there); a
    third community without coordinates."""
    a = db.session.get(Community, world.a.community.id)
    b = db.session.get(Community, world.b.community.id)
    assert a is not None and b is not None
    a.lat, a.lng, a.address = 30.0, 120.0, "南路 2 号"
    b.lat, b.lng = 30.1, 120.0
    pile_a = db.session.get(Pile, world.a.pile.id)
    pile_b = db.session.get(Pile, world.b.pile.id)
    assert pile_a is not None and pile_b is not None
    pile_a.online = True
    {p.number: p for p in pile_a.ports}[1].status = "idle"
    {p.number: p for p in pile_a.ports}[2].status = "charging"
    pile_b.online = False
    for port in pile_b.ports:
        port.status = "idle"
    db.session.commit()
    uow = UnitOfWork()
    spare = places.register_pile(uow, world.a.actor, community_id=a.id, serial="OFF-0001",
                                 port_count=4).pile
    db.session.get(Pile, spare.id).enabled = False  # type: ignore[union-attr]
    db.session.get(Pile, spare.id).online = True  # type: ignore[union-attr]
    unlocated = places.create_community(uow, world.a.actor,
                                        property_company_id=world.a.company.id,
                                        name="Somewhere")
    db.session.commit()
    return {"a": a.id, "b": b.id, "unlocated": unlocated.id}


def test_nearby_communities_nearest_first_with_free_ports(
        world: World, api: ApiClient, located: dict[str, int]) -> None:
    res = api.get(f"{API}/public/communities?lat=30.001&lng=120")  # no token
    assert res.status_code == 200, res.get_json()
    rows = res.get_json()
    assert [r["id"] for r in rows] == [located["a"], located["b"]]  # no coordinates: left out
    a, b = rows
    assert set(a) == {"id", "name", "address", "lat", "lng", "distance_m", "pile_count",
                      "piles_online", "port_count", "free_ports"}
    assert (a["name"], a["address"], a["lat"], a["lng"]) == ("Community A", "南路 2 号",
                                                              30.0, 120.0)
    assert a["distance_m"] == 111  # 0.001° of latitude
    assert b["distance_m"] == round(haversine_m(Point(30.001, 120), Point(30.1, 120)))
    assert b["distance_m"] == 11_008
    # the disabled pile counts for nothing; the charging port is not free
    assert (a["pile_count"], a["piles_online"], a["port_count"], a["free_ports"]) == (1, 1, 2, 1)
    # an offline pile's idle ports are not free
    assert (b["pile_count"], b["piles_online"], b["port_count"], b["free_ports"]) == (1, 0, 2, 0)

    # from the north B is nearer; limit cuts the list
    north = api.get(f"{API}/public/communities?lat=30.2&lng=120&limit=1").get_json()
    assert [r["id"] for r in north] == [located["b"]]
    assert north[0]["distance_m"] == round(haversine_m(Point(30.2, 120), Point(30.1, 120)))


def test_nearby_communities_default_limit_and_an_empty_world(world: World,
                                                            api: ApiClient) -> None:
    assert api.get(f"{API}/public/communities?lat=0&lng=0").get_json() == []  # none located
    uow = UnitOfWork()
    for i in range(12):
        places.create_community(uow, world.a.actor, property_company_id=world.a.company.id,
                                name=f"Ring {i}", lat=30 + i / 1000, lng=120.0)
    rows = api.get(f"{API}/public/communities?lat=30&lng=120").get_json()
    assert len(rows) == 10
    assert [r["name"] for r in rows] == [f"Ring {i}" for i in range(10)]
    assert len(api.get(f"{API}/public/communities?lat=30&lng=120&limit=50").get_json()) == 12


@pytest.mark.parametrize("query", [
    "lat=91&lng=120", "lat=-90.01&lng=120", "lat=30&lng=180.5", "lat=30&lng=-181",
    "lat=abc&lng=120", "lat=nan&lng=120", "lat=30&lng=inf", "lat=&lng=120",
    "lng=120", "lat=30", "", "lat=30&lng=120&limit=0", "lat=30&lng=120&limit=51",
    "lat=30&lng=120&limit=ten", "lat=30&lng=120&limit=1.5",
])
def test_nearby_communities_bad_input_is_422(world: World, api: ApiClient, query: str) -> None:
    assert error_code(api.get(f"{API}/public/communities?{query}"), 422) == "validation_error"


# --- POST/GET /me/subscriptions ------------------------------------------------------------


def _subs(*items: tuple[str, str, str]) -> dict[str, Any]:
    return {"subscriptions": [{"kind": k, "template_id": t, "result": r} for k, t, r in items]}


def test_accepted_subscriptions_are_stored_one_per_accept(world: World,
                                                          api: ApiClient) -> None:
    me = resident(api)
    assert me.get(f"{API}/me/subscriptions").get_json() == {"subscriptions": []}
    res = me.post(f"{API}/me/subscriptions", json=_subs(
        ("charge_finished", "TPL-DONE", "accept"), ("alarm", "TPL-ALARM", "reject")))
    assert res.status_code == 200, res.get_json()
    assert res.get_json() == {"subscriptions": [
        {"template_id": "TPL-DONE", "kind": "charge_finished", "available": 1}]}
    me.post(f"{API}/me/subscriptions", json=_subs(
        ("charge_finished", "TPL-DONE", "accept"), ("alarm", "TPL-ALARM", "accept")))
    assert me.get(f"{API}/me/subscriptions").get_json() == {"subscriptions": [
        {"template_id": "TPL-ALARM", "kind": "alarm", "available": 1},
        {"template_id": "TPL-DONE", "kind": "charge_finished", "available": 2}]}
    # "ban" and "filter" (WeChat's own refusals) grant nothing either
    me.post(f"{API}/me/subscriptions", json=_subs(("alarm", "TPL-ALARM", "ban"),
                                                  ("alarm", "TPL-X", "filter")))
    assert db.session.query(WeChatSubscription).count() == 3
    # another resident sees only their own
    assert resident(api).get(f"{API}/me/subscriptions").get_json() == {"subscriptions": []}


def test_accepts_pile_up_only_to_a_cap(world: World, api: ApiClient) -> None:
    me = resident(api)
    for _ in range(MAX_UNUSED_PER_TEMPLATE + 3):
        assert me.post(f"{API}/me/subscriptions",
                       json=_subs(("alarm", "TPL-ALARM", "accept"))).status_code == 200
    [row] = me.get(f"{API}/me/subscriptions").get_json()["subscriptions"]
    assert row["available"] == MAX_UNUSED_PER_TEMPLATE


def test_subscriptions_need_a_wechat_resident(world: World, api: ApiClient) -> None:
    body = _subs(("alarm", "TPL-ALARM", "accept"))
    assert error_code(api.post(f"{API}/me/subscriptions", json=body), 401) == "unauthenticated"
    assert error_code(api.get(f"{API}/me/subscriptions"), 401) == "unauthenticated"
    assert error_code(api.with_token("not-a-jwt").post(f"{API}/me/subscriptions", json=body),
                      401) == "invalid_token"
    operator = api.login("op_a")
    assert error_code(operator.post(f"{API}/me/subscriptions", json=body), 403) == "forbidden"
    assert error_code(operator.get(f"{API}/me/subscriptions"), 403) == "forbidden"
    assert db.session.query(WeChatSubscription).count() == 0


@pytest.mark.parametrize("body", [
    {},
    {"subscriptions": []},
    {"subscriptions": "TPL-ALARM"},
    {"subscriptions": [{"kind": "alarm", "template_id": "TPL-ALARM"}]},
    _subs(("fire", "TPL-ALARM", "accept")),
    _subs(("alarm", "TPL-ALARM", "yes")),
    _subs(("alarm", "TPL ALARM", "accept")),
    _subs(("alarm", "T" * 65, "accept")),
    _subs(("alarm", "", "accept")),
    _subs(*[("alarm", f"TPL-{i}", "accept") for i in range(11)]),
    {"subscriptions": [{"kind": "alarm", "template_id": "TPL-ALARM", "result": "accept",
                        "user_id": 1}]},
    {"subscriptions": [{"kind": "alarm", "template_id": "TPL-ALARM", "result": "accept"}],
     "openid": "someone-else"},
    {"TPL-ALARM": "accept"},  # the raw wx.requestSubscribeMessage answer is not the format
])
def test_subscriptions_bad_input_is_422_and_stores_nothing(world: World, api: ApiClient,
                                                           body: Any) -> None:
    me = resident(api)
    assert error_code(me.post(f"{API}/me/subscriptions", json=body), 422) == "validation_error"
    assert db.session.query(WeChatSubscription).count() == 0


# --- an accepted alarm message is spent by an alarm on my charge ---------------------------


@pytest.fixture
def capture(app: Flask) -> Iterator[CaptureServer]:
    app.config["NOTIFY_DISPATCH"] = False  # delivered by the test, not a thread
    with capture_server() as server:
        yield server
    dispatcher_for(app).stop()


def _charging_resident(world: World, api: ApiClient, port_no: int) -> tuple[ApiClient, int, str]:
    me = resident(api, world.a.account, openid=f"openid-charger-{port_no}")
    user_id = db.session.execute(select(User.id).where(
        User.openid == f"openid-charger-{port_no}")).scalar_one()
    sid = start_session(world.a, port_no)
    db.session.execute(select(ChargingSession).where(ChargingSession.public_id == sid)
                       ).scalar_one().user_id = user_id
    db.session.commit()
    return me, user_id, sid


def test_an_alarm_on_my_charge_spends_my_accepted_alarm_message(
        app: Flask, world: World, api: ApiClient, capture: CaptureServer) -> None:
    notify_settings(app, capture.url)  # the alarm template is TPL-ALARM
    contacts(world)
    me, user_id, sid = _charging_resident(world, api, 2)
    me.post(f"{API}/me/subscriptions", json=_subs(("alarm", "TPL-ALARM", "accept"),
                                                  ("alarm", "TPL-OTHER", "accept")))
    feed = PileFeed(world.a.pile.serial)
    feed.online()
    feed.alarm(2, "smoke", "critical", cut_off=True, value=1, threshold=1, session_id=sid)
    [incident] = incidents_of(world.a.pile.id)

    rows = list(db.session.execute(select(IncidentNotification).where(
        IncidentNotification.user_id == user_id)).scalars())
    assert [(r.channel, r.recipient, r.audience) for r in rows] == [
        ("wechat", "openid-charger-2", "charging_user")]
    assert rows[0].payload["page"] == f"pages/receipt/receipt?session_id={sid}"
    # the operators are notified as before
    assert any(r.recipient == "openid-op-a" for r in db.session.execute(
        select(IncidentNotification)).scalars())
    # one accept spent, on this incident; the other template's accept is untouched
    assert me.get(f"{API}/me/subscriptions").get_json() == {"subscriptions": [
        {"template_id": "TPL-OTHER", "kind": "alarm", "available": 1}]}
    spent = db.session.execute(select(WeChatSubscription).where(
        WeChatSubscription.template_id == "TPL-ALARM")).scalar_one()
    assert spent.used_at is not None and spent.used_for == f"incident:{incident.id}"
    db.session.rollback()

    counts = notifications.deliver_due(UnitOfWork(),
                                       build_channels(app.config["SETTINGS"], db.session))
    assert counts["sent"] >= 2
    [send] = capture.matching(lambda r: r.path == "/cgi-bin/message/subscribe/send"
                              and r.json()["touser"] == "openid-charger-2")
    body = send.json()
    assert body["template_id"] == "TPL-ALARM"
    assert body["page"] == f"pages/receipt/receipt?session_id={sid}"
    assert body["data"]["thing3"] == {"value": "烟雾报警"}

    # a second incident on the same charge: no accept left, no message to the resident
    feed.alarm(2, "over_temperature", "major", value=80, threshold=70, session_id=sid)
    assert len(incidents_of(world.a.pile.id)) == 2
    assert db.session.query(IncidentNotification).filter_by(user_id=user_id).count() == 1


def test_no_accept_no_message_to_the_resident(app: Flask, world: World, api: ApiClient,
                                             capture: CaptureServer) -> None:
    notify_settings(app, capture.url)
    contacts(world)
    me, user_id, sid = _charging_resident(world, api, 1)
    # an accept for another template does not let the alarm template through
    me.post(f"{API}/me/subscriptions", json=_subs(("charge_finished", "TPL-DONE", "accept")))
    feed = PileFeed(world.a.pile.serial)
    feed.online()
    feed.alarm(1, "smoke", "critical", cut_off=True, value=1, threshold=1, session_id=sid)
    assert len(incidents_of(world.a.pile.id)) == 1
    assert db.session.query(IncidentNotification).filter_by(user_id=user_id).count() == 0
    assert db.session.query(IncidentNotification).count() > 0  # the operators' still go


# --- POST /auth/me/phone ---------------------------------------------------------------------




def _phone_of(openid: str) -> tuple[str | None, datetime | None]:
    db.session.expire_all()
    user = db.session.execute(select(User).where(User.openid == openid)).scalar_one()
    out = (user.phone, user.phone_verified_at)
    db.session.rollback()
    return out


def test_bind_phone_from_a_getphonenumber_code(world: World, api: ApiClient,
                                               wechat: FakeWeChat) -> None:
    me = resident(api, openid="openid-phone-1")
    wechat.issue_phone_code("phone-code-1", "13812345678")
    res = me.post(f"{API}/auth/me/phone", json={"code": "phone-code-1"})
    assert res.status_code == 200, res.get_json()
    body = res.get_json()
    assert body["phone"] == "13812345678" and body["role"] == "resident"
    assert body["phone_verified_at"] is not None
    assert me.get(f"{API}/auth/me").get_json()["phone"] == "13812345678"
    phone, verified = _phone_of("openid-phone-1")
    assert phone == "13812345678" and verified is not None
    # WeChat was asked as it wants: POST with the access_token fetched with our appid
    paths = [p for p, _ in wechat.requests]
    assert paths == ["/cgi-bin/token", "/wxa/business/getuserphonenumber"]
    assert wechat.requests[1][1]["access_token"] == ["ACCESS_TOKEN_1"]

    # a code works once
    res = me.post(f"{API}/auth/me/phone", json={"code": "phone-code-1"})
    assert error_code(res, 422) == "invalid_input"
    assert res.get_json()["details"] == {"field": "code", "errcode": 40029}

    # typing another number later drops the verification
    res = me.patch(f"{API}/auth/me", json={"phone": "13900001111"})
    assert res.get_json()["phone_verified_at"] is None
    # re-typing the same verified number keeps it
    wechat.issue_phone_code("phone-code-2", "13812345678")
    me.post(f"{API}/auth/me/phone", json={"code": "phone-code-2"})
    assert me.patch(f"{API}/auth/me", json={"phone": "13812345678"}).get_json()[
        "phone_verified_at"] is not None


def test_a_forged_or_foreign_phone_code_binds_nothing(world: World, api: ApiClient,
                                                     wechat: FakeWeChat) -> None:
    me = resident(api, openid="openid-phone-2")
    res = me.post(f"{API}/auth/me/phone", json={"code": "made-up-code"})
    assert error_code(res, 422) == "invalid_input"
    assert res.get_json()["details"]["errcode"] == 40029
    # issued for another mini-program: the watermark's appid is not ours
    wechat.issue_phone_code("other-app", "13812345679", appid="wxsomeoneelse00001")
    res = me.post(f"{API}/auth/me/phone", json={"code": "other-app"})
    assert error_code(res, 422) == "invalid_input"
    assert "another mini-program" in res.get_json()["message"]
    # not a mainland mobile
    wechat.issue_phone_code("abroad", "2025550123", country_code="1")
    res = me.post(f"{API}/auth/me/phone", json={"code": "abroad"})
    assert error_code(res, 422) == "invalid_input"
    wechat.issue_phone_code("landline", "02188886666")
    assert error_code(me.post(f"{API}/auth/me/phone", json={"code": "landline"}),
                      422) == "invalid_input"
    assert _phone_of("openid-phone-2") == (None, None)


def test_a_verified_number_displaces_a_typed_one_but_not_a_verified_or_staff_one(
        world: World, api: ApiClient, wechat: FakeWeChat) -> None:
    squatter = resident(api, openid="openid-squatter")
    assert squatter.patch(f"{API}/auth/me", json={"phone": "13812345678"}).status_code == 200
    me = resident(api, openid="openid-owner")
    wechat.issue_phone_code("c1", "13812345678")
    assert me.post(f"{API}/auth/me/phone", json={"code": "c1"}).status_code == 200
    assert _phone_of("openid-squatter") == (None, None)
    assert _phone_of("openid-owner")[0] == "13812345678"
    # now verified: another WeChat user with the same number gets 409
    other = resident(api, openid="openid-other")
    wechat.issue_phone_code("c2", "13812345678")
    assert error_code(other.post(f"{API}/auth/me/phone", json={"code": "c2"}), 409) == "conflict"
    # a staff member's number (their SMS alarms go there) is never taken over
    op = db.session.get(User, world.a.operator.id)
    assert op is not None
    op.phone = "13700000009"
    db.session.commit()
    wechat.issue_phone_code("c3", "13700000009")
    assert error_code(other.post(f"{API}/auth/me/phone", json={"code": "c3"}), 409) == "conflict"
    assert db.session.get(User, world.a.operator.id).phone == "13700000009"  # type: ignore[union-attr]
    assert _phone_of("openid-other") == (None, None)


def test_bind_phone_needs_a_wechat_resident_and_a_code(world: World, api: ApiClient,
                                                       wechat: FakeWeChat) -> None:
    wechat.issue_phone_code("c", "13812345678")
    assert error_code(api.post(f"{API}/auth/me/phone", json={"code": "c"}),
                      401) == "unauthenticated"
    operator = api.login("op_a")
    assert error_code(operator.post(f"{API}/auth/me/phone", json={"code": "c"}),
                      403) == "forbidden"
    me = resident(api, openid="openid-phone-3")
    for body in ({}, {"code": ""}, {"code": 123}, {"code": "x" * 129}, {"code": None},
                 {"code": "c", "phone": "13812345678"}, {"code": "c\x00"}):
        assert error_code(me.post(f"{API}/auth/me/phone", json=body),
                          422) == "validation_error", body
    assert wechat.requests == []  # nothing reached WeChat
    # a visitor is a WeChat user too
    user = db.session.execute(select(User).where(User.openid == "openid-phone-3")).scalar_one()
    user.role = Role.VISITOR.value
    db.session.commit()
    assert me.post(f"{API}/auth/me/phone", json={"code": "c"}).status_code == 200


def test_bind_phone_when_wechat_is_down_is_503(app: Flask, world: World,
                                               api: ApiClient) -> None:
    app.config["SETTINGS"] = dataclasses.replace(app.config["SETTINGS"],
                                                 wechat_api_base_url="http://127.0.0.1:9/")
    me = resident(api, openid="openid-phone-4")
    res = me.post(f"{API}/auth/me/phone", json={"code": "whatever"})
    assert error_code(res, 503) == "upstream_unavailable"
    assert _phone_of("openid-phone-4") == (None, None)


def test_bind_phone_with_a_wrong_secret_is_our_fault_not_the_code(
        app: Flask, world: World, api: ApiClient, wechat: FakeWeChat) -> None:
    app.config["SETTINGS"] = dataclasses.replace(app.config["SETTINGS"],
                                                 wechat_secret="not-our-secret")
    wechat.issue_phone_code("c", "13812345678")
    me = resident(api, openid="openid-phone-5")
    res = me.post(f"{API}/auth/me/phone", json={"code": "c"})
    assert error_code(res, 503) == "configuration_error"
    assert res.get_json()["details"] == {"errcode": 40125}
    assert _phone_of("openid-phone-5") == (None, None)

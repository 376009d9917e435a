"""The operations API: incident lifecycle (who and when, invalid transitions), scoping by
tenant, live monitoring (overview and server-sent events), pile history, and bad input
answered with 4xx JSON errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from app.models import Pile
from app.models.base import utcnow
from tests.factories import ApiClient, World, resident
from tests.integration.test_ops_support import (
    PileFeed,
    contacts,
    incidents_of,
    notify_settings,
    reading,
    start_session,
)

API = "/api/v1"


@pytest.fixture
def setup(app: Flask, world: World, api: ApiClient) -> dict[str, Any]:
    app.config["NOTIFY_DISPATCH"] = False
    notify_settings(app, "http://127.0.0.1:9")
    contacts(world)
    feeds = {}
    for tag, tenant in (("a", world.a), ("b", world.b)):
        feeds[tag] = PileFeed(tenant.pile.serial)
        feeds[tag].online()
    feeds["a"].alarm(1, "smoke", "critical", cut_off=True, value=1)
    feeds["a"].alarm(2, "plug_fault", "minor")
    feeds["b"].alarm(1, "overcurrent", "major", value=4000)
    a_smoke, a_plug = incidents_of(world.a.pile.id)
    [b_current] = incidents_of(world.b.pile.id)
    return {"feeds": feeds, "a_smoke": a_smoke.id, "a_plug": a_plug.id,
            "b_current": b_current.id, "op_a": api.login("op_a"), "op_b": api.login("op_b"),
            "grid": api.login("grid"), "admin": api.login("admin")}


def _error(res: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert res.status_code == status, (res.status_code, res.get_data(as_text=True)[:300])
    assert res.mimetype == "application/json"
    body = res.get_json()
    assert set(body) == {"code", "message", "details"}
    if code:
        assert body["code"] == code, body
    return body


def test_incident_lifecycle_with_who_and_when(world: World, setup: dict[str, Any]) -> None:
    op = setup["op_a"]
    url = f"{API}/incidents/{setup['a_smoke']}"
    got = op.get(url).get_json()
    assert (got["kind"], got["severity"], got["state"]) == ("smoke", "critical", "open")
    assert got["pile_serial"] == world.a.pile.serial and got["stop_scope"] == "pile"
    assert got["notified_level"] == 1 and got["next_escalation_at"] is not None
    # resolve before acknowledging: refused, and says what is allowed
    body = _error(op.post(f"{url}/resolve", json={}), 409, "conflict")
    assert body["details"] == {"state": "open", "action": "resolve",
                               "allowed": ["acknowledge"]}
    before = utcnow()
    res = op.post(f"{url}/acknowledge", json={"note": "on my way"})
    assert res.status_code == 200, res.get_json()
    acked = res.get_json()
    assert acked["state"] == "acknowledged"
    assert acked["acknowledged_by_user_id"] == world.a.operator.id
    assert acked["acknowledge_note"] == "on my way"
    assert acked["next_escalation_at"] is None
    assert acked["acknowledged_at"] >= before.isoformat()[:19]
    _error(op.post(f"{url}/acknowledge"), 409, "conflict")  # twice: refused
    admin = setup["admin"]
    res = admin.post(f"{url}/resolve", json={"note": "detector cleaned, no fire"})
    assert res.status_code == 200, res.get_json()
    done = res.get_json()
    assert done["state"] == "resolved" and done["resolved_by_user_id"] == world.admin.id
    assert done["resolution_note"] == "detector cleaned, no fire"
    assert done["acknowledged_by_user_id"] == world.a.operator.id  # kept
    for action in ("acknowledge", "resolve"):
        _error(op.post(f"{url}/{action}"), 409, "conflict")
    states = {i["id"]: i["state"] for i in op.get(f"{API}/incidents").get_json()}
    assert states == {setup["a_smoke"]: "resolved", setup["a_plug"]: "open"}


def test_incidents_are_scoped_by_tenant(world: World, setup: dict[str, Any], api: ApiClient
                                        ) -> None:
    a, b = setup["a_smoke"], setup["b_current"]
    ids = {i["id"] for i in setup["op_a"].get(f"{API}/incidents").get_json()}
    assert ids == {a, setup["a_plug"]}
    assert {i["id"] for i in setup["grid"].get(f"{API}/incidents").get_json()} == {
        a, setup["a_plug"], b}
    _error(setup["op_b"].get(f"{API}/incidents/{a}"), 404, "not_found")
    _error(setup["op_b"].post(f"{API}/incidents/{a}/acknowledge"), 404, "not_found")
    _error(setup["op_b"].get(f"{API}/incidents/{a}/notifications"), 404, "not_found")
    assert setup["grid"].get(f"{API}/incidents/{a}").status_code == 200
    _error(setup["grid"].post(f"{API}/incidents/{a}/acknowledge"), 403, "forbidden")
    phone = resident(api, world.a.account)
    _error(phone.get(f"{API}/incidents"), 403, "forbidden")
    _error(phone.get(f"{API}/incidents/{a}"), 403, "forbidden")
    # a filter naming B's community gives nothing, not B's incidents
    assert setup["op_a"].get(
        f"{API}/incidents?community_id={world.b.community.id}").get_json() == []
    _error(setup["op_a"].get(f"{API}/incidents/{2**31 - 1}"), 404, "not_found")


def test_incident_filters(world: World, setup: dict[str, Any]) -> None:
    grid = setup["grid"]

    def ids(query: str) -> set[int]:
        res = grid.get(f"{API}/incidents?{query}")
        assert res.status_code == 200, res.get_json()
        return {i["id"] for i in res.get_json()}

    assert ids("severity=critical") == {setup["a_smoke"]}
    assert ids("severity=critical,major") == {setup["a_smoke"], setup["b_current"]}
    assert ids(f"community_id={world.b.community.id}") == {setup["b_current"]}
    assert ids("state=open&kind=plug_fault") == {setup["a_plug"]}
    assert ids("state=resolved") == set()
    assert ids(f"pile_id={world.a.pile.id}&category=safety") == {setup["a_smoke"],
                                                                 setup["a_plug"]}
    assert len(ids("limit=1")) == 1
    assert ids(f"before_id={setup['a_plug']}") == {setup["a_smoke"]}


def test_notification_log_masks_personal_data(setup: dict[str, Any]) -> None:
    rows = setup["op_a"].get(f"{API}/incidents/{setup['a_smoke']}/notifications").get_json()
    assert {(r["level"], r["channel"], r["status"]) for r in rows} == {
        (1, "wechat", "pending"), (1, "sms", "pending"), (1, "webhook", "pending")}
    sms = next(r for r in rows if r["channel"] == "sms")
    assert sms["recipient"] == "138****0001"


# --- monitoring ------------------------------------------------------------------------------


def _live_ports(world: World) -> str:
    """World A: port 1 charging at 180 W, port 2 in fault; world B's pile offline."""
    sid = start_session(world.a, 1)
    pile_a = db.session.get(Pile, world.a.pile.id)
    assert pile_a is not None
    p1, p2 = sorted(pile_a.ports, key=lambda p: p.number)
    p1.status, p1.power_w = "charging", 180
    p2.status, p2.power_w = "fault", 0
    pile_b = db.session.get(Pile, world.b.pile.id)
    assert pile_b is not None
    pile_b.online = False
    for port in pile_b.ports:
        port.status, port.power_w = "charging", 999  # stale: the pile is offline
    db.session.commit()
    return sid


def test_overview_per_community_scoped_to_the_caller(world: World,
                                                     setup: dict[str, Any]) -> None:
    _live_ports(world)
    res = setup["op_a"].get(f"{API}/monitoring/overview")
    assert res.status_code == 200, res.get_json()
    body = res.get_json()
    [a] = body["communities"]
    assert a["community_id"] == world.a.community.id
    assert a["piles"] == {"online": 1, "offline": 0, "total": 1}
    assert a["ports"]["charging"] == 1 and a["ports"]["fault"] == 1 and a["ports"]["total"] == 2
    assert a["live_power_w"] == 180 and a["active_sessions"] == 1
    assert a["open_incidents"] == {"critical": 1, "major": 0, "minor": 1, "total": 2}
    grid = setup["grid"].get(f"{API}/monitoring/overview").get_json()
    by_id = {c["community_id"]: c for c in grid["communities"]}
    b = by_id[world.b.community.id]
    assert b["piles"] == {"online": 0, "offline": 1, "total": 1}
    assert b["ports"]["offline"] == 2 and b["ports"]["charging"] == 0 and b["live_power_w"] == 0
    assert grid["totals"]["live_power_w"] == 180 and grid["totals"]["communities"] == 2
    _error(setup["op_a"].get(f"{API}/monitoring/overview?community_id={world.b.community.id}"),
           404, "not_found")
    only_b = setup["grid"].get(f"{API}/monitoring/overview?community_id={world.b.community.id}")
    assert [c["community_id"] for c in only_b.get_json()["communities"]] == [world.b.community.id]


def _events(res: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    buffer = ""
    for chunk in res.response:
        buffer += chunk.decode()
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            lines = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
            if "event" in lines:
                yield lines["event"], json.loads(lines["data"])


def test_server_sent_events_push_overview_changes_and_incidents(
        app: Flask, world: World, setup: dict[str, Any]) -> None:
    app.config.update(SSE_MAX_SECONDS=5, MONITORING_POLL_S=0.05)
    op = setup["op_a"]
    res = op.get(f"{API}/monitoring/events?access_token={op.token}", buffered=False)
    assert res.status_code == 200 and res.mimetype == "text/event-stream"
    events = _events(res)
    kind, first = next(events)
    assert kind == "overview"
    assert first["communities"][0]["open_incidents"]["total"] == 2
    db.session.rollback()
    setup["feeds"]["a"].alarm(2, "leakage", "critical", cut_off=True, value=40)
    setup["feeds"]["b"].alarm(2, "leakage", "critical", cut_off=True, value=40)  # not A's
    seen: list[tuple[str, dict[str, Any]]] = []
    for kind, data in events:
        seen.append((kind, data))
        if kind == "overview":
            break
    res.close()
    incident_events = [d for k, d in seen if k == "incident"]
    assert [(d["kind"], d["community_id"]) for d in incident_events] == [
        ("leakage", world.a.community.id)]
    assert seen[-1][1]["communities"][0]["open_incidents"]["critical"] == 2


def test_pile_history(world: World, setup: dict[str, Any]) -> None:
    clock = {"ms": int(utcnow().timestamp() * 1000) - 60_000}
    feed = PileFeed(world.a.pile.serial, clock=lambda: clock["ms"])
    sid = start_session(world.a, 1, energy_wh=1000)
    feed.meter([reading(1, 1000, power_w=200, session_id=sid)])
    clock["ms"] += 61_000
    feed.apply(feed.factory.port_status(port=1, status="charging", prev_status="plugged",
                                        session_id=sid))
    feed.meter([reading(1, 1100, delta_wh=100, power_w=200, session_id=sid)])
    res = setup["op_a"].get(f"{API}/piles/{world.a.pile.id}/history")
    assert res.status_code == 200, res.get_json()
    h = res.get_json()
    assert h["serial"] == world.a.pile.serial and h["online"] is True
    assert {e["kind"] for e in h["status_changes"]} >= {"online", "port_status"}
    assert {a["kind"] for a in h["alarms"]} == {"smoke", "plug_fault"}
    assert {i["kind"] for i in h["incidents"]} == {"smoke", "plug_fault"}
    assert [s["session_id"] for s in h["sessions"]] == [sid]
    days = h["energy_per_day"]
    assert days[-1]["day"] == h["to"] and len(days) == 7
    assert sum(d["by_port"]["1"] for d in days) == 100  # the minute may straddle midnight
    assert sum(d["energy_wh"] for d in days) == 100 and all(d["by_port"]["2"] == 0
                                                             for d in days)
    _error(setup["op_b"].get(f"{API}/piles/{world.a.pile.id}/history"), 404, "not_found")
    assert setup["grid"].get(f"{API}/piles/{world.a.pile.id}/history").status_code == 200


# --- bad input ---------------------------------------------------------------------------------


BAD = [
    ("GET", "/incidents?state=burning", None, 422),
    ("GET", "/incidents?severity=critical,catastrophic", None, 422),
    ("GET", "/incidents?limit=0", None, 422),
    ("GET", "/incidents?limit=201", None, 422),
    ("GET", "/incidents?community_id=abc", None, 422),
    ("GET", "/incidents?kind=fire", None, 422),
    ("POST", "/incidents/{a}/acknowledge", {"note": "x" * 301}, 422),
    ("POST", "/incidents/{a}/acknowledge", {"state": "resolved"}, 422),
    ("POST", "/incidents/{a}/acknowledge", ["note"], 422),
    ("POST", "/incidents/{a}/resolve", {"note": 5}, 422),
    ("GET", "/incidents/{missing}", None, 404),
    ("POST", "/incidents/{missing}/acknowledge", {}, 404),
    ("GET", "/monitoring/overview?community_id=0", None, 422),
    ("GET", "/piles/{pile}/history?from=2025-02-30", None, 422),
    ("GET", "/piles/{pile}/history?from=2025-03-10&to=2025-03-01", None, 422),
    ("GET", "/piles/{pile}/history?from=2024-01-01&to=2025-01-01", None, 422),
    ("DELETE", "/incidents/{a}", None, 405),
]


@pytest.mark.parametrize(("method", "url", "body", "status"), BAD,
                         ids=[f"{m} {u} {b}" for m, u, b, _ in BAD])
def test_bad_input_is_a_4xx_json_error(world: World, setup: dict[str, Any], method: str,
                                       url: str, body: Any, status: int) -> None:
    path = API + url.format(a=setup["a_smoke"], missing=2**31 - 1, pile=world.a.pile.id)
    res = setup["op_a"].request(method, path, json=body) if body is not None else (
        setup["op_a"].request(method, path))
    _error(res, status)
    assert incidents_of(world.a.pile.id)[0].state == "open"


def test_malformed_json_body_is_400(setup: dict[str, Any]) -> None:
    res = setup["op_a"].post(f"{API}/incidents/{setup['a_smoke']}/acknowledge",
                             data="{not json", content_type="application/json")
    _error(res, 400)


def test_without_a_token_is_401(client: Any, setup: dict[str, Any]) -> None:
    for url in ("/incidents", "/monitoring/overview", "/monitoring/events",
                f"/incidents/{setup['a_smoke']}"):
        _error(client.get(API + url), 401)


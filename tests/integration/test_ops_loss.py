"""Theft and loss on a community with an injected leak: four days of master-meter and
socket readings go in as pile uplinks through the bridge's service; on the fourth day the
master meter grows faster than the sockets. The daily job opens one loss incident; the
API shows the series and checks a period on demand."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import select

from app.extensions import db
from app.models import Incident, IncidentNotification, LossCheck
from app.models.base import utcnow
from app.services import loss
from app.services.uow import UnitOfWork
from tests.factories import ApiClient, World
from tests.integration.test_ops_support import PileFeed, contacts, notify_settings, reading

API = "/api/v1"
TZ = ZoneInfo("Asia/Shanghai")
HOUR = timedelta(hours=1)
SOCKET_WH_PER_HOUR = 500  # per port; two ports
NORMAL_MASTER_WH_PER_HOUR = 1030  # 3 % loss: cables and the piles' own boards
LEAK_MASTER_WH_PER_HOUR = 1250  # 20 %: someone is taking power off the circuit


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@pytest.fixture
def leak(app: Flask, world: World) -> dict[str, Any]:
    app.config["NOTIFY_DISPATCH"] = False
    notify_settings(app, "http://127.0.0.1:9")
    contacts(world)
    today = utcnow().astimezone(TZ).date()
    d0 = datetime.combine(today - timedelta(days=6), time(), tzinfo=TZ)
    leak_start, leak_end = d0 + timedelta(days=3), d0 + timedelta(days=4)
    clock = {"at": d0 - HOUR}
    feed = PileFeed(world.a.pile.serial, clock=lambda: _ms(clock["at"]))
    feed.online()
    meter_id = world.a.community.master_meter_serial
    socket, master = 1_000_000, 5_000_000
    messages = []
    t = d0 - HOUR
    while t <= d0 + timedelta(days=4, hours=1):
        clock["at"] = t
        if t.minute == 0:
            messages.append(feed.factory.meter([
                reading(n, socket, delta_wh=SOCKET_WH_PER_HOUR, power_w=500, temp_dc=300,
                        local_id=f"L{n}-{t:%d}") for n in (1, 2)]))
        messages.append(feed.factory.master_meter(meter_id=meter_id, energy_wh=master,
                                                  read_at=_ms(t)))
        rate = (LEAK_MASTER_WH_PER_HOUR if leak_start <= t < leak_end
                else NORMAL_MASTER_WH_PER_HOUR)
        master += rate // 2
        if t.minute == 30:
            socket += SOCKET_WH_PER_HOUR
        t += timedelta(minutes=30)
    for i in range(0, len(messages), 100):
        feed.apply(*messages[i:i + 100])
    return {"d0": d0, "days": [(d0 + timedelta(days=i)).date() for i in range(4)],
            "community": world.a.community.id}


def _checks(community_id: int) -> list[LossCheck]:
    return list(db.session.execute(select(LossCheck).where(
        LossCheck.community_id == community_id).order_by(LossCheck.period_start)).scalars())


def test_daily_job_opens_one_loss_incident_on_the_leaking_day(
        app: Flask, world: World, leak: dict[str, Any]) -> None:
    now = leak["d0"] + timedelta(days=4, hours=2)
    counts = loss.run_daily_checks(UnitOfWork(), now=now, days_back=4)
    assert counts["incidents"] == 1
    checks = _checks(leak["community"])
    assert [c.period_start.astimezone(TZ).date() for c in checks] == leak["days"]
    assert [(c.master_wh, c.sockets_wh, c.loss_wh, c.loss_per_mille) for c in checks] == [
        (24_720, 24_000, 720, 29), (24_720, 24_000, 720, 29), (24_720, 24_000, 720, 29),
        (30_000, 24_000, 6_000, 200)]
    assert [c.verdicts for c in checks] == ["ok", "ok", "ok", "above_threshold,jump"]
    assert all(c.master_complete and c.ports == 2 and c.kind == "day" for c in checks)
    incident = db.session.get(Incident, checks[-1].incident_id)
    assert incident is not None
    assert (incident.category, incident.kind, incident.severity) == ("loss", "energy_loss",
                                                                     "major")
    assert incident.community_id == leak["community"] and incident.pile_id is None
    assert (incident.period_start, incident.period_end) == (checks[-1].period_start,
                                                            checks[-1].period_end)
    assert incident.value == 6000 and incident.threshold == 80
    assert incident.details["loss_per_mille"] == 200
    assert "above" in incident.reason and "median" in incident.reason
    channels = set(db.session.execute(select(IncidentNotification.channel).where(
        IncidentNotification.incident_id == incident.id)).scalars())
    assert channels == {"sms", "wechat", "webhook"}
    # the next run skips A's days (decided) and looks at B's again (no data yet)
    again = loss.run_daily_checks(UnitOfWork(), now=now + HOUR, days_back=4)
    assert (again["skipped"], again["checked"], again["incidents"]) == (4, 4, 0)
    assert len(_checks(leak["community"])) == 4
    # community B has a master meter but no readings: not decided, looked at again later
    b_checks = _checks(world.b.community.id)
    assert b_checks and all(c.verdicts == "insufficient_data" for c in b_checks)
    assert db.session.scalar(select(Incident.id).where(Incident.category == "loss",
                                                       Incident.community_id ==
                                                       world.b.community.id)) is None


def test_series_and_on_demand_checks_through_the_api(
        app: Flask, world: World, api: ApiClient, leak: dict[str, Any]) -> None:
    grid, op = api.login("grid"), api.login("op_a")
    first, last = leak["days"][0], leak["days"][-1]
    res = grid.get(f"{API}/communities/{leak['community']}/loss?from={first}&to={last}")
    assert res.status_code == 200, res.get_json()
    body = res.get_json()
    assert [d["loss_per_mille"] for d in body["days"]] == [29, 29, 29, 200]
    assert [d["verdict"] for d in body["days"]] == ["ok", "ok", "ok", "above_threshold"]
    assert body["days"][-1]["verdicts"] == ["above_threshold", "jump"]
    assert body["total"] == {"master_wh": 104_160, "sockets_wh": 96_000, "loss_wh": 8_160,
                             "loss_per_mille": 78, "master_complete": True}
    assert db.session.scalar(select(LossCheck.id)) is None  # the series stores nothing
    # on demand: the leaking day, by the operator (the grid user may only read)
    res = grid.post(f"{API}/communities/{leak['community']}/loss-checks",
                    json={"day": str(last)})
    assert res.status_code == 403
    res = op.post(f"{API}/communities/{leak['community']}/loss-checks", json={"day": str(last)})
    assert res.status_code == 201, res.get_json()
    check = res.get_json()
    assert check["kind"] == "day" and check["loss_per_mille"] == 200
    assert check["verdicts"] == ["above_threshold"]  # no stored history yet: no jump
    assert check["incident_id"] is not None
    again = op.post(f"{API}/communities/{leak['community']}/loss-checks",
                    json={"day": str(last)}).get_json()
    assert again["id"] == check["id"] and again["incident_id"] == check["incident_id"]
    # six hours of the leak: too little energy to decide (the master meter's resolution)
    start = leak["d0"] + timedelta(days=3, hours=12)
    res = op.post(f"{API}/communities/{leak['community']}/loss-checks",
                  json={"start": start.isoformat(),
                        "end": (start + timedelta(hours=6)).isoformat()})
    assert res.status_code == 201, res.get_json()
    short = res.get_json()
    assert (short["kind"], short["master_wh"], short["sockets_wh"]) == ("custom", 7500, 6000)
    assert short["verdicts"] == ["insufficient_data"] and short["incident_id"] is None
    listed = grid.get(f"{API}/communities/{leak['community']}/loss-checks").get_json()
    assert {c["id"] for c in listed} == {check["id"], short["id"]}
    assert [i["id"] for i in grid.get(f"{API}/incidents?category=loss").get_json()] == [
        check["incident_id"]]


@pytest.mark.parametrize(("body", "status"), [
    ({}, 422),
    ({"day": "2025-01-01", "start": "2025-01-01T00:00:00+08:00"}, 422),
    ({"start": "2025-01-01T00:00:00+08:00"}, 422),
    ({"start": "2025-01-01T00:00:00", "end": "2025-01-02T00:00:00"}, 422),  # no time zone
    ({"start": "2025-01-02T00:00:00+08:00", "end": "2025-01-01T00:00:00+08:00"}, 422),
    ({"start": "2024-01-01T00:00:00+08:00", "end": "2025-01-01T00:00:00+08:00"}, 422),
    ({"day": "2999-01-01"}, 422),
    ({"day": "yesterday"}, 422),
    ({"day": "2025-01-01", "force": True}, 422),
])
def test_bad_loss_check_input(world: World, api: ApiClient, body: dict[str, Any],
                              status: int) -> None:
    res = api.login("op_a").post(f"{API}/communities/{world.a.community.id}/loss-checks",
                                 json=body)
    assert res.status_code == status, res.get_json()
    assert set(res.get_json()) == {"code", "message", "details"}
    assert db.session.scalar(select(LossCheck.id)) is None


def test_bad_loss_series_input(world: World, api: ApiClient) -> None:
    op = api.login("op_a")
    url = f"{API}/communities/{world.a.community.id}/loss"
    for query, status in (("from=2025-03-10&to=2025-03-01", 422),
                          ("from=2024-01-01&to=2025-01-01", 422), ("from=March", 422)):
        res = op.get(f"{url}?{query}")
        assert res.status_code == status and res.get_json()["code"] in (
            "validation_error", "invalid_input"), (query, res.get_json())
    assert api.login("op_b").get(url).status_code == 404

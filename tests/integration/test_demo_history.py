"""The demo seed's meter history (``app.services.demo.write_meter_history``): a fresh demo
shows a loss series -- normal line loss in two communities, a leak on the last days of
the third -- through the same API the console's loss page calls; seeding again changes
nothing; live piles whose counters start from zero are not taken for meters going
backwards."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask
from sqlalchemy import func, select

from app.extensions import db
from app.models import (
    ChargingSession,
    Community,
    Incident,
    LedgerEntry,
    MasterMeterReading,
    MeterReading,
    User,
)
from app.models.base import utcnow
from app.services import demo
from tests.factories import ApiClient
from tests.integration.test_ops_support import PileFeed, reading

API = "/api/v1"
COUNTED = (MeterReading, MasterMeterReading, User, Community, Incident, ChargingSession,
           LedgerEntry)


def _counts() -> dict[str, int]:
    out = {m.__tablename__: db.session.execute(select(func.count()).select_from(m)).scalar_one()
           for m in COUNTED}
    db.session.rollback()
    return out


def _admin(app: Flask) -> ApiClient:
    return ApiClient(app.test_client()).login("admin", demo.DEMO_PASSWORD)


def _series(api: ApiClient, community: Community, days: int) -> list[dict[str, Any]]:
    yesterday = utcnow().astimezone(ZoneInfo(community.timezone)).date() - timedelta(days=1)
    res = api.get(f"{API}/communities/{community.id}/loss",
                  query_string={"from": (yesterday - timedelta(days=days - 1)).isoformat(),
                                "to": yesterday.isoformat()})
    assert res.status_code == 200, res.get_json()
    rows: list[dict[str, Any]] = res.get_json()["days"]
    assert len(rows) == days
    return rows


def test_seed_writes_a_loss_history(app: Flask) -> None:
    started = time.monotonic()
    summary = demo.seed()
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"seed took {elapsed:.1f} s"
    assert sum("history" in line for line in summary.lines()) == 3
    threshold = app.config["SETTINGS"].loss_threshold_per_mille
    api = _admin(app)
    communities = db.session.execute(select(Community).order_by(Community.id)).scalars().all()
    db.session.rollback()
    assert len(communities) == 3
    for community in communities:
        rows = _series(api, community, demo.HISTORY_DAYS)
        leaking = community.name == demo.LEAK_COMMUNITY
        for i, row in enumerate(rows):
            assert row["master_complete"], row
            assert row["loss_per_mille"] is not None, row
            assert row["master_wh"] >= 20_000, row  # decision grade
            leak_day = leaking and i >= len(rows) - demo.LEAK_DAYS
            if leak_day:
                assert row["loss_per_mille"] > threshold, row
                assert "above_threshold" in row["verdicts"], row
            else:
                assert 20 <= row["loss_per_mille"] <= 80, row
                assert row["verdict"] == "ok", row

    # again: nothing is written twice
    before = _counts()
    again = demo.seed()
    assert again.lines() == ["demo data already present; nothing to do"]
    assert _counts() == before
    assert before["charging_sessions"] == before["incidents"] == 0


def test_history_is_optional_telemetry_only_and_deterministic(app: Flask) -> None:
    demo.seed(history_days=0)
    counts = _counts()
    assert counts["meter_readings"] == counts["master_meter_readings"] == 0
    lines = demo.write_meter_history(db.session, 3)
    db.session.commit()
    assert len(lines) == 3
    written = _counts()
    assert written["meter_readings"] > 0
    assert written["master_meter_readings"] == 3 * (3 * 96 + 1)  # quarter hours, both ends
    assert {k: v for k, v in written.items() if "meter" not in k} == {
        k: v for k, v in counts.items() if "meter" not in k}  # no money, sessions, incidents
    assert demo.write_meter_history(db.session, 3) == []  # a community's history is written once
    db.session.commit()
    assert _counts() == written
    community = db.session.execute(select(Community).order_by(Community.id)).scalars().first()
    assert community is not None
    now = utcnow()
    ports = [(1, "hist-a-1"), (2, "hist-a-2")]
    one = demo.community_history(community, ports, 1, 5, now, leak=True)
    two = demo.community_history(community, ports, 1, 5, now, leak=True)
    assert one == two
    assert all(r["measured_at"] <= now for r in one.socket_rows)
    assert all(r["read_at"] <= now for r in one.master_rows)


def test_live_piles_after_the_history_are_not_going_backwards(app: Flask) -> None:
    """The simulator's piles boot with their counters at 0: far below the history's."""
    demo.seed()
    feed = PileFeed("P0001")
    feed.online(energy=0)
    feed.meter([reading(1, 3, delta_wh=3, power_w=180, temp_dc=260, local_id="L1"),
                # no session yet energy counted: the detectors look at this port's window
                reading(2, 2, delta_wh=2, power_w=0, temp_dc=250)])
    feed.meter([reading(1, 6, delta_wh=3, power_w=180, temp_dc=261, local_id="L1"),
                reading(2, 20, delta_wh=18, power_w=0, temp_dc=250)])
    kinds = db.session.execute(select(Incident.kind)).scalars().all()
    db.session.rollback()
    assert "meter_backwards" not in kinds
    assert "energy_without_session" in kinds  # the detectors did run on port 2

"""Safety end to end: a simulated pile on the real broker, the real bridge, the real
database, and the notification channels captured by a local HTTP server.

For each alarm type: the incident with the platform's severity, the port(s) stopped when
the policy says so (the session settled with reason ``alarm``), the operator notified by
webhook (signature checked), SMS and WeChat. Then: duplicates fold, a failing notifier or
incident store or wallet cannot hold up a stop, a pile going offline, and a leak between
the master meter and the sockets found by the loss check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from app.extensions import db
from app.models import Incident, IncidentNotification
from app.notify.dispatcher import dispatcher_for
from app.notify.webhook import verify
from app.services import incidents, ledger
from tests.e2e.conftest import Site
from tests.e2e.helpers import port_status, session_row, settled
from tests.integration.test_ops_support import WEBHOOK_SECRET, contacts, notify_settings
from tests.support.bridge import wait_until
from tests.support.http_capture import CaptureServer, capture_server

pytestmark = pytest.mark.mqtt

HOOK = "/fire-platform/hook"


@pytest.fixture
def server(app: Flask) -> Iterator[CaptureServer]:
    with capture_server() as s:
        yield s
    dispatcher_for(app).stop()


@pytest.fixture
def safety(app: Flask, site: Site, server: CaptureServer) -> dict[str, Any]:
    notify_settings(app, server.url)
    people = contacts(site.world)
    db.session.rollback()
    return people


def _incidents(pile_id: int) -> list[Incident]:
    rows = list(db.session.execute(select(Incident).where(Incident.pile_id == pile_id)
                                   .order_by(Incident.id)).scalars())
    for row in rows:
        db.session.expunge(row)
    db.session.rollback()
    return rows


def _notifications(incident_id: int) -> list[IncidentNotification]:
    rows = list(db.session.execute(select(IncidentNotification).where(
        IncidentNotification.incident_id == incident_id)).scalars())
    for row in rows:
        db.session.expunge(row)
    db.session.rollback()
    return rows


def _charge_both(site: Site) -> tuple[str, str]:
    wait_until(lambda: site.pile.connected)
    ids = []
    for port in (1, 2):
        site.pile.plug(port)
        wait_until(lambda port=port: port_status(site.pile_id, port) == "plugged")
        res = site.phone.post("/api/v1/charging-sessions", json={
            "charging_account_id": site.account_id, "port_code": site.port_codes[port],
            "max_amount_fen": 1000})
        assert res.status_code == 201, res.get_json()
        ids.append(res.get_json()["session_id"])
    site.pile.advance(300)
    return ids[0], ids[1]


def _stops(site: Site) -> list[dict[str, Any]]:
    return [m for m in site.pile.received if m.get("type") == "stop"]


# kind, what the pile reports, value, the platform's severity, what must stop
ALARMS = [
    ("smoke", "critical", 1, "critical", "pile"),
    ("short_circuit", "critical", None, "critical", "port"),
    ("leakage", "critical", 32, "critical", "port"),
    ("over_temperature", "major", 720, "critical", "port"),  # the pile under-rates 72 °C
    ("overcurrent", "major", 4300, "major", "port"),
    ("overload", "major", 1600, "major", "port"),
    ("plug_fault", "minor", None, "minor", "none"),
]


@pytest.mark.parametrize(("kind", "reported", "value", "severity", "scope"), ALARMS,
                         ids=[a[0] for a in ALARMS])
def test_alarm_from_a_simulated_pile_to_port_stopped_and_operator_notified(
        app: Flask, site: Site, server: CaptureServer, safety: dict[str, Any], kind: str,
        reported: str, value: int | None, severity: str, scope: str) -> None:
    one, two = _charge_both(site)
    site.pile.raise_alarm(2, kind, reported, value=value, threshold=1)
    [incident] = wait_until(lambda: _incidents(site.pile_id))
    assert (incident.kind, incident.severity, incident.port_no) == (kind, severity, 2)
    assert incident.community_id == site.community_id and incident.session_ref == two
    assert incident.stop_scope == scope
    stopped = {"pile": [one, two], "port": [two], "none": []}[scope]
    for sid in stopped:
        assert wait_until(lambda sid=sid: settled(sid), timeout=20).stop_reason == "alarm"
    # the operator is told at once: webhook (signed), SMS and WeChat
    [hook] = server.wait_for(lambda r: r.path == HOOK)
    assert verify(WEBHOOK_SECRET, hook.header("X-EVC-Timestamp"), hook.body,
                  hook.header("X-EVC-Signature"))
    sent = hook.json()["incident"]
    assert (sent["incident_id"], sent["kind"], sent["severity"]) == (incident.id, kind,
                                                                      severity)
    assert sent["pile_serial"] == site.serial and sent["port_no"] == 2
    [sms] = server.wait_for(lambda r: r.path == "/sms/send")
    assert sms.json()["phone"] == safety["operator_phone"]
    [wechat] = server.wait_for(lambda r: r.path == "/cgi-bin/message/subscribe/send")
    assert wechat.json()["touser"] == safety["operator_openid"]
    wait_until(lambda: {n.status for n in _notifications(incident.id)} == {"sent"})
    if scope == "none":  # nothing was stopped: both still charging, no stop sent
        site.pile.advance(60)
        assert session_row(one).status == session_row(two).status == "active"
        assert _stops(site) == []
    elif scope == "port":
        assert session_row(one).status == "active"


def test_duplicate_alarms_fold_into_one_incident(site: Site, server: CaptureServer,
                                                 safety: dict[str, Any]) -> None:
    wait_until(lambda: site.pile.connected)
    for temp in (650, 660, 655):
        site.pile.raise_alarm(1, "over_temperature", "major", value=temp, threshold=600)
    [incident] = wait_until(lambda: (rows := _incidents(site.pile_id))
                            and rows[0].raised_count == 3 and rows)
    assert incident.severity == "major" and incident.value == 655
    server.wait_for(lambda r: r.path == HOOK)
    site.pile.advance(30)
    assert len(server.matching(lambda r: r.path == HOOK)) == 1  # notified once
    site.pile.raise_alarm(1, "over_temperature", "major", value=710, threshold=600)
    [incident] = wait_until(lambda: (rows := _incidents(site.pile_id))
                            and rows[0].severity == "critical" and rows)
    events = {r.json()["event"] for r in server.wait_for(lambda r: r.path == HOOK, count=2)}
    assert events == {"incident.opened", "incident.severity_raised"}


def test_a_failing_notifier_does_not_prevent_the_stop(app: Flask, site: Site,
                                                      server: CaptureServer,
                                                      safety: dict[str, Any]) -> None:
    server.answer(HOOK, 500)
    server.answer("/cgi-bin/message/subscribe/send", 502)
    app.config["SETTINGS"] = dataclasses.replace(app.config["SETTINGS"],
                                                 notify_sms_url="http://127.0.0.1:9/sms")
    one, _two = _charge_both(site)
    site.pile.raise_alarm(1, "overcurrent", "major", value=4400, threshold=4000)
    done = wait_until(lambda: settled(one), timeout=20)
    assert done.stop_reason == "alarm"
    assert any(s["session_id"] == one and s["reason"] == "alarm" for s in _stops(site))
    [incident] = _incidents(site.pile_id)
    rows = wait_until(lambda: (rows := _notifications(incident.id))
                      and all(r.attempts >= 1 and r.status == "pending" for r in rows) and rows)
    assert {r.channel for r in rows} == {"webhook", "sms", "wechat"}
    assert all(r.last_error for r in rows)  # kept for the retry job


def test_a_broken_incident_store_does_not_prevent_the_stop(
        site: Site, server: CaptureServer, safety: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("incident store down")

    monkeypatch.setattr(incidents, "record_event", broken)
    one, _two = _charge_both(site)
    site.pile.raise_alarm(1, "leakage", "critical", value=40, threshold=30)
    assert wait_until(lambda: settled(one), timeout=20).stop_reason == "alarm"
    assert _incidents(site.pile_id) == []
    assert site.bridge.stats.applied > 0


def test_a_failing_wallet_does_not_prevent_the_stop(
        site: Site, server: CaptureServer, safety: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The stop goes out with the alarm's batch; settling (the wallet) is a later batch,
    which the bridge retries until the wallet is back."""
    one, two = _charge_both(site)
    real = ledger.capture_hold

    def down(*_a: Any, **_k: Any) -> Any:
        raise OperationalError("capture", {}, Exception("wallet database unavailable"))

    monkeypatch.setattr(ledger, "capture_hold", down)
    site.pile.raise_alarm(2, "overload", "major", value=1700, threshold=1500)
    wait_until(lambda: any(s["session_id"] == two for s in _stops(site)), timeout=20)
    wait_until(lambda: site.pile.ports[2].session is None)  # the pile switched it off
    assert session_row(two).status == "stopping"  # not settled: the wallet is down
    monkeypatch.setattr(ledger, "capture_hold", real)
    assert wait_until(lambda: settled(two), timeout=30).stop_reason == "alarm"
    assert session_row(one).status == "active"


def test_pile_offline_opens_an_incident_and_notifies(site: Site, server: CaptureServer,
                                                    safety: dict[str, Any]) -> None:
    _charge_both(site)
    site.pile.drop_link()
    [incident] = wait_until(lambda: _incidents(site.pile_id), timeout=30)
    assert (incident.kind, incident.severity, incident.port_no) == ("pile_offline", "major",
                                                                    None)
    [hook] = server.wait_for(lambda r: r.path == HOOK)
    assert hook.json()["incident"]["kind"] == "pile_offline"
    site.pile.restore_link()
    wait_until(lambda: (rows := _incidents(site.pile_id)) and rows[0].cleared_count == 1)


def test_a_leak_between_master_meter_and_sockets_opens_a_loss_incident(
        app: Flask, site: Site, server: CaptureServer, safety: dict[str, Any]) -> None:
    """The simulated pile doubles as the master-meter gateway; a quarter more energy goes
    through the master meter than through the sockets (a tapped cable)."""
    from datetime import UTC, datetime

    app.config["SETTINGS"] = dataclasses.replace(app.config["SETTINGS"],
                                                 loss_min_master_wh=100)
    meter_id = site.world.a.community.master_meter_serial
    db.session.rollback()
    _charge_both(site)

    def sockets() -> int:
        return sum(p.energy_wh for p in site.pile.ports.values())

    base_sockets, master = sockets(), 2_000_000
    site.pile.report_master_meter(meter_id, master)
    start = datetime.fromtimestamp(site.pile.now_ms() / 1000, UTC)
    for _ in range(8):  # two hours, a master reading every 15 minutes
        before = sockets()
        site.pile.advance(900)
        master += (sockets() - before) * 5 // 4
        site.pile.report_master_meter(meter_id, master)
    end = datetime.fromtimestamp(site.pile.now_ms() / 1000, UTC)
    used = sockets() - base_sockets
    assert used > 100
    site.pile.flush()
    op = site.api.login("op_a")
    path = f"/api/v1/communities/{site.community_id}/loss-checks"

    def check() -> dict[str, Any] | None:
        res = op.post(path, json={"start": start.isoformat(), "end": end.isoformat()})
        body = res.get_json()
        assert res.status_code == 201, body
        return body if body["master_wh"] == master - 2_000_000 else None

    result = wait_until(check, timeout=30)  # the last readings may still be on their way
    # the sockets' counters are interpolated at the period's ends (readings every 30 s),
    # so they read within a few Wh of what the pile counted
    assert abs(result["sockets_wh"] - used) <= 10
    assert 190 <= result["loss_per_mille"] <= 210
    assert result["verdicts"] == ["above_threshold"] and result["incident_id"]
    [hook] = server.wait_for(lambda r: r.path == HOOK
                             and r.json()["incident"]["kind"] == "energy_loss")
    assert hook.json()["incident"]["incident_id"] == result["incident_id"]
    series = op.get("/api/v1/incidents?category=loss").get_json()
    assert [i["id"] for i in series] == [result["incident_id"]]

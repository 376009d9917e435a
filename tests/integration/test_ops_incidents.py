"""Incidents from pile alarms, detected conditions and pile outages, through the bridge's
batch service (``telemetry.apply_uplinks``) on the real database: severity, stop scope,
folding, notifications queued, escalation driven by ``now``, and the guarantee that
nothing in the incident path can hold up a stop."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from app.extensions import db
from app.models import AlarmEvent, Incident, IncidentNotification, Pile
from app.models.base import utcnow
from app.services import incidents, telemetry
from app.services.uow import UnitOfWork
from simulator.messages import Uplink as Msg
from tests.factories import World
from tests.integration.test_ops_support import (
    PileFeed,
    contacts,
    incidents_of,
    notify_settings,
    reading,
    session_of,
    start_session,
    stop_commands,
)

HOOK = "http://127.0.0.1:9/fire-platform"  # never contacted: dispatch is off here


@pytest.fixture
def ops(app: Flask, world: World) -> dict[str, Any]:
    app.config["NOTIFY_DISPATCH"] = False  # rows are checked, not sent (test_ops_notify sends)
    notify_settings(app, "http://127.0.0.1:9")
    people = contacts(world)
    feed = PileFeed(world.a.pile.serial)
    feed.online()
    return {"feed": feed, "pile_id": world.a.pile.id, "people": people}


def _notifications(incident_id: int) -> list[IncidentNotification]:
    return list(db.session.execute(select(IncidentNotification).where(
        IncidentNotification.incident_id == incident_id).order_by(IncidentNotification.id)
    ).scalars())


def _targets(rows: list[IncidentNotification]) -> set[tuple[int, str, str]]:
    return {(n.level, n.channel, n.recipient) for n in rows}


# kind, what the pile says, value, cut_off, the platform's severity, what is stopped
ALARMS = [
    ("smoke", "critical", 1, True, "critical", "pile"),
    ("smoke", "minor", 1, False, "critical", "pile"),  # firmware under-rating smoke
    ("short_circuit", "critical", None, True, "critical", "port"),
    ("leakage", "critical", 35, True, "critical", "port"),
    ("over_temperature", "major", 720, False, "critical", "port"),  # 72.0 °C: the floor
    ("over_temperature", "major", 650, False, "major", "none"),
    ("overcurrent", "major", 4200, False, "major", "port"),  # stops at any severity
    ("overload", "major", 1500, False, "major", "port"),
    ("overload", "critical", 2600, True, "critical", "port"),
    ("plug_fault", "minor", None, False, "minor", "none"),
]


@pytest.mark.parametrize(("kind", "reported", "value", "cut_off", "severity", "scope"), ALARMS,
                         ids=[f"{a[0]}-{a[1]}-{a[5]}" for a in ALARMS])
def test_each_alarm_opens_an_incident_stops_per_policy_and_queues_notifications(
        app: Flask, world: World, ops: dict[str, Any], kind: str, reported: str,
        value: int | None, cut_off: bool, severity: str, scope: str) -> None:
    one = start_session(world.a, 1)
    two = start_session(world.a, 2)
    ops["feed"].alarm(2, kind, reported, value=value, threshold=1, cut_off=cut_off,
                      session_id=two)
    [incident] = incidents_of(ops["pile_id"])
    assert (incident.kind, incident.severity, incident.state) == (kind, severity, "open")
    assert (incident.port_no, incident.community_id) == (2, world.a.community.id)
    assert incident.session_ref == two and incident.session_id == session_of(two).id
    assert incident.stop_scope == scope and incident.raised_count == 1
    stopped = {c["session_id"] for c in stop_commands(ops["pile_id"])}
    expected = {"pile": {one, two}, "port": {two}, "none": set()}[scope]
    assert stopped == expected
    assert all(c["reason"] == "alarm" for c in stop_commands(ops["pile_id"]))
    for sid in expected:
        assert session_of(sid).stop_requested == "alarm"
    # level 1 at once: the operator by WeChat and SMS, and the webhook
    people = ops["people"]
    assert _targets(_notifications(incident.id)) == {
        (1, "wechat", people["operator_openid"]), (1, "sms", people["operator_phone"]),
        (1, "webhook", app.config["SETTINGS"].notify_webhook_url)}
    assert incident.notified_level == 1
    assert (incident.next_escalation_at is None) == (severity == "minor")


def test_duplicates_fold_into_one_incident(app: Flask, world: World,
                                           ops: dict[str, Any]) -> None:
    feed: PileFeed = ops["feed"]
    first = feed.factory.alarm(port=1, kind="over_temperature", severity="major",
                               cut_off=False, value=650, threshold=600)
    feed.apply(first)
    feed.apply(first)  # the same message again (QoS 1 redelivery): the inbox drops it
    feed.alarm(1, "over_temperature", "major", value=660, threshold=600)  # re-sent later
    feed.apply(feed.factory.alarm(port=1, kind="over_temperature", severity="major",
                                  cut_off=False, value=640, threshold=600),
               feed.factory.alarm(port=1, kind="over_temperature", severity="major",
                                  cut_off=False, value=655, threshold=600))  # one batch
    [incident] = incidents_of(ops["pile_id"])
    assert incident.raised_count == 4 and incident.severity == "major"
    assert incident.value == 655  # the latest raise's figures
    assert len(_notifications(incident.id)) == 3  # level 1 once, not per alarm
    # the same alarm hotter: folded, severity raised, the operator told again; it stops
    feed.alarm(1, "over_temperature", "major", value=720, threshold=600)
    [incident] = incidents_of(ops["pile_id"])
    assert (incident.severity, incident.raised_count) == ("critical", 5)
    again = [n for n in _notifications(incident.id) if n.reason == "severity_raised"]
    assert {(n.level, n.channel) for n in again} == {(1, "wechat"), (1, "sms"),
                                                     (1, "webhook")}
    assert incident.stop_scope == "port"
    # another port, another kind: other incidents
    feed.alarm(2, "over_temperature", "major", value=650)
    feed.alarm(1, "plug_fault", "minor")
    assert len(incidents_of(ops["pile_id"])) == 3


def test_clear_is_recorded_and_a_resolved_incident_is_not_reopened_by_old_news(
        app: Flask, world: World, ops: dict[str, Any]) -> None:
    feed: PileFeed = ops["feed"]
    raised = feed.factory.alarm(port=1, kind="leakage", severity="critical", cut_off=True,
                                value=40, threshold=30)
    feed.apply(raised)
    feed.alarm(1, "leakage", "critical", state="cleared")
    [incident] = incidents_of(ops["pile_id"])
    assert incident.state == "open" and incident.cleared_count == 1
    assert incident.last_cleared_at is not None
    incidents.acknowledge(UnitOfWork(), world.a.actor, incident.id, "on my way")
    incidents.resolve(UnitOfWork(), world.a.actor, incident.id, "wet cable replaced")
    # the pile re-sends the old alarm after a reconnect (same ts, new seq): not news
    feed.apply(Msg("alarm", dict(raised, seq=feed.factory.last_seq + 100)))
    assert len(incidents_of(ops["pile_id"])) == 1
    # a new leak later: a new incident
    feed.alarm(1, "leakage", "critical", cut_off=True, value=45, threshold=30)
    first, second = incidents_of(ops["pile_id"])
    assert (first.state, second.state) == ("resolved", "open")
    assert second.raised_count == 1


@pytest.mark.parametrize("failure", ["python", "database"])
def test_a_failing_incident_recorder_never_holds_up_the_stop(
        app: Flask, world: World, ops: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        failure: str) -> None:
    sid = start_session(world.a, 1)

    def broken(*_a: Any, **_k: Any) -> Any:
        if failure == "database":  # an SQL error: on PostgreSQL it aborts the transaction
            db.session.execute(text("SELECT * FROM no_such_table"))
        raise RuntimeError("incident store is broken")

    monkeypatch.setattr(incidents, "record_event", broken)
    result = ops["feed"].alarm(1, "short_circuit", "critical", cut_off=True)
    assert result.counters.get("incident_failures") == 1
    assert [c["session_id"] for c in stop_commands(ops["pile_id"])] == [sid]
    assert session_of(sid).stop_requested == "alarm"
    assert result.nudge  # the bridge sends the stop right after this commit
    assert db.session.scalar(select(func.count()).select_from(AlarmEvent)) == 1
    assert incidents_of(ops["pile_id"]) == []


def test_whole_pile_alarm_stops_every_port(app: Flask, world: World,
                                           ops: dict[str, Any]) -> None:
    one, two = start_session(world.a, 1), start_session(world.a, 2)
    ops["feed"].alarm(None, "overload", "major", value=3900, threshold=3500)
    assert {c["session_id"] for c in stop_commands(ops["pile_id"])} == {one, two}
    [incident] = incidents_of(ops["pile_id"])
    assert incident.port_no is None and incident.stop_scope == "pile"


# --- conditions the platform detects over meter readings ---------------------------------


class Clock:
    def __init__(self) -> None:
        self.ms = int(utcnow().timestamp() * 1000)

    def __call__(self) -> int:
        return self.ms

    def tick(self, seconds: float) -> None:
        self.ms += int(seconds * 1000)


@pytest.fixture
def clocked(app: Flask, world: World, ops: dict[str, Any]) -> tuple[PileFeed, Clock]:
    clock = Clock()
    return PileFeed(world.a.pile.serial, clock=clock), clock


def test_instant_abnormal_power_stops_the_port(world: World, ops: dict[str, Any],
                                               clocked: tuple[PileFeed, Clock]) -> None:
    feed, _ = clocked
    sid = start_session(world.a, 1)
    feed.meter([reading(1, 1010, delta_wh=10, power_w=2600, current_ma=12000, session_id=sid)])
    [incident] = incidents_of(ops["pile_id"])
    assert (incident.kind, incident.severity, incident.port_no) == ("abnormal_power", "major",
                                                                    1)
    assert incident.value == 2600 and incident.session_ref == sid
    assert incident.details["power_w"] == 2600
    assert [c["session_id"] for c in stop_commands(ops["pile_id"])] == [sid]


def test_power_and_energy_without_a_session(world: World, ops: dict[str, Any],
                                            clocked: tuple[PileFeed, Clock]) -> None:
    feed, clock = clocked
    feed.meter([reading(2, 1000, power_w=300)])
    clock.tick(30)
    feed.meter([reading(2, 1003, delta_wh=3, power_w=300)])
    clock.tick(30)
    feed.meter([reading(2, 1015, delta_wh=12, power_w=310)])
    kinds = {i.kind: i for i in incidents_of(ops["pile_id"])}
    assert set(kinds) == {"abnormal_power", "energy_without_session"}
    assert kinds["energy_without_session"].value == 15
    assert kinds["abnormal_power"].raised_count >= 1
    assert stop_commands(ops["pile_id"]) == []  # nothing we started: nothing to stop


def test_meter_going_backwards(world: World, ops: dict[str, Any],
                               clocked: tuple[PileFeed, Clock]) -> None:
    feed, clock = clocked
    sid = start_session(world.a, 1, energy_wh=5000)
    feed.meter([reading(1, 5200, delta_wh=200, power_w=200, session_id=sid)])
    clock.tick(60)
    feed.meter([reading(1, 5100, power_w=200, session_id=sid)])
    [incident] = incidents_of(ops["pile_id"])
    assert (incident.kind, incident.severity) == ("meter_backwards", "minor")
    assert incident.details == {"from_wh": 5200, "to_wh": 5100, "drop_wh": 100}
    assert stop_commands(ops["pile_id"]) == []


def test_temperature_rising_fast_during_a_charge(world: World, ops: dict[str, Any],
                                                 clocked: tuple[PileFeed, Clock]) -> None:
    feed, clock = clocked
    sid = start_session(world.a, 1)
    for i, temp in enumerate((300, 360, 420)):  # 4.0 °C per minute
        feed.meter([reading(1, 1000 + 5 * i, delta_wh=5, power_w=200, temp_dc=temp,
                            session_id=sid)])
        clock.tick(90)
    [incident] = incidents_of(ops["pile_id"])
    assert (incident.kind, incident.severity) == ("temperature_rising_fast", "major")
    assert incident.details["rise_dc"] == 120 and incident.details["span_s"] == 180
    assert [c["session_id"] for c in stop_commands(ops["pile_id"])] == [sid]


def test_socket_at_70_degrees_is_critical(world: World, ops: dict[str, Any],
                                          clocked: tuple[PileFeed, Clock]) -> None:
    feed, _ = clocked
    sid = start_session(world.a, 2)
    feed.meter([reading(2, 1010, delta_wh=10, power_w=200, temp_dc=705, session_id=sid)])
    [incident] = incidents_of(ops["pile_id"])
    assert (incident.kind, incident.severity, incident.stop_scope) == (
        "temperature_rising_fast", "critical", "port")
    assert [c["session_id"] for c in stop_commands(ops["pile_id"])] == [sid]


def test_normal_readings_load_no_history(world: World, ops: dict[str, Any],
                                         clocked: tuple[PileFeed, Clock],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    feed, clock = clocked
    loads: list[Any] = []
    real = incidents._recent_readings
    monkeypatch.setattr(incidents, "_recent_readings",
                        lambda *a: loads.append(a) or real(*a))
    sid = start_session(world.a, 1)
    for i in range(10):  # an ordinary charge: 200 W, 30 °C, the counter moving
        feed.meter([reading(1, 1000 + 2 * i, delta_wh=2, power_w=200, temp_dc=300 + i % 3,
                            session_id=sid)])
        clock.tick(30)
    assert loads == [] and incidents_of(ops["pile_id"]) == []
    feed.meter([reading(1, 1030, delta_wh=10, power_w=2600, session_id=sid)])
    assert len(loads) == 1 and len(incidents_of(ops["pile_id"])) == 1


def test_a_persisting_condition_is_folded_once_a_minute_not_once_a_batch(
        world: World, ops: dict[str, Any], clocked: tuple[PileFeed, Clock],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A welded relay keeps feeding 300 W with no session: one incident, examined again
    only once a minute (bounded cost), folded in bulk."""
    feed, clock = clocked
    loads: list[Any] = []
    real = incidents._recent_readings
    monkeypatch.setattr(incidents, "_recent_readings",
                        lambda *a: loads.append(a) or real(*a))
    folded, loads_once_both_open = 0, 0
    for i in range(12):  # six minutes, a report every 30 s
        before = len(loads)
        result = feed.meter([reading(2, 1000 + 3 * i, delta_wh=3 if i else 0, power_w=300)])
        folded += result.counters.get("incident_fold", 0)
        if len(incidents_of(ops["pile_id"])) == 2 and i >= 6:
            loads_once_both_open += len(loads) - before
        clock.tick(30)
    kinds = sorted(i.kind for i in incidents_of(ops["pile_id"]))
    assert kinds == ["abnormal_power", "energy_without_session"]
    assert loads_once_both_open == 3  # every other report (once a minute), not six times
    power = [i for i in incidents_of(ops["pile_id"]) if i.kind == "abnormal_power"]
    assert folded >= 4 and power[0].raised_count >= 3
    assert power[0].last_raised_at > power[0].opened_at


def test_a_flood_of_new_findings_is_spread_over_batches_but_every_stop_goes_out(
        world: World, ops: dict[str, Any], clocked: tuple[PileFeed, Clock],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incidents, "MAX_NEW_PER_BATCH", 1)
    feed, clock = clocked
    one, two = start_session(world.a, 1), start_session(world.a, 2)
    result = feed.meter([reading(1, 1010, delta_wh=10, power_w=2600, session_id=one),
                         reading(2, 1010, delta_wh=10, power_w=2700, session_id=two)])
    assert result.counters.get("incident_deferred") == 1
    assert len(incidents_of(ops["pile_id"])) == 1
    assert {c["session_id"] for c in stop_commands(ops["pile_id"])} == {one, two}
    clock.tick(30)
    feed.meter([reading(1, 1020, delta_wh=10, power_w=2600, session_id=one),
                reading(2, 1020, delta_wh=10, power_w=2700, session_id=two)])
    assert {i.port_no for i in incidents_of(ops["pile_id"])} == {1, 2}


# --- pile offline -------------------------------------------------------------------------


def test_pile_will_opens_an_offline_incident_and_online_records_the_clear(
        world: World, ops: dict[str, Any]) -> None:
    feed: PileFeed = ops["feed"]
    feed.online()  # a reconnect: connection 2
    start_session(world.a, 1)
    feed.apply(feed.factory.offline(conn=1))  # the old connection's will, late: stale
    assert incidents_of(ops["pile_id"]) == []
    feed.apply(feed.factory.offline(conn=feed.conn))
    [incident] = incidents_of(ops["pile_id"])
    assert (incident.kind, incident.severity, incident.port_no) == ("pile_offline", "major",
                                                                    None)
    assert incident.details["charging_ports"] == 1
    feed.online()
    [incident] = incidents_of(ops["pile_id"])
    assert incident.cleared_count == 1 and incident.state == "open"


def test_silent_piles_get_an_offline_incident_from_the_job(world: World,
                                                           ops: dict[str, Any]) -> None:
    pile = db.session.get(Pile, ops["pile_id"])
    assert pile is not None
    pile.last_seen_at = utcnow() - timedelta(minutes=10)
    db.session.commit()
    assert telemetry.mark_silent_piles_offline(UnitOfWork()) == 1
    assert incidents.open_offline_incidents(UnitOfWork()) == 1
    assert incidents.open_offline_incidents(UnitOfWork()) == 0  # once per outage
    [incident] = incidents_of(ops["pile_id"])
    assert (incident.kind, incident.severity, incident.raised_count) == ("pile_offline",
                                                                         "minor", 1)
    assert incident.opened_at == pile.last_seen_at + timedelta(seconds=90)


# --- escalation, driven by passing ``now`` ---------------------------------------------------


def test_unacknowledged_critical_incident_escalates_on_the_configured_ladder(
        app: Flask, world: World, ops: dict[str, Any]) -> None:
    import dataclasses

    app.config["SETTINGS"] = dataclasses.replace(app.config["SETTINGS"],
                                                 escalation_critical_minutes=(0, 2, 4))
    ops["feed"].alarm(1, "smoke", "critical", cut_off=True, value=1)
    [incident] = incidents_of(ops["pile_id"])
    base = min(incident.opened_at, incident.created_at)
    assert incident.next_escalation_at == base + timedelta(minutes=2)
    people = ops["people"]
    hook = app.config["SETTINGS"].notify_webhook_url
    assert incidents.escalate_due(UnitOfWork(), now=base + timedelta(seconds=119)) == 0
    assert incidents.escalate_due(UnitOfWork(), now=base + timedelta(minutes=2)) == 2
    db.session.expire_all()
    level2 = {t for t in _targets(_notifications(incident.id)) if t[0] == 2}
    assert level2 == {(2, "sms", people["company_phone"]), (2, "webhook", hook)}
    assert incidents.escalate_due(UnitOfWork(), now=base + timedelta(minutes=4)) == 2
    db.session.expire_all()
    level3 = {t for t in _targets(_notifications(incident.id)) if t[0] == 3}
    assert level3 == {(3, "sms", people["grid_phone"]), (3, "webhook", hook)}
    assert all(n.reason == "escalated" for n in _notifications(incident.id) if n.level > 1)
    row = db.session.get(Incident, incident.id)
    assert row is not None and row.notified_level == 3 and row.next_escalation_at is None
    assert incidents.escalate_due(UnitOfWork(), now=base + timedelta(hours=5)) == 0


def test_a_late_scheduler_catches_up_level_by_level_and_acknowledging_stops_it(
        app: Flask, world: World, ops: dict[str, Any]) -> None:
    feed: PileFeed = ops["feed"]
    feed.alarm(1, "smoke", "critical", cut_off=True, value=1)
    feed.alarm(2, "overcurrent", "major", value=4200)
    smoke, current = incidents_of(ops["pile_id"])
    incidents.acknowledge(UnitOfWork(), world.a.actor, current.id)
    later = utcnow() + timedelta(hours=3)  # the job was down for three hours
    incidents.escalate_due(UnitOfWork(), now=later)
    db.session.expire_all()
    assert {n.level for n in _notifications(smoke.id)} == {1, 2, 3}
    assert {n.level for n in _notifications(current.id)} == {1}


def test_a_pile_clock_running_ahead_does_not_delay_the_first_notification(
        app: Flask, world: World, ops: dict[str, Any]) -> None:
    ahead = PileFeed(world.a.pile.serial,
                     clock=lambda: int((utcnow() + timedelta(minutes=20)).timestamp() * 1000))
    ahead.alarm(1, "smoke", "critical", cut_off=True, value=1)
    [incident] = incidents_of(ops["pile_id"])
    assert incident.opened_at > incident.created_at
    assert {n.level for n in _notifications(incident.id)} == {1}
    assert incident.next_escalation_at == incident.created_at + timedelta(minutes=5)


def test_no_channel_configured_queues_nothing_and_still_records(
        app: Flask, world: World, ops: dict[str, Any]) -> None:
    import dataclasses

    app.config["SETTINGS"] = dataclasses.replace(
        app.config["SETTINGS"], notify_webhook_url="", notify_sms_url="",
        notify_wechat_template_id="")
    ops["feed"].alarm(1, "smoke", "critical", cut_off=True, value=1)
    [incident] = incidents_of(ops["pile_id"])
    assert _notifications(incident.id) == [] and incident.notified_level == 1

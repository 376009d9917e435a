"""Safety policy: hand-worked examples first (arithmetic in the comments), then properties.

Temperatures are deci-°C as the pile sends them (312 = 31.2 °C), power W, energy Wh.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.errors import ConfigurationError, Conflict
from app.domain.safety import (
    SEVERITY_FLOOR,
    AlarmKind,
    AlarmState,
    Audience,
    Condition,
    ConditionKind,
    FoldAction,
    IncidentAction,
    IncidentKey,
    IncidentPolicy,
    IncidentState,
    IncidentView,
    Reading,
    SafetyConfig,
    SafetyEvent,
    Severity,
    StopScope,
    classify,
    detect,
    detect_energy_without_session,
    detect_excess_power,
    detect_meter_backwards,
    detect_pile_offline,
    detect_power_without_session,
    detect_temperature,
    escalation_due,
    escalation_plan,
    incident_key,
    max_severity,
    must_stop_port,
    next_escalation_at,
    stop_scope,
    transition,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2025, 3, 3, 20, 0, tzinfo=SHANGHAI)
POLICY = IncidentPolicy()

C, MA, MI = Severity.CRITICAL, Severity.MAJOR, Severity.MINOR
K = AlarmKind
CK = ConditionKind


def at(minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


def rd(
    minutes: float,
    *,
    energy: int = 1000,
    power: int = 150,
    temp: int | None = 300,
    session: str | None = "S1",
    boot: str | None = None,
    seconds: float = 0,
) -> Reading:
    return Reading(at(minutes, seconds), energy, power, temp, power * 1000 // 220,
                   session_ref=session, boot_id=boot)


def ev(
    kind: AlarmKind | ConditionKind = K.OVER_TEMPERATURE,
    *,
    port: int | None = 1,
    state: str = "raised",
    minute: float = 0,
    severity: Severity | None = None,
    cut_off: bool = False,
    value: int | None = None,
    pile: str = "P0001",
) -> SafetyEvent:
    return SafetyEvent(pile, port, kind, AlarmState(state), at(minute), severity, cut_off,
                       value)


# --------------------------------------------------------------------------- severity policy


@pytest.mark.parametrize(
    ("kind", "floor"),
    [
        (K.SMOKE, C), (K.SHORT_CIRCUIT, C), (K.LEAKAGE, C),
        (K.OVER_TEMPERATURE, MA), (K.OVERCURRENT, MA), (K.OVERLOAD, MA), (K.PLUG_FAULT, MI),
        (CK.PILE_OFFLINE, MI), (CK.METER_BACKWARDS, MI), (CK.ABNORMAL_POWER, MA),
        (CK.TEMPERATURE_RISING_FAST, MA), (CK.ENERGY_WITHOUT_SESSION, MA),
    ],
)
def test_severity_floor_table(kind, floor):
    assert SEVERITY_FLOOR[kind] is floor
    assert set(SEVERITY_FLOOR) == set(AlarmKind) | set(ConditionKind)


def test_over_temperature_is_critical_at_the_cut_off_threshold():
    # 69.9 °C is below the 70.0 °C cut-off: major; 70.0 °C and above: critical.
    assert classify("over_temperature", value=699) is MA
    assert classify("over_temperature", value=700) is C
    assert classify("over_temperature", value=782) is C
    # No value: we cannot tell how hot, so assume the worst.
    assert classify("over_temperature", value=None) is C
    # The cut-off is configurable.
    assert classify("over_temperature", value=650, config=SafetyConfig(temp_critical_dc=650,
                                                                        temp_warning_dc=600)) is C


def test_overcurrent_and_overload_are_critical_when_the_pile_cut_off():
    assert classify(K.OVERCURRENT) is MA
    assert classify(K.OVERCURRENT, cut_off=True) is C
    assert classify(K.OVERLOAD, cut_off=True) is C
    assert classify(K.PLUG_FAULT, cut_off=True) is MI  # cut_off does not raise a plug fault


def test_reported_severity_only_raises():
    assert classify(K.SMOKE, reported="minor") is C  # firmware under-rating smoke: ignored
    assert classify(K.PLUG_FAULT, reported="major") is MA  # the pile knows better: raise
    assert classify(K.OVER_TEMPERATURE, value=650, reported="critical") is C
    assert classify(CK.TEMPERATURE_RISING_FAST, value=705) is C
    assert classify(CK.TEMPERATURE_RISING_FAST, value=None) is MA


def test_severity_rank_not_alphabetical():
    assert C.rank > MA.rank > MI.rank
    assert max_severity(MI, None, C, MA) is C
    assert max_severity(MI) is MI


# --------------------------------------------------------------------------- stop policy


@pytest.mark.parametrize(
    ("severity", "kind", "cut_off", "port", "scope"),
    [
        (C, K.SMOKE, True, 1, StopScope.PILE),  # smoke: all ports even if a port is named
        (C, K.SMOKE, False, None, StopScope.PILE),
        (C, K.SHORT_CIRCUIT, True, None, StopScope.PILE),  # whole-pile critical: all ports
        (C, K.LEAKAGE, True, None, StopScope.PILE),
        (C, K.LEAKAGE, True, 2, StopScope.PORT),
        (C, K.SHORT_CIRCUIT, True, 3, StopScope.PORT),
        (C, K.OVER_TEMPERATURE, True, 1, StopScope.PORT),  # cut off already: stop anyway
        (MA, K.OVERCURRENT, False, 1, StopScope.PORT),  # the pile has not acted: we do
        (MA, K.OVERLOAD, False, None, StopScope.PILE),
        (MA, CK.ABNORMAL_POWER, False, 4, StopScope.PORT),
        (MA, CK.TEMPERATURE_RISING_FAST, False, 4, StopScope.PORT),
        (MA, K.OVER_TEMPERATURE, False, 1, StopScope.NONE),  # 60-69.9 °C: people look
        (MI, K.PLUG_FAULT, True, 1, StopScope.NONE),
        (MA, CK.PILE_OFFLINE, False, None, StopScope.NONE),
        (MI, CK.METER_BACKWARDS, False, 1, StopScope.NONE),
        (MA, CK.ENERGY_WITHOUT_SESSION, False, 1, StopScope.NONE),
        (C, CK.PILE_OFFLINE, False, None, StopScope.PILE),  # any critical stops
    ],
)
def test_stop_scope_table(severity, kind, cut_off, port, scope):
    assert stop_scope(severity, kind, cut_off, port) is scope
    assert must_stop_port(severity, kind, cut_off) is (scope is not StopScope.NONE)
    assert POLICY.stop_scope(severity, kind, cut_off, port) is scope
    assert POLICY.must_stop_port(severity, kind, cut_off) is (scope is not StopScope.NONE)


def test_stop_for_uses_the_policy_severity_not_the_reported_one():
    # A leakage the firmware calls minor is critical: the port stops.
    assert POLICY.stop_for(ev(K.LEAKAGE, port=2, severity=MI)) is StopScope.PORT
    assert POLICY.stop_for(ev(K.SMOKE, port=3, severity=MI)) is StopScope.PILE
    assert POLICY.stop_for(ev(K.SMOKE, port=3, state="cleared")) is StopScope.NONE
    assert POLICY.stop_for(ev(K.PLUG_FAULT, severity=MI)) is StopScope.NONE


# --------------------------------------------------------------------------- detectors


def test_temperature_rising_fast_while_charging():
    # 30.0 -> 35.2 °C over 0..3 min: rise 52 dc in 180 s; 52 × 60 = 3120 > 15 × 180 = 2700,
    # i.e. 1.73 °C/min > 1.5 °C/min -> major.
    readings = [rd(0, temp=300), rd(1, temp=315), rd(2, temp=335), rd(3, temp=352)]
    found = detect_temperature(readings)
    assert found is not None
    assert (found.kind, found.severity, found.at) == (CK.TEMPERATURE_RISING_FAST, MA, at(3))
    assert found.figures == {"from_dc": 300, "to_dc": 352, "rise_dc": 52, "span_s": 180}
    assert "1.7 °C/min" in found.reason


def test_temperature_rising_exactly_at_the_rate_is_fine():
    # 30.0 -> 33.0 °C in 120 s: 30 × 60 = 1800, 15 × 120 = 1800, not greater -> nothing.
    assert detect_temperature([rd(0, temp=300), rd(1, temp=315), rd(2, temp=330)]) is None
    # One more deci-degree tips it: 31 × 60 = 1860 > 1800.
    assert detect_temperature([rd(0, temp=300), rd(1, temp=315), rd(2, temp=331)]) is not None


def test_temperature_rise_needs_span_readings_and_a_charge():
    # Every 10 s, 30.0 -> 31.0 °C in 20 s (3 °C/min) but 20 s < the 2 min span: noise.
    quick = [rd(0, seconds=s, temp=300 + s // 2) for s in (0, 10, 20)]
    assert detect_temperature(quick) is None
    # Two readings only (3 needed), 5 °C in 2 min.
    assert detect_temperature([rd(0, temp=300), rd(2, temp=350)]) is None
    # The same fast rise with no session: not "during a charge".
    idle = [rd(m, temp=t, session=None, power=0) for m, t in ((0, 300), (1, 320), (2, 340))]
    assert detect_temperature(idle) is None
    # Only the last 5 minutes of the charge count. Minute 0 -> 9, 20.0 -> 36.0 °C, would be
    # 160 × 60 = 9600 > 15 × 540 = 8100, but minute 0 is outside the window 4..9 min, where
    # 35.0 -> 36.0 °C in 300 s is slow: 10 × 60 = 600 <= 15 × 300 = 4500.
    slow = [rd(0, temp=200)] + [rd(m, temp=350 + 2 * (m - 4)) for m in range(4, 10)]
    assert detect_temperature(slow) is None


def test_temperature_absolute_limits():
    # 60.5 °C with nothing charging: above the 60.0 °C warning -> major.
    warm = detect_temperature([rd(0, temp=580, session=None), rd(1, temp=605, session=None)])
    assert warm is not None and warm.severity is MA and warm.threshold == 600
    assert warm.reason == "socket at 60.5 °C, limit 60.0 °C"
    # 71.2 °C a minute ago, 69.0 °C now: the hottest in the window counts -> critical.
    hot = detect_temperature([rd(0, temp=712), rd(1, temp=690)])
    assert hot is not None and (hot.severity, hot.value, hot.at) == (C, 712, at(0))
    # A 72.0 °C reading 11 minutes before the newest is outside the 10 min window.
    assert detect_temperature([rd(0, temp=720), rd(11, temp=310)]) is None
    # No sensor (temp null): nothing to say.
    assert detect_temperature([rd(0, temp=None), rd(1, temp=None)]) is None


def test_excess_power_sustained():
    # 1300, 1350, 1320 W at 0, 1, 2 min: above 1200 W for 2 min (>= 120 s) -> major.
    found = detect_excess_power([rd(0, power=1300), rd(1, power=1350), rd(2, power=1320)])
    assert found is not None
    assert (found.kind, found.severity, found.at, found.value) == (CK.ABNORMAL_POWER, MA,
                                                                   at(2), 1320)
    assert found.figures == {"power_w": 1320, "sustained_s": 120}
    # Broken by 1100 W at 2 min: runs of 60 s and 0 s -> nothing.
    broken = [rd(0, power=1300), rd(1, power=1300), rd(2, power=1100), rd(3, power=1300)]
    assert detect_excess_power(broken) is None
    # Exactly 1200 W is not above 1200 W.
    assert detect_excess_power([rd(m, power=1200) for m in range(5)]) is None
    # Arrival order does not matter: the detector sorts by the pile's time.
    shuffled = [rd(2, power=1320), rd(0, power=1300), rd(1, power=1350)]
    assert detect_excess_power(shuffled) == found


def test_excess_power_instant():
    # One reading of 2100 W > 2000 W: abnormal at once.
    found = detect_excess_power([rd(0, power=150), rd(1, power=2100)])
    assert found is not None and found.threshold == 2000 and found.at == at(1)


def test_power_without_session():
    # Two consecutive no-session readings at 50 W (> 10 W idle): major.
    found = detect_power_without_session([rd(0, session=None, power=50),
                                          rd(1, session=None, power=50)])
    assert found is not None and found.severity is MA and found.figures["readings"] == 2
    # One reading may race the end of a session: nothing.
    assert detect_power_without_session([rd(0, power=150), rd(1, session=None, power=50)]
                                        ) is None
    # 10 W is idle noise, not above it.
    assert detect_power_without_session([rd(m, session=None, power=10) for m in range(3)]
                                        ) is None
    # A session in between resets the count.
    mixed = [rd(0, session=None, power=50), rd(1, power=150), rd(2, session=None, power=50)]
    assert detect_power_without_session(mixed) is None


def test_energy_without_session():
    # 1000 -> 1004 -> 1012 Wh between no-session readings: 4 + 8 = 12 Wh > 10 Wh -> major.
    readings = [rd(m, energy=e, session=None, power=0)
                for m, e in ((0, 1000), (1, 1004), (2, 1012))]
    found = detect_energy_without_session(readings)
    assert found is not None and (found.value, found.at) == (12, at(2))
    # 10 Wh is not above 10 Wh.
    assert detect_energy_without_session([readings[0], rd(1, energy=1010, session=None)]
                                         ) is None
    # Energy from a session reading to a no-session one is the session's tail.
    tail = [rd(0, energy=1000), rd(1, energy=1050, session=None)]
    assert detect_energy_without_session(tail) is None


def test_meter_backwards_within_one_boot():
    # 1000 -> 1005 -> 1003 Wh in boot "b1": back 2 Wh -> minor.
    readings = [rd(0, energy=1000, boot="b1"), rd(1, energy=1005, boot="b1"),
                rd(2, energy=1003, boot="b1")]
    found = detect_meter_backwards(readings)
    assert found is not None
    assert (found.kind, found.severity, found.at) == (CK.METER_BACKWARDS, MI, at(2))
    assert found.figures == {"from_wh": 1005, "to_wh": 1003, "drop_wh": 2}
    # A lower counter in a new boot is a replaced board: the caller's business.
    assert detect_meter_backwards([rd(0, energy=1000, boot="b1"), rd(1, energy=900, boot="b2")]
                                  ) is None
    # Boot unknown: assumed the same boot.
    assert detect_meter_backwards([rd(0, energy=1000), rd(1, energy=999)]) is not None
    # Delivered out of order but created in order: not backwards.
    assert detect_meter_backwards([rd(1, energy=1005), rd(0, energy=1000)]) is None
    # A tolerance absorbs small drops: 2 Wh <= 2 Wh.
    assert detect_meter_backwards(readings, SafetyConfig(meter_backwards_tolerance_wh=2)) is None


def test_detect_runs_every_detector_most_severe_first():
    # 1300 W for 2 min and 71.0 °C: critical temperature first, then abnormal power.
    readings = [rd(0, power=1300, temp=650), rd(1, power=1300, temp=690),
                rd(2, power=1300, temp=710)]
    found = detect(readings)
    assert [(c.kind, c.severity) for c in found] == [
        (CK.TEMPERATURE_RISING_FAST, C), (CK.ABNORMAL_POWER, MA)]
    assert detect([]) == []
    assert detect([rd(0), rd(1, energy=1002)]) == []  # a normal charge


def test_pile_offline_condition():
    # keepalive 60 s: offline after more than 1.5 × 60 = 90 s of silence.
    assert detect_pile_offline(at(0), 60, at(0, 90)) is None
    found = detect_pile_offline(at(0), 60, at(0, 91))
    assert found is not None and (found.severity, found.at) == (MI, at(0, 90))
    busy = detect_pile_offline(at(0), 60, at(5), charging_ports=2)
    assert busy is not None and busy.severity is MA
    assert detect_pile_offline(None, 60, at(5)) is not None  # never seen


def test_condition_becomes_an_event_and_folds():
    cond = Condition(CK.TEMPERATURE_RISING_FAST, C, at(3), "socket at 71.0 °C", value=710)
    event = cond.event("P0001", 2, session_ref="S9")
    assert event.key == IncidentKey("P0001", 2, CK.TEMPERATURE_RISING_FAST)
    decision = POLICY.fold({}, event)
    assert decision.action is FoldAction.OPEN and decision.stop is StopScope.PORT
    assert decision.incident is not None and decision.incident.severity is C


# --------------------------------------------------------------------------- folding


def test_alarm_message_from_the_protocol_example():
    body = {"port": 1, "kind": "over_temperature", "severity": "critical", "state": "raised",
            "value": 782, "threshold": 700, "cut_off": True, "session_id": "S20241124000123",
            "ts": 1732422700000}
    event = SafetyEvent.from_alarm("P0001", body)
    assert event.at == datetime(2024, 11, 24, 4, 31, 40, tzinfo=UTC)  # 1732422700 s
    assert (event.kind, event.severity, event.cut_off, event.value) == (
        K.OVER_TEMPERATURE, C, True, 782)
    assert event.key == incident_key("P0001", 1, "over_temperature")


def test_open_then_repeats_fold_into_one_incident():
    first = ev(K.OVER_TEMPERATURE, value=782, severity=C, cut_off=True, minute=0)
    d1 = POLICY.fold({}, first)
    assert d1.action is FoldAction.OPEN and d1.stop is StopScope.PORT and d1.changed
    open_ = POLICY.apply({}, d1)
    assert list(open_) == [first.key]

    # The same alarm again (a re-send after reconnect): folds, nothing changes, but the
    # stop is repeated -- folding never suppresses a stop.
    d2 = POLICY.fold(open_, first)
    assert d2.action is FoldAction.FOLD and not d2.changed and d2.stop is StopScope.PORT
    # A later repeat only moves last_raised_at.
    d3 = POLICY.fold(open_, ev(K.OVER_TEMPERATURE, value=790, minute=4))
    assert d3.incident is not None and d3.incident.last_raised_at == at(4)
    assert d3.incident.opened_at == at(0) and len(POLICY.apply(open_, d3)) == 1


def test_folding_raises_severity_but_never_lowers_it():
    # Overcurrent without cut-off: major. The pile then cuts off: critical.
    d1 = POLICY.fold({}, ev(K.OVERCURRENT, minute=0))
    assert d1.incident is not None and d1.incident.severity is MA
    open_ = POLICY.apply({}, d1)
    d2 = POLICY.fold(open_, ev(K.OVERCURRENT, cut_off=True, minute=1))
    assert d2.severity_raised and d2.incident is not None and d2.incident.severity is C
    assert d2.incident.cut_off and "raised to critical" in d2.reason
    # A cooler over-temperature report cannot lower a critical incident.
    hot = POLICY.apply({}, POLICY.fold({}, ev(value=782)))
    d3 = POLICY.fold(hot, ev(value=650, severity=MA, minute=2))
    assert d3.incident is not None and d3.incident.severity is C and not d3.severity_raised
    assert d3.stop is StopScope.PORT  # the incident is critical: keep the port stopped


def test_cleared_is_recorded_but_does_not_close():
    open_ = POLICY.apply({}, POLICY.fold({}, ev(K.LEAKAGE, minute=0)))
    d = POLICY.fold(open_, ev(K.LEAKAGE, state="cleared", minute=3))
    assert d.action is FoldAction.RECORD_CLEAR and d.stop is StopScope.NONE
    after = POLICY.apply(open_, d)
    view = after[d.key]
    assert view.state is IncidentState.OPEN and view.cleared_by_pile
    assert view.last_cleared_at == at(3)
    # An older clear delivered late does not move last_cleared_at back (max(3, 1) = 3).
    late = POLICY.apply(after, POLICY.fold(after, ev(K.LEAKAGE, state="cleared", minute=1)))
    assert late[d.key].last_cleared_at == at(3)
    # Raised again after the clear: the pile's latest word is "raised".
    again = POLICY.apply(after, POLICY.fold(after, ev(K.LEAKAGE, minute=5)))
    assert not again[d.key].cleared_by_pile


def test_clear_without_incident_is_ignored():
    d = POLICY.fold({}, ev(K.SMOKE, state="cleared"))
    assert d.action is FoldAction.IGNORE and d.incident is None and d.stop is StopScope.NONE
    assert POLICY.apply({}, d) == {}


def test_acknowledged_incident_keeps_folding_resolved_one_does_not():
    key = incident_key("P0001", 1, K.OVERLOAD)
    acked = {key: IncidentView(key, MA, at(0), at(0), state=IncidentState.ACKNOWLEDGED)}
    d = POLICY.fold(acked, ev(K.OVERLOAD, minute=1))
    assert d.action is FoldAction.FOLD and d.incident is not None
    assert d.incident.state is IncidentState.ACKNOWLEDGED
    resolved = {key: IncidentView(key, MA, at(0), at(0), state=IncidentState.RESOLVED)}
    d = POLICY.fold(resolved, ev(K.OVERLOAD, minute=9))
    assert d.action is FoldAction.OPEN and d.incident is not None
    assert d.incident.opened_at == at(9)


def test_keys_separate_ports_piles_and_kinds():
    events = [ev(K.SMOKE, port=1), ev(K.SMOKE, port=None), ev(K.SMOKE, port=2),
              ev(K.LEAKAGE, port=1), ev(K.SMOKE, port=1, pile="P0002")]
    open_: dict = {}
    for e in events:
        open_ = POLICY.apply(open_, POLICY.fold(open_, e))
    assert len(open_) == 5
    with pytest.raises(ValueError):
        incident_key("P0001", 0, K.SMOKE)
    with pytest.raises(ValueError):
        incident_key("P0001", 1, "fire")


def test_out_of_order_raises_keep_the_earliest_opening():
    late_first = POLICY.apply({}, POLICY.fold({}, ev(K.OVERLOAD, minute=7)))
    both = POLICY.apply(late_first, POLICY.fold(late_first, ev(K.OVERLOAD, minute=2)))
    view = next(iter(both.values()))
    assert (view.opened_at, view.last_raised_at) == (at(2), at(7))


# --------------------------------------------------------------------------- lifecycle


def test_lifecycle_transitions():
    assert transition("open", "acknowledge") is IncidentState.ACKNOWLEDGED
    assert transition(IncidentState.ACKNOWLEDGED, IncidentAction.RESOLVE) is (
        IncidentState.RESOLVED)


@pytest.mark.parametrize(
    ("state", "action"),
    [("open", "resolve"), ("acknowledged", "acknowledge"), ("resolved", "acknowledge"),
     ("resolved", "resolve")],
)
def test_invalid_transitions_conflict(state, action):
    with pytest.raises(Conflict) as caught:
        transition(state, action)
    assert caught.value.code == "conflict"
    assert caught.value.details["state"] == state


# --------------------------------------------------------------------------- escalation


def run_escalation(severity: Severity, now: datetime, *, acked: datetime | None = None,
                   level: int = 0) -> list[tuple[int, Audience]]:
    """What a scheduler sends at ``now``, catching up level by level."""
    sent = []
    while step := escalation_due(T0, acked, severity, now, notified_level=level):
        sent.append((step.level, step.audience))
        level = step.level
    return sent


def test_critical_escalation_ladder():
    # Level 1 at once, level 2 after 5 min, level 3 after 15 min.
    step = escalation_due(T0, None, C, T0)
    assert step is not None and (step.level, step.audience, step.due_at) == (
        1, Audience.COMMUNITY_OPERATORS, T0)
    assert escalation_due(T0, None, C, at(4, 59), notified_level=1) is None
    step = escalation_due(T0, None, C, at(5), notified_level=1)
    assert step is not None and (step.level, step.audience) == (2, Audience.PROPERTY_MANAGERS)
    assert escalation_due(T0, None, C, at(14, 59), notified_level=2) is None
    step = escalation_due(T0, None, C, at(15), notified_level=2)
    assert step is not None and (step.level, step.audience) == (3, Audience.POWER_COMPANY)
    assert escalation_due(T0, None, C, at(600), notified_level=3) is None


def test_escalation_catches_up_without_skipping_an_audience():
    # The scheduler was down for 20 min: it sends levels 1, 2 and 3 in order.
    assert run_escalation(C, at(20)) == [
        (1, Audience.COMMUNITY_OPERATORS), (2, Audience.PROPERTY_MANAGERS),
        (3, Audience.POWER_COMPANY)]


def test_acknowledgement_stops_escalation():
    # Acknowledged at 3 min: level 2 (due at 5 min) never goes out.
    assert run_escalation(C, at(10), acked=at(3), level=1) == []
    # An acknowledgement "in the future" of ``now`` does not count yet.
    assert run_escalation(C, at(6), acked=at(8), level=1) == [(2, Audience.PROPERTY_MANAGERS)]
    assert next_escalation_at(T0, at(3), C, notified_level=1) is None


def test_major_escalates_slower_minor_never():
    # Major: 30 min and 2 h.
    assert run_escalation(MA, at(29), level=1) == []
    assert run_escalation(MA, at(30), level=1) == [(2, Audience.PROPERTY_MANAGERS)]
    assert run_escalation(MA, at(120), level=2) == [(3, Audience.POWER_COMPANY)]
    # Minor: the operators are told at once, nobody else ever.
    assert run_escalation(MI, at(0)) == [(1, Audience.COMMUNITY_OPERATORS)]
    assert run_escalation(MI, at(60 * 24 * 7), level=1) == []
    assert next_escalation_at(T0, None, MI, notified_level=1) is None
    assert next_escalation_at(T0, None, MA, notified_level=1) == at(30)


def test_severity_raised_by_folding_uses_the_faster_ladder():
    # Opened major at T0, operators told; at 10 min it folds to critical: the critical
    # level 2 (due at T0 + 5 min) is due at once.
    assert run_escalation(C, at(10), level=1) == [(2, Audience.PROPERTY_MANAGERS)]


def test_escalation_plan_and_config():
    fast = SafetyConfig(escalation={C: (timedelta(0), timedelta(minutes=1))})
    assert [s.due_at for s in escalation_plan(T0, C, fast)] == [T0, at(1)]
    assert escalation_plan(T0, MA, fast) == ()  # not configured: never
    with pytest.raises(ConfigurationError):
        SafetyConfig(escalation={C: (timedelta(minutes=5), timedelta(minutes=1))})
    with pytest.raises(ConfigurationError):
        SafetyConfig(escalation={C: (timedelta(0),) * 4})
    with pytest.raises(ConfigurationError):
        SafetyConfig(temp_warning_dc=800)
    with pytest.raises(ConfigurationError):
        SafetyConfig(max_ebike_power_w=1200.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        escalation_due(T0, None, C, datetime(2025, 3, 3, 20, 0))  # naive


# --------------------------------------------------------------------------- properties

ALL_KINDS = list(AlarmKind) + list(ConditionKind)

keys = st.tuples(st.sampled_from(["P0001", "P0002"]), st.sampled_from([None, 1, 2]),
                st.sampled_from(ALL_KINDS))


fields = st.tuples(
    st.integers(0, 2),  # which key of the pool
    st.booleans(),  # cleared?
    st.integers(0, 600),  # minute
    st.sampled_from([None, *Severity]),  # reported severity
    st.booleans(),  # cut_off
    st.one_of(st.none(), st.integers(600, 800)),  # value (deci-°C for temperatures)
)


@st.composite
def scenario(draw, *, raised_only: bool = False, max_size: int = 8):
    """A history of events and one more, over a pool of three incident keys (possibly
    equal) so that most events fall on the same incident: random keys would almost never
    collide."""
    pool = draw(st.lists(keys, min_size=3, max_size=3))
    drawn = draw(st.lists(fields, min_size=1, max_size=max_size + 1))
    evs = [
        SafetyEvent(*pool[i], AlarmState.CLEARED if cleared and not raised_only
                    else AlarmState.RAISED, at(minute), severity, cut_off, value)
        for i, cleared, minute, severity, cut_off, value in drawn
    ]
    return evs[:-1], evs[-1]


FAST = settings(max_examples=60, deadline=None)


def fold_all(evs, start=None):
    open_ = dict(start or {})
    for e in evs:
        open_ = POLICY.apply(open_, POLICY.fold(open_, e))
    return open_


@FAST
@given(scenario())
def test_folding_is_idempotent(case):
    history, event = case
    open_ = fold_all(history)
    once = POLICY.apply(open_, POLICY.fold(open_, event))
    twice = POLICY.apply(once, POLICY.fold(once, event))
    assert twice == once


@FAST
@given(scenario())
def test_severity_never_decreases_through_folding(case):
    history, event = case
    open_ = fold_all(history)
    after = POLICY.apply(open_, POLICY.fold(open_, event))
    assert set(open_) <= set(after)
    for key, view in open_.items():
        assert after[key].severity.rank >= view.severity.rank


@FAST
@given(scenario(raised_only=True, max_size=6), st.randoms(use_true_random=False))
def test_raises_fold_to_the_same_incidents_in_any_order(case, rnd):
    evs = [*case[0], case[1]]
    shuffled = list(evs)
    rnd.shuffle(shuffled)
    assert fold_all(shuffled) == fold_all(evs)


_SCOPE_RANK = {StopScope.NONE: 0, StopScope.PORT: 1, StopScope.PILE: 2}


@FAST
@given(scenario(raised_only=True))
def test_folding_never_stops_less_than_the_event_alone(case):
    history, event = case
    decision = POLICY.fold(fold_all(history), event)
    assert _SCOPE_RANK[decision.stop] >= _SCOPE_RANK[POLICY.stop_for(event)]


@FAST
@given(st.sampled_from(list(Severity)), st.integers(0, 300), st.integers(0, 300))
def test_escalation_level_is_monotone_in_time(severity, m1, m2):
    early, late = sorted((m1, m2))
    sent_early = run_escalation(severity, at(early))
    sent_late = run_escalation(severity, at(late))
    assert sent_late[: len(sent_early)] == sent_early
    assert [lvl for lvl, _ in sent_late] == list(range(1, len(sent_late) + 1))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 15), st.integers(200, 800)), min_size=1,
                max_size=10, unique_by=lambda sample: sample[0]))
def test_detect_is_pure_and_order_independent(samples):
    readings = [rd(m, temp=t, power=t * 2) for m, t in samples]
    assert detect(readings) == detect(list(reversed(readings)))
    assert detect(readings) == detect(readings)


def test_every_kind_has_policy():
    for kind, severity in itertools.product(ALL_KINDS, Severity):
        stop_scope(severity, kind, False, 1)
        classify(kind, reported=severity)

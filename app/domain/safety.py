"""Safety: how serious an alarm is, which ports to stop, when to escalate, and the
platform's own detectors over a port's meter readings.

Fire prevention is why this platform exists: e-bike batteries charged in the corridors and
sheds of residential buildings are a leading cause of fires in China. Everything here is a
pure function of its arguments (stdlib only: no Flask, SQLAlchemy or MQTT), so the MQTT
bridge can decide to stop a port *before* it touches the database, the web app can show the
same rules, and the rules can be reviewed in one place.

Units are those of the pile protocol (``docs/protocol.md``): temperature integer deci-°C
(``temp_dc``: 312 = 31.2 °C), power W, energy Wh, current mA. Times are timezone-aware
``datetime`` objects; naive ones are refused.

Severity policy
---------------
The platform derives a *floor* from the kind of the alarm or condition. A severity reported
by the pile (or by a detector) can only **raise** it, never lower it:
``severity = max(floor, reported)`` (see :func:`classify`). A pile firmware that under-rates
smoke as ``minor`` therefore still gets a critical incident.

=========================  ===========  ===================================================
kind                       floor        reason
=========================  ===========  ===================================================
smoke                      critical     something is burning or about to; seconds count.
short_circuit              critical     arcing ignites cable insulation and battery packs,
                                        and may have welded the port's relay.
leakage                    critical     residual current means a person touching the bike
                                        can be electrocuted, and insulation breakdown
                                        precedes fire (wet sheds, rain-soaked bikes).
over_temperature           major;       hot sockets degrade insulation; at or above
                           critical at  ``temp_critical_dc`` (70.0 °C) plastics soften and a
                           ``value >=`` nearby lithium pack may go into thermal runaway. An
                           70.0 °C or   alarm without a value is treated as the worst case.
                           value null
overcurrent, overload      major;       the charger draws more than the port (or pile) is
                           critical if  rated for: a failing or modified charger, or a non-
                           ``cut_off``  bike load (a heater). If the pile had to cut power its
                                        protection tripped, the port is in ``fault``, and
                                        someone must look before it is used again.
plug_fault                 minor        a badly seated or damaged plug; it can heat, but the
                                        pile's temperature sensor raises over_temperature
                                        if it does.
pile_offline               minor;       we are blind to a pile's alarms while it is offline,
                           major while  which matters only while a battery is charging on it
                           charging     (the pile keeps charging within its limits).
meter_backwards            minor        money, not fire: billing never follows a counter
                                        down (protocol §6.3); the board needs checking.
abnormal_power             major        over ``max_ebike_power_w`` (1,200 W) sustained is not
                                        an e-bike charger (those draw 100-600 W); power with
                                        no session means a welded relay or tampering, i.e.
                                        the pile may not be able to cut power.
temperature_rising_fast    major;       > 1.5 °C/min while charging, or >= 60.0 °C: the
                           critical at  precursor of thermal runaway, before the pile's own
                           70.0 °C      limit trips; at 70.0 °C the pile should already have
                                        cut off and did not, so the platform must.
energy_without_session     major        energy flowing with nobody paying: tampering or a
                                        welded relay (same hazard as above).
=========================  ===========  ===================================================

Stop policy (:func:`must_stop_port`, :func:`stop_scope`)
--------------------------------------------------------
* Every **critical** incident stops the affected port(s), even when the pile says it has
  already cut off (``cut_off``): the stop command is idempotent, confirms the cut and makes
  the platform settle the session with reason ``alarm``.
* ``overcurrent``, ``overload``, ``abnormal_power`` and ``temperature_rising_fast`` stop the
  port at any severity: the load is wrong or heating and the pile has not (or not yet)
  acted. Stopping costs a user a charge; not stopping may cost a building.
* ``smoke`` stops **all** ports of the pile even when the pile names a port (a smoke sensor
  cannot tell which socket burns; every port feeds the fire), and any stop for an alarm with
  ``port`` null (the whole pile) stops all ports.
* Nothing else stops a port (plug_fault, pile_offline, meter_backwards,
  energy_without_session): they are reported to people. The stop decision never depends on
  whether an incident is already open -- folding de-duplicates incidents, never stops.

Incident folding (:class:`IncidentPolicy`)
------------------------------------------
An incident is identified by ``(pile_id, port_no | None, kind)`` (:func:`incident_key`).
Repeated alarms, the same alarm re-sent after a reconnect or reboot, and a ``raised`` while
an incident is open all fold into the ONE open (or acknowledged) incident; its severity is
the maximum seen, ``opened_at`` the earliest raise and ``last_raised_at`` the latest, so the
result does not depend on the order messages arrive in and feeding an event twice changes
nothing. A ``cleared`` from the pile never closes an incident -- a person resolves it -- but
is recorded (``last_cleared_at``). A ``cleared`` with no open incident is ignored (the alarm
row is still stored by the caller). After an incident is resolved, the next ``raised``
opens a new one.

Escalation (:func:`escalation_due`)
-----------------------------------
=========  ===============================  =========  =======  ==========
level      audience                         critical   major    minor
=========  ===============================  =========  =======  ==========
1          the community's operators        at once    at once  at once
2          the property company's managers  5 min      30 min   never
3          the power company                15 min     2 h      never
=========  ===============================  =========  =======  ==========

Delays count from ``opened_at`` (when the pile raised the alarm, not when it reached us: an
alarm delayed by a long outage catches up level by level, because nobody knew). An
acknowledgement stops further escalation; a severity raised by folding applies the faster
ladder from the same ``opened_at``. Lifecycle: open -> acknowledged -> resolved
(:func:`transition`); anything else raises :class:`app.domain.errors.Conflict`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import pairwise
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from app.domain.errors import ConfigurationError, Conflict
from app.domain.telemetry import OFFLINE_AFTER_KEEPALIVES, is_silent

__all__ = [
    "DEFAULT_CONFIG",
    "DETECTORS",
    "ESCALATION_AUDIENCES",
    "SEVERITY_FLOOR",
    "STOP_KINDS",
    "AlarmKind",
    "AlarmState",
    "Audience",
    "Condition",
    "ConditionKind",
    "Decision",
    "Detector",
    "EscalationStep",
    "FoldAction",
    "IncidentAction",
    "IncidentKey",
    "IncidentKind",
    "IncidentPolicy",
    "IncidentState",
    "IncidentView",
    "Reading",
    "SafetyConfig",
    "SafetyEvent",
    "Severity",
    "StopScope",
    "classify",
    "detect",
    "detect_energy_without_session",
    "detect_excess_power",
    "detect_meter_backwards",
    "detect_pile_offline",
    "detect_power_without_session",
    "detect_temperature",
    "escalation_due",
    "escalation_plan",
    "incident_key",
    "max_severity",
    "must_stop_port",
    "next_escalation_at",
    "parse_kind",
    "stop_scope",
    "transition",
]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_MINUTE: Final = 60_000_000


# --------------------------------------------------------------------------- vocabulary


class Severity(StrEnum):
    """Compare with :attr:`rank` (or :func:`max_severity`), never with ``<``: the members
    are strings and would compare alphabetically."""

    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"

    @property
    def rank(self) -> int:
        """minor 1 < major 2 < critical 3."""
        return _RANK[self]


_RANK: Final = {Severity.MINOR: 1, Severity.MAJOR: 2, Severity.CRITICAL: 3}


def max_severity(first: Severity, *others: Severity | None) -> Severity:
    """The most serious of the given severities (``None`` is ignored)."""
    best = first
    for other in others:
        if other is not None and other.rank > best.rank:
            best = other
    return best


class AlarmKind(StrEnum):
    """Alarm kinds a pile reports (protocol §9.6)."""

    OVER_TEMPERATURE = "over_temperature"
    OVERCURRENT = "overcurrent"
    OVERLOAD = "overload"
    SHORT_CIRCUIT = "short_circuit"
    SMOKE = "smoke"
    LEAKAGE = "leakage"
    PLUG_FAULT = "plug_fault"


class ConditionKind(StrEnum):
    """Conditions the platform detects itself."""

    PILE_OFFLINE = "pile_offline"
    METER_BACKWARDS = "meter_backwards"
    ABNORMAL_POWER = "abnormal_power"
    TEMPERATURE_RISING_FAST = "temperature_rising_fast"
    ENERGY_WITHOUT_SESSION = "energy_without_session"


IncidentKind = AlarmKind | ConditionKind


def parse_kind(kind: str) -> IncidentKind:
    """``"smoke"`` -> ``AlarmKind.SMOKE``; unknown names raise ``ValueError``."""
    if isinstance(kind, AlarmKind | ConditionKind):
        return kind
    for enum in (AlarmKind, ConditionKind):
        try:
            return enum(kind)
        except ValueError:
            pass
    raise ValueError(f"unknown incident kind {kind!r}")


class AlarmState(StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"


class IncidentState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class IncidentAction(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"


class StopScope(StrEnum):
    NONE = "none"  # stop nothing
    PORT = "port"  # stop the port the alarm names
    PILE = "pile"  # stop every port of the pile


class FoldAction(StrEnum):
    OPEN = "open"  # open a new incident
    FOLD = "fold"  # fold into the existing open incident
    RECORD_CLEAR = "record_clear"  # the pile says it is gone: record, keep the incident open
    IGNORE = "ignore"  # nothing to do with incidents (a clear with no open incident)


class Audience(StrEnum):
    COMMUNITY_OPERATORS = "community_operators"
    PROPERTY_MANAGERS = "property_managers"
    POWER_COMPANY = "power_company"


ESCALATION_AUDIENCES: Final = (
    Audience.COMMUNITY_OPERATORS,  # level 1
    Audience.PROPERTY_MANAGERS,  # level 2
    Audience.POWER_COMPANY,  # level 3
)

SEVERITY_FLOOR: Final[Mapping[IncidentKind, Severity]] = MappingProxyType(
    {
        AlarmKind.SMOKE: Severity.CRITICAL,
        AlarmKind.SHORT_CIRCUIT: Severity.CRITICAL,
        AlarmKind.LEAKAGE: Severity.CRITICAL,
        AlarmKind.OVER_TEMPERATURE: Severity.MAJOR,  # critical at temp_critical_dc
        AlarmKind.OVERCURRENT: Severity.MAJOR,  # critical when the pile cut off
        AlarmKind.OVERLOAD: Severity.MAJOR,  # critical when the pile cut off
        AlarmKind.PLUG_FAULT: Severity.MINOR,
        ConditionKind.PILE_OFFLINE: Severity.MINOR,  # the detector says major while charging
        ConditionKind.METER_BACKWARDS: Severity.MINOR,
        ConditionKind.ABNORMAL_POWER: Severity.MAJOR,
        ConditionKind.TEMPERATURE_RISING_FAST: Severity.MAJOR,  # critical at temp_critical_dc
        ConditionKind.ENERGY_WITHOUT_SESSION: Severity.MAJOR,
    }
)

STOP_KINDS: Final = frozenset(
    {
        AlarmKind.OVERCURRENT,
        AlarmKind.OVERLOAD,
        ConditionKind.ABNORMAL_POWER,
        ConditionKind.TEMPERATURE_RISING_FAST,
    }
)
"""Kinds that stop the port whatever their severity (see the module docstring)."""


# --------------------------------------------------------------------------- configuration


def _minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


def _default_escalation() -> Mapping[Severity, tuple[timedelta, ...]]:
    return MappingProxyType(
        {
            Severity.CRITICAL: (_minutes(0), _minutes(5), _minutes(15)),
            Severity.MAJOR: (_minutes(0), _minutes(30), _minutes(120)),
            Severity.MINOR: (_minutes(0),),
        }
    )


@dataclass(frozen=True)
class SafetyConfig:
    """Thresholds of the detectors and the escalation ladders. Defaults are for e-bike
    piles (single-phase 220 V sockets, chargers of 100-600 W) in residential sheds."""

    window: timedelta = timedelta(minutes=10)
    """Detectors look only at readings this close to the newest one they are given."""

    temp_critical_dc: int = 700
    """70.0 °C at the socket: critical (the protocol example's cut-off threshold)."""
    temp_warning_dc: int = 600
    """60.0 °C: major -- hot enough to look at, below the pile's own cut-off."""
    temp_rise_dc_per_min: int = 15
    """1.5 °C per minute during a charge: faster is ``temperature_rising_fast``."""
    temp_rise_window: timedelta = timedelta(minutes=5)
    """The rate is measured over the charge readings of this last stretch..."""
    temp_rise_min_span: timedelta = timedelta(minutes=2)
    """...which must span at least this long (sensor noise of ±0.5 °C over a few seconds
    would otherwise look like a fast rise)..."""
    temp_rise_min_readings: int = 3
    """...and hold at least this many readings with a temperature."""

    max_ebike_power_w: int = 1200
    """Power above this, sustained, is not an e-bike charger."""
    excess_power_sustain: timedelta = timedelta(minutes=2)
    """How long power must stay above ``max_ebike_power_w`` (first to last reading of an
    unbroken run) before it is abnormal; a charger's inrush is shorter."""
    instant_max_power_w: int = 2000
    """A single reading above this is abnormal at once."""
    idle_power_w: int = 10
    """Power a port may show with no session (metering noise)."""
    no_session_min_readings: int = 2
    """Consecutive no-session readings above ``idle_power_w`` before it is abnormal (one
    reading may race a session's start or end)."""
    energy_without_session_wh: int = 10
    """Energy counted between no-session readings (in the window) above this is
    ``energy_without_session``."""
    meter_backwards_tolerance_wh: int = 0
    """A counter may drop by this much within one boot before it is ``meter_backwards``."""

    escalation: Mapping[Severity, tuple[timedelta, ...]] = field(
        default_factory=_default_escalation
    )
    """Per severity, the delay after ``opened_at`` of level 1, 2, 3 (fewer = stops there)."""

    def __post_init__(self) -> None:
        for name in (
            "temp_critical_dc",
            "temp_warning_dc",
            "temp_rise_dc_per_min",
            "temp_rise_min_readings",
            "max_ebike_power_w",
            "instant_max_power_w",
            "idle_power_w",
            "no_session_min_readings",
            "energy_without_session_wh",
            "meter_backwards_tolerance_wh",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigurationError(f"safety.{name} must be a non-negative integer",
                                         field=name, value=value)
        if self.temp_warning_dc > self.temp_critical_dc:
            raise ConfigurationError("safety.temp_warning_dc must not exceed temp_critical_dc")
        if self.temp_rise_min_readings < 2 or self.no_session_min_readings < 1:
            raise ConfigurationError("safety: too few readings to measure anything")
        for name in ("window", "temp_rise_window", "temp_rise_min_span", "excess_power_sustain"):
            if getattr(self, name) < timedelta(0):
                raise ConfigurationError(f"safety.{name} must not be negative", field=name)
        for severity, ladder in self.escalation.items():
            Severity(severity)
            if len(ladder) > len(ESCALATION_AUDIENCES):
                raise ConfigurationError(
                    f"safety.escalation[{severity}]: at most {len(ESCALATION_AUDIENCES)} levels"
                )
            if any(d < timedelta(0) for d in ladder) or any(
                b < a for a, b in pairwise(ladder)
            ):
                raise ConfigurationError(
                    f"safety.escalation[{severity}]: delays must be non-negative and ascending"
                )


DEFAULT_CONFIG: Final = SafetyConfig()


# --------------------------------------------------------------------------- small helpers


def _aware(name: str, at: object) -> datetime:
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {at!r}")
    return at


def _us(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def _celsius(temp_dc: int) -> str:
    sign = "-" if temp_dc < 0 else ""
    whole, tenth = divmod(abs(temp_dc), 10)
    return f"{sign}{whole}.{tenth} °C"


# --------------------------------------------------------------------------- severity / stop


def classify(
    kind: IncidentKind | str,
    *,
    reported: Severity | str | None = None,
    cut_off: bool = False,
    value: int | None = None,
    config: SafetyConfig = DEFAULT_CONFIG,
) -> Severity:
    """The platform's severity for an alarm or condition (policy table in the module
    docstring). ``reported`` (the pile's or a detector's view) only ever raises it."""
    kind = parse_kind(kind)
    floor = SEVERITY_FLOOR[kind]
    hot = value is not None and value >= config.temp_critical_dc
    if (
        (kind is AlarmKind.OVER_TEMPERATURE and (value is None or hot))
        or (kind is ConditionKind.TEMPERATURE_RISING_FAST and hot)
        or (kind in (AlarmKind.OVERCURRENT, AlarmKind.OVERLOAD) and cut_off)
    ):
        floor = Severity.CRITICAL
    return max_severity(floor, Severity(reported) if reported is not None else None)


def must_stop_port(severity: Severity | str, kind: IncidentKind | str, cut_off: bool) -> bool:
    """Must the platform send ``stop`` for the affected port(s)? Critical: always (also when
    the pile has cut off: the command confirms it and settles the session with reason
    ``alarm``). The kinds in :data:`STOP_KINDS`: always. Otherwise no. ``cut_off`` matters
    through the severity (:func:`classify`, which makes a cut-off overcurrent critical); it
    never *prevents* a stop."""
    return Severity(severity) is Severity.CRITICAL or parse_kind(kind) in STOP_KINDS


def stop_scope(
    severity: Severity | str, kind: IncidentKind | str, cut_off: bool, port_no: int | None
) -> StopScope:
    """Which ports to stop: none, the named port, or every port of the pile (smoke always;
    any stop for a whole-pile alarm, ``port_no`` None)."""
    if not must_stop_port(severity, kind, cut_off):
        return StopScope.NONE
    if port_no is None or parse_kind(kind) is AlarmKind.SMOKE:
        return StopScope.PILE
    return StopScope.PORT


# --------------------------------------------------------------------------- events, incidents


class IncidentKey(NamedTuple):
    pile_id: str
    port_no: int | None
    kind: IncidentKind


def incident_key(pile_id: str, port_no: int | None, kind: IncidentKind | str) -> IncidentKey:
    """The identity duplicates fold on. A whole-pile alarm (``port_no`` None) and a port's
    alarm of the same kind are different incidents."""
    if port_no is not None and (isinstance(port_no, bool) or port_no < 1):
        raise ValueError(f"port_no must be >= 1 or None, got {port_no!r}")
    return IncidentKey(pile_id, port_no, parse_kind(kind))


@dataclass(frozen=True, slots=True)
class SafetyEvent:
    """One alarm from a pile, or a condition the platform detected, about to be folded.

    ``severity`` is what the source says (the pile's ``severity``, or the detector's); the
    policy may raise it. ``at`` is when it happened (the pile's ``ts``).
    """

    pile_id: str
    port_no: int | None
    kind: IncidentKind
    state: AlarmState
    at: datetime
    severity: Severity | None = None
    cut_off: bool = False
    value: int | None = None
    threshold: int | None = None
    session_ref: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", parse_kind(self.kind))
        object.__setattr__(self, "state", AlarmState(self.state))
        if self.severity is not None:
            object.__setattr__(self, "severity", Severity(self.severity))
        _aware("at", self.at)

    @property
    def key(self) -> IncidentKey:
        return incident_key(self.pile_id, self.port_no, self.kind)

    @classmethod
    def from_alarm(cls, pile_id: str, body: Mapping[str, Any]) -> SafetyEvent:
        """From a validated ``alarm`` uplink (protocol §9.6); ``ts`` is unix ms."""
        return cls(
            pile_id=pile_id,
            port_no=body["port"],
            kind=AlarmKind(body["kind"]),
            state=AlarmState(body["state"]),
            at=_EPOCH + timedelta(milliseconds=body["ts"]),
            severity=Severity(body["severity"]),
            cut_off=bool(body["cut_off"]),
            value=body.get("value"),
            threshold=body.get("threshold"),
            session_ref=body.get("session_id"),
        )


@dataclass(frozen=True, slots=True)
class IncidentView:
    """What folding needs to know about an incident that is open or acknowledged.

    Every field is a join (max, min, or): folding is idempotent and, for raises, does not
    depend on arrival order.
    """

    key: IncidentKey
    severity: Severity
    opened_at: datetime
    last_raised_at: datetime
    state: IncidentState = IncidentState.OPEN
    last_cleared_at: datetime | None = None
    cut_off: bool = False

    @property
    def cleared_by_pile(self) -> bool:
        """The pile's latest word is ``cleared`` (shown to the operator; closes nothing)."""
        return self.last_cleared_at is not None and self.last_cleared_at >= self.last_raised_at


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one event. ``incident`` is the incident as it must be stored after
    the event (None when ignored); ``stop`` is independent of whether it folded."""

    action: FoldAction
    key: IncidentKey
    incident: IncidentView | None
    previous: IncidentView | None
    stop: StopScope
    reason: str

    @property
    def changed(self) -> bool:
        return self.incident != self.previous

    @property
    def severity_raised(self) -> bool:
        """A folded event made the incident more serious: notify again (the faster ladder
        applies from the same ``opened_at``)."""
        return (
            self.previous is not None
            and self.incident is not None
            and self.incident.severity.rank > self.previous.severity.rank
        )


@dataclass(frozen=True)
class IncidentPolicy:
    """The folding and stop rules with one :class:`SafetyConfig`. Pure: no I/O."""

    config: SafetyConfig = DEFAULT_CONFIG

    def severity_of(self, event: SafetyEvent) -> Severity:
        return classify(
            event.kind,
            reported=event.severity,
            cut_off=event.cut_off,
            value=event.value,
            config=self.config,
        )

    @staticmethod
    def must_stop_port(severity: Severity | str, kind: IncidentKind | str, cut_off: bool) -> bool:
        return must_stop_port(severity, kind, cut_off)

    @staticmethod
    def stop_scope(
        severity: Severity | str, kind: IncidentKind | str, cut_off: bool, port_no: int | None
    ) -> StopScope:
        return stop_scope(severity, kind, cut_off, port_no)

    def stop_for(self, event: SafetyEvent) -> StopScope:
        """The fast path: what to stop for this event alone, with no incident state (the
        bridge calls this before anything that could fail). ``cleared`` stops nothing."""
        if event.state is AlarmState.CLEARED:
            return StopScope.NONE
        return stop_scope(self.severity_of(event), event.kind, event.cut_off, event.port_no)

    def fold(self, open_incidents: Mapping[IncidentKey, IncidentView], event: SafetyEvent
             ) -> Decision:
        """Open a new incident, fold into the open one, record a clear, or ignore.

        ``open_incidents`` holds the pile's incidents that are open or acknowledged (a
        resolved one found there is treated as absent). A raise folded into an incident that
        is already critical stops the port again: a repeat of a critical alarm means power
        may be flowing again.
        """
        key = event.key
        current = open_incidents.get(key)
        if current is not None and current.state is IncidentState.RESOLVED:
            current = None

        if event.state is AlarmState.CLEARED:
            if current is None:
                return Decision(FoldAction.IGNORE, key, None, None, StopScope.NONE,
                                "cleared without an open incident: recorded as an event only")
            cleared_at = (event.at if current.last_cleared_at is None
                          else max(current.last_cleared_at, event.at))
            after = replace(current, last_cleared_at=cleared_at)
            return Decision(FoldAction.RECORD_CLEAR, key, after, current, StopScope.NONE,
                            "the pile reports the condition cleared; a person resolves it")

        severity = self.severity_of(event)
        if current is None:
            incident = IncidentView(key=key, severity=severity, opened_at=event.at,
                                    last_raised_at=event.at, cut_off=event.cut_off)
            stop = stop_scope(severity, event.kind, event.cut_off, event.port_no)
            return Decision(FoldAction.OPEN, key, incident, None, stop,
                            f"new {severity} incident")
        after = replace(
            current,
            severity=max_severity(current.severity, severity),
            opened_at=min(current.opened_at, event.at),
            last_raised_at=max(current.last_raised_at, event.at),
            cut_off=current.cut_off or event.cut_off,
        )
        stop = stop_scope(after.severity, event.kind, event.cut_off, event.port_no)
        reason = ("folded into the open incident; severity raised to "
                  f"{after.severity}" if after.severity is not current.severity
                  else "folded into the open incident")
        return Decision(FoldAction.FOLD, key, after, current, stop, reason)

    @staticmethod
    def apply(open_incidents: Mapping[IncidentKey, IncidentView], decision: Decision
              ) -> dict[IncidentKey, IncidentView]:
        """The open incidents after ``decision`` (a new dict; the input is not changed)."""
        result = dict(open_incidents)
        if decision.incident is not None:
            result[decision.key] = decision.incident
        return result


# --------------------------------------------------------------------------- lifecycle

_TRANSITIONS: Final = MappingProxyType(
    {
        (IncidentState.OPEN, IncidentAction.ACKNOWLEDGE): IncidentState.ACKNOWLEDGED,
        (IncidentState.ACKNOWLEDGED, IncidentAction.RESOLVE): IncidentState.RESOLVED,
    }
)


def transition(state: IncidentState | str, action: IncidentAction | str) -> IncidentState:
    """open --acknowledge--> acknowledged --resolve--> resolved. Anything else (acknowledge
    twice, resolve before acknowledging, touch a resolved incident) raises ``Conflict``."""
    state, action = IncidentState(state), IncidentAction(action)
    after = _TRANSITIONS.get((state, action))
    if after is None:
        allowed = sorted(a for (s, a) in _TRANSITIONS if s is state)
        raise Conflict(f"cannot {action} an incident that is {state}",
                       state=str(state), action=str(action), allowed=allowed)
    return after


# --------------------------------------------------------------------------- escalation


@dataclass(frozen=True, slots=True)
class EscalationStep:
    level: int  # 1, 2, 3
    audience: Audience
    due_at: datetime


def escalation_plan(
    opened_at: datetime, severity: Severity | str, config: SafetyConfig = DEFAULT_CONFIG
) -> tuple[EscalationStep, ...]:
    """Every step of the ladder for ``severity``, with its due time."""
    _aware("opened_at", opened_at)
    ladder = config.escalation.get(Severity(severity), ())
    return tuple(
        EscalationStep(level, audience, opened_at + delay)
        for level, (audience, delay) in enumerate(zip(ESCALATION_AUDIENCES, ladder,
                                                      strict=False), start=1)
    )


def escalation_due(
    incident_opened_at: datetime,
    acknowledged_at: datetime | None,
    severity: Severity | str,
    now: datetime,
    config: SafetyConfig = DEFAULT_CONFIG,
    *,
    notified_level: int = 0,
) -> EscalationStep | None:
    """The lowest step above ``notified_level`` whose time has come, or None.

    None once acknowledged (``acknowledged_at <= now``). The caller sends the step, stores
    its level and asks again, so a scheduler that was down catches up level by level and
    never skips an audience: ``while step := escalation_due(..., notified_level=level)``.
    """
    _aware("now", now)
    if acknowledged_at is not None and _aware("acknowledged_at", acknowledged_at) <= now:
        return None
    for step in escalation_plan(incident_opened_at, severity, config):
        if step.level > notified_level:
            return step if step.due_at <= now else None
    return None


def next_escalation_at(
    incident_opened_at: datetime,
    acknowledged_at: datetime | None,
    severity: Severity | str,
    config: SafetyConfig = DEFAULT_CONFIG,
    *,
    notified_level: int = 0,
) -> datetime | None:
    """When the next step falls due (for a scheduler); None if acknowledged or none left."""
    if acknowledged_at is not None:
        return None
    for step in escalation_plan(incident_opened_at, severity, config):
        if step.level > notified_level:
            return step.due_at
    return None


# --------------------------------------------------------------------------- detectors


@dataclass(frozen=True, slots=True)
class Reading:
    """One meter reading of one port (protocol §9.5). ``session_ref`` is the reading's
    ``session_id`` or ``local_id`` (None: no session on the port); ``boot_id`` is the boot
    of the message that carried it (None: unknown, assumed the same boot)."""

    at: datetime
    energy_wh: int
    power_w: int
    temp_dc: int | None
    current_ma: int
    session_ref: str | None = None
    boot_id: str | None = None


@dataclass(frozen=True, slots=True)
class Condition:
    """A detector's finding about one port. ``at`` is the reading that proved it; ``value``
    and ``threshold`` are in the unit of the kind (deci-°C, W, Wh)."""

    kind: ConditionKind
    severity: Severity
    at: datetime
    reason: str
    value: int | None = None
    threshold: int | None = None
    figures: Mapping[str, int] = field(default_factory=dict, hash=False)

    def event(self, pile_id: str, port_no: int | None, session_ref: str | None = None
              ) -> SafetyEvent:
        """As a ``raised`` event for :meth:`IncidentPolicy.fold`."""
        return SafetyEvent(pile_id=pile_id, port_no=port_no, kind=self.kind,
                           state=AlarmState.RAISED, at=self.at, severity=self.severity,
                           value=self.value, threshold=self.threshold, session_ref=session_ref)


Detector = Callable[[Sequence[Reading], SafetyConfig], Condition | None]


def _recent(readings: Iterable[Reading], config: SafetyConfig) -> list[Reading]:
    """Sorted by the pile's time (arrival order is not reliable, protocol §6.3) and cut to
    ``config.window`` before the newest reading."""
    ordered = sorted(readings, key=lambda r: _aware("reading.at", r.at))
    if not ordered:
        return []
    since = ordered[-1].at - config.window
    return [r for r in ordered if r.at >= since]


def detect_meter_backwards(readings: Sequence[Reading], config: SafetyConfig = DEFAULT_CONFIG
                           ) -> Condition | None:
    """The cumulative counter decreased between two readings of the same boot (minor).

    Pairs across boots are skipped: a lower counter after a reboot is a replaced metering
    board, which the caller handles separately (protocol §6.3).
    """
    found = None
    for a, b in pairwise(_recent(readings, config)):
        if a.boot_id is not None and b.boot_id is not None and a.boot_id != b.boot_id:
            continue
        drop = a.energy_wh - b.energy_wh
        if drop > config.meter_backwards_tolerance_wh:
            found = Condition(
                ConditionKind.METER_BACKWARDS, Severity.MINOR, b.at,
                f"counter went back {drop} Wh ({a.energy_wh} -> {b.energy_wh} Wh)",
                value=b.energy_wh, threshold=a.energy_wh,
                figures={"from_wh": a.energy_wh, "to_wh": b.energy_wh, "drop_wh": drop},
            )
    return found


def detect_excess_power(readings: Sequence[Reading], config: SafetyConfig = DEFAULT_CONFIG
                        ) -> Condition | None:
    """Power above ``max_ebike_power_w`` for an unbroken run of readings spanning at least
    ``excess_power_sustain``, or one reading above ``instant_max_power_w`` (major)."""
    found = None
    run_start: Reading | None = None
    for r in _recent(readings, config):
        if r.power_w > config.instant_max_power_w:
            found = Condition(
                ConditionKind.ABNORMAL_POWER, Severity.MAJOR, r.at,
                f"{r.power_w} W, above the instant limit of {config.instant_max_power_w} W",
                value=r.power_w, threshold=config.instant_max_power_w,
                figures={"power_w": r.power_w},
            )
        if r.power_w > config.max_ebike_power_w:
            run_start = run_start or r
            span = r.at - run_start.at
            if span >= config.excess_power_sustain and r is not run_start:
                found = Condition(
                    ConditionKind.ABNORMAL_POWER, Severity.MAJOR, r.at,
                    f"above {config.max_ebike_power_w} W for {int(span.total_seconds())} s "
                    f"(now {r.power_w} W): not an e-bike charger",
                    value=r.power_w, threshold=config.max_ebike_power_w,
                    figures={"power_w": r.power_w, "sustained_s": int(span.total_seconds())},
                )
        else:
            run_start = None
    return found


def detect_power_without_session(
    readings: Sequence[Reading], config: SafetyConfig = DEFAULT_CONFIG
) -> Condition | None:
    """``no_session_min_readings`` consecutive readings with no session and power above
    ``idle_power_w`` (major): the pile feeds a load nobody started."""
    found = None
    run = 0
    for r in _recent(readings, config):
        if r.session_ref is None and r.power_w > config.idle_power_w:
            run += 1
            if run >= config.no_session_min_readings:
                found = Condition(
                    ConditionKind.ABNORMAL_POWER, Severity.MAJOR, r.at,
                    f"{r.power_w} W with no session for {run} readings",
                    value=r.power_w, threshold=config.idle_power_w,
                    figures={"power_w": r.power_w, "readings": run},
                )
        else:
            run = 0
    return found


def detect_energy_without_session(
    readings: Sequence[Reading], config: SafetyConfig = DEFAULT_CONFIG
) -> Condition | None:
    """The counter advanced by more than ``energy_without_session_wh`` between readings that
    both have no session (major). Advances into or out of a session belong to it."""
    total = 0
    last: Reading | None = None
    for a, b in pairwise(_recent(readings, config)):
        if a.session_ref is None and b.session_ref is None and b.energy_wh > a.energy_wh:
            total += b.energy_wh - a.energy_wh
            last = b
    if last is None or total <= config.energy_without_session_wh:
        return None
    return Condition(
        ConditionKind.ENERGY_WITHOUT_SESSION, Severity.MAJOR, last.at,
        f"{total} Wh counted with no session", value=total,
        threshold=config.energy_without_session_wh, figures={"energy_wh": total},
    )


def detect_temperature(readings: Sequence[Reading], config: SafetyConfig = DEFAULT_CONFIG
                       ) -> Condition | None:
    """``temperature_rising_fast``, most serious finding first:

    1. the hottest reading in the window is at or above ``temp_critical_dc`` -> critical;
    2. ... at or above ``temp_warning_dc`` -> major (both with or without a session: heat
       is heat);
    3. during a charge, over the readings of the last ``temp_rise_window`` (at least
       ``temp_rise_min_readings`` with a temperature, spanning ``temp_rise_min_span``), the
       average rise first -> last exceeds ``temp_rise_dc_per_min`` -> major. Compared in
       integers: ``rise_dc * 60 s > rate * span``.
    """
    recent = _recent(readings, config)
    hot = [r for r in recent if r.temp_dc is not None]
    if not hot:
        return None
    hottest = max(hot, key=lambda r: (r.temp_dc, r.at))
    temp = hottest.temp_dc
    assert temp is not None
    for limit, severity in ((config.temp_critical_dc, Severity.CRITICAL),
                            (config.temp_warning_dc, Severity.MAJOR)):
        if temp >= limit:
            return Condition(
                ConditionKind.TEMPERATURE_RISING_FAST, severity, hottest.at,
                f"socket at {_celsius(temp)}, limit {_celsius(limit)}",
                value=temp, threshold=limit, figures={"temp_dc": temp},
            )
    charging = [r for r in hot if r.session_ref is not None]
    if not charging:
        return None
    stretch = [r for r in charging if r.at >= charging[-1].at - config.temp_rise_window]
    first, last = stretch[0], stretch[-1]
    span_us = _us(last.at - first.at)
    if len(stretch) < config.temp_rise_min_readings or span_us < _us(config.temp_rise_min_span):
        return None
    assert first.temp_dc is not None and last.temp_dc is not None
    rise = last.temp_dc - first.temp_dc
    if rise * _US_PER_MINUTE <= config.temp_rise_dc_per_min * span_us:
        return None
    per_min_dc = rise * _US_PER_MINUTE // span_us  # for the message only
    return Condition(
        ConditionKind.TEMPERATURE_RISING_FAST, Severity.MAJOR, last.at,
        f"rising {_celsius(per_min_dc)}/min ({_celsius(first.temp_dc)} -> "
        f"{_celsius(last.temp_dc)} in {span_us // 1_000_000} s) while charging",
        value=last.temp_dc, threshold=config.temp_rise_dc_per_min,
        figures={"from_dc": first.temp_dc, "to_dc": last.temp_dc, "rise_dc": rise,
                 "span_s": span_us // 1_000_000},
    )


DETECTORS: Final[tuple[Detector, ...]] = (
    detect_temperature,
    detect_excess_power,
    detect_power_without_session,
    detect_energy_without_session,
    detect_meter_backwards,
)


def detect(
    readings: Sequence[Reading],
    config: SafetyConfig = DEFAULT_CONFIG,
    detectors: Sequence[Detector] = DETECTORS,
) -> list[Condition]:
    """Run every detector over one port's recent readings; the findings, most severe first
    (equal severities keep the detector order above)."""
    found = [c for d in detectors if (c := d(readings, config)) is not None]
    return sorted(found, key=lambda c: -c.severity.rank)


def detect_pile_offline(
    last_seen: datetime | None, keepalive_s: int, now: datetime, *, charging_ports: int = 0
) -> Condition | None:
    """Nothing from the pile for 1.5 × keepalive (:func:`app.domain.telemetry.is_silent`):
    minor, major while sessions were running on it. ``at`` is when it went silent."""
    _aware("now", now)
    if not is_silent(last_seen, keepalive_s, now):
        return None
    at = now if last_seen is None else last_seen + timedelta(
        seconds=keepalive_s * OFFLINE_AFTER_KEEPALIVES)
    severity = Severity.MAJOR if charging_ports > 0 else Severity.MINOR
    return Condition(
        ConditionKind.PILE_OFFLINE, severity, at,
        f"silent for more than {OFFLINE_AFTER_KEEPALIVES} × {keepalive_s} s"
        + (f" with {charging_ports} port(s) charging" if charging_ports else ""),
        figures={"keepalive_s": keepalive_s, "charging_ports": charging_ports},
    )

"""Incidents: safety alarms and detected conditions, folded, notified, escalated, closed.

The rules are ``app.domain.safety``'s (severity, folding, stop scope, escalation ladder,
lifecycle, detectors); this module applies them to the database.

Where incidents come from
-------------------------
* **Pile alarms** (``alarm`` uplinks): :func:`on_alarm_incident`, inside the bridge's batch
  transaction, after ``app.services.charging.on_alarm_stop`` has already queued the stop.
* **Conditions over meter readings** (meter going backwards, abnormal power, temperature
  rising fast, energy without a session): :func:`collect_readings` notes each batch's
  readings, :func:`detect_conditions` (a batch hook) runs the domain detectors over the
  recent readings of the few ports that could have something to report (see
  :func:`_prefilter`: most batches load nothing), stops the port when the policy says so,
  and folds the findings.
* **Pile offline**: the pile's will (:func:`on_offline_incident`) at once, and piles that
  went silent (``telemetry.mark_silent_piles_offline``) through the job
  :func:`open_offline_incidents`. ``online`` records a clear.
* **Loss periods**: ``app.services.loss`` calls :func:`open_loss_incident`.

Nothing here can hold up a stop
-------------------------------
Every piece of incident work in the bridge runs in its own SAVEPOINT and any exception is
logged, counted (``incident_failures``) and rolled back to that savepoint only: the alarm
row, the stop command and the rest of the batch commit regardless. Notifications are rows
queued in the same transaction and sent after the commit by another thread
(``app.notify.dispatcher``) and retried by the jobs process
(``app.services.notifications.deliver_due``), so a slow or broken notifier never touches
the batch.

Notifications and escalation
----------------------------
Levels come from :func:`app.domain.safety.escalation_due` with the ladders of the settings
(``ESCALATION_*_MINUTES``), counted from ``min(opened_at, created_at)``: from when the pile
says it happened, but never later than when we learnt of it (a pile clock running ahead
must not delay a fire alarm). Level 1 (delay 0) goes out with the transaction that opens
the incident. Audiences: 1) the community's property operators, 2) the property company's
contact phone, 3) the power company's users; each person by WeChat (openid) and SMS
(phone) when those channels are configured, and every level to the webhook. A severity
raised by folding notifies the levels already reached again, then applies the faster
ladder. An acknowledgement stops escalation. With level 1 of a new incident, the resident
whose charge it concerns gets the WeChat message too, if they accepted that template in
the mini-program (``app.services.subscriptions``: one accept, one message).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import bindparam, case, func, or_, select, text, update
from sqlalchemy.orm import Session, selectinload

from app.config import Settings
from app.domain.access import Actor, check_manage, check_read
from app.domain.charging import StopReason
from app.domain.errors import NotFound
from app.domain.safety import (
    AlarmState,
    Audience,
    ConditionKind,
    FoldAction,
    IncidentAction,
    IncidentPolicy,
    IncidentState,
    IncidentView,
    Reading,
    SafetyConfig,
    SafetyEvent,
    Severity,
    StopScope,
    detect,
    detect_pile_offline,
    escalation_due,
    next_escalation_at,
    transition,
)
from app.models import (
    AuditEntry,
    ChargingSession,
    Community,
    Incident,
    IncidentNotification,
    MeterReading,
    Pile,
    Port,
    PropertyCompany,
    User,
)
from app.models.base import UTCDateTime, utcnow
from app.models.operations import LOSS_KIND
from app.services import access, charging, context, subscriptions
from app.services.notifications import run_queued_hooks
from app.services.telemetry import (
    BATCH_HOOKS,
    BatchContext,
    PileRef,
    Uplink,
    flush,
    handles,
    ms_to_datetime,
)
from app.services.uow import UnitOfWork, insert_ignoring_duplicates

log = logging.getLogger(__name__)

T = TypeVar("T")
OPEN_SESSION_STATUSES = ("starting", "active", "stopping")
UNRESOLVED = ("open", "acknowledged")
PHONE = re.compile(r"^1[3-9]\d{9}$")

# The detectors' prefilter (see _prefilter): during a charge, a socket at or above this
# temperature, or one that rose this much since the previous reading, is looked at.
SCAN_FROM_TEMP_DC = 400
SCAN_TEMP_STEP_DC = 10


# --------------------------------------------------------------------------- configuration


def safety_config(settings: Settings | None = None) -> SafetyConfig:
    """The domain's thresholds with the escalation ladders of the settings."""
    s = settings or context.settings()
    return SafetyConfig(escalation={
        Severity.CRITICAL: tuple(timedelta(minutes=m) for m in s.escalation_critical_minutes),
        Severity.MAJOR: tuple(timedelta(minutes=m) for m in s.escalation_major_minutes),
        Severity.MINOR: tuple(timedelta(minutes=m) for m in s.escalation_minor_minutes),
    })


def configured_channels(settings: Settings) -> frozenset[str]:
    """Channels whose settings are present (only these get notifications queued)."""
    active = set()
    if settings.notify_webhook_url and settings.notify_webhook_secret:
        active.add("webhook")
    if settings.notify_sms_template and (settings.notify_sms_url
                                         or settings.notify_sms_provider != "http"):
        active.add("sms")
    if (settings.notify_wechat_template_id and settings.wechat_appid
            and settings.wechat_secret):
        active.add("wechat")
    return frozenset(active)


def safety_key(pile_id: int, port_no: int | None, kind: str) -> str:
    return f"safety:{pile_id}:{port_no if port_no is not None else '-'}:{kind}"


def loss_key(community_id: int, start: datetime, end: datetime) -> str:
    return f"loss:{community_id}:{start:%Y%m%dT%H%M%S%z}:{end:%Y%m%dT%H%M%S%z}"


# --------------------------------------------------------------------------- folding


@dataclass(frozen=True)
class PileInfo:
    id: int
    serial: str
    community_id: int


@dataclass(frozen=True)
class Recorded:
    incident: Incident | None
    action: FoldAction
    queued: int = 0


def _view(incident: Incident, event: SafetyEvent) -> IncidentView:
    return IncidentView(
        key=event.key, severity=Severity(incident.severity), opened_at=incident.opened_at,
        last_raised_at=incident.last_raised_at, state=IncidentState(incident.state),
        last_cleared_at=incident.last_cleared_at, cut_off=incident.cut_off,
    )


def _session_concerned(session: Session, session_ref: str | None, port_id: int | None
                       ) -> ChargingSession | None:
    if session_ref:
        found = session.execute(select(ChargingSession).where(
            ChargingSession.public_id == session_ref)).scalar_one_or_none()
        if found is not None:
            return found
    if port_id is not None:
        return session.execute(select(ChargingSession).where(
            ChargingSession.port_id == port_id,
            ChargingSession.status.in_(OPEN_SESSION_STATUSES),
        ).order_by(ChargingSession.id.desc()).limit(1)).scalar_one_or_none()
    return None


def record_event(session: Session, pile: PileInfo, event: SafetyEvent, *, now: datetime,
                 port_id: int | None = None, reason: str = "",
                 details: Mapping[str, Any] | None = None,
                 settings: Settings | None = None) -> Recorded:
    """Open, fold or clear the incident ``event`` belongs to (no commit), and queue the
    notifications that are due now. Returns what happened and how many rows were queued."""
    settings = settings or context.settings()
    config = safety_config(settings)
    policy = IncidentPolicy(config)
    key = safety_key(pile.id, event.port_no, event.kind.value)
    current = session.execute(
        select(Incident).where(Incident.dedup_key == key, Incident.state.in_(UNRESOLVED))
        .with_for_update()
    ).scalar_one_or_none()
    if current is None and event.state is AlarmState.RAISED:
        # A finding a person has already resolved is not news: detectors re-read their
        # window, and piles re-send alarms after a reconnect.
        last_resolved = session.execute(
            select(Incident.last_raised_at).where(Incident.dedup_key == key,
                                                  Incident.state == "resolved")
            .order_by(Incident.last_raised_at.desc()).limit(1)
        ).scalar_one_or_none()
        if last_resolved is not None and event.at <= last_resolved:
            return Recorded(None, FoldAction.IGNORE)
    known = {event.key: _view(current, event)} if current is not None else {}
    decision = policy.fold(known, event)
    if decision.action is FoldAction.IGNORE or decision.incident is None:
        return Recorded(None, FoldAction.IGNORE)
    view = decision.incident

    if decision.action is FoldAction.OPEN:
        concerned = _session_concerned(session, event.session_ref, port_id)
        incident = Incident(
            category="safety", kind=event.kind.value, dedup_key=key,
            community_id=pile.community_id, pile_id=pile.id, port_id=port_id,
            port_no=event.port_no, severity=view.severity.value, state="open",
            opened_at=view.opened_at, last_raised_at=view.last_raised_at,
            raised_count=1, cleared_count=0, cut_off=view.cut_off, value=event.value,
            threshold=event.threshold, reason=reason[:500], details=dict(details or {}),
            session_id=concerned.id if concerned else None,
            session_ref=(concerned.public_id if concerned else event.session_ref),
            stop_scope=decision.stop.value, notified_level=0, created_at=now, updated_at=now,
        )
        session.add(incident)
        session.flush()
        queued = _catch_up(session, incident, now, config, "opened", settings)
        return Recorded(incident, decision.action, queued)

    assert current is not None
    queued = 0
    if decision.action is FoldAction.RECORD_CLEAR:
        current.last_cleared_at = view.last_cleared_at
        current.cleared_count += 1
    else:  # FOLD
        newest = event.at >= current.last_raised_at
        current.severity = view.severity.value
        current.opened_at = view.opened_at
        current.last_raised_at = view.last_raised_at
        current.cut_off = view.cut_off
        current.raised_count += 1
        if newest:
            current.value, current.threshold = event.value, event.threshold
            if reason:
                current.reason = reason[:500]
            if details:
                current.details = dict(details)
        if decision.stop is not StopScope.NONE and current.stop_scope != StopScope.PILE.value:
            current.stop_scope = decision.stop.value
        if current.session_id is None:
            concerned = _session_concerned(session, event.session_ref, current.port_id)
            if concerned is not None:
                current.session_id, current.session_ref = concerned.id, concerned.public_id
        if decision.severity_raised:
            for level in range(1, max(current.notified_level, 1) + 1):
                queued += _queue(session, current, level, "severity_raised", now, settings)
            current.notified_level = max(current.notified_level, 1)
        queued += _catch_up(session, current, now, config, "escalated", settings)
    current.updated_at = now
    return Recorded(current, decision.action, queued)


# --------------------------------------------------------------------------- notifications


def _escalation_base(incident: Incident) -> datetime:
    return min(incident.opened_at, incident.created_at)


def _catch_up(session: Session, incident: Incident, now: datetime, config: SafetyConfig,
              reason: str, settings: Settings) -> int:
    """Queue every level that is due (level by level, none skipped); set the next one."""
    base = _escalation_base(incident)
    queued = 0
    while step := escalation_due(base, incident.acknowledged_at, incident.severity, now,
                                 config, notified_level=incident.notified_level):
        queued += _queue(session, incident, step.level, reason if step.level == 1
                         else "escalated", now, settings)
        incident.notified_level = step.level
    incident.next_escalation_at = next_escalation_at(
        base, incident.acknowledged_at, incident.severity, config,
        notified_level=incident.notified_level)
    return queued


AUDIENCES = {1: Audience.COMMUNITY_OPERATORS, 2: Audience.PROPERTY_MANAGERS,
             3: Audience.POWER_COMPANY}


def recipients(session: Session, incident: Incident, level: int, settings: Settings
               ) -> list[tuple[str, str, int | None]]:
    """(channel, address, user id) for one escalation level, over the active channels."""
    active = configured_channels(settings)
    community = session.get(Community, incident.community_id)
    assert community is not None
    company = session.get(PropertyCompany, community.property_company_id)
    assert company is not None
    audience = AUDIENCES[level]
    people: list[User] = []
    out: list[tuple[str, str, int | None]] = []
    if audience is Audience.COMMUNITY_OPERATORS:
        people = list(session.execute(select(User).where(
            User.role == "property_operator", User.property_company_id == company.id,
            User.is_active.is_(True)).order_by(User.id)).scalars())
    elif audience is Audience.PROPERTY_MANAGERS:
        phone = (company.contact_phone or "").strip()
        if "sms" in active and PHONE.match(phone):
            out.append(("sms", phone, None))
    else:
        people = list(session.execute(select(User).where(
            User.role == "power_company", User.power_company_id == company.power_company_id,
            User.is_active.is_(True)).order_by(User.id)).scalars())
    for person in people:
        if "wechat" in active and person.openid:
            out.append(("wechat", person.openid, person.id))
        if "sms" in active and person.phone:
            out.append(("sms", person.phone, person.id))
    if "webhook" in active:
        out.append(("webhook", settings.notify_webhook_url, None))
    return out


def notification_payload(session: Session, incident: Incident, level: int, reason: str
                         ) -> dict[str, Any]:
    community = session.get(Community, incident.community_id)
    assert community is not None
    pile = session.get(Pile, incident.pile_id) if incident.pile_id else None
    return {
        "incident_id": incident.id, "category": incident.category, "kind": incident.kind,
        "severity": incident.severity, "state": incident.state, "reason": reason,
        "level": level, "audience": AUDIENCES[level].value,
        "community_id": community.id, "community_name": community.name,
        "timezone": community.timezone,
        "pile_id": incident.pile_id, "pile_serial": pile.serial if pile else None,
        "port_no": incident.port_no, "opened_at": incident.opened_at.isoformat(),
        "value": incident.value, "threshold": incident.threshold, "cut_off": incident.cut_off,
        "stop_scope": incident.stop_scope, "session_id": incident.session_ref,
        "raised_count": incident.raised_count, "summary": incident.reason,
        "period_start": incident.period_start.isoformat() if incident.period_start else None,
        "period_end": incident.period_end.isoformat() if incident.period_end else None,
    }


CHARGER_AUDIENCE = "charging_user"


def _subscribed_charger(session: Session, incident: Incident, level: int, reason: str,
                        settings: Settings, now: datetime) -> tuple[str, str, int] | None:
    """The resident whose charge a newly opened incident concerns, by WeChat, when they
    accepted the alarm template (``NOTIFY_WECHAT_TEMPLATE_ID``) in the mini-program: one
    accept is spent here, in the transaction that queues the message. Once per incident."""
    if level != 1 or reason != "opened" or incident.session_id is None:
        return None
    if "wechat" not in configured_channels(settings):
        return None
    charge = session.get(ChargingSession, incident.session_id)
    user = session.get(User, charge.user_id) if charge and charge.user_id else None
    if (user is None or not user.openid or not user.is_active
            or user.role not in ("resident", "visitor")):
        return None
    if not subscriptions.claim(session, user.id, settings.notify_wechat_template_id,
                               f"incident:{incident.id}", now):
        return None
    return ("wechat", user.openid, user.id)


def _charger_payload(payload: dict[str, Any], incident: Incident) -> dict[str, Any]:
    """What the charging user's message carries: the page opens their receipt."""
    page = (f"pages/receipt/receipt?session_id={incident.session_ref}"
            if incident.session_ref else "")
    return {**payload, "audience": CHARGER_AUDIENCE, "page": page}


def _queue(session: Session, incident: Incident, level: int, reason: str, now: datetime,
           settings: Settings) -> int:
    if not configured_channels(settings):
        return 0  # no channel configured at all (development): nothing to queue
    targets = recipients(session, incident, level, settings)
    charger = _subscribed_charger(session, incident, level, reason, settings, now)
    if not targets and charger is None:
        log.warning("incident %s: nobody to notify at level %d (no contact for the "
                    "configured channels)", incident.id, level)
        return 0
    payload = notification_payload(session, incident, level, reason)
    addressed = [(channel, address, user_id, payload) for channel, address, user_id in targets]
    if charger is not None:
        addressed.append((*charger, _charger_payload(payload, incident)))
    rows = []
    for channel, address, user_id, row_payload in addressed:
        digest = hashlib.sha256(address.encode()).hexdigest()[:24]
        rows.append({
            "incident_id": incident.id, "level": level, "audience": row_payload["audience"],
            "reason": reason, "channel": channel, "recipient": address[:200],
            "user_id": user_id, "payload": row_payload, "status": "pending", "attempts": 0,
            "next_attempt_at": now, "created_at": now,
            "dedup_key": f"{incident.id}:{level}:{reason}:{incident.severity}:{channel}:{digest}",
        })
    stmt = insert_ignoring_duplicates(session, IncidentNotification, ["dedup_key"])
    inserted = session.execute(stmt.returning(IncidentNotification.id), rows).all()
    return len(inserted)


def escalate_due(uow: UnitOfWork, *, now: datetime | None = None, limit: int = 200) -> int:
    """Queue the escalation levels that fell due (incidents nobody acknowledged); returns
    the number of notification rows queued."""
    now = now or utcnow()
    settings = context.settings()
    config = safety_config(settings)
    queued = 0
    with uow:
        due = uow.session.execute(
            select(Incident).where(Incident.state == "open",
                                   Incident.next_escalation_at <= now)
            .order_by(Incident.next_escalation_at).limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars().all()
        for incident in due:
            before = incident.notified_level
            queued += _catch_up(uow.session, incident, now, config, "escalated", settings)
            if incident.notified_level != before:
                incident.updated_at = now
        if queued:
            uow.after_commit(run_queued_hooks)
        uow.commit()
    return queued


# --------------------------------------------------------------------------- bridge


class _Seen(NamedTuple):
    pile: PileRef
    port_no: int
    port_id: int
    ts_ms: int  # the meter message's ts (sorting by it is sorting by time)
    reading: Mapping[str, Any]

    @property
    def at(self) -> datetime:
        return ms_to_datetime(self.ts_ms)


@dataclass
class _BatchState:
    readings: list[_Seen] = field(default_factory=list)
    kick: bool = False


_STATE_ATTR = "_incidents_state"


def _state(ctx: BatchContext) -> _BatchState:
    state: _BatchState | None = getattr(ctx, _STATE_ATTR, None)
    if state is None:
        state = _BatchState()
        setattr(ctx, _STATE_ATTR, state)
    return state


def _guarded(ctx: BatchContext, what: str, fn: Callable[[], T]) -> T | None:
    """Run ``fn`` in a savepoint; on any error roll back to it, log and carry on."""
    savepoint = ctx.session.begin_nested()
    try:
        result = fn()
        savepoint.commit()
        return result
    except Exception:
        savepoint.rollback()
        ctx.count("incident_failures")
        log.exception("incident work (%s) failed; the batch goes on without it", what)
        return None


def _record_in_batch(ctx: BatchContext, pile: PileRef, event: SafetyEvent,
                     port_id: int | None, reason: str = "",
                     details: Mapping[str, Any] | None = None) -> Recorded:
    recorded = record_event(ctx.session, PileInfo(pile.id, pile.serial, pile.community_id),
                            event, now=ctx.now, port_id=port_id, reason=reason,
                            details=details)
    if recorded.queued:
        state = _state(ctx)
        if not state.kick:
            state.kick = True
            ctx.after_commit.append(run_queued_hooks)
    if recorded.action is not FoldAction.IGNORE:
        ctx.count(f"incident_{recorded.action.value}")
    return recorded


def _alarm_reason(b: Mapping[str, Any]) -> str:
    parts = [f"the pile reports {b['kind']} ({b['severity']}, {b['state']})"]
    if b["value"] is not None:
        parts.append(f"value {b['value']}")
    if b["threshold"] is not None:
        parts.append(f"threshold {b['threshold']}")
    if b["cut_off"]:
        parts.append("power cut by the pile")
    return ", ".join(parts)


@handles("alarm")
def on_alarm_incident(ctx: BatchContext, pile: PileRef, u: Uplink) -> None:
    b = u.body
    port_id = pile.ports.get(b["port"]) if b["port"] is not None else None

    def work() -> None:
        event = SafetyEvent.from_alarm(pile.serial, b)
        _record_in_batch(ctx, pile, event, port_id,
                         reason=_alarm_reason(b) if b["state"] == "raised" else "")

    _guarded(ctx, "alarm", work)


@handles("meter")
def collect_readings(ctx: BatchContext, pile: PileRef, u: Uplink) -> None:
    """Note the batch's readings for :func:`detect_conditions` (no I/O, hot path)."""
    ts = u.body["ts"]
    seen = _state(ctx).readings
    ports = pile.ports
    for r in u.body["readings"]:
        port_id = ports.get(r["port"])
        if port_id is not None:
            seen.append(_Seen(pile, r["port"], port_id, ts, r))


def _session_of(r: Mapping[str, Any]) -> str | None:
    return r.get("session_id") or r.get("local_id")


@dataclass(frozen=True)
class _Flagged:
    newest: _Seen  # the port's newest reading in this batch
    kinds: frozenset[str]  # the conditions its readings could show
    acute: bool  # heat at the critical level or power above the instant limit


_POWER, _HEAT = ConditionKind.ABNORMAL_POWER.value, ConditionKind.TEMPERATURE_RISING_FAST.value
_ENERGY, _BACK = (ConditionKind.ENERGY_WITHOUT_SESSION.value,
                  ConditionKind.METER_BACKWARDS.value)


# One prepared statement whatever the number of ports (an IN list of N parameters is a
# new statement for every N).
_PORT_STATE_PG = text("SELECT id, energy_wh, temp_dc FROM ports WHERE id = ANY(CAST(:ids AS "
                      "BIGINT[]))")


def _is_pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _prefilter(ctx: BatchContext, readings: list[_Seen], config: SafetyConfig
               ) -> dict[int, _Flagged]:
    """The ports of this batch whose recent readings could hold a new finding, and which.

    A detector can only report something new when a new reading shows power above the
    e-bike limit, heat at the warning level, power or energy with no session, or a counter
    below the previous one; those are exact. A temperature *rise* needs the history, so it
    is looked at during a charge from SCAN_FROM_TEMP_DC (40.0 °C) up, or when the socket
    rose SCAN_TEMP_STEP_DC (1.0 °C) since the previous reading. Everything else (almost
    every port, almost always) loads nothing: the cost is one primary-key lookup of the
    batch's ports."""
    by_port: dict[int, list[_Seen]] = {}
    for s in readings:
        by_port.setdefault(s.port_id, []).append(s)
    kinds: dict[int, set[str]] = {}
    acute: set[int] = set()
    for port_id, seen in by_port.items():
        seen.sort(key=lambda s: s.ts_ms)
        found = kinds.setdefault(port_id, set())
        previous: _Seen | None = None
        for s in seen:
            r = s.reading
            temp, charging_now = r["temp_dc"], _session_of(r) is not None
            if (r["power_w"] > config.instant_max_power_w
                    or (temp is not None and temp >= config.temp_critical_dc)):
                acute.add(port_id)
            if r["power_w"] > config.max_ebike_power_w or (
                    not charging_now and r["power_w"] > config.idle_power_w):
                found.add(_POWER)
            if not charging_now and r["delta_wh"] > 0:
                found.add(_ENERGY)
            if temp is not None and (temp >= config.temp_warning_dc or (
                    charging_now and temp >= SCAN_FROM_TEMP_DC)):
                found.add(_HEAT)
            if previous is not None:
                p = previous.reading
                if r["energy_wh"] < p["energy_wh"]:
                    found.add(_BACK)
                if (charging_now and temp is not None and p["temp_dc"] is not None
                        and temp - p["temp_dc"] >= SCAN_TEMP_STEP_DC):
                    found.add(_HEAT)
            previous = s
    rest = [p for p in by_port if not kinds[p]]
    if rest:
        if _is_pg(ctx.session):
            stored = ctx.session.execute(_PORT_STATE_PG, {"ids": rest}).all()
        else:
            stored = ctx.session.execute(select(Port.id, Port.energy_wh, Port.temp_dc)
                                         .where(Port.id.in_(rest))).all()
        for port_id, energy, temp_before in stored:
            r = by_port[port_id][0].reading
            if energy is not None and r["energy_wh"] < energy:
                kinds[port_id].add(_BACK)
            if (_session_of(r) is not None and r["temp_dc"] is not None
                    and temp_before is not None
                    and r["temp_dc"] - temp_before >= SCAN_TEMP_STEP_DC):
                kinds[port_id].add(_HEAT)
    return {p: _Flagged(by_port[p][-1], frozenset(k), p in acute)
            for p, k in kinds.items() if k}


def _recent_readings(session: Session, newest: Mapping[int, _Seen], config: SafetyConfig
                     ) -> dict[int, list[Reading]]:
    since = min(s.at for s in newest.values()) - config.window
    rows = session.execute(
        select(MeterReading.port_id, MeterReading.measured_at, MeterReading.energy_wh,
               MeterReading.power_w, MeterReading.temp_dc, MeterReading.current_ma,
               MeterReading.session_ref)
        .where(MeterReading.port_id.in_(list(newest)), MeterReading.measured_at >= since)
    ).all()
    out: dict[int, list[Reading]] = {}
    for port_id, at, energy, power, temp, current, session_ref in rows:
        out.setdefault(port_id, []).append(Reading(at, energy, power, temp, current,
                                                   session_ref))
    return out


CONDITION_KINDS = tuple(k.value for k in ConditionKind if k is not ConditionKind.PILE_OFFLINE)
REDETECT = timedelta(seconds=60)
"""A port whose readings could only show conditions that already have an incident open,
raised less than this ago (pile time), is not examined again unless a reading is acute
(critical heat, power above the instant limit): what persists is folded once a minute,
not once a batch. This bounds the cost of a
pile (or a fleet) that keeps reporting an abnormal state, e.g. a firmware that never names
the session in its readings, so it cannot slow the bridge down for everyone else."""


MAX_NEW_PER_BATCH = 50
"""New condition incidents (or severity raises) recorded per batch, most severe first; the
rest wait for the ports' next reports (their stops are sent at once regardless). A fleet
whose firmware suddenly reports every port as abnormal must not stall the bridge, and with
it the stops of real alarms, while thousands of incidents are written."""


@dataclass
class _Finding:
    flagged: _Flagged
    port_id: int
    condition: Any
    event: SafetyEvent


_FOLD = (
    update(Incident.__table__)
    .where(Incident.__table__.c.id == bindparam("i_id"))
    .values(
        raised_count=Incident.__table__.c.raised_count + 1,
        last_raised_at=case(
            (bindparam("i_at", type_=UTCDateTime()) > Incident.__table__.c.last_raised_at,
             bindparam("i_at", type_=UTCDateTime())),
            else_=Incident.__table__.c.last_raised_at),
        updated_at=bindparam("i_now", type_=UTCDateTime()),
    )
)


def _detect(ctx: BatchContext, flagged: Mapping[int, _Flagged], config: SafetyConfig) -> None:
    """The detectors over the flagged ports' windows (one query for all), then: the stops
    (one query for all), new incidents and severity raises through :func:`record_event`,
    and repeats of what is already open folded in one bulk UPDATE."""
    session = ctx.session
    policy = IncidentPolicy(config)
    pile_ids = sorted({f.newest.pile.id for f in flagged.values()})
    known: dict[tuple[int, str], Any] = {}
    for row in session.execute(
            select(Incident.id, Incident.port_id, Incident.kind, Incident.severity,
                   Incident.last_raised_at)
            .where(Incident.pile_id.in_(pile_ids), Incident.port_id.in_(list(flagged)),
                   Incident.state.in_(UNRESOLVED), Incident.kind.in_(CONDITION_KINDS))):
        known[(row.port_id, row.kind)] = row
    def fresh(port_id: int, kind: str, at: datetime) -> bool:
        row = known.get((port_id, kind))
        return row is not None and at - row.last_raised_at < REDETECT

    todo = {port_id: f.newest for port_id, f in flagged.items()
            if f.acute or not all(fresh(port_id, k, f.newest.at) for k in f.kinds)}
    if not todo:
        return
    findings: list[_Finding] = []
    for port_id, readings in _recent_readings(session, todo, config).items():
        last = todo[port_id]
        kinds_done: set[ConditionKind] = set()
        for condition in detect(readings, config):
            if condition.kind in kinds_done:
                continue  # most severe first: one finding per kind
            kinds_done.add(condition.kind)
            event = condition.event(last.pile.serial, last.port_no,
                                    last.reading.get("session_id"))
            findings.append(_Finding(flagged[port_id], port_id, condition, event))
    stops: set[tuple[int, int | None]] = set()
    for f in findings:
        scope = policy.stop_for(f.event)
        if scope is not StopScope.NONE:
            stops.add((f.flagged.newest.pile.id, None if scope is StopScope.PILE else f.port_id))
    if stops:
        ctx.nudge = True
        _guarded(ctx, "condition stops", lambda: _stop_many(ctx, stops))
    folds = []
    opened = 0
    for f in sorted(findings, key=lambda f: -policy.severity_of(f.event).rank):
        row = known.get((f.port_id, f.condition.kind.value))
        if row is not None and Severity(row.severity).rank >= policy.severity_of(f.event).rank:
            folds.append({"i_id": row.id, "i_at": f.condition.at, "i_now": ctx.now})
            continue
        if opened >= MAX_NEW_PER_BATCH:  # a flood: the rest next time the ports report
            ctx.count("incident_deferred")
            continue
        opened += 1
        _guarded(ctx, f"condition {f.condition.kind}", lambda f=f: _record_in_batch(
            ctx, f.flagged.newest.pile, f.event, f.port_id, reason=f.condition.reason,
            details=dict(f.condition.figures)))
    if folds:
        _guarded(ctx, "condition folds", lambda: session.execute(_FOLD, folds))
        ctx.count("incident_fold", len(folds))


def _stop_many(ctx: BatchContext, targets: set[tuple[int, int | None]]) -> None:
    """Stop the sessions running on these (pile, port) pairs; port None: the whole pile."""
    whole = {pile for pile, port in targets if port is None}
    ports = {port for pile, port in targets if port is not None and pile not in whole}
    rows = ctx.session.execute(select(ChargingSession).where(
        ChargingSession.status.in_(("starting", "active")),
        or_(ChargingSession.pile_id.in_(whole or [0]),
            ChargingSession.port_id.in_(ports or [0])),
    ).order_by(ChargingSession.id)).scalars().all()
    for row in rows:
        charging.send_stop(ctx.session, row, StopReason.ALARM, ctx.now)


def detect_conditions(ctx: BatchContext) -> None:
    """Batch hook: the platform's own detectors over the ports worth a look."""
    state: _BatchState | None = getattr(ctx, _STATE_ATTR, None)
    if state is None or not state.readings:
        return
    readings, state.readings = state.readings, []
    config = safety_config()
    flagged = _guarded(ctx, "prefilter", lambda: _prefilter(ctx, readings, config))
    if not flagged:
        return
    flush(ctx)  # this batch's readings are part of the window (outside any savepoint)
    _guarded(ctx, "detectors", lambda: _detect(ctx, flagged, config))


BATCH_HOOKS.append(detect_conditions)


def _open_sessions_on(session: Session, pile_id: int) -> int:
    return int(session.execute(select(func.count()).select_from(ChargingSession).where(
        ChargingSession.pile_id == pile_id,
        ChargingSession.status.in_(OPEN_SESSION_STATUSES))).scalar_one())


@handles("offline")
def on_offline_incident(ctx: BatchContext, pile: PileRef, u: Uplink) -> None:
    """The pile's will: it is offline now (if the will applied, see telemetry.on_offline)."""

    def work() -> None:
        online, went_offline_at, keepalive_s = ctx.session.execute(
            select(Pile.online, Pile.went_offline_at, Pile.keepalive_s)
            .where(Pile.id == pile.id)).one()
        if online or went_offline_at != ctx.now:
            return  # a stale will: nothing changed
        condition = detect_pile_offline(None, keepalive_s, ctx.now,
                                        charging_ports=_open_sessions_on(ctx.session, pile.id))
        assert condition is not None
        _record_in_batch(ctx, pile, condition.event(pile.serial, None), None,
                         reason=f"the pile's will: {u.body.get('reason', 'offline')}; "
                         + condition.reason, details=dict(condition.figures))

    _guarded(ctx, "pile offline", work)


@handles("online")
def on_online_incident(ctx: BatchContext, pile: PileRef, u: Uplink) -> None:
    """Back online: the pile_offline incident records a clear (a person resolves it)."""

    def work() -> None:
        key = safety_key(pile.id, None, ConditionKind.PILE_OFFLINE.value)
        if ctx.session.execute(select(Incident.id).where(
                Incident.dedup_key == key, Incident.state.in_(UNRESOLVED))).first() is None:
            return
        event = SafetyEvent(pile_id=pile.serial, port_no=None,
                            kind=ConditionKind.PILE_OFFLINE, state=AlarmState.CLEARED,
                            at=ctx.now)
        _record_in_batch(ctx, pile, event, None)

    _guarded(ctx, "pile online", work)


def open_offline_incidents(uow: UnitOfWork, *, now: datetime | None = None) -> int:
    """Job: piles marked offline (silent, or a will whose incident is missing) that have no
    incident for this outage yet get one. Returns how many were opened or folded."""
    now = now or utcnow()
    settings = context.settings()
    done = 0
    queued = 0
    with uow:
        session = uow.session
        piles = session.execute(select(Pile).where(
            Pile.online.is_(False), Pile.enabled.is_(True),
            Pile.went_offline_at.is_not(None))).scalars().all()
        if not piles:
            return 0
        keys = {safety_key(p.id, None, ConditionKind.PILE_OFFLINE.value): p for p in piles}
        latest: dict[str, datetime] = {}
        for key, updated in session.execute(
                select(Incident.dedup_key, Incident.updated_at)
                .where(Incident.dedup_key.in_(list(keys)))):
            latest[key] = max(updated, latest.get(key, updated))
        for key, pile in keys.items():
            assert pile.went_offline_at is not None
            if key in latest and latest[key] >= pile.went_offline_at:
                continue  # this outage already has its incident
            n = _open_sessions_on(session, pile.id)
            condition = (detect_pile_offline(pile.last_seen_at, pile.keepalive_s, now,
                                             charging_ports=n)
                         or detect_pile_offline(None, pile.keepalive_s, pile.went_offline_at,
                                                charging_ports=n))
            assert condition is not None
            recorded = record_event(
                session, PileInfo(pile.id, pile.serial, pile.community_id),
                condition.event(pile.serial, None), now=now, reason=condition.reason,
                details=dict(condition.figures), settings=settings)
            if recorded.incident is not None:
                recorded.incident.updated_at = now
                done += 1
                queued += recorded.queued
        if queued:
            uow.after_commit(run_queued_hooks)
        uow.commit()
    return done


# --------------------------------------------------------------------------- loss


def open_loss_incident(session: Session, community: Community, start: datetime,
                       end: datetime, *, severity: Severity, value: int | None,
                       threshold: int | None, reason: str, details: Mapping[str, Any],
                       now: datetime) -> tuple[Incident, int]:
    """The incident of one community's loss period (the unresolved one if it exists);
    returns it and the number of notification rows queued."""
    key = loss_key(community.id, start, end)
    current = session.execute(select(Incident).where(
        Incident.dedup_key == key, Incident.state.in_(UNRESOLVED))).scalar_one_or_none()
    if current is not None:
        return current, 0
    settings = context.settings()
    incident = Incident(
        category="loss", kind=LOSS_KIND, dedup_key=key, community_id=community.id,
        severity=severity.value, state="open", opened_at=end, last_raised_at=end,
        raised_count=1, cleared_count=0, cut_off=False, value=value, threshold=threshold,
        reason=reason[:500], details=dict(details), stop_scope="none", period_start=start,
        period_end=end, notified_level=0, created_at=now, updated_at=now,
    )
    session.add(incident)
    session.flush()
    return incident, _catch_up(session, incident, now, safety_config(settings), "opened",
                               settings)


# --------------------------------------------------------------------------- people


def _load(session: Session, actor: Actor, incident_id: int, *, manage: bool = False,
          lock: bool = False) -> Incident:
    stmt = select(Incident).where(Incident.id == incident_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    incident = session.execute(stmt).scalar_one_or_none()
    if incident is None:
        raise NotFound("no such incident")
    community = session.get(Community, incident.community_id)
    assert community is not None
    (check_manage if manage else check_read)(actor, access.community_scope(community),
                                             "incident")
    return incident


def get_incident(uow: UnitOfWork, actor: Actor, incident_id: int) -> Incident:
    return _load(uow.session, actor, incident_id)


def list_incidents(uow: UnitOfWork, actor: Actor, *, community_id: int | None = None,
                   pile_id: int | None = None, state: Iterable[str] | None = None,
                   severity: Iterable[str] | None = None, kind: str | None = None,
                   category: str | None = None, limit: int = 50,
                   before_id: int | None = None) -> list[Incident]:
    """Newest first, within the caller's communities (the power company: its whole tree)."""
    stmt = select(Incident).where(
        Incident.community_id.in_(access.scoped_community_ids(actor)))
    if community_id is not None:
        stmt = stmt.where(Incident.community_id == community_id)
    if pile_id is not None:
        stmt = stmt.where(Incident.pile_id == pile_id)
    if state:
        stmt = stmt.where(Incident.state.in_(list(state)))
    if severity:
        stmt = stmt.where(Incident.severity.in_(list(severity)))
    if kind is not None:
        stmt = stmt.where(Incident.kind == kind)
    if category is not None:
        stmt = stmt.where(Incident.category == category)
    if before_id is not None:
        stmt = stmt.where(Incident.id < before_id)
    return list(uow.session.execute(stmt.options(selectinload(Incident.pile))
                                    .order_by(Incident.id.desc()).limit(limit)).scalars())


def _act(uow: UnitOfWork, actor: Actor, incident_id: int, action: IncidentAction,
         note: str | None) -> Incident:
    now = utcnow()
    with uow:
        incident = _load(uow.session, actor, incident_id, manage=True, lock=True)
        incident.state = transition(incident.state, action).value
        if action is IncidentAction.ACKNOWLEDGE:
            incident.acknowledged_at, incident.acknowledged_by_user_id = now, actor.user_id
            incident.acknowledge_note = note
        else:
            incident.resolved_at, incident.resolved_by_user_id = now, actor.user_id
            incident.resolution_note = note
        incident.next_escalation_at = None
        incident.updated_at = now
        uow.session.add(AuditEntry(actor_user_id=actor.user_id,
                                   action=f"incident.{action.value}", object_type="incident",
                                   object_id=incident.id, details={"note": note or ""}))
        uow.commit()
        return incident


def acknowledge(uow: UnitOfWork, actor: Actor, incident_id: int, note: str | None = None
                ) -> Incident:
    """open -> acknowledged (who and when); stops the escalation."""
    return _act(uow, actor, incident_id, IncidentAction.ACKNOWLEDGE, note)


def resolve(uow: UnitOfWork, actor: Actor, incident_id: int, note: str | None = None
            ) -> Incident:
    """acknowledged -> resolved (who and when); the next raise opens a new incident."""
    return _act(uow, actor, incident_id, IncidentAction.RESOLVE, note)


def list_notifications(uow: UnitOfWork, actor: Actor, incident_id: int
                       ) -> list[IncidentNotification]:
    _load(uow.session, actor, incident_id)
    return list(uow.session.execute(select(IncidentNotification).where(
        IncidentNotification.incident_id == incident_id).order_by(IncidentNotification.id)
    ).scalars())

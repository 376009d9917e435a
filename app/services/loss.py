"""Theft and loss: each community's master meter against the sum of its socket meters.

The maths and the decision are ``app.domain.loss`` (exact interpolation at the period's
boundaries, counter resets, :func:`~app.domain.loss.assess` against a threshold and the
community's own history); this module loads the readings, stores the figures
(``loss_checks``, one row per community and period) and opens a loss incident
(``app.services.incidents.open_loss_incident``) when the decision says so.

* :func:`run_daily_checks` (the jobs process, hourly) checks every community with a master
  meter for each of the last complete local days (the community's time zone); a day whose
  figures were decision-grade is not checked again, one that lacked master readings is
  re-checked when late readings arrive. History for the jump rule = the community's earlier
  *day* checks.
* :func:`check_period` is the same for any period, on demand (``POST
  /communities/<id>/loss-checks``); a period that is exactly one local day is stored as a
  day check.
* :func:`daily_figures` computes a series without storing anything (the power company reads
  it: ``GET /communities/<id>/loss``).

Severity of a loss incident (not a safety rule, so it lives here): **major** when the
loss is above the threshold or jumps against the history (power is going somewhere it
should not: theft or a tapped cable, which is also a fire hazard); **minor** when only the
sockets read more than the master (a meter to check).

Reading load: per socket the readings inside the period plus the last one at or before its
start and the first one at or after its end (a socket reports only while its counter moves,
so the reading before the period may be days old); the same for the master meter.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import Settings
from app.domain.access import Actor
from app.domain.errors import InvalidInput
from app.domain.loss import (
    CounterReading,
    CounterSeries,
    LossConfig,
    LossDecision,
    LossFigures,
    LossVerdict,
    Period,
    assess,
    period_figures,
)
from app.domain.safety import Severity
from app.models import Community, LossCheck, MasterMeterReading, MeterReading, Pile, Port
from app.models.base import utcnow
from app.services import access, context
from app.services.incidents import open_loss_incident
from app.services.notifications import run_queued_hooks
from app.services.uow import UnitOfWork

log = logging.getLogger(__name__)

MAX_SERIES_DAYS = 92
MAX_CHECK_DAYS = 92


def loss_config(settings: Settings | None = None) -> LossConfig:
    s = settings or context.settings()
    return LossConfig(
        threshold=Fraction(s.loss_threshold_per_mille, 1000),
        min_master_wh=s.loss_min_master_wh,
        history_periods=max(s.loss_history_days, 1),
        min_history=min(3, max(s.loss_history_days, 1)),
        jump_factor=Fraction(s.loss_jump_factor),
        jump_floor=Fraction(s.loss_jump_floor_per_mille, 1000),
    )


def day_period(day: date, tz: str) -> Period:
    zone = ZoneInfo(tz)
    return Period(datetime.combine(day, time(), tzinfo=zone),
                  datetime.combine(day + timedelta(days=1), time(), tzinfo=zone))


# --------------------------------------------------------------------------- loading


def community_port_ids(session: Session, community_id: int) -> list[int]:
    return list(session.execute(
        select(Port.id).join(Pile, Pile.id == Port.pile_id)
        .where(Pile.community_id == community_id).order_by(Port.id)).scalars())


def master_readings(session: Session, community_id: int, start: datetime, end: datetime
                    ) -> list[CounterReading]:
    """The community's master readings in [start, end], plus the ones bracketing it."""
    m = MasterMeterReading
    before = (select(m.read_at).where(m.community_id == community_id, m.read_at <= start)
              .order_by(m.read_at.desc()).limit(1))
    after = (select(m.read_at).where(m.community_id == community_id, m.read_at >= end)
             .order_by(m.read_at).limit(1))
    lo = session.execute(before).scalar_one_or_none() or start
    hi = session.execute(after).scalar_one_or_none() or end
    rows = session.execute(select(m.read_at, m.energy_wh).where(
        m.community_id == community_id, m.read_at >= lo, m.read_at <= hi)).all()
    return [CounterReading(at, int(wh)) for at, wh in rows]


def socket_readings(session: Session, port_ids: Sequence[int], start: datetime,
                    end: datetime) -> dict[int, list[CounterReading]]:
    """Each port's readings in [start, end] plus its last before and first after."""
    out: dict[int, list[CounterReading]] = {p: [] for p in port_ids}
    if not port_ids:
        return out
    r = MeterReading
    ids = list(port_ids)
    before = (select(r.port_id, func.max(r.measured_at).label("at"))
              .where(r.port_id.in_(ids), r.measured_at < start).group_by(r.port_id)
              .subquery())
    after = (select(r.port_id, func.min(r.measured_at).label("at"))
             .where(r.port_id.in_(ids), r.measured_at > end).group_by(r.port_id).subquery())
    inside = select(r.port_id, r.measured_at, r.energy_wh).where(
        r.port_id.in_(ids), r.measured_at >= start, r.measured_at <= end)
    edges = [
        select(r.port_id, r.measured_at, r.energy_wh).join(
            sub, and_(sub.c.port_id == r.port_id, sub.c.at == r.measured_at))
        for sub in (before, after)
    ]
    for stmt in (inside, *edges):
        for port_id, at, energy in session.execute(stmt):
            out[port_id].append(CounterReading(at, int(energy)))
    return out


@dataclass(frozen=True)
class Loaded:
    community: Community
    master: CounterSeries
    sockets: dict[int, CounterSeries]


def load(session: Session, community: Community, start: datetime, end: datetime) -> Loaded:
    ports = community_port_ids(session, community.id)
    sockets = socket_readings(session, ports, start, end)
    return Loaded(community, CounterSeries(master_readings(session, community.id, start, end)),
                  {p: CounterSeries(rs) for p, rs in sockets.items()})


# --------------------------------------------------------------------------- figures


def _figures_of(check: LossCheck) -> LossFigures:
    """A stored check as the domain's figures (for the history of assess)."""
    span = None if check.master_span_s is None else timedelta(seconds=check.master_span_s)
    return LossFigures(Period(check.period_start, check.period_end), check.master_wh,
                       check.sockets_wh, {}, check.master_complete, span,
                       check.master_resets, check.socket_resets)


def _history(session: Session, community_id: int, before: datetime, n: int
             ) -> list[LossFigures]:
    rows = session.execute(select(LossCheck).where(
        LossCheck.community_id == community_id, LossCheck.kind == "day",
        LossCheck.period_start < before).order_by(LossCheck.period_start.desc()).limit(n)
    ).scalars().all()
    return [_figures_of(c) for c in reversed(rows)]


def _severity(decision: LossDecision) -> Severity:
    if {LossVerdict.ABOVE_THRESHOLD, LossVerdict.JUMP} & set(decision.verdicts):
        return Severity.MAJOR
    return Severity.MINOR


@dataclass(frozen=True)
class CheckResult:
    check: LossCheck
    decision: LossDecision
    opened_incident: bool


def _store(session: Session, community: Community, kind: str, figures: LossFigures,
           decision: LossDecision, now: datetime, ports: int) -> tuple[LossCheck, int, bool]:
    p = figures.period
    check = session.execute(select(LossCheck).where(
        LossCheck.community_id == community.id, LossCheck.period_start == p.start,
        LossCheck.period_end == p.end).with_for_update()).scalar_one_or_none()
    if check is None:
        check = LossCheck(community_id=community.id, period_start=p.start, period_end=p.end)
        session.add(check)
    span = figures.master_interpolation_span
    check.kind = kind
    check.master_wh, check.sockets_wh = figures.master_wh, figures.sockets_wh
    check.loss_wh, check.loss_per_mille = figures.loss_wh, figures.per_mille
    check.master_complete = figures.master_complete
    check.master_span_s = None if span is None else int(span.total_seconds())
    check.master_resets, check.socket_resets = figures.master_resets, figures.socket_resets
    check.ports = ports
    check.verdicts = ",".join(v.value for v in decision.verdicts)[:120]
    check.reason = decision.reason[:500]
    check.checked_at = now
    queued, opened = 0, False
    if decision.open_incident and check.incident_id is None:
        threshold = loss_config().threshold
        incident, queued = open_loss_incident(
            session, community, p.start, p.end, severity=_severity(decision),
            value=figures.loss_wh, threshold=int(threshold * 1000),
            reason=f"{community.name}: {decision.reason}",
            details={"master_wh": figures.master_wh, "sockets_wh": figures.sockets_wh,
                     "loss_wh": figures.loss_wh, "loss_per_mille": figures.per_mille,
                     "verdicts": [v.value for v in decision.verdicts],
                     "threshold_per_mille": int(threshold * 1000)},
            now=now)
        session.flush()
        check.incident_id = incident.id
        opened = True
    session.flush()
    return check, queued, opened


def check_community_period(session: Session, community: Community, period: Period, *,
                           kind: str, now: datetime) -> tuple[CheckResult, int]:
    """Compute, assess, store (no commit); returns the result and notifications queued."""
    config = loss_config()
    loaded = load(session, community, period.start, period.end)
    figures = period_figures(loaded.master, loaded.sockets, period)
    history = (_history(session, community.id, period.start, config.history_periods)
               if kind == "day" else [])
    decision = assess(figures, history, config)
    check, queued, opened = _store(session, community, kind, figures, decision, now,
                                   len(loaded.sockets))
    return CheckResult(check, decision, opened), queued


def _is_local_day(period: Period, tz: str) -> bool:
    local = period.start.astimezone(ZoneInfo(tz))
    return (local.timetz().replace(tzinfo=None) == time()
            and day_period(local.date(), tz) == period)


def check_period(uow: UnitOfWork, actor: Actor, community_id: int, start: datetime,
                 end: datetime) -> CheckResult:
    """On demand: check one period of one community (managers of it)."""
    if end <= start:
        raise InvalidInput("the period must end after it starts", field="end")
    if end - start > timedelta(days=MAX_CHECK_DAYS):
        raise InvalidInput(f"at most {MAX_CHECK_DAYS} days at a time", field="end")
    now = utcnow()
    if start > now + timedelta(days=1):  # a day of slack for pile clocks running ahead
        raise InvalidInput("the period has not started yet", field="start")
    with uow:
        community = access.get_community(uow.session, actor, community_id, manage=True)
        period = Period(start, end)
        kind = "day" if _is_local_day(period, community.timezone) else "custom"
        result, queued = check_community_period(uow.session, community, period, kind=kind,
                                                now=now)
        if queued:
            uow.after_commit(run_queued_hooks)
        uow.commit()
        return result


def run_daily_checks(uow: UnitOfWork, *, now: datetime | None = None, days_back: int = 2
                     ) -> dict[str, int]:
    """Job: the last ``days_back`` complete local days of every community with a master
    meter. Each community in its own transaction; a day already decided is skipped."""
    now = now or utcnow()
    counts = {"checked": 0, "skipped": 0, "incidents": 0, "errors": 0}
    community_ids = list(uow.session.execute(select(Community.id).where(
        or_(Community.master_meter_serial.is_not(None),
            Community.id.in_(select(MasterMeterReading.community_id).distinct())))
        .order_by(Community.id)).scalars())
    uow.session.rollback()
    for community_id in community_ids:
        try:
            with uow:
                community = uow.session.get(Community, community_id)
                assert community is not None
                today = now.astimezone(ZoneInfo(community.timezone)).date()
                queued = 0
                for back in range(days_back, 0, -1):
                    period = day_period(today - timedelta(days=back), community.timezone)
                    done = uow.session.execute(select(LossCheck.verdicts).where(
                        LossCheck.community_id == community_id,
                        LossCheck.period_start == period.start,
                        LossCheck.period_end == period.end)).scalar_one_or_none()
                    if done is not None and LossVerdict.INSUFFICIENT_DATA.value not in done:
                        counts["skipped"] += 1
                        continue
                    result, n = check_community_period(uow.session, community, period,
                                                       kind="day", now=now)
                    queued += n
                    counts["checked"] += 1
                    counts["incidents"] += int(result.opened_incident)
                if queued:
                    uow.after_commit(run_queued_hooks)
                uow.commit()
        except IntegrityError:  # another job process stored the same check first
            uow.rollback()
            counts["errors"] += 1
    return counts


# --------------------------------------------------------------------------- reading


def list_checks(uow: UnitOfWork, actor: Actor, community_id: int, *, limit: int = 60
                ) -> list[LossCheck]:
    access.get_community(uow.session, actor, community_id)
    return list(uow.session.execute(select(LossCheck).where(
        LossCheck.community_id == community_id).order_by(LossCheck.period_start.desc())
        .limit(limit)).scalars())


@dataclass(frozen=True)
class SeriesRow:
    day: date
    figures: LossFigures
    decision: LossDecision

    def as_dict(self) -> dict[str, Any]:
        f = self.figures
        span = f.master_interpolation_span
        return {
            "day": self.day.isoformat(), "master_wh": f.master_wh, "sockets_wh": f.sockets_wh,
            "loss_wh": f.loss_wh, "loss_per_mille": f.per_mille,
            "master_complete": f.master_complete,
            "master_span_s": None if span is None else int(span.total_seconds()),
            "verdict": self.decision.verdict.value,
            "verdicts": [v.value for v in self.decision.verdicts],
            "reason": self.decision.reason,
        }


def daily_figures(uow: UnitOfWork, actor: Actor, community_id: int, first: date, last: date
                  ) -> tuple[Community, list[SeriesRow], LossFigures]:
    """Per local day, master vs sockets and the verdict each day would get (against the
    days before it in the series); and the whole range's figures. Stores nothing."""
    if last < first:
        raise InvalidInput("'to' is before 'from'", field="to")
    if (last - first).days + 1 > MAX_SERIES_DAYS:
        raise InvalidInput(f"at most {MAX_SERIES_DAYS} days at a time", field="to")
    session = uow.session
    community = access.get_community(session, actor, community_id)
    whole = Period(day_period(first, community.timezone).start,
                   day_period(last, community.timezone).end)
    loaded = load(session, community, whole.start, whole.end)
    config = loss_config()
    history = _history(session, community.id, whole.start, config.history_periods)
    rows: list[SeriesRow] = []
    day = first
    while day <= last:
        figures = period_figures(loaded.master, loaded.sockets,
                                 day_period(day, community.timezone))
        decision = assess(figures, history + [r.figures for r in rows], config)
        rows.append(SeriesRow(day, figures, decision))
        day += timedelta(days=1)
    return community, rows, period_figures(loaded.master, loaded.sockets, whole)


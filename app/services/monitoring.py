"""Live monitoring: what every community looks like now, and a pile's history.

Read-only. The overview is five grouped queries over the caller's communities (the power
company: its whole tree; an operator: its company's), whatever their number:

* piles online / offline (a disabled pile counts as offline);
* ports by status; the ports of an offline pile count as ``offline`` whatever they said
  last, because nothing they said is current;
* live power: the sum of ``power_w`` of the charging ports of online piles;
* sessions in progress (starting, active, stopping);
* incidents not resolved, by severity.

The server-sent-events endpoint (``GET /api/v1/monitoring/events``) polls
:func:`overview` and :func:`changed_incidents` once a second per connection and sends
only what changed (see the README for why polling rather than pushing from the bridge).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from app.domain.access import Actor
from app.domain.errors import InvalidInput
from app.domain.loss import CounterSeries
from app.models import (
    AlarmEvent,
    ChargingSession,
    Community,
    Incident,
    Pile,
    PileEvent,
    Port,
)
from app.models.piles import PORT_STATUSES
from app.services import access
from app.services.loss import day_period, socket_readings
from app.services.uow import UnitOfWork

OPEN_SESSION = ("starting", "active", "stopping")
UNRESOLVED = ("open", "acknowledged")
SEVERITIES = ("critical", "major", "minor")
STATUS_EVENT_KINDS = ("online", "offline", "port_status", "stale_will", "stale_online")
MAX_HISTORY_DAYS = 92
HISTORY_LIMIT = 500


@dataclass
class CommunityStatus:
    community_id: int
    name: str
    property_company_id: int
    lat: float | None
    lng: float | None
    piles_online: int = 0
    piles_offline: int = 0
    ports: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PORT_STATUSES, 0))
    live_power_w: int = 0
    active_sessions: int = 0
    open_incidents: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEVERITIES, 0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "community_id": self.community_id, "name": self.name,
            "property_company_id": self.property_company_id, "lat": self.lat, "lng": self.lng,
            "piles": {"online": self.piles_online, "offline": self.piles_offline,
                      "total": self.piles_online + self.piles_offline},
            "ports": {**self.ports, "total": sum(self.ports.values())},
            "live_power_w": self.live_power_w, "active_sessions": self.active_sessions,
            "open_incidents": {**self.open_incidents,
                               "total": sum(self.open_incidents.values())},
        }


def overview(uow: UnitOfWork, actor: Actor, community_id: int | None = None
             ) -> list[CommunityStatus]:
    session = uow.session
    stmt = access.scoped_communities(actor).order_by(Community.id)
    if community_id is not None:
        stmt = stmt.where(Community.id == community_id)
    communities = {c.id: CommunityStatus(c.id, c.name, c.property_company_id, c.lat, c.lng)
                   for c in session.execute(stmt).scalars()}
    if not communities:
        return []
    ids = list(communities)
    live = Pile.online.is_(True) & Pile.enabled.is_(True)
    for cid, online, n in session.execute(
            select(Pile.community_id, live, func.count()).where(Pile.community_id.in_(ids))
            .group_by(Pile.community_id, live)):
        if online:
            communities[cid].piles_online += n
        else:
            communities[cid].piles_offline += n
    for cid, online, status, n, power in session.execute(
            select(Pile.community_id, live, Port.status, func.count(),
                   func.coalesce(func.sum(Port.power_w), 0))
            .join(Pile, Pile.id == Port.pile_id).where(Pile.community_id.in_(ids))
            .group_by(Pile.community_id, live, Port.status)):
        status = status if online else "offline"
        ports = communities[cid].ports
        ports[status] = ports.get(status, 0) + n
        if online and status == "charging":
            communities[cid].live_power_w += int(power)
    for cid, n in session.execute(
            select(ChargingSession.community_id, func.count())
            .where(ChargingSession.community_id.in_(ids),
                   ChargingSession.status.in_(OPEN_SESSION))
            .group_by(ChargingSession.community_id)):
        communities[cid].active_sessions = n
    for cid, severity, n in session.execute(
            select(Incident.community_id, Incident.severity, func.count())
            .where(Incident.community_id.in_(ids), Incident.state.in_(UNRESOLVED))
            .group_by(Incident.community_id, Incident.severity)):
        communities[cid].open_incidents[severity] = n
    return list(communities.values())


def totals(rows: list[CommunityStatus]) -> dict[str, Any]:
    ports: dict[str, int] = defaultdict(int)
    incidents: dict[str, int] = defaultdict(int)
    for r in rows:
        for k, v in r.ports.items():
            ports[k] += v
        for k, v in r.open_incidents.items():
            incidents[k] += v
    return {
        "communities": len(rows),
        "piles": {"online": sum(r.piles_online for r in rows),
                  "offline": sum(r.piles_offline for r in rows)},
        "ports": dict(ports), "live_power_w": sum(r.live_power_w for r in rows),
        "active_sessions": sum(r.active_sessions for r in rows),
        "open_incidents": dict(incidents),
    }


def changed_incidents(uow: UnitOfWork, actor: Actor, since: datetime,
                      community_id: int | None = None, limit: int = 100) -> list[Incident]:
    """Incidents opened or changed after ``since`` in the caller's communities, oldest
    change first (for the event stream)."""
    stmt = select(Incident).where(
        Incident.community_id.in_(access.scoped_community_ids(actor)),
        Incident.updated_at > since)
    if community_id is not None:
        stmt = stmt.where(Incident.community_id == community_id)
    return list(uow.session.execute(
        stmt.options(selectinload(Incident.pile))
        .order_by(Incident.updated_at, Incident.id).limit(limit)).scalars())


# --------------------------------------------------------------------------- history


@dataclass(frozen=True)
class PileHistory:
    pile: Pile
    first_day: date
    last_day: date
    status_changes: list[PileEvent]
    alarms: list[AlarmEvent]
    incidents: list[Incident]
    sessions: list[ChargingSession]
    energy_per_day: list[dict[str, Any]]


def pile_history(uow: UnitOfWork, actor: Actor, pile_id: int, first: date | None = None,
                 last: date | None = None, *, now: datetime | None = None) -> PileHistory:
    """Status changes, alarms, incidents, sessions (newest first, at most 500 of each) and
    the energy its sockets counted per local day, over ``first``..``last`` (default: the
    last 7 days)."""
    session = uow.session
    pile = access.get_pile(session, actor, pile_id)
    tz = pile.community.timezone
    today = (now or datetime.now(ZoneInfo(tz))).astimezone(ZoneInfo(tz)).date()
    last = last or today
    first = first or last - timedelta(days=6)
    if last < first:
        raise InvalidInput("'to' is before 'from'", field="to")
    if (last - first).days + 1 > MAX_HISTORY_DAYS:
        raise InvalidInput(f"at most {MAX_HISTORY_DAYS} days at a time", field="to")
    start, end = day_period(first, tz).start, day_period(last, tz).end
    events = list(session.execute(
        select(PileEvent).where(PileEvent.pile_id == pile.id,
                                PileEvent.kind.in_(STATUS_EVENT_KINDS),
                                PileEvent.at >= start, PileEvent.at < end)
        .order_by(PileEvent.at.desc(), PileEvent.id.desc()).limit(HISTORY_LIMIT)).scalars())
    alarms = list(session.execute(
        select(AlarmEvent).where(AlarmEvent.pile_id == pile.id, AlarmEvent.at >= start,
                                 AlarmEvent.at < end)
        .order_by(AlarmEvent.at.desc(), AlarmEvent.id.desc()).limit(HISTORY_LIMIT)).scalars())
    incidents = list(session.execute(
        select(Incident).where(Incident.pile_id == pile.id, Incident.opened_at < end,
                               Incident.last_raised_at >= start)
        .order_by(Incident.id.desc()).limit(HISTORY_LIMIT)).scalars())
    sessions = list(session.execute(
        select(ChargingSession).where(
            ChargingSession.pile_id == pile.id, ChargingSession.created_at < end,
            (ChargingSession.ended_at.is_(None)) | (ChargingSession.ended_at >= start))
        .order_by(ChargingSession.id.desc()).limit(HISTORY_LIMIT)).scalars())
    ports = {p.id: p.number for p in pile.ports}
    series = {p: CounterSeries(rs) for p, rs in
              socket_readings(session, list(ports), start, end).items()}
    energy = []
    day = first
    while day <= last:
        period = day_period(day, tz)
        by_port = {str(ports[p]): s.energy(period) for p, s in series.items()}
        energy.append({"day": day.isoformat(), "energy_wh": sum(by_port.values()),
                       "by_port": by_port})
        day += timedelta(days=1)
    return PileHistory(pile, first, last, events, alarms, incidents, sessions, energy)


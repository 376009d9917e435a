"""Reports per community, per local day and per month; the monthly data set; exports.

Figures and where they come from (read-only; amounts integer fen, energy Wh, time s):

* ``sessions``, ``energy_wh``: charging sessions *settled* whose end falls in the period,
  energy = end - start reading (late end reports included).
* ``revenue_fen`` = ``charging_fen`` + ``coin_fen``, from the ledger: CAPTURE transactions
  (settled charges and their late reconciliations) of the community's charging accounts,
  and COIN_SALE transactions of its piles (their reference names the pile), by the time
  they were recorded.
* ``topups_fen`` by channel (TOPUP), ``topup_reversals_fen`` (TOPUP_REVERSAL) and
  ``refunds_fen`` (net of the REFUND entries on the accounts' wallets, so a refund that
  failed and was restored counts zero), from ``ledger_transactions`` only: nothing here
  depends on the payment tables.
* ``utilisation_per_mille`` = busy port-seconds / available port-seconds, rounded half up:
  busy = every session's [start, end) (an open one: until now) cut to the period;
  available = every port's existence (from its registration until now) cut to the period.

Days are the community's local calendar days (its time zone); a month is the sum of its
days (utilisation recomputed from the sums). The monthly data set adds, per charging account,
per port (with the socket meter's own count) and for the master meter (with the loss
figures of ``app.domain.loss``) what the seed's monthly statement asks for.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.styles import Font
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.access import Actor
from app.domain.errors import InvalidInput
from app.domain.ledger import TransactionKind
from app.domain.loss import Period, period_figures
from app.domain.money import mul_div_round
from app.models import (
    ChargingAccount,
    ChargingSession,
    Community,
    LedgerEntry,
    LedgerTransaction,
    MasterMeterReading,
    Pile,
    Port,
)
from app.models.base import utcnow
from app.services import access
from app.services.loss import day_period, load
from app.services.uow import UnitOfWork

MAX_DAYS = 366
MAX_MONTHS = 24
CHANNELS = ("cash", "wechat", "alipay")
_MONTH = re.compile(r"(20[0-9]{2})-(0[1-9]|1[0-2])")


# --------------------------------------------------------------------------- periods


def parse_month(text: str, field_name: str = "month") -> date:
    match = _MONTH.fullmatch(text or "")
    if match is None:
        raise InvalidInput("a month is YYYY-MM (2000-01 .. 2099-12)", field=field_name)
    return date(int(match.group(1)), int(match.group(2)), 1)


def next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def month_period(first: date, tz: str) -> Period:
    return Period(day_period(first, tz).start, day_period(next_month(first), tz).start)


def _overlap_s(a0: datetime, a1: datetime, b0: datetime, b1: datetime) -> int:
    lo, hi = max(a0, b0), min(a1, b1)
    return max(0, int((hi - lo).total_seconds()))


def per_mille(numerator: int, denominator: int) -> int | None:
    return None if denominator <= 0 else mul_div_round(numerator, 1000, denominator)


# --------------------------------------------------------------------------- rows


@dataclass
class Row:
    community_id: int
    community_name: str
    period: str  # YYYY-MM-DD or YYYY-MM
    sessions: int = 0
    energy_wh: int = 0
    charging_fen: int = 0
    coin_fen: int = 0
    topups_by_channel: dict[str, int] = field(default_factory=dict)
    topup_reversals_fen: int = 0
    refunds_fen: int = 0
    busy_port_s: int = 0
    available_port_s: int = 0

    @property
    def revenue_fen(self) -> int:
        return self.charging_fen + self.coin_fen

    @property
    def topups_fen(self) -> int:
        return sum(self.topups_by_channel.values())

    @property
    def utilisation_per_mille(self) -> int | None:
        return per_mille(self.busy_port_s, self.available_port_s)

    def add(self, other: Row) -> None:
        for name in ("sessions", "energy_wh", "charging_fen", "coin_fen",
                     "topup_reversals_fen", "refunds_fen", "busy_port_s", "available_port_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for channel, fen in other.topups_by_channel.items():
            self.topups_by_channel[channel] = self.topups_by_channel.get(channel, 0) + fen

    def as_dict(self) -> dict[str, Any]:
        return {
            "community_id": self.community_id, "community": self.community_name,
            "period": self.period, "sessions": self.sessions, "energy_wh": self.energy_wh,
            "revenue_fen": self.revenue_fen, "charging_fen": self.charging_fen,
            "coin_fen": self.coin_fen, "topups_fen": self.topups_fen,
            "topups_by_channel": dict(sorted(self.topups_by_channel.items())),
            "topup_reversals_fen": self.topup_reversals_fen, "refunds_fen": self.refunds_fen,
            "busy_port_s": self.busy_port_s, "available_port_s": self.available_port_s,
            "utilisation_per_mille": self.utilisation_per_mille,
        }


ROW_COLUMNS = ["community_id", "community", "period", "sessions", "energy_wh", "revenue_fen",
               "charging_fen", "coin_fen", "topups_fen", *(f"topups_{c}_fen" for c in CHANNELS),
               "topups_other_fen", "topup_reversals_fen", "refunds_fen", "busy_port_s",
               "available_port_s", "utilisation_per_mille"]


def flat(row: Row) -> list[Any]:
    d = row.as_dict()
    channels = d.pop("topups_by_channel")
    d.update({f"topups_{c}_fen": channels.get(c, 0) for c in CHANNELS})
    d["topups_other_fen"] = sum(v for k, v in channels.items() if k not in CHANNELS)
    return [d[c] for c in ROW_COLUMNS]


# --------------------------------------------------------------------------- loading


def _communities(session: Session, actor: Actor, community_id: int | None) -> list[Community]:
    if community_id is not None:
        return [access.get_community(session, actor, community_id)]
    return list(session.execute(
        access.scoped_communities(actor).order_by(Community.id)).scalars())


def _local_day(at: datetime, tz: ZoneInfo) -> date:
    return at.astimezone(tz).date()


def daily_rows(session: Session, communities: Sequence[Community], first: date, last: date,
               *, now: datetime) -> list[Row]:
    """One row per community per local day from ``first`` to ``last``."""
    if not communities:
        return []
    zones = {c.id: ZoneInfo(c.timezone) for c in communities}
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    periods = {c.id: {d: day_period(d, c.timezone) for d in days} for c in communities}
    start = min(p[first].start for p in periods.values())
    end = max(p[last].end for p in periods.values())
    rows = {(c.id, d): Row(c.id, c.name, d.isoformat()) for c in communities for d in days}
    ids = list(zones)

    def row(community_id: int, at: datetime) -> Row | None:
        return rows.get((community_id, _local_day(at, zones[community_id])))

    # sessions: count and energy by end; busy time by overlap
    for cid, status, started, ended, e0, e1 in session.execute(
            select(ChargingSession.community_id, ChargingSession.status,
                   ChargingSession.started_at, ChargingSession.ended_at,
                   ChargingSession.start_energy_wh, ChargingSession.end_energy_wh)
            .where(ChargingSession.community_id.in_(ids),
                   ChargingSession.status.in_(("active", "stopping", "settled")),
                   ChargingSession.started_at.is_not(None), ChargingSession.started_at < end,
                   ChargingSession.ended_at.is_(None) | (ChargingSession.ended_at >= start))):
        if status == "settled" and ended is not None and (r := row(cid, ended)) is not None:
            r.sessions += 1
            if e0 is not None and e1 is not None:
                r.energy_wh += max(0, e1 - e0)
        stop = min(ended or now, now)  # a pile whose clock runs ahead: no busy time yet to come
        d = max(first, _local_day(started, zones[cid]))
        while d <= last and d <= _local_day(stop, zones[cid]):
            p = periods[cid][d]
            rows[(cid, d)].busy_port_s += _overlap_s(started, stop, p.start, p.end)
            d += timedelta(days=1)
    # ports: available time
    for cid, created in session.execute(
            select(Pile.community_id, Port.created_at).join(Pile, Pile.id == Port.pile_id)
            .where(Pile.community_id.in_(ids))):
        for d, p in periods[cid].items():
            rows[(cid, d)].available_port_s += _overlap_s(created, now, p.start, p.end)
    # ledger: the accounts' money events
    in_range = (LedgerTransaction.created_at >= start, LedgerTransaction.created_at < end)
    for cid, kind, channel, amount, at in session.execute(
            select(ChargingAccount.community_id, LedgerTransaction.kind,
                   LedgerTransaction.channel, LedgerTransaction.amount_fen,
                   LedgerTransaction.created_at)
            .join(ChargingAccount, ChargingAccount.id == LedgerTransaction.charging_account_id)
            .where(ChargingAccount.community_id.in_(ids), *in_range,
                   LedgerTransaction.kind.in_((TransactionKind.CAPTURE.value,
                                               TransactionKind.TOPUP.value,
                                               TransactionKind.TOPUP_REVERSAL.value)))):
        r = row(cid, at)
        if r is None:
            continue
        if kind == TransactionKind.CAPTURE.value:
            r.charging_fen += amount
        elif kind == TransactionKind.TOPUP.value:
            key = str(channel or "unknown")
            r.topups_by_channel[key] = r.topups_by_channel.get(key, 0) + amount
        else:
            r.topup_reversals_fen += amount
    for cid, amount, at in session.execute(
            select(ChargingAccount.community_id, LedgerEntry.amount_fen,
                   LedgerTransaction.created_at)
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .join(ChargingAccount, ChargingAccount.wallet_account_id == LedgerEntry.account_id)
            .where(ChargingAccount.community_id.in_(ids), *in_range,
                   LedgerTransaction.kind == TransactionKind.REFUND.value)):
        if (r := row(cid, at)) is not None:
            r.refunds_fen -= amount  # a wallet debit is negative
    # coin sales: the reference is "<pile serial>/<port>"
    piles = dict(session.execute(select(Pile.serial, Pile.community_id)
                                 .where(Pile.community_id.in_(ids))).all())
    companies = {c.property_company_id for c in communities}
    for reference, amount, at in session.execute(
            select(LedgerTransaction.reference, LedgerTransaction.amount_fen,
                   LedgerTransaction.created_at)
            .where(LedgerTransaction.kind == TransactionKind.COIN_SALE.value,
                   LedgerTransaction.property_company_id.in_(companies), *in_range)):
        cid = piles.get((reference or "").split("/", 1)[0])
        if cid is not None and (r := row(cid, at)) is not None:
            r.coin_fen += amount
    return [rows[(c.id, d)] for c in communities for d in days]


def monthly_rows(daily: Iterable[Row]) -> list[Row]:
    months: dict[tuple[int, str], Row] = {}
    for r in daily:
        key = (r.community_id, r.period[:7])
        if key not in months:
            months[key] = Row(r.community_id, r.community_name, r.period[:7])
        months[key].add(r)
    return list(months.values())


def chart(rows: Sequence[Row]) -> dict[str, Any]:
    """Per period, summed over the communities: what a bar or line chart needs."""
    labels = sorted({r.period for r in rows})
    index = {label: i for i, label in enumerate(labels)}
    metrics = ("revenue_fen", "energy_wh", "sessions", "topups_fen", "refunds_fen",
               "busy_port_s", "available_port_s")
    series: dict[str, list[int]] = {m: [0] * len(labels) for m in metrics}
    for r in rows:
        for m in metrics:
            series[m][index[r.period]] += getattr(r, m)
    series_util: list[int | None] = [
        per_mille(b, a) for b, a in zip(series["busy_port_s"], series["available_port_s"],
                                        strict=True)]
    return {"labels": labels, "series": {**series, "utilisation_per_mille": series_util}}


@dataclass(frozen=True)
class Report:
    granularity: str  # day | month
    first: str
    last: str
    rows: list[Row]

    def as_dict(self) -> dict[str, Any]:
        totals = Row(0, "", f"{self.first}..{self.last}")
        for r in self.rows:
            totals.add(r)
        total = totals.as_dict()
        for k in ("community_id", "community"):
            total.pop(k)
        return {"granularity": self.granularity, "from": self.first, "to": self.last,
                "rows": [r.as_dict() for r in self.rows], "totals": total,
                "chart": chart(self.rows)}


def daily_report(uow: UnitOfWork, actor: Actor, first: date, last: date, *,
                 community_id: int | None = None, now: datetime | None = None) -> Report:
    if last < first:
        raise InvalidInput("'to' is before 'from'", field="to")
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidInput(f"at most {MAX_DAYS} days at a time", field="to")
    communities = _communities(uow.session, actor, community_id)
    rows = daily_rows(uow.session, communities, first, last, now=now or utcnow())
    return Report("day", first.isoformat(), last.isoformat(), rows)


def monthly_report(uow: UnitOfWork, actor: Actor, first_month: str, last_month: str, *,
                   community_id: int | None = None, now: datetime | None = None) -> Report:
    first = parse_month(first_month, "from")
    last = parse_month(last_month, "to")
    if last < first:
        raise InvalidInput("'to' is before 'from'", field="to")
    if (last.year - first.year) * 12 + last.month - first.month + 1 > MAX_MONTHS:
        raise InvalidInput(f"at most {MAX_MONTHS} months at a time", field="to")
    communities = _communities(uow.session, actor, community_id)
    daily = daily_rows(uow.session, communities, first, next_month(last) - timedelta(days=1),
                       now=now or utcnow())
    return Report("month", first_month, last_month, monthly_rows(daily))


# --------------------------------------------------------------------------- data set


USER_COLUMNS = ["charging_account_id", "account_no", "holder_name", "kind", "status",
                "sessions", "energy_wh", "charged_fen", "topups_fen", "topup_reversals_fen",
                "refunds_fen"]
PORT_COLUMNS = ["port_id", "pile_serial", "port_no", "sessions", "energy_wh", "meter_wh",
                "busy_port_s", "available_port_s", "utilisation_per_mille"]
METER_COLUMNS = ["meter_serial", "readings", "first_read_at", "first_wh", "last_read_at",
                 "last_wh", "master_wh", "master_complete", "sockets_wh", "loss_wh",
                 "loss_per_mille"]


@dataclass(frozen=True)
class MonthlyDataset:
    community_id: int
    community_name: str
    month: str
    period_start: datetime
    period_end: datetime
    users: list[dict[str, Any]]
    ports: list[dict[str, Any]]
    master: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"community_id": self.community_id, "community": self.community_name,
                "month": self.month, "period_start": self.period_start.isoformat(),
                "period_end": self.period_end.isoformat(), "users": self.users,
                "ports": self.ports, "master_meter": self.master}


def monthly_dataset(uow: UnitOfWork, actor: Actor, community_id: int, month: str, *,
                    now: datetime | None = None) -> MonthlyDataset:
    now = now or utcnow()
    session = uow.session
    community = access.get_community(session, actor, community_id)
    period = month_period(parse_month(month), community.timezone)
    start, end = period.start, period.end
    # --- per charging account
    users: dict[int, dict[str, Any]] = {}
    for account in session.execute(select(ChargingAccount).where(
            ChargingAccount.community_id == community.id).order_by(ChargingAccount.id)
    ).scalars():
        users[account.id] = dict.fromkeys(USER_COLUMNS, 0) | {
            "charging_account_id": account.id, "account_no": account.account_no or "",
            "holder_name": account.holder_name, "kind": account.kind,
            "status": account.status}
    settled = session.execute(
        select(ChargingSession.charging_account_id, ChargingSession.port_id,
               ChargingSession.start_energy_wh, ChargingSession.end_energy_wh)
        .where(ChargingSession.community_id == community.id,
               ChargingSession.status == "settled", ChargingSession.ended_at >= start,
               ChargingSession.ended_at < end)).all()
    port_sessions: dict[int, list[int]] = defaultdict(list)
    for account_id, port_id, e0, e1 in settled:
        energy = max(0, (e1 or 0) - (e0 or 0)) if e0 is not None and e1 is not None else 0
        port_sessions[port_id].append(energy)
        if account_id in users:
            users[account_id]["sessions"] += 1
            users[account_id]["energy_wh"] += energy
    for account_id, kind, amount in session.execute(
            select(LedgerTransaction.charging_account_id, LedgerTransaction.kind,
                   LedgerTransaction.amount_fen)
            .where(LedgerTransaction.charging_account_id.in_(list(users) or [0]),
                   LedgerTransaction.created_at >= start, LedgerTransaction.created_at < end,
                   LedgerTransaction.kind.in_((TransactionKind.CAPTURE.value,
                                               TransactionKind.TOPUP.value,
                                               TransactionKind.TOPUP_REVERSAL.value)))):
        column = {"capture": "charged_fen", "topup": "topups_fen",
                  "topup_reversal": "topup_reversals_fen"}[kind]
        users[account_id][column] += amount
    for account_id, amount in session.execute(
            select(ChargingAccount.id, LedgerEntry.amount_fen)
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .join(ChargingAccount, ChargingAccount.wallet_account_id == LedgerEntry.account_id)
            .where(ChargingAccount.community_id == community.id,
                   LedgerTransaction.kind == TransactionKind.REFUND.value,
                   LedgerTransaction.created_at >= start, LedgerTransaction.created_at < end)):
        users[account_id]["refunds_fen"] -= amount
    user_rows = [u for u in users.values()
                 if u["status"] != "closed" or any(u[c] for c in USER_COLUMNS[5:])]
    # --- per port, and the master meter against the sockets
    loaded = load(session, community, start, end)
    figures = period_figures(loaded.master, loaded.sockets, period)
    busy: dict[int, int] = defaultdict(int)
    for port_id, started, ended in session.execute(
            select(ChargingSession.port_id, ChargingSession.started_at, ChargingSession.ended_at)
            .where(ChargingSession.community_id == community.id,
                   ChargingSession.status.in_(("active", "stopping", "settled")),
                   ChargingSession.started_at.is_not(None), ChargingSession.started_at < end,
                   ChargingSession.ended_at.is_(None) | (ChargingSession.ended_at >= start))):
        busy[port_id] += _overlap_s(started, ended or now, start, end)
    port_rows = []
    for port_id, serial, number, created in session.execute(
            select(Port.id, Pile.serial, Port.number, Port.created_at)
            .join(Pile, Pile.id == Port.pile_id).where(Pile.community_id == community.id)
            .order_by(Pile.serial, Port.number)):
        available = _overlap_s(created, now, start, end)
        port_rows.append({
            "port_id": port_id, "pile_serial": serial, "port_no": number,
            "sessions": len(port_sessions[port_id]), "energy_wh": sum(port_sessions[port_id]),
            "meter_wh": figures.by_socket.get(port_id, 0), "busy_port_s": busy[port_id],
            "available_port_s": available,
            "utilisation_per_mille": per_mille(busy[port_id], available)})
    master = _master_line(session, community, start, end)
    master.update({"master_wh": figures.master_wh,
                   "master_complete": figures.master_complete,
                   "sockets_wh": figures.sockets_wh, "loss_wh": figures.loss_wh,
                   "loss_per_mille": figures.per_mille})
    return MonthlyDataset(community.id, community.name, month, start, end, user_rows,
                          port_rows, master)


def _master_line(session: Session, community: Community, start: datetime, end: datetime
                 ) -> dict[str, Any]:
    rows = session.execute(
        select(MasterMeterReading.meter_serial, MasterMeterReading.read_at,
               MasterMeterReading.energy_wh)
        .where(MasterMeterReading.community_id == community.id,
               MasterMeterReading.read_at >= start, MasterMeterReading.read_at < end)
        .order_by(MasterMeterReading.read_at)).all()
    serials = sorted({r[0] for r in rows}) or ([community.master_meter_serial]
                                               if community.master_meter_serial else [])
    return {
        "meter_serial": ",".join(serials), "readings": len(rows),
        "first_read_at": rows[0][1].isoformat() if rows else None,
        "first_wh": int(rows[0][2]) if rows else None,
        "last_read_at": rows[-1][1].isoformat() if rows else None,
        "last_wh": int(rows[-1][2]) if rows else None,
    }


# --------------------------------------------------------------------------- export


XLSX_MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _csv(blocks: Sequence[tuple[str | None, list[str], Iterable[Sequence[Any]]]]) -> bytes:
    """UTF-8 with BOM (Excel shows Chinese names), CRLF; blocks separated by a blank line."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for i, (title, header, rows) in enumerate(blocks):
        if i:
            writer.writerow([])
        if title:
            writer.writerow([title])
        writer.writerow(header)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
    return buffer.getvalue().encode("utf-8-sig")


def _xlsx(sheets: Sequence[tuple[str, list[str], Iterable[Sequence[Any]]]]) -> bytes:
    workbook = Workbook()
    first = workbook.active
    assert first is not None
    workbook.remove(first)
    for title, header, rows in sheets:
        sheet = workbook.create_sheet(title[:31])
        sheet.append(header)
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for row in rows:
            sheet.append(list(row))
        for column in sheet.columns:
            width = max(len(str(c.value or "")) for c in column)
            sheet.column_dimensions[column[0].column_letter].width = min(40, max(8, width + 2))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def report_csv(report: Report) -> bytes:
    return _csv([(None, ROW_COLUMNS, (flat(r) for r in report.rows))])


def report_xlsx(report: Report) -> bytes:
    title = "Daily" if report.granularity == "day" else "Monthly"
    return _xlsx([(title, ROW_COLUMNS, (flat(r) for r in report.rows))])


def _dataset_blocks(d: MonthlyDataset) -> list[tuple[str, list[str], list[list[Any]]]]:
    return [
        ("users", USER_COLUMNS, [[u[c] for c in USER_COLUMNS] for u in d.users]),
        ("ports", PORT_COLUMNS, [[p[c] for c in PORT_COLUMNS] for p in d.ports]),
        ("master_meter", METER_COLUMNS, [[d.master.get(c) for c in METER_COLUMNS]]),
    ]


def dataset_csv(d: MonthlyDataset) -> bytes:
    return _csv(_dataset_blocks(d))


def dataset_xlsx(d: MonthlyDataset) -> bytes:
    return _xlsx([(title.replace("_", " ").title(), header, rows)
                  for title, header, rows in _dataset_blocks(d)])

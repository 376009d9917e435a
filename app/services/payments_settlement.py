"""Monthly settlement (清算) of one property company, from the ledger and the master meters.

* Top-ups collected: TOPUP transactions of the company by channel (wechat, alipay, cash);
  cash reversals separately.
* Refunds: the net of REFUND entries on the company's collection account by channel (a
  refund's compensating credit after ABNORMAL/CLOSED cancels it out).
* Other money the collection account took in (e.g. coin sales), by kind; the net collected
  is exactly what the collection account received over the month.
* Revenue: entries on the company's revenue account, by transaction kind (CAPTURE from
  settled charging, and any other earning kind).
* Energy sold: Wh of the charging sessions settled in the month (end − start reading),
  plus whatever else is registered in ``ENERGY_SOLD_SOURCES``.
* Owed to the power company: each community master meter's last minus first reading in
  the month, summed, × the power company's grid price, rounded half up once.

The month is a Beijing calendar month. Amounts are integer fen; yuan strings appear only
in the export's display columns.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from openpyxl import Workbook
from openpyxl.styles import Font
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app.domain.access import Actor
from app.domain.errors import InvalidInput
from app.domain.ledger import TransactionKind
from app.domain.money import fen_to_yuan, mul_div_round
from app.models import (
    ChargingSession,
    Community,
    LedgerEntry,
    LedgerTransaction,
    MasterMeterReading,
)
from app.services.payments_common import BEIJING, company_for
from app.services.uow import UnitOfWork


def settled_charging_wh(session: Session, company_id: int, start: datetime,
                        end: datetime) -> int:
    """Wh of the company's charging sessions settled in the period (end - start reading)."""
    energy = ChargingSession.end_energy_wh - ChargingSession.start_energy_wh
    total = session.execute(
        select(func.coalesce(func.sum(case((energy > 0, energy), else_=0)), 0))
        .join(Community, Community.id == ChargingSession.community_id)
        .where(Community.property_company_id == company_id,
               ChargingSession.status == "settled",
               ChargingSession.settled_at >= start, ChargingSession.settled_at < end,
               ChargingSession.start_energy_wh.is_not(None),
               ChargingSession.end_energy_wh.is_not(None))
    ).scalar_one()
    return int(total)


# (session, property_company_id, period_start, period_end) -> Wh sold; summed.
ENERGY_SOLD_SOURCES: list[Callable[[Session, int, datetime, datetime], int]] = [
    settled_charging_wh,
]

_MONTH = re.compile(r"(20[0-9]{2})-(0[1-9]|1[0-2])")
HEADER = ["section", "item", "energy_wh", "energy_kwh", "amount_fen", "amount_yuan"]


@dataclass(frozen=True)
class MeterLine:
    community_id: int
    community_name: str
    meter_serial: str
    first_read_at: datetime
    last_read_at: datetime
    first_wh: int
    last_wh: int
    readings: int

    @property
    def energy_wh(self) -> int:
        # A meter that went backwards (replaced, reset) is not billed negative energy.
        return max(0, self.last_wh - self.first_wh)


@dataclass(frozen=True)
class Settlement:
    property_company_id: int
    property_company_name: str
    power_company_name: str
    month: str
    period_start: datetime
    period_end: datetime
    grid_price_fen_per_kwh: int
    topups_by_channel: dict[str, int] = field(default_factory=dict)
    topup_reversals_fen: int = 0
    refunds_by_channel: dict[str, int] = field(default_factory=dict)
    # Other money the collection account received, by kind (e.g. coins from a pile's box).
    other_collected_by_kind: dict[str, int] = field(default_factory=dict)
    revenue_by_kind: dict[str, int] = field(default_factory=dict)
    energy_sold_wh: int = 0
    meters: list[MeterLine] = field(default_factory=list)

    @property
    def topups_fen(self) -> int:
        return sum(self.topups_by_channel.values())

    @property
    def refunds_fen(self) -> int:
        return sum(self.refunds_by_channel.values())

    @property
    def other_collected_fen(self) -> int:
        return sum(self.other_collected_by_kind.values())

    @property
    def net_collected_fen(self) -> int:
        """What the collection account took in over the month, net."""
        return (self.topups_fen - self.topup_reversals_fen - self.refunds_fen
                + self.other_collected_fen)

    @property
    def revenue_fen(self) -> int:
        return sum(self.revenue_by_kind.values())

    @property
    def master_energy_wh(self) -> int:
        return sum(m.energy_wh for m in self.meters)

    @property
    def owed_to_power_company_fen(self) -> int:
        return mul_div_round(self.master_energy_wh, self.grid_price_fen_per_kwh, 1000)


def month_window(month: str) -> tuple[datetime, datetime]:
    match = _MONTH.fullmatch(month or "")
    if match is None:
        raise InvalidInput("month is YYYY-MM (2000-01 .. 2099-12)", field="month")
    year, number = int(match.group(1)), int(match.group(2))
    start = datetime(year, number, 1, tzinfo=BEIJING)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=BEIJING)
    return start, end


def monthly_settlement(uow: UnitOfWork, actor: Actor | None, company_id: int,
                       month: str) -> Settlement:
    """The settlement of one property company for one month (staff within scope;
    ``actor=None`` for the CLI)."""
    start, end = month_window(month)
    session = uow.session
    company = company_for(session, actor, company_id)
    in_month = (LedgerTransaction.created_at >= start, LedgerTransaction.created_at < end)
    topups = {
        str(channel or "unknown"): int(total) for channel, total in session.execute(
            select(LedgerTransaction.channel, func.sum(LedgerTransaction.amount_fen))
            .where(LedgerTransaction.property_company_id == company.id,
                   LedgerTransaction.kind == TransactionKind.TOPUP.value, *in_month)
            .group_by(LedgerTransaction.channel))
    }
    reversals = int(session.execute(
        select(func.coalesce(func.sum(LedgerTransaction.amount_fen), 0))
        .where(LedgerTransaction.property_company_id == company.id,
               LedgerTransaction.kind == TransactionKind.TOPUP_REVERSAL.value, *in_month)
    ).scalar_one())
    refunds = {
        str(channel or "unknown"): int(total) for channel, total in session.execute(
            select(LedgerTransaction.channel, func.sum(LedgerEntry.amount_fen))
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .where(LedgerEntry.account_id == company.collection_account_id,
                   LedgerTransaction.kind == TransactionKind.REFUND.value, *in_month)
            .group_by(LedgerTransaction.channel))
        if int(total)
    }
    own_kinds = (TransactionKind.TOPUP.value, TransactionKind.TOPUP_REVERSAL.value,
                 TransactionKind.REFUND.value)
    other = {
        str(kind): -int(total) for kind, total in session.execute(
            select(LedgerTransaction.kind, func.sum(LedgerEntry.amount_fen))
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .where(LedgerEntry.account_id == company.collection_account_id,
                   LedgerTransaction.kind.not_in(own_kinds), *in_month)
            .group_by(LedgerTransaction.kind))
        if int(total)
    }
    revenue = {
        str(kind): int(total) for kind, total in session.execute(
            select(LedgerTransaction.kind, func.sum(LedgerEntry.amount_fen))
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .where(LedgerEntry.account_id == company.revenue_account_id, *in_month)
            .group_by(LedgerTransaction.kind))
        if int(total)
    }
    energy_sold = sum(int(source(session, company.id, start, end))
                      for source in ENERGY_SOLD_SOURCES)
    return Settlement(
        property_company_id=company.id,
        property_company_name=company.name,
        power_company_name=company.power_company.name,
        month=month,
        period_start=start,
        period_end=end,
        grid_price_fen_per_kwh=company.power_company.grid_price_fen_per_kwh,
        topups_by_channel=dict(sorted(topups.items())),
        topup_reversals_fen=reversals,
        refunds_by_channel=dict(sorted(refunds.items())),
        other_collected_by_kind=dict(sorted(other.items())),
        revenue_by_kind=dict(sorted(revenue.items())),
        energy_sold_wh=energy_sold,
        meters=_meter_lines(session, company.id, start, end),
    )


def _meter_lines(session: Session, company_id: int, start: datetime,
                 end: datetime) -> list[MeterLine]:
    spans = session.execute(
        select(MasterMeterReading.community_id, Community.name, MasterMeterReading.meter_serial,
               func.min(MasterMeterReading.read_at), func.max(MasterMeterReading.read_at),
               func.count(MasterMeterReading.id))
        .join(Community, Community.id == MasterMeterReading.community_id)
        .where(Community.property_company_id == company_id,
               MasterMeterReading.read_at >= start, MasterMeterReading.read_at < end)
        .group_by(MasterMeterReading.community_id, Community.name,
                  MasterMeterReading.meter_serial)
        .order_by(MasterMeterReading.community_id, MasterMeterReading.meter_serial)
    ).all()
    lines = []
    for community_id, name, serial, first_at, last_at, count in spans:
        def energy_at(moment: datetime, serial: str = serial) -> int:
            return int(session.execute(
                select(MasterMeterReading.energy_wh).where(
                    MasterMeterReading.meter_serial == serial,
                    MasterMeterReading.read_at == moment)
            ).scalars().first() or 0)

        first_at = _aware(first_at)
        last_at = _aware(last_at)
        lines.append(MeterLine(int(community_id), str(name), str(serial), first_at, last_at,
                               energy_at(first_at), energy_at(last_at), int(count)))
    return lines


def _aware(value: datetime | str) -> datetime:
    """min()/max() over a UTCDateTime column bypass its type on SQLite (naive / text)."""
    from datetime import UTC

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- export


def _kwh(wh: int) -> str:
    return f"{wh // 1000}.{wh % 1000:03d}"


def settlement_rows(s: Settlement) -> list[list[object]]:
    """The settlement as table rows under ``HEADER`` (fen and Wh as integers)."""
    rows: list[list[object]] = []

    def money(section: str, item: str, fen: int) -> None:
        rows.append([section, item, "", "", fen, fen_to_yuan(fen)])

    for channel, fen in s.topups_by_channel.items():
        money("topups", channel, fen)
    money("topups", "total", s.topups_fen)
    money("topup_reversals", "cash", s.topup_reversals_fen)
    for channel, fen in s.refunds_by_channel.items():
        money("refunds", channel, fen)
    money("refunds", "total", s.refunds_fen)
    for kind, fen in s.other_collected_by_kind.items():
        money("other_collected", kind, fen)
    money("net_collected", "topups - reversals - refunds + other", s.net_collected_fen)
    for kind, fen in s.revenue_by_kind.items():
        money("revenue", kind, fen)
    money("revenue", "total", s.revenue_fen)
    rows.append(["energy_sold", "settled charging", s.energy_sold_wh, _kwh(s.energy_sold_wh),
                 "", ""])
    for m in s.meters:
        rows.append(["master_meter", f"{m.community_name} / {m.meter_serial}", m.energy_wh,
                     _kwh(m.energy_wh), "", ""])
    owed = s.owed_to_power_company_fen
    rows.append(["owed_to_power_company",
                 f"{_kwh(s.master_energy_wh)} kWh x {s.grid_price_fen_per_kwh} fen/kWh",
                 s.master_energy_wh, _kwh(s.master_energy_wh), owed, fen_to_yuan(owed)])
    return rows


def _info(s: Settlement) -> list[tuple[str, str]]:
    return [
        ("property_company", f"{s.property_company_name} (id {s.property_company_id})"),
        ("power_company", s.power_company_name),
        ("month", s.month),
        ("period", f"{s.period_start.isoformat()} .. {s.period_end.isoformat()}"),
        ("grid_price_fen_per_kwh", str(s.grid_price_fen_per_kwh)),
    ]


def to_csv(s: Settlement) -> bytes:
    """CSV (UTF-8 with BOM, so Excel shows the Chinese names): info rows, then the table."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(HEADER)
    for key, value in _info(s):
        writer.writerow(["info", f"{key}={value}", "", "", "", ""])
    writer.writerows(settlement_rows(s))
    return buffer.getvalue().encode("utf-8-sig")


def to_xlsx(s: Settlement) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Settlement"
    for key, value in _info(s):
        sheet.append([key, value])
    sheet.append([])
    sheet.append(HEADER)
    for cell in sheet[sheet.max_row]:
        cell.font = Font(bold=True)
    for row in settlement_rows(s):
        sheet.append(row)
    meters = workbook.create_sheet("Master meters")
    meters.append(["community_id", "community", "meter_serial", "first_read_at",
                   "last_read_at", "first_wh", "last_wh", "energy_wh", "readings"])
    for m in s.meters:
        meters.append([m.community_id, m.community_name, m.meter_serial,
                       m.first_read_at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
                       m.last_read_at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
                       m.first_wh, m.last_wh, m.energy_wh, m.readings])
    for ws in (sheet, meters):
        for column in ws.columns:
            width = max(len(str(c.value or "")) for c in column)
            ws.column_dimensions[column[0].column_letter].width = min(60, max(10, width + 2))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()

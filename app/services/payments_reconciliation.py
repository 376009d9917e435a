"""Reconciliation (对账): a provider's daily bill against our orders and refunds.

Our side for a bill date (a Beijing calendar day) is: orders of that provider paid that
day, plus every order the bill lists (whatever its state: a bill row for an order we still
think unpaid is a ``status_differs``); refunds that succeeded that day, plus every refund
the bill lists. ``app.payments.bills.reconcile`` compares the two; each finding is stored
as a ``reconciliation_items`` row, attributed to the property company of our order or
refund when we have one (operators see only theirs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.domain.access import Actor, Role, require_role
from app.domain.errors import InvalidInput, NotFound
from app.models import PaymentOrder, ReconciliationItem, ReconciliationRun, Refund
from app.models.payments import PROVIDERS
from app.payments.bills import (
    BillFormatError,
    BillRow,
    OrderRecord,
    parse_alipay_trade_bill,
    parse_alipay_trade_csv,
    parse_wechat_trade_bill,
    reconcile,
)
from app.payments.errors import ProviderRejected, ProviderUnavailable
from app.services.payments import scope_by_company
from app.services.payments_common import (
    BEIJING,
    PaymentProviderRejected,
    PaymentProviderUnavailable,
    release_connection,
)
from app.services.payments_providers import alipay_client, wechat_client
from app.services.uow import UnitOfWork

REFUND_BILL_STATUS = {
    "success": "SUCCESS", "pending": "PROCESSING", "processing": "PROCESSING",
    "abnormal": "ABNORMAL", "closed": "CLOSED", "failed": "FAILED",
}


@dataclass(frozen=True)
class RunView:
    """A run as one caller may see it: the mismatches outside its tenants are not counted."""

    run: ReconciliationRun
    visible_mismatches: int


def day_window(bill_date: date) -> tuple[datetime, datetime]:
    start = datetime.combine(bill_date, time(0), BEIJING)
    return start, start + timedelta(days=1)


def fetch_bill(provider: str, bill_date: date) -> bytes:
    """Download a day's trade bill through the provider client (no DB transaction open)."""
    try:
        if provider == "wechat":
            return wechat_client().trade_bill(bill_date).encode("utf-8")
        client = alipay_client()
        return client.download_bill(client.bill_download_url(bill_date))
    except ProviderUnavailable as exc:
        raise PaymentProviderUnavailable("the bill could not be downloaded; try later") from exc
    except ProviderRejected as exc:
        raise PaymentProviderRejected("the provider has no bill for this day",
                                      provider_code=exc.provider_code) from exc


def parse_bill(provider: str, content: bytes) -> list[BillRow]:
    """WeChat: the UTF-8 trade bill text. Alipay: the downloaded zip, or its 业务明细 CSV."""
    try:
        if provider == "wechat":
            bill = parse_wechat_trade_bill(content.decode("utf-8-sig"))
            if bill.summary is not None and bill.summary.total_count != len(bill.rows):
                raise InvalidInput("the bill's summary does not match its rows",
                                   summary_count=bill.summary.total_count, rows=len(bill.rows))
            return list(bill.rows)
        if content[:2] == b"PK":
            return list(parse_alipay_trade_bill(content))
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = content.decode("gb18030")
        return list(parse_alipay_trade_csv(text))
    except UnicodeDecodeError as exc:
        raise InvalidInput("the bill file is not text in the provider's encoding") from exc
    except BillFormatError as exc:
        raise InvalidInput(f"the bill file is not a {provider} trade bill: {exc.message}") from exc


def _chunks(values: Sequence[str], size: int = 500) -> list[Sequence[str]]:
    return [values[i:i + size] for i in range(0, len(values), size)]


def _orders_by_no(session: Session, provider: str, numbers: set[str]) -> dict[str, PaymentOrder]:
    found: dict[str, PaymentOrder] = {}
    for chunk in _chunks(sorted(n for n in numbers if n)):
        for order in session.execute(select(PaymentOrder).where(
                PaymentOrder.provider == provider, PaymentOrder.out_trade_no.in_(chunk))).scalars():
            found[order.out_trade_no] = order
    return found


def _our_side(session: Session, provider: str, bill_date: date, rows: Sequence[BillRow]
              ) -> tuple[list[OrderRecord], dict[str, PaymentOrder], dict[str, Refund]]:
    start, end = day_window(bill_date)
    orders = {o.out_trade_no: o for o in session.execute(select(PaymentOrder).where(
        PaymentOrder.provider == provider, PaymentOrder.status == "paid",
        PaymentOrder.paid_at >= start, PaymentOrder.paid_at < end)).scalars()}
    listed = {r.out_trade_no for r in rows if r.kind == "payment"}
    orders.update(_orders_by_no(session, provider, listed - orders.keys()))
    refunds = {r.out_refund_no: r for r in session.execute(select(Refund).where(
        Refund.provider == provider, Refund.status == "success",
        Refund.finished_at >= start, Refund.finished_at < end)).scalars()}
    listed_refunds = sorted({r.out_refund_no for r in rows if r.kind == "refund"} - refunds.keys())
    for chunk in _chunks(listed_refunds):
        for refund in session.execute(select(Refund).where(
                Refund.provider == provider, Refund.out_refund_no.in_(chunk))).scalars():
            refunds[refund.out_refund_no] = refund
    records = [
        OrderRecord(provider, "payment", o.out_trade_no, o.amount_fen,  # type: ignore[arg-type]
                    "SUCCESS" if o.status == "paid" else o.status.upper())
        for o in orders.values()
    ]
    # Orders only a refund row names: for the refund records and to attribute findings.
    refund_orders = {o.id: o for o in orders.values()}
    missing_ids = {r.order_id for r in refunds.values()} - refund_orders.keys()
    if missing_ids:
        for order in session.execute(select(PaymentOrder).where(
                PaymentOrder.id.in_(missing_ids))).scalars():
            refund_orders[order.id] = order
    for refund in refunds.values():
        records.append(OrderRecord(
            provider, "refund", refund_orders[refund.order_id].out_trade_no,  # type: ignore[arg-type]
            refund.amount_fen, REFUND_BILL_STATUS[refund.status], refund.out_refund_no))
    every_order = {o.out_trade_no: o for o in refund_orders.values()}
    refund_row_orders = {r.out_trade_no for r in rows if r.kind == "refund"} - every_order.keys()
    every_order.update(_orders_by_no(session, provider, refund_row_orders))
    return records, every_order, refunds


def import_bill(
    uow: UnitOfWork,
    actor: Actor | None,
    *,
    provider: str,
    bill_date: date,
    content: bytes | None = None,
) -> RunView:
    """Reconcile one day's bill: ``content`` is the uploaded file, or None to fetch it.
    ``actor=None`` is the system (CLI, jobs)."""
    if actor is not None:
        require_role(actor, Role.PLATFORM_ADMIN, Role.PROPERTY_OPERATOR)
    if provider not in PROVIDERS:
        raise InvalidInput("unknown payment provider", field="provider")
    source = "upload"
    if content is None:
        release_connection(uow.session)
        content = fetch_bill(provider, bill_date)
        source = "fetch"
    rows = parse_bill(provider, content)
    session = uow.session
    with uow:
        records, orders, refunds = _our_side(session, provider, bill_date, rows)
        try:
            findings = reconcile(records, rows)
        except ValueError as exc:
            raise InvalidInput(f"the bill lists a record twice: {exc}") from exc
        run = ReconciliationRun(
            provider=provider, bill_date=bill_date, source=source,
            file_sha256=hashlib.sha256(content).hexdigest(), bill_rows=len(rows),
            our_records=len(records), mismatch_count=len(findings),
            created_by_user_id=actor.user_id if actor else None,
        )
        session.add(run)
        session.flush()
        for m in findings:
            row = m.theirs
            out_trade_no = (m.ours.out_trade_no if m.ours else row.out_trade_no if row else "")
            refund = refunds.get(m.reference) if m.record_kind == "refund" else None
            order = orders.get(out_trade_no)
            session.add(ReconciliationItem(
                run_id=run.id, kind=m.kind, record_kind=m.record_kind,
                reference=m.reference[:64], out_trade_no=out_trade_no[:64],
                property_company_id=order.property_company_id if order else None,
                order_id=order.id if order else None,
                refund_id=refund.id if refund else None,
                our_amount_fen=m.ours.amount_fen if m.ours else None,
                their_amount_fen=row.amount_fen if row else None,
                our_status=m.ours.status[:20] if m.ours else None,
                their_status=row.status[:20] if row else None,
                provider_trade_no=(row.provider_trade_no[:64] or None) if row else None,
                detail=m.detail[:200],
            ))
        uow.commit()
        return RunView(run, _visible_count(session, actor, run.id))


def _items(actor: Actor | None, run_id: int) -> object:
    stmt = select(ReconciliationItem).where(ReconciliationItem.run_id == run_id)
    return scope_by_company(stmt, actor, ReconciliationItem.property_company_id,
                            include_unattributed=True)


def _visible_count(session: Session, actor: Actor | None, run_id: int) -> int:
    stmt = _items(actor, run_id)
    return int(session.execute(
        select(func.count()).select_from(stmt.subquery())).scalar_one())  # type: ignore[attr-defined]


def _check_staff(actor: Actor) -> None:
    require_role(actor, Role.PLATFORM_ADMIN, Role.POWER_COMPANY, Role.PROPERTY_OPERATOR)


def list_runs(uow: UnitOfWork, actor: Actor, *, provider: str | None = None,
              limit: int = 50, offset: int = 0) -> list[RunView]:
    _check_staff(actor)
    stmt = select(ReconciliationRun)
    if provider:
        stmt = stmt.where(ReconciliationRun.provider == provider)
    runs = uow.session.execute(
        stmt.order_by(ReconciliationRun.id.desc()).limit(limit).offset(offset)).scalars().all()
    return [RunView(run, _visible_count(uow.session, actor, run.id)) for run in runs]


def list_items(uow: UnitOfWork, actor: Actor, run_id: int, *, kind: str | None = None,
               limit: int = 200, offset: int = 0) -> list[ReconciliationItem]:
    """A run's mismatches: the platform admin sees all, the power company its tree plus
    rows nobody can be attributed to, an operator only its property company's."""
    _check_staff(actor)
    if uow.session.get(ReconciliationRun, run_id) is None:
        raise NotFound("no such reconciliation run")
    stmt = _items(actor, run_id)
    if kind:
        stmt = stmt.where(ReconciliationItem.kind == kind)  # type: ignore[attr-defined]
    stmt = stmt.order_by(ReconciliationItem.id).limit(limit).offset(offset)  # type: ignore[attr-defined]
    return list(uow.session.execute(stmt).scalars())  # type: ignore[call-overload]

"""Payment jobs: query orders whose notification did not come, send and check refunds,
import yesterday's bills.

Run them from the jobs process (``JOBS``) or by hand (``flask payments …``). Each claims its
rows one by one with an atomic UPDATE, so two job processes never work on the same order at
the same moment, and a crash leaves nothing half done: applying a paid order is the same
idempotent ``apply_paid`` a notification uses.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select

from app.domain.errors import ConfigurationError, DomainError
from app.models import ReconciliationRun
from app.models.base import utcnow
from app.services import payments, payments_reconciliation, payments_refunds
from app.services.payments_common import BEIJING
from app.services.uow import UnitOfWork

log = logging.getLogger(__name__)


def query_stale_orders(*, now: datetime | None = None, limit: int = 100) -> dict[str, int]:
    """Orders still ``created`` N minutes after creation (PAYMENT_QUERY_AFTER_MINUTES) are
    queried at their provider: paid → credited exactly as by a notification (same key, so a
    late notification adds nothing); closed there or expired unpaid → closed here.
    Returns counts by outcome."""
    now = now or utcnow()
    uow = UnitOfWork()
    counts: Counter[str] = Counter()
    for order_id in payments.due_orders(uow, now, limit):
        if not payments.claim_order_query(uow, order_id, now):
            counts["taken"] += 1
            continue
        try:
            counts[payments.sync_order(uow, order_id, now=now)] += 1
        except DomainError as exc:
            uow.rollback()
            log.warning("order %s: query failed: %s", order_id, exc.message)
            counts["error"] += 1
    return dict(counts)


def process_refunds(*, now: datetime | None = None, limit: int = 100) -> dict[str, int]:
    """Send pending refunds (again, with the same out_refund_no) and ask about processing
    ones whose notification is late."""
    now = now or utcnow()
    uow = UnitOfWork()
    counts: Counter[str] = Counter()
    for refund_id, status in payments_refunds.due_refunds(uow, now, limit):
        if not payments_refunds.claim_refund(uow, refund_id, status, now):
            counts["taken"] += 1
            continue
        try:
            if status == "pending":
                counts[payments_refunds.submit_refund(uow, refund_id, now=now).status] += 1
            else:
                counts[payments_refunds.sync_refund(uow, refund_id, now=now)] += 1
        except DomainError as exc:
            uow.rollback()
            log.warning("refund %s: %s", refund_id, exc.message)
            counts["error"] += 1
    return dict(counts)


def import_yesterdays_bills(*, today: date | None = None) -> dict[str, Any]:
    """Fetch and reconcile yesterday's (Beijing) bill of each configured provider, once.

    Run hourly: providers publish a day's bill some hours after midnight, so a bill that is
    not there yet is simply tried again next hour; a provider whose bill was already fetched
    for that day, or that is not configured, is skipped.
    """
    day = (today or utcnow().astimezone(BEIJING).date()) - timedelta(days=1)
    report: dict[str, Any] = {}
    for provider in ("wechat", "alipay"):
        uow = UnitOfWork()
        done = uow.session.execute(
            select(ReconciliationRun.id).where(ReconciliationRun.provider == provider,
                                               ReconciliationRun.bill_date == day,
                                               ReconciliationRun.source == "fetch")
        ).first()
        uow.rollback()
        if done is not None:
            continue
        try:
            view = payments_reconciliation.import_bill(uow, None, provider=provider,
                                                       bill_date=day)
            report[provider] = {"run_id": view.run.id, "mismatches": view.visible_mismatches}
        except ConfigurationError:
            uow.rollback()
        except DomainError as exc:
            uow.rollback()
            report[provider] = {"error": exc.code, "message": exc.message}
    return report


def run_once(*, now: datetime | None = None) -> dict[str, dict[str, int]]:
    """One pass of the frequent payment jobs."""
    return {"orders": query_stale_orders(now=now), "refunds": process_refunds(now=now)}


# (name, interval in seconds, function) for the jobs process's scheduler.
JOBS: list[tuple[str, int, Callable[..., Any]]] = [
    ("payments.query_stale_orders", 60, query_stale_orders),
    ("payments.process_refunds", 60, process_refunds),
    ("payments.import_yesterdays_bills", 3600, import_yesterdays_bills),
]

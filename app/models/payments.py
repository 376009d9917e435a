"""Money in and out through WeChat Pay and Alipay: orders, the notification inbox, refunds,
reconciliation runs. The ledger (app.models.ledger) stays the truth about balances; these
tables record what we asked the providers and what they told us.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.base import CreatedMixin, IdMixin, UTCDateTime

PROVIDERS = ("wechat", "alipay")
ORDER_STATUSES = ("created", "paid", "closed", "failed")
ORDER_PURPOSES = ("topup", "visitor_charge")
TRADE_TYPES = ("jsapi", "qr")  # WeChat JSAPI / Alipay JSAPI_PAY (mini-programs); Alipay QR
REFUND_KINDS = ("wallet", "visitor_unused")
REFUND_STATUSES = ("pending", "processing", "success", "abnormal", "closed", "failed")
MISMATCH_KINDS = ("missing_here", "missing_there", "amount_differs", "status_differs")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


class PaymentOrder(IdMixin, CreatedMixin, db.Model):
    """One payment we asked a provider to collect. ``amount_fen`` is ours, decided before the
    provider ever sees the order; a notification with another amount is refused."""

    __tablename__ = "payment_orders"
    out_trade_no: Mapped[str] = mapped_column(String(32), unique=True)
    provider: Mapped[str] = mapped_column(String(10))
    trade_type: Mapped[str] = mapped_column(String(10))
    purpose: Mapped[str] = mapped_column(String(16))
    charging_account_id: Mapped[int] = mapped_column(
        ForeignKey("charging_accounts.id"), index=True
    )
    # Denormalised from the account's community: tenancy checks and settlement by company.
    property_company_id: Mapped[int] = mapped_column(
        ForeignKey("property_companies.id"), index=True
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    amount_fen: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(127))
    status: Mapped[str] = mapped_column(String(10), default="created")
    payer_id: Mapped[str | None] = mapped_column(String(64))  # openid / Alipay buyer id
    provider_transaction_id: Mapped[str | None] = mapped_column(String(64))
    provider_ref: Mapped[str | None] = mapped_column(String(256))  # prepay_id / trade_no / QR
    reference: Mapped[str | None] = mapped_column(String(64))  # e.g. the charging session
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ledger_transaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("ledger_transactions.id")
    )
    next_query_at: Mapped[datetime] = mapped_column(UTCDateTime())
    query_attempts: Mapped[int] = mapped_column(Integer, default=0)
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    __table_args__ = (
        CheckConstraint(f"provider IN {_in(PROVIDERS)}", name="provider"),
        CheckConstraint(f"status IN {_in(ORDER_STATUSES)}", name="status"),
        CheckConstraint(f"purpose IN {_in(ORDER_PURPOSES)}", name="purpose"),
        CheckConstraint(f"trade_type IN {_in(TRADE_TYPES)}", name="trade_type"),
        CheckConstraint("amount_fen > 0", name="amount"),
        CheckConstraint("length(out_trade_no) BETWEEN 6 AND 32", name="out_trade_no"),
        CheckConstraint("query_attempts >= 0", name="query_attempts"),
        CheckConstraint(
            "status != 'paid' OR (provider_transaction_id IS NOT NULL AND paid_at IS NOT NULL)",
            name="paid_has_transaction",
        ),
        # A provider's transaction pays exactly one of our orders.
        UniqueConstraint("provider", "provider_transaction_id"),
        Index("ix_payment_orders_status_next_query", "status", "next_query_at"),
    )


class PaymentNotification(IdMixin, db.Model):
    """The inbox: every verified notification, stored (in the transaction that applies it)
    before we reply. The UNIQUE key makes a second copy a no-op."""

    __tablename__ = "payment_notifications"
    provider: Mapped[str] = mapped_column(String(10))
    notification_id: Mapped[str] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(40))
    out_trade_no: Mapped[str | None] = mapped_column(String(64), index=True)
    out_refund_no: Mapped[str | None] = mapped_column(String(64))
    # sha256 of the event's business fields: a reused id with other content is refused.
    digest: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[str] = mapped_column(String(30))
    detail: Mapped[str] = mapped_column(String(200), default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    __table_args__ = (
        CheckConstraint(f"provider IN {_in(PROVIDERS)}", name="provider"),
        UniqueConstraint("provider", "notification_id"),
    )


class Refund(IdMixin, CreatedMixin, db.Model):
    """Money sent back over one original payment. The wallet is debited when the refund is
    requested (ledger key ``refund:<out_refund_no>``); ABNORMAL / CLOSED / a refusal restores
    it (``refund-restore:<out_refund_no>``). Retries reuse ``out_refund_no``."""

    __tablename__ = "refunds"
    out_refund_no: Mapped[str] = mapped_column(String(64), unique=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("payment_orders.id"), index=True)
    charging_account_id: Mapped[int] = mapped_column(
        ForeignKey("charging_accounts.id"), index=True
    )
    property_company_id: Mapped[int] = mapped_column(
        ForeignKey("property_companies.id"), index=True
    )
    provider: Mapped[str] = mapped_column(String(10))
    kind: Mapped[str] = mapped_column(String(16))
    amount_fen: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(80), default="")
    status: Mapped[str] = mapped_column(String(12), default="pending")
    provider_refund_id: Mapped[str | None] = mapped_column(String(64))
    # The operator's request id (one wallet refund may span several orders).
    request_key: Mapped[str | None] = mapped_column(String(100), index=True)
    requested_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    debit_transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id"))
    restore_transaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("ledger_transactions.id")
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    __table_args__ = (
        CheckConstraint(f"provider IN {_in(PROVIDERS)}", name="provider"),
        CheckConstraint(f"kind IN {_in(REFUND_KINDS)}", name="kind"),
        CheckConstraint(f"status IN {_in(REFUND_STATUSES)}", name="status"),
        CheckConstraint("amount_fen > 0", name="amount"),
        Index("ix_refunds_status_next_attempt", "status", "next_attempt_at"),
    )


class ReconciliationRun(IdMixin, CreatedMixin, db.Model):
    """One provider daily bill compared with our orders and refunds."""

    __tablename__ = "reconciliation_runs"
    provider: Mapped[str] = mapped_column(String(10))
    bill_date: Mapped[date] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(10))  # upload | fetch
    file_sha256: Mapped[str] = mapped_column(String(64))
    bill_rows: Mapped[int] = mapped_column(Integer)
    our_records: Mapped[int] = mapped_column(Integer)
    mismatch_count: Mapped[int] = mapped_column(Integer)
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    __table_args__ = (
        CheckConstraint(f"provider IN {_in(PROVIDERS)}", name="provider"),
        CheckConstraint("source IN ('upload', 'fetch')", name="source"),
        Index("ix_reconciliation_runs_provider_date", "provider", "bill_date"),
    )


class ReconciliationItem(IdMixin, db.Model):
    """One mismatch of a run. ``property_company_id`` is known when we have the order or
    refund (operators see only theirs); a row only the provider knows has none."""

    __tablename__ = "reconciliation_items"
    run_id: Mapped[int] = mapped_column(ForeignKey("reconciliation_runs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    record_kind: Mapped[str] = mapped_column(String(8))
    reference: Mapped[str] = mapped_column(String(64))
    out_trade_no: Mapped[str] = mapped_column(String(64))
    property_company_id: Mapped[int | None] = mapped_column(
        ForeignKey("property_companies.id"), index=True
    )
    order_id: Mapped[int | None] = mapped_column(ForeignKey("payment_orders.id"))
    refund_id: Mapped[int | None] = mapped_column(ForeignKey("refunds.id"))
    our_amount_fen: Mapped[int | None] = mapped_column(Integer)
    their_amount_fen: Mapped[int | None] = mapped_column(Integer)
    our_status: Mapped[str | None] = mapped_column(String(20))
    their_status: Mapped[str | None] = mapped_column(String(20))
    provider_trade_no: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(String(200), default="")
    __table_args__ = (
        CheckConstraint(f"kind IN {_in(MISMATCH_KINDS)}", name="kind"),
        CheckConstraint("record_kind IN ('payment', 'refund')", name="record_kind"),
    )

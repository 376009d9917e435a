"""The append-only double-entry ledger (rules in app.domain.ledger)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.domain.ledger import AccountKind, TransactionKind
from app.extensions import db
from app.models.base import CreatedMixin, IdMixin, UTCDateTime

ACCOUNT_KINDS = tuple(k.value for k in AccountKind)
TRANSACTION_KINDS = tuple(k.value for k in TransactionKind)


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


class LedgerAccount(IdMixin, CreatedMixin, db.Model):
    """A ledger account. ``balance_fen`` is a cache of the sum of its entries,
    updated in the same transaction as they are written; tests check the two agree.
    """

    __tablename__ = "ledger_accounts"
    kind: Mapped[str] = mapped_column(String(12))
    balance_fen: Mapped[int] = mapped_column(Integer, default=0)
    floor_fen: Mapped[int | None] = mapped_column(Integer)
    __table_args__ = (
        CheckConstraint(f"kind IN {_in(ACCOUNT_KINDS)}", name="kind"),
        CheckConstraint("floor_fen IS NULL OR balance_fen >= floor_fen", name="floor"),
        CheckConstraint("floor_fen IS NULL OR floor_fen <= 0", name="floor_not_positive"),
    )


class LedgerTransaction(IdMixin, CreatedMixin, db.Model):
    """One money event; its idempotency key makes applying it twice a no-op."""

    __tablename__ = "ledger_transactions"
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    channel: Mapped[str | None] = mapped_column(String(20))
    charging_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("charging_accounts.id"), index=True
    )
    property_company_id: Mapped[int | None] = mapped_column(
        ForeignKey("property_companies.id"), index=True
    )
    amount_fen: Mapped[int] = mapped_column(Integer)
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    reference: Mapped[str | None] = mapped_column(String(128))
    memo: Mapped[str] = mapped_column(String(200), default="")
    entries: Mapped[list[LedgerEntry]] = relationship(back_populates="transaction")
    __table_args__ = (
        CheckConstraint(f"kind IN {_in(TRANSACTION_KINDS)}", name="kind"),
        CheckConstraint("amount_fen >= 0", name="amount"),
    )


class LedgerEntry(IdMixin, CreatedMixin, db.Model):
    __tablename__ = "ledger_entries"
    transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    amount_fen: Mapped[int] = mapped_column(Integer)
    transaction: Mapped[LedgerTransaction] = relationship(back_populates="entries")
    __table_args__ = (
        CheckConstraint("amount_fen != 0", name="nonzero"),
        Index("ix_ledger_entries_account", "account_id", "id"),
    )


class Hold(IdMixin, CreatedMixin, db.Model):
    """Funds frozen for one charge in progress, until captured or released."""

    __tablename__ = "holds"
    charging_account_id: Mapped[int] = mapped_column(
        ForeignKey("charging_accounts.id"), index=True
    )
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    amount_fen: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(10), default="active")
    captured_fen: Mapped[int | None] = mapped_column(Integer)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    __table_args__ = (
        CheckConstraint("amount_fen > 0", name="amount"),
        CheckConstraint("status IN ('active', 'captured', 'released')", name="status"),
        CheckConstraint("captured_fen IS NULL OR captured_fen >= 0", name="captured"),
    )


# Append-only: the database itself refuses to change or delete a ledger row.
APPEND_ONLY_TABLES = ("ledger_entries", "ledger_transactions")

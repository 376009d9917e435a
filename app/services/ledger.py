"""Posting money: the only code that writes ledger rows.

These helpers run inside a caller's unit of work (they never commit), so a
money event and the state change that causes it commit together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.domain import ledger as rules
from app.domain.errors import Conflict, IdempotencyConflict
from app.domain.ledger import AccountKind, AccountState, Posting, TransactionKind
from app.models import ChargingAccount, Hold, LedgerAccount, LedgerEntry, LedgerTransaction
from app.models.base import utcnow
from app.services.uow import insert_ignoring_duplicates


@dataclass(frozen=True)
class PostResult:
    transaction_id: int
    applied: bool  # False: the key was seen before and nothing changed


@dataclass(frozen=True)
class Balance:
    available_fen: int
    held_fen: int

    @property
    def total_fen(self) -> int:
        return self.available_fen + self.held_fen


def open_account(session: Session, kind: AccountKind, floor_fen: int | None) -> LedgerAccount:
    account = LedgerAccount(kind=kind.value, balance_fen=0, floor_fen=floor_fen)
    session.add(account)
    session.flush()
    return account


def post(
    session: Session,
    *,
    key: str,
    kind: TransactionKind,
    postings: Sequence[Posting],
    amount_fen: int,
    channel: str | None = None,
    charging_account_id: int | None = None,
    property_company_id: int | None = None,
    created_by_user_id: int | None = None,
    reference: str | None = None,
    memo: str = "",
) -> PostResult:
    """Record one money event exactly once.

    The idempotency key is claimed first with INSERT … ON CONFLICT DO NOTHING, so
    a repeat (or a concurrent twin) changes nothing. The accounts are then locked
    in id order (no deadlocks), the domain rules check the floors, and entries
    and cached balances are written together.
    """
    claim = insert_ignoring_duplicates(session, LedgerTransaction, ["idempotency_key"])
    txn_id = session.execute(
        claim.values(
            idempotency_key=key,
            kind=kind.value,
            channel=channel,
            charging_account_id=charging_account_id,
            property_company_id=property_company_id,
            amount_fen=amount_fen,
            created_by_user_id=created_by_user_id,
            reference=reference,
            memo=memo,
            created_at=utcnow(),
        ).returning(LedgerTransaction.id)
    ).scalar()
    if txn_id is None:
        existing = session.execute(
            select(LedgerTransaction).where(LedgerTransaction.idempotency_key == key)
        ).scalar_one()
        if existing.kind != kind.value or existing.amount_fen != amount_fen:
            raise IdempotencyConflict(
                "this key was already used for a different money event", key=key
            )
        return PostResult(existing.id, applied=False)

    ids = sorted({p.account_id for p in postings})
    accounts = session.execute(
        select(LedgerAccount)
        .where(LedgerAccount.id.in_(ids))
        .order_by(LedgerAccount.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalars().all()
    states = {
        a.id: AccountState(a.id, AccountKind(a.kind), a.balance_fen, a.floor_fen) for a in accounts
    }
    new_balances = rules.apply_postings(states, postings, kind)
    now = utcnow()
    session.add_all(
        LedgerEntry(transaction_id=txn_id, account_id=p.account_id, amount_fen=p.amount_fen,
                    created_at=now)
        for p in postings
    )
    for account in accounts:
        account.balance_fen = new_balances[account.id]
    session.flush()
    return PostResult(txn_id, applied=True)


def balance_of(session: Session, account: ChargingAccount) -> Balance:
    rows = dict(
        session.execute(
            select(LedgerAccount.id, LedgerAccount.balance_fen).where(
                LedgerAccount.id.in_([account.wallet_account_id, account.hold_account_id])
            )
        ).all()
    )
    return Balance(rows[account.wallet_account_id], rows[account.hold_account_id])


def balance_from_entries(session: Session, ledger_account_id: int) -> int:
    """The balance recomputed from the entries themselves (audits and tests)."""
    total = session.execute(
        select(func.coalesce(func.sum(LedgerEntry.amount_fen), 0)).where(
            LedgerEntry.account_id == ledger_account_id
        )
    ).scalar_one()
    return int(total)


# --- holds: money frozen for a charge in progress -------------------------------------


def place_hold(
    session: Session, account: ChargingAccount, *, amount_fen: int, key: str
) -> Hold:
    """Freeze ``amount_fen`` of the wallet; the same key returns the same hold."""
    result = post(
        session,
        key=f"hold:{key}",
        kind=TransactionKind.HOLD,
        postings=rules.hold_postings(
            wallet=account.wallet_account_id, hold=account.hold_account_id, amount_fen=amount_fen
        ),
        amount_fen=amount_fen,
        charging_account_id=account.id,
        reference=key,
    )
    if not result.applied:
        return session.execute(select(Hold).where(Hold.idempotency_key == key)).scalar_one()
    hold = Hold(charging_account_id=account.id, idempotency_key=key, amount_fen=amount_fen,
                status="active")
    session.add(hold)
    session.flush()
    return hold


def _lock_hold(session: Session, hold_id: int) -> Hold:
    return session.execute(
        select(Hold).where(Hold.id == hold_id).with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def capture_hold(
    session: Session,
    hold_id: int,
    *,
    cost_fen: int,
    revenue_account_id: int,
    property_company_id: int,
    reference: str | None = None,
) -> PostResult:
    """Settle a charge once: take ``cost_fen``, return the change to the wallet."""
    hold = _lock_hold(session, hold_id)
    key = f"capture:{hold.idempotency_key}"
    if hold.status == "captured":
        txn = session.execute(
            select(LedgerTransaction).where(LedgerTransaction.idempotency_key == key)
        ).scalar_one()
        if txn.amount_fen != cost_fen:
            raise IdempotencyConflict("this charge was already settled at another cost")
        return PostResult(txn.id, applied=False)
    if hold.status != "active":
        raise Conflict(f"the hold is {hold.status}")
    account = session.get(ChargingAccount, hold.charging_account_id)
    assert account is not None
    postings = rules.capture_postings(
        wallet=account.wallet_account_id,
        hold=account.hold_account_id,
        revenue=revenue_account_id,
        held_fen=hold.amount_fen,
        cost_fen=cost_fen,
    )
    result = post(
        session,
        key=key,
        kind=TransactionKind.CAPTURE,
        postings=postings,
        amount_fen=cost_fen,
        channel="charging",
        charging_account_id=account.id,
        property_company_id=property_company_id,
        reference=reference or hold.idempotency_key,
    )
    hold.status = "captured"
    hold.captured_fen = cost_fen
    hold.closed_at = utcnow()
    session.flush()
    return result


def release_hold(session: Session, hold_id: int, *, reference: str | None = None) -> PostResult:
    """Unfreeze a hold whose charge never started (or was free)."""
    hold = _lock_hold(session, hold_id)
    key = f"release:{hold.idempotency_key}"
    if hold.status == "released":
        txn = session.execute(
            select(LedgerTransaction).where(LedgerTransaction.idempotency_key == key)
        ).scalar_one()
        return PostResult(txn.id, applied=False)
    if hold.status != "active":
        raise Conflict(f"the hold is {hold.status}")
    account = session.get(ChargingAccount, hold.charging_account_id)
    assert account is not None
    result = post(
        session,
        key=key,
        kind=TransactionKind.RELEASE,
        postings=rules.release_postings(
            wallet=account.wallet_account_id, hold=account.hold_account_id,
            amount_fen=hold.amount_fen,
        ),
        amount_fen=hold.amount_fen,
        charging_account_id=account.id,
        reference=reference or hold.idempotency_key,
    )
    hold.status = "released"
    hold.closed_at = utcnow()
    session.flush()
    return result

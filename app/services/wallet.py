"""Money in and out of charging accounts: top-ups, reversals, history."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from app.domain import ledger as rules
from app.domain.access import Actor
from app.domain.errors import Conflict, NotFound, PermissionDenied
from app.domain.ledger import TransactionKind
from app.domain.money import require_fen
from app.models import AuditEntry, ChargingAccount, LedgerTransaction
from app.services import access
from app.services.ledger import Balance, balance_of, post
from app.services.uow import UnitOfWork


@dataclass(frozen=True)
class TopupResult:
    transaction_id: int
    applied: bool
    balance: Balance


def credit_topup_in(
    uow: UnitOfWork,
    account: ChargingAccount,
    *,
    amount_fen: int,
    channel: str,
    key: str,
    actor_user_id: int | None = None,
    reference: str | None = None,
) -> TopupResult:
    """Credit a wallet against its property company's collection account (no commit).

    ``key`` is the payment's natural id (provider transaction no, cash request id):
    the same top-up applied twice changes nothing.
    """
    require_fen(amount_fen)
    company = account.community.property_company
    result = post(
        uow.session,
        key=key,
        kind=TransactionKind.TOPUP,
        postings=rules.topup_postings(
            wallet=account.wallet_account_id,
            collection=company.collection_account_id,
            amount_fen=amount_fen,
        ),
        amount_fen=amount_fen,
        channel=channel,
        charging_account_id=account.id,
        property_company_id=company.id,
        created_by_user_id=actor_user_id,
        reference=reference,
    )
    return TopupResult(result.transaction_id, result.applied, balance_of(uow.session, account))


def record_cash_topup(
    uow: UnitOfWork, actor: Actor, account_id: int, *, amount_fen: int, request_id: str,
    memo: str = "",
) -> TopupResult:
    """Cash paid at the property office; ``request_id`` makes a double click harmless."""
    with uow:
        if not actor.is_staff:
            raise PermissionDenied("cash top-ups are recorded by the property office")
        account = access.get_charging_account(uow.session, actor, account_id, manage=True)
        # The client's request id is unique per account, not platform-wide: another
        # account's (or tenant's) top-up with the same id must not swallow this one.
        result = credit_topup_in(
            uow, account, amount_fen=amount_fen, channel="cash",
            key=f"cash:{account.id}:{request_id}",
            actor_user_id=actor.user_id, reference=memo or None,
        )
        if result.applied:
            uow.session.add(AuditEntry(
                actor_user_id=actor.user_id, action="wallet.cash_topup",
                object_type="charging_account", object_id=account.id,
                details={"amount_fen": amount_fen, "transaction_id": result.transaction_id,
                         "memo": memo},
            ))
        uow.commit()
        return result


def reverse_cash_topup(
    uow: UnitOfWork, actor: Actor, transaction_id: int, *, reason: str
) -> TopupResult:
    """Undo a mistaken cash top-up with a compensating entry (never by editing)."""
    with uow:
        original = uow.session.get(LedgerTransaction, transaction_id)
        if original is None or original.charging_account_id is None:
            raise NotFound("no such top-up")
        account = access.get_charging_account(
            uow.session, actor, original.charging_account_id, manage=True
        )
        if not actor.is_staff:
            raise PermissionDenied("only the property office reverses top-ups")
        if original.kind != TransactionKind.TOPUP.value or original.channel != "cash":
            raise Conflict("only cash top-ups are reversed here; provider payments are refunded")
        company = account.community.property_company
        result = post(
            uow.session,
            key=f"reversal:{original.id}",
            kind=TransactionKind.TOPUP_REVERSAL,
            postings=rules.topup_reversal_postings(
                wallet=account.wallet_account_id,
                collection=company.collection_account_id,
                amount_fen=original.amount_fen,
            ),
            amount_fen=original.amount_fen,
            channel="cash",
            charging_account_id=account.id,
            property_company_id=company.id,
            created_by_user_id=actor.user_id,
            reference=str(original.id),
            memo=reason[:200],
        )
        if result.applied:
            uow.session.add(AuditEntry(
                actor_user_id=actor.user_id, action="wallet.cash_reversal",
                object_type="charging_account", object_id=account.id,
                details={"reversed_transaction_id": original.id, "reason": reason},
            ))
        uow.commit()
        return TopupResult(result.transaction_id, result.applied, balance_of(uow.session, account))


def account_history(
    uow: UnitOfWork, actor: Actor, account_id: int, *, limit: int = 50, before_id: int | None = None
) -> list[LedgerTransaction]:
    """Top-ups, charges and refunds of one account, newest first (keyset paging)."""
    account = access.get_charging_account(uow.session, actor, account_id)
    stmt = select(LedgerTransaction).where(LedgerTransaction.charging_account_id == account.id)
    if before_id is not None:
        stmt = stmt.where(LedgerTransaction.id < before_id)
    stmt = stmt.order_by(LedgerTransaction.id.desc()).limit(limit)
    return list(uow.session.execute(stmt).scalars())

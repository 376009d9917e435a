"""Refunds: money back over the original provider payment, and cash refunds.

Ledger: the wallet is debited when a refund is requested (REFUND, key
``refund:<out_refund_no>``), in the transaction that writes the ``refunds`` row, so the
money cannot be spent twice while the provider works. If the provider finally says
ABNORMAL or CLOSED, or refuses the request, a compensating credit restores the wallet
(REFUND kind with the opposite postings, key ``refund-restore:<out_refund_no>``). The
provider is called only after that commit; a timeout leaves the refund ``pending`` and the
job retries it with the SAME out_refund_no / out_request_no, which both providers treat as
the same refund.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.domain import ledger as rules
from app.domain.access import Actor, Role
from app.domain.errors import (
    ConfigurationError,
    Conflict,
    IdempotencyConflict,
    InsufficientFunds,
    NotFound,
    PermissionDenied,
)
from app.domain.ledger import TransactionKind
from app.domain.money import require_fen
from app.models import AuditEntry, ChargingAccount, LedgerTransaction, PaymentOrder, Refund
from app.models.base import utcnow
from app.payments.errors import ProviderRejected, ProviderUnavailable
from app.services import access
from app.services.context import settings
from app.services.ledger import balance_of, post
from app.services.payments_common import company_for, new_reference, release_connection
from app.services.payments_providers import alipay_client, wechat_client
from app.services.uow import UnitOfWork
from app.services.wallet import TopupResult

log = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"success", "abnormal", "closed", "failed"})
# Refunds that count against what an order can still give back.
LIVE_STATUSES = ("pending", "processing", "success")
RETRY_DELAYS = (1, 2, 5, 10, 30, 60)  # minutes between attempts of a pending refund


@dataclass(frozen=True)
class RefundEvent:
    """A provider's word on one of our refunds (response, query or notification)."""

    provider: str
    out_refund_no: str
    status: str  # processing | success | abnormal | closed
    amount_fen: int | None
    provider_refund_id: str | None
    at: datetime | None
    out_trade_no: str | None = None


# --------------------------------------------------------------------------- requesting


def refunded_fen(session: Session, order_id: int) -> int:
    return int(session.execute(
        select(func.coalesce(func.sum(Refund.amount_fen), 0)).where(
            Refund.order_id == order_id, Refund.status.in_(LIVE_STATUSES))
    ).scalar_one())


def _lock(session: Session, model: type, ident: int) -> object | None:
    return session.execute(
        select(model).where(model.id == ident).with_for_update()  # type: ignore[attr-defined]
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _new_refund(
    session: Session,
    *,
    order: PaymentOrder,
    account: ChargingAccount,
    amount_fen: int,
    kind: str,
    reason: str,
    request_key: str | None,
    actor_user_id: int | None,
    now: datetime,
) -> Refund:
    out_refund_no = new_reference("RF", now)
    company = account.community.property_company
    debit = post(
        session,
        key=f"refund:{out_refund_no}",
        kind=TransactionKind.REFUND,
        postings=rules.refund_postings(wallet=account.wallet_account_id,
                                       collection=company.collection_account_id,
                                       amount_fen=amount_fen),
        amount_fen=amount_fen,
        channel=order.provider,
        charging_account_id=account.id,
        property_company_id=company.id,
        created_by_user_id=actor_user_id,
        reference=out_refund_no,
        memo=(reason or kind)[:200],
    )
    refund = Refund(
        out_refund_no=out_refund_no, order_id=order.id, charging_account_id=account.id,
        property_company_id=company.id, provider=order.provider, kind=kind,
        amount_fen=amount_fen, reason=reason[:80], status="pending", request_key=request_key,
        requested_by_user_id=actor_user_id, debit_transaction_id=debit.transaction_id,
        attempts=0, next_attempt_at=now, updated_at=now, created_at=now,
    )
    session.add(refund)
    session.flush()
    return refund


def refund_unused(
    uow: UnitOfWork, order: PaymentOrder, amount_fen: int, reason: str, *,
    submit_now: bool = True, request_key: str | None = None,
) -> Refund:
    """Give a visitor's unused prepayment back over its order (no commit).

    Called by the charging code when it settles the visitor's session: the wallet of the
    order's (temporary) account is debited now; the refund is sent to the provider after
    the caller commits (``submit_now``; the refunds job sends it otherwise, and retries).
    Never more than the order's amount minus what was already refunded.
    """
    session = uow.session
    require_fen(amount_fen)
    locked = _lock(session, PaymentOrder, order.id)
    if not isinstance(locked, PaymentOrder) or locked.status != "paid":
        raise Conflict("only a paid order can be refunded")
    left = locked.amount_fen - refunded_fen(session, locked.id)
    if amount_fen > left:
        raise Conflict("the refund exceeds what is left of the payment",
                       refundable_fen=left, requested_fen=amount_fen)
    account = session.get(ChargingAccount, locked.charging_account_id)
    assert account is not None
    refund = _new_refund(session, order=locked, account=account, amount_fen=amount_fen,
                         kind="visitor_unused", reason=reason, request_key=request_key,
                         actor_user_id=None, now=utcnow())
    if submit_now:
        refund_id = refund.id
        uow.after_commit(lambda: submit_refund_quietly(refund_id))
    return refund


def request_wallet_refund(
    uow: UnitOfWork,
    actor: Actor,
    account_id: int,
    *,
    amount_fen: int,
    reason: str,
    request_id: str,
    submit: bool = True,
) -> list[Refund]:
    """An operator-approved refund of a resident's wallet over its provider payments,
    newest first, each at most its amount minus earlier refunds. Cash money is refunded as
    cash (``record_cash_refund``). Above ``REFUND_APPROVAL_LIMIT_FEN`` only the platform
    admin approves. ``request_id`` makes a retry return the same refunds."""
    session = uow.session
    with uow:
        if not actor.is_staff:
            raise PermissionDenied("refunds are approved by the property office")
        account = access.get_charging_account(session, actor, account_id, manage=True)
        require_fen(amount_fen)
        limit = settings().refund_approval_limit_fen
        if actor.role is not Role.PLATFORM_ADMIN and amount_fen > limit:
            raise PermissionDenied("refunds above the approval limit need the platform admin",
                                   limit_fen=limit)
        _lock(session, ChargingAccount, account.id)  # one refund request per account at a time
        key = f"wallet:{account.id}:{request_id}"
        existing = list(session.execute(
            select(Refund).where(Refund.request_key == key).order_by(Refund.id)).scalars())
        if existing:
            if sum(r.amount_fen for r in existing) != amount_fen:
                raise IdempotencyConflict("this request id was used for another amount")
            refunds = existing
        else:
            refunds = _plan_wallet_refund(session, actor, account, amount_fen, reason, key)
        ids = [r.id for r in refunds]
        uow.commit()
    if submit:
        for refund_id in ids:
            submit_refund(uow, refund_id)
    return [r for r in (session.get(Refund, i) for i in ids) if r is not None]


def _plan_wallet_refund(session: Session, actor: Actor, account: ChargingAccount,
                        amount_fen: int, reason: str, key: str) -> list[Refund]:
    available = balance_of(session, account).available_fen
    if available < amount_fen:
        raise InsufficientFunds("the wallet does not hold this much",
                                balance_fen=available, needed_fen=amount_fen)
    orders = session.execute(
        select(PaymentOrder)
        .where(PaymentOrder.charging_account_id == account.id, PaymentOrder.status == "paid")
        .order_by(PaymentOrder.paid_at.desc(), PaymentOrder.id.desc())
        .with_for_update().execution_options(populate_existing=True)
    ).scalars().all()
    plan: list[tuple[PaymentOrder, int]] = []
    remaining = amount_fen
    for order in orders:
        if remaining == 0:
            break
        take = min(order.amount_fen - refunded_fen(session, order.id), remaining)
        if take > 0:
            plan.append((order, take))
            remaining -= take
    if remaining:
        raise Conflict(
            "only this much came from WeChat Pay / Alipay and is not refunded yet; "
            "pay the rest back as cash", refundable_fen=amount_fen - remaining,
            requested_fen=amount_fen)
    now = utcnow()
    refunds = [
        _new_refund(session, order=order, account=account, amount_fen=take, kind="wallet",
                    reason=reason, request_key=key, actor_user_id=actor.user_id, now=now)
        for order, take in plan
    ]
    session.add(AuditEntry(
        actor_user_id=actor.user_id, action="wallet.refund", object_type="charging_account",
        object_id=account.id,
        details={"amount_fen": amount_fen, "reason": reason,
                 "refunds": [[r.out_refund_no, r.amount_fen] for r in refunds]},
    ))
    return refunds


def record_cash_refund(
    uow: UnitOfWork, actor: Actor, account_id: int, *, amount_fen: int, request_id: str,
    reason: str,
) -> TopupResult:
    """Cash handed back at the property office: a REFUND entry (channel cash), never more
    than the account's cash top-ups minus reversals and earlier cash refunds."""
    session = uow.session
    with uow:
        if not actor.is_staff:
            raise PermissionDenied("cash refunds are recorded by the property office")
        account = access.get_charging_account(session, actor, account_id, manage=True)
        require_fen(amount_fen)
        _lock(session, ChargingAccount, account.id)
        key = f"cash-refund:{account.id}:{request_id}"
        seen = session.execute(
            select(LedgerTransaction).where(LedgerTransaction.idempotency_key == key)
        ).scalar_one_or_none()
        if seen is None:
            cash_left = _cash_refundable(session, account.id)
            if amount_fen > cash_left:
                raise Conflict("more than was paid in cash; refund the rest over its payment",
                               refundable_fen=cash_left, requested_fen=amount_fen)
        company = account.community.property_company
        result = post(
            session, key=key, kind=TransactionKind.REFUND,
            postings=rules.refund_postings(wallet=account.wallet_account_id,
                                           collection=company.collection_account_id,
                                           amount_fen=amount_fen),
            amount_fen=amount_fen, channel="cash", charging_account_id=account.id,
            property_company_id=company.id, created_by_user_id=actor.user_id,
            reference=request_id[:128], memo=reason[:200],
        )
        if result.applied:
            session.add(AuditEntry(
                actor_user_id=actor.user_id, action="wallet.cash_refund",
                object_type="charging_account", object_id=account.id,
                details={"amount_fen": amount_fen, "reason": reason,
                         "transaction_id": result.transaction_id},
            ))
        uow.commit()
        return TopupResult(result.transaction_id, result.applied, balance_of(session, account))


def _cash_refundable(session: Session, account_id: int) -> int:
    rows = dict(session.execute(
        select(LedgerTransaction.kind, func.coalesce(func.sum(LedgerTransaction.amount_fen), 0))
        .where(LedgerTransaction.charging_account_id == account_id,
               LedgerTransaction.channel == "cash")
        .group_by(LedgerTransaction.kind)
    ).all())
    return int(rows.get(TransactionKind.TOPUP.value, 0)
               - rows.get(TransactionKind.TOPUP_REVERSAL.value, 0)
               - rows.get(TransactionKind.REFUND.value, 0))


# --------------------------------------------------------------------------- the provider


def submit_refund(uow: UnitOfWork, refund_id: int, *, now: datetime | None = None) -> Refund:
    """Send a ``pending`` refund to its provider (same out_refund_no on every attempt) and
    record the answer. Provider down: stays pending, retried later; refused: ``failed`` and
    the wallet restored."""
    session = uow.session
    refund = session.get(Refund, refund_id)
    if refund is None:
        raise NotFound("no such refund")
    if refund.status != "pending":
        return refund
    order = session.get(PaymentOrder, refund.order_id)
    assert order is not None
    provider, no, amount, reason = (refund.provider, refund.out_refund_no, refund.amount_fen,
                                    refund.reason)
    out_trade_no, total = order.out_trade_no, order.amount_fen
    release_connection(session)
    now = now or utcnow()
    try:
        if provider == "wechat":
            answer = wechat_client().refund(out_trade_no, no, amount, total, reason=reason or None)
            event = RefundEvent("wechat", no, answer.refund_status.lower(),
                                answer.amount_refund_fen, answer.refund_id or None,
                                answer.success_time, answer.out_trade_no)
        else:
            ali = alipay_client().refund(out_trade_no, no, amount, reason=reason or None)
            event = RefundEvent("alipay", no, "success" if ali.fund_change else "processing",
                                None, None, None, ali.out_trade_no)
    except (ProviderUnavailable, ConfigurationError) as exc:
        return _note_attempt(uow, refund_id, now, f"unavailable: {exc}")
    except (ProviderRejected, ValueError) as exc:
        code = getattr(exc, "provider_code", None) or str(exc)
        with uow:
            locked = _lock(session, Refund, refund_id)
            assert isinstance(locked, Refund)
            if locked.status == "pending":
                locked.attempts += 1
                locked.last_error = f"rejected: {code}"[:200]
                _finish(session, locked, "failed", now)
            uow.commit()
            return locked
    with uow:
        locked = _lock(session, Refund, refund_id)
        assert isinstance(locked, Refund)
        locked.attempts += 1
        locked.last_error = None
        _apply_status(session, locked, event, now)
        uow.commit()
        return locked


def submit_refund_quietly(refund_id: int) -> None:
    """``submit_refund`` for after-commit hooks: a failure is logged, the job retries."""
    try:
        submit_refund(UnitOfWork(), refund_id)
    except Exception:  # the refund stays pending; the refunds job sends it
        log.exception("refund %s: submitting failed; the job will retry", refund_id)


def _note_attempt(uow: UnitOfWork, refund_id: int, now: datetime, error: str) -> Refund:
    with uow:
        locked = _lock(uow.session, Refund, refund_id)
        assert isinstance(locked, Refund)
        locked.attempts += 1
        locked.last_error = error[:200]
        delay = RETRY_DELAYS[min(locked.attempts, len(RETRY_DELAYS)) - 1]
        locked.next_attempt_at = now + timedelta(minutes=delay)
        locked.updated_at = now
        uow.commit()
        return locked


def sync_refund(uow: UnitOfWork, refund_id: int, *, now: datetime | None = None) -> str:
    """Ask the provider about a ``processing`` refund (its notification may be lost)."""
    session = uow.session
    refund = session.get(Refund, refund_id)
    if refund is None or refund.status != "processing":
        session.rollback()
        return "skipped"
    order = session.get(PaymentOrder, refund.order_id)
    assert order is not None
    provider, no, out_trade_no = refund.provider, refund.out_refund_no, order.out_trade_no
    release_connection(session)
    now = now or utcnow()
    try:
        if provider == "wechat":
            answer = wechat_client().query_refund(no)
            event = RefundEvent("wechat", no, answer.refund_status.lower(),
                                answer.amount_refund_fen, answer.refund_id or None,
                                answer.success_time, answer.out_trade_no)
        else:
            query = alipay_client().query_refund(out_trade_no, no)
            if query.succeeded:
                event = RefundEvent("alipay", no, "success", None, None, None, out_trade_no)
            elif not query.refund_status and not query.trade_no:
                # Alipay has no such refund: send it again, with the same out_request_no.
                with uow:
                    uow.session.execute(
                        update(Refund).where(Refund.id == refund_id,
                                             Refund.status == "processing")
                        .values(status="pending", next_attempt_at=now, updated_at=now))
                    uow.commit()
                return "resubmit"
            else:
                return "processing"
    except (ProviderUnavailable, ProviderRejected, ConfigurationError) as exc:
        log.warning("refund %s: query failed: %s", no, exc)
        return "unavailable"
    with uow:
        locked = _lock(session, Refund, refund_id)
        assert isinstance(locked, Refund)
        result, _ = _apply_status(session, locked, event, now)
        uow.commit()
    return result


# --------------------------------------------------------------------------- outcomes


def _finish(session: Session, refund: Refund, status: str, now: datetime,
            at: datetime | None = None) -> None:
    refund.status = status
    refund.finished_at = at or now
    refund.updated_at = now
    if status in ("abnormal", "closed", "failed"):
        _restore(session, refund)


def _restore(session: Session, refund: Refund) -> None:
    """The compensating credit: the money never left, the wallet gets it back."""
    account = session.get(ChargingAccount, refund.charging_account_id)
    assert account is not None
    company = account.community.property_company
    result = post(
        session,
        key=f"refund-restore:{refund.out_refund_no}",
        kind=TransactionKind.REFUND,
        postings=rules.topup_postings(wallet=account.wallet_account_id,
                                      collection=company.collection_account_id,
                                      amount_fen=refund.amount_fen),
        amount_fen=refund.amount_fen,
        channel=refund.provider,
        charging_account_id=account.id,
        property_company_id=company.id,
        reference=refund.out_refund_no,
        memo=f"refund {refund.status}: wallet restored",
    )
    refund.restore_transaction_id = result.transaction_id


def _apply_status(session: Session, refund: Refund, event: RefundEvent,
                  now: datetime) -> tuple[str, str]:
    """Move a refund to what the provider says, once. Final states stay final."""
    if refund.status in FINAL_STATUSES:
        if refund.status == event.status:
            return "refund_duplicate", f"already {refund.status}"
        log.warning("refund %s is %s; provider now says %s (ignored)", refund.out_refund_no,
                    refund.status, event.status)
        return "refund_duplicate", f"already {refund.status}, provider says {event.status}"
    if event.provider_refund_id:
        refund.provider_refund_id = event.provider_refund_id[:64]
    if event.status == "success":
        _finish(session, refund, "success", now, event.at)
    elif event.status in ("abnormal", "closed"):
        _finish(session, refund, event.status, now, event.at)
    elif event.status == "processing":
        refund.status = "processing"
        refund.updated_at = now
        refund.next_attempt_at = now + timedelta(
            minutes=max(1, settings().payment_query_after_minutes))
    else:
        return "refund_duplicate", f"unknown refund status {event.status}"
    session.flush()
    return "refund_updated", event.status


def apply_refund_update(uow: UnitOfWork, event: RefundEvent) -> tuple[str, str]:
    """A refund notification (WeChat REFUND.SUCCESS / ABNORMAL / CLOSED); no commit."""
    session = uow.session
    refund = session.execute(
        select(Refund).where(Refund.out_refund_no == event.out_refund_no)
        .with_for_update().execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if refund is None:
        # Nothing of ours moves; reconciliation lists a refund only the provider knows.
        return "unknown_refund", f"no refund {event.out_refund_no}"
    if refund.provider != event.provider:
        return "provider_mismatch", f"the refund is a {refund.provider} refund"
    order = session.get(PaymentOrder, refund.order_id)
    assert order is not None
    if event.out_trade_no and event.out_trade_no != order.out_trade_no:
        return "refund_order_mismatch", "the refund belongs to another order"
    if event.amount_fen is not None and event.amount_fen != refund.amount_fen:
        return "refund_amount_mismatch", (
            f"ours {refund.amount_fen} fen, theirs {event.amount_fen} fen")
    return _apply_status(session, refund, event, utcnow())


def apply_alipay_refund_notice(
    uow: UnitOfWork, *, out_trade_no: str, out_request_no: str | None,
    refund_fee_fen: int | None, at: datetime | None,
) -> tuple[str, str]:
    """Alipay's refund-triggered notification (partial: TRADE_SUCCESS + refund fields;
    full: TRADE_CLOSED). It marks our refund succeeded and never credits anything."""
    if not out_request_no:
        return "ignored", f"refund notice without out_biz_no (refund_fee {refund_fee_fen})"
    return apply_refund_update(uow, RefundEvent(
        "alipay", out_request_no, "success", None, None, at, out_trade_no))


# --------------------------------------------------------------------------- reading


def get_refund(uow: UnitOfWork, actor: Actor, refund_id: int) -> Refund:
    refund = uow.session.get(Refund, refund_id)
    if refund is None:
        raise NotFound("no such refund")
    if actor.is_staff:
        company_for(uow.session, actor, refund.property_company_id)
    elif not access.is_bound(uow.session, actor.user_id, refund.charging_account_id):
        raise NotFound("no such refund")
    return refund


def list_account_refunds(uow: UnitOfWork, actor: Actor, account_id: int) -> list[Refund]:
    account = access.get_charging_account(uow.session, actor, account_id)
    return list(uow.session.execute(
        select(Refund).where(Refund.charging_account_id == account.id)
        .order_by(Refund.id.desc()).limit(200)).scalars())


def retry_refund(uow: UnitOfWork, actor: Actor, refund_id: int) -> Refund:
    """Send a pending refund again now (same out_refund_no), or re-check a processing one."""
    refund = get_refund(uow, actor, refund_id)
    company_for(uow.session, actor, refund.property_company_id, manage=True)
    if refund.status == "pending":
        return submit_refund(uow, refund_id)
    if refund.status == "processing":
        sync_refund(uow, refund_id)
        found = uow.session.get(Refund, refund_id)
        assert found is not None
        return found
    raise Conflict(f"the refund is {refund.status}")


# --------------------------------------------------------------------------- the job


def claim_refund(uow: UnitOfWork, refund_id: int, status: str, now: datetime) -> bool:
    """Claim one attempt on a refund (several job processes may run)."""
    with uow:
        interval = timedelta(minutes=max(1, settings().payment_query_after_minutes))
        claimed = uow.session.execute(
            update(Refund)
            .where(Refund.id == refund_id, Refund.status == status,
                   Refund.next_attempt_at <= now)
            .values(next_attempt_at=now + interval)
            .execution_options(synchronize_session=False)
        ).rowcount
        uow.commit()
    return claimed == 1


def due_refunds(uow: UnitOfWork, now: datetime, limit: int = 100) -> list[tuple[int, str]]:
    rows = uow.session.execute(
        select(Refund.id, Refund.status)
        .where(Refund.status.in_(("pending", "processing")), Refund.next_attempt_at <= now)
        .order_by(Refund.next_attempt_at, Refund.id).limit(limit)
    ).all()
    uow.session.rollback()
    return [(int(i), str(s)) for i, s in rows]


# --------------------------------------------------------------------------- charging hook


def refund_visitor_change(session: Session, charging: object, refund_fen: int) -> None:
    """``app.services.charging.ON_SETTLED`` hook: a visitor's unused prepayment goes back
    over the visitor's paid order(s), newest first, inside the settling transaction. The
    refund is sent by the refunds job (the hook has no unit of work to run after commit)."""
    account_id = getattr(charging, "charging_account_id", None)
    if refund_fen <= 0 or account_id is None:
        return
    account = session.get(ChargingAccount, account_id)
    if account is None or account.kind != "temporary":
        return
    orders = session.execute(
        select(PaymentOrder).where(PaymentOrder.charging_account_id == account_id,
                                   PaymentOrder.purpose == "visitor_charge",
                                   PaymentOrder.status == "paid")
        .order_by(PaymentOrder.paid_at.desc(), PaymentOrder.id.desc())
    ).scalars().all()
    public_id = str(getattr(charging, "public_id", "") or "")
    key = f"settle:{public_id}" if public_id else None
    if key and session.execute(select(Refund.id).where(Refund.request_key == key)).first():
        return  # this session's change was already sent back
    uow = UnitOfWork(session)
    remaining = refund_fen
    reason = f"unused prepayment {public_id}".strip()
    for order in orders:
        take = min(remaining, order.amount_fen - refunded_fen(session, order.id))
        if take > 0:
            refund_unused(uow, order, take, reason[:80], submit_now=False, request_key=key)
            remaining -= take
        if remaining == 0:
            break
    if remaining:
        log.error("visitor account %s: %s fen of unused prepayment has no order to go back "
                  "over", account_id, remaining)

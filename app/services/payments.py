"""Payment orders and what providers tell us about them: the platform side of money in.

Flow of a top-up (WeChat JSAPI; Alipay is the same shape):

1. ``start_topup`` checks the caller, the account and the amount (ours, from settings),
   writes the ``payment_orders`` row and commits; only then is the provider called (no
   transaction is held across the network), and the prepay id is stored.
2. The provider's notification is verified by ``app.payments`` in the HTTP adapter and
   handed to ``handle_wechat_notification`` / ``handle_alipay_notification``: in ONE
   transaction the notification is stored in the inbox (``payment_notifications``, UNIQUE
   per provider notification id), checked against the order (amount, provider, state),
   the order is marked paid and the wallet credited with the ledger key
   ``<provider>:<transaction id>``, and the ``ON_PAID`` hooks run. The reply goes out
   after the commit.
3. A notification that never comes is caught by the order query job (``sync_order``),
   which applies a paid order through the same ``apply_paid`` (same key), so a late
   notification afterwards finds the order paid and adds nothing.

Other code calls ``create_order`` + ``launch_order`` (visitor charges) and registers in
``ON_PAID``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.domain.access import Actor, Role
from app.domain.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from app.domain.money import require_fen
from app.models import (
    AccountBinding,
    ChargingAccount,
    PaymentNotification,
    PaymentOrder,
    PropertyCompany,
    User,
)
from app.models.base import utcnow
from app.models.payments import ORDER_PURPOSES, PROVIDERS, TRADE_TYPES
from app.payments.alipay import AlipayNotification
from app.payments.errors import ProviderRejected, ProviderUnavailable
from app.payments.wechat_v3 import WeChatNotification, WeChatTransaction
from app.services import access
from app.services import payments_refunds as refunds
from app.services.context import settings
from app.services.payments_common import (
    BEIJING,
    PaymentProviderRejected,
    PaymentProviderUnavailable,
    company_for,
    new_reference,
    release_connection,
)
from app.services.payments_providers import alipay_client, wechat_client
from app.services.uow import UnitOfWork, insert_ignoring_duplicates
from app.services.wallet import credit_topup_in

log = logging.getLogger(__name__)

# Called with (session, order) inside the transaction that marks an order paid and credits
# its account, for every purpose; a hook filters on ``order.purpose`` / ``order.reference``.
# An exception rolls the whole payment back (the provider is told to retry).
ON_PAID: list[Callable[[Session, PaymentOrder], None]] = []

# Results of applying a provider event. Accepted ones are acknowledged to the provider.
ACCEPTED_RESULTS = frozenset({
    "credited", "duplicate", "ignored", "closed", "refund_updated", "refund_duplicate",
    "unknown_refund",
})
ALIPAY_CLOSE_GRACE = timedelta(minutes=2)


@dataclass(frozen=True)
class PaidEvent:
    """A provider says: this order of ours is paid (notification or order query)."""

    provider: str
    out_trade_no: str
    transaction_id: str
    amount_fen: int
    paid_at: datetime | None
    payer_id: str | None
    source: str  # "notification" | "query"


@dataclass(frozen=True)
class Outcome:
    """What to tell the provider: ``accepted`` → its success reply, else its failure reply."""

    accepted: bool
    result: str
    detail: str = ""


@dataclass(frozen=True)
class Checkout:
    """What the client needs to pay an order."""

    order: PaymentOrder
    pay_params: dict[str, str] | None = None  # wx.requestPayment arguments
    trade_no: str | None = None  # my.tradePay
    qr_code: str | None = None  # Alipay QR for a visitor


# --------------------------------------------------------------------------- orders


def check_topup_amount(amount_fen: int) -> int:
    """A top-up amount comes from our settings: one of the offered amounts, or in range."""
    require_fen(amount_fen)
    s = settings()
    if s.payment_topup_amounts_fen:
        if amount_fen not in s.payment_topup_amounts_fen:
            raise InvalidInput("choose one of the offered top-up amounts", field="amount_fen",
                               allowed=list(s.payment_topup_amounts_fen))
    elif not s.payment_topup_min_fen <= amount_fen <= s.payment_topup_max_fen:
        raise InvalidInput("the top-up amount is out of range", field="amount_fen",
                           min_fen=s.payment_topup_min_fen, max_fen=s.payment_topup_max_fen)
    return amount_fen


def _subject(text: str) -> str:
    """Alipay refuses / = & in a subject; WeChat allows 127 characters."""
    cleaned = "".join(c for c in text if c not in "/=&\r\n").strip()
    return (cleaned or "charging top-up")[:127]


def create_order(
    uow: UnitOfWork,
    *,
    provider: str,
    purpose: str,
    charging_account: ChargingAccount,
    amount_fen: int,
    trade_type: str = "jsapi",
    user_id: int | None = None,
    payer_id: str | None = None,
    description: str | None = None,
    reference: str | None = None,
    now: datetime | None = None,
) -> PaymentOrder:
    """Write a new order (no commit, no provider call: commit, then ``launch_order``).

    ``purpose="visitor_charge"`` is for the charging code (a visitor's temporary account);
    its amount is the charging code's, only checked to be positive fen. Top-up amounts must
    be offered ones. ``reference`` (≤ 64) links the order to e.g. a charging session.
    """
    if provider not in PROVIDERS:
        raise InvalidInput("unknown payment provider", field="provider")
    if purpose not in ORDER_PURPOSES:
        raise InvalidInput("unknown order purpose", field="purpose")
    if trade_type not in TRADE_TYPES or (provider == "wechat" and trade_type != "jsapi"):
        raise InvalidInput("unsupported trade type for this provider", field="trade_type")
    if purpose == "topup":
        check_topup_amount(amount_fen)
    else:
        require_fen(amount_fen)
    if reference is not None and len(reference) > 64:
        raise InvalidInput("reference is at most 64 characters", field="reference")
    if charging_account.status != "active":
        raise Conflict("this charging account is not active")
    now = now or utcnow()
    s = settings()
    community = charging_account.community
    order = PaymentOrder(
        out_trade_no=new_reference("EV", now),
        provider=provider,
        trade_type=trade_type,
        purpose=purpose,
        charging_account_id=charging_account.id,
        property_company_id=community.property_company_id,
        user_id=user_id,
        amount_fen=amount_fen,
        description=_subject(description or f"{community.name} 充电账户充值"),
        status="created",
        payer_id=payer_id,
        reference=reference,
        expires_at=now + timedelta(minutes=s.payment_order_expire_minutes),
        next_query_at=now + timedelta(minutes=s.payment_query_after_minutes),
        query_attempts=0,
        updated_at=now,
        created_at=now,
    )
    uow.session.add(order)
    uow.session.flush()
    return order


def launch_order(
    uow: UnitOfWork,
    order_id: int,
    *,
    payer_openid: str | None = None,
    buyer_id: str | None = None,
    buyer_open_id: str | None = None,
) -> Checkout:
    """Create the order at its provider (after the order row is committed) and commit the
    provider's reference. Provider down → 503 and the order stays ``created`` (the query job
    settles it); provider refusal → the order is ``failed`` and 502."""
    session = uow.session
    order = session.get(PaymentOrder, order_id)
    if order is None:
        raise NotFound("no such payment order")
    if order.status != "created":
        raise Conflict(f"the order is {order.status}")
    provider, trade_type = order.provider, order.trade_type
    no, subject, amount, expires = (order.out_trade_no, order.description, order.amount_fen,
                                    order.expires_at)
    release_connection(session)
    pay_params = trade_no = qr_code = None
    try:
        if provider == "wechat":
            if not payer_openid:
                raise InvalidInput("a WeChat JSAPI payment needs the payer's openid")
            client = wechat_client()
            ref = client.create_jsapi_order(no, subject, amount, payer_openid, expire_at=expires)
            pay_params = client.jsapi_pay_params(ref)
        elif trade_type == "jsapi":
            ref = trade_no = alipay_client().create_trade(
                no, subject, amount, buyer_id=buyer_id, buyer_open_id=buyer_open_id,
                time_expire=expires)
        else:
            ref = qr_code = alipay_client().precreate(no, subject, amount, time_expire=expires)
    except ProviderUnavailable as exc:
        log.warning("order %s: provider unavailable: %s", no, exc)
        raise PaymentProviderUnavailable("the payment provider did not answer; try again",
                                         out_trade_no=no) from exc
    except (ProviderRejected, ValueError) as exc:
        code = getattr(exc, "provider_code", None) or type(exc).__name__
        with uow:
            failed = session.get(PaymentOrder, order_id)
            assert failed is not None
            if failed.status == "created":
                failed.status = "failed"
                failed.failure_reason = f"create: {code}"[:64]
                failed.updated_at = utcnow()
            uow.commit()
        if isinstance(exc, ValueError):
            raise InvalidInput(f"the provider cannot take this order: {exc}") from exc
        raise PaymentProviderRejected("the payment provider refused the order",
                                      provider_code=code) from exc
    with uow:
        launched = session.get(PaymentOrder, order_id)
        assert launched is not None
        launched.provider_ref = ref[:256]
        launched.updated_at = utcnow()
        uow.commit()
    return Checkout(launched, pay_params=pay_params, trade_no=trade_no, qr_code=qr_code)


def start_topup(
    uow: UnitOfWork,
    actor: Actor,
    *,
    provider: str,
    trade_type: str,
    charging_account_id: int,
    amount_fen: int,
    buyer_id: str | None = None,
    buyer_open_id: str | None = None,
) -> Checkout:
    """A top-up of a charging account: residents for their bound accounts (WeChat JSAPI pays
    with the user's openid; Alipay JSAPI needs the buyer id), staff may only make a QR."""
    with uow:
        if actor.is_staff and trade_type != "qr":
            raise PermissionDenied("staff create QR orders only; the payer pays in the app")
        account = access.get_charging_account(uow.session, actor, charging_account_id,
                                              manage=actor.is_staff)
        payer_openid = None
        if provider == "wechat":
            user = uow.session.get(User, actor.user_id)
            payer_openid = user.openid if user else None
            if not payer_openid:
                raise Conflict("log in with WeChat first: the payment needs your openid")
        if provider == "alipay" and trade_type == "jsapi" and (buyer_id is None) == (
                buyer_open_id is None):
            raise InvalidInput("pass exactly one of buyer_id or buyer_open_id")
        order = create_order(
            uow, provider=provider, purpose="topup", charging_account=account,
            amount_fen=amount_fen, trade_type=trade_type, user_id=actor.user_id,
            payer_id=payer_openid or buyer_id or buyer_open_id,
        )
        order_id = order.id
        uow.commit()
    return launch_order(uow, order_id, payer_openid=payer_openid, buyer_id=buyer_id,
                        buyer_open_id=buyer_open_id)


def get_order(uow: UnitOfWork, actor: Actor, out_trade_no: str) -> PaymentOrder:
    """An order by our number: staff within their scope, a resident its own or its bound
    accounts' orders; anyone else: not found."""
    order = uow.session.execute(
        select(PaymentOrder).where(PaymentOrder.out_trade_no == out_trade_no[:32])
    ).scalar_one_or_none()
    if order is None:
        raise NotFound("no such payment order")
    if actor.is_staff:
        company_for(uow.session, actor, order.property_company_id)
    elif order.user_id != actor.user_id and not access.is_bound(
            uow.session, actor.user_id, order.charging_account_id):
        raise NotFound("no such payment order")
    return order


def list_orders(
    uow: UnitOfWork,
    actor: Actor,
    *,
    charging_account_id: int | None = None,
    status: str | None = None,
    provider: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[PaymentOrder]:
    session = uow.session
    stmt = select(PaymentOrder)
    if charging_account_id is not None:
        access.get_charging_account(session, actor, charging_account_id)
        stmt = stmt.where(PaymentOrder.charging_account_id == charging_account_id)
    stmt = scope_by_company(stmt, actor, PaymentOrder.property_company_id)
    if actor.role in (Role.RESIDENT, Role.VISITOR):
        bound = select(AccountBinding.charging_account_id).where(
            AccountBinding.user_id == actor.user_id)
        stmt = stmt.where(or_(PaymentOrder.user_id == actor.user_id,
                              PaymentOrder.charging_account_id.in_(bound)))
    if status:
        stmt = stmt.where(PaymentOrder.status == status)
    if provider:
        stmt = stmt.where(PaymentOrder.provider == provider)
    stmt = stmt.order_by(PaymentOrder.id.desc()).limit(limit).offset(offset)
    return list(session.execute(stmt).scalars())


def scope_by_company(stmt: Any, actor: Actor | None, column: Any,
                     *, include_unattributed: bool = False) -> Any:
    """Restrict a query on a ``property_company_id`` column to the actor's tenants."""
    if actor is None or actor.role is Role.PLATFORM_ADMIN:
        return stmt
    if actor.role is Role.POWER_COMPANY:
        mine = select(PropertyCompany.id).where(
            PropertyCompany.power_company_id == actor.power_company_id)
        cond = column.in_(mine)
        return stmt.where(or_(cond, column.is_(None)) if include_unattributed else cond)
    if actor.role is Role.PROPERTY_OPERATOR:
        return stmt.where(column == actor.property_company_id)
    return stmt  # residents: the caller narrows further


# --------------------------------------------------------------------------- applying


def _lock_order(session: Session, out_trade_no: str) -> PaymentOrder | None:
    return session.execute(
        select(PaymentOrder).where(PaymentOrder.out_trade_no == out_trade_no)
        .with_for_update().execution_options(populate_existing=True)
    ).scalar_one_or_none()


def apply_paid(uow: UnitOfWork, event: PaidEvent) -> tuple[str, str]:
    """Mark an order paid and credit its account, once (no commit).

    Returns (result, detail). Nothing is written unless the result is ``credited``: an
    unknown order, another provider, another amount or another transaction moves no money.
    """
    session = uow.session
    if not event.transaction_id or len(event.transaction_id) > 64:
        return "malformed", "paid without a usable transaction id"
    order = _lock_order(session, event.out_trade_no)
    if order is None:
        return "unknown_order", f"no order {event.out_trade_no}"
    if order.provider != event.provider:
        return "provider_mismatch", f"the order is a {order.provider} order"
    if event.amount_fen != order.amount_fen:
        return "amount_mismatch", f"ours {order.amount_fen} fen, theirs {event.amount_fen} fen"
    if order.status == "paid":
        if order.provider_transaction_id == event.transaction_id:
            return "duplicate", f"already paid ({event.source})"
        return "conflicting_transaction", "the order was paid by another transaction"
    other = session.execute(
        select(PaymentOrder.id).where(
            PaymentOrder.provider == event.provider,
            PaymentOrder.provider_transaction_id == event.transaction_id)
    ).first()
    if other is not None:
        return "conflicting_transaction", "this transaction paid another order"
    account = session.get(ChargingAccount, order.charging_account_id)
    assert account is not None
    now = utcnow()
    was = order.status
    topup = credit_topup_in(
        uow, account, amount_fen=order.amount_fen, channel=order.provider,
        key=f"{order.provider}:{event.transaction_id}", reference=order.out_trade_no,
    )
    order.status = "paid"
    order.provider_transaction_id = event.transaction_id
    order.paid_at = event.paid_at or now
    order.payer_id = (event.payer_id or order.payer_id or "")[:64] or None
    order.ledger_transaction_id = topup.transaction_id
    order.updated_at = now
    if was != "created":
        # The payer's money arrived after we gave up on the order: it is still theirs.
        log.warning("order %s paid while %s; credited", order.out_trade_no, was)
        order.failure_reason = f"paid while {was}"
    session.flush()
    for hook in list(ON_PAID):
        hook(session, order)
    return "credited", f"{event.source}; was {was}"


def close_order(uow: UnitOfWork, out_trade_no: str, reason: str) -> tuple[str, str]:
    """Close a still-unpaid order (no commit); a paid order stays paid."""
    order = _lock_order(uow.session, out_trade_no)
    if order is None:
        return "ignored", "unknown order"
    if order.status != "created":
        return "ignored", f"order is {order.status}"
    now = utcnow()
    order.status = "closed"
    order.closed_at = now
    order.updated_at = now
    order.failure_reason = reason[:64]
    return "closed", reason


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def _ingest(
    uow: UnitOfWork,
    *,
    provider: str,
    notification_id: str,
    event_type: str,
    out_trade_no: str | None,
    out_refund_no: str | None,
    digest: str,
    payload: dict[str, Any],
    apply: Callable[[], tuple[str, str]],
) -> Outcome:
    """Store the notification in the inbox and apply it, in one transaction.

    The claim is INSERT … ON CONFLICT DO NOTHING on (provider, notification id): of 50
    identical copies one inserts and applies, the others wait for its commit and then find
    the stored row, whose result decides their reply. A reused id with other content is
    refused.
    """
    session = uow.session
    with uow:
        claim = insert_ignoring_duplicates(session, PaymentNotification,
                                           ["provider", "notification_id"])
        row_id = session.execute(claim.values(
            provider=provider, notification_id=notification_id[:128],
            event_type=event_type[:40], out_trade_no=(out_trade_no or "")[:64] or None,
            out_refund_no=(out_refund_no or "")[:64] or None, digest=digest, payload=payload,
            result="received", detail="", received_at=utcnow(),
        ).returning(PaymentNotification.id)).scalar()
        if row_id is None:
            stored = session.execute(
                select(PaymentNotification).where(
                    PaymentNotification.provider == provider,
                    PaymentNotification.notification_id == notification_id[:128])
            ).scalar_one()
            if stored.digest != digest:
                outcome = Outcome(False, "id_reused", "this notification id had other content")
            else:
                outcome = Outcome(stored.result in ACCEPTED_RESULTS, stored.result,
                                  "a copy of a stored notification")
            uow.commit()
            return outcome
        result, detail = apply()
        session.execute(
            update(PaymentNotification).where(PaymentNotification.id == row_id)
            .values(result=result, detail=detail[:200])
        )
        uow.commit()
    if result not in ACCEPTED_RESULTS:
        log.warning("%s notification %s refused: %s (%s)", provider, notification_id, result,
                    detail)
    return Outcome(result in ACCEPTED_RESULTS, result, detail)


def handle_wechat_notification(uow: UnitOfWork, note: WeChatNotification) -> Outcome:
    """Apply a verified, decrypted WeChat Pay notification (payment or refund) once."""
    res = note.resource
    if isinstance(res, WeChatTransaction):
        event = PaidEvent("wechat", res.out_trade_no, res.transaction_id, res.amount_total_fen,
                          res.success_time, res.payer_openid or None, "notification")
        return _ingest(
            uow, provider="wechat", notification_id=note.id, event_type=note.event_type,
            out_trade_no=res.out_trade_no, out_refund_no=None,
            digest=_digest("pay", res.out_trade_no, res.transaction_id, res.trade_state,
                           res.amount_total_fen),
            payload=dict(res.raw), apply=lambda: apply_paid(uow, event),
        )
    refund_event = refunds.RefundEvent(
        provider="wechat", out_refund_no=res.out_refund_no,
        status=res.refund_status.lower(), amount_fen=res.amount_refund_fen,
        provider_refund_id=res.refund_id or None, at=res.success_time,
        out_trade_no=res.out_trade_no,
    )
    return _ingest(
        uow, provider="wechat", notification_id=note.id, event_type=note.event_type,
        out_trade_no=res.out_trade_no, out_refund_no=res.out_refund_no,
        digest=_digest("refund", res.out_refund_no, res.refund_id, res.refund_status,
                       res.amount_refund_fen),
        payload=dict(res.raw), apply=lambda: refunds.apply_refund_update(uow, refund_event),
    )


def _beijing_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
    except ValueError:
        return None


def handle_alipay_notification(uow: UnitOfWork, note: AlipayNotification) -> Outcome:
    """Apply a verified Alipay notification once. Refund notifications (partial refunds
    arrive as TRADE_SUCCESS with refund fields) never credit."""
    payload = {k: v for k, v in note.raw.items() if k not in ("sign", "sign_type")}
    apply: Callable[[], tuple[str, str]]
    if note.is_refund:
        def apply() -> tuple[str, str]:
            return refunds.apply_alipay_refund_notice(
                uow, out_trade_no=note.out_trade_no, out_request_no=note.out_biz_no,
                refund_fee_fen=note.refund_fee_fen, at=_beijing_time(note.gmt_refund))
        kind = "refund"
    elif note.is_payment_success:
        event = PaidEvent("alipay", note.out_trade_no, note.trade_no, note.total_amount_fen,
                          _beijing_time(note.gmt_payment),
                          note.buyer_id or note.buyer_open_id, "notification")

        def apply() -> tuple[str, str]:
            return apply_paid(uow, event)
        kind = "pay"
    elif note.trade_status == "TRADE_CLOSED":
        def apply() -> tuple[str, str]:
            return close_order(uow, note.out_trade_no, "provider closed the trade")
        kind = "close"
    else:
        def apply() -> tuple[str, str]:
            return "ignored", f"trade status {note.trade_status}"
        kind = "other"
    return _ingest(
        uow, provider="alipay", notification_id=note.notify_id,
        event_type=f"{note.notify_type or 'trade_status_sync'}:{note.trade_status}",
        out_trade_no=note.out_trade_no, out_refund_no=note.out_biz_no,
        digest=_digest(kind, note.out_trade_no, note.trade_no, note.trade_status,
                       note.total_amount_fen, note.refund_fee_fen, note.out_biz_no),
        payload=payload, apply=apply,
    )


# --------------------------------------------------------------------------- order query


def due_orders(uow: UnitOfWork, now: datetime, limit: int = 100) -> list[int]:
    """Ids of ``created`` orders whose next query is due (the first one N minutes after
    creation)."""
    ids = uow.session.execute(
        select(PaymentOrder.id)
        .where(PaymentOrder.status == "created", PaymentOrder.next_query_at <= now)
        .order_by(PaymentOrder.next_query_at, PaymentOrder.id).limit(limit)
    ).scalars().all()
    uow.session.rollback()
    return list(ids)


def claim_order_query(uow: UnitOfWork, order_id: int, now: datetime) -> bool:
    """Claim one query of an order (several job processes may run): an atomic UPDATE moves
    its next query time on; only the process whose UPDATE matched queries it now."""
    with uow:
        interval = timedelta(minutes=max(1, settings().payment_query_after_minutes))
        claimed = uow.session.execute(
            update(PaymentOrder)
            .where(PaymentOrder.id == order_id, PaymentOrder.status == "created",
                   PaymentOrder.next_query_at <= now)
            .values(next_query_at=now + interval,
                    query_attempts=PaymentOrder.query_attempts + 1)
            .execution_options(synchronize_session=False)
        ).rowcount
        uow.commit()
    return claimed == 1


def _settle_from_query(uow: UnitOfWork, event: PaidEvent) -> str:
    with uow:
        result, detail = apply_paid(uow, event)
        if result not in ACCEPTED_RESULTS:
            log.error("order %s: query says paid but %s (%s)", event.out_trade_no, result,
                      detail)
            order = _lock_order(uow.session, event.out_trade_no)
            if order is not None:
                order.failure_reason = result[:64]
        uow.commit()
    return result


def _close_from_query(uow: UnitOfWork, out_trade_no: str, reason: str) -> str:
    with uow:
        result, _ = close_order(uow, out_trade_no, reason)
        uow.commit()
    return result


def sync_order(uow: UnitOfWork, order_id: int, *, now: datetime | None = None) -> str:
    """Ask the provider about a ``created`` order and act on the answer: paid → applied
    exactly as a notification would be; closed at the provider, or expired unpaid → closed.
    Returns what happened ("credited", "closed", "pending", "unavailable", ...)."""
    session = uow.session
    order = session.get(PaymentOrder, order_id)
    if order is None or order.status != "created":
        session.rollback()
        return "skipped"
    provider, no, expires_at = order.provider, order.out_trade_no, order.expires_at
    release_connection(session)
    now = now or utcnow()
    try:
        if provider == "wechat":
            return _sync_wechat(uow, no, expired=now >= expires_at)
        return _sync_alipay(uow, no, expired=now >= expires_at + ALIPAY_CLOSE_GRACE)
    except ProviderUnavailable as exc:
        log.warning("order %s: query failed: %s", no, exc)
        return "unavailable"


def _sync_wechat(uow: UnitOfWork, no: str, *, expired: bool) -> str:
    client = wechat_client()
    try:
        tx = client.query_order(no)
        state = tx.trade_state
    except ProviderRejected as exc:
        if exc.provider_code != "ORDER_NOT_EXIST":
            raise PaymentProviderRejected("the order query was refused",
                                          provider_code=exc.provider_code) from exc
        tx, state = None, "NOT_EXIST"
    if state == "SUCCESS" and tx is not None:
        return _settle_from_query(uow, PaidEvent(
            "wechat", no, tx.transaction_id, tx.amount_total_fen, tx.success_time,
            tx.payer_openid or None, "query"))
    if state in ("CLOSED", "REVOKED", "PAYERROR"):
        return _close_from_query(uow, no, f"provider says {state}")
    if expired and state in ("NOTPAY", "NOT_EXIST"):
        if state == "NOTPAY":
            try:
                client.close_order(no)
            except ProviderRejected as exc:
                if exc.provider_code == "ORDERPAID":  # paid at the last moment
                    return _sync_wechat(uow, no, expired=False)
                raise PaymentProviderRejected("closing the order was refused",
                                              provider_code=exc.provider_code) from exc
        return _close_from_query(uow, no, "expired unpaid")
    return "pending"


def _sync_alipay(uow: UnitOfWork, no: str, *, expired: bool) -> str:
    try:
        trade = alipay_client().query(no)
        status = trade.trade_status
    except ProviderRejected as exc:
        if exc.provider_code != "ACQ.TRADE_NOT_EXIST":  # a QR nobody scanned
            raise PaymentProviderRejected("the order query was refused",
                                          provider_code=exc.provider_code) from exc
        trade, status = None, "NOT_EXIST"
    if status in ("TRADE_SUCCESS", "TRADE_FINISHED") and trade is not None:
        return _settle_from_query(uow, PaidEvent(
            "alipay", no, trade.trade_no, trade.total_amount_fen,
            _beijing_time(trade.send_pay_date), trade.buyer_user_id or trade.buyer_open_id,
            "query"))
    if status == "TRADE_CLOSED":
        return _close_from_query(uow, no, "provider says TRADE_CLOSED")
    if expired:  # we set time_expire at creation: Alipay no longer takes this payment
        return _close_from_query(uow, no, "expired unpaid")
    return "pending"


# --------------------------------------------------------------------------- charging


def register_charging_hooks() -> None:
    """Hand visitors' unused prepayments back: the charging code calls its ``ON_SETTLED``
    hooks with (session, charging_session, refund_fen) when it settles a session."""
    try:
        from app.services import charging
    except ImportError:  # pragma: no cover - the charging service has not landed yet
        return
    hooks = getattr(charging, "ON_SETTLED", None)
    if hooks is not None and refunds.refund_visitor_change not in hooks:
        hooks.append(refunds.refund_visitor_change)


register_charging_hooks()


# Visitors' orders start their charge when paid (registers an ON_PAID hook).
from app.services import visitors as _visitors  # noqa: E402,F401

"""Visitors' temporary charges: pay for one order, charge, get the unused part back.

A visitor (a WeChat user without an account of their own) picks a port and an
amount. The platform opens a *temporary* charging account for that one order and
a session waiting for payment. When the payment notification is applied (exactly
once, by the payments module), the ``ON_PAID`` hook below holds the money and
starts the port; at settlement the change is refunded to the payer (the payments
module's ``ON_SETTLED`` hook). If the port was taken meanwhile, everything paid
is refunded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.access import Actor
from app.domain.charging import SessionStatus, StartMethod, StopReason
from app.domain.errors import DomainError, InvalidInput, NotFound
from app.domain.ledger import AccountKind
from app.domain.money import require_fen
from app.domain.tariff import limits_for_balance
from app.models import (
    AccountBinding,
    ChargingAccount,
    ChargingSession,
    PaymentOrder,
    Port,
    User,
)
from app.models.base import utcnow
from app.services import charging, ledger, payments
from app.services.tariffs import tariff_in_force
from app.services.uow import UnitOfWork

log = logging.getLogger(__name__)

MAX_VISITOR_FEN = 10_000  # one visitor order pays at most 100 yuan


@dataclass(frozen=True)
class VisitorCharge:
    session: ChargingSession
    checkout: payments.Checkout


def start_visitor_charge(uow: UnitOfWork, actor: Actor, *, port_code: str, amount_fen: int,
                         max_minutes: int | None = None,
                         provider: str = "wechat") -> VisitorCharge:
    """Open a session waiting for payment, and the order that pays for it (``max_minutes``:
    a visitor who buys a duration; the amount still caps the cost)."""
    require_fen(amount_fen)
    if amount_fen > MAX_VISITOR_FEN:
        raise InvalidInput(f"a visitor order is at most {MAX_VISITOR_FEN} fen",
                           field="amount_fen")
    if provider != "wechat":
        raise InvalidInput("visitors pay with WeChat Pay in the mini-program (Alipay: QR at "
                           "the pile)", field="provider")
    with uow:
        session = uow.session
        user = session.get(User, actor.user_id)
        if user is None or not user.openid:
            raise InvalidInput("log in with WeChat first")
        port = session.execute(select(Port).where(
            Port.public_code == port_code.strip().upper())).scalar_one_or_none()
        if port is None or not port.pile.enabled:
            raise NotFound("no such port")
        now = utcnow()
        charging._check_port_startable(session, port.pile, port, now)
        version = tariff_in_force(session, port.pile.community_id, now)
        limits = limits_for_balance(charging.tariff_of(version), amount_fen, None, now)
        if limits.max_amount_fen <= 0:
            raise InvalidInput("the amount does not cover the minimum charge",
                               field="amount_fen")
        wallet = ledger.open_account(session, AccountKind.WALLET, 0)
        hold = ledger.open_account(session, AccountKind.HOLD, 0)
        account = ChargingAccount(
            community_id=port.pile.community_id, account_no=None, kind="temporary",
            status="active", pin_hash="!",  # no keypad log-in for a one-off order
            holder_name="visitor", wallet_account_id=wallet.id, hold_account_id=hold.id)
        session.add(account)
        session.flush()
        session.add(AccountBinding(user_id=user.id, charging_account_id=account.id))
        pending = ChargingSession(
            public_id=charging.new_public_id(), pile_id=port.pile_id, port_id=port.id,
            community_id=port.pile.community_id, method=StartMethod.VISITOR.value,
            status=SessionStatus.PENDING_PAYMENT.value, charging_account_id=account.id,
            user_id=user.id, tariff_version_id=version.id,
            max_amount_fen=limits.max_amount_fen, max_energy_wh=limits.max_energy_wh,
            max_minutes=min(limits.max_minutes, max_minutes or limits.max_minutes), cost_fen=0)
        session.add(pending)
        session.flush()
        order = payments.create_order(
            uow, provider=provider, purpose="visitor_charge", charging_account=account,
            amount_fen=amount_fen, user_id=user.id, reference=pending.public_id,
            description=f"{port.pile.community.name} 临时充电")
        order_id, openid = order.id, user.openid
        uow.commit()
    checkout = payments.launch_order(uow, order_id, payer_openid=openid)
    return VisitorCharge(_reload(uow.session, pending.public_id), checkout)


def _reload(session: Session, public_id: str) -> ChargingSession:
    return session.execute(select(ChargingSession).where(
        ChargingSession.public_id == public_id)).scalar_one()


def start_when_paid(session: Session, order: PaymentOrder) -> None:
    """payments.ON_PAID: the visitor's money is in the temporary wallet; start the port."""
    if order.purpose != "visitor_charge" or not order.reference:
        return
    pending = session.execute(
        select(ChargingSession).where(ChargingSession.public_id == order.reference)
        .with_for_update().execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if pending is None or pending.status != SessionStatus.PENDING_PAYMENT.value:
        return
    now = utcnow()
    account = session.get(ChargingAccount, pending.charging_account_id)
    assert account is not None
    nested = session.begin_nested()
    try:
        charging._check_port_startable(session, pending.pile, pending.port, now)
        hold = ledger.place_hold(session, account, amount_fen=order.amount_fen,
                                 key=pending.public_id)
        pending.hold_id = hold.id
        pending.status = SessionStatus.STARTING.value
        version = charging.tariff_in_force(session, pending.community_id, now)
        limits = limits_for_balance(charging.tariff_of(version), order.amount_fen, None, now)
        limits = replace(limits, max_minutes=min(limits.max_minutes, pending.max_minutes))
        pending.max_amount_fen = limits.max_amount_fen
        pending.max_energy_wh = limits.max_energy_wh
        pending.max_minutes = limits.max_minutes
        charging._queue_start(session, pending, pending.port, version, limits, None, now)
        nested.commit()
    except DomainError as exc:
        nested.rollback()
        log.warning("visitor session %s could not start after payment: %s", pending.public_id,
                    exc.message)
        pending.status = SessionStatus.FAILED.value
        pending.failure_reason = f"paid_but_{exc.details.get('reason', exc.code)}"[:40]
        pending.stop_reason = StopReason.START_FAILED.value
        pending.ended_at = now
        pending.refund_fen = order.amount_fen
        for hook in charging.ON_SETTLED:  # the whole payment goes back
            hook(session, pending, order.amount_fen)


payments.ON_PAID.append(start_when_paid)

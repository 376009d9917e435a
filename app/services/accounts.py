"""Charging accounts: create, change, close, bind, PINs, IC cards."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.domain.access import Actor, Role
from app.domain.accounts import (
    LockoutPolicy,
    normalise_card_uid,
    validate_phone,
    validate_pin,
)
from app.domain.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from app.domain.ledger import AccountKind
from app.models import AccountBinding, AuditEntry, ChargingAccount, Community, ICCard
from app.models.base import utcnow
from app.services import access
from app.services.context import hash_secret, keypad_lockout, verify_secret
from app.services.ledger import Balance, balance_of, open_account
from app.services.uow import UnitOfWork

MAX_GRACE_FEN = 1000  # a wallet may overdraw at most 10 yuan, and only at settlement


def _audit(session: Session, actor: Actor | None, action: str, obj: Any, **details: Any) -> None:
    session.add(
        AuditEntry(
            actor_user_id=actor.user_id if actor else None,
            action=action,
            object_type=obj.__tablename__.rstrip("s"),
            object_id=obj.id,
            details=details,
        )
    )


def open_charging_account(
    session: Session,
    *,
    community_id: int,
    account_no: str,
    pin: str,
    holder_name: str = "",
    kind: str = "resident",
) -> ChargingAccount:
    """Create the account and its wallet and hold ledger accounts (no commit)."""
    wallet = open_account(session, AccountKind.WALLET, 0)
    hold = open_account(session, AccountKind.HOLD, 0)
    account = ChargingAccount(
        community_id=community_id,
        account_no=validate_phone(account_no),
        pin_hash=hash_secret(validate_pin(pin)),
        holder_name=holder_name,
        kind=kind,
        status="active",
        wallet_account_id=wallet.id,
        hold_account_id=hold.id,
    )
    session.add(account)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict("this community already has an account with this number") from exc
    return account


def create_charging_account(
    uow: UnitOfWork,
    actor: Actor,
    *,
    community_id: int,
    account_no: str,
    pin: str,
    holder_name: str = "",
    kind: str = "resident",
) -> ChargingAccount:
    """Operators open accounts in their communities; a resident opens one for itself
    (and is bound to it at once)."""
    with uow:
        if actor.is_staff:
            access.get_community(uow.session, actor, community_id, manage=True)
        elif uow.session.get(Community, community_id) is None:
            raise NotFound("no such community")
        elif kind != "resident":
            raise PermissionDenied("residents open resident accounts only")
        account = open_charging_account(
            uow.session, community_id=community_id, account_no=account_no, pin=pin,
            holder_name=holder_name, kind=kind,
        )
        if actor.role is Role.RESIDENT:
            uow.session.add(AccountBinding(user_id=actor.user_id, charging_account_id=account.id))
        _audit(uow.session, actor, "account.create", account, account_no=account_no)
        uow.commit()
        return account


def update_charging_account(
    uow: UnitOfWork, actor: Actor, account_id: int, changes: dict[str, Any]
) -> ChargingAccount:
    with uow:
        account = access.get_charging_account(
            uow.session, actor, account_id, manage=actor.is_staff
        )
        if "status" in changes and not actor.is_staff:
            raise PermissionDenied("only the property office blocks or unblocks accounts")
        if "grace_fen" in changes:
            if not actor.is_staff:
                raise PermissionDenied("only the property office sets an overdraft grace")
            set_grace(uow.session, account, changes.pop("grace_fen"))
        for key, value in changes.items():
            setattr(account, key, value)
        _audit(uow.session, actor, "account.update", account, **changes)
        uow.commit()
        return account


def set_grace(session: Session, account: ChargingAccount, grace_fen: int) -> None:
    from app.models import LedgerAccount

    if not 0 <= grace_fen <= MAX_GRACE_FEN:
        raise InvalidInput(f"grace must be between 0 and {MAX_GRACE_FEN} fen", field="grace_fen")
    wallet = session.get(LedgerAccount, account.wallet_account_id)
    assert wallet is not None
    if wallet.balance_fen < -grace_fen:
        raise Conflict("the wallet is already overdrawn beyond this grace")
    wallet.floor_fen = -grace_fen


def close_charging_account(uow: UnitOfWork, actor: Actor, account_id: int) -> None:
    """Closing needs a zero balance and no charge in progress; the ledger stays."""
    with uow:
        account = access.get_charging_account(uow.session, actor, account_id, manage=True)
        if not actor.is_staff:
            raise PermissionDenied("ask the property office to close an account")
        bal = balance_of(uow.session, account)
        if bal.available_fen or bal.held_fen:
            raise Conflict(
                "refund or settle the balance before closing the account",
                available_fen=bal.available_fen, held_fen=bal.held_fen,
            )
        account.status = "closed"
        account.closed_at = utcnow()
        uow.session.execute(
            delete(AccountBinding).where(AccountBinding.charging_account_id == account.id)
        )
        for card in account.cards:
            card.status = "blocked"
        _audit(uow.session, actor, "account.close", account)
        uow.commit()


def account_balance(uow: UnitOfWork, actor: Actor, account_id: int) -> Balance:
    account = access.get_charging_account(uow.session, actor, account_id)
    return balance_of(uow.session, account)


def list_accounts(uow: UnitOfWork, actor: Actor, community_id: int | None = None
                  ) -> list[ChargingAccount]:
    stmt = select(ChargingAccount).where(ChargingAccount.status != "closed")
    if actor.is_staff:
        stmt = stmt.where(ChargingAccount.community_id.in_(access.scoped_community_ids(actor)))
    else:
        stmt = stmt.join(AccountBinding).where(AccountBinding.user_id == actor.user_id)
    if community_id is not None:
        stmt = stmt.where(ChargingAccount.community_id == community_id)
    return list(uow.session.execute(stmt.order_by(ChargingAccount.id)).scalars())


# --- PINs: the keypad password ---------------------------------------------------------


def check_pin(
    session: Session, account: ChargingAccount, pin: str, policy: LockoutPolicy, now: datetime
) -> bool:
    """Verify a PIN, counting failures and locking after too many (caller commits)."""
    policy.check_not_locked(account.pin_locked_until, now)
    if verify_secret(account.pin_hash, pin):
        account.pin_failures = 0
        account.pin_locked_until = None
        return True
    account.pin_failures, locked_until = policy.after_failure(account.pin_failures, now)
    if locked_until is not None:
        account.pin_locked_until = locked_until
    return False


def change_pin(
    uow: UnitOfWork, actor: Actor, account_id: int, *, old_pin: str, new_pin: str
) -> None:
    with uow:
        # Staff need the right to change the account (the read-only power company may not,
        # nor count failures against a resident's keypad); residents need a binding.
        account = access.get_charging_account(
            uow.session, actor, account_id, manage=actor.is_staff
        )
        ok = check_pin(uow.session, account, old_pin, keypad_lockout(), utcnow())
        if not ok:
            uow.commit()  # the failure count must survive the error
            raise AuthenticationFailed("the current PIN is wrong")
        account.pin_hash = hash_secret(validate_pin(new_pin))
        _audit(uow.session, actor, "account.pin_change", account)
        uow.commit()


def reset_pin(uow: UnitOfWork, actor: Actor, account_id: int, *, new_pin: str) -> None:
    """The property office resets a forgotten PIN (and lifts a lockout)."""
    with uow:
        account = access.get_charging_account(uow.session, actor, account_id, manage=True)
        if not actor.is_staff:
            raise PermissionDenied("only the property office resets PINs")
        account.pin_hash = hash_secret(validate_pin(new_pin))
        account.pin_failures = 0
        account.pin_locked_until = None
        _audit(uow.session, actor, "account.pin_reset", account)
        uow.commit()


# --- bindings: which user sees which accounts -------------------------------------------


def bind_account(
    uow: UnitOfWork, actor: Actor, *, community_id: int, account_no: str, pin: str
) -> ChargingAccount:
    """A user proves they hold an account (number + PIN) and binds it."""
    with uow:
        account = uow.session.execute(
            select(ChargingAccount).where(
                ChargingAccount.community_id == community_id,
                ChargingAccount.account_no == validate_phone(account_no),
                ChargingAccount.status != "closed",
            )
        ).scalar_one_or_none()
        if account is None:
            raise AuthenticationFailed("wrong account number or PIN")
        if not check_pin(uow.session, account, pin, keypad_lockout(), utcnow()):
            uow.commit()
            raise AuthenticationFailed("wrong account number or PIN")
        if not access.is_bound(uow.session, actor.user_id, account.id):
            uow.session.add(
                AccountBinding(user_id=actor.user_id, charging_account_id=account.id)
            )
        uow.commit()
        return account


def unbind_account(uow: UnitOfWork, actor: Actor, account_id: int) -> None:
    with uow:
        result = uow.session.execute(
            delete(AccountBinding).where(
                AccountBinding.user_id == actor.user_id,
                AccountBinding.charging_account_id == account_id,
            )
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound("no such bound account")
        uow.commit()


# --- IC cards --------------------------------------------------------------------------


def add_card(uow: UnitOfWork, actor: Actor, account_id: int, card_uid: str) -> ICCard:
    with uow:
        account = access.get_charging_account(uow.session, actor, account_id, manage=True)
        if not actor.is_staff:
            raise PermissionDenied("cards are issued by the property office")
        card = ICCard(card_uid=normalise_card_uid(card_uid), charging_account_id=account.id,
                      status="active")
        uow.session.add(card)
        try:
            uow.session.flush()
        except IntegrityError as exc:
            raise Conflict("this card is already issued") from exc
        _audit(uow.session, actor, "card.add", account, card_uid=card.card_uid)
        uow.commit()
        return card


def set_card_status(uow: UnitOfWork, actor: Actor, card_id: int, status: str) -> ICCard:
    """Block a lost card (residents may too) or unblock one (property office only)."""
    with uow:
        card = access.get_card(uow.session, actor, card_id)
        if status == "active" and not actor.is_staff:
            raise PermissionDenied("ask the property office to unblock a card")
        if actor.is_staff:
            access.get_card(uow.session, actor, card_id, manage=True)
        card.status = status
        _audit(uow.session, actor, f"card.{status}", card.account, card_uid=card.card_uid)
        uow.commit()
        return card


def remove_card(uow: UnitOfWork, actor: Actor, card_id: int) -> None:
    with uow:
        card = access.get_card(uow.session, actor, card_id, manage=True)
        if not actor.is_staff:
            raise PermissionDenied("cards are returned at the property office")
        _audit(uow.session, actor, "card.remove", card.account, card_uid=card.card_uid)
        uow.session.delete(card)
        uow.commit()

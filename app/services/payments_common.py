"""What the payment services share: errors, numbering, Beijing time, tenant checks."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy.orm import Session

from app.domain.access import Actor
from app.domain.errors import Conflict, DomainError
from app.models import PropertyCompany
from app.services import access

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")


class PaymentProviderUnavailable(DomainError):
    """The payment provider did not answer; the outcome is unknown and will be checked."""

    code = "provider_unavailable"


class PaymentProviderRejected(DomainError):
    """The payment provider refused the request."""

    code = "provider_rejected"


def new_reference(prefix: str, now: datetime) -> str:
    """``EV20251124103456A1B2C3D4E5``: 26 of [0-9A-Z], unique, sortable by time, valid as a
    WeChat / Alipay out_trade_no and out_refund_no."""
    stamp = now.astimezone(BEIJING).strftime("%Y%m%d%H%M%S")
    return f"{prefix}{stamp}{secrets.token_hex(5).upper()}"


def release_connection(session: Session) -> None:
    """End the session's transaction before a network call.

    On SQLite every transaction starts with BEGIN IMMEDIATE (the write lock), so a
    transaction left open across an HTTP call to a provider would block every writer for
    as long as the provider takes. Refuses to drop changes the caller has not committed.
    """
    if session.new or session.deleted or any(session.is_modified(o) for o in session.dirty):
        raise Conflict("commit pending changes before calling a payment provider")
    session.rollback()


def company_for(session: Session, actor: Actor | None, company_id: int, *,
                manage: bool = False) -> PropertyCompany:
    """The property company an object belongs to, checked against the actor's scope.

    ``actor=None`` is the system (CLI, jobs). Residents and visitors get NotFound.
    """
    if actor is None:
        company = session.get(PropertyCompany, company_id)
        assert company is not None
        return company
    return access.get_property_company(session, actor, company_id, manage=manage)

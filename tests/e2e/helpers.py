"""Reading the database from an end-to-end test without holding it."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select

from app.extensions import db
from app.models import ChargingAccount, ChargingSession, Pile, Port
from app.services import ledger

T = TypeVar("T")


def snapshot(obj: T) -> T:
    """Detach a freshly loaded object and end the read transaction."""
    if obj is not None:
        db.session.expunge(obj)
    db.session.rollback()
    return obj


def session_row(public_id: str) -> ChargingSession:
    return snapshot(db.session.execute(
        select(ChargingSession).where(ChargingSession.public_id == public_id)).scalar_one())


def settled(public_id: str) -> ChargingSession | None:
    row = session_row(public_id)
    return row if row.status == "settled" else None


def balance(account_id: int) -> ledger.Balance:
    account = db.session.get(ChargingAccount, account_id)
    bal = ledger.balance_of(db.session, account)
    db.session.rollback()
    return bal


def port_status(pile_id: int, number: int) -> str:
    status = db.session.execute(select(Port.status).where(
        Port.pile_id == pile_id, Port.number == number)).scalar_one()
    db.session.rollback()
    return status


def pile_online(pile_id: int) -> bool:
    online = db.session.execute(select(Pile.online).where(Pile.id == pile_id)).scalar_one()
    db.session.rollback()
    return bool(online)


def count(stmt: Any) -> int:
    value = db.session.execute(stmt).scalar_one()
    db.session.rollback()
    return int(value or 0)

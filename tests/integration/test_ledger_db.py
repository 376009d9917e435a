"""The ledger on the real database: invariants, idempotency, append-only, concurrency."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.domain import ledger as rules
from app.domain.errors import Conflict, IdempotencyConflict, InsufficientFunds
from app.domain.ledger import TransactionKind
from app.extensions import db
from app.models import ChargingAccount, LedgerEntry, LedgerTransaction
from app.services import ledger
from app.services.uow import UnitOfWork
from app.services.wallet import credit_topup_in
from tests.support.ledger_checks import assert_ledger_invariants

Op = tuple[str, int, int]  # (operation, amount, key number)

operations = st.lists(
    st.tuples(
        st.sampled_from(["topup", "hold", "capture", "release", "refund"]),
        st.integers(1, 3000),
        st.integers(0, 6),  # few keys, so repeats are common
    ),
    min_size=1,
    max_size=25,
)


def run_op(world: Any, op: Op) -> None:
    name, amount, key = op
    uow = UnitOfWork()
    account = uow.session.get(ChargingAccount, world.a.account.id)
    company = world.a.company
    try:
        with uow:
            if name == "topup":
                credit_topup_in(uow, account, amount_fen=amount, channel="wechat",
                                key=f"wx-{key}-{amount}")
            elif name == "hold":
                ledger.place_hold(uow.session, account, amount_fen=amount, key=f"s{key}")
            elif name in ("capture", "release"):
                hold = ledger.place_hold(uow.session, account, amount_fen=amount, key=f"s{key}")
                if name == "capture":
                    ledger.capture_hold(uow.session, hold.id, cost_fen=amount // 2,
                                        revenue_account_id=company.revenue_account_id,
                                        property_company_id=company.id)
                else:
                    ledger.release_hold(uow.session, hold.id)
            else:
                ledger.post(uow.session, key=f"refund-{key}", kind=TransactionKind.REFUND,
                            postings=rules.refund_postings(
                                wallet=account.wallet_account_id,
                                collection=company.collection_account_id, amount_fen=amount),
                            amount_fen=amount, charging_account_id=account.id)
            uow.commit()
    except (InsufficientFunds, IdempotencyConflict, Conflict):
        pass


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=operations)
def test_any_sequence_keeps_the_books(world: Any, ops: list[Op]) -> None:
    for op in ops:
        run_op(world, op)
        # a repeat of the same event changes nothing
        before = db.session.execute(select(func.count(LedgerEntry.id))).scalar_one()
        run_op(world, op)
        if op[0] in ("topup", "refund"):
            assert db.session.execute(select(func.count(LedgerEntry.id))).scalar_one() == before
    assert_ledger_invariants(db.session)
    keys = db.session.execute(select(LedgerTransaction.idempotency_key)).scalars().all()
    assert len(keys) == len(set(keys))


def test_same_topup_twice_credits_once(world: Any) -> None:
    uow = UnitOfWork()
    account = world.a.account
    with uow:
        first = credit_topup_in(uow, account, amount_fen=700, channel="wechat", key="wx-1")
        uow.commit()
    with uow:
        second = credit_topup_in(uow, account, amount_fen=700, channel="wechat", key="wx-1")
        uow.commit()
    assert first.applied and not second.applied
    assert first.transaction_id == second.transaction_id
    assert second.balance.available_fen == 5700
    with uow, pytest.raises(IdempotencyConflict):
        credit_topup_in(uow, account, amount_fen=701, channel="wechat", key="wx-1")


def test_hold_cannot_overspend_and_capture_is_once(world: Any) -> None:
    uow = UnitOfWork()
    account, company = world.a.account, world.a.company
    with uow:
        hold = ledger.place_hold(uow.session, account, amount_fen=3000, key="session-1")
        with pytest.raises(InsufficientFunds):
            ledger.place_hold(uow.session, account, amount_fen=2001, key="session-2")
        ledger.capture_hold(uow.session, hold.id, cost_fen=1234,
                            revenue_account_id=company.revenue_account_id,
                            property_company_id=company.id)
        again = ledger.capture_hold(uow.session, hold.id, cost_fen=1234,
                                    revenue_account_id=company.revenue_account_id,
                                    property_company_id=company.id)
        uow.commit()
    assert not again.applied
    bal = ledger.balance_of(db.session, account)
    assert (bal.available_fen, bal.held_fen) == (5000 - 1234, 0)
    assert_ledger_invariants(db.session)


def test_ledger_rows_are_append_only(world: Any) -> None:
    entry_id = db.session.execute(select(LedgerEntry.id).limit(1)).scalar_one()
    for statement in (f"UPDATE ledger_entries SET amount_fen = 1 WHERE id = {entry_id}",
                      f"DELETE FROM ledger_entries WHERE id = {entry_id}",
                      "UPDATE ledger_transactions SET amount_fen = 0"):
        with pytest.raises((IntegrityError, DBAPIError)):
            db.session.execute(text(statement))
        db.session.rollback()
    assert_ledger_invariants(db.session)


@pytest.mark.postgres_only
def test_fifty_threads_keep_the_invariants(app: Flask, world: Any) -> None:
    """50 threads top up (with colliding keys), hold, capture and release at once."""
    account_id = world.a.account.id
    company = world.a.company
    errors: list[BaseException] = []
    barrier = threading.Barrier(50)

    def worker(n: int) -> None:
        with app.app_context():
            try:
                barrier.wait(timeout=30)
                for i in range(6):
                    uow = UnitOfWork()
                    with uow:
                        account = uow.session.get(ChargingAccount, account_id)
                        assert account is not None
                        try:
                            if i % 3 == 0:
                                # keys collide across threads: each key must credit once
                                credit_topup_in(uow, account, amount_fen=100, channel="wechat",
                                                key=f"wx-{(n + i) % 20}")
                            elif i % 3 == 1:
                                ledger.place_hold(uow.session, account, amount_fen=150,
                                                  key=f"t{n}-{i}")
                            else:
                                hold = ledger.place_hold(uow.session, account, amount_fen=200,
                                                         key=f"t{n}-{i}")
                                if n % 2:
                                    ledger.capture_hold(
                                        uow.session, hold.id, cost_fen=120,
                                        revenue_account_id=company.revenue_account_id,
                                        property_company_id=company.id)
                                else:
                                    ledger.release_hold(uow.session, hold.id)
                            uow.commit()
                        except InsufficientFunds:
                            uow.rollback()
            except BaseException as exc:  # surfaced below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    db.session.expire_all()
    assert_ledger_invariants(db.session)
    topups = db.session.execute(select(func.count()).select_from(LedgerTransaction).where(
        LedgerTransaction.idempotency_key.like("wx-%"))).scalar_one()
    assert topups == 20

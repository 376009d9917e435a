"""Ledger invariants, checked straight against the database with SQL."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session


def assert_ledger_invariants(session: Session) -> None:
    mismatched = session.execute(text("""
        SELECT a.id, a.balance_fen, COALESCE(SUM(e.amount_fen), 0) AS total
        FROM ledger_accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
        GROUP BY a.id, a.balance_fen
        HAVING a.balance_fen != COALESCE(SUM(e.amount_fen), 0)""")).all()
    assert mismatched == [], f"balances differ from their entries: {mismatched}"
    total = session.execute(text("SELECT COALESCE(SUM(amount_fen), 0) FROM ledger_entries")
                            ).scalar_one()
    assert total == 0, f"the books do not balance: {total}"
    unbalanced = session.execute(text("""
        SELECT transaction_id FROM ledger_entries GROUP BY transaction_id
        HAVING SUM(amount_fen) != 0""")).all()
    assert unbalanced == [], f"transactions that do not sum to zero: {unbalanced}"
    below = session.execute(text("""
        SELECT id, balance_fen, floor_fen FROM ledger_accounts
        WHERE floor_fen IS NOT NULL AND balance_fen < floor_fen""")).all()
    assert below == [], f"balances below their floor: {below}"
    holds = session.execute(text("""
        SELECT c.id, la.balance_fen,
               COALESCE((SELECT SUM(h.amount_fen) FROM holds h
                         WHERE h.charging_account_id = c.id AND h.status = 'active'), 0)
        FROM charging_accounts c JOIN ledger_accounts la ON la.id = c.hold_account_id""")).all()
    for account_id, held, active in holds:
        assert held == active, f"account {account_id}: hold balance {held} != active {active}"

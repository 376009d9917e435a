"""The bookkeeping rules alone: a state machine over an in-memory ledger."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from app.domain import ledger as L
from app.domain.errors import InsufficientFunds, LedgerInvariantViolated
from app.domain.ledger import AccountKind, AccountState, Posting, TransactionKind

WALLET, HOLD, REVENUE, COLLECTION = 1, 2, 3, 4
GRACE = 300


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.kinds = {WALLET: AccountKind.WALLET, HOLD: AccountKind.HOLD,
                      REVENUE: AccountKind.REVENUE, COLLECTION: AccountKind.COLLECTION}
        self.floors: dict[int, int | None] = {WALLET: -GRACE, HOLD: 0, REVENUE: None,
                                              COLLECTION: None}
        self.balances = dict.fromkeys(self.kinds, 0)
        self.entries: list[Posting] = []
        self.holds: list[int] = []

    def _apply(self, kind: TransactionKind, postings: list[Posting]) -> bool:
        states = {a: AccountState(a, self.kinds[a], self.balances[a], self.floors[a])
                  for a in self.kinds}
        try:
            new = L.apply_postings(states, postings, kind)
        except InsufficientFunds:
            return False
        self.balances.update(new)
        self.entries.extend(postings)
        return True

    @rule(amount=st.integers(1, 10_000))
    def topup(self, amount: int) -> None:
        assert self._apply(TransactionKind.TOPUP, L.topup_postings(
            wallet=WALLET, collection=COLLECTION, amount_fen=amount))

    @rule(amount=st.integers(1, 10_000))
    def hold(self, amount: int) -> None:
        before = self.balances[WALLET]
        ok = self._apply(TransactionKind.HOLD, L.hold_postings(
            wallet=WALLET, hold=HOLD, amount_fen=amount))
        assert ok == (before >= amount)  # holds never use the grace
        if ok:
            self.holds.append(amount)

    @rule(cost=st.integers(0, 12_000), data=st.data())
    def capture(self, cost: int, data: st.DataObject) -> None:
        if not self.holds:
            return
        held = self.holds[data.draw(st.integers(0, len(self.holds) - 1))]
        postings = L.capture_postings(wallet=WALLET, hold=HOLD, revenue=REVENUE,
                                      held_fen=held, cost_fen=cost)
        if self._apply(TransactionKind.CAPTURE, postings):
            self.holds.remove(held)

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if not self.holds:
            return
        held = self.holds.pop(data.draw(st.integers(0, len(self.holds) - 1)))
        assert self._apply(TransactionKind.RELEASE, L.release_postings(
            wallet=WALLET, hold=HOLD, amount_fen=held))

    @rule(amount=st.integers(1, 10_000))
    def refund(self, amount: int) -> None:
        before = self.balances[WALLET]
        ok = self._apply(TransactionKind.REFUND, L.refund_postings(
            wallet=WALLET, collection=COLLECTION, amount_fen=amount))
        assert ok == (before >= amount)

    @invariant()
    def balances_are_sums_of_entries(self) -> None:
        for account in self.kinds:
            assert self.balances[account] == sum(
                p.amount_fen for p in self.entries if p.account_id == account)

    @invariant()
    def books_balance(self) -> None:
        assert sum(p.amount_fen for p in self.entries) == 0

    @invariant()
    def floors_hold(self) -> None:
        assert self.balances[WALLET] >= -GRACE
        assert self.balances[HOLD] == sum(self.holds) >= 0


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)


def test_postings_must_balance() -> None:
    with pytest.raises(LedgerInvariantViolated):
        L.validate_postings([Posting(1, 10), Posting(2, -9)])


def test_zero_and_float_postings_refused() -> None:
    with pytest.raises(LedgerInvariantViolated):
        L.validate_postings([Posting(1, 0), Posting(2, 0)])
    with pytest.raises(LedgerInvariantViolated):
        L.validate_postings([Posting(1, 1.5), Posting(2, -1.5)])  # type: ignore[arg-type]


def test_credit_to_overdrawn_wallet_is_accepted() -> None:
    states = {1: AccountState(1, AccountKind.WALLET, -200, -300),
              2: AccountState(2, AccountKind.COLLECTION, 0, None)}
    new = L.apply_postings(states, L.topup_postings(wallet=1, collection=2, amount_fen=50),
                           TransactionKind.TOPUP)
    assert new == {1: -150, 2: -50}


def test_capture_beyond_grace_refused() -> None:
    states = {1: AccountState(1, AccountKind.WALLET, 0, -300),
              2: AccountState(2, AccountKind.HOLD, 100, 0),
              3: AccountState(3, AccountKind.REVENUE, 0, None)}
    postings = L.capture_postings(wallet=1, hold=2, revenue=3, held_fen=100, cost_fen=401)
    with pytest.raises(InsufficientFunds):
        L.apply_postings(states, postings, TransactionKind.CAPTURE)
    ok = L.capture_postings(wallet=1, hold=2, revenue=3, held_fen=100, cost_fen=400)
    assert L.apply_postings(states, ok, TransactionKind.CAPTURE)[1] == -300

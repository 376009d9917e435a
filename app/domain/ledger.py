"""Double-entry bookkeeping rules, in plain Python.

Every money event is one journal transaction: a set of postings whose amounts
sum to zero, identified by an idempotency key. Amounts are signed integer fen;
the sign convention is the liability view of the platform:

* ``wallet``  — what a charging account may spend (positive = owed to it);
* ``hold``    — a charging account's money frozen for charges in progress;
* ``revenue`` — what a property company earned from charging (positive);
* ``collection`` — money a property company received from payers
  (debit-normal: it goes *negative* by what was received; reports show −balance).

A balance is the sum of its account's entries. Wallet and hold accounts have a
floor (0, or −grace for a wallet with an explicit, bounded overdraft);
collection and revenue accounts have none. This module decides what postings a
money event makes and whether they are allowed; persisting them is the
service layer's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from app.domain.errors import InsufficientFunds, LedgerInvariantViolated


class AccountKind(StrEnum):
    WALLET = "wallet"
    HOLD = "hold"
    REVENUE = "revenue"
    COLLECTION = "collection"


class TransactionKind(StrEnum):
    TOPUP = "topup"  # payer → wallet, recorded against the property's collection
    TOPUP_REVERSAL = "topup_reversal"  # compensates a mistaken cash top-up
    HOLD = "hold"  # wallet → hold when a charge starts
    CAPTURE = "capture"  # hold → revenue (+ change back to wallet) at settlement
    RELEASE = "release"  # hold → wallet when a charge never started
    REFUND = "refund"  # wallet → back to the payer
    COIN_SALE = "coin_sale"  # coins in a pile's box: received and earned at once


@dataclass(frozen=True, slots=True)
class Posting:
    account_id: int
    amount_fen: int


@dataclass(frozen=True, slots=True)
class AccountState:
    """What the rules need to know about an account to accept a posting."""

    account_id: int
    kind: AccountKind
    balance_fen: int
    floor_fen: int | None  # None: no floor (collection, revenue)


def validate_postings(postings: Iterable[Posting]) -> tuple[Posting, ...]:
    """A journal transaction needs ≥ 2 non-zero integer postings summing to zero."""
    items = tuple(postings)
    if len(items) < 2:
        raise LedgerInvariantViolated("a transaction needs at least two postings")
    for p in items:
        if not isinstance(p.amount_fen, int) or isinstance(p.amount_fen, bool):
            raise LedgerInvariantViolated("posting amounts are integer fen")
        if p.amount_fen == 0:
            raise LedgerInvariantViolated("zero postings are not recorded")
    if sum(p.amount_fen for p in items) != 0:
        raise LedgerInvariantViolated("postings must sum to zero", postings=repr(items))
    return items


# Only settling a charge may dip into a wallet's grace (meter overshoot past the
# limit the pile was given); holds, refunds and reversals need real money.
GRACE_APPLIES_TO = frozenset({TransactionKind.CAPTURE})


def apply_postings(
    accounts: Mapping[int, AccountState],
    postings: Iterable[Posting],
    kind: TransactionKind,
) -> dict[int, int]:
    """New balances after the postings, or InsufficientFunds if a floor would break.

    Only accounts whose balance *decreases* are checked against their floor, so a
    credit to an account that is already below zero (within grace) is never refused.
    """
    items = validate_postings(postings)
    use_grace = kind in GRACE_APPLIES_TO
    new: dict[int, int] = {}
    for p in items:
        if p.account_id not in accounts:
            raise LedgerInvariantViolated(f"unknown ledger account {p.account_id}")
        new[p.account_id] = new.get(p.account_id, accounts[p.account_id].balance_fen) + (
            p.amount_fen
        )
    for account_id, balance in new.items():
        state = accounts[account_id]
        floor = state.floor_fen
        if floor is not None and not use_grace:
            floor = max(floor, 0)
        if floor is not None and balance < state.balance_fen and balance < floor:
            raise InsufficientFunds(
                "the available balance does not cover this",
                account_id=account_id,
                balance_fen=state.balance_fen,
                needed_fen=state.balance_fen - balance,
            )
    return new


# --- the postings of each money event -------------------------------------------------


def topup_postings(*, wallet: int, collection: int, amount_fen: int) -> list[Posting]:
    return [Posting(wallet, amount_fen), Posting(collection, -amount_fen)]


def topup_reversal_postings(*, wallet: int, collection: int, amount_fen: int) -> list[Posting]:
    return [Posting(wallet, -amount_fen), Posting(collection, amount_fen)]


def hold_postings(*, wallet: int, hold: int, amount_fen: int) -> list[Posting]:
    return [Posting(wallet, -amount_fen), Posting(hold, amount_fen)]


def release_postings(*, wallet: int, hold: int, amount_fen: int) -> list[Posting]:
    return [Posting(hold, -amount_fen), Posting(wallet, amount_fen)]


def capture_postings(
    *, wallet: int, hold: int, revenue: int, held_fen: int, cost_fen: int
) -> list[Posting]:
    """Settle a charge: the hold goes, the cost is earned, the change goes back.

    A cost above the hold (meter overshoot past the pushed limit) is taken from
    the wallet, which the wallet's floor bounds.
    """
    postings = [
        Posting(hold, -held_fen),
        Posting(revenue, cost_fen),
        Posting(wallet, held_fen - cost_fen),
    ]
    return [p for p in postings if p.amount_fen]


def coin_sale_postings(*, collection: int, revenue: int, amount_fen: int) -> list[Posting]:
    return [Posting(collection, -amount_fen), Posting(revenue, amount_fen)]


def refund_postings(*, wallet: int, collection: int, amount_fen: int) -> list[Posting]:
    return [Posting(wallet, -amount_fen), Posting(collection, amount_fen)]

"""Charging sessions in plain Python: states, stop reasons, limits, settlement.

A session's money is decided by the tariff engine on its *cumulative* meter
profile (start reading, the meter reports, the end reading), sorted by time.
So repeated, lost or reordered reports cannot change the bill, and settling the
same session twice yields the same figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from app.domain.errors import Conflict
from app.domain.tariff import MeterSample, SessionLimits


class SessionStatus(StrEnum):
    PENDING_PAYMENT = "pending_payment"  # a visitor's order is not paid yet
    STARTING = "starting"  # start command sent, waiting for the pile's ack
    ACTIVE = "active"  # power on
    STOPPING = "stopping"  # stop sent, waiting for the pile's end report
    SETTLED = "settled"  # ended and billed (exactly once)
    FAILED = "failed"  # never started; any hold released


OPEN_STATUSES = frozenset({SessionStatus.STARTING, SessionStatus.ACTIVE, SessionStatus.STOPPING})
ALLOWED = {
    SessionStatus.PENDING_PAYMENT: {SessionStatus.STARTING, SessionStatus.FAILED},
    SessionStatus.STARTING: {SessionStatus.ACTIVE, SessionStatus.FAILED, SessionStatus.STOPPING,
                             SessionStatus.SETTLED},
    SessionStatus.ACTIVE: {SessionStatus.STOPPING, SessionStatus.SETTLED},
    SessionStatus.STOPPING: {SessionStatus.SETTLED},
    SessionStatus.SETTLED: set(),
    SessionStatus.FAILED: set(),
}


class StartMethod(StrEnum):
    APP = "app"  # scan the port's QR code in the mini-program
    KEYPAD = "keypad"  # account number + PIN at the pile
    CARD = "card"  # IC card
    COIN = "coin"  # coins at the pile, no account
    VISITOR = "visitor"  # paid per order, no account of one's own


class StopReason(StrEnum):
    USER = "user"  # stopped from the phone or the pile's button
    UNPLUGGED = "unplugged"  # current fell to zero / plug pulled
    FULL = "full"  # power stayed below the full threshold
    LIMIT_REACHED = "limit_reached"  # the pile reached a pushed limit by itself
    BALANCE = "balance"  # the platform stopped it: the money ran out
    OPERATOR = "operator"  # stopped from the console
    ALARM = "alarm"  # a safety alarm
    POWER_LOSS = "power_loss"  # the pile lost mains power
    PILE_OFFLINE = "pile_offline"  # the pile stayed offline too long: billed to last reading
    START_FAILED = "start_failed"


# The pile's session_end reasons (docs/protocol.md) in the platform's words.
PILE_REASONS = {
    "unplugged": StopReason.UNPLUGGED,
    "full": StopReason.FULL,
    "limit_reached": StopReason.LIMIT_REACHED,
    "stopped_by_user": StopReason.USER,
    "stopped_by_platform": None,  # keep the reason the platform asked for
    "alarm": StopReason.ALARM,
    "power_loss": StopReason.POWER_LOSS,
}

# What the platform writes in a stop command (the protocol's stop.reason).
STOP_COMMAND_REASON = {
    StopReason.USER: "user",
    StopReason.OPERATOR: "operator",
    StopReason.BALANCE: "balance",
    StopReason.ALARM: "alarm",
    StopReason.LIMIT_REACHED: "balance",
    StopReason.PILE_OFFLINE: "other",
}


def check_transition(current: SessionStatus, new: SessionStatus) -> None:
    if new not in ALLOWED[current]:
        raise Conflict(f"a {current.value} session cannot become {new.value}")


def settlement_profile(
    start: MeterSample, readings: Iterable[MeterSample], end: MeterSample | None
) -> list[MeterSample]:
    """The samples a session is billed on: time-ordered, counter never going back.

    Reports before the start or after the end, and readings below the counter
    already seen (a late duplicate of an older state, or a meter swapped
    mid-session), are left out rather than allowed to move money.
    """
    last_at = end.at if end is not None else None
    ordered = sorted(
        (r for r in readings if r.at >= start.at and (last_at is None or r.at <= last_at)),
        key=lambda r: (r.at, r.energy_wh),
    )
    profile = [start]
    for sample in ordered:
        prev = profile[-1]
        if sample.energy_wh < prev.energy_wh:
            continue
        if sample.at == prev.at and sample.energy_wh == prev.energy_wh:
            continue
        profile.append(sample)
    if end is not None:
        prev = profile[-1]
        energy = max(end.energy_wh, prev.energy_wh)
        at = max(end.at, prev.at)
        if (at, energy) != (prev.at, prev.energy_wh):
            profile.append(MeterSample(at, energy, end.power_w))
    return profile


def limit_reached(
    limits: SessionLimits, *, energy_wh: int, seconds: int, cost_fen: int
) -> bool:
    """Whether the server should stop a session itself (the pile should already have)."""
    if limits.max_energy_wh is not None and energy_wh >= limits.max_energy_wh:
        return True
    if limits.max_minutes and seconds >= limits.max_minutes * 60:
        return True
    return cost_fen >= limits.max_amount_fen


@dataclass(frozen=True, slots=True)
class Settlement:
    cost_fen: int
    capture_fen: int  # taken from the hold (the rest of the hold is released)
    extra_fen: int  # beyond the hold: taken from the wallet (bounded by its grace)
    refund_fen: int  # a visitor's unused prepayment, sent back to the payer


def settle_amounts(*, cost_fen: int, held_fen: int, prepaid_visitor: bool) -> Settlement:
    """How a session's cost splits between its hold, the wallet and a refund."""
    capture = min(cost_fen, held_fen)
    extra = max(0, cost_fen - held_fen)
    refund = held_fen - capture if prepaid_visitor else 0
    return Settlement(cost_fen, capture, extra, refund)


@dataclass(frozen=True, slots=True)
class FullDetection:
    """Battery full: power below ``threshold_w`` continuously for ``minutes``.

    The pile applies it (it is pushed in the pile's config) and ends the session
    with reason ``full``; the platform records that reason.
    """

    threshold_w: int = 30
    minutes: int = 10

"""Rules for pile state from messages that arrive late, twice or out of order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

OFFLINE_AFTER_KEEPALIVES = 1.5


@dataclass(frozen=True, slots=True)
class Stamp:
    """Where a message sits in a pile's history."""

    boot_id: str
    seq: int
    ts_ms: int  # the pile's clock


def is_newer(current: Stamp | None, incoming: Stamp) -> bool:
    """Within one boot the sequence number decides; across boots, the pile's clock.

    A repeated or older message never moves a port's state backwards.
    """
    if current is None:
        return True
    if incoming.boot_id == current.boot_id:
        return incoming.seq > current.seq
    return incoming.ts_ms > current.ts_ms


def will_applies(will_conn: int, current_conn: int) -> bool:
    """A last will marks a pile offline only if it is from its latest connection.

    The broker may deliver the will of an old connection after the pile has
    reconnected (and said ``online`` with a higher counter): that will is stale.
    """
    return will_conn >= current_conn


def is_silent(last_seen: datetime | None, keepalive_s: int, now: datetime) -> bool:
    """A pile silent for 1.5 × its keepalive is offline."""
    if last_seen is None:
        return True
    return now - last_seen > timedelta(seconds=keepalive_s * OFFLINE_AFTER_KEEPALIVES)

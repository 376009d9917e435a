"""Pile and session housekeeping: offline detection and abandoned sessions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.services import charging, telemetry
from app.services.uow import UnitOfWork


def detect_offline_piles() -> int:
    return telemetry.mark_silent_piles_offline(UnitOfWork())


def close_abandoned_sessions() -> int:
    return charging.close_abandoned_sessions(UnitOfWork())


JOBS: list[tuple[str, int, Callable[[], Any]]] = [
    ("detect_offline_piles", 15, detect_offline_piles),
    ("close_abandoned_sessions", 60, close_abandoned_sessions),
]

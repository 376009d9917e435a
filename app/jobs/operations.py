"""Operations jobs: escalation, notification delivery (retries), pile-offline incidents for
silent piles, and the daily theft and loss check."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import current_app

from app.extensions import db
from app.notify import build_channels
from app.services import incidents, loss, notifications
from app.services.uow import UnitOfWork


def escalate_incidents(*, now: datetime | None = None) -> int:
    """Queue the escalation levels that fell due, and send them."""
    queued = incidents.escalate_due(UnitOfWork(), now=now)
    if queued:
        deliver_notifications(now=now)
    return queued


def deliver_notifications(*, now: datetime | None = None) -> dict[str, int]:
    """Send what is due (incident and user notifications): first attempts the dispatcher
    missed, and retries."""
    channels = build_channels(current_app.config["SETTINGS"], db.session)
    return dict(notifications.deliver_due(UnitOfWork(), channels, now=now))


def open_offline_incidents(*, now: datetime | None = None) -> int:
    return incidents.open_offline_incidents(UnitOfWork(), now=now)


def daily_loss_checks(*, now: datetime | None = None) -> dict[str, int]:
    return loss.run_daily_checks(UnitOfWork(), now=now)


JOBS: list[tuple[str, int, Callable[..., Any]]] = [
    ("operations.escalate_incidents", 30, escalate_incidents),
    ("operations.deliver_notifications", 5, deliver_notifications),
    ("operations.open_offline_incidents", 15, open_offline_incidents),
    ("operations.daily_loss_checks", 3600, daily_loss_checks),
]

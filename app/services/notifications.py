"""The notification outboxes: rows queued in the transaction that decided a message, sent
after the commit, retried with backoff until sent or given up.

Two tables, one delivery loop (:func:`deliver_due`):

* ``incident_notifications``: alarms and escalations to operators, property and power
  companies, webhook, and the resident whose charge an incident concerns
  (``app.services.incidents``);
* ``user_notifications``: a message to one user about their own business, e.g. their
  charge finished (``app.services.charge_notices``), queued with :func:`queue_user_message`.

Both are sent at once by ``app.notify.dispatcher`` (kicked through :data:`QUEUED_HOOKS`
after the commit that queued them) and retried by the jobs process
(``operations.deliver_notifications``), through the channels of ``app.notify``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, event, or_, select
from sqlalchemy.orm import Session, SessionTransaction

from app.config import Settings
from app.models import IncidentNotification, UserNotification
from app.models.base import utcnow
from app.services import context
from app.services.uow import UnitOfWork, insert_ignoring_duplicates

log = logging.getLogger(__name__)

# Run after a commit that queued notification rows (app.notify.dispatcher registers here).
QUEUED_HOOKS: list[Callable[[], None]] = []

Outbox = type[IncidentNotification] | type[UserNotification]  # both are DeliveryMixin rows

# Delivered in this order (alarms first), each table up to ``limit`` rows per call.
OUTBOXES: tuple[Outbox, ...] = (IncidentNotification, UserNotification)

_QUEUED_KEY = "evc_notifications_queued"


def run_queued_hooks() -> None:
    for hook in QUEUED_HOOKS:
        try:
            hook()
        except Exception:  # a lost kick costs latency (the job retries), never a message
            log.exception("notification hook failed")


def run_queued_hooks_after_commit(session: Session) -> None:
    """For code that queues rows in a transaction it does not own (e.g. a settlement hook):
    :func:`run_queued_hooks` once ``session`` commits; nothing if it rolls back."""
    session.info[_QUEUED_KEY] = True


@event.listens_for(Session, "after_commit")
def _kick_after_commit(session: Session) -> None:
    if session.info.pop(_QUEUED_KEY, False):
        run_queued_hooks()


@event.listens_for(Session, "after_soft_rollback")
def _forget_on_rollback(session: Session, previous_transaction: SessionTransaction
                        ) -> None:
    if previous_transaction.parent is None:  # the whole transaction, not a savepoint
        session.info.pop(_QUEUED_KEY, None)


def queue_user_message(session: Session, *, user_id: int, kind: str, channel: str,
                       recipient: str, template_id: str | None, payload: Mapping[str, Any],
                       dedup_key: str, now: datetime) -> bool:
    """Queue one message to one user (no commit). False: ``dedup_key`` was queued before."""
    stmt = insert_ignoring_duplicates(session, UserNotification, ["dedup_key"])
    inserted = session.execute(stmt.values(
        user_id=user_id, kind=kind, channel=channel, recipient=recipient[:200],
        template_id=template_id, payload=dict(payload), dedup_key=dedup_key[:250],
        status="pending", attempts=0, next_attempt_at=now, created_at=now,
    ).returning(UserNotification.id)).first()
    return inserted is not None


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(10 * 2 ** (attempts - 1), 600))


def deliver_due(uow: UnitOfWork, channels: Mapping[str, Any], *, now: datetime | None = None,
                limit: int = 50, settings: Settings | None = None) -> Counter[str]:
    """Send what is due in every outbox (at most ``limit`` rows of each); counts of
    ``sent``, ``retry`` and ``failed``."""
    settings = settings or context.settings()
    now = now or utcnow()
    counts: Counter[str] = Counter()
    for model in OUTBOXES:
        counts.update(_deliver_table(uow, model, channels, now, limit, settings))
    return counts


def _deliver_table(uow: UnitOfWork, model: Outbox, channels: Mapping[str, Any], now: datetime,
                   limit: int, settings: Settings) -> Counter[str]:
    """At least once (``X-EVC-Delivery`` etc. let receivers de-duplicate). Rows are claimed
    first (``sending``) and committed, the requests are made with no transaction open, each
    result is stored in a short transaction of its own. A row left ``sending`` by a crash
    is claimed again after two minutes."""
    from app.notify.base import DeliveryError, Message

    table = model.__tablename__
    session = uow.session
    with uow:
        rows = session.execute(
            select(model).where(or_(
                and_(model.status == "pending", model.next_attempt_at <= now),
                and_(model.status == "sending",
                     model.claimed_at < now - timedelta(minutes=2)),
            )).order_by(model.id).limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars().all()
        claimed = []
        for row in rows:
            row.status, row.claimed_at, row.attempts = "sending", now, row.attempts + 1
            claimed.append((row.id, row.channel, row.recipient, dict(row.payload),
                            getattr(row, "template_id", None), row.attempts))
        uow.commit()
    counts: Counter[str] = Counter()
    for row_id, name, address, payload, template_id, attempts in claimed:
        error: str | None = None
        permanent = False
        channel = channels.get(name)
        if channel is None:
            error, permanent = f"the {name} channel is not configured", True
        else:
            try:
                channel.send(address, Message(row_id, payload, template_id=template_id))
            except DeliveryError as exc:
                error, permanent = str(exc), exc.permanent
            except Exception as exc:  # a bug in a channel: record it, retry later
                log.exception("%s %s via %s failed", table, row_id, name)
                error = f"{exc.__class__.__name__}: {exc}"
        with uow:
            row = session.get(model, row_id)
            assert row is not None
            if error is None:
                row.status, row.sent_at, row.last_error = "sent", utcnow(), None
                counts["sent"] += 1
            elif permanent or attempts >= settings.notify_max_attempts:
                row.status, row.last_error = "failed", error[:300]
                counts["failed"] += 1
                log.error("%s %s via %s to %s failed for good: %s", table, row_id, name,
                          address, error)
            else:
                row.status, row.last_error = "pending", error[:300]
                row.next_attempt_at = now + _backoff(attempts)
                counts["retry"] += 1
                log.warning("%s %s via %s failed (attempt %d): %s", table, row_id, name,
                            attempts, error)
            uow.commit()
    return counts

"""Operations: safety and loss incidents, the notifications they send, messages to users
about their own charges, and loss checks.

The rules live in ``app.domain.safety`` (severity, folding, stop scope, escalation) and
``app.domain.loss`` (master meter against sockets); these tables only remember their
results, with constraints for what must never happen twice:

* at most one incident that is not resolved per ``dedup_key`` (a partial UNIQUE index):
  ``safety:<pile>:<port|->:<kind>`` for alarms and detected conditions, and
  ``loss:<community>:<start>:<end>`` for a loss period;
* one notification row per (incident, reason, level, channel, recipient) (UNIQUE key), so
  a replayed batch or a second escalation pass queues nothing twice;
* one message to a user per ``dedup_key`` (e.g. ``charge_finished:<session>``), so a
  settlement run twice sends nothing twice;
* one loss check per community and period.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.domain.safety import AlarmKind, ConditionKind, IncidentState, Severity
from app.extensions import db
from app.models.base import CreatedMixin, IdMixin, UTCDateTime
from app.models.org import Community
from app.models.piles import Pile

LOSS_KIND = "energy_loss"
INCIDENT_KINDS = (*(k.value for k in AlarmKind), *(k.value for k in ConditionKind), LOSS_KIND)
INCIDENT_CATEGORIES = ("safety", "loss")
INCIDENT_STATES = tuple(s.value for s in IncidentState)
SEVERITIES = tuple(s.value for s in Severity)
NOTIFICATION_CHANNELS = ("wechat", "sms", "webhook")
NOTIFICATION_STATUSES = ("pending", "sending", "sent", "failed")
LOSS_CHECK_KINDS = ("day", "custom")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


class Incident(IdMixin, CreatedMixin, db.Model):
    """One safety alarm or detected condition (folded), or one loss period, and what people
    did about it. ``created_at`` is when the platform learnt of it; ``opened_at`` when it
    happened (the pile's clock: the earliest raise)."""

    __tablename__ = "incidents"
    category: Mapped[str] = mapped_column(String(10))
    kind: Mapped[str] = mapped_column(String(30))
    dedup_key: Mapped[str] = mapped_column(String(120))
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"))
    pile_id: Mapped[int | None] = mapped_column(ForeignKey("piles.id"), index=True)
    port_id: Mapped[int | None] = mapped_column(ForeignKey("ports.id"))
    port_no: Mapped[int | None] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(10))
    state: Mapped[str] = mapped_column(String(14), default=IncidentState.OPEN.value)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_raised_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    raised_count: Mapped[int] = mapped_column(Integer, default=1)
    cleared_count: Mapped[int] = mapped_column(Integer, default=0)
    cut_off: Mapped[bool] = mapped_column(Boolean, default=False)
    value: Mapped[int | None] = mapped_column(BigInteger)
    threshold: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(500), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The charging session concerned (the alarm's session, or the one running on the port).
    session_id: Mapped[int | None] = mapped_column(ForeignKey("charging_sessions.id"))
    session_ref: Mapped[str | None] = mapped_column(String(64))
    # What the stop policy decided for the latest raise: none | port | pile.
    stop_scope: Mapped[str] = mapped_column(String(10), default="none")
    # Loss incidents: the period compared.
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Escalation: the highest level notified so far, and when the next one falls due.
    notified_level: Mapped[int] = mapped_column(Integer, default=0)
    next_escalation_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    acknowledge_note: Mapped[str | None] = mapped_column(String(300))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    resolution_note: Mapped[str | None] = mapped_column(String(300))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    community: Mapped[Community] = relationship()
    pile: Mapped[Pile | None] = relationship()
    __table_args__ = (
        CheckConstraint(f"category IN {_in(INCIDENT_CATEGORIES)}", name="category"),
        CheckConstraint(f"kind IN {_in(INCIDENT_KINDS)}", name="kind"),
        CheckConstraint(f"severity IN {_in(SEVERITIES)}", name="severity"),
        CheckConstraint(f"state IN {_in(INCIDENT_STATES)}", name="state"),
        CheckConstraint("stop_scope IN ('none', 'port', 'pile')", name="stop_scope"),
        CheckConstraint("raised_count >= 1 AND cleared_count >= 0", name="counts"),
        CheckConstraint("notified_level BETWEEN 0 AND 3", name="notified_level"),
        CheckConstraint("state = 'open' OR acknowledged_at IS NOT NULL", name="acknowledged"),
        CheckConstraint("state != 'resolved' OR resolved_at IS NOT NULL", name="resolved"),
        # At most one incident per key that a person has not resolved yet.
        Index(
            "uq_incidents_unresolved_key", "dedup_key", unique=True,
            sqlite_where=text("state != 'resolved'"),
            postgresql_where=text("state != 'resolved'"),
        ),
        Index("ix_incidents_community_state", "community_id", "state"),
    )


class DeliveryMixin:
    """An outbox row: what the delivery loop (``app.services.notifications.deliver_due``)
    reads and writes, the same in every notification table."""

    channel: Mapped[str] = mapped_column(String(10))
    recipient: Mapped[str] = mapped_column(String(200))  # openid, phone number or URL
    dedup_key: Mapped[str] = mapped_column(String(250), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(300))


def _delivery_constraints(table: str) -> tuple[Any, ...]:
    return (
        CheckConstraint(f"channel IN {_in(NOTIFICATION_CHANNELS)}", name="channel"),
        CheckConstraint(f"status IN {_in(NOTIFICATION_STATUSES)}", name="status"),
        Index(f"ix_{table}_due", "status", "next_attempt_at"),
    )


class IncidentNotification(DeliveryMixin, IdMixin, CreatedMixin, db.Model):
    """A message to a person or system about an incident: queued in the transaction that
    opened (or escalated) the incident, sent after commit, retried until sent or failed."""

    __tablename__ = "incident_notifications"
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    level: Mapped[int] = mapped_column(Integer)
    audience: Mapped[str] = mapped_column(String(30))
    reason: Mapped[str] = mapped_column(String(20))  # opened | severity_raised | escalated
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    __table_args__ = (
        *_delivery_constraints("incident_notifications"),
        CheckConstraint("level BETWEEN 1 AND 3", name="level"),
    )


class UserNotification(DeliveryMixin, IdMixin, CreatedMixin, db.Model):
    """A message to one user about their own business (today: their charge finished, by
    WeChat subscribe message, with its own template), queued in the transaction that
    decided it and delivered like ``incident_notifications``."""

    __tablename__ = "user_notifications"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # charge_finished
    template_id: Mapped[str | None] = mapped_column(String(64))
    __table_args__ = _delivery_constraints("user_notifications")


class LossCheck(IdMixin, db.Model):
    """One community's master meter against the sum of its sockets over one period."""

    __tablename__ = "loss_checks"
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"))
    kind: Mapped[str] = mapped_column(String(10))  # day | custom
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    master_wh: Mapped[int] = mapped_column(BigInteger)
    sockets_wh: Mapped[int] = mapped_column(BigInteger)
    loss_wh: Mapped[int] = mapped_column(BigInteger)
    loss_per_mille: Mapped[int | None] = mapped_column(Integer)
    master_complete: Mapped[bool] = mapped_column(Boolean)
    master_span_s: Mapped[int | None] = mapped_column(Integer)
    master_resets: Mapped[int] = mapped_column(Integer, default=0)
    socket_resets: Mapped[int] = mapped_column(Integer, default=0)
    ports: Mapped[int] = mapped_column(Integer, default=0)
    verdicts: Mapped[str] = mapped_column(String(120))  # comma-separated LossVerdict values
    reason: Mapped[str] = mapped_column(String(500), default="")
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"))
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    __table_args__ = (
        UniqueConstraint("community_id", "period_start", "period_end"),
        CheckConstraint(f"kind IN {_in(LOSS_CHECK_KINDS)}", name="kind"),
        CheckConstraint("period_end > period_start", name="period"),
        Index("ix_loss_checks_community_start", "community_id", "period_start"),
    )

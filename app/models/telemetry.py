"""What piles tell us over MQTT, and what we tell them (inbox and outbox)."""

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
)
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.base import CreatedMixin, IdMixin, UTCDateTime

COMMAND_STATUSES = ("pending", "sent", "acked", "nacked", "expired")


class PileInbox(db.Model):
    """Every uplink applied, under its natural key: the second copy is a no-op.

    MQTT packet ids are reused and QoS 1 delivers duplicates, so de-duplication is
    by (pile, boot_id, seq) — never by packet id. That key is the primary key: a
    surrogate id was one more index and sequence to write per message, read by nothing.
    """

    __tablename__ = "pile_inbox"
    pile_id: Mapped[int] = mapped_column(ForeignKey("piles.id"), primary_key=True)
    boot_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    msg_type: Mapped[str] = mapped_column(String(20))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MeterReading(db.Model):
    """One port's meter at one moment; money is derived from the cumulative counter."""

    __tablename__ = "meter_readings"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True)
    port_id: Mapped[int] = mapped_column(ForeignKey("ports.id"))
    measured_at: Mapped[datetime] = mapped_column(UTCDateTime())
    energy_wh: Mapped[int] = mapped_column(BigInteger)
    delta_wh: Mapped[int] = mapped_column(Integer)
    power_w: Mapped[int] = mapped_column(Integer)
    voltage_dv: Mapped[int] = mapped_column(Integer)
    current_ma: Mapped[int] = mapped_column(Integer)
    temp_dc: Mapped[int | None] = mapped_column(Integer)
    session_ref: Mapped[str | None] = mapped_column(String(64))
    __table_args__ = (Index("ix_meter_readings_port_time", "port_id", "measured_at"),)


class PileEvent(IdMixin, db.Model):
    """A pile's history: online/offline, port status changes, alarms, commands."""

    __tablename__ = "pile_events"
    pile_id: Mapped[int] = mapped_column(ForeignKey("piles.id"))
    port_id: Mapped[int | None] = mapped_column(ForeignKey("ports.id"))
    kind: Mapped[str] = mapped_column(String(30))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    __table_args__ = (Index("ix_pile_events_pile_at", "pile_id", "at"),)


class AlarmEvent(IdMixin, db.Model):
    """A safety alarm as the pile reported it (incidents group these; see operations)."""

    __tablename__ = "alarm_events"
    pile_id: Mapped[int] = mapped_column(ForeignKey("piles.id"), index=True)
    port_id: Mapped[int | None] = mapped_column(ForeignKey("ports.id"))
    kind: Mapped[str] = mapped_column(String(20))
    severity: Mapped[str] = mapped_column(String(10))
    state: Mapped[str] = mapped_column(String(10))
    value: Mapped[int | None] = mapped_column(Integer)
    threshold: Mapped[int | None] = mapped_column(Integer)
    cut_off: Mapped[bool] = mapped_column(Boolean)
    session_ref: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MasterMeterReading(IdMixin, db.Model):
    """A community master meter's cumulative reading (for loss and theft checks)."""

    __tablename__ = "master_meter_readings"
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"), index=True)
    meter_serial: Mapped[str] = mapped_column(String(40))
    energy_wh: Mapped[int] = mapped_column(BigInteger)
    read_at: Mapped[datetime] = mapped_column(UTCDateTime())
    __table_args__ = (UniqueConstraint("meter_serial", "read_at"),)


class DownlinkCommand(IdMixin, CreatedMixin, db.Model):
    """The outbox: a command to a pile, written with the state change that causes it.

    Sent after commit and re-sent until acked or expired; the pile de-duplicates
    by ``cmd_id``, so a resend is harmless.
    """

    __tablename__ = "downlink_commands"
    cmd_id: Mapped[str] = mapped_column(String(64), unique=True)
    pile_id: Mapped[int] = mapped_column(ForeignKey("piles.id"), index=True)
    msg_type: Mapped[str] = mapped_column(String(20))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    expects_ack: Mapped[bool] = mapped_column(Boolean, default=True)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    result_reason: Mapped[str | None] = mapped_column(String(40))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    __table_args__ = (
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in COMMAND_STATUSES) + ")", name="status"
        ),
        Index("ix_downlink_commands_due", "status", "next_attempt_at"),
    )


class RejectedUplink(IdMixin, db.Model):
    """An uplink the bridge refused (malformed, unknown pile, wrong schema/version)."""

    __tablename__ = "rejected_uplinks"
    topic: Mapped[str] = mapped_column(String(200))
    pile_serial: Mapped[str | None] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(String(30))
    message: Mapped[str] = mapped_column(String(300))
    excerpt: Mapped[str] = mapped_column(String(512))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class BridgeStatus(db.Model):
    """Each bridge worker's heartbeat and counters, so the web side can show health."""

    __tablename__ = "bridge_status"
    worker: Mapped[str] = mapped_column(String(64), primary_key=True)
    connected: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    stats: Mapped[dict[str, Any]] = mapped_column(JSON)

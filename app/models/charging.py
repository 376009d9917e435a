"""Charging sessions: one charge of one bike on one port."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.domain.charging import SessionStatus, StartMethod, StopReason
from app.extensions import db
from app.models.base import CreatedMixin, IdMixin, UTCDateTime
from app.models.people import ChargingAccount
from app.models.piles import HOT_UPDATE_STORAGE, Pile, Port


def _in(values: Any) -> str:
    return "(" + ", ".join(f"'{v.value}'" for v in values) + ")"


class ChargingSession(IdMixin, CreatedMixin, db.Model):
    __tablename__ = "charging_sessions"
    # The id the pile sees (start/stop commands, meter reports, session_end).
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    pile_id: Mapped[int] = mapped_column(ForeignKey("piles.id"), index=True)
    port_id: Mapped[int] = mapped_column(ForeignKey("ports.id"), index=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"), index=True)
    method: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(16))
    charging_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("charging_accounts.id"), index=True
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    card_uid: Mapped[str | None] = mapped_column(String(32))
    coin_fen: Mapped[int | None] = mapped_column(Integer)
    # A session the pile ran on its own while offline: unique per pile forever.
    local_id: Mapped[str | None] = mapped_column(String(64))
    tariff_version_id: Mapped[int] = mapped_column(ForeignKey("tariff_versions.id"))
    hold_id: Mapped[int | None] = mapped_column(ForeignKey("holds.id"))
    max_amount_fen: Mapped[int] = mapped_column(Integer)
    max_energy_wh: Mapped[int | None] = mapped_column(Integer)
    max_minutes: Mapped[int] = mapped_column(Integer)
    start_energy_wh: Mapped[int | None] = mapped_column(BigInteger)
    last_energy_wh: Mapped[int | None] = mapped_column(BigInteger)
    end_energy_wh: Mapped[int | None] = mapped_column(BigInteger)
    power_w: Mapped[int | None] = mapped_column(Integer)
    peak_power_w: Mapped[int | None] = mapped_column(Integer)
    cost_fen: Mapped[int] = mapped_column(Integer, default=0)
    # The tariff engine's exact running state (see RunningCost.to_state).
    running: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_meter_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stop_reason: Mapped[str | None] = mapped_column(String(16))
    stop_requested: Mapped[str | None] = mapped_column(String(16))
    failure_reason: Mapped[str | None] = mapped_column(String(40))
    start_cmd_id: Mapped[str | None] = mapped_column(String(64))
    refund_fen: Mapped[int | None] = mapped_column(Integer)
    reconciled_fen: Mapped[int] = mapped_column(Integer, default=0)
    pile: Mapped[Pile] = relationship()
    port: Mapped[Port] = relationship()
    account: Mapped[ChargingAccount | None] = relationship()
    __table_args__ = (
        CheckConstraint(f"status IN {_in(SessionStatus)}", name="status"),
        CheckConstraint(f"method IN {_in(StartMethod)}", name="method"),
        CheckConstraint(f"stop_reason IS NULL OR stop_reason IN {_in(StopReason)}",
                        name="stop_reason"),
        CheckConstraint("cost_fen >= 0 AND max_amount_fen >= 0", name="money"),
        UniqueConstraint("pile_id", "local_id"),
        # At most one session in progress per port, enforced by the database.
        Index(
            "uq_charging_sessions_open_port", "port_id", unique=True,
            sqlite_where=text("status IN ('starting', 'active', 'stopping')"),
            postgresql_where=text("status IN ('starting', 'active', 'stopping')"),
        ),
        Index("ix_charging_sessions_status", "status"),
        HOT_UPDATE_STORAGE,  # every meter report of a running session rewrites its row
    )

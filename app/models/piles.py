"""Charging piles and their ports."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.base import CreatedMixin, IdMixin, UTCDateTime
from app.models.org import Building, Community

PORT_STATUSES = ("idle", "plugged", "charging", "full", "fault", "offline")

# Table option of the rows the bridge rewrites on every batch (piles, ports, running
# sessions): room left in each page, so the new version of an updated row fits beside
# the old one (a HOT update: no index entries to add, the old version pruned in place).
# Full pages sent a quarter to a third of those updates to other pages, each writing
# every index of its table again (bench/ingest_profile.py).
HOT_UPDATE_STORAGE = {"postgresql_with": {"fillfactor": 70}}


class Pile(IdMixin, CreatedMixin, db.Model):
    __tablename__ = "piles"
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"), index=True)
    building_id: Mapped[int | None] = mapped_column(ForeignKey("buildings.id"), index=True)
    # The serial is the pile's identity on the wire: MQTT username, client id, topic segment.
    serial: Mapped[str] = mapped_column(String(32), unique=True)
    model: Mapped[str] = mapped_column(String(60), default="")
    port_count: Mapped[int] = mapped_column(Integer)
    lat: Mapped[float | None] = mapped_column(Float)
    lng: Mapped[float | None] = mapped_column(Float)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    firmware: Mapped[str | None] = mapped_column(String(40))
    boot_id: Mapped[str | None] = mapped_column(String(64))
    # The connection counter of the last `online` message; a will with a lower one is stale.
    conn_counter: Mapped[int] = mapped_column(BigInteger, default=0)
    went_offline_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    keepalive_s: Mapped[int] = mapped_column(Integer, default=60)
    mqtt_password_hash: Mapped[str | None] = mapped_column(String(255))
    community: Mapped[Community] = relationship()
    building: Mapped[Building | None] = relationship()
    ports: Mapped[list[Port]] = relationship(
        back_populates="pile", order_by="Port.number", cascade="all, delete-orphan"
    )
    __table_args__ = (
        CheckConstraint("port_count BETWEEN 1 AND 64", name="port_count"),
        CheckConstraint("keepalive_s BETWEEN 10 AND 3600", name="keepalive"),
        HOT_UPDATE_STORAGE,
    )


class Port(IdMixin, CreatedMixin, db.Model):
    __tablename__ = "ports"
    pile_id: Mapped[int] = mapped_column(ForeignKey("piles.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    # What the printed QR code carries; unguessable so codes cannot be enumerated.
    public_code: Mapped[str] = mapped_column(String(16), unique=True)
    status: Mapped[str] = mapped_column(String(10), default="offline")
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Live state from the last *newer* message: (boot_id, seq) within a boot, the pile's
    # clock across boots, so late or repeated messages never move state backwards.
    status_boot_id: Mapped[str | None] = mapped_column(String(64))
    status_seq: Mapped[int | None] = mapped_column(BigInteger)
    status_ts: Mapped[int | None] = mapped_column(BigInteger)
    energy_wh: Mapped[int | None] = mapped_column(BigInteger)
    power_w: Mapped[int | None] = mapped_column(Integer)
    voltage_dv: Mapped[int | None] = mapped_column(Integer)
    current_ma: Mapped[int | None] = mapped_column(Integer)
    temp_dc: Mapped[int | None] = mapped_column(Integer)
    meter_boot_id: Mapped[str | None] = mapped_column(String(64))
    meter_seq: Mapped[int | None] = mapped_column(BigInteger)
    meter_ts: Mapped[int | None] = mapped_column(BigInteger)
    pile: Mapped[Pile] = relationship(back_populates="ports")
    __table_args__ = (
        UniqueConstraint("pile_id", "number"),
        CheckConstraint("number >= 1", name="number"),
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in PORT_STATUSES) + ")", name="status"
        ),
        HOT_UPDATE_STORAGE,
    )

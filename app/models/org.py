"""Tenancy and places: power company → property companies → communities → buildings."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.base import CreatedMixin, IdMixin


class PowerCompany(IdMixin, CreatedMixin, db.Model):
    """The grid company that supplies the communities' master meters."""

    __tablename__ = "power_companies"
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # What a property company pays per kWh of master-meter energy (settlement).
    grid_price_fen_per_kwh: Mapped[int] = mapped_column(Integer, default=60)
    __table_args__ = (CheckConstraint("grid_price_fen_per_kwh >= 0", name="grid_price"),)


class PropertyCompany(IdMixin, CreatedMixin, db.Model):
    """A property management company (物业): the operator of its communities."""

    __tablename__ = "property_companies"
    power_company_id: Mapped[int] = mapped_column(ForeignKey("power_companies.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    contact_phone: Mapped[str | None] = mapped_column(String(20))
    collection_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    revenue_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    power_company: Mapped[PowerCompany] = relationship()
    __table_args__ = (UniqueConstraint("power_company_id", "name"),)


class Community(IdMixin, CreatedMixin, db.Model):
    """A residential community (小区) with one master meter for its charging circuits."""

    __tablename__ = "communities"
    property_company_id: Mapped[int] = mapped_column(
        ForeignKey("property_companies.id"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    address: Mapped[str] = mapped_column(String(200), default="")
    lat: Mapped[float | None] = mapped_column(Float)
    lng: Mapped[float | None] = mapped_column(Float)
    timezone: Mapped[str] = mapped_column(String(40), default="Asia/Shanghai")
    master_meter_serial: Mapped[str | None] = mapped_column(String(40), unique=True)
    # A resident needs at least this much available to start a charge.
    min_start_balance_fen: Mapped[int] = mapped_column(Integer, default=100)
    property_company: Mapped[PropertyCompany] = relationship()
    __table_args__ = (
        UniqueConstraint("property_company_id", "name"),
        CheckConstraint("min_start_balance_fen >= 0", name="min_start_balance"),
    )


class Building(IdMixin, CreatedMixin, db.Model):
    """A building or bike shed (车棚) where piles are mounted."""

    __tablename__ = "buildings"
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20), default="shed")
    community: Mapped[Community] = relationship()
    __table_args__ = (
        UniqueConstraint("community_id", "name"),
        CheckConstraint("kind IN ('building', 'shed')", name="kind"),
    )

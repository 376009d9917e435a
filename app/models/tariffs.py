"""Tariff versions per community; the pricing rules live in app.domain.tariff."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.base import CreatedMixin, IdMixin, UTCDateTime


class TariffVersion(IdMixin, CreatedMixin, db.Model):
    """A community's tariff from ``effective_from`` until the next version starts.

    Versions are never edited: a change is a new version, so a settled session
    can always be re-priced with exactly the rules it was charged under.
    """

    __tablename__ = "tariff_versions"
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime())
    rules: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    __table_args__ = (UniqueConstraint("community_id", "version"),)

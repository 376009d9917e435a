"""Tariff versions per community: set by the property office, never edited."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.access import Actor
from app.domain.errors import Conflict, InvalidInput
from app.domain.tariff import Tariff, TariffError
from app.models import TariffVersion
from app.models.base import utcnow
from app.services import access
from app.services.uow import UnitOfWork


def tariff_in_force(session: Session, community_id: int, at: datetime) -> TariffVersion:
    version = session.execute(
        select(TariffVersion)
        .where(TariffVersion.community_id == community_id, TariffVersion.effective_from <= at)
        .order_by(TariffVersion.effective_from.desc(), TariffVersion.version.desc())
        .limit(1)
    ).scalar_one_or_none()
    if version is None:
        raise Conflict("this community has no tariff yet; the property office must set one")
    return version


def list_versions(uow: UnitOfWork, actor: Actor, community_id: int) -> list[TariffVersion]:
    access.get_community(uow.session, actor, community_id)
    return list(uow.session.execute(
        select(TariffVersion).where(TariffVersion.community_id == community_id)
        .order_by(TariffVersion.version.desc())).scalars())


def set_tariff(uow: UnitOfWork, actor: Actor, community_id: int, rules: dict[str, Any],
               effective_from: datetime | None = None) -> TariffVersion:
    """Add a version in force from ``effective_from`` (default now); sessions keep theirs."""
    with uow:
        access.get_community(uow.session, actor, community_id, manage=True)
        try:
            tariff = Tariff.from_dict(rules)
        except TariffError as exc:
            raise InvalidInput(f"invalid tariff: {exc}", field="rules",
                               path=getattr(exc, "path", "")) from exc
        latest = uow.session.execute(
            select(TariffVersion.version).where(TariffVersion.community_id == community_id)
            .order_by(TariffVersion.version.desc()).limit(1)).scalar_one_or_none() or 0
        version = TariffVersion(community_id=community_id, version=latest + 1,
                                effective_from=effective_from or utcnow(),
                                rules=tariff.to_dict(), created_by_user_id=actor.user_id)
        uow.session.add(version)
        uow.commit_or_conflict("another tariff version was saved at the same time; retry")
        return version

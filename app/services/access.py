"""Loading objects on behalf of an actor: role and tenant checks in one place.

Every service that takes an id goes through these, so the tenant rule
(app.domain.access) cannot be forgotten by an endpoint.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.domain.access import Actor, Role, Scope, check_manage, check_read
from app.domain.errors import NotFound
from app.models import (
    AccountBinding,
    Building,
    ChargingAccount,
    Community,
    ICCard,
    Pile,
    Port,
    PropertyCompany,
    User,
)


def actor_for(user: User) -> Actor:
    return Actor(
        user_id=user.id,
        role=Role(user.role),
        power_company_id=user.power_company_id,
        property_company_id=user.property_company_id,
    )


def community_scope(community: Community) -> Scope:
    return Scope(community.property_company.power_company_id, community.property_company_id)


def _checked(actor: Actor, scope: Scope, what: str, manage: bool) -> None:
    (check_manage if manage else check_read)(actor, scope, what)


def get_property_company(
    session: Session, actor: Actor, company_id: int, *, manage: bool = False
) -> PropertyCompany:
    company = session.get(PropertyCompany, company_id)
    if company is None:
        raise NotFound("no such property company")
    _checked(actor, Scope(company.power_company_id, company.id), "property company", manage)
    return company


def get_community(
    session: Session, actor: Actor, community_id: int, *, manage: bool = False
) -> Community:
    community = session.get(Community, community_id)
    if community is None:
        raise NotFound("no such community")
    _checked(actor, community_scope(community), "community", manage)
    return community


def get_building(
    session: Session, actor: Actor, building_id: int, *, manage: bool = False
) -> Building:
    building = session.get(Building, building_id)
    if building is None:
        raise NotFound("no such building")
    _checked(actor, community_scope(building.community), "building", manage)
    return building


def get_pile(session: Session, actor: Actor, pile_id: int, *, manage: bool = False) -> Pile:
    pile = session.get(Pile, pile_id)
    if pile is None:
        raise NotFound("no such pile")
    _checked(actor, community_scope(pile.community), "pile", manage)
    return pile


def get_port(session: Session, actor: Actor, port_id: int, *, manage: bool = False) -> Port:
    port = session.get(Port, port_id)
    if port is None:
        raise NotFound("no such port")
    _checked(actor, community_scope(port.pile.community), "port", manage)
    return port


def is_bound(session: Session, user_id: int, account_id: int) -> bool:
    return (
        session.execute(
            select(AccountBinding.id).where(
                AccountBinding.user_id == user_id,
                AccountBinding.charging_account_id == account_id,
            )
        ).first()
        is not None
    )


def get_charging_account(
    session: Session, actor: Actor, account_id: int, *, manage: bool = False
) -> ChargingAccount:
    """Staff by tenant scope; residents only the accounts they have bound."""
    account = session.get(ChargingAccount, account_id)
    if account is None or account.status == "closed":
        raise NotFound("no such charging account")
    if actor.is_staff:
        _checked(actor, community_scope(account.community), "charging account", manage)
    elif not is_bound(session, actor.user_id, account.id):
        raise NotFound("no such charging account")
    return account


def get_card(session: Session, actor: Actor, card_id: int, *, manage: bool = False) -> ICCard:
    card = session.get(ICCard, card_id)
    if card is None:
        raise NotFound("no such card")
    get_charging_account(session, actor, card.charging_account_id, manage=manage)
    return card


def scoped_communities(actor: Actor) -> Select[Any]:
    """The communities an actor may list."""
    stmt = select(Community).join(PropertyCompany)
    if actor.role is Role.PLATFORM_ADMIN:
        return stmt
    if actor.role is Role.POWER_COMPANY:
        return stmt.where(PropertyCompany.power_company_id == actor.power_company_id)
    if actor.role is Role.PROPERTY_OPERATOR:
        return stmt.where(Community.property_company_id == actor.property_company_id)
    return stmt.where(Community.id.is_(None))


def scoped_community_ids(actor: Actor) -> Select[Any]:
    return scoped_communities(actor).with_only_columns(Community.id)

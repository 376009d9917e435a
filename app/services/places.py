"""Tenancy and places: property companies, communities, buildings, piles, ports."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select

from app.domain.access import Actor, Role, Scope, check_manage, require_role
from app.domain.errors import Conflict, InvalidInput, NotFound
from app.domain.geo import Point, check_point, nearest
from app.domain.ledger import AccountKind
from app.models import (
    AuditEntry,
    Building,
    Community,
    Pile,
    Port,
    PowerCompany,
    PropertyCompany,
    TariffVersion,
)
from app.models.base import utcnow
from app.services import access
from app.services.broker_auth import pile_mqtt_password
from app.services.context import hash_secret, settings
from app.services.ledger import open_account
from app.services.tariffs import tariff_in_force
from app.services.uow import UnitOfWork

# Crockford-style alphabet without look-alikes, for codes printed under QR codes.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
PUBLIC_CODE_MAX = 16  # ports.public_code is VARCHAR(16)


def new_port_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(10))


def port_qr_payload(port: Port) -> str:
    """What the printed QR code carries: a URL the mini-program (and a browser) opens."""
    return f"{settings().public_base_url.rstrip('/')}/q/{port.public_code}"


def _commit_unique(uow: UnitOfWork, what: str) -> None:
    uow.commit_or_conflict(f"{what} already exists")


def _apply(obj: Any, changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        setattr(obj, key, value)


def create_power_company(uow: UnitOfWork, actor: Actor, **fields: Any) -> PowerCompany:
    require_role(actor, Role.PLATFORM_ADMIN)
    with uow:
        company = PowerCompany(**fields)
        uow.session.add(company)
        _commit_unique(uow, "a power company with this name")
        return company


def create_property_company(
    uow: UnitOfWork, actor: Actor, *, power_company_id: int, name: str, contact_phone: str | None
) -> PropertyCompany:
    """A property company comes with its collection and revenue ledger accounts."""
    require_role(actor, Role.PLATFORM_ADMIN)
    with uow:
        if uow.session.get(PowerCompany, power_company_id) is None:
            raise NotFound("no such power company")
        collection = open_account(uow.session, AccountKind.COLLECTION, None)
        revenue = open_account(uow.session, AccountKind.REVENUE, None)
        company = PropertyCompany(
            power_company_id=power_company_id,
            name=name,
            contact_phone=contact_phone,
            collection_account_id=collection.id,
            revenue_account_id=revenue.id,
        )
        uow.session.add(company)
        _commit_unique(uow, "a property company with this name")
        return company


def update_property_company(
    uow: UnitOfWork, actor: Actor, company_id: int, changes: dict[str, Any]
) -> PropertyCompany:
    with uow:
        company = access.get_property_company(uow.session, actor, company_id, manage=True)
        _apply(company, changes)
        _commit_unique(uow, "a property company with this name")
        return company


def create_community(
    uow: UnitOfWork, actor: Actor, *, property_company_id: int, **fields: Any
) -> Community:
    with uow:
        company = uow.session.get(PropertyCompany, property_company_id)
        if company is None:
            raise NotFound("no such property company")
        check_manage(actor, Scope(company.power_company_id, company.id), "property company")
        community = Community(property_company_id=company.id, **fields)
        uow.session.add(community)
        _commit_unique(uow, "a community with this name or master meter")
        return community


def update_community(
    uow: UnitOfWork, actor: Actor, community_id: int, changes: dict[str, Any]
) -> Community:
    with uow:
        community = access.get_community(uow.session, actor, community_id, manage=True)
        _apply(community, changes)
        _commit_unique(uow, "a community with this name or master meter")
        return community


def create_building(
    uow: UnitOfWork, actor: Actor, *, community_id: int, name: str, kind: str
) -> Building:
    with uow:
        access.get_community(uow.session, actor, community_id, manage=True)
        building = Building(community_id=community_id, name=name, kind=kind)
        uow.session.add(building)
        _commit_unique(uow, "a building with this name")
        return building


def update_building(
    uow: UnitOfWork, actor: Actor, building_id: int, changes: dict[str, Any]
) -> Building:
    with uow:
        building = access.get_building(uow.session, actor, building_id, manage=True)
        _apply(building, changes)
        _commit_unique(uow, "a building with this name")
        return building


def delete_building(uow: UnitOfWork, actor: Actor, building_id: int) -> None:
    with uow:
        building = access.get_building(uow.session, actor, building_id, manage=True)
        in_use = uow.session.execute(
            select(Pile.id).where(Pile.building_id == building.id).limit(1)
        ).first()
        if in_use:
            raise Conflict("the building still has piles; move or remove them first")
        uow.session.delete(building)
        uow.commit()


@dataclass(frozen=True)
class RegisteredPile:
    pile: Pile
    mqtt_password: str  # shown once, at registration, for the pile's installer


def register_pile(
    uow: UnitOfWork,
    actor: Actor,
    *,
    community_id: int,
    serial: str,
    port_count: int,
    building_id: int | None = None,
    **fields: Any,
) -> RegisteredPile:
    """Register a pile with its ports (each with a fresh QR code) and MQTT credentials."""
    with uow:
        access.get_community(uow.session, actor, community_id, manage=True)
        if building_id is not None:
            building = uow.session.get(Building, building_id)
            if building is None or building.community_id != community_id:
                raise InvalidInput("the building is not in this community", field="building_id")
        # The same password `flask broker write-auth` puts in Mosquitto's password file.
        password = pile_mqtt_password(serial, settings().secret_key)
        pile = Pile(
            community_id=community_id,
            building_id=building_id,
            serial=serial,
            port_count=port_count,
            mqtt_password_hash=hash_secret(password),
            **fields,
        )
        pile.ports = [
            Port(number=n, public_code=new_port_code(), status="offline")
            for n in range(1, port_count + 1)
        ]
        uow.session.add(pile)
        uow.session.add(
            AuditEntry(actor_user_id=actor.user_id, action="pile.register", object_type="pile",
                       details={"serial": serial})
        )
        _commit_unique(uow, "a pile with this serial")
        return RegisteredPile(pile, password)


def update_pile(uow: UnitOfWork, actor: Actor, pile_id: int, changes: dict[str, Any]) -> Pile:
    with uow:
        pile = access.get_pile(uow.session, actor, pile_id, manage=True)
        building_id = changes.get("building_id")
        if building_id is not None:
            building = uow.session.get(Building, building_id)
            if building is None or building.community_id != pile.community_id:
                raise InvalidInput("the building is not in this community", field="building_id")
        _apply(pile, changes)
        uow.commit()
        return pile


def port_by_code(uow: UnitOfWork, code: str) -> Port:
    """The public view behind a QR code; anyone holding the code may look."""
    if len(code) > PUBLIC_CODE_MAX:  # longer than any code: no such port (no DB round trip)
        raise NotFound("no such port")
    port = uow.session.execute(
        select(Port).where(Port.public_code == code.strip().upper())
    ).scalar_one_or_none()
    if port is None or not port.pile.enabled:
        raise NotFound("no such port")
    return port


@dataclass(frozen=True)
class PublicPort:
    port: Port
    tariff: TariffVersion | None  # in force now for the port's community


def public_port(uow: UnitOfWork, code: str) -> PublicPort:
    """What scanning a QR code shows: the port, and the tariff in force (public prices)."""
    port = port_by_code(uow, code)
    try:
        tariff: TariffVersion | None = tariff_in_force(uow.session, port.pile.community_id,
                                                       utcnow())
    except Conflict:  # no tariff set yet: the port cannot start either, but may be shown
        tariff = None
    return PublicPort(port, tariff)


@dataclass(frozen=True)
class NearbyCommunity:
    id: int
    name: str
    address: str
    lat: float
    lng: float
    distance_m: int
    pile_count: int  # enabled piles
    piles_online: int
    port_count: int  # ports of enabled piles
    free_ports: int  # idle ports of online enabled piles: where a bike can charge now


def nearby_communities(uow: UnitOfWork, lat: float, lng: float, limit: int = 10
                       ) -> list[NearbyCommunity]:
    """The ``limit`` communities nearest to (lat, lng), nearest first, with how many piles
    are online and ports free. Public: what the mini-program's home page lists before
    anyone logs in. Communities without coordinates are left out.

    Distances are computed in Python over every located community's coordinates (one
    narrow query; fine for thousands of communities), then the figures are counted for
    the chosen few only."""
    here = check_point(lat, lng)
    session = uow.session
    located = session.execute(
        select(Community.id, Community.lat, Community.lng)
        .where(Community.lat.is_not(None), Community.lng.is_not(None))
        .order_by(Community.id)).all()
    chosen = nearest(here, ((cid, Point(clat, clng)) for cid, clat, clng in located), limit)
    if not chosen:
        return []
    ids = [cid for cid, _ in chosen]
    communities = {c.id: c for c in session.execute(
        select(Community).where(Community.id.in_(ids))).scalars()}
    online = Pile.online.is_(True)
    piles = {cid: (n, up) for cid, n, up in session.execute(
        select(Pile.community_id, func.count(), func.coalesce(func.sum(case((online, 1),
                                                                            else_=0)), 0))
        .where(Pile.community_id.in_(ids), Pile.enabled.is_(True))
        .group_by(Pile.community_id))}
    free = (Port.status == "idle") & online
    ports = {cid: (n, idle) for cid, n, idle in session.execute(
        select(Pile.community_id, func.count(Port.id),
               func.coalesce(func.sum(case((free, 1), else_=0)), 0))
        .join(Pile, Port.pile_id == Pile.id)
        .where(Pile.community_id.in_(ids), Pile.enabled.is_(True))
        .group_by(Pile.community_id))}
    out = []
    for cid, distance in chosen:
        c = communities[cid]
        assert c.lat is not None and c.lng is not None
        pile_count, piles_online = piles.get(cid, (0, 0))
        port_count, free_ports = ports.get(cid, (0, 0))
        out.append(NearbyCommunity(
            id=c.id, name=c.name, address=c.address or "", lat=c.lat, lng=c.lng,
            distance_m=distance, pile_count=int(pile_count), piles_online=int(piles_online),
            port_count=int(port_count), free_ports=int(free_ports)))
    return out

"""A small two-tenant world built through the real services, and an API helper."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask.testing import FlaskClient

from app.domain.access import Actor, Role
from app.models import ChargingAccount, Community, Pile, PropertyCompany, User
from app.services import accounts, demo, places, tariffs, users, wallet
from app.services.uow import UnitOfWork

PASSWORD = "test-pass-123"
PIN = "135790"
# 1 yuan per kWh all in: easy to check by hand.
TEST_TARIFF = {"mode": "per_kwh", "energy_fen_per_kwh": 60, "service_fen_per_kwh": 40}


@dataclass
class Tenant:
    company: PropertyCompany
    operator: User
    community: Community
    pile: Pile
    account: ChargingAccount
    actor: Actor


@dataclass
class World:
    admin: User
    admin_actor: Actor
    grid_user: User
    power_company_id: int
    a: Tenant
    b: Tenant
    extra: dict[str, Any] = field(default_factory=dict)


def build_world(balance_fen: int = 5000) -> World:
    uow = UnitOfWork()
    admin = demo.create_platform_admin("admin", PASSWORD)
    root = Actor(admin.id, Role.PLATFORM_ADMIN)
    grid = places.create_power_company(uow, root, name="Grid", grid_price_fen_per_kwh=56)
    grid_user = users.create_staff_user(uow, root, username="grid", password=PASSWORD,
                                        role="power_company", power_company_id=grid.id)
    tenants = []
    for i, tag in enumerate("ab", start=1):
        company = places.create_property_company(uow, root, power_company_id=grid.id,
                                                 name=f"Property {tag.upper()}",
                                                 contact_phone=None)
        operator = users.create_staff_user(uow, root, username=f"op_{tag}", password=PASSWORD,
                                           role="property_operator",
                                           property_company_id=company.id)
        actor = Actor(operator.id, Role.PROPERTY_OPERATOR, grid.id, company.id)
        community = places.create_community(uow, actor, property_company_id=company.id,
                                            name=f"Community {tag.upper()}",
                                            master_meter_serial=f"MM{i}-{uuid.uuid4().hex[:6]}")
        tariffs.set_tariff(uow, actor, community.id, TEST_TARIFF,
                           datetime(2020, 1, 1, tzinfo=UTC))
        # unique serials: runs sharing the loopback broker must not hear each other's piles
        pile = places.register_pile(uow, actor, community_id=community.id,
                                    serial=f"T{i}-{uuid.uuid4().hex[:8]}", port_count=2).pile
        account = accounts.create_charging_account(
            uow, actor, community_id=community.id, account_no=f"1390000000{i}", pin=PIN,
            holder_name=f"Resident {tag}")
        if balance_fen:
            wallet.record_cash_topup(uow, actor, account.id, amount_fen=balance_fen,
                                     request_id=f"seed-{tag}-topup")
        tenants.append(Tenant(company, operator, community, pile, account, actor))
    return World(admin, root, grid_user, grid.id, tenants[0], tenants[1])


class ApiClient:
    """Thin helper over Flask's test client: logs in and sends JSON with a token."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.token: str | None = None

    def login(self, username: str, password: str = PASSWORD) -> ApiClient:
        res = self.client.post("/api/v1/auth/login",
                               json={"username": username, "password": password})
        assert res.status_code == 200, res.get_json()
        other = ApiClient(self.client)
        other.token = res.get_json()["access_token"]
        return other

    def with_token(self, token: str) -> ApiClient:
        other = ApiClient(self.client)
        other.token = token
        return other

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, url: str, **kw: Any) -> Any:
        return self.client.open(url, method=method, headers=self._headers(), **kw)

    def get(self, url: str, **kw: Any) -> Any:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> Any:
        return self.request("POST", url, **kw)

    def patch(self, url: str, **kw: Any) -> Any:
        return self.request("PATCH", url, **kw)

    def delete(self, url: str, **kw: Any) -> Any:
        return self.request("DELETE", url, **kw)


def resident(api: ApiClient, *bind: ChargingAccount, openid: str | None = None) -> ApiClient:
    """A mini-program user bound to the given accounts, with an API client holding a token."""
    from flask_jwt_extended import create_access_token

    from app.extensions import db
    from app.models import AccountBinding

    user = User(role=Role.RESIDENT.value, openid=openid or f"openid-{uuid.uuid4().hex[:10]}")
    db.session.add(user)
    db.session.flush()
    for account in bind:
        db.session.add(AccountBinding(user_id=user.id, charging_account_id=account.id))
    db.session.commit()
    return api.with_token(create_access_token(identity=user))

"""Demo data: a small but complete world to click through and to simulate against."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select

from app.domain.access import Actor, Role
from app.domain.accounts import validate_password
from app.models import User
from app.services import accounts, places, tariffs, users, wallet
from app.services.context import hash_secret
from app.services.uow import UnitOfWork

DEMO_PASSWORD = "demo-pass-2026"
DEMO_PIN = "135790"

# One tariff per community, each a different mode, so the demo shows them all.
DEMO_TARIFFS: list[dict[str, object]] = [
    {"mode": "per_kwh", "energy_fen_per_kwh": 60, "service_fen_per_kwh": 40,
     "minimum_charge_fen": 10},
    {"mode": "power_tier", "power_bands": [
        {"min_w": 0, "max_w": 200, "fen_per_hour": 20},
        {"min_w": 200, "max_w": 400, "fen_per_hour": 30},
        {"min_w": 400, "max_w": 800, "fen_per_hour": 50},
        {"min_w": 800, "max_w": 1200, "fen_per_hour": 80}],
     "free_minutes": 5},
    {"mode": "per_hour", "fen_per_hour": 25, "minimum_charge_fen": 10},
]


@dataclass
class DemoSummary:
    created: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return self.created


def create_platform_admin(username: str, password: str) -> User:
    uow = UnitOfWork()
    with uow:
        user = User(role=Role.PLATFORM_ADMIN.value, username=username,
                    password_hash=hash_secret(validate_password(password)),
                    display_name="Platform admin")
        uow.session.add(user)
        uow.commit()
        return user


def seed(piles_per_community: int = 2, ports_per_pile: int = 10) -> DemoSummary:
    """Idempotent: does nothing if the demo admin already exists."""
    summary = DemoSummary()
    uow = UnitOfWork()
    if uow.session.execute(select(User).where(User.username == "admin")).scalar_one_or_none():
        summary.created.append("demo data already present; nothing to do")
        return summary
    admin = create_platform_admin("admin", DEMO_PASSWORD)
    root = Actor(admin.id, Role.PLATFORM_ADMIN)
    grid = places.create_power_company(uow, root, name="State Grid Demo City",
                                       grid_price_fen_per_kwh=56)
    users.create_staff_user(uow, root, username="grid", password=DEMO_PASSWORD,
                            role="power_company", power_company_id=grid.id,
                            display_name="Grid monitoring")
    layout = [("Greenfield Property", ["Sunrise Garden", "Riverside Court"]),
              ("Lakeside Services", ["Lakeview Homes"])]
    serial_no = 0
    phone_no = 13800000000
    tariff_index = 0
    for pc_index, (pc_name, community_names) in enumerate(layout, start=1):
        company = places.create_property_company(uow, root, power_company_id=grid.id,
                                                 name=pc_name, contact_phone="0571-88000000")
        operator = users.create_staff_user(
            uow, root, username=f"operator{pc_index}", password=DEMO_PASSWORD,
            role="property_operator", property_company_id=company.id,
            display_name=f"{pc_name} office")
        op = Actor(operator.id, Role.PROPERTY_OPERATOR, grid.id, company.id)
        summary.created.append(f"property company {pc_name}: operator{pc_index}")
        for c_index, c_name in enumerate(community_names, start=1):
            community = places.create_community(
                uow, op, property_company_id=company.id, name=c_name,
                address=f"{c_index} Demo Road", lat=30.25 + pc_index / 100 + c_index / 1000,
                lng=120.16 + c_index / 100, master_meter_serial=f"MM{pc_index}{c_index:02d}")
            rules = DEMO_TARIFFS[tariff_index % len(DEMO_TARIFFS)]
            tariffs.set_tariff(uow, op, community.id, rules, datetime(2026, 1, 1, tzinfo=UTC))
            tariff_index += 1
            shed = places.create_building(uow, op, community_id=community.id,
                                          name="Shed A", kind="shed")
            for _ in range(piles_per_community):
                serial_no += 1
                registered = places.register_pile(
                    uow, op, community_id=community.id, serial=f"P{serial_no:04d}",
                    port_count=ports_per_pile, building_id=shed.id, model="EB-10",
                    lat=community.lat, lng=community.lng)
                summary.created.append(
                    f"  pile {registered.pile.serial} in {c_name} "
                    f"(mqtt password {registered.mqtt_password})")
            for _ in range(3):
                phone_no += 1
                account = accounts.create_charging_account(
                    uow, op, community_id=community.id, account_no=str(phone_no),
                    pin=DEMO_PIN, holder_name=f"Resident {phone_no % 1000}")
                wallet.record_cash_topup(uow, op, account.id, amount_fen=5000,
                                         request_id=f"demo-seed-{account.id}")
            summary.created.append(f"  community {c_name}: 3 accounts with 50.00 yuan")
    summary.created.append(f"log in as admin / grid / operator1 / operator2, "
                           f"password {DEMO_PASSWORD}; keypad PIN {DEMO_PIN}")
    return summary

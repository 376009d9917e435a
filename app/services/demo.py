"""Demo data: a small but complete world to click through and to simulate against.

Besides the places, people and piles, :func:`seed` writes a **meter history** for the last
``history_days`` complete local days (:func:`write_meter_history`), so that the theft and
loss page has a series to show on a fresh demo. Rules of that history:

* **What it writes.** Only telemetry rows, as the bridge would have written them:
  ``master_meter_readings`` (each community's master meter, cumulative Wh, every 15
  minutes on the local quarter hours, from the first day's midnight to today's) and
  ``meter_readings`` (per port: cumulative Wh at a session's start, on every quarter hour
  while it charges and at its end, plus one idle reading per port at the end of the
  history). No charging sessions, no ledger entries, no port state.
* **What it looks like.** Each port charges e-bikes at 150–250 W (constant current, then
  tapering over the last fifth), 2–6 h: a morning charge now and then, a daytime one most
  days and an evening one (17:30–22:30, into the night) nearly every day, so a shed of 20
  ports draws some 30 kWh a day (the loss check decides from 20 kWh a day). The master
  meter counts the sockets' energy plus the cables' loss (2.2–3.5 % of the load, varying a
  little day to day) plus the piles' own boards and modems (8–12 W a pile): a loss ratio of
  about 3.5–5.5 %. In :data:`LEAK_COMMUNITY` someone has hand-wired a socket into the shed's
  supply: on the last :data:`LEAK_DAYS` days the master meter also counts 21–28 % of its
  total that no socket meter sees, drawn evening and night (18:00–06:00) -- the loss page
  and the jobs process's daily loss check flag those days (above the threshold, and a jump
  against the community's history).
* **Deterministic**: ``random.Random`` streams seeded by the master meter's serial (its
  parameters) and by each port's pile serial and number (its charges); seeded on another
  day, the same series comes out, moved to the new dates (``now``).
* **Live piles are not disturbed.** The simulator's piles start their counters from 0 and
  the history's counters are far above that, but the bridge compares a new reading only
  with the port's stored state (``ports.energy_wh`` and the meter stamp, left empty here)
  and, for the detectors, with readings in a ten-minute window before it: the socket
  readings stop at least :data:`HISTORY_MARGIN` before the seed (a charge running then is
  cut short there), so no live reading is ever judged against them ("meter going
  backwards"). For the loss check, a live counter below the history's is a counter reset
  (a fresh start from zero), which is what it is.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.domain.access import Actor, Role
from app.domain.accounts import validate_password
from app.models import Community, MasterMeterReading, MeterReading, Pile, Port, User
from app.models.base import utcnow
from app.services import accounts, places, tariffs, users, wallet
from app.services.context import hash_secret
from app.services.uow import UnitOfWork

DEMO_PASSWORD = "demo-pass-2026"
HISTORY_DAYS = 14
LEAK_COMMUNITY = "Sunrise Garden"
LEAK_DAYS = 3
HISTORY_MARGIN = timedelta(minutes=30)
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


def seed(piles_per_community: int = 2, ports_per_pile: int = 10,
         history_days: int = HISTORY_DAYS, now: datetime | None = None) -> DemoSummary:
    """Idempotent: does nothing if the demo admin already exists.

    ``history_days``: complete local days of meter history to write (0: none); ``now``:
    the seed's clock (default the real one)."""
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
    if history_days > 0:
        summary.created.extend(write_meter_history(uow.session, history_days, now=now))
        uow.commit()
    summary.created.append(f"log in as admin / grid / operator1 / operator2, "
                           f"password {DEMO_PASSWORD}; keypad PIN {DEMO_PIN}")
    return summary


# --------------------------------------------------------------------------- meter history

SLOT = timedelta(minutes=15)
"""The master meter is read on every local quarter hour; a charging port reports on them."""

# (probability a day, earliest, latest, most likely start [local hours], min, max hours)
CHARGE_WINDOWS: tuple[tuple[float, float, float, float, float, float], ...] = (
    (0.30, 6.0, 8.0, 7.0, 2.0, 3.0),  # before work
    (0.75, 9.0, 15.0, 11.0, 2.0, 5.0),  # daytime: couriers, retirees, the night shift
    (0.95, 17.5, 22.5, 19.5, 3.5, 6.0),  # home from work: into the night
)
CC_FRACTION = 0.8  # constant current (full power) for this part of a charge...
TAPER_DROP = 0.55  # ...then the power falls linearly by this fraction of it by the end
LEAK_HOURS = (18, 6)  # the hand-wired socket draws from 18:00 to 06:00 local


@dataclass(frozen=True)
class _Charge:
    start: datetime
    end: datetime
    power_w: int  # during the constant-current part

    def _fraction(self, at: datetime) -> float:
        return min(max((at - self.start) / (self.end - self.start), 0.0), 1.0)

    def energy_wh(self, at: datetime) -> float:
        """Energy since the start, exact for the piecewise linear power curve."""
        hours = (self.end - self.start) / timedelta(hours=1)
        f = self._fraction(at)
        taper = max(f - CC_FRACTION, 0.0)
        share = f - TAPER_DROP / (2 * (1 - CC_FRACTION)) * taper * taper
        return self.power_w * hours * share

    def power_at(self, at: datetime) -> int:
        taper = max(self._fraction(at) - CC_FRACTION, 0.0) / (1 - CC_FRACTION)
        return round(self.power_w * (1 - TAPER_DROP * taper))


@dataclass
class _History:
    socket_rows: list[dict[str, Any]] = field(default_factory=list)
    master_rows: list[dict[str, Any]] = field(default_factory=list)
    daily: list[tuple[date, int, int]] = field(default_factory=list)  # day, master, sockets


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def _port_history(out: _History, port_id: int, label: str, grid: Sequence[datetime],
                  socket_wh: list[float], first: date, days: int, zone: ZoneInfo,
                  horizon: datetime) -> None:
    """One port's charges (from the evening before the first day) as readings; each
    charge's energy is added to ``socket_wh`` per quarter hour of ``grid``. The port has
    its own random stream, so that cutting one port's last charge short (``horizon``)
    changes nothing else."""
    rng = random.Random(f"demo-history/{label}")
    counter = float(rng.randint(20_000, 400_000))  # the metering board's months of service
    reported = math.floor(counter)
    ambient = rng.randint(180, 280)  # deci-°C in the shed
    free_at = grid[0]
    n = 0
    last_at: datetime | None = None
    for back in range(days + 1):
        day = first - timedelta(days=1) + timedelta(days=back)
        windows = CHARGE_WINDOWS if back else CHARGE_WINDOWS[-1:]  # the day before: evening
        for p, lo, hi, mode, shortest, longest in windows:
            draw = rng.random()
            hour, hours = rng.triangular(lo, hi, mode), rng.uniform(shortest, longest)
            power_w, rise = rng.randint(150, 250), rng.randint(40, 90)
            if draw >= p:
                continue
            local = datetime.combine(day, time(), tzinfo=zone) + timedelta(hours=hour)
            start = local.astimezone(UTC).replace(microsecond=0)
            end = min(start + timedelta(seconds=round(hours * 3600)), horizon)
            if start < free_at + timedelta(minutes=10) or end - start < timedelta(minutes=30):
                continue
            free_at = end
            n += 1
            charge = _Charge(start, end, power_w)
            i, j = bisect.bisect_right(grid, start), bisect.bisect_left(grid, end)
            times = [start, *grid[i:j], end]
            previous = 0.0
            for k, at in enumerate(times):
                energy = charge.energy_wh(at)
                if k:
                    socket_wh[bisect.bisect_right(grid, times[k - 1]) - 1] += energy - previous
                previous = energy
                wh = math.floor(counter + energy)
                power = charge.power_at(at) if at < end else 0
                voltage = rng.randint(2160, 2250)
                heat = min((at - start) / timedelta(hours=1), 1.0)
                out.socket_rows.append({
                    "port_id": port_id, "measured_at": at, "energy_wh": wh,
                    "delta_wh": wh - reported, "power_w": power, "voltage_dv": voltage,
                    "current_ma": round(power * 10_000 / voltage),
                    "temp_dc": ambient + round(rise * heat), "session_ref": f"{label}-{n:03d}",
                })
                reported = wh
            counter += charge.energy_wh(end)
            last_at = end
    if last_at != horizon:  # the counter as it stands at the end of the history
        voltage = rng.randint(2160, 2250)
        out.socket_rows.append({
            "port_id": port_id, "measured_at": horizon, "energy_wh": reported, "delta_wh": 0,
            "power_w": 0, "voltage_dv": voltage, "current_ma": 0, "temp_dc": ambient,
            "session_ref": None})


def community_history(community: Community, ports: Sequence[tuple[int, str]], piles: int,
                      days: int, now: datetime, *, leak: bool) -> _History:
    """The rows of ``days`` complete local days of meter history before ``now`` (pure:
    writes nothing). ``ports``: (port id, label for its session references)."""
    zone = ZoneInfo(community.timezone)
    rng = random.Random(f"demo-history/{community.master_meter_serial}")
    line_loss = rng.uniform(0.022, 0.035)  # of the load: cables and connections
    standby_w = sum(rng.uniform(8.0, 12.0) for _ in range(piles))  # boards and 4G modems
    master = float(rng.randint(1_500_000, 4_000_000))
    today = now.astimezone(zone).date()
    first = today - timedelta(days=days)
    start, end = _midnight(first, zone), _midnight(today, zone)
    horizon = min(end, now - HISTORY_MARGIN)
    grid: list[datetime] = []  # quarter hours from the evening before the first day to `end`
    for back in range(days + 1):
        day = first - timedelta(days=1) + timedelta(days=back)
        at, stop = _midnight(day, zone), _midnight(day + timedelta(days=1), zone)
        while at < stop:
            grid.append(at)
            at += SLOT
    grid.append(end)
    socket_wh = [0.0] * (len(grid) - 1)
    out = _History()
    for port_id, label in ports:
        _port_history(out, port_id, label, grid, socket_wh, first, days, zone, horizon)
    serial = community.master_meter_serial
    first_slot = grid.index(start)
    out.master_rows.append({"community_id": community.id, "meter_serial": serial,
                            "energy_wh": math.floor(master), "read_at": start})
    for back in range(days):
        day = first + timedelta(days=back)
        lo = grid.index(_midnight(day, zone), first_slot)
        hi = grid.index(_midnight(day + timedelta(days=1), zone), lo)
        loss_today = line_loss + rng.uniform(-0.004, 0.004)
        slot_h = [(grid[k + 1] - grid[k]) / timedelta(hours=1) for k in range(lo, hi)]
        sockets = sum(socket_wh[lo:hi])
        standby = standby_w * sum(slot_h)
        leak_wh = [0.0] * (hi - lo)
        if leak and back >= days - LEAK_DAYS:
            # stolen = share of the master total, the rest being the normal losses
            share = rng.uniform(0.21, 0.28)
            normal = sockets * loss_today + standby
            stolen = (share * (sockets + normal) - normal) / (1 - share)
            weights = [rng.uniform(0.85, 1.15) if grid[k].astimezone(zone).hour >= LEAK_HOURS[0]
                       or grid[k].astimezone(zone).hour < LEAK_HOURS[1] else 0.0
                       for k in range(lo, hi)]
            leak_wh = [stolen * w / sum(weights) for w in weights]
        for i, k in enumerate(range(lo, hi)):
            master += (socket_wh[k] * (1 + loss_today) + standby_w * slot_h[i] + leak_wh[i])
            out.master_rows.append({"community_id": community.id, "meter_serial": serial,
                                    "energy_wh": math.floor(master), "read_at": grid[k + 1]})
        out.daily.append((day, round(sockets * (1 + loss_today) + standby + sum(leak_wh)),
                          round(sockets)))
    return out


def write_meter_history(session: Session, days: int = HISTORY_DAYS, *,
                        now: datetime | None = None) -> list[str]:
    """Write ``days`` complete local days of meter history for every community with a
    master meter and no master readings yet (module docstring); no commit. Returns
    summary lines."""
    now = now or utcnow()
    lines: list[str] = []
    communities = session.execute(select(Community).where(
        Community.master_meter_serial.is_not(None)).order_by(Community.id)).scalars().all()
    for community in communities:
        if session.execute(select(MasterMeterReading.id).where(
                MasterMeterReading.community_id == community.id).limit(1)).first():
            continue
        rows = session.execute(
            select(Port.id, Pile.serial, Port.number).join(Pile, Pile.id == Port.pile_id)
            .where(Pile.community_id == community.id).order_by(Pile.serial, Port.number)).all()
        ports = [(port_id, f"hist-{serial}-{number}") for port_id, serial, number in rows]
        piles = len({serial for _, serial, _ in rows})
        leak = community.name == LEAK_COMMUNITY
        history = community_history(community, ports, piles, days, now, leak=leak)
        for model, batch in ((MeterReading, history.socket_rows),
                             (MasterMeterReading, history.master_rows)):
            for i in range(0, len(batch), 5000):
                session.execute(insert(model), batch[i:i + 5000])
        per_day = [master for _, master, _ in history.daily]
        lines.append(
            f"  history {community.name}: {days} days, {len(history.socket_rows)} socket and "
            f"{len(history.master_rows)} master readings, "
            f"{min(per_day) / 1000:.0f}-{max(per_day) / 1000:.0f} kWh a day"
            + (f"; a hand-wired socket leaks on the last {min(LEAK_DAYS, days)} days"
               if leak else ""))
    session.flush()
    return lines

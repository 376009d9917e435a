"""Many simulated piles in one process, with users who come and go.

Each pile has its own paho client and network thread: fine for tens to a few
hundred piles. The 10,000-pile benchmark does not use this; it drives
MessageFactory directly.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from simulator.pile import Faults, SimulatedPile

__all__ = ["Behaviour", "Fleet", "pile_ids"]

log = logging.getLogger(__name__)

ALARM_KINDS = ("over_temperature", "overcurrent", "overload", "short_circuit", "smoke",
               "leakage", "plug_fault")
#: Measured value (and trip threshold) per alarm kind, in the units of docs/protocol.md.
ALARM_VALUES: dict[str, tuple[int, int] | None] = {
    "over_temperature": (780, 700), "overcurrent": (12500, 10000), "overload": (1350, 1000),
    "short_circuit": (60000, 30000), "smoke": None, "leakage": (35, 30), "plug_fault": None,
}


def pile_ids(prefix: str, count: int, start: int = 1, width: int = 4) -> list[str]:
    """``P0001``, ``P0002``, ... (the serials the platform has registered)."""
    return [f"{prefix}{i:0{width}d}" for i in range(start, start + count)]


@dataclass
class Behaviour:
    """How users and hardware behave; every rate is per simulated hour."""

    arrivals_per_port_hour: float = 0.3
    method_weights: dict[str, float] = field(
        default_factory=lambda: {"keypad": 0.4, "card": 0.3, "coin": 0.3})
    accounts: list[tuple[str, str]] = field(default_factory=list)  # (account_no, pin)
    cards: list[str] = field(default_factory=list)
    coin_choices_fen: tuple[int, ...] = (100, 200, 300, 500)
    alarm_rate: float = 0.0  # per pile-hour
    link_drop_rate: float = 0.0  # per pile-hour
    reboot_rate: float = 0.0  # per pile-hour
    outage_minutes: tuple[float, float] = (1.0, 10.0)
    give_up_minutes: float = 5.0  # plugged, nothing started: the user leaves
    leave_after_end_minutes: tuple[float, float] = (0.0, 60.0)

    def account(self, rng: random.Random) -> tuple[str, str]:
        if self.accounts:
            return rng.choice(self.accounts)
        return f"139{rng.randrange(10**8):08d}", "123456"

    def card(self, rng: random.Random) -> str:
        return rng.choice(self.cards) if self.cards else f"{rng.getrandbits(32):08X}"


@dataclass
class _PortPlan:
    plugged_at: float | None = None
    leave_at: float | None = None
    charged: bool = False


class Fleet:
    """N piles x M ports against one broker, moved by ``tick`` or ``run``."""

    def __init__(
        self, broker_url: str | None, piles: int = 10, ports: int = 10, prefix: str = "P", *,
        start: int = 1, width: int = 4, meter_interval_s: int = 60, keepalive_s: int = 60,
        speed: float = 1.0, faults: Faults | None = None, seed: int | None = None,
        behaviour: Behaviour | None = None, passwords: dict[str, str] | None = None,
        username: str | None = None, tls_ca: str | None = None, record: bool = False,
    ) -> None:
        self.speed = speed
        self.behaviour = behaviour
        self.rng = random.Random(seed)
        passwords = passwords or {}
        self.piles: list[SimulatedPile] = [
            SimulatedPile(
                pid, ports, broker_url, username=username,
                password=passwords.get(pid, passwords.get("*")),
                keepalive_s=keepalive_s, meter_interval_s=meter_interval_s,
                seed=self.rng.getrandbits(32), faults=faults, tls_ca=tls_ca, record=record)
            for pid in pile_ids(prefix, piles, start, width)
        ]
        self._plans = {(p.pile_id, n): _PortPlan() for p in self.piles for n in p.ports}
        self._outage_until: dict[str, float] = {}
        self.counts: Counter[str] = Counter()
        for pile in self.piles:
            pile.on_wire = self._count

    def _count(self, topic: str, data: bytes) -> None:
        self.counts[topic.rsplit("/", 1)[-1]] += 1

    def __getitem__(self, pile_id: str) -> SimulatedPile:
        for pile in self.piles:
            if pile.pile_id == pile_id:
                return pile
        raise KeyError(pile_id)

    def connect_all(self, timeout: float = 10.0) -> None:
        for pile in self.piles:
            pile.connect(timeout)

    def stop(self) -> None:
        """Clean shutdown: every pile says ``offline`` (reason shutdown)."""
        for pile in self.piles:
            pile.disconnect()

    def tick(self, real_seconds: float) -> None:
        """Advance every pile by real_seconds x speed of simulated time."""
        sim_dt = real_seconds * self.speed
        for pile in self.piles:
            if self.behaviour is not None:
                self._act(pile, sim_dt)
            pile.advance(sim_dt)

    def run(self, duration_s: float | None = None, tick_s: float = 0.5,
            stop: threading.Event | None = None, report_every_s: float = 10.0) -> None:
        """Real-time loop until ``duration_s`` passes or ``stop`` is set."""
        stop = stop or threading.Event()
        started = last = last_report = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if duration_s is not None and now - started >= duration_s:
                break
            self.tick(now - last)
            last = now
            if now - last_report >= report_every_s:
                log.info("fleet: %s", self.stats())
                last_report = now
            stop.wait(tick_s)

    def stats(self) -> dict[str, Any]:
        states = Counter(p.status for pile in self.piles for p in pile.ports.values())
        return {"connected": sum(p.connected for p in self.piles), "ports": dict(states),
                "sent": dict(self.counts)}

    # ------------------------------------------------------------ behaviour
    def _chance(self, rate_per_hour: float, sim_dt: float) -> bool:
        return rate_per_hour > 0 and self.rng.random() < rate_per_hour * sim_dt / 3600.0

    def _act(self, pile: SimulatedPile, sim_dt: float) -> None:
        b = self.behaviour
        assert b is not None
        now = pile.sim_s
        until = self._outage_until.get(pile.pile_id)
        if until is not None and now >= until:
            del self._outage_until[pile.pile_id]
            try:
                pile.restore_link()
            except ConnectionError as exc:
                log.warning("%s", exc)
        elif until is None and pile.connected:
            if self._chance(b.link_drop_rate, sim_dt):
                pile.drop_link()
                self._outage_until[pile.pile_id] = now + 60 * self.rng.uniform(*b.outage_minutes)
            elif self._chance(b.reboot_rate, sim_dt):
                pile.reboot(graceful=self.rng.random() < 0.3)
                return
        if self._chance(b.alarm_rate, sim_dt):
            kind = self.rng.choice(ALARM_KINDS)
            severity = self.rng.choice(("critical", "major", "minor", "minor"))
            port = self.rng.choice([*pile.ports, None])
            values = ALARM_VALUES[kind]
            pile.raise_alarm(port, kind, severity, value=values[0] if values else None,
                             threshold=values[1] if values else None)
        for number, port in pile.ports.items():
            plan = self._plans[(pile.pile_id, number)]
            if port.status == "fault":
                if self.rng.random() < sim_dt / 1800.0:  # repaired in ~30 min
                    pile.clear_alarm(number, port.fault_code or "plug_fault")
                continue
            if not port.plugged:
                if self._chance(b.arrivals_per_port_hour, sim_dt):
                    pile.plug(number)
                    plan.plugged_at, plan.leave_at, plan.charged = now, None, False
                    self._identify(pile, number)
                continue
            if port.session is not None:
                plan.leave_at, plan.charged = None, True
                continue
            if plan.leave_at is None:
                if plan.charged:  # came back after the end: full, limit, stop...
                    plan.leave_at = now + 60 * self.rng.uniform(*b.leave_after_end_minutes)
                elif now - (plan.plugged_at or now) >= 60 * b.give_up_minutes:
                    plan.leave_at = now  # nothing started: the user leaves
            if plan.leave_at is not None and now >= plan.leave_at:
                pile.unplug(number)
                plan.plugged_at = plan.leave_at = None

    def _identify(self, pile: SimulatedPile, port: int) -> None:
        b = self.behaviour
        assert b is not None
        methods, weights = zip(*b.method_weights.items(), strict=True)
        method = self.rng.choices(methods, weights)[0]
        if method == "keypad" and pile.connected:
            pile.keypad_login(port, *b.account(self.rng))
        elif method == "card" or method == "keypad":
            pile.swipe_card(port, b.card(self.rng))
        else:
            pile.insert_coins(port, self.rng.choice(b.coin_choices_fen))

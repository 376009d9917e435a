"""An e-bike battery on its own charger, seen from the pile's AC socket.

Chinese community piles give 220 V AC to the bike's charger; the pile meters
AC power. A lead-acid or lithium pack of 48/60/72 V charges at constant
current (2-3 A, so roughly 100-250 W at the socket) up to ~80 % state of
charge, then the current tapers until the charger only trickles a few watts.
That taper is what the pile's "full" detection (power below a threshold for N
minutes) has to see, so the model keeps it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["CHARGER_EFFICIENCY", "MAINS_DV", "Battery"]

#: Charger efficiency: AC in -> DC into the pack.
CHARGER_EFFICIENCY = 0.88
#: Nominal mains voltage in decivolts (220.0 V).
MAINS_DV = 2200
_STANDBY_W = 2.5  # charger electronics, also when the pack is full
_TRICKLE_FRACTION = 0.02  # current left at 100 % state of charge


@dataclass
class Battery:
    """One pack plugged into one port; ``soc`` is the state of charge 0..1."""

    nominal_v: int = 48
    capacity_wh: int = 960
    soc: float = 0.3
    cc_current_a: float = 2.5
    taper_from: float = 0.8

    @classmethod
    def random(cls, rng: random.Random) -> Battery:
        """A plausible pack: 48/60/72 V, 12-32 Ah, 5-60 % charged, 2-3 A charger."""
        nominal = rng.choice((48, 48, 60, 60, 72))
        amp_hours = rng.choice((12, 20, 20, 24, 32))
        return cls(nominal_v=nominal, capacity_wh=nominal * amp_hours,
                   soc=rng.uniform(0.05, 0.6), cc_current_a=rng.uniform(2.0, 3.0))

    def pack_voltage(self) -> float:
        """Charging voltage rises from ~1.08x to ~1.15x nominal with the charge."""
        return self.nominal_v * (1.08 + 0.07 * self.soc)

    def charge_current_a(self) -> float:
        """Constant current, then a taper towards a small trickle."""
        if self.soc < self.taper_from:
            return self.cc_current_a
        left = max(0.0, (1.0 - self.soc) / (1.0 - self.taper_from))
        return self.cc_current_a * max(_TRICKLE_FRACTION, left ** 1.5)

    def ac_power_w(self) -> float:
        """Power drawn from the pile's socket right now."""
        return self.pack_voltage() * self.charge_current_a() / CHARGER_EFFICIENCY + _STANDBY_W

    def charge(self, seconds: float) -> float:
        """Charge for ``seconds``; returns the AC energy drawn, in Wh.

        Integrated in slices of at most 30 s so the taper stays smooth for
        any step size the caller uses.
        """
        drawn_wh = 0.0
        slices = max(1, math.ceil(seconds / 30.0))
        dt = seconds / slices
        for _ in range(slices):
            p_ac = self.ac_power_w()
            dc_wh = (p_ac - _STANDBY_W) * CHARGER_EFFICIENCY * dt / 3600.0
            self.soc = min(1.0, self.soc + dc_wh / self.capacity_wh)
            drawn_wh += p_ac * dt / 3600.0
        return drawn_wh

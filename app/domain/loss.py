"""Theft and loss: a community's master (utility) meter against the sum of its sockets.

Every socket of every pile meters its own output; the master meter (protocol §9.13) meters
what the community's charging circuit takes from the grid. Over a period the difference
``loss = master - sockets`` is cable loss plus the piles' own standby consumption (a few
per cent) -- and anything stolen: a tapped cable, a bypassed or tampered socket meter. The
check is pure (stdlib only); the caller loads the readings and stores the incidents.

Units: energy integer Wh, times timezone-aware ``datetime``. No float is used: ratios are
``Fraction``s, and a per-mille integer is provided for display only.

Energy over a period (:class:`CounterSeries`)
---------------------------------------------
Both kinds of meter report a *cumulative* counter. The energy over ``[start, end)`` is
``C(end) - C(start)``, where ``C(t)`` is the counter at instant ``t``:

* at a reading, the reading's value;
* between two readings, **linear interpolation** between them (the readings straddle the
  boundary, e.g. master readings at 23:50 and 00:05 give the counter at 00:00 as
  ``v1 + (v2 - v1) * 10/15``);
* before the first reading, the first reading's value; after the last, the last one's --
  nothing is extrapolated. For a socket this is exactly right (a port reports only while
  its counter moves, so silence means an unchanged counter); for the master meter, which is
  read every ~15 minutes, it means missing data, so :attr:`LossFigures.master_complete`
  says whether the master readings bracket the period and :func:`assess` refuses to decide
  otherwise.

Rounding: ``C(t)`` is computed exactly (``Fraction``) and **floored to whole Wh** -- what
the meter itself would have shown at that instant -- and an energy is the difference of two
floored counters. Because every boundary is rounded once, energies telescope: the energy of
a period is exactly the sum of the energies of any split of it (with or without readings at
the split points), and daily figures add up to the monthly ones.

Counter resets: when a counter goes **down** between two consecutive readings (a replaced
metering board or master meter, or a counter that wrapped), the new value is treated as a
fresh start from zero and added: the energy between the two readings is the new value.
The continuous counter therefore never decreases. (A replacement that does not start near
zero would overstate that meter's energy by its starting value; the number of resets is
reported so that a person can check.)

Detection (:func:`assess`)
--------------------------
An incident is opened when, with a complete master reading:

* the sockets read more than the master by over ``negative_tolerance`` of the master energy
  (and over ``negative_min_wh``): physically impossible, so a meter is faulty or tampered;
* the loss ratio ``loss / master`` exceeds ``threshold`` (8 %) and the master energy is at
  least ``min_master_wh`` (so tiny periods, where the master meter's resolution dominates,
  never trigger);
* the ratio jumps against the community's own history: above ``jump_factor`` (3) × the
  median ratio of the last ``history_periods`` (14) decision-grade periods, and above
  ``jump_floor`` (4 %), with at least ``min_history`` (3) such periods.
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_right
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import Final
from zoneinfo import ZoneInfo

from app.domain.errors import ConfigurationError

__all__ = [
    "DEFAULT_LOSS_CONFIG",
    "DEFAULT_TZ",
    "CounterReading",
    "CounterSeries",
    "DailyFigures",
    "LossConfig",
    "LossDecision",
    "LossFigures",
    "LossVerdict",
    "Period",
    "assess",
    "assess_series",
    "daily_series",
    "per_mille",
    "period_figures",
]

DEFAULT_TZ: Final = "Asia/Shanghai"
_US: Final = timedelta(microseconds=1)


def _aware(name: str, at: object) -> datetime:
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {at!r}")
    return at


def per_mille(ratio: Fraction) -> int:
    """``ratio`` in ‰, rounded half up (towards +∞): 0.0805 -> 81, -0.0125 -> -12.
    For display and reports only; decisions compare the exact ``Fraction``."""
    scaled = ratio * 1000
    return math.floor(scaled + Fraction(1, 2))


# --------------------------------------------------------------------------- counters


@dataclass(frozen=True, slots=True)
class CounterReading:
    """A cumulative counter (master meter or one socket) at one instant."""

    at: datetime
    energy_wh: int

    def __post_init__(self) -> None:
        _aware("at", self.at)
        if isinstance(self.energy_wh, bool) or not isinstance(self.energy_wh, int):
            raise ValueError(f"energy_wh must be an int, got {self.energy_wh!r}")
        if self.energy_wh < 0:
            raise ValueError(f"energy_wh must not be negative, got {self.energy_wh}")


@dataclass(frozen=True, slots=True)
class Period:
    """``[start, end)``."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        _aware("start", self.start)
        _aware("end", self.end)
        if not self.start < self.end:
            raise ValueError(f"period must end after it starts: {self.start} .. {self.end}")


class CounterSeries:
    """One meter's readings, made continuous across resets, queryable at any instant.

    Readings are ordered by time (arrival order does not matter); for equal times the given
    order is kept.
    """

    __slots__ = ("_resets", "_times", "_values")

    def __init__(self, readings: Iterable[CounterReading]) -> None:
        ordered = sorted(readings, key=lambda r: r.at)
        self._times: list[datetime] = [r.at for r in ordered]
        self._values: list[int] = []  # continuous counter, non-decreasing
        self._resets: list[tuple[datetime, datetime]] = []  # (previous reading, reset reading)
        previous: CounterReading | None = None
        for r in ordered:
            if previous is None:
                total = r.energy_wh
            elif r.energy_wh >= previous.energy_wh:
                total += r.energy_wh - previous.energy_wh
            else:  # went down: a fresh start from zero, so it has counted r.energy_wh since
                total += r.energy_wh
                self._resets.append((previous.at, r.at))
            self._values.append(total)
            previous = r

    def __len__(self) -> int:
        return len(self._times)

    @property
    def first_at(self) -> datetime | None:
        return self._times[0] if self._times else None

    @property
    def last_at(self) -> datetime | None:
        return self._times[-1] if self._times else None

    def value_at(self, at: datetime) -> Fraction | None:
        """The continuous counter at ``at``, exact: interpolated between the readings that
        straddle it, clamped to the first/last reading outside them. None without readings.
        """
        _aware("at", at)
        if not self._times:
            return None
        i = bisect_right(self._times, at) - 1  # last reading at or before ``at``
        if i < 0:
            return Fraction(self._values[0])
        if i == len(self._times) - 1 or self._times[i] == at:
            return Fraction(self._values[i])
        t0, t1 = self._times[i], self._times[i + 1]
        v0, v1 = self._values[i], self._values[i + 1]
        return v0 + Fraction(v1 - v0) * Fraction((at - t0) // _US, (t1 - t0) // _US)

    def counter_at(self, at: datetime) -> int | None:
        """:meth:`value_at` floored to whole Wh (what the meter would have shown)."""
        value = self.value_at(at)
        return None if value is None else math.floor(value)

    def energy(self, period: Period) -> int:
        """Wh counted during ``period``: ``floor C(end) - floor C(start)``; 0 without
        readings. Never negative."""
        if not self._times:
            return 0
        start, end = self.counter_at(period.start), self.counter_at(period.end)
        assert start is not None and end is not None
        return end - start

    def covers(self, period: Period) -> bool:
        """Readings at or before ``start`` and at or after ``end``: nothing clamped."""
        return bool(self._times) and self._times[0] <= period.start and (
            self._times[-1] >= period.end)

    def interpolation_span(self, period: Period) -> timedelta | None:
        """The longest gap between the two readings used at either boundary (zero when a
        reading falls on it); None if the period is not covered."""
        if not self.covers(period):
            return None
        return max(self._bracket(period.start), self._bracket(period.end))

    def _bracket(self, at: datetime) -> timedelta:
        i = bisect_right(self._times, at) - 1
        if self._times[i] == at or i == len(self._times) - 1:
            return timedelta(0)
        return self._times[i + 1] - self._times[i]

    def resets_in(self, period: Period) -> int:
        """Resets whose interval overlaps the period."""
        return sum(1 for a, b in self._resets if a < period.end and b > period.start)


# --------------------------------------------------------------------------- figures

SocketKey = Hashable


@dataclass(frozen=True)
class LossFigures:
    """One community, one period. ``loss_wh`` may be negative (sockets above master)."""

    period: Period
    master_wh: int
    sockets_wh: int
    by_socket: Mapping[SocketKey, int]
    master_complete: bool
    master_interpolation_span: timedelta | None
    master_resets: int = 0
    socket_resets: int = 0

    @property
    def loss_wh(self) -> int:
        return self.master_wh - self.sockets_wh

    @property
    def ratio(self) -> Fraction | None:
        """``loss / master``; None when the master counted nothing."""
        return Fraction(self.loss_wh, self.master_wh) if self.master_wh > 0 else None

    @property
    def per_mille(self) -> int | None:
        ratio = self.ratio
        return None if ratio is None else per_mille(ratio)


def _series(readings: CounterSeries | Iterable[CounterReading]) -> CounterSeries:
    return readings if isinstance(readings, CounterSeries) else CounterSeries(readings)


def period_figures(
    master: CounterSeries | Iterable[CounterReading],
    sockets: Mapping[SocketKey, CounterSeries | Iterable[CounterReading]],
    period: Period,
) -> LossFigures:
    """Master energy, the sum of the sockets' energies and their difference over
    ``period`` (rules in the module docstring). ``sockets`` maps any key (port id) to that
    port's counter readings; pass :class:`CounterSeries` to reuse them across periods."""
    m = _series(master)
    by_socket: dict[SocketKey, int] = {}
    socket_resets = 0
    for key, readings in sockets.items():
        series = _series(readings)
        by_socket[key] = series.energy(period)
        socket_resets += series.resets_in(period)
    return LossFigures(
        period=period,
        master_wh=m.energy(period),
        sockets_wh=sum(by_socket.values()),
        by_socket=by_socket,
        master_complete=m.covers(period),
        master_interpolation_span=m.interpolation_span(period),
        master_resets=m.resets_in(period),
        socket_resets=socket_resets,
    )


@dataclass(frozen=True, slots=True)
class DailyFigures:
    """One local calendar day of :func:`daily_series` (a report row)."""

    day: date
    figures: LossFigures

    @property
    def master_wh(self) -> int:
        return self.figures.master_wh

    @property
    def sockets_wh(self) -> int:
        return self.figures.sockets_wh

    @property
    def loss_wh(self) -> int:
        return self.figures.loss_wh

    @property
    def per_mille(self) -> int | None:
        return self.figures.per_mille

    def as_row(self) -> dict[str, object]:
        """Flat, JSON/CSV friendly (integers and strings only)."""
        return {
            "day": self.day.isoformat(),
            "master_wh": self.master_wh,
            "sockets_wh": self.sockets_wh,
            "loss_wh": self.loss_wh,
            "loss_per_mille": self.per_mille,
            "master_complete": self.figures.master_complete,
        }


def daily_series(
    master: CounterSeries | Iterable[CounterReading],
    sockets: Mapping[SocketKey, CounterSeries | Iterable[CounterReading]],
    first_day: date,
    last_day: date,
    tz: str | ZoneInfo = DEFAULT_TZ,
) -> list[DailyFigures]:
    """Per local day from ``first_day`` to ``last_day`` inclusive (midnight to midnight in
    ``tz``). Because counters are rounded at boundaries only, the days add up exactly to
    the figures of the whole range."""
    if last_day < first_day:
        raise ValueError(f"last_day {last_day} is before first_day {first_day}")
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    m = _series(master)
    ports = {key: _series(readings) for key, readings in sockets.items()}
    rows = []
    day = first_day
    while day <= last_day:
        following = day + timedelta(days=1)
        period = Period(datetime.combine(day, time(), tzinfo=zone),
                        datetime.combine(following, time(), tzinfo=zone))
        rows.append(DailyFigures(day, period_figures(m, ports, period)))
        day = following
    return rows


# --------------------------------------------------------------------------- detection


def _ratio_setting(name: str, value: object) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | Fraction):
        raise ConfigurationError(f"loss.{name} must be an int or Fraction (no floats)",
                                 field=name, value=repr(value))
    return Fraction(value)


@dataclass(frozen=True)
class LossConfig:
    """Thresholds of :func:`assess`. Ratios are ``Fraction``s of the master energy."""

    threshold: Fraction = Fraction(8, 100)
    """Loss above 8 % of the master energy opens an incident. Normal loss (cables, the
    piles' own 4G modems and boards) is a few per cent."""
    min_master_wh: int = 20_000
    """No ratio decision below 20 kWh: a CT-connected master meter may step in 0.4 kWh,
    i.e. ±0.8 kWh over a period = ±4 % of 20 kWh, half the threshold."""
    history_periods: int = 14
    """The median is taken over this many latest decision-grade periods."""
    min_history: int = 3
    """No jump decision with fewer decision-grade periods of history."""
    jump_factor: Fraction = Fraction(3)
    """A ratio above 3 × the history median is a jump..."""
    jump_floor: Fraction = Fraction(4, 100)
    """...if it is also above 4 % (3 × a tiny median is still normal)."""
    negative_tolerance: Fraction = Fraction(2, 100)
    """Sockets may exceed the master by 2 % of it (meter classes and resolution)..."""
    negative_min_wh: int = 1_000
    """...or by 1 kWh, whichever is more, before it is a meter fault."""
    max_interpolation_span: timedelta = timedelta(hours=1)
    """Master readings used at a boundary may be at most this far apart (read every 15
    min, so a few missed readings are tolerated)."""

    def __post_init__(self) -> None:
        for name in ("threshold", "jump_factor", "jump_floor", "negative_tolerance"):
            value = _ratio_setting(name, getattr(self, name))
            if value < 0:
                raise ConfigurationError(f"loss.{name} must not be negative", field=name)
            object.__setattr__(self, name, value)
        for name in ("min_master_wh", "history_periods", "min_history", "negative_min_wh"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigurationError(f"loss.{name} must be a non-negative integer",
                                         field=name, value=value)
        if self.min_history < 1 or self.history_periods < self.min_history:
            raise ConfigurationError("loss: need 1 <= min_history <= history_periods")


DEFAULT_LOSS_CONFIG: Final = LossConfig()


class LossVerdict(StrEnum):
    OK = "ok"
    INSUFFICIENT_DATA = "insufficient_data"
    SOCKETS_EXCEED_MASTER = "sockets_exceed_master"
    ABOVE_THRESHOLD = "above_threshold"
    JUMP = "jump"


_INCIDENT_VERDICTS: Final = frozenset(
    {LossVerdict.SOCKETS_EXCEED_MASTER, LossVerdict.ABOVE_THRESHOLD, LossVerdict.JUMP}
)


@dataclass(frozen=True)
class LossDecision:
    """Every verdict that applies, most important first, each with its reason."""

    verdicts: tuple[LossVerdict, ...]
    reasons: tuple[str, ...]
    figures: LossFigures
    history_median: Fraction | None = None
    history_used: int = 0

    @property
    def verdict(self) -> LossVerdict:
        return self.verdicts[0]

    @property
    def open_incident(self) -> bool:
        return any(v in _INCIDENT_VERDICTS for v in self.verdicts)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def _decision_grade(f: LossFigures, config: LossConfig) -> bool:
    span = f.master_interpolation_span
    return (f.master_complete and span is not None and span <= config.max_interpolation_span
            and f.master_wh >= config.min_master_wh)


def _pct(ratio: Fraction) -> str:
    return f"{per_mille(ratio) / 10:.1f} %"  # display only


def assess(
    figures: LossFigures,
    history: Sequence[LossFigures] = (),
    config: LossConfig = DEFAULT_LOSS_CONFIG,
) -> LossDecision:
    """Decide whether ``figures`` warrant an incident (rules in the module docstring).

    ``history`` is the community's earlier periods of the same length, oldest first;
    only decision-grade ones (complete master data, at least ``min_master_wh``) count.
    """
    f = figures
    span = f.master_interpolation_span
    if not f.master_complete or span is None:
        return LossDecision((LossVerdict.INSUFFICIENT_DATA,),
                            ("master meter readings do not bracket the period",), f)
    if span > config.max_interpolation_span:
        return LossDecision(
            (LossVerdict.INSUFFICIENT_DATA,),
            (f"master readings {span} apart at a boundary (max "
             f"{config.max_interpolation_span})",), f)

    verdicts: list[LossVerdict] = []
    reasons: list[str] = []
    excess = -f.loss_wh
    allowed = max(config.negative_tolerance * f.master_wh, Fraction(config.negative_min_wh))
    if excess > allowed:
        verdicts.append(LossVerdict.SOCKETS_EXCEED_MASTER)
        reasons.append(f"sockets {f.sockets_wh} Wh exceed master {f.master_wh} Wh by {excess} "
                       f"Wh (allowed {math.floor(allowed)} Wh): meter fault or tampering")
    if f.master_wh < config.min_master_wh:
        if not verdicts:
            return LossDecision(
                (LossVerdict.INSUFFICIENT_DATA,),
                (f"master {f.master_wh} Wh below the {config.min_master_wh} Wh minimum",), f)
        return LossDecision(tuple(verdicts), tuple(reasons), f)

    ratio = Fraction(f.loss_wh, f.master_wh)
    if ratio > config.threshold:
        verdicts.append(LossVerdict.ABOVE_THRESHOLD)
        reasons.append(f"loss {f.loss_wh} Wh of master {f.master_wh} Wh = {_pct(ratio)}, "
                       f"above {_pct(config.threshold)}")

    usable = [h.ratio for h in history if _decision_grade(h, config) and h.ratio is not None]
    usable = usable[-config.history_periods:]
    median = statistics.median(usable) if len(usable) >= config.min_history else None
    if median is not None:
        bar = config.jump_factor * max(Fraction(median), Fraction(0))
        if ratio > config.jump_floor and ratio > bar:
            verdicts.append(LossVerdict.JUMP)
            reasons.append(f"loss {_pct(ratio)} is above {config.jump_factor} × the median "
                           f"{_pct(Fraction(median))} of the last {len(usable)} periods and "
                           f"above {_pct(config.jump_floor)}")
    if not verdicts:
        verdicts.append(LossVerdict.OK)
        reasons.append(f"loss {_pct(ratio)} within limits")
    return LossDecision(tuple(verdicts), tuple(reasons), f,
                        None if median is None else Fraction(median), len(usable))


def assess_series(
    series: Sequence[LossFigures], config: LossConfig = DEFAULT_LOSS_CONFIG
) -> list[LossDecision]:
    """:func:`assess` each period against the periods before it (for reports and back-
    filling)."""
    return [assess(f, series[:i], config) for i, f in enumerate(series)]

"""Tariff engine: what one charging session costs under one tariff version.

Stdlib only (no Flask, SQLAlchemy or MQTT) so the same code can price a session in the web
app, in the MQTT bridge and in tests, and so the money rules can be reviewed in one place.
Tariff versioning (which version was in force when) lives in the database; this module
prices against a single version.

Units: money is integer fen (1 yuan = 100 fen), energy integer Wh, power integer W, and
times are timezone-aware ``datetime`` objects. Time-of-use periods are wall-clock times in
the tariff's ``tz``. No float is ever used for money.

Rounding -- the one rule, applied everywhere
--------------------------------------------
Every amount is computed exactly (``int`` / ``Fraction``) from the session's *cumulative*
meter profile and rounded to whole fen exactly once, at the end, half up (x.5 fen goes up).
Time is billed pro rata (to the microsecond) unless the tariff sets
``billing_unit_minutes``; then each started unit after the free minutes is billed in full.
The per-component amounts in :class:`Cost` are cut from that single rounding
(``energy = r(E)``, ``service = r(E + S) - r(E)``, ``time = r(E + S + T) - r(E + S)``), so
they always add up to the total. Limits and estimates derived from a sum of money round
energy and time DOWN, so they never let a session cost more than that money.

Because nothing is rounded per interval, the cost depends only on the cumulative meter
profile: splitting a session at any sample (or inserting an interpolated sample) never
changes the total. Incremental billing therefore means "new cumulative total minus total
already billed", never "price the new chunk on its own".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from functools import cached_property, lru_cache
from itertools import pairwise
from typing import Any, Final
from zoneinfo import ZoneInfo, available_timezones

__all__ = [
    "DEFAULT_MAX_SESSION_MINUTES",
    "DEFAULT_TZ",
    "MODES",
    "PERIOD_NAMES",
    "PER_HOUR",
    "PER_KWH",
    "POWER_TIER",
    "Cost",
    "MeterSample",
    "PowerBand",
    "ProfileError",
    "RunningCost",
    "SessionLimits",
    "Tariff",
    "TariffError",
    "TouPeriod",
    "allowance_for_coins",
    "cost_of",
    "describe",
    "estimate_remaining_seconds",
    "limits_for_balance",
    "price_between",
]

PER_KWH: Final = "per_kwh"
PER_HOUR: Final = "per_hour"
POWER_TIER: Final = "power_tier"
MODES: Final = (PER_KWH, PER_HOUR, POWER_TIER)
PERIOD_NAMES: Final = ("peak", "flat", "valley")

DEFAULT_TZ: Final = "Asia/Shanghai"
DEFAULT_MAX_SESSION_MINUTES: Final = 720

# Sanity bounds: they catch unit mistakes (yuan typed as fen twice) and keep arithmetic sane.
MAX_PRICE_FEN: Final = 100_000
MAX_POWER_W: Final = 100_000
MAX_SESSION_MINUTES_LIMIT: Final = 7 * 24 * 60
MINUTES_PER_DAY: Final = 24 * 60

_US_PER_SECOND: Final = 1_000_000
_US_PER_MINUTE: Final = 60 * _US_PER_SECOND
_US_PER_HOUR: Final = 60 * _US_PER_MINUTE
_WH_PER_KWH: Final = 1000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_HHMM: Final = re.compile(r"([0-9]{2}):([0-9]{2})")


class TariffError(ValueError):
    """A tariff definition is malformed. ``path`` names the field ("tou[2].start") so an
    API can point at it; ``reason`` says why."""

    def __init__(self, reason: str, path: str = "") -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


class ProfileError(ValueError):
    """Meter samples are unusable (naive time, running backwards, negative values)."""


# --------------------------------------------------------------------------- validation


def _fail(path: str, message: str) -> TariffError:
    return TariffError(message, path)


def _check_int(path: str, value: object, low: int, high: int) -> int:
    """Strict int check: bools and floats are refused so 1.5 yuan never sneaks in."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"expected an integer, got {type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise _fail(path, f"must be between {low} and {high}, got {value}")
    return value


def _check_str(path: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"expected a string, got {type(value).__name__}")
    return value


def _check_keys(
    path: str, data: object, allowed: Iterable[str], required: Iterable[str]
) -> Mapping[str, Any]:
    """Refuse non-objects, unknown keys and missing keys, naming them all."""
    if not isinstance(data, Mapping):
        raise _fail(path, f"expected an object, got {type(data).__name__}")
    allowed_set = set(allowed)
    unknown = sorted(repr(k) for k in data if k not in allowed_set)
    if unknown:
        raise _fail(
            path,
            f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed_set))}",
        )
    missing = sorted(k for k in required if k not in data)
    if missing:
        raise _fail(path, f"missing key(s) {', '.join(missing)}")
    return data


def _parse_hhmm(path: str, value: object, *, allow_24: bool) -> int:
    """'HH:MM' -> minute of day; '24:00' is accepted only as an end ("until midnight")."""
    text = _check_str(path, value)
    match = _HHMM.fullmatch(text)
    if match is None:
        raise _fail(path, f"expected 'HH:MM', got {text!r}")
    hours, minutes = int(match[1]), int(match[2])
    if allow_24 and hours == 24 and minutes == 0:
        return MINUTES_PER_DAY
    if hours > 23 or minutes > 59:
        raise _fail(path, f"not a time of day: {text!r}")
    return hours * 60 + minutes


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _check_tz(path: str, value: object) -> str:
    name = _check_str(path, value)
    if name not in _known_zones():
        raise _fail(path, f"unknown IANA time zone {name!r}")
    return name


# --------------------------------------------------------------------------- time helpers


def _us(at: datetime) -> int:
    """Microseconds since the epoch; all arithmetic is done on these UTC integers because
    aware datetimes sharing a tzinfo subtract by wall clock, which is wrong across DST."""
    return (at - _EPOCH) // timedelta(microseconds=1)


def _require_aware(name: str, at: object) -> datetime:
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {at!r}")
    return at


def _require_money(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be integer fen, got {type(value).__name__}")
    return value


def _offset_at(zone: ZoneInfo, at_us: int) -> timedelta | None:
    return (_EPOCH + timedelta(microseconds=at_us)).astimezone(zone).utcoffset()


@lru_cache(maxsize=4096)
def _day_boundaries(tz: str, day: date, starts: tuple[int, ...]) -> tuple[int, ...]:
    """Every instant (us) of local ``day`` where the wall-clock price may change: each
    period start (both occurrences when the clock is set back) and the DST jump itself.
    Between two of these the local minute never crosses a period start, so a piece of time
    can be priced by looking up its first instant."""
    zone = ZoneInfo(tz)
    cuts = set()
    for minute in starts:
        wall = datetime.combine(day, time(minute // 60, minute % 60))
        cuts.update(_us(wall.replace(tzinfo=zone, fold=fold)) for fold in (0, 1))
    low = _us(datetime.combine(day, time(), tzinfo=zone))
    high = _us(datetime.combine(day + timedelta(days=1), time(), tzinfo=zone))
    after = _offset_at(zone, high)
    if _offset_at(zone, low) != after:  # a DST change today: find its instant
        while high - low > 1:
            middle = (low + high) // 2
            if _offset_at(zone, middle) == after:
                high = middle
            else:
                low = middle
        cuts.add(high)
    return tuple(sorted(cuts))


def _require_power(power_w: object) -> int | None:
    if power_w is not None and (
        isinstance(power_w, bool) or not isinstance(power_w, int) or power_w < 0
    ):
        raise ValueError(f"power_w must be a non-negative int or None, got {power_w!r}")
    return power_w


def _round_half_up(amount: Fraction | int) -> int:
    return _round_half_up_ratio(amount.numerator, amount.denominator)


def _round_half_up_ratio(numerator: int, denominator: int) -> int:
    """numerator / denominator (denominator > 0) rounded half up, in integers."""
    return (2 * numerator + denominator) // (2 * denominator)


def _rational(text: str) -> int | Fraction:
    """ "n/d" back to an exact number; an int when d is 1 (the common case: see RunningCost)."""
    numerator, _, denominator = text.partition("/")
    if denominator in ("", "1"):
        return int(numerator)
    return Fraction(int(numerator), int(denominator))


# --------------------------------------------------------------------------- tariff model


@dataclass(frozen=True)
class TouPeriod:
    """One daily time-of-use period; ``end`` before ``start`` wraps past midnight."""

    start: str
    end: str
    name: str
    energy_fen_per_kwh: int

    _KEYS = ("start", "end", "name", "energy_fen_per_kwh")

    def __post_init__(self) -> None:
        _parse_hhmm("start", self.start, allow_24=False)
        _parse_hhmm("end", self.end, allow_24=True)
        if _check_str("name", self.name) not in PERIOD_NAMES:
            raise _fail("name", f"must be one of {', '.join(PERIOD_NAMES)}, got {self.name!r}")
        _check_int("energy_fen_per_kwh", self.energy_fen_per_kwh, 0, MAX_PRICE_FEN)

    @property
    def start_minute(self) -> int:
        return _parse_hhmm("start", self.start, allow_24=False)

    @property
    def length_minutes(self) -> int:
        """Minutes covered; equal start and end means the whole day."""
        end = _parse_hhmm("end", self.end, allow_24=True)
        return (end - self.start_minute) % MINUTES_PER_DAY or MINUTES_PER_DAY

    @classmethod
    def from_dict(cls, data: object) -> TouPeriod:
        d = _check_keys("", data, cls._KEYS, cls._KEYS)
        return cls(d["start"], d["end"], d["name"], d["energy_fen_per_kwh"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "name": self.name,
            "energy_fen_per_kwh": self.energy_fen_per_kwh,
        }


@dataclass(frozen=True)
class PowerBand:
    """Hourly price for a power band. A power belongs to the first band whose ``max_w`` it
    does not exceed, so 200 W is in 0-200 W: the boundary goes to the cheaper-looking,
    lower band, which is what the band labels on the pile suggest to the rider."""

    min_w: int
    max_w: int
    fen_per_hour: int

    _KEYS = ("min_w", "max_w", "fen_per_hour")

    def __post_init__(self) -> None:
        _check_int("min_w", self.min_w, 0, MAX_POWER_W)
        _check_int("max_w", self.max_w, 1, MAX_POWER_W)
        _check_int("fen_per_hour", self.fen_per_hour, 0, MAX_PRICE_FEN)
        if self.max_w <= self.min_w:
            raise _fail("max_w", f"must be above min_w ({self.min_w}), got {self.max_w}")

    @classmethod
    def from_dict(cls, data: object) -> PowerBand:
        d = _check_keys("", data, cls._KEYS, cls._KEYS)
        return cls(d["min_w"], d["max_w"], d["fen_per_hour"])

    def to_dict(self) -> dict[str, Any]:
        return {"min_w": self.min_w, "max_w": self.max_w, "fen_per_hour": self.fen_per_hour}


_COMMON_KEYS: Final = ("mode", "tz", "minimum_charge_fen", "free_minutes", "max_session_minutes")
_MODE_KEYS: Final = {
    PER_KWH: ("energy_fen_per_kwh", "tou", "service_fen_per_kwh"),
    PER_HOUR: ("fen_per_hour", "billing_unit_minutes"),
    POWER_TIER: ("power_bands", "billing_unit_minutes"),
}


@dataclass(frozen=True)
class Tariff:
    """One tariff version of one community. Construct with :meth:`from_dict` from stored
    JSON; the constructor validates too, so an invalid ``Tariff`` cannot exist.

    ``per_kwh`` needs exactly one of ``energy_fen_per_kwh`` (flat) or ``tou`` (periods);
    ``per_hour`` needs ``fen_per_hour``; ``power_tier`` needs ``power_bands``.
    ``billing_unit_minutes`` (time modes only): None bills by the microsecond; N bills every
    started N-minute unit after the free minutes in full (with power bands, a unit is priced
    at the highest band seen during it, so the cost never drops when power does).
    """

    mode: str
    tz: str = DEFAULT_TZ
    energy_fen_per_kwh: int | None = None
    tou: tuple[TouPeriod, ...] = ()
    service_fen_per_kwh: int = 0
    fen_per_hour: int | None = None
    power_bands: tuple[PowerBand, ...] = ()
    billing_unit_minutes: int | None = None
    minimum_charge_fen: int = 0
    free_minutes: int = 0
    max_session_minutes: int = DEFAULT_MAX_SESSION_MINUTES

    def __post_init__(self) -> None:
        mode = _check_str("mode", self.mode)
        if mode not in MODES:
            raise _fail("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
        _check_tz("tz", self.tz)
        _check_int("minimum_charge_fen", self.minimum_charge_fen, 0, MAX_PRICE_FEN)
        _check_int("free_minutes", self.free_minutes, 0, MINUTES_PER_DAY)
        _check_int("max_session_minutes", self.max_session_minutes, 1, MAX_SESSION_MINUTES_LIMIT)
        if not isinstance(self.tou, tuple):
            raise _fail("tou", "must be a tuple of TouPeriod")
        if not isinstance(self.power_bands, tuple):
            raise _fail("power_bands", "must be a tuple of PowerBand")
        self._check_unused(mode)
        if mode == PER_KWH:
            self._check_energy_prices()
        else:
            if self.billing_unit_minutes is not None:
                _check_int("billing_unit_minutes", self.billing_unit_minutes, 1, MINUTES_PER_DAY)
            if mode == PER_HOUR:
                if self.fen_per_hour is None:
                    raise _fail("fen_per_hour", "required in per_hour mode")
                _check_int("fen_per_hour", self.fen_per_hour, 0, MAX_PRICE_FEN)
            else:
                self._check_bands()

    def _check_unused(self, mode: str) -> None:
        """Fields of another mode must stay at their defaults: a stray price is a mistake."""
        defaults: dict[str, object] = {
            "energy_fen_per_kwh": None,
            "tou": (),
            "service_fen_per_kwh": 0,
            "fen_per_hour": None,
            "power_bands": (),
            "billing_unit_minutes": None,
        }
        for name, default in defaults.items():
            if name not in _MODE_KEYS[mode] and getattr(self, name) != default:
                raise _fail(name, f"not used in {mode} mode")

    def _check_energy_prices(self) -> None:
        _check_int("service_fen_per_kwh", self.service_fen_per_kwh, 0, MAX_PRICE_FEN)
        if (self.energy_fen_per_kwh is None) == (not self.tou):
            raise _fail("energy_fen_per_kwh", "give exactly one of energy_fen_per_kwh or tou")
        if self.energy_fen_per_kwh is not None:
            _check_int("energy_fen_per_kwh", self.energy_fen_per_kwh, 0, MAX_PRICE_FEN)
            return
        owner: list[int | None] = [None] * MINUTES_PER_DAY
        for index, period in enumerate(self.tou):
            if not isinstance(period, TouPeriod):
                raise _fail(f"tou[{index}]", "must be a TouPeriod")
            for offset in range(period.length_minutes):
                minute = (period.start_minute + offset) % MINUTES_PER_DAY
                other = owner[minute]
                if other is not None:
                    raise _fail(
                        f"tou[{index}]",
                        f"{period.start}-{period.end} overlaps tou[{other}] at {_hhmm(minute)}",
                    )
                owner[minute] = index
        if None in owner:
            gap = owner.index(None)
            raise _fail("tou", f"periods must cover the whole day; nothing covers {_hhmm(gap)}")

    def _check_bands(self) -> None:
        if not self.power_bands:
            raise _fail("power_bands", "required (at least one band) in power_tier mode")
        expected_min = 0
        for index, band in enumerate(self.power_bands):
            if not isinstance(band, PowerBand):
                raise _fail(f"power_bands[{index}]", "must be a PowerBand")
            if band.min_w != expected_min:
                raise _fail(
                    f"power_bands[{index}].min_w",
                    f"bands must be contiguous and ascending from 0 W: expected {expected_min},"
                    f" got {band.min_w}",
                )
            expected_min = band.max_w

    # ---- (de)serialisation

    @classmethod
    def from_dict(cls, data: object) -> Tariff:
        """Build from stored JSON; anything malformed raises :class:`TariffError`."""
        head = _check_keys("tariff", data, _COMMON_KEYS + sum(_MODE_KEYS.values(), ()), ["mode"])
        mode = _check_str("mode", head["mode"])
        if mode not in MODES:
            raise _fail("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
        required = {PER_KWH: [], PER_HOUR: ["fen_per_hour"], POWER_TIER: ["power_bands"]}[mode]
        d = _check_keys(f"tariff ({mode})", head, _COMMON_KEYS + _MODE_KEYS[mode], required)
        kwargs: dict[str, Any] = {k: v for k, v in d.items() if k not in ("tou", "power_bands")}
        if "tou" in d:
            kwargs["tou"] = _parse_list("tou", d["tou"], TouPeriod.from_dict)
        if "power_bands" in d:
            kwargs["power_bands"] = _parse_list(
                "power_bands", d["power_bands"], PowerBand.from_dict
            )
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able canonical form; ``Tariff.from_dict(t.to_dict()) == t``."""
        d: dict[str, Any] = {"mode": self.mode, "tz": self.tz}
        if self.mode == PER_KWH:
            if self.tou:
                d["tou"] = [period.to_dict() for period in self.tou]
            else:
                d["energy_fen_per_kwh"] = self.energy_fen_per_kwh
            d["service_fen_per_kwh"] = self.service_fen_per_kwh
        else:
            if self.mode == PER_HOUR:
                d["fen_per_hour"] = self.fen_per_hour
            else:
                d["power_bands"] = [band.to_dict() for band in self.power_bands]
            d["billing_unit_minutes"] = self.billing_unit_minutes
        d["minimum_charge_fen"] = self.minimum_charge_fen
        d["free_minutes"] = self.free_minutes
        d["max_session_minutes"] = self.max_session_minutes
        return d

    # ---- price look-ups

    @property
    def is_energy_based(self) -> bool:
        return self.mode == PER_KWH

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @cached_property
    def _price_by_minute(self) -> tuple[int, ...]:
        """Energy price for each minute of the local day (flat tariffs: the same 1440x)."""
        if not self.tou:
            return (self.energy_fen_per_kwh or 0,) * MINUTES_PER_DAY
        prices = [0] * MINUTES_PER_DAY
        for period in self.tou:
            for offset in range(period.length_minutes):
                prices[(period.start_minute + offset) % MINUTES_PER_DAY] = period.energy_fen_per_kwh
        return tuple(prices)

    @cached_property
    def _period_starts(self) -> tuple[int, ...]:
        return tuple(sorted({period.start_minute for period in self.tou}))

    @property
    def max_energy_fen_per_kwh(self) -> int:
        """Most expensive energy price of the day: what conservative limits assume."""
        self._require_mode(PER_KWH)
        return max(self._price_by_minute)

    def energy_price_at(self, at: datetime) -> int:
        """Energy price (fen/kWh, service fee excluded) in force at ``at``."""
        self._require_mode(PER_KWH)
        return self._price_at_us(_us(_require_aware("at", at)))

    def band_for(self, power_w: int) -> PowerBand | None:
        """Band for a measured power; None above the last band (abnormal for an e-bike:
        the caller decides whether to stop the session). Pricing uses the last band then."""
        self._require_mode(POWER_TIER)
        if _require_power(power_w) is None:
            raise ValueError("power_w is required")
        for band in self.power_bands:
            if power_w <= band.max_w:
                return band
        return None

    def hourly_rate_for(self, power_w: int | None) -> int:
        """Fen per hour charged at ``power_w`` (time modes). Unknown power (None) gives the
        highest band price, the conservative choice for limits."""
        if self.mode == PER_HOUR:
            return self.fen_per_hour or 0
        self._require_mode(POWER_TIER)
        if power_w is None:
            return max(band.fen_per_hour for band in self.power_bands)
        band = self.band_for(power_w)
        return (band or self.power_bands[-1]).fen_per_hour

    def _max_rate_up_to(self, power_w: int | None) -> int:
        """Highest hourly price any power <= power_w can incur (bands need not be sorted by
        price, and the real power may sit below the assumed one)."""
        if self.mode == PER_HOUR or _require_power(power_w) is None:
            return self.hourly_rate_for(power_w)
        rates = [b.fen_per_hour for b in self.power_bands if b.min_w < power_w or b.min_w == 0]
        return max(rates)

    def _require_mode(self, *modes: str) -> None:
        if self.mode not in modes:
            raise ValueError(f"not available for a {self.mode} tariff")

    def _price_at_us(self, at_us: int) -> int:
        if not self.tou:  # flat: the same price every minute, no local time needed
            return self.energy_fen_per_kwh or 0
        local = (_EPOCH + timedelta(microseconds=at_us)).astimezone(self.zone)
        return self._price_by_minute[local.hour * 60 + local.minute]

    def _energy_pieces(self, start_us: int, end_us: int) -> list[tuple[int, int, int]]:
        """Split [start, end] at period boundaries: (from_us, to_us, fen_per_kwh) pieces.
        A zero-length span gives one zero-length piece priced at that instant."""
        if not self.tou or start_us == end_us:
            return [(start_us, end_us, self._price_at_us(start_us))]
        first_day = (_EPOCH + timedelta(microseconds=start_us)).astimezone(self.zone).date()
        last_day = (_EPOCH + timedelta(microseconds=end_us)).astimezone(self.zone).date()
        cuts = [start_us]
        day = first_day
        while day <= last_day:
            cuts.extend(
                c
                for c in _day_boundaries(self.tz, day, self._period_starts)
                if start_us < c < end_us
            )
            day += timedelta(days=1)
        cuts.append(end_us)
        cuts.sort()
        return [(a, b, self._price_at_us(a)) for a, b in pairwise(cuts) if b > a]


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _parse_list(path: str, value: object, parse: Callable[[object], Any]) -> tuple[Any, ...]:
    """Parse a JSON list item by item, prefixing errors with the item's index."""
    if not isinstance(value, list | tuple):
        raise _fail(path, f"expected a list, got {type(value).__name__}")
    items = []
    for index, item in enumerate(value):
        try:
            items.append(parse(item))
        except TariffError as error:
            inner = f"{path}[{index}]" + (f".{error.path}" if error.path else "")
            raise TariffError(error.reason, inner) from None
    return tuple(items)


# --------------------------------------------------------------------------- metering


@dataclass(frozen=True)
class MeterSample:
    """One meter report: ``energy_wh`` is the pile's cumulative counter (not a delta) and
    ``power_w`` the power it reports for the interval that ends at ``at``."""

    at: datetime
    energy_wh: int
    power_w: int

    def __post_init__(self) -> None:
        if not isinstance(self.at, datetime) or self.at.utcoffset() is None:
            raise ProfileError(f"sample time must be timezone-aware, got {self.at!r}")
        for name in ("energy_wh", "power_w"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ProfileError(f"{name} must be a non-negative int, got {value!r}")

    # Worked out once per sample: the bridge prices every reading, and a session's start
    # sample takes part in every pricing of it (bench/ingest_profile.py).
    @cached_property
    def at_us(self) -> int:
        return _us(self.at)

    @cached_property
    def state(self) -> tuple[str, int, int]:
        """The sample in RunningCost.to_state: (ISO time, Wh, W), a JSON array."""
        return (self.at.isoformat(), self.energy_wh, self.power_w)


@dataclass(frozen=True)
class Cost:
    """A session's cost so far. ``total_fen = energy_fen + service_fen + time_fen +
    minimum_topup_fen``; ``energy_wh``/``seconds`` are what was metered (seconds floored)."""

    energy_fen: int
    service_fen: int
    time_fen: int
    minimum_topup_fen: int
    total_fen: int
    energy_wh: int
    seconds: int


@dataclass(frozen=True)
class RunningCost:
    """Exact running state of one session, for pricing reports as they arrive without
    re-reading all samples. Immutable: ``add`` returns a new state. Feeding samples in any
    chunking gives the same result as feeding them all at once.

    Energy of an interval is spread evenly over its duration, so it is attributed to the
    time-of-use periods (and to the free minutes) it spans pro rata by time. The power band
    of an interval is taken from its LATER sample: that is the report describing the
    interval, the interval can be priced as soon as it closes, and the start reading (taken
    before the relay closes, usually 0 W) never sets a price.
    """

    tariff: Tariff
    start: MeterSample
    last: MeterSample
    # Exact numbers: ints while every interval lies whole inside one price period (nearly
    # always), Fractions only once an interval was split pro rata; the ints keep the
    # bridge's per-reading pricing cheap (bench/ingest_profile.py).
    billable_wh: int | Fraction = 0
    priced_wh: int | Fraction = 0  # sum of billable Wh x fen/kWh
    billable_us: int = 0
    rate_us: int = 0  # sum of billed us x fen/h (pro rata or closed units)
    open_unit: int | None = None  # index of the last started billing unit
    open_unit_rate: int = 0  # highest fen/h seen in that unit

    @classmethod
    def begin(cls, tariff: Tariff, start: MeterSample) -> RunningCost:
        """Start a session at its first meter reading (taken at the start command)."""
        return cls(tariff, start, start)

    def add(self, samples: Iterable[MeterSample]) -> RunningCost:
        """Account for more samples, oldest first, each not before the previous one."""
        t = self.tariff
        free_end = self.start.at_us + t.free_minutes * _US_PER_MINUTE
        unit_us = (t.billing_unit_minutes or 0) * _US_PER_MINUTE
        billable_wh, priced_wh = self.billable_wh, self.priced_wh
        billable_us, rate_us = self.billable_us, self.rate_us
        open_unit, open_rate = self.open_unit, self.open_unit_rate
        previous = self.last
        previous_us = previous.at_us
        for sample in samples:
            if not isinstance(sample, MeterSample):
                raise ProfileError(f"expected MeterSample, got {type(sample).__name__}")
            at_us = sample.at_us
            if at_us < previous_us:
                raise ProfileError(f"sample at {sample.at} is before {previous.at}")
            delta_wh = sample.energy_wh - previous.energy_wh
            if delta_wh < 0:
                raise ProfileError(
                    f"energy counter went back from {previous.energy_wh} to {sample.energy_wh}"
                    f" Wh at {sample.at}; rebase counter resets before pricing"
                )
            if t.is_energy_based:
                if delta_wh:
                    wh, priced = _energy_share(t, previous_us, at_us, delta_wh, free_end)
                    billable_wh += wh
                    priced_wh += priced
            else:
                billed_from = max(previous_us, free_end)
                if at_us > billed_from:
                    rate = t.hourly_rate_for(sample.power_w)
                    billable_us += at_us - billed_from
                    if not unit_us:
                        rate_us += (at_us - billed_from) * rate
                    else:
                        first = (billed_from - free_end) // unit_us
                        last = (at_us - free_end - 1) // unit_us
                        if open_unit == first:
                            current = max(open_rate, rate)
                        else:
                            if open_unit is not None:
                                rate_us += unit_us * open_rate
                            current = rate
                        if last > first:
                            rate_us += unit_us * current + (last - first - 1) * unit_us * rate
                            current = rate
                        open_unit, open_rate = last, current
            previous, previous_us = sample, at_us
        return RunningCost(
            t,
            self.start,
            previous,
            billable_wh,
            priced_wh,
            billable_us,
            rate_us,
            open_unit,
            open_rate,
        )

    @property
    def cost(self) -> Cost:
        """Round once, half up; cut components from that one rounding (see module doc)."""
        t = self.tariff
        open_part = 0 if self.open_unit is None else self.open_unit_rate
        unit_us = (t.billing_unit_minutes or 0) * _US_PER_MINUTE
        time_us = self.rate_us + unit_us * open_part  # fen/h x us
        if isinstance(self.priced_wh, int) and isinstance(self.billable_wh, int):
            # the same three roundings in integers, over one common denominator
            energy_n = self.priced_wh
            service_n = energy_n + self.billable_wh * t.service_fen_per_kwh
            energy_fen = _round_half_up_ratio(energy_n, _WH_PER_KWH)
            with_service = _round_half_up_ratio(service_n, _WH_PER_KWH)
            subtotal = _round_half_up_ratio(service_n * _US_PER_HOUR + time_us * _WH_PER_KWH,
                                            _WH_PER_KWH * _US_PER_HOUR)
        else:
            energy = Fraction(self.priced_wh) / _WH_PER_KWH
            service = self.billable_wh * Fraction(t.service_fen_per_kwh, _WH_PER_KWH)
            time_cost = Fraction(time_us, _US_PER_HOUR)
            energy_fen = _round_half_up(energy)
            with_service = _round_half_up(energy + service)
            subtotal = _round_half_up(energy + service + time_cost)
        chargeable = self.billable_wh > 0 if t.is_energy_based else self.billable_us > 0
        topup = max(0, t.minimum_charge_fen - subtotal) if chargeable else 0
        return Cost(
            energy_fen=energy_fen,
            service_fen=with_service - energy_fen,
            time_fen=subtotal - with_service,
            minimum_topup_fen=topup,
            total_fen=subtotal + topup,
            energy_wh=self.last.energy_wh - self.start.energy_wh,
            seconds=(self.last.at_us - self.start.at_us) // _US_PER_SECOND,
        )

    def to_state(self) -> dict[str, Any]:
        """A JSON-able snapshot (Fractions as "n/d"), so a session's running cost
        survives between meter reports and restarts without re-reading its samples."""

        return {
            "start": self.start.state, "last": self.last.state,
            "billable_wh": f"{self.billable_wh.numerator}/{self.billable_wh.denominator}",
            "priced_wh": f"{self.priced_wh.numerator}/{self.priced_wh.denominator}",
            "billable_us": self.billable_us, "rate_us": self.rate_us,
            "open_unit": self.open_unit, "open_unit_rate": self.open_unit_rate,
        }

    @classmethod
    def from_state(cls, tariff: Tariff, state: Mapping[str, Any]) -> RunningCost:
        def sample(raw: list[Any]) -> MeterSample:
            return MeterSample(datetime.fromisoformat(raw[0]), int(raw[1]), int(raw[2]))

        return cls(
            tariff, sample(state["start"]), sample(state["last"]),
            _rational(state["billable_wh"]), _rational(state["priced_wh"]),
            int(state["billable_us"]), int(state["rate_us"]), state["open_unit"],
            int(state["open_unit_rate"]),
        )


def _energy_share(
    tariff: Tariff, start_us: int, end_us: int, delta_wh: int, free_end: int
) -> tuple[Fraction, Fraction]:
    """(billable Wh, billable Wh x fen/kWh) of one interval, spread evenly over its time:
    ints unless the interval is split between periods or by the end of free minutes."""
    billable_wh: int | Fraction = 0
    priced_wh: int | Fraction = 0
    duration = end_us - start_us
    for piece_start, piece_end, price in tariff._energy_pieces(start_us, end_us):
        if duration == 0:  # a jump with no elapsed time belongs to that instant
            if piece_start >= free_end:
                billable_wh += delta_wh
                priced_wh += delta_wh * price
            continue
        billed_from = max(piece_start, free_end)
        if piece_end - billed_from == duration:  # the whole interval: exactly delta_wh
            billable_wh += delta_wh
            priced_wh += delta_wh * price
        elif piece_end > billed_from:
            share = Fraction(delta_wh * (piece_end - billed_from), duration)
            billable_wh += share
            priced_wh += share * price
    return billable_wh, priced_wh


def cost_of(tariff: Tariff, profile: Sequence[MeterSample]) -> Cost:
    """Cost of a session from its whole cumulative profile; ``profile[0]`` is the reading
    taken when the session started."""
    if not profile:
        raise ProfileError("a profile needs at least the session's start reading")
    return RunningCost.begin(tariff, profile[0]).add(profile[1:]).cost


def price_between(
    tariff: Tariff, start_sample: MeterSample, samples: Iterable[MeterSample]
) -> Cost:
    """Cumulative cost from the session's start reading through the last of ``samples``.

    Call it again as reports arrive and bill ``new.total_fen - previous.total_fen``; never
    price a chunk starting mid-session on its own (free minutes, billing units, minimum
    charge and rounding all depend on the session start). :class:`RunningCost` does the
    same without keeping old samples.
    """
    return RunningCost.begin(tariff, start_sample).add(samples).cost


# --------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class SessionLimits:
    """Limits sent with the start command so the pile stops on its own, even offline.
    ``max_energy_wh`` None means money does not limit energy (time modes, free energy).
    All zero means the money does not even cover the minimum charge: do not start."""

    max_amount_fen: int
    max_energy_wh: int | None
    max_minutes: int


def limits_for_balance(
    tariff: Tariff, available_fen: int, assumed_power_w: int | None, at: datetime
) -> SessionLimits:
    """Largest limits such that any session staying within them costs <= ``available_fen``.

    per_kwh: energy is bounded at the day's most expensive energy price plus service fee
    (so ToU cannot surprise us whenever the session runs; ``at`` therefore does not change
    the result today); minutes are just ``max_session_minutes``. Time modes: minutes from
    the highest price any power up to ``assumed_power_w`` can incur (all bands if None), so
    the guarantee holds while the measured power stays at or below the assumed power. Free
    minutes are added on top; billing units count whole units only. Rounded down.
    """
    _require_aware("at", at)
    available = _require_money("available_fen", available_fen)
    if available < 0 or available < tariff.minimum_charge_fen:
        return SessionLimits(0, 0, 0)
    cap = tariff.max_session_minutes
    if tariff.is_energy_based:
        per_kwh = tariff.max_energy_fen_per_kwh + tariff.service_fen_per_kwh
        max_wh = None if per_kwh == 0 else available * _WH_PER_KWH // per_kwh
        return SessionLimits(available, max_wh, cap)
    rate = tariff._max_rate_up_to(assumed_power_w)
    if rate == 0:
        return SessionLimits(available, None, cap)
    if tariff.billing_unit_minutes is None:
        paid_minutes = available * 60 // rate
    else:
        unit = tariff.billing_unit_minutes
        paid_minutes = available * 60 // (unit * rate) * unit
    return SessionLimits(available, None, min(cap, tariff.free_minutes + paid_minutes))


def allowance_for_coins(tariff: Tariff, amount_fen: int, at: datetime) -> SessionLimits:
    """What inserted coins buy, with the same conservative rules as a balance. The pile
    does not report the bike's power before it starts, so power bands assume the highest
    price. Coins below the minimum charge buy nothing (the pile should refuse them)."""
    return limits_for_balance(tariff, amount_fen, None, at)


def estimate_remaining_seconds(
    tariff: Tariff, available_fen: int, spent_fen: int, power_w: int | None, at: datetime
) -> int | None:
    """Seconds the session can go on at ``power_w`` with the money left (rounded down).

    For the "remaining time" shown on the phone. ``spent_fen`` is the cost so far (e.g.
    ``Cost.total_fen``). None when nothing would ever run out: power unknown/zero in
    per_kwh mode, power unknown in power_tier mode, or a zero price. Time modes bill time
    even at 0 W (power_tier at the lowest band), so an estimate exists there. ToU prices
    ahead are followed period by period; free minutes are ignored (the estimate can only
    be short). Capped at ``max_session_minutes`` because no session lasts longer.
    """
    _require_aware("at", at)
    left = _require_money("available_fen", available_fen) - _require_money("spent_fen", spent_fen)
    horizon_us = tariff.max_session_minutes * _US_PER_MINUTE
    _require_power(power_w)
    if tariff.is_energy_based:
        if not power_w:
            return None
        if tariff.max_energy_fen_per_kwh + tariff.service_fen_per_kwh == 0:
            return None
        if left <= 0:
            return 0
        used_us = _energy_runway_us(tariff, Fraction(left), power_w, _us(at), horizon_us)
        return used_us // _US_PER_SECOND
    if power_w is None and tariff.mode == POWER_TIER:
        return None
    rate = tariff.hourly_rate_for(power_w)
    if rate == 0:
        return None
    if left <= 0:
        return 0
    if tariff.billing_unit_minutes is None:
        runway_us = left * _US_PER_HOUR // rate
    else:
        unit = tariff.billing_unit_minutes
        runway_us = left * 60 // (unit * rate) * unit * _US_PER_MINUTE
    return min(runway_us, horizon_us) // _US_PER_SECOND


def _energy_runway_us(
    tariff: Tariff, money: Fraction, power_w: int, start_us: int, horizon_us: int
) -> int:
    """Walk the ToU periods ahead at constant power until the money is spent."""
    end_us = start_us + horizon_us
    service = tariff.service_fen_per_kwh
    for piece_start, piece_end, price in tariff._energy_pieces(start_us, end_us):
        # fen per microsecond at this price: W x fen/kWh / (1000 Wh/kWh x us/h)
        fen_per_us = Fraction(power_w * (price + service), _WH_PER_KWH * _US_PER_HOUR)
        piece_cost = fen_per_us * (piece_end - piece_start)
        if piece_cost > money:
            return piece_start - start_us + int(money / fen_per_us)
        money -= piece_cost
    return horizon_us


# --------------------------------------------------------------------------- in words

_PERIOD_WORDS: Final = {"peak": "峰", "flat": "平", "valley": "谷"}


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d} 元"


def describe(tariff: Tariff) -> list[str]:
    """The price list as a resident reads it at the pile (Chinese, one line per rule)."""
    lines: list[str] = []
    if tariff.mode == PER_KWH:
        if tariff.tou:
            lines += [f"{_PERIOD_WORDS[p.name]}时段 {p.start}–{p.end}：电费 "
                      f"{_yuan(p.energy_fen_per_kwh)}/度" for p in tariff.tou]
        else:
            lines.append(f"电费 {_yuan(tariff.energy_fen_per_kwh or 0)}/度")
        if tariff.service_fen_per_kwh:
            lines.append(f"服务费 {_yuan(tariff.service_fen_per_kwh)}/度")
    elif tariff.mode == PER_HOUR:
        lines.append(f"按时长 {_yuan(tariff.fen_per_hour or 0)}/小时")
    else:
        lines += [f"功率 {b.min_w}–{b.max_w} W：{_yuan(b.fen_per_hour)}/小时"
                  for b in tariff.power_bands]
    if tariff.billing_unit_minutes:
        lines.append(f"每 {tariff.billing_unit_minutes} 分钟计费一次，不足按整段计")
    if tariff.free_minutes:
        lines.append(f"前 {tariff.free_minutes} 分钟免费")
    if tariff.minimum_charge_fen:
        lines.append(f"每次最低 {_yuan(tariff.minimum_charge_fen)}")
    return lines

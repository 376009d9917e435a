"""Tariff engine: hand-worked examples first, then properties.

Every hand-worked example writes its arithmetic in a comment; prices are fen, energy Wh.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.domain.tariff import (
    PERIOD_NAMES,
    Cost,
    MeterSample,
    PowerBand,
    ProfileError,
    RunningCost,
    SessionLimits,
    Tariff,
    TariffError,
    allowance_for_coins,
    cost_of,
    estimate_remaining_seconds,
    limits_for_balance,
    price_between,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")


def at(hour: int, minute: int = 0, second: int = 0, *, day: int = 3) -> datetime:
    """A wall-clock time in Shanghai on 2025-03-<day>."""
    return datetime(2025, 3, day, hour, minute, second, tzinfo=SHANGHAI)


def s(when: datetime, energy_wh: int = 0, power_w: int = 0) -> MeterSample:
    return MeterSample(when, energy_wh, power_w)


def later(start: datetime, minutes: float) -> datetime:
    return start + timedelta(minutes=minutes)


def plus(when: datetime, delta: timedelta) -> datetime:
    """Elapsed-time arithmetic: aware datetimes sharing a zone add by wall clock, which
    would make a New York profile jump back an hour across a DST change."""
    return (when.astimezone(UTC) + delta).astimezone(when.tzinfo)


FLAT_KWH = Tariff.from_dict(
    {"mode": "per_kwh", "energy_fen_per_kwh": 60, "service_fen_per_kwh": 40}
)

TOU_DAY = Tariff.from_dict(
    {
        "mode": "per_kwh",
        "tz": "Asia/Shanghai",
        "tou": [
            {"start": "23:00", "end": "07:00", "name": "valley", "energy_fen_per_kwh": 30},
            {"start": "07:00", "end": "10:00", "name": "flat", "energy_fen_per_kwh": 60},
            {"start": "10:00", "end": "12:00", "name": "peak", "energy_fen_per_kwh": 100},
            {"start": "12:00", "end": "18:00", "name": "flat", "energy_fen_per_kwh": 60},
            {"start": "18:00", "end": "23:00", "name": "peak", "energy_fen_per_kwh": 100},
        ],
        "service_fen_per_kwh": 10,
    }
)

TOU_MIDNIGHT = Tariff.from_dict(
    {
        "mode": "per_kwh",
        "tou": [
            {"start": "00:00", "end": "06:00", "name": "valley", "energy_fen_per_kwh": 20},
            {"start": "06:00", "end": "18:00", "name": "flat", "energy_fen_per_kwh": 50},
            {"start": "18:00", "end": "24:00", "name": "peak", "energy_fen_per_kwh": 80},
        ],
    }
)

BANDS = [
    {"min_w": 0, "max_w": 200, "fen_per_hour": 100},
    {"min_w": 200, "max_w": 400, "fen_per_hour": 150},
    {"min_w": 400, "max_w": 800, "fen_per_hour": 200},
    {"min_w": 800, "max_w": 1000, "fen_per_hour": 300},
]
TIERED = Tariff.from_dict({"mode": "power_tier", "power_bands": BANDS})


def hourly(**options: Any) -> Tariff:
    return Tariff.from_dict({"mode": "per_hour", "fen_per_hour": 120, **options})


def kwh(price: int, **options: Any) -> Tariff:
    return Tariff.from_dict({"mode": "per_kwh", "energy_fen_per_kwh": price, **options})


# --------------------------------------------------------------------------- per kWh


def test_flat_energy_price_plus_service_fee() -> None:
    # 1234 Wh: energy 1.234 kWh x 60 = 74.04 fen, service 1.234 x 40 = 49.36 fen,
    # exact total 123.40 -> 123 fen. Components cut from the one rounding:
    # energy r(74.04) = 74, service r(123.40) - 74 = 49.
    cost = cost_of(FLAT_KWH, [s(at(8)), s(at(9), 600, 300), s(at(10), 1234, 300)])
    assert cost == Cost(
        energy_fen=74,
        service_fen=49,
        time_fen=0,
        minimum_topup_fen=0,
        total_fen=123,
        energy_wh=1234,
        seconds=7200,
    )


def test_energy_counter_need_not_start_at_zero() -> None:
    # The meter is cumulative: 50_000 -> 51_000 Wh is 1 kWh: 60 + 40 = 100 fen.
    assert cost_of(FLAT_KWH, [s(at(8), 50_000), s(at(9), 51_000)]).total_fen == 100


def test_rounding_happens_once_at_the_end() -> None:
    # Two intervals of 5 Wh at 100 fen/kWh are 0.5 fen each. Rounding each would give
    # 1 + 1 = 2 fen; rounding the cumulative 1.0 fen once gives 1 fen.
    tariff = kwh(100)
    profile = [s(at(8)), s(at(8, 1), 5), s(at(8, 2), 10)]
    assert cost_of(tariff, profile).total_fen == 1


@pytest.mark.parametrize(
    ("energy_wh", "expected_fen"),
    [
        (14, 1),  # 1.4 fen -> 1
        (15, 2),  # 1.5 fen -> 2 (half up)
        (25, 3),  # 2.5 fen -> 3 (half up, not to even)
        (26, 3),  # 2.6 fen -> 3
    ],
)
def test_rounding_is_half_up(energy_wh: int, expected_fen: int) -> None:
    # energy_wh x 100 fen/kWh / 1000
    assert cost_of(kwh(100), [s(at(8)), s(at(9), energy_wh)]).total_fen == expected_fen


def test_components_always_add_up_to_total() -> None:
    # energy 5 Wh x 100 = 0.5 fen, service 5 Wh x 100 = 0.5 fen: exact 1.0 fen.
    # Rounding components separately would show 1 + 1 = 2; cut from one rounding:
    # energy r(0.5) = 1, service r(1.0) - 1 = 0, total 1.
    tariff = kwh(100, service_fen_per_kwh=100)
    cost = cost_of(tariff, [s(at(8)), s(at(9), 5)])
    assert (cost.energy_fen, cost.service_fen, cost.total_fen) == (1, 0, 1)


# --------------------------------------------------------------------------- time of use


def test_tou_interval_spanning_a_period_boundary() -> None:
    # 09:30-10:30, 1000 Wh spread evenly: 30 min flat, 30 min peak.
    # energy: 500 Wh x 60 = 30 fen + 500 Wh x 100 = 50 fen = 80 fen
    # service: 1000 Wh x 10 = 10 fen; total 90 fen.
    cost = cost_of(TOU_DAY, [s(at(9, 30)), s(at(10, 30), 1000, 1000)])
    assert (cost.energy_fen, cost.service_fen, cost.total_fen) == (80, 10, 90)


def test_tou_wrapping_valley_across_midnight() -> None:
    # 22:30 -> 01:30 next day, 1800 Wh over 180 min = 10 Wh/min.
    # 22:30-23:00 peak: 300 Wh x 100 = 30 fen; 23:00-01:30 valley: 1500 Wh x 30 = 45 fen
    # energy 75 fen; service 1800 Wh x 10 = 18 fen; total 93 fen.
    profile = [s(at(22, 30)), s(at(1, 30, day=4), 1800, 600)]
    cost = cost_of(TOU_DAY, profile)
    assert (cost.energy_fen, cost.service_fen, cost.total_fen) == (75, 18, 93)


def test_tou_boundary_at_midnight_with_samples_in_utc() -> None:
    # 15:00-17:00 UTC is 23:00-01:00 Shanghai. 1200 Wh over 2 h:
    # 600 Wh peak x 80 = 48 fen; 600 Wh valley x 20 = 12 fen; total 60 fen.
    start = datetime(2025, 3, 3, 15, 0, tzinfo=UTC)
    profile = [s(start), s(start + timedelta(hours=2), 1200, 600)]
    assert cost_of(TOU_MIDNIGHT, profile).total_fen == 60


def test_tou_prices_each_interval_by_its_own_time() -> None:
    # Samples at 05:00, 07:00 (100 Wh), 08:00 (400 Wh): the first interval is valley,
    # the second flat. 100 x 30 = 3 fen + 300 x 60 = 18 fen = 21 fen energy;
    # service 400 x 10 = 4 fen. Total 25 fen.
    profile = [s(at(5)), s(at(7), 100, 50), s(at(8), 400, 300)]
    cost = cost_of(TOU_DAY, profile)
    assert (cost.energy_fen, cost.service_fen, cost.total_fen) == (21, 4, 25)


def test_energy_price_at_uses_local_wall_clock() -> None:
    assert TOU_DAY.energy_price_at(at(9, 59)) == 60
    assert TOU_DAY.energy_price_at(at(10)) == 100
    assert TOU_DAY.energy_price_at(datetime(2025, 3, 3, 15, 30, tzinfo=UTC)) == 30  # 23:30
    assert TOU_DAY.max_energy_fen_per_kwh == 100


# --------------------------------------------------------------------------- per hour


def test_per_hour_is_pro_rata_by_default() -> None:
    # 95 min x 120 fen/h = 190 fen.
    assert cost_of(hourly(), [s(at(8)), s(later(at(8), 95))]).total_fen == 190


def test_per_hour_pro_rata_to_the_second_rounded_half_up() -> None:
    # 37 s x 120 / 3600 = 1.233 fen -> 1; 45 s -> 1.5 fen -> 2.
    assert cost_of(hourly(), [s(at(8)), s(at(8, 0, 37))]).total_fen == 1
    assert cost_of(hourly(), [s(at(8)), s(at(8, 0, 45))]).total_fen == 2


def test_per_hour_free_minutes() -> None:
    # 95 min with the first 15 free: 80 min x 120 / 60 = 160 fen.
    cost = cost_of(hourly(free_minutes=15), [s(at(8)), s(later(at(8), 95))])
    assert (cost.time_fen, cost.total_fen, cost.seconds) == (160, 160, 95 * 60)


def test_per_hour_billing_units_bill_each_started_unit() -> None:
    # 30-min units at 120 fen/h = 60 fen per unit.
    # 95 min -> 4 started units = 240 fen; exactly 90 min -> 3 units = 180 fen.
    tariff = hourly(billing_unit_minutes=30)
    assert cost_of(tariff, [s(at(8)), s(later(at(8), 95))]).total_fen == 240
    assert cost_of(tariff, [s(at(8)), s(later(at(8), 90))]).total_fen == 180
    # Free minutes come first: 95 - 15 = 80 billable min -> 3 started units = 180 fen.
    tariff = hourly(billing_unit_minutes=30, free_minutes=15)
    assert cost_of(tariff, [s(at(8)), s(later(at(8), 95))]).total_fen == 180


# --------------------------------------------------------------------------- power tier


def test_band_for_boundaries_and_out_of_range() -> None:
    assert TIERED.band_for(0) == PowerBand(0, 200, 100)
    assert TIERED.band_for(200) == PowerBand(0, 200, 100)  # boundary -> lower band
    assert TIERED.band_for(201) == PowerBand(200, 400, 150)
    assert TIERED.band_for(1000) == PowerBand(800, 1000, 300)
    assert TIERED.band_for(1001) is None
    assert TIERED.hourly_rate_for(1001) == 300  # priced at the last band
    assert TIERED.hourly_rate_for(None) == 300  # unknown: the highest price


def test_power_tier_with_changing_power_uses_each_intervals_later_sample() -> None:
    # 08:00 0 W (start reading), 08:30 350 W, 09:30 180 W, 09:40 900 W.
    # 08:00-08:30 at 350 W band 150 fen/h: 0.5 h x 150 = 75 fen
    # 08:30-09:30 at 180 W band 100 fen/h: 1 h x 100 = 100 fen
    # 09:30-09:40 at 900 W band 300 fen/h: 1/6 h x 300 = 50 fen; total 225 fen.
    profile = [s(at(8)), s(at(8, 30), 100, 350), s(at(9, 30), 300, 180), s(at(9, 40), 450, 900)]
    cost = cost_of(TIERED, profile)
    assert (cost.time_fen, cost.total_fen, cost.energy_wh) == (225, 225, 450)


def test_power_tier_above_last_band_is_priced_at_last_band() -> None:
    # 1 h at 1500 W (abnormal): last band 300 fen/h -> 300 fen.
    assert cost_of(TIERED, [s(at(8)), s(at(9), 1500, 1500)]).total_fen == 300


def test_power_tier_billing_units_take_the_highest_band_in_each_unit() -> None:
    # Same profile, 60-min units from 08:00.
    # unit 08:00-09:00: 150 fen/h and 100 fen/h seen -> 150 fen
    # unit 09:00-10:00 (started): 100 fen/h and 300 fen/h seen -> 300 fen; total 450 fen.
    tariff = Tariff.from_dict(
        {"mode": "power_tier", "power_bands": BANDS, "billing_unit_minutes": 60}
    )
    profile = [s(at(8)), s(at(8, 30), 100, 350), s(at(9, 30), 300, 180), s(at(9, 40), 450, 900)]
    assert cost_of(tariff, profile).total_fen == 450


# --------------------------------------------------------------------------- free minutes


def test_energy_within_free_minutes_is_free() -> None:
    # 10 free minutes, 0-20 min 600 Wh evenly: 300 Wh free, 300 Wh x 100 = 30 fen.
    tariff = kwh(100, free_minutes=10)
    assert cost_of(tariff, [s(at(8)), s(at(8, 20), 600, 900)]).total_fen == 30


def test_free_window_ends_inside_an_interval() -> None:
    # 0-5 min 200 Wh (all free); 5-20 min 400 Wh with 5 of its 15 min free:
    # billable 400 x 10/15 = 266.67 Wh x 100 fen/kWh = 26.67 fen -> 27 fen.
    tariff = kwh(100, free_minutes=10)
    profile = [s(at(8)), s(at(8, 5), 200, 900), s(at(8, 20), 600, 900)]
    assert cost_of(tariff, profile).total_fen == 27


# --------------------------------------------------------------------------- minimum charge


def test_minimum_charge_tops_up_a_small_session() -> None:
    # 50 Wh x 100 = 5 fen < 100 fen minimum: topped up by 95 fen.
    cost = cost_of(kwh(100, minimum_charge_fen=100), [s(at(8)), s(at(8, 5), 50, 600)])
    assert (cost.energy_fen, cost.minimum_topup_fen, cost.total_fen) == (5, 95, 100)


def test_minimum_charge_applies_to_time_modes() -> None:
    # 1 min x 120 / 60 = 2 fen, minimum 100 fen.
    cost = cost_of(hourly(minimum_charge_fen=100), [s(at(8)), s(at(8, 1))])
    assert (cost.time_fen, cost.minimum_topup_fen, cost.total_fen) == (2, 98, 100)


def test_minimum_charge_not_applied_when_nothing_was_consumed() -> None:
    assert cost_of(kwh(100, minimum_charge_fen=100), [s(at(8))]).total_fen == 0
    assert cost_of(hourly(minimum_charge_fen=100), [s(at(8)), s(at(8))]).total_fen == 0
    # Energy mode: plugged in an hour, nothing drawn -> nothing consumed -> 0.
    assert cost_of(kwh(100, minimum_charge_fen=100), [s(at(8)), s(at(9))]).total_fen == 0
    # Unplugged within the free minutes: free, minimum charge included.
    tariff = kwh(100, minimum_charge_fen=100, free_minutes=10)
    assert cost_of(tariff, [s(at(8)), s(at(8, 5), 100, 1000)]).total_fen == 0
    assert cost_of(hourly(minimum_charge_fen=100, free_minutes=10), [s(at(8)), s(at(8, 9))]) == (
        Cost(0, 0, 0, 0, 0, 0, 540)
    )


# --------------------------------------------------------------------------- incremental


def test_incremental_billing_by_difference_of_cumulative_totals() -> None:
    # Each 5 Wh report at 100 fen/kWh adds 0.5 fen: cumulative 0.5 -> 1, 1.0 -> 1,
    # 1.5 -> 2, 2.0 -> 2. Increments billed 1, 0, 1, 0 sum to the whole-session 2 fen.
    tariff = kwh(100)
    start = s(at(8))
    reports = [s(later(at(8), i), 5 * i, 300) for i in range(1, 5)]
    totals = [price_between(tariff, start, reports[:i]).total_fen for i in range(1, 5)]
    assert totals == [1, 1, 2, 2]
    running = RunningCost.begin(tariff, start)
    billed = 0
    for report in reports:
        running = running.add([report])
        billed += running.cost.total_fen - billed
    assert billed == cost_of(tariff, [start, *reports]).total_fen == 2


def test_inserting_an_interpolated_sample_changes_nothing() -> None:
    # 09:30-10:30 1000 Wh at 1000 W, or the same with a 10:00 / 500 Wh reading in between.
    coarse = [s(at(9, 30)), s(at(10, 30), 1000, 1000)]
    fine = [s(at(9, 30)), s(at(10), 500, 1000), s(at(10, 30), 1000, 1000)]
    assert cost_of(TOU_DAY, coarse) == cost_of(TOU_DAY, fine)


def test_bad_profiles_raise_profile_error() -> None:
    with pytest.raises(ProfileError, match="before"):
        cost_of(FLAT_KWH, [s(at(9)), s(at(8), 10)])
    with pytest.raises(ProfileError, match="went back"):
        cost_of(FLAT_KWH, [s(at(8), 100), s(at(9), 10)])
    with pytest.raises(ProfileError, match="at least"):
        cost_of(FLAT_KWH, [])
    with pytest.raises(ProfileError, match="timezone-aware"):
        MeterSample(datetime(2025, 3, 3, 8), 0, 0)
    with pytest.raises(ProfileError, match="non-negative"):
        MeterSample(at(8), -1, 0)


# --------------------------------------------------------------------------- limits


def test_limits_per_kwh_use_the_most_expensive_period() -> None:
    # Peak 100 + service 10 = 110 fen/kWh; 1000 fen -> 1000 x 1000 / 110 = 9090.9 -> 9090 Wh
    # (even all at peak: 9090 x 110 / 1000 = 999.9 fen <= 1000). Minutes: the 720 cap.
    assert limits_for_balance(TOU_DAY, 1000, 400, at(3)) == SessionLimits(1000, 9090, 720)


def test_limits_per_hour_add_free_minutes_and_round_down() -> None:
    # 500 fen / 120 fen/h = 250 min, plus 15 free = 265 min.
    assert limits_for_balance(hourly(free_minutes=15), 500, None, at(8)) == SessionLimits(
        500, None, 265
    )
    # 30-min units cost 60 fen: 500 // 60 = 8 units = 240 min, + 15 free = 255 min.
    tariff = hourly(free_minutes=15, billing_unit_minutes=30)
    assert limits_for_balance(tariff, 500, None, at(8)).max_minutes == 255
    # 501 fen buys 250.5 min -> 250 min (rounded down), capped at max_session_minutes.
    assert limits_for_balance(hourly(), 501, None, at(8)).max_minutes == 250
    assert limits_for_balance(hourly(max_session_minutes=60), 501, None, at(8)).max_minutes == 60


def test_limits_power_tier_by_assumed_band_or_highest() -> None:
    # 350 W -> the 200-400 W band or below: at most 150 fen/h; 300 fen -> 120 min.
    assert limits_for_balance(TIERED, 300, 350, at(8)).max_minutes == 120
    # Unknown power: highest band 300 fen/h; 300 fen -> 60 min. Coins do the same.
    assert limits_for_balance(TIERED, 300, None, at(8)).max_minutes == 60
    assert allowance_for_coins(TIERED, 300, at(8)) == SessionLimits(300, None, 60)


def test_limits_zero_when_money_does_not_cover_the_minimum_charge() -> None:
    tariff = kwh(100, minimum_charge_fen=200)
    assert limits_for_balance(tariff, 199, None, at(8)) == SessionLimits(0, 0, 0)
    assert allowance_for_coins(tariff, 100, at(8)) == SessionLimits(0, 0, 0)
    # 200 fen at 100 fen/kWh -> 2000 Wh.
    assert allowance_for_coins(tariff, 200, at(8)) == SessionLimits(200, 2000, 720)


def test_limits_free_energy_is_not_limited_by_money() -> None:
    assert limits_for_balance(kwh(0), 0, None, at(8)) == SessionLimits(0, None, 720)


# --------------------------------------------------------------------------- estimates


def test_estimate_flat_energy_price() -> None:
    # 1000 - 400 = 600 fen left at 100 fen/kWh = 6000 Wh; at 1000 W that is 6 h = 21600 s.
    assert estimate_remaining_seconds(kwh(100), 1000, 400, 1000, at(8)) == 21600


def test_estimate_follows_tou_prices_ahead() -> None:
    # 09:30 at 1000 W, 85 fen left, energy + service 10:
    # 09:30-10:00 flat: 500 Wh x (60 + 10) = 35 fen, 50 fen left;
    # then peak 110 fen/kWh: 50 fen buys 454.5 Wh = 27.27 min = 1636.36 s.
    # 1800 + 1636 = 3436 s.
    assert estimate_remaining_seconds(TOU_DAY, 85, 0, 1000, at(9, 30)) == 3436


def test_estimate_time_modes_and_unknowns() -> None:
    # 120 fen left at 120 fen/h = 1 h.
    assert estimate_remaining_seconds(hourly(), 200, 80, None, at(8)) == 3600
    # Power tier at 350 W: 150 fen/h, 75 fen left = 30 min.
    assert estimate_remaining_seconds(TIERED, 75, 0, 350, at(8)) == 1800
    assert estimate_remaining_seconds(TIERED, 75, 0, None, at(8)) is None
    assert estimate_remaining_seconds(kwh(100), 75, 0, 0, at(8)) is None
    assert estimate_remaining_seconds(kwh(0), 75, 0, 500, at(8)) is None
    assert estimate_remaining_seconds(kwh(100), 75, 80, 500, at(8)) == 0
    # Capped at max_session_minutes: 10 000 fen would last 83 h at 120 fen/h.
    assert estimate_remaining_seconds(hourly(), 10_000, 0, None, at(8)) == 720 * 60


# --------------------------------------------------------------------------- from_dict


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("per_kwh", "expected an object"),
        ({}, "missing key(s) mode"),
        ({"mode": "per_minute"}, "must be one of"),
        ({"mode": "per_kwh", "energy_fen_per_kwh": 60, "colour": "red"}, "unknown key"),
        ({"mode": "per_kwh", "energy_fen_per_kwh": 0.6}, "expected an integer"),
        ({"mode": "per_kwh", "energy_fen_per_kwh": True}, "expected an integer"),
        ({"mode": "per_kwh", "energy_fen_per_kwh": -1}, "between"),
        ({"mode": "per_kwh"}, "exactly one"),
        ({"mode": "per_kwh", "energy_fen_per_kwh": 60, "fen_per_hour": 1}, "unknown key"),
        ({"mode": "per_kwh", "energy_fen_per_kwh": 60, "billing_unit_minutes": 30}, "unknown"),
        ({"mode": "per_hour"}, "missing key(s) fen_per_hour"),
        ({"mode": "per_hour", "fen_per_hour": 120, "tz": "Mars/Olympus"}, "time zone"),
        ({"mode": "per_hour", "fen_per_hour": 120, "billing_unit_minutes": 0}, "between"),
        ({"mode": "power_tier", "power_bands": []}, "at least one band"),
        ({"mode": "power_tier", "power_bands": {}}, "expected a list"),
        (
            {"mode": "power_tier", "power_bands": [{"min_w": 10, "max_w": 200, "fen_per_hour": 1}]},
            "contiguous",
        ),
        (
            {
                "mode": "power_tier",
                "power_bands": [
                    {"min_w": 0, "max_w": 200, "fen_per_hour": 1},
                    {"min_w": 300, "max_w": 400, "fen_per_hour": 1},
                ],
            },
            "power_bands[1].min_w",
        ),
        (
            {
                "mode": "power_tier",
                "power_bands": [
                    {"min_w": 0, "max_w": 200, "fen_per_hour": 1},
                    {"min_w": 200, "max_w": 150, "fen_per_hour": 1},
                ],
            },
            "above min_w",
        ),
    ],
)
def test_from_dict_rejects_malformed(data: Any, message: str) -> None:
    with pytest.raises(TariffError) as caught:
        Tariff.from_dict(data)
    assert message in str(caught.value)


def _tou(*periods: tuple[str, str, str, int]) -> dict[str, Any]:
    return {
        "mode": "per_kwh",
        "tou": [
            {"start": a, "end": b, "name": n, "energy_fen_per_kwh": p} for a, b, n, p in periods
        ],
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_tou(("00:00", "12:00", "flat", 1)), "nothing covers 12:00"),
        (_tou(("00:00", "13:00", "flat", 1), ("12:00", "24:00", "peak", 2)), "overlaps"),
        (_tou(("0:00", "24:00", "flat", 1)), "tou[0].start: expected 'HH:MM'"),
        (_tou(("00:00", "24:60", "flat", 1)), "not a time of day"),
        (_tou(("24:00", "24:00", "flat", 1)), "tou[0].start: not a time of day"),
        (_tou(("00:00", "24:00", "sharp", 1)), "tou[0].name: must be one of"),
        ({**_tou(("00:00", "24:00", "flat", 1)), "energy_fen_per_kwh": 5}, "exactly one"),
        ({"mode": "per_kwh", "tou": [{"start": "00:00"}]}, "tou[0]: missing key(s)"),
    ],
)
def test_from_dict_rejects_bad_tou(data: Any, message: str) -> None:
    with pytest.raises(TariffError) as caught:
        Tariff.from_dict(data)
    assert message in str(caught.value)


def test_from_dict_fills_defaults_and_to_dict_is_canonical() -> None:
    tariff = Tariff.from_dict({"mode": "per_hour", "fen_per_hour": 120})
    assert tariff.to_dict() == {
        "mode": "per_hour",
        "tz": "Asia/Shanghai",
        "fen_per_hour": 120,
        "billing_unit_minutes": None,
        "minimum_charge_fen": 0,
        "free_minutes": 0,
        "max_session_minutes": 720,
    }
    whole_day = Tariff.from_dict(_tou(("00:00", "00:00", "flat", 7)))  # start == end: all day
    assert whole_day.energy_price_at(at(13, 37)) == 7


# =========================================================================== properties

ZONES = ["Asia/Shanghai", "UTC", "America/New_York"]


@st.composite
def tou_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    cuts = sorted(draw(st.sets(st.integers(0, 1439), min_size=1, max_size=5)))
    periods = []
    for index, start in enumerate(cuts):
        end = cuts[(index + 1) % len(cuts)]
        end_text = (
            "24:00" if end == 0 and draw(st.booleans()) else f"{end // 60:02d}:{end % 60:02d}"
        )
        periods.append(
            {
                "start": f"{start // 60:02d}:{start % 60:02d}",
                "end": end_text,
                "name": draw(st.sampled_from(PERIOD_NAMES)),
                "energy_fen_per_kwh": draw(st.integers(0, 300)),
            }
        )
    return periods


@st.composite
def band_lists(draw: st.DrawFn) -> list[dict[str, int]]:
    widths = draw(st.lists(st.integers(1, 400), min_size=1, max_size=4))
    bands, low = [], 0
    for width in widths:
        bands.append(
            {"min_w": low, "max_w": low + width, "fen_per_hour": draw(st.integers(0, 400))}
        )
        low += width
    return bands


@st.composite
def tariff_dicts(draw: st.DrawFn) -> dict[str, Any]:
    mode = draw(st.sampled_from(["per_kwh", "per_kwh_tou", "per_hour", "power_tier"]))
    d: dict[str, Any] = {"mode": mode.removesuffix("_tou"), "tz": draw(st.sampled_from(ZONES))}
    if mode == "per_kwh":
        d["energy_fen_per_kwh"] = draw(st.integers(0, 300))
    elif mode == "per_kwh_tou":
        d["tou"] = draw(tou_lists())
    if d["mode"] == "per_kwh":
        d["service_fen_per_kwh"] = draw(st.integers(0, 100))
    else:
        if mode == "per_hour":
            d["fen_per_hour"] = draw(st.integers(0, 400))
        else:
            d["power_bands"] = draw(band_lists())
        d["billing_unit_minutes"] = draw(st.one_of(st.none(), st.integers(1, 90)))
    d["minimum_charge_fen"] = draw(st.one_of(st.just(0), st.integers(0, 300)))
    d["free_minutes"] = draw(st.one_of(st.just(0), st.integers(0, 30)))
    d["max_session_minutes"] = draw(st.integers(1, 1440))
    return d


tariffs = tariff_dicts().map(Tariff.from_dict)

# Starts anywhere, or right before New York's DST changes to exercise clock jumps.
DST_EDGES = [datetime(2025, 3, 9, 5, tzinfo=UTC), datetime(2025, 11, 2, 4, tzinfo=UTC)]
starts = st.one_of(
    st.datetimes(
        min_value=datetime(2024, 1, 1),
        max_value=datetime(2026, 12, 31),
        timezones=st.sampled_from([SHANGHAI, NEW_YORK, UTC]),
        allow_imaginary=False,
    ),
    st.builds(
        lambda edge, minutes: edge + timedelta(minutes=minutes),
        st.sampled_from(DST_EDGES),
        st.integers(0, 180),
    ),
)
steps = st.tuples(
    st.one_of(st.integers(0, 7200), st.sampled_from([0, 1, 60, 1800, 3600])),  # seconds
    st.one_of(st.just(0), st.integers(0, 999_999)),  # microseconds
    st.integers(0, 600),  # Wh
    st.integers(0, 1200),  # W
)


@st.composite
def profiles(draw: st.DrawFn, max_steps: int = 8) -> list[MeterSample]:
    when = draw(starts)
    energy = draw(st.integers(0, 100_000))
    profile = [MeterSample(when, energy, draw(st.integers(0, 1200)))]
    for seconds, micros, wh, watts in draw(st.lists(steps, max_size=max_steps)):
        when = plus(when, timedelta(seconds=seconds, microseconds=micros))
        energy += wh
        profile.append(MeterSample(when, energy, watts))
    return profile


FAST = settings(max_examples=40, deadline=None)


@FAST
@given(tariffs, profiles())
def test_cost_never_decreases_as_the_profile_grows(
    tariff: Tariff, profile: list[MeterSample]
) -> None:
    totals = [cost_of(tariff, profile[: i + 1]).total_fen for i in range(len(profile))]
    assert totals == sorted(totals)
    assert totals[0] == 0


@FAST
@given(tariffs, profiles(), st.integers(1, 500))
def test_more_energy_never_costs_less(
    tariff: Tariff, profile: list[MeterSample], extra_wh: int
) -> None:
    assume(len(profile) > 1)
    last = profile[-1]
    more = [*profile[:-1], MeterSample(last.at, last.energy_wh + extra_wh, last.power_w)]
    assert cost_of(tariff, more).total_fen >= cost_of(tariff, profile).total_fen


@FAST
@given(tariffs, profiles(), st.data())
def test_splitting_at_any_sample_keeps_the_total(
    tariff: Tariff, profile: list[MeterSample], data: st.DataObject
) -> None:
    split = data.draw(st.integers(0, len(profile) - 1))
    whole = RunningCost.begin(tariff, profile[0]).add(profile[1:])
    in_parts = RunningCost.begin(tariff, profile[0]).add(profile[1 : split + 1])
    in_parts = in_parts.add(profile[split + 1 :])
    assert in_parts == whole
    assert whole.cost == cost_of(tariff, profile) == price_between(tariff, profile[0], profile[1:])
    # Billing the two parts as differences of cumulative totals adds up to the whole.
    first_part = cost_of(tariff, profile[: split + 1]).total_fen
    second_part = price_between(tariff, profile[0], profile[1:]).total_fen - first_part
    assert second_part >= 0
    assert first_part + second_part == whole.cost.total_fen


@FAST
@given(tariffs, profiles())
def test_integer_and_fraction_arithmetic_price_alike(
    tariff: Tariff, profile: list[MeterSample]
) -> None:
    """The running state stays in ints while no interval is split; the same state held
    as Fractions must round to the same fen, and survive its JSON snapshot exactly."""
    running = RunningCost.begin(tariff, profile[0]).add(profile[1:])
    as_fractions = dataclasses.replace(running, billable_wh=Fraction(running.billable_wh),
                                       priced_wh=Fraction(running.priced_wh))
    assert as_fractions.cost == running.cost
    restored = RunningCost.from_state(tariff, json.loads(json.dumps(running.to_state())))
    assert restored == running and restored.cost == running.cost


fine_steps = st.tuples(
    st.integers(1, 4),  # the interval is cut into this many equal pieces
    st.integers(0, 1800),  # seconds per piece
    st.one_of(st.just(0), st.integers(0, 999_999)),  # extra microseconds per piece
    st.integers(0, 200),  # Wh per piece
    st.integers(0, 1200),  # W reported at the end of the interval
)


@FAST
@given(tariffs, starts, st.lists(fine_steps, min_size=1, max_size=6))
def test_splitting_an_interval_anywhere_keeps_the_total(
    tariff: Tariff, start: datetime, intervals: list[tuple[int, int, int, int, int]]
) -> None:
    """Inserting readings that lie on the straight line between two readings (and report
    the same power as the later one) is just a finer meter: the price must not move."""
    coarse = [MeterSample(start, 0, 0)]
    fine = [MeterSample(start, 0, 0)]
    when, energy = start, 0
    for pieces, seconds, micros, wh, watts in intervals:
        piece = timedelta(seconds=seconds, microseconds=micros)
        for _ in range(pieces):
            when = plus(when, piece)
            energy += wh
            fine.append(MeterSample(when, energy, watts))
        coarse.append(MeterSample(when, energy, watts))
    assert cost_of(tariff, fine) == cost_of(tariff, coarse)


@settings(max_examples=80, deadline=None)
@given(
    tariffs,
    profiles(),
    st.integers(0, 3000),
    st.one_of(st.none(), st.integers(0, 1200)),
)
def test_limits_never_let_a_session_cost_more_than_the_balance(
    tariff: Tariff, profile: list[MeterSample], available: int, assumed_power: int | None
) -> None:
    """The pile enforces the limits by itself: clip the profile to them (energy capped,
    power at most the assumed power, and a last reading exactly at the time limit when the
    session would have run longer) and the cost must stay within the balance."""
    start = profile[0]
    limits = limits_for_balance(tariff, available, assumed_power, start.at)
    assert limits.max_amount_fen <= available
    deadline = plus(start.at, timedelta(minutes=limits.max_minutes))
    within = []
    for sample in profile:
        used = sample.energy_wh - start.energy_wh
        if limits.max_energy_wh is not None:
            used = min(used, limits.max_energy_wh)
        power = sample.power_w if assumed_power is None else min(sample.power_w, assumed_power)
        within.append(MeterSample(min(sample.at, deadline), start.energy_wh + used, power))
        if sample.at >= deadline:
            break
    assert cost_of(tariff, within).total_fen <= available


@FAST
@given(tariffs, st.integers(0, 3000), st.integers(0, 3000))
def test_coin_allowance_is_never_worth_more_than_the_coins(
    tariff: Tariff, amount: int, energy_wh: int
) -> None:
    start = datetime(2025, 3, 3, 8, tzinfo=SHANGHAI)
    allowance = allowance_for_coins(tariff, amount, start)
    if allowance.max_energy_wh is not None:
        energy_wh = min(energy_wh, allowance.max_energy_wh)
    end = start + timedelta(minutes=allowance.max_minutes)
    session = [MeterSample(start, 0, 0), MeterSample(end, energy_wh, 1200)]
    assert cost_of(tariff, session).total_fen <= amount


@FAST
@given(tariffs, st.integers(0, 3000), st.integers(0, 3000), st.integers(0, 1200), starts)
def test_estimate_never_promises_more_than_the_money_buys(
    tariff: Tariff, available: int, spent: int, power: int, start: datetime
) -> None:
    seconds = estimate_remaining_seconds(tariff, available, spent, power, start)
    if seconds is None:
        return
    left = available - spent
    energy = power * seconds // 3600
    session = [
        MeterSample(start, 0, power),
        MeterSample(plus(start, timedelta(seconds=seconds)), energy, power),
    ]
    cost = cost_of(tariff, session)
    assert cost.total_fen - cost.minimum_topup_fen <= max(left, 0)


@FAST
@given(tariff_dicts())
def test_dict_round_trip(data: dict[str, Any]) -> None:
    tariff = Tariff.from_dict(data)
    canonical = tariff.to_dict()
    assert canonical == data
    assert Tariff.from_dict(json.loads(json.dumps(canonical))) == tariff
    assert hash(Tariff.from_dict(canonical)) == hash(tariff)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def _parse_or_tariff_error(data: object) -> Tariff | None:
    try:
        return Tariff.from_dict(data)
    except TariffError:
        return None


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_arbitrary_json_raises_only_tariff_error(data: object) -> None:
    _parse_or_tariff_error(data)


@settings(max_examples=100, deadline=None)
@given(tariff_dicts(), st.data())
def test_mutated_tariffs_raise_only_tariff_error(data: dict[str, Any], draw: st.DataObject) -> None:
    mutated = json.loads(json.dumps(data))
    key = draw.draw(st.sampled_from(sorted(mutated)))
    action = draw.draw(st.sampled_from(["drop", "replace", "add", "nested"]))
    if action == "drop":
        del mutated[key]
    elif action == "replace":
        mutated[key] = draw.draw(json_values)
    elif action == "add":
        mutated[draw.draw(st.text(min_size=1, max_size=8))] = draw.draw(json_values)
    else:
        items = mutated.get("tou") or mutated.get("power_bands")
        if items:
            item = draw.draw(st.sampled_from(items))
            item[draw.draw(st.sampled_from(sorted(item)))] = draw.draw(json_values)
    result = _parse_or_tariff_error(mutated)
    if result is not None:  # a harmless mutation must still give a sane, canonical tariff
        assert Tariff.from_dict(result.to_dict()) == result


@FAST
@given(tariff_dicts(), st.sampled_from([1.0, "1", True, None, [], {}]))
def test_wrong_types_for_integers_are_rejected(data: dict[str, Any], bad: object) -> None:
    fields = [k for k, v in data.items() if isinstance(v, int) and k != "billing_unit_minutes"]
    for key in fields:
        with pytest.raises(TariffError):
            Tariff.from_dict({**data, key: bad})

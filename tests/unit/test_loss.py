"""Theft and loss: hand-worked examples (arithmetic in the comments), then properties.

Energy is Wh; the master meter and every socket report cumulative counters.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from fractions import Fraction
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.errors import ConfigurationError
from app.domain.loss import (
    CounterReading,
    CounterSeries,
    LossConfig,
    LossFigures,
    LossVerdict,
    Period,
    assess,
    assess_series,
    daily_series,
    per_mille,
    period_figures,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")


def t(day: int, hour: int, minute: int = 0) -> datetime:
    """2025-03-<day> <hour>:<minute> in Shanghai."""
    return datetime(2025, 3, day, hour, minute, tzinfo=SHANGHAI)


def r(when: datetime, energy_wh: int) -> CounterReading:
    return CounterReading(when, energy_wh)


DAY3 = Period(t(3, 0), t(4, 0))


# --------------------------------------------------------------------------- interpolation


def test_interpolation_between_straddling_readings():
    # Master read at 23:50 (1000 Wh) and 00:05 (1150 Wh): at 00:00, 10 of the 15 minutes
    # have passed: 1000 + 150 × 10/15 = 1100 exactly.
    series = CounterSeries([r(t(2, 23, 50), 1000), r(t(3, 0, 5), 1150)])
    assert series.value_at(t(3, 0)) == 1100
    # At 23:52: 1000 + 150 × 2/15 = 1020.
    assert series.value_at(t(2, 23, 52)) == 1020
    # At a reading: the reading.
    assert series.value_at(t(3, 0, 5)) == 1150


def test_interpolation_is_exact_then_floored():
    # 0 Wh at 00:00, 10 Wh at 00:03: at 00:01 the counter is 10/3 = 3.33 Wh, shown as 3.
    series = CounterSeries([r(t(3, 0), 0), r(t(3, 0, 3), 10)])
    assert series.value_at(t(3, 0, 1)) == Fraction(10, 3)
    assert series.counter_at(t(3, 0, 1)) == 3
    # At 00:02: 20/3 = 6.67 -> 6 (floored, like the meter's display).
    assert series.counter_at(t(3, 0, 2)) == 6


def test_no_extrapolation_outside_the_readings():
    series = CounterSeries([r(t(3, 8), 5000), r(t(3, 10), 15000)])
    assert series.value_at(t(3, 0)) == 5000  # before the first reading: the first
    assert series.value_at(t(3, 23)) == 15000  # after the last: the last (port idle since)
    assert not series.covers(DAY3) and series.interpolation_span(DAY3) is None
    assert CounterSeries([]).value_at(t(3, 0)) is None
    assert CounterSeries([]).energy(DAY3) == 0


def test_counter_going_down_is_a_fresh_start_added():
    # 90000 -> 91000 (+1000), then 500 (replaced board, counted 500 from zero: +500),
    # then 1500 (+1000): 2500 Wh in all; the continuous counter never goes down.
    readings = [r(t(3, 12), 90000), r(t(3, 13), 91000), r(t(3, 14), 500), r(t(3, 15), 1500)]
    series = CounterSeries(readings)
    assert series.energy(DAY3) == 2500
    assert [series.counter_at(x.at) for x in readings] == [90000, 91000, 91500, 92500]
    # Interpolation across the reset: 13:30 is half way from 91000 to 91500 -> 91250.
    assert series.value_at(t(3, 13, 30)) == 91250
    assert series.resets_in(DAY3) == 1
    assert series.resets_in(Period(t(3, 14), t(3, 15))) == 0  # the reset is 13:00..14:00
    # Arrival order does not matter.
    assert CounterSeries(reversed(readings)).energy(DAY3) == 2500


def test_bad_readings_are_refused():
    with pytest.raises(ValueError):
        CounterReading(datetime(2025, 3, 3), 1)  # naive
    with pytest.raises(ValueError):
        CounterReading(t(3, 0), -1)
    with pytest.raises(ValueError):
        CounterReading(t(3, 0), 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Period(t(3, 1), t(3, 1))


# --------------------------------------------------------------------------- one day


MASTER = [
    r(t(2, 23, 45), 1_000_000),
    r(t(3, 0, 15), 1_001_000),
    r(t(3, 23, 50), 1_030_000),
    r(t(4, 0, 10), 1_031_000),
]
SOCKETS = {
    # Idle 22:00 -> 08:00 (counter unchanged), charged 08:00 -> 10:00, idle since: 10000 Wh.
    "A": [r(t(2, 22), 5_000), r(t(3, 8), 5_000), r(t(3, 10), 15_000)],
    # First seen at 19:00 (energy before that is not the platform's): 212000 - 200000.
    "B": [r(t(3, 19), 200_000), r(t(3, 21), 212_000)],
    # Board replaced at 14:00: 1000 + 500 + 1000 = 2500 Wh.
    "C": [r(t(3, 12), 90_000), r(t(3, 13), 91_000), r(t(3, 14), 500), r(t(3, 15), 1_500)],
}


def test_day_figures_with_interpolated_master():
    # Master at 00:00: 1000000 + 1000 × 15/30 = 1000500; at 24:00: 1030000 + 1000 × 10/20
    # = 1030500; master = 30000 Wh. Sockets 10000 + 12000 + 2500 = 24500 Wh.
    # Loss 30000 - 24500 = 5500 Wh = 11/60 = 18.3 % (183 ‰).
    f = period_figures(MASTER, SOCKETS, DAY3)
    assert (f.master_wh, f.sockets_wh, f.loss_wh) == (30_000, 24_500, 5_500)
    assert f.by_socket == {"A": 10_000, "B": 12_000, "C": 2_500}
    assert f.ratio == Fraction(11, 60) and f.per_mille == 183
    assert f.master_complete and f.master_interpolation_span == timedelta(minutes=30)
    assert (f.master_resets, f.socket_resets) == (0, 1)
    decision = assess(f)
    assert decision.verdicts == (LossVerdict.ABOVE_THRESHOLD,) and decision.open_incident
    assert "18.3 %" in decision.reason and "above 8.0 %" in decision.reason


def test_per_mille_rounds_half_up():
    assert per_mille(Fraction(805, 10_000)) == 81  # 80.5 ‰ -> 81
    assert per_mille(Fraction(8049, 100_000)) == 80  # 80.49 ‰ -> 80
    assert per_mille(Fraction(-125, 10_000)) == -12  # -12.5 ‰ -> -12 (towards +∞)


# --------------------------------------------------------------------------- detection


def fig(master_wh: int, sockets_wh: int, *, complete: bool = True,
        span: timedelta = timedelta(0)) -> LossFigures:
    return LossFigures(DAY3, master_wh, sockets_wh, {"all": sockets_wh}, complete,
                       span if complete else None)


def test_threshold_is_strict():
    # 25000 - 23000 = 2000 Wh = 8 % exactly: not above 8 %.
    assert assess(fig(25_000, 23_000)).verdicts == (LossVerdict.OK,)
    # 2001 / 25000 = 8.004 % > 8 %.
    assert assess(fig(25_000, 22_999)).verdicts == (LossVerdict.ABOVE_THRESHOLD,)


def test_small_periods_never_trigger_a_ratio():
    # 19999 Wh < 20000 Wh minimum: no decision even at (19999 - 10000)/19999 = 50 %.
    d = assess(fig(19_999, 10_000))
    assert d.verdicts == (LossVerdict.INSUFFICIENT_DATA,) and not d.open_incident
    assert "minimum" in d.reason


def test_sockets_above_master_is_suspicious():
    # 31000 - 30000 = 1000 Wh over; allowed max(2 % × 30000 = 600, 1000) = 1000: fine.
    assert assess(fig(30_000, 31_000)).verdicts == (LossVerdict.OK,)
    # 1001 Wh over: a meter fault.
    d = assess(fig(30_000, 31_001))
    assert d.verdicts == (LossVerdict.SOCKETS_EXCEED_MASTER,) and d.open_incident
    # 100000 vs 102500: over by 2500 > 2 % × 100000 = 2000.
    assert assess(fig(100_000, 102_500)).verdict is LossVerdict.SOCKETS_EXCEED_MASTER
    # Even when the master counted (almost) nothing: 0 vs 5000.
    assert assess(fig(0, 5_000)).verdicts == (LossVerdict.SOCKETS_EXCEED_MASTER,)


def test_incomplete_master_data_decides_nothing():
    assert assess(fig(30_000, 10_000, complete=False)).verdict is LossVerdict.INSUFFICIENT_DATA
    # Master readings 2 h apart at a boundary (more than 1 h): interpolation too coarse.
    d = assess(fig(30_000, 10_000, span=timedelta(hours=2)))
    assert d.verdict is LossVerdict.INSUFFICIENT_DATA and not d.open_incident
    # Missing the readings after midnight: the day is not bracketed.
    f = period_figures(MASTER[:3], SOCKETS, DAY3)
    assert not f.master_complete and assess(f).verdict is LossVerdict.INSUFFICIENT_DATA


def test_jump_against_history():
    # History 2 %, 3 %, 2.5 %: median 2.5 %, 3 × 2.5 % = 7.5 %.
    history = [fig(100_000, 98_000), fig(100_000, 97_000), fig(100_000, 97_500)]
    # 7.6 % > 7.5 % and > the 4 % floor, though below the 8 % threshold: a jump.
    d = assess(fig(100_000, 92_400), history)
    assert d.verdicts == (LossVerdict.JUMP,)
    assert d.history_median == Fraction(25, 1000) and d.history_used == 3
    # 7.5 % exactly is not above.
    assert assess(fig(100_000, 92_500), history).verdicts == (LossVerdict.OK,)
    # 10 %: both above the threshold and a jump.
    assert assess(fig(100_000, 90_000), history).verdicts == (
        LossVerdict.ABOVE_THRESHOLD, LossVerdict.JUMP)


def test_jump_needs_a_floor_and_enough_history():
    low = [fig(100_000, 99_000)] * 3  # 1 % each: 3 × 1 % = 3 %
    assert assess(fig(100_000, 96_500), low).verdicts == (LossVerdict.OK,)  # 3.5 % <= 4 %
    assert assess(fig(100_000, 95_800), low).verdicts == (LossVerdict.JUMP,)  # 4.2 %
    # Two usable periods only (the third is incomplete, the fourth too small): no jump call.
    thin = [fig(100_000, 99_000), fig(100_000, 99_000), fig(100_000, 50_000, complete=False),
            fig(10_000, 9_900)]
    d = assess(fig(100_000, 95_800), thin)
    assert d.verdicts == (LossVerdict.OK,) and d.history_median is None and d.history_used == 2


def test_jump_uses_the_last_n_periods():
    # 6 old periods at 20 %, then 14 at 1 %: the median of the last 14 is 1 % -> bar 4 %.
    history = [fig(100_000, 80_000)] * 6 + [fig(100_000, 99_000)] * 14
    d = assess(fig(100_000, 95_000), history)  # 5 %
    assert d.verdicts == (LossVerdict.JUMP,) and d.history_median == Fraction(1, 100)
    # With an even count the median is the mean of the middle two: (1 % + 3 %)/2 = 2 %.
    even = [fig(100_000, 99_000)] * 2 + [fig(100_000, 97_000)] * 2
    assert assess(fig(100_000, 95_000), even).history_median == Fraction(2, 100)


def test_assess_series_uses_only_earlier_periods():
    series = [fig(100_000, 98_000)] * 3 + [fig(100_000, 92_000)]
    verdicts = [d.verdicts for d in assess_series(series)]
    assert verdicts == [(LossVerdict.OK,)] * 3 + [(LossVerdict.JUMP,)]  # 8 % > 3 × 2 %


def test_config_refuses_floats():
    with pytest.raises(ConfigurationError):
        LossConfig(threshold=0.08)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        LossConfig(min_history=5, history_periods=4)
    custom = LossConfig(threshold=Fraction(5, 100), min_master_wh=1_000)
    assert assess(fig(10_000, 9_400), config=custom).verdict is LossVerdict.ABOVE_THRESHOLD


# --------------------------------------------------------------------------- daily series


def test_daily_series_adds_up_to_the_whole_range():
    master = [r(t(1, 23, 45) + timedelta(minutes=15 * i), 1_000_000 + 250 * i + (i % 7))
              for i in range(4 * 24 * 3 + 2)]
    sockets = {"A": [r(t(2, 8), 100), r(t(2, 12), 900), r(t(3, 20), 1_700), r(t(4, 1), 2_000)]}
    days = daily_series(master, sockets, date(2025, 3, 2), date(2025, 3, 4))
    assert [d.day for d in days] == [date(2025, 3, 2), date(2025, 3, 3), date(2025, 3, 4)]
    whole = period_figures(master, sockets, Period(t(2, 0), t(5, 0)))
    assert sum(d.master_wh for d in days) == whole.master_wh
    assert sum(d.sockets_wh for d in days) == whole.sockets_wh == 1_900
    assert sum(d.loss_wh for d in days) == whole.loss_wh
    # Socket A on day 3. At 00:00: between 900 (day 2, 12:00) and 1700 (day 3, 20:00), 12 of
    # 32 h in: 900 + 800 × 12/32 = 1200. At 24:00: between 1700 (20:00) and 2000 (day 4,
    # 01:00), 4 of 5 h in: 1700 + 300 × 4/5 = 1940. 1940 - 1200 = 740 Wh.
    assert days[1].sockets_wh == 740
    row = days[1].as_row()
    assert row == {"day": "2025-03-03", "master_wh": days[1].master_wh, "sockets_wh": 740,
                   "loss_wh": days[1].master_wh - 740, "loss_per_mille": days[1].per_mille,
                   "master_complete": True}
    # 290 master readings every 15 min from day 1 23:45 reach day 5 00:00: all complete.
    assert all(d.figures.master_complete for d in days)
    with pytest.raises(ValueError):
        daily_series(master, sockets, date(2025, 3, 4), date(2025, 3, 2))


# --------------------------------------------------------------------------- properties

BASE = t(3, 0)
FAST = settings(max_examples=50, deadline=None)

# (minute offset, increment Wh, reset?) -> readings at distinct minutes
steps = st.lists(
    st.tuples(st.integers(1, 120), st.integers(0, 5_000), st.booleans()),
    min_size=1, max_size=8,
)


def build(first: int, items: list[tuple[int, int, bool]], *, resets: bool) -> list[
        CounterReading]:
    when, value = BASE, first
    out = [r(when, value)]
    for gap, inc, reset in items:
        when += timedelta(minutes=gap)
        value = inc if (resets and reset) else value + inc
        out.append(r(when, value))
    return out


@FAST
@given(st.integers(0, 10**9), steps, st.booleans(),
       st.lists(st.integers(-60, 60 * 24), min_size=3, max_size=6, unique=True))
def test_energy_is_additive_over_any_split(first, items, resets, cuts):
    series = CounterSeries(build(first, items, resets=resets))
    points = [BASE + timedelta(minutes=c) for c in sorted(cuts)]
    whole = series.energy(Period(points[0], points[-1]))
    assert whole == sum(series.energy(Period(a, b)) for a, b in pairwise(points))
    assert whole >= 0


@FAST
@given(st.integers(0, 10**6), steps, steps, st.data())
def test_loss_of_a_period_is_the_sum_of_its_sub_periods(m0, master_items, socket_items, data):
    master = build(m0, master_items, resets=False)
    socket = build(0, socket_items, resets=True)
    # Split at instants where readings exist (the master's), plus the period's own ends.
    inner = sorted({x.at for x in master[1:-1]})
    start, end = master[0].at - timedelta(minutes=5), master[-1].at + timedelta(minutes=5)
    chosen = data.draw(st.lists(st.sampled_from(inner), unique=True) if inner else st.just([]))
    points = [start, *sorted(chosen), end]
    whole = period_figures(master, {"s": socket}, Period(start, end))
    parts = [period_figures(master, {"s": socket}, Period(a, b))
             for a, b in pairwise(points)]
    assert whole.loss_wh == sum(p.loss_wh for p in parts)
    assert whole.master_wh == sum(p.master_wh for p in parts)
    assert whole.sockets_wh == sum(p.sockets_wh for p in parts)


@FAST
@given(st.integers(0, 10**9), steps, st.booleans(), st.integers(-30, 1_500),
       st.integers(-30, 1_500))
def test_interpolation_is_monotone(first, items, resets, s1, s2):
    # Monotone counters give a monotone interpolation; with resets the continuous counter
    # is monotone too.
    readings = build(first, items, resets=resets)
    series = CounterSeries(readings)
    early, late = sorted((s1, s2))
    a = series.value_at(BASE + timedelta(seconds=early * 60 + 7))
    b = series.value_at(BASE + timedelta(seconds=late * 60 + 7))
    assert a is not None and b is not None and a <= b
    if not resets:  # without resets the series passes through every reading
        assert [series.counter_at(x.at) for x in readings] == [x.energy_wh for x in readings]

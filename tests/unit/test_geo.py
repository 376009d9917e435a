"""Great-circle distances and "nearest first": worked examples, then properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.errors import InvalidInput
from app.domain.geo import EARTH_RADIUS_M, Point, check_point, haversine_m, nearest

ONE_DEGREE_M = EARTH_RADIUS_M * math.pi / 180  # 111,195.08 m along a meridian

lat = st.floats(min_value=-90, max_value=90, allow_nan=False)
lng = st.floats(min_value=-180, max_value=180, allow_nan=False)
points = st.builds(Point, lat, lng)


def test_worked_distances() -> None:
    # one degree of latitude, anywhere on a meridian: R·π/180
    assert haversine_m(Point(30, 120), Point(31, 120)) == pytest.approx(ONE_DEGREE_M)
    assert round(ONE_DEGREE_M) == 111_195
    # one degree of longitude on the equator is the same; at 60° N half of it (cos 60°)
    assert haversine_m(Point(0, 0), Point(0, 1)) == pytest.approx(ONE_DEGREE_M)
    assert haversine_m(Point(60, 10), Point(60, 10.001)) == pytest.approx(
        ONE_DEGREE_M / 1000 / 2, rel=1e-6)
    # equator to pole: a quarter of the circumference; antipodes: half of it
    assert haversine_m(Point(0, 45), Point(90, 0)) == pytest.approx(math.pi / 2 * EARTH_RADIUS_M)
    assert haversine_m(Point(0, 0), Point(0, 180)) == pytest.approx(math.pi * EARTH_RADIUS_M)
    assert haversine_m(Point(-33.5, 20), Point(33.5, -160)) == pytest.approx(
        math.pi * EARTH_RADIUS_M)
    # across the antimeridian: 179.5° E to 179.5° W on the equator is one degree, not 359
    assert haversine_m(Point(0, 179.5), Point(0, -179.5)) == pytest.approx(ONE_DEGREE_M)
    # Beijing (Tian'anmen) to Shanghai (People's Square): about 1,067 km
    assert haversine_m(Point(39.9087, 116.3975), Point(31.2304, 121.4737)) == pytest.approx(
        1_067_000, abs=2_000)
    # what the mini-program's home page test shows: 0.001° of latitude is 111 m
    assert round(haversine_m(Point(30, 120), Point(30.001, 120))) == 111


@given(points, points)
def test_symmetric_non_negative_and_bounded(a: Point, b: Point) -> None:
    d = haversine_m(a, b)
    assert d == pytest.approx(haversine_m(b, a), abs=1e-6)
    assert 0 <= d <= math.pi * EARTH_RADIUS_M + 1e-6
    assert haversine_m(a, a) == pytest.approx(0, abs=1e-6)


@given(points, points, points)
def test_triangle_inequality(a: Point, b: Point, c: Point) -> None:
    assert haversine_m(a, c) <= haversine_m(a, b) + haversine_m(b, c) + 1e-3


def test_nearest_first_without_the_unlocated_and_limited() -> None:
    here = Point(30, 120)
    places = [("far", Point(30.1, 120)), ("nowhere", None), ("near", Point(30.001, 120)),
              ("mid", Point(30, 120.05)), ("near-too", Point(30.001, 120))]
    assert nearest(here, places, 10) == [("near", 111), ("near-too", 111), ("mid", 4_815),
                                         ("far", 11_120)]
    assert nearest(here, places, 2) == [("near", 111), ("near-too", 111)]
    assert nearest(here, places, 0) == []
    assert nearest(here, [], 5) == []
    assert nearest(here, [("x", None)], 5) == []


@given(points, st.lists(points, max_size=30), st.integers(min_value=1, max_value=40))
def test_nearest_is_sorted_and_is_the_closest_few(here: Point, located: list[Point],
                                                 limit: int) -> None:
    chosen = nearest(here, list(enumerate(located)), limit)
    assert len(chosen) == min(limit, len(located))
    distances = [d for _, d in chosen]
    assert distances == sorted(distances)
    left_out = set(range(len(located))) - {i for i, _ in chosen}
    if chosen:
        assert all(haversine_m(here, located[i]) >= distances[-1] - 1 for i in left_out)


@pytest.mark.parametrize(("la", "ln", "field"), [
    (90.0001, 0, "lat"), (-91, 0, "lat"), (0, 180.5, "lng"), (0, -181, "lng"),
    (math.nan, 0, "lat"), (0, math.inf, "lng"), (True, 0, "lat"),
])
def test_check_point_refuses_what_is_not_on_the_earth(la: float, ln: float,
                                                      field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        check_point(la, ln)
    assert err.value.details["field"] == field


def test_check_point_accepts_the_edges() -> None:
    assert check_point(90, -180) == Point(90.0, -180.0)
    assert check_point(-90, 180) == Point(-90.0, 180.0)

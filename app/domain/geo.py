"""Distances on the Earth, for "the charging stations nearest to me".

Plain great-circle (haversine) distance on a sphere of the mean Earth radius: within
0.5 % of the ellipsoid, far better than a phone's GPS fix over the few kilometres that
matter here. Coordinates are WGS-84 degrees as stored on communities; a mini-program
asks ``wx.getLocation`` for ``type: 'wgs84'`` (its default), so both sides agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from app.domain.errors import InvalidInput

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius, as the mini-program's utils/geo.js

T = TypeVar("T")


@dataclass(frozen=True)
class Point:
    lat: float
    lng: float


def check_point(lat: float, lng: float) -> Point:
    """A finite latitude in [-90, 90] and longitude in [-180, 180], or InvalidInput."""
    for name, value, bound in (("lat", lat, 90.0), ("lng", lng, 180.0)):
        if (not isinstance(value, int | float) or isinstance(value, bool)
                or not math.isfinite(value) or not -bound <= value <= bound):
            raise InvalidInput(f"{name} must be a number between {-bound:g} and {bound:g}",
                               field=name)
    return Point(float(lat), float(lng))


def haversine_m(a: Point, b: Point) -> float:
    """Great-circle distance in metres between two points."""
    phi1, phi2 = math.radians(a.lat), math.radians(b.lat)
    d_phi = phi2 - phi1
    d_lambda = math.radians(b.lng - a.lng)
    h = math.sin(d_phi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def nearest(here: Point, places: Iterable[tuple[T, Point | None]], limit: int
            ) -> list[tuple[T, int]]:
    """The ``limit`` places nearest to ``here`` with their distance in whole metres,
    nearest first (ties keep the input order). Places without a point are left out."""
    if limit < 1:
        return []
    measured = [(haversine_m(here, point), index, item)
                for index, (item, point) in enumerate(places) if point is not None]
    measured.sort(key=lambda m: (m[0], m[1]))
    return [(item, round(distance)) for distance, _, item in measured[:limit]]

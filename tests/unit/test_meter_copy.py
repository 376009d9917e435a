"""Meter readings reach PostgreSQL by binary COPY (app.services.telemetry.pg_copy), which
converts nothing: each value is sent as its column's type, and psycopg's binary int4
writer wraps an int out of range (2**31 arrives as -2**31) instead of failing. What
keeps the values in range is the protocol schema; these tests tie the two together."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.dialects import postgresql

import app.protocol
from app.models import MeterReading
from app.services.telemetry import _PG_METER_COLUMNS

READING = json.loads(
    (Path(app.protocol.__file__).with_name("schemas") / "meter.schema.json").read_text()
)["properties"]["readings"]["items"]["properties"]
RANGES = {"int4": (-(2**31), 2**31 - 1), "int8": (-(2**63), 2**63 - 1)}
PG_TYPES = {"INTEGER": "int4", "BIGINT": "int8", "TIMESTAMP WITH TIME ZONE": "timestamptz",
            "VARCHAR": "text"}


def test_copy_sends_each_column_as_its_own_type() -> None:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    assert set(_PG_METER_COLUMNS) == {c.name for c in MeterReading.__table__.c} - {"id"}
    for name, sent_as in _PG_METER_COLUMNS.items():
        column_type = MeterReading.__table__.c[name].type.compile(dialect=dialect)
        assert PG_TYPES[column_type.split("(")[0]] == sent_as, name


@pytest.mark.parametrize("field", sorted(f for f, t in _PG_METER_COLUMNS.items()
                                         if t in RANGES and f in READING))
def test_the_protocol_bounds_every_integer_within_its_column(field: str) -> None:
    low, high = RANGES[_PG_METER_COLUMNS[field]]
    assert low <= READING[field]["minimum"] and READING[field]["maximum"] <= high

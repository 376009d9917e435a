"""yuan <-> fen: Decimal only, strict parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.payments.money import fen_to_yuan, yuan_to_fen


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("0.01", 1),
        ("12.3", 1230),
        ("12.30", 1230),
        ("12", 1200),
        ("0", 0),
        ("0.00", 0),
        ("100000000.00", 10_000_000_000),
        ("0.10", 10),
        ("19.99", 1999),
    ],
)
def test_yuan_to_fen_accepts_plain_amounts(text: str, fen: int) -> None:
    assert yuan_to_fen(text) == fen


@pytest.mark.parametrize(
    "text",
    [
        "1e3",
        "-1",
        "0.001",
        "abc",
        "",
        " 1",
        "1 ",
        "+1",
        "1.",
        ".5",
        "01",
        "1,00",
        "NaN",
        "Infinity",
        "12.345",
        "1_000",
        "１２",
        "0x10",
        "-0.01",
        "1e-2",
    ],
)
def test_yuan_to_fen_rejects_everything_else(text: str) -> None:
    with pytest.raises(ValueError):
        yuan_to_fen(text)


def test_yuan_to_fen_rejects_non_strings() -> None:
    with pytest.raises(ValueError):
        yuan_to_fen(12.3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fen", "text"), [(0, "0.00"), (1, "0.01"), (1230, "12.30"), (100, "1.00")]
)
def test_fen_to_yuan(fen: int, text: str) -> None:
    assert fen_to_yuan(fen) == text


@pytest.mark.parametrize("bad", [-1, 1.5, True, "100"])
def test_fen_to_yuan_rejects_bad_input(bad: object) -> None:
    with pytest.raises(ValueError):
        fen_to_yuan(bad)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=10**13))
def test_round_trip(fen: int) -> None:
    assert yuan_to_fen(fen_to_yuan(fen)) == fen


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=999))
def test_three_decimals_never_round(whole: int, frac: int) -> None:
    with pytest.raises(ValueError):
        yuan_to_fen(f"{whole}.{frac:03d}")

"""Money conversion between integer fen (ours) and yuan strings (the providers').

Only ``Decimal`` is used, never ``float``: 0.1 + 0.2 style rounding must not reach a ledger.
Parsing is deliberately strict (plain ``123`` / ``123.4`` / ``123.45``): exponent notation,
signs, whitespace, leading zeros and a third decimal are rejected rather than rounded, so a
malformed or hostile amount fails loudly instead of crediting a neighbouring value.
"""

from __future__ import annotations

import re
from decimal import Decimal

_YUAN = re.compile(r"(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,2})?")
_HUNDRED = Decimal(100)


def yuan_to_fen(s: str) -> int:
    """Parse a non-negative yuan string with at most 2 decimals into integer fen.

    ``"0.01"`` -> 1, ``"12.3"`` -> 1230, ``"12.30"`` -> 1230; ``"1e3"``, ``"-1"``,
    ``"0.001"``, ``"abc"`` raise ``ValueError``.
    """
    if not isinstance(s, str) or not _YUAN.fullmatch(s):
        raise ValueError(f"not a yuan amount: {s!r}")
    fen = Decimal(s) * _HUNDRED
    # The regex already guarantees an integral result; this is a belt-and-braces check.
    if fen != fen.to_integral_value():
        raise ValueError(f"not a yuan amount: {s!r}")
    return int(fen)


def fen_to_yuan(fen: int) -> str:
    """Format non-negative integer fen as a yuan string with exactly 2 decimals (``"12.30"``)."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise ValueError(f"fen must be an int, got {type(fen).__name__}")
    if fen < 0:
        raise ValueError(f"fen must not be negative: {fen}")
    return f"{fen // 100}.{fen % 100:02d}"

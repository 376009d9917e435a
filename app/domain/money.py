"""Money is integer fen (1 yuan = 100 fen), everywhere, always.

Floats never touch an amount: yuan strings from providers are parsed with Decimal in
app.payments.money.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import NewType

from app.domain.errors import InvalidInput

Fen = NewType("Fen", int)

MAX_AMOUNT_FEN = 10_000_000  # 100,000 yuan: far above any single e-bike payment


def require_fen(value: object, *, name: str = "amount_fen", positive: bool = True) -> int:
    """Reject anything but a plain int (bool and float included) in range."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"{name} must be an integer number of fen", field=name)
    if positive and value <= 0:
        raise InvalidInput(f"{name} must be positive", field=name)
    if abs(value) > MAX_AMOUNT_FEN:
        raise InvalidInput(f"{name} exceeds {MAX_AMOUNT_FEN} fen", field=name)
    return value


def fen_to_yuan(fen: int) -> str:
    """Format fen (possibly negative) as yuan with two decimals, for reports.

    Amounts on the providers' wire are parsed and formatted strictly by app.payments.money.
    """
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def mul_div_round(amount: int, numerator: int, denominator: int) -> int:
    """amount × numerator ÷ denominator, rounded half up, in integers only."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    q = Decimal(amount) * Decimal(numerator) / Decimal(denominator)
    return int(q.to_integral_value(rounding=ROUND_HALF_UP))

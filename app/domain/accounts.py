"""Rules for account numbers, PINs, passwords and lockouts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from app.domain.errors import AccountLocked, InvalidInput

# ASCII digits only: ``\d`` alone also matches full-width and other scripts' digits,
# which no pile keypad can type.
PHONE_RE = re.compile(r"^1[3-9]\d{9}$", re.ASCII)
PIN_RE = re.compile(r"^\d{6}$", re.ASCII)
CARD_UID_RE = re.compile(r"^[0-9A-F]{8,20}$")


def validate_phone(value: str) -> str:
    """A mainland China mobile number is the charging account number."""
    if not PHONE_RE.fullmatch(value or ""):
        raise InvalidInput("account number must be an 11-digit mobile number", field="phone")
    return value


def mainland_mobile(country_code: str, pure_number: str) -> str:
    """The number WeChat's getPhoneNumber vouched for, as stored: mainland mobiles only
    (the phone column and the pile keypads know 11-digit numbers and nothing else)."""
    if country_code != "86":
        raise InvalidInput("only mainland China mobile numbers (+86) can be bound",
                           field="code")
    return validate_phone(pure_number)


def validate_pin(pin: str) -> str:
    """The keypad PIN: six digits, not trivially guessable."""
    if not PIN_RE.fullmatch(pin or ""):
        raise InvalidInput("the PIN must be exactly 6 digits", field="pin")
    digits = [int(c) for c in pin]
    steps = {b - a for a, b in pairwise(digits)}
    if len(set(digits)) == 1 or steps in ({1}, {-1}):
        raise InvalidInput("the PIN is too easy to guess", field="pin")
    return pin


def validate_password(password: str) -> str:
    """Operator passwords: 8–128 characters with letters and digits."""
    if not 8 <= len(password or "") <= 128:
        raise InvalidInput("the password must be 8 to 128 characters", field="password")
    if not (re.search(r"[A-Za-z]", password) and re.search(r"\d", password)):
        raise InvalidInput("the password needs letters and digits", field="password")
    return password


def normalise_card_uid(uid: str) -> str:
    value = (uid or "").strip().upper().replace(":", "")
    if not CARD_UID_RE.fullmatch(value):
        raise InvalidInput("a card UID is 8 to 20 hex digits", field="card_uid")
    return value


@dataclass(frozen=True)
class LockoutPolicy:
    max_failures: int
    lock_minutes: int

    def check_not_locked(self, locked_until: datetime | None, now: datetime) -> None:
        if locked_until is not None and locked_until > now:
            raise AccountLocked(
                "too many wrong attempts; try again later",
                locked_until=locked_until.isoformat(),
            )

    def after_failure(self, failures: int, now: datetime) -> tuple[int, datetime | None]:
        """Count a failure; lock (and restart the count) once the limit is reached."""
        failures += 1
        if failures >= self.max_failures:
            return 0, now + timedelta(minutes=self.lock_minutes)
        return failures, None

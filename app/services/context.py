"""What services need from the running application: its settings and password hashing."""

from __future__ import annotations

from flask import current_app
from werkzeug.security import check_password_hash, generate_password_hash

from app.config import Settings
from app.domain.accounts import LockoutPolicy


def settings() -> Settings:
    return current_app.config["SETTINGS"]


def hash_secret(secret: str) -> str:
    return generate_password_hash(secret, method=settings().password_hash_method)


def verify_secret(stored_hash: str | None, secret: str) -> bool:
    return bool(stored_hash) and check_password_hash(stored_hash or "", secret)


def keypad_lockout() -> LockoutPolicy:
    s = settings()
    return LockoutPolicy(s.keypad_max_failures, s.keypad_lock_minutes)


def login_lockout() -> LockoutPolicy:
    s = settings()
    return LockoutPolicy(s.login_max_failures, s.keypad_lock_minutes)

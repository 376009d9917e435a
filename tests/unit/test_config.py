from __future__ import annotations

import pytest

from app.config import load_settings
from app.domain.errors import ConfigurationError

PROD = {"EVC_ENV": "production", "DATABASE_URL": "postgresql://u@db/evc"}


def test_production_refuses_missing_secrets() -> None:
    with pytest.raises(ConfigurationError, match="JWT_SECRET_KEY"):
        load_settings(environ=dict(PROD))


def test_production_refuses_short_secrets_and_sqlite() -> None:
    env = dict(PROD, JWT_SECRET_KEY="short", SECRET_KEY="s" * 40, MQTT_PASSWORD="m")
    with pytest.raises(ConfigurationError, match="shorter than 32"):
        load_settings(environ=env)
    env = dict(env, JWT_SECRET_KEY="j" * 40, DATABASE_URL="sqlite:///x.db")
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        load_settings(environ=env)


def test_production_with_secrets_from_files(tmp_path: object) -> None:
    from pathlib import Path

    secret = Path(str(tmp_path)) / "jwt"
    secret.write_text("j" * 40 + "\n")
    s = load_settings(environ=dict(PROD, JWT_SECRET_KEY_FILE=str(secret), SECRET_KEY="s" * 40,
                                   MQTT_PASSWORD="m"))
    assert s.jwt_secret_key == "j" * 40
    assert s.database_url == "postgresql+psycopg://u@db/evc"
    assert s.to_flask()["JWT_DECODE_ALGORITHMS"] == ["HS256"]


def test_development_defaults() -> None:
    s = load_settings(environ={})
    assert s.database_url.startswith("sqlite:///") and s.database_url.endswith("evcharge.sqlite3")
    assert s.jwt_secret_key and s.mqtt_url == "mqtt://127.0.0.1:1883"


def test_bad_values_are_clear_errors() -> None:
    with pytest.raises(ConfigurationError, match="JWT_ACCESS_MINUTES"):
        load_settings(environ={"JWT_ACCESS_MINUTES": "ten"})
    with pytest.raises(ConfigurationError, match="EVC_ENV"):
        load_settings(environ={"EVC_ENV": "prod"})

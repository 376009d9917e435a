"""The one configuration object, built from the environment in one place.

Every setting has a safe development default, except secrets in production:
``EVC_ENV=production`` with a missing secret is a start-up error, never a
silent default.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from app.domain.errors import ConfigurationError

INSTANCE_DIR = Path(__file__).resolve().parent.parent / "instance"

# Secrets that must be given explicitly when EVC_ENV=production.
PRODUCTION_SECRETS = ("JWT_SECRET_KEY", "SECRET_KEY", "MQTT_PASSWORD")


def _env(environ: dict[str, str], name: str, default: str = "") -> str:
    return environ.get(name, default).strip()


def _env_int(environ: dict[str, str], name: str, default: int) -> int:
    raw = _env(environ, name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from exc


def _env_bool(environ: dict[str, str], name: str, default: bool) -> bool:
    raw = _env(environ, name).lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name} must be a boolean, got {raw!r}")


def _read_secret(environ: dict[str, str], name: str) -> str:
    """A secret comes from NAME or from the file named by NAME_FILE (Docker/K8s style)."""
    path = _env(environ, f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"{name}_FILE={path} cannot be read: {exc}") from exc
    return _env(environ, name)


@dataclass(frozen=True)
class Settings:
    """Typed settings. ``to_flask()`` gives the mapping Flask and its extensions read."""

    env: str = "development"
    secret_key: str = ""
    database_url: str = ""
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_username: str = ""
    mqtt_password: str = ""
    mqtt_client_prefix: str = "evc-platform"
    public_base_url: str = "http://127.0.0.1:5000"
    jwt_secret_key: str = ""
    jwt_access_minutes: int = 30
    jwt_refresh_days: int = 30
    password_hash_method: str = "scrypt"
    keypad_max_failures: int = 5
    keypad_lock_minutes: int = 15
    login_max_failures: int = 10
    wechat_appid: str = ""
    wechat_secret: str = ""
    wechat_api_base_url: str = "https://api.weixin.qq.com/"
    wechatpay_mchid: str = ""
    wechatpay_private_key_path: str = ""
    wechatpay_cert_serial: str = ""
    wechatpay_apiv3_key: str = ""
    wechatpay_public_key_path: str = ""
    wechatpay_public_key_id: str = ""
    wechatpay_api_base_url: str = "https://api.mch.weixin.qq.com"
    alipay_app_id: str = ""
    alipay_private_key_path: str = ""
    alipay_public_key_path: str = ""
    alipay_seller_id: str = ""
    alipay_gateway_url: str = "https://openapi.alipay.com/gateway.do"
    max_request_bytes: int = 1024 * 1024
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    def to_flask(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "ENV_NAME": self.env,
            "SECRET_KEY": self.secret_key,
            "SQLALCHEMY_DATABASE_URI": self.database_url,
            "SQLALCHEMY_ENGINE_OPTIONS": engine_options(self.database_url),
            "MAX_CONTENT_LENGTH": self.max_request_bytes,
            "JWT_SECRET_KEY": self.jwt_secret_key,
            # Pin the algorithm both ways: we sign HS256 and accept nothing else.
            "JWT_ALGORITHM": "HS256",
            "JWT_DECODE_ALGORITHMS": ["HS256"],
            "JWT_ACCESS_TOKEN_EXPIRES": _minutes(self.jwt_access_minutes),
            "JWT_REFRESH_TOKEN_EXPIRES": _days(self.jwt_refresh_days),
            "JWT_TOKEN_LOCATION": ["headers", "query_string"],
            "JWT_QUERY_STRING_NAME": "access_token",
            "JWT_ERROR_MESSAGE_KEY": "message",
            "API_TITLE": "EV-bike charging platform API",
            "API_VERSION": "v1",
            "OPENAPI_VERSION": "3.0.3",
            "OPENAPI_URL_PREFIX": "/api",
            "OPENAPI_JSON_PATH": "openapi.json",
            "SETTINGS": self,
        }
        cfg.update(self.extra)
        return cfg


def _minutes(n: int) -> Any:
    from datetime import timedelta

    return timedelta(minutes=n)


def _days(n: int) -> Any:
    from datetime import timedelta

    return timedelta(days=n)


def engine_options(database_url: str) -> dict[str, Any]:
    if database_url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20}


def normalise_database_url(url: str) -> str:
    """Accept the usual ``postgres://`` spellings and pin the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment (``os.environ`` by default) plus overrides."""
    environ = dict(os.environ if environ is None else environ)
    env = _env(environ, "EVC_ENV", "development")
    if env not in {"development", "production", "testing"}:
        raise ConfigurationError(f"EVC_ENV must be development, production or testing: {env!r}")
    values: dict[str, Any] = {"env": env}
    db_url = _env(environ, "DATABASE_URL")
    if not db_url:
        INSTANCE_DIR.mkdir(exist_ok=True)
        db_url = f"sqlite:///{INSTANCE_DIR / 'evcharge.sqlite3'}"
    values["database_url"] = normalise_database_url(db_url)
    str_settings = {
        "mqtt_url": "MQTT_URL",
        "mqtt_username": "MQTT_USERNAME",
        "mqtt_client_prefix": "MQTT_CLIENT_PREFIX",
        "public_base_url": "PUBLIC_BASE_URL",
        "password_hash_method": "PASSWORD_HASH_METHOD",
        "wechat_appid": "WECHAT_APPID",
        "wechat_api_base_url": "WECHAT_API_BASE_URL",
        "wechatpay_mchid": "WECHATPAY_MCHID",
        "wechatpay_private_key_path": "WECHATPAY_PRIVATE_KEY_PATH",
        "wechatpay_cert_serial": "WECHATPAY_CERT_SERIAL",
        "wechatpay_public_key_path": "WECHATPAY_PUBLIC_KEY_PATH",
        "wechatpay_public_key_id": "WECHATPAY_PUBLIC_KEY_ID",
        "wechatpay_api_base_url": "WECHATPAY_API_BASE_URL",
        "alipay_app_id": "ALIPAY_APP_ID",
        "alipay_private_key_path": "ALIPAY_PRIVATE_KEY_PATH",
        "alipay_public_key_path": "ALIPAY_PUBLIC_KEY_PATH",
        "alipay_seller_id": "ALIPAY_SELLER_ID",
        "alipay_gateway_url": "ALIPAY_GATEWAY_URL",
    }
    for attr, name in str_settings.items():
        raw = _env(environ, name)
        if raw:
            values[attr] = raw
    for attr, name in {
        "secret_key": "SECRET_KEY",
        "jwt_secret_key": "JWT_SECRET_KEY",
        "mqtt_password": "MQTT_PASSWORD",
        "wechat_secret": "WECHAT_SECRET",
        "wechatpay_apiv3_key": "WECHATPAY_APIV3_KEY",
    }.items():
        raw = _read_secret(environ, name)
        if raw:
            values[attr] = raw
    int_settings = {
        "jwt_access_minutes": "JWT_ACCESS_MINUTES",
        "jwt_refresh_days": "JWT_REFRESH_DAYS",
        "keypad_max_failures": "KEYPAD_MAX_FAILURES",
        "keypad_lock_minutes": "KEYPAD_LOCK_MINUTES",
        "login_max_failures": "LOGIN_MAX_FAILURES",
        "max_request_bytes": "MAX_REQUEST_BYTES",
    }
    defaults = {f.name: f.default for f in fields(Settings)}
    for attr, name in int_settings.items():
        values[attr] = _env_int(environ, name, defaults[attr])
    values.update(overrides)
    _check_secrets(values)
    return Settings(**values)


def _check_secrets(values: dict[str, Any]) -> None:
    """Production refuses to start without real secrets; development invents them."""
    missing = [
        name for name in PRODUCTION_SECRETS if not values.get(name.lower())
    ]
    if values["env"] == "production":
        if missing:
            raise ConfigurationError(
                "missing required secrets in production: " + ", ".join(missing)
                + " (set them, or NAME_FILE pointing at a file)"
            )
        short = [n for n in ("JWT_SECRET_KEY", "SECRET_KEY") if len(values[n.lower()]) < 32]
        if short:
            raise ConfigurationError(
                "secrets shorter than 32 characters in production: " + ", ".join(short)
            )
        if values["database_url"].startswith("sqlite"):
            raise ConfigurationError("production needs DATABASE_URL (PostgreSQL), not SQLite")
        return
    for name in ("jwt_secret_key", "secret_key"):
        if not values.get(name):
            values[name] = _dev_secret(name)


def _dev_secret(name: str) -> str:
    """A per-instance random secret kept in instance/, so tokens survive a dev restart."""
    INSTANCE_DIR.mkdir(exist_ok=True)
    path = INSTANCE_DIR / f".{name}"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()

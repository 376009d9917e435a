"""The one configuration object, built from the environment in one place.

Every setting has a safe development default, except secrets in production:
``EVC_ENV=production`` with a missing secret is a start-up error, never a
silent default.
"""

from __future__ import annotations

import os
import re
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
    # Payments (issue 5). Notify URLs default to PUBLIC_BASE_URL + /api/v1/payments/<p>/notify.
    wechatpay_notify_url: str = ""
    wechatpay_platform_certs: str = ""  # "SERIAL=/path/cert.pem,SERIAL2=/path2.pem"
    alipay_notify_url: str = ""
    payment_topup_amounts_fen: tuple[int, ...] = ()  # if set, the only amounts offered
    payment_topup_min_fen: int = 100
    payment_topup_max_fen: int = 50_000
    payment_order_expire_minutes: int = 30
    payment_query_after_minutes: int = 5
    refund_approval_limit_fen: int = 20_000  # operators approve up to this; above: admin
    # Operations (issue 6): incident notifications, escalation, loss checks. See
    # _operations_settings() for the environment names.
    notify_webhook_url: str = ""
    notify_webhook_secret: str = ""
    notify_sms_provider: str = "http"
    notify_sms_url: str = ""
    notify_sms_key_id: str = ""
    notify_sms_secret: str = ""
    notify_sms_sign_name: str = ""
    notify_sms_template: str = ""
    notify_wechat_template_id: str = ""
    notify_wechat_page: str = ""
    # Charge finished (the resident's own message, if they accepted it in the mini-program):
    # the template id (empty: not sent) and which of its keywords carries what.
    notify_wechat_charge_finished_template_id: str = ""
    notify_wechat_charge_finished_fields: tuple[tuple[str, str], ...] = (
        ("reason", "phrase1"), ("energy", "character_string2"), ("cost", "amount3"),
        ("ended_at", "time4"), ("place", "thing5"))
    notify_timeout_s: int = 5
    notify_max_attempts: int = 8
    escalation_critical_minutes: tuple[int, ...] = (0, 5, 15)
    escalation_major_minutes: tuple[int, ...] = (0, 30, 120)
    escalation_minor_minutes: tuple[int, ...] = (0,)
    loss_threshold_per_mille: int = 80
    loss_min_master_wh: int = 20_000
    loss_jump_factor: int = 3
    loss_jump_floor_per_mille: int = 40
    loss_history_days: int = 14
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
        "wechatpay_notify_url": "WECHATPAY_NOTIFY_URL",
        "wechatpay_platform_certs": "WECHATPAY_PLATFORM_CERTS",
        "alipay_notify_url": "ALIPAY_NOTIFY_URL",
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
        "payment_topup_min_fen": "PAYMENT_TOPUP_MIN_FEN",
        "payment_topup_max_fen": "PAYMENT_TOPUP_MAX_FEN",
        "payment_order_expire_minutes": "PAYMENT_ORDER_EXPIRE_MINUTES",
        "payment_query_after_minutes": "PAYMENT_QUERY_AFTER_MINUTES",
        "refund_approval_limit_fen": "REFUND_APPROVAL_LIMIT_FEN",
    }
    defaults = {f.name: f.default for f in fields(Settings)}
    for attr, name in int_settings.items():
        values[attr] = _env_int(environ, name, defaults[attr])
    amounts = _env(environ, "PAYMENT_TOPUP_AMOUNTS_FEN")
    if amounts:
        try:
            values["payment_topup_amounts_fen"] = tuple(
                int(part) for part in amounts.split(",") if part.strip()
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"PAYMENT_TOPUP_AMOUNTS_FEN must be comma-separated integers, got {amounts!r}"
            ) from exc
    values.update(_operations_settings(environ))
    values.update(overrides)
    _check_secrets(values)
    return Settings(**values)


def _minutes_list(environ: dict[str, str], name: str, default: tuple[int, ...]
                  ) -> tuple[int, ...]:
    raw = _env(environ, name)
    if not raw:
        return default
    try:
        values = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be comma-separated minutes, got {raw!r}") from exc
    if not 1 <= len(values) <= 3 or any(v < 0 for v in values) or list(values) != sorted(values):
        raise ConfigurationError(f"{name}: 1 to 3 ascending, non-negative minutes, got {raw!r}")
    return values


# What a charge-finished message can say (app/notify/wechat.py fills them).
CHARGE_FINISHED_FIELD_NAMES = frozenset({"reason", "energy", "cost", "ended_at", "place"})
_TEMPLATE_KEYWORD = re.compile(r"^[a-z_]+[0-9]+$")  # thing1, character_string2, amount3


def _template_fields(name: str, raw: str, known: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """``what=keyword`` pairs, comma-separated: which keyword of a subscribe-message template
    carries what (fields left out are not sent)."""
    pairs = []
    for part in (p.strip() for p in raw.split(",")):
        what, _, keyword = part.partition("=")
        what, keyword = what.strip(), keyword.strip()
        if what not in known or not _TEMPLATE_KEYWORD.match(keyword):
            raise ConfigurationError(
                f"{name}: expected what=keyword pairs with what in {sorted(known)} and a "
                f"template keyword like thing1, got {part!r}")
        pairs.append((what, keyword))
    if len({w for w, _ in pairs}) != len(pairs) or len({k for _, k in pairs}) != len(pairs):
        raise ConfigurationError(f"{name}: each field and each keyword at most once: {raw!r}")
    return tuple(pairs)


def _operations_settings(environ: dict[str, str]) -> dict[str, Any]:
    """Incident notifications, escalation ladders and loss thresholds (README: Operations).

    NOTIFY_WEBHOOK_URL, NOTIFY_WEBHOOK_SECRET(_FILE): JSON POST signed with HMAC-SHA256.
    NOTIFY_SMS_PROVIDER (http), NOTIFY_SMS_URL, NOTIFY_SMS_KEY_ID, NOTIFY_SMS_SECRET(_FILE),
    NOTIFY_SMS_SIGN_NAME, NOTIFY_SMS_TEMPLATE: the SMS gateway.
    NOTIFY_WECHAT_TEMPLATE_ID, NOTIFY_WECHAT_PAGE: subscribe messages (WECHAT_APPID/SECRET).
    NOTIFY_WECHAT_CHARGE_FINISHED_TEMPLATE_ID, NOTIFY_WECHAT_CHARGE_FINISHED_FIELDS: the
    resident's charge-finished message and its keywords, e.g. "reason=phrase1,cost=amount3".
    NOTIFY_TIMEOUT_S, NOTIFY_MAX_ATTEMPTS: per request, and attempts before giving up.
    ESCALATION_{CRITICAL,MAJOR,MINOR}_MINUTES: delays of levels 1-3, e.g. "0,5,15".
    LOSS_THRESHOLD_PER_MILLE, LOSS_MIN_MASTER_WH, LOSS_JUMP_FACTOR,
    LOSS_JUMP_FLOOR_PER_MILLE, LOSS_HISTORY_DAYS: the theft and loss check.
    """
    defaults = {f.name: f.default for f in fields(Settings)}
    values: dict[str, Any] = {}
    for attr, name in {
        "notify_webhook_url": "NOTIFY_WEBHOOK_URL",
        "notify_sms_provider": "NOTIFY_SMS_PROVIDER",
        "notify_sms_url": "NOTIFY_SMS_URL",
        "notify_sms_key_id": "NOTIFY_SMS_KEY_ID",
        "notify_sms_sign_name": "NOTIFY_SMS_SIGN_NAME",
        "notify_sms_template": "NOTIFY_SMS_TEMPLATE",
        "notify_wechat_template_id": "NOTIFY_WECHAT_TEMPLATE_ID",
        "notify_wechat_page": "NOTIFY_WECHAT_PAGE",
        "notify_wechat_charge_finished_template_id": "NOTIFY_WECHAT_CHARGE_FINISHED_TEMPLATE_ID",
    }.items():
        raw = _env(environ, name)
        if raw:
            values[attr] = raw
    for attr, name in {"notify_webhook_secret": "NOTIFY_WEBHOOK_SECRET",
                       "notify_sms_secret": "NOTIFY_SMS_SECRET"}.items():
        raw = _read_secret(environ, name)
        if raw:
            values[attr] = raw
    for attr, name in {
        "notify_timeout_s": "NOTIFY_TIMEOUT_S",
        "notify_max_attempts": "NOTIFY_MAX_ATTEMPTS",
        "loss_threshold_per_mille": "LOSS_THRESHOLD_PER_MILLE",
        "loss_min_master_wh": "LOSS_MIN_MASTER_WH",
        "loss_jump_factor": "LOSS_JUMP_FACTOR",
        "loss_jump_floor_per_mille": "LOSS_JUMP_FLOOR_PER_MILLE",
        "loss_history_days": "LOSS_HISTORY_DAYS",
    }.items():
        values[attr] = _env_int(environ, name, defaults[attr])
        if values[attr] < 0:
            raise ConfigurationError(f"{name} must not be negative")
    if values.get("notify_webhook_url") and not values.get("notify_webhook_secret"):
        raise ConfigurationError("NOTIFY_WEBHOOK_URL needs NOTIFY_WEBHOOK_SECRET (the receiver "
                                 "must be able to check where alarms come from)")
    if values.get("notify_sms_url") and not (values.get("notify_sms_secret")
                                             and values.get("notify_sms_template")):
        raise ConfigurationError("NOTIFY_SMS_URL needs NOTIFY_SMS_SECRET and NOTIFY_SMS_TEMPLATE")
    fields_raw = _env(environ, "NOTIFY_WECHAT_CHARGE_FINISHED_FIELDS")
    if fields_raw:
        values["notify_wechat_charge_finished_fields"] = _template_fields(
            "NOTIFY_WECHAT_CHARGE_FINISHED_FIELDS", fields_raw, CHARGE_FINISHED_FIELD_NAMES)
    for severity in ("critical", "major", "minor"):
        attr = f"escalation_{severity}_minutes"
        values[attr] = _minutes_list(environ, f"ESCALATION_{severity.upper()}_MINUTES",
                                     defaults[attr])
    return values


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

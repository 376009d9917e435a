"""The provider clients, built from the one Settings object.

Keys are read from the files named in the settings (``*_KEY_PATH``); the APIv3 key is a
secret (``WECHATPAY_APIV3_KEY`` or ``WECHATPAY_APIV3_KEY_FILE``). A client is built once per
Settings object and kept on the app (loading RSA keys is the slow part); replacing the
settings (tests, a reload) builds new clients. A provider that is not configured is a
``ConfigurationError`` (503), never a half-built client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import current_app

from app.config import Settings
from app.domain.errors import ConfigurationError
from app.payments.alipay import AlipayClient, AlipayConfig
from app.payments.wechat_v3 import WeChatPayClient, WeChatPayConfig
from app.services.context import settings

_EXTENSION = "evc.payment_clients"
WECHAT_NOTIFY_PATH = "/api/v1/payments/wechat/notify"
ALIPAY_NOTIFY_PATH = "/api/v1/payments/alipay/notify"


def _read(path: str, what: str) -> str:
    if not path:
        raise ConfigurationError(f"{what} is not configured")
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigurationError(f"{what} ({path}) cannot be read: {exc}") from exc


def _platform_certs(spec: str) -> dict[str, str]:
    certs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        serial, sep, path = item.partition("=")
        if not sep or not serial.strip() or not path.strip():
            raise ConfigurationError("WECHATPAY_PLATFORM_CERTS is SERIAL=path[,SERIAL=path]")
        certs[serial.strip()] = _read(path.strip(), f"platform certificate {serial.strip()}")
    return certs


def wechat_notify_url(s: Settings) -> str:
    return s.wechatpay_notify_url or s.public_base_url.rstrip("/") + WECHAT_NOTIFY_PATH


def alipay_notify_url(s: Settings) -> str:
    return s.alipay_notify_url or s.public_base_url.rstrip("/") + ALIPAY_NOTIFY_PATH


def build_wechat_client(s: Settings) -> WeChatPayClient:
    if not (s.wechatpay_mchid and s.wechat_appid and s.wechatpay_cert_serial
            and s.wechatpay_apiv3_key):
        raise ConfigurationError(
            "WeChat Pay is not configured (WECHATPAY_MCHID, WECHAT_APPID, "
            "WECHATPAY_CERT_SERIAL, WECHATPAY_APIV3_KEY, key paths)"
        )
    public_key = (
        _read(s.wechatpay_public_key_path, "WECHATPAY_PUBLIC_KEY_PATH")
        if s.wechatpay_public_key_path else None
    )
    try:
        config = WeChatPayConfig(
            mchid=s.wechatpay_mchid,
            appid=s.wechat_appid,
            merchant_private_key_pem=_read(s.wechatpay_private_key_path,
                                           "WECHATPAY_PRIVATE_KEY_PATH"),
            merchant_serial_no=s.wechatpay_cert_serial,
            apiv3_key=s.wechatpay_apiv3_key,
            notify_url=wechat_notify_url(s),
            platform_public_key_pem=public_key,
            platform_public_key_id=(s.wechatpay_public_key_id or None) if public_key else None,
            platform_certificates=_platform_certs(s.wechatpay_platform_certs),
            api_base_url=s.wechatpay_api_base_url,
        )
        return WeChatPayClient(config)
    except ValueError as exc:
        raise ConfigurationError(f"WeChat Pay configuration: {exc}") from exc


def build_alipay_client(s: Settings) -> AlipayClient:
    if not s.alipay_app_id:
        raise ConfigurationError("Alipay is not configured (ALIPAY_APP_ID, key paths)")
    try:
        config = AlipayConfig(
            app_id=s.alipay_app_id,
            app_private_key_pem=_read(s.alipay_private_key_path, "ALIPAY_PRIVATE_KEY_PATH"),
            alipay_public_key_pem=_read(s.alipay_public_key_path, "ALIPAY_PUBLIC_KEY_PATH"),
            notify_url=alipay_notify_url(s),
            seller_id=s.alipay_seller_id or None,
            gateway_url=s.alipay_gateway_url,
        )
        return AlipayClient(config)
    except ValueError as exc:
        raise ConfigurationError(f"Alipay configuration: {exc}") from exc


def _cached(name: str, build: Any) -> Any:
    s = settings()
    cache: dict[str, tuple[Settings, Any]] = current_app.extensions.setdefault(_EXTENSION, {})
    hit = cache.get(name)
    if hit is not None and hit[0] is s:
        return hit[1]
    client = build(s)
    cache[name] = (s, client)
    return client


def wechat_client() -> WeChatPayClient:
    client: WeChatPayClient = _cached("wechat", build_wechat_client)
    return client


def alipay_client() -> AlipayClient:
    client: AlipayClient = _cached("alipay", build_alipay_client)
    return client

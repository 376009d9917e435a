"""WeChat Pay API v3 for JSAPI (mini-program) payments, refunds, notifications and bills.

Why ``cryptography`` directly and not ``wechatpayv3`` (2.0.4, checked and not used):

* The protocol is small and fully specified: SHA256withRSA (PKCS#1 v1.5) over
  ``METHOD\\nPATH?QUERY\\nTS\\nNONCE\\nBODY\\n`` for requests, over ``TS\\nNONCE\\nBODY\\n`` for
  responses and notifications, and AES-256-GCM for notification resources. Owning those few
  lines lets us sign and verify the exact bytes on the wire and test them offline.
* wechatpayv3 does not check ``Wechatpay-Timestamp`` freshness (a 30-day-old notification
  passes) nor de-duplicate; with an unknown ``Wechatpay-Serial`` it downloads certificates from
  WeChat (network I/O inside a webhook, and offline tests fail); in public-key mode it holds a
  single key, while during WeChat's platform-certificate -> public-key migration notifications
  arrive signed by either; it verifies responses over ``response.text`` (re-decoded), not the
  raw body; and its ``callback`` returns ``None`` for every failure, so a tampered body, a wrong
  key and a broken ciphertext look the same. Each of those becomes a specific error here.
* Its ``timeout`` defaults to ``None`` (unbounded waits); here every call is bounded.

Formats follow pay.weixin.qq.com (签名生成 / 签名验证 / 小程序调起支付 / 支付成功回调通知 /
退款结果通知 / 申请交易账单 / 下载账单). Money is integer fen, as in the v3 API itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.payments.errors import (
    NotificationMalformed,
    ProviderMismatch,
    ProviderRejected,
    ProviderUnavailable,
    SignatureInvalid,
    StaleNotification,
)

SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
DEFAULT_API_BASE_URL = "https://api.mch.weixin.qq.com"
MAX_CLOCK_SKEW = timedelta(minutes=5)
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
USER_AGENT = "evcharge-payments/1.0 (+wechatpay-apiv3; python-requests)"

_OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-|*]{6,32}")
_OUT_REFUND_NO = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
_TIMESTAMP = re.compile(r"[0-9]{1,10}")
_TRUSTED_DOWNLOAD_HOST_SUFFIXES = (".weixin.qq.com", ".wechatpay.cn")

_T = TypeVar("_T")

TRANSACTION_EVENTS = frozenset({"TRANSACTION.SUCCESS"})
REFUND_EVENTS = frozenset({"REFUND.SUCCESS", "REFUND.ABNORMAL", "REFUND.CLOSED"})


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class WeChatPayConfig:
    """Merchant credentials and endpoints. Secrets are PEM strings, never file paths.

    ``platform_public_key_pem`` + ``platform_public_key_id`` is WeChat's public-key mode
    (id looks like ``PUB_KEY_ID_...``); ``platform_certificates`` maps a platform certificate
    serial to its certificate or public-key PEM. Both may be set during the migration: the
    key used for each response / notification is chosen by its ``Wechatpay-Serial``.
    """

    mchid: str
    appid: str
    merchant_private_key_pem: str
    merchant_serial_no: str
    apiv3_key: str | bytes
    notify_url: str
    platform_public_key_pem: str | None = None
    platform_public_key_id: str | None = None
    platform_certificates: Mapping[str, str] = field(default_factory=dict)
    refund_notify_url: str | None = None
    api_base_url: str = DEFAULT_API_BASE_URL
    timeout: tuple[float, float] = (5.0, 15.0)

    def __post_init__(self) -> None:
        if len(self.apiv3_key_bytes) != 32:
            raise ValueError("APIv3 key must be exactly 32 bytes")
        if (self.platform_public_key_pem is None) != (self.platform_public_key_id is None):
            raise ValueError("platform_public_key_pem and platform_public_key_id go together")
        if self.platform_public_key_pem is None and not self.platform_certificates:
            raise ValueError("configure a platform public key or platform certificates")

    @property
    def apiv3_key_bytes(self) -> bytes:
        key = self.apiv3_key
        return key if isinstance(key, bytes) else key.encode("utf-8")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class WeChatTransaction:
    """A transaction as WeChat reports it (notification resource or order query)."""

    appid: str
    mchid: str
    out_trade_no: str
    transaction_id: str
    trade_state: str
    amount_total_fen: int
    payer_total_fen: int | None
    payer_openid: str
    success_time: datetime | None
    trade_type: str = ""
    trade_state_desc: str = ""
    attach: str = ""
    currency: str = "CNY"
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_paid(self) -> bool:
        return self.trade_state == "SUCCESS"


@dataclass(frozen=True)
class WeChatRefund:
    """A refund as WeChat reports it (refund notification, refund response or query)."""

    out_trade_no: str
    transaction_id: str
    out_refund_no: str
    refund_id: str
    refund_status: str
    amount_refund_fen: int
    amount_total_fen: int
    payer_refund_fen: int | None = None
    mchid: str | None = None
    success_time: datetime | None = None
    user_received_account: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class WeChatNotification:
    """A verified, decrypted notification; ``id`` is WeChat's notification id (for dedupe)."""

    id: str
    create_time: str
    event_type: str
    resource_type: str
    summary: str
    resource: WeChatTransaction | WeChatRefund


# --------------------------------------------------------------------------- crypto helpers


def load_private_key(pem: str | bytes) -> rsa.RSAPrivateKey:
    """Load an RSA private key (PKCS#8 ``apiclient_key.pem`` or PKCS#1)."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("merchant private key must be RSA")
    return key


def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    """Load an RSA public key from a PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE PEM."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    if b"-----BEGIN CERTIFICATE-----" in data:
        key: Any = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("platform key must be RSA")
    return key


def rsa_sign(private_key: rsa.RSAPrivateKey, message: bytes) -> str:
    """SHA256withRSA (PKCS#1 v1.5), base64: the only signature WeChat Pay v3 uses."""
    signature = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def rsa_verify(public_key: rsa.RSAPublicKey, message: bytes, signature_b64: str) -> bool:
    """Verify a base64 SHA256withRSA signature; malformed base64 simply does not verify."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def request_sign_message(
    method: str, path_with_query: str, timestamp: str, nonce: str, body: bytes
) -> bytes:
    """The request signing string: ``METHOD\\nURL\\nTS\\nNONCE\\nBODY\\n`` (body may be empty)."""
    head = f"{method.upper()}\n{path_with_query}\n{timestamp}\n{nonce}\n".encode()
    return head + body + b"\n"


def response_sign_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    """The response / notification signing string: ``TS\\nNONCE\\nBODY\\n`` over raw bytes."""
    return f"{timestamp}\n{nonce}\n".encode() + body + b"\n"


def build_authorization(
    *,
    mchid: str,
    serial_no: str,
    private_key: rsa.RSAPrivateKey,
    method: str,
    path_with_query: str,
    body: bytes,
    timestamp: str,
    nonce: str,
) -> str:
    """The ``Authorization`` header value for one request."""
    signature = rsa_sign(
        private_key, request_sign_message(method, path_with_query, timestamp, nonce, body)
    )
    return (
        f'{SIGNATURE_TYPE} mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
        f'timestamp="{timestamp}",serial_no="{serial_no}"'
    )


def decrypt_resource(
    apiv3_key: bytes, nonce: str, ciphertext_b64: str, associated_data: str
) -> bytes:
    """AEAD_AES_256_GCM with the APIv3 key; the 16-byte tag is the ciphertext's tail."""
    try:
        ciphertext = base64.b64decode(ciphertext_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NotificationMalformed("resource ciphertext is not base64") from exc
    try:
        return AESGCM(apiv3_key).decrypt(
            nonce.encode("utf-8"), ciphertext, associated_data.encode("utf-8")
        )
    except (InvalidTag, ValueError) as exc:
        raise NotificationMalformed(
            "resource does not decrypt with our APIv3 key", code="decrypt_failed"
        ) from exc


def new_nonce() -> str:
    """32 random upper-case hex characters (WeChat allows up to 32)."""
    return secrets.token_hex(16).upper()


# --------------------------------------------------------------------------- parsing


def _str(data: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise NotificationMalformed(f"field {key!r} missing or not a string")
    return value


def _fen(data: Mapping[str, Any], key: str) -> int:
    """A required amount in fen: a JSON integer (not a bool, not a string), >= 0."""
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise NotificationMalformed(f"amount {key!r} missing or not a non-negative integer")
    return value


def _opt_fen(data: Mapping[str, Any], key: str) -> int | None:
    return None if data.get(key) is None else _fen(data, key)


def _obj(data: Mapping[str, Any], key: str, *, required: bool = True) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise NotificationMalformed(f"field {key!r} missing or not an object")
    return value


def _time(data: Mapping[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise NotificationMalformed(f"time {key!r} is not a string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise NotificationMalformed(f"time {key!r} is not RFC 3339: {value!r}") from exc
    if parsed.tzinfo is None:
        raise NotificationMalformed(f"time {key!r} has no offset: {value!r}")
    return parsed


def parse_transaction(data: Mapping[str, Any]) -> WeChatTransaction:
    """Parse a v3 transaction object (notification resource or query response)."""
    amount = _obj(data, "amount")
    currency = _str(amount, "currency", required=False) or "CNY"
    if currency != "CNY":
        raise NotificationMalformed(f"unexpected currency {currency!r}")
    return WeChatTransaction(
        appid=_str(data, "appid"),
        mchid=_str(data, "mchid"),
        out_trade_no=_str(data, "out_trade_no"),
        transaction_id=_str(data, "transaction_id", required=False),
        trade_state=_str(data, "trade_state"),
        amount_total_fen=_fen(amount, "total"),
        payer_total_fen=_opt_fen(amount, "payer_total"),
        payer_openid=_str(_obj(data, "payer", required=False), "openid", required=False),
        success_time=_time(data, "success_time"),
        trade_type=_str(data, "trade_type", required=False),
        trade_state_desc=_str(data, "trade_state_desc", required=False),
        attach=_str(data, "attach", required=False),
        currency=currency,
        raw=dict(data),
    )


def parse_refund(data: Mapping[str, Any]) -> WeChatRefund:
    """Parse a refund object: notifications say ``refund_status``, the API says ``status``."""
    amount = _obj(data, "amount")
    status_key = "refund_status" if "refund_status" in data else "status"
    mchid = data.get("mchid")
    if mchid is not None and not isinstance(mchid, str):
        raise NotificationMalformed("field 'mchid' is not a string")
    return WeChatRefund(
        out_trade_no=_str(data, "out_trade_no"),
        transaction_id=_str(data, "transaction_id", required=False),
        out_refund_no=_str(data, "out_refund_no"),
        refund_id=_str(data, "refund_id"),
        refund_status=_str(data, status_key),
        amount_refund_fen=_fen(amount, "refund"),
        amount_total_fen=_fen(amount, "total"),
        payer_refund_fen=_opt_fen(amount, "payer_refund"),
        mchid=mchid,
        success_time=_time(data, "success_time"),
        user_received_account=_str(data, "user_received_account", required=False),
        raw=dict(data),
    )


def check_transaction(
    result: WeChatTransaction | WeChatRefund | WeChatNotification,
    expected_appid: str,
    expected_mchid: str,
) -> None:
    """Raise ProviderMismatch unless the result belongs to our appid and mchid.

    A validly signed message for another merchant (shared platform keys across a group, a
    misrouted notify_url) must never credit us. Refunds carry no appid, only mchid.
    """
    if isinstance(result, WeChatNotification):
        result = result.resource
    if isinstance(result, WeChatTransaction):
        if result.appid != expected_appid:
            raise ProviderMismatch(f"appid {result.appid!r} is not ours")
        if result.mchid != expected_mchid:
            raise ProviderMismatch(f"mchid {result.mchid!r} is not ours")
    elif result.mchid != expected_mchid:
        raise ProviderMismatch(f"refund mchid {result.mchid!r} is not ours")


# --------------------------------------------------------------------------- replies


def notification_ack() -> tuple[int, bytes, dict[str, str]]:
    """Accepted: WeChat wants HTTP 200 or 204 and no body (v3 通知应答)."""
    return 204, b"", {}


def notification_fail(message: str, status: int = 500) -> tuple[int, bytes, dict[str, str]]:
    """Not accepted, please retry: 4xx/5xx with ``{"code": "FAIL", "message": ...}``.

    WeChat decides by the HTTP status; the body is only recorded. ``message`` is capped at
    64 characters (the documented limit).
    """
    if not 400 <= status <= 599:
        raise ValueError("a failure reply must be 4xx or 5xx")
    body = json.dumps({"code": "FAIL", "message": message[:64] or "FAIL"}, ensure_ascii=False)
    return status, body.encode("utf-8"), {"Content-Type": "application/json; charset=utf-8"}


# --------------------------------------------------------------------------- client


def _default_clock() -> datetime:
    return datetime.now(UTC)


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("expire_at must be timezone-aware")
    return moment.astimezone(BEIJING).isoformat(timespec="seconds")


class WeChatPayClient:
    """Talks WeChat Pay v3 for one merchant; every network wait is bounded by ``timeout``."""

    def __init__(
        self,
        config: WeChatPayConfig,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], datetime] = _default_clock,
    ) -> None:
        self.config = config
        self._private_key = load_private_key(config.merchant_private_key_pem)
        keys: dict[str, rsa.RSAPublicKey] = {}
        for serial, pem in config.platform_certificates.items():
            keys[serial.strip().upper()] = load_public_key(pem)
        if config.platform_public_key_pem and config.platform_public_key_id:
            keys[config.platform_public_key_id.strip().upper()] = load_public_key(
                config.platform_public_key_pem
            )
        self._platform_keys = keys
        self._session = session or requests.Session()
        self._clock = clock
        self._base = config.api_base_url.rstrip("/")

    # ----------------------------------------------------------------- signatures

    def verify_signed(
        self, headers: Mapping[str, str], body: bytes, now: datetime | None = None
    ) -> None:
        """Verify WeChat's signature headers over the raw body and the timestamp's freshness.

        Unknown ``Wechatpay-Serial`` -> SignatureInvalid without any network call (fetching
        keys inside a webhook lets an attacker make us call out). WeChat's deliberate
        bad-signature probes (``WECHATPAY/SIGNTEST/...``) fail here like any forgery.
        """
        lowered = {k.lower(): v for k, v in headers.items()}
        signature = lowered.get("wechatpay-signature", "")
        timestamp = lowered.get("wechatpay-timestamp", "")
        nonce = lowered.get("wechatpay-nonce", "")
        serial = lowered.get("wechatpay-serial", "")
        signature_type = lowered.get("wechatpay-signature-type")
        if not (signature and timestamp and nonce and serial):
            raise SignatureInvalid("missing Wechatpay-* signature headers")
        if signature_type is not None and signature_type != SIGNATURE_TYPE:
            raise SignatureInvalid(f"unsupported Wechatpay-Signature-Type {signature_type!r}")
        public_key = self._platform_keys.get(serial.strip().upper())
        if public_key is None:
            raise SignatureInvalid(f"unknown Wechatpay-Serial {serial!r}")
        if not rsa_verify(public_key, response_sign_message(timestamp, nonce, body), signature):
            raise SignatureInvalid("Wechatpay-Signature does not verify")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise SignatureInvalid("Wechatpay-Timestamp is not a unix timestamp")
        moment = datetime.fromtimestamp(int(timestamp), UTC)
        current = now or self._clock()
        if current.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if abs(current - moment) >= MAX_CLOCK_SKEW:
            raise StaleNotification(f"Wechatpay-Timestamp {timestamp} is 5 minutes or more off")

    def verify_notification(
        self, headers: Mapping[str, str], body: bytes, now: datetime | None = None
    ) -> WeChatNotification:
        """Verify, decrypt and parse a payment/refund notification from its RAW body.

        Also checks that it is for our appid/mchid (ProviderMismatch). Dedupe on the
        returned ``id`` (and on out_trade_no / out_refund_no) is the caller's job.
        """
        self.verify_signed(headers, body, now)
        try:
            envelope = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise NotificationMalformed("notification body is not JSON") from exc
        if not isinstance(envelope, dict):
            raise NotificationMalformed("notification body is not a JSON object")
        event_type = _str(envelope, "event_type")
        resource_type = _str(envelope, "resource_type")
        if resource_type != "encrypt-resource":
            raise NotificationMalformed(f"unexpected resource_type {resource_type!r}")
        resource = _obj(envelope, "resource")
        algorithm = _str(resource, "algorithm")
        if algorithm != "AEAD_AES_256_GCM":
            raise NotificationMalformed(f"unsupported algorithm {algorithm!r}")
        plaintext = decrypt_resource(
            self.config.apiv3_key_bytes,
            _str(resource, "nonce"),
            _str(resource, "ciphertext"),
            _str(resource, "associated_data", required=False),
        )
        try:
            inner = json.loads(plaintext.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise NotificationMalformed("decrypted resource is not JSON") from exc
        if not isinstance(inner, dict):
            raise NotificationMalformed("decrypted resource is not a JSON object")
        original_type = _str(resource, "original_type", required=False)
        parsed: WeChatTransaction | WeChatRefund
        if event_type in TRANSACTION_EVENTS:
            if original_type not in ("", "transaction"):
                raise NotificationMalformed(f"{event_type} with original_type {original_type!r}")
            parsed = parse_transaction(inner)
            if parsed.trade_state != "SUCCESS":
                raise NotificationMalformed(f"{event_type} with trade_state {parsed.trade_state}")
        elif event_type in REFUND_EVENTS:
            if original_type not in ("", "refund"):
                raise NotificationMalformed(f"{event_type} with original_type {original_type!r}")
            parsed = parse_refund(inner)
            if parsed.mchid is None:
                raise NotificationMalformed("refund notification without mchid")
            if event_type != f"REFUND.{parsed.refund_status}":
                raise NotificationMalformed(f"{event_type} with status {parsed.refund_status}")
        else:
            raise NotificationMalformed(f"unsupported event_type {event_type!r}")
        check_transaction(parsed, self.config.appid, self.config.mchid)
        return WeChatNotification(
            id=_str(envelope, "id"),
            create_time=_str(envelope, "create_time", required=False),
            event_type=event_type,
            resource_type=resource_type,
            summary=_str(envelope, "summary", required=False),
            resource=parsed,
        )

    # ----------------------------------------------------------------- mini-program

    def jsapi_pay_params(
        self, prepay_id: str, *, timestamp: int | None = None, nonce: str | None = None
    ) -> dict[str, str]:
        """Exactly the arguments of ``wx.requestPayment`` (the mini-program passes no appId).

        ``paySign`` is SHA256withRSA with the merchant key over
        ``appId\\ntimeStamp\\nnonceStr\\npackage\\n``.
        """
        if not prepay_id or any(c in prepay_id for c in "\r\n"):
            raise ValueError("invalid prepay_id")
        ts = str(timestamp if timestamp is not None else int(self._clock().timestamp()))
        nonce_str = nonce or new_nonce()
        package = f"prepay_id={prepay_id}"
        message = f"{self.config.appid}\n{ts}\n{nonce_str}\n{package}\n".encode()
        return {
            "timeStamp": ts,
            "nonceStr": nonce_str,
            "package": package,
            "signType": "RSA",
            "paySign": rsa_sign(self._private_key, message),
        }

    # ----------------------------------------------------------------- API calls

    def create_jsapi_order(
        self,
        out_trade_no: str,
        description: str,
        amount_fen: int,
        payer_openid: str,
        expire_at: datetime | None = None,
        attach: str | None = None,
    ) -> str:
        """POST /v3/pay/transactions/jsapi and return the ``prepay_id``.

        Re-posting the same out_trade_no with the same parameters is safe (WeChat returns the
        same prepay_id); changed parameters are rejected by WeChat (ProviderRejected).
        """
        _check_out_trade_no(out_trade_no)
        _check_positive_fen(amount_fen)
        if not description or len(description) > 127:
            raise ValueError("description must be 1..127 characters")
        if not payer_openid:
            raise ValueError("payer_openid is required for JSAPI")
        body: dict[str, Any] = {
            "appid": self.config.appid,
            "mchid": self.config.mchid,
            "description": description,
            "out_trade_no": out_trade_no,
            "notify_url": self.config.notify_url,
            "amount": {"total": amount_fen, "currency": "CNY"},
            "payer": {"openid": payer_openid},
        }
        if expire_at is not None:
            body["time_expire"] = _rfc3339(expire_at)
        if attach:
            if len(attach) > 128:
                raise ValueError("attach must be at most 128 characters")
            body["attach"] = attach
        data = self._call_json("POST", "/v3/pay/transactions/jsapi", body=body)
        prepay_id = data.get("prepay_id")
        if not isinstance(prepay_id, str) or not prepay_id:
            raise ProviderUnavailable("response has no prepay_id", code="response_malformed")
        return prepay_id

    def query_order(self, out_trade_no: str) -> WeChatTransaction:
        """GET /v3/pay/transactions/out-trade-no/{no}?mchid=...; unknown order ->
        ProviderRejected with provider_code ORDER_NOT_EXIST."""
        _check_out_trade_no(out_trade_no)
        data = self._call_json(
            "GET",
            f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}",
            query={"mchid": self.config.mchid},
        )
        result = _parse_response(parse_transaction, data)
        check_transaction(result, self.config.appid, self.config.mchid)
        return result

    def close_order(self, out_trade_no: str) -> None:
        """POST .../close (204). Closing an already-closed order is accepted by WeChat."""
        _check_out_trade_no(out_trade_no)
        self._call(
            "POST",
            f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}/close",
            body={"mchid": self.config.mchid},
        )

    def refund(
        self,
        out_trade_no: str,
        out_refund_no: str,
        refund_fen: int,
        total_fen: int,
        reason: str | None = None,
        notify_url: str | None = None,
    ) -> WeChatRefund:
        """POST /v3/refund/domestic/refunds. Retry with the SAME out_refund_no: WeChat treats
        it as the same refund, which is what makes a retried refund safe."""
        _check_out_trade_no(out_trade_no)
        if not _OUT_REFUND_NO.fullmatch(out_refund_no):
            raise ValueError("out_refund_no must be 1..64 of [0-9A-Za-z_-|*@]")
        _check_positive_fen(refund_fen)
        _check_positive_fen(total_fen)
        if refund_fen > total_fen:
            raise ValueError("refund exceeds the order total")
        body: dict[str, Any] = {
            "out_trade_no": out_trade_no,
            "out_refund_no": out_refund_no,
            "amount": {"refund": refund_fen, "total": total_fen, "currency": "CNY"},
        }
        if reason:
            body["reason"] = reason[:80]
        url = notify_url or self.config.refund_notify_url or self.config.notify_url
        if url:
            body["notify_url"] = url
        data = self._call_json("POST", "/v3/refund/domestic/refunds", body=body)
        return _parse_response(parse_refund, data)

    def query_refund(self, out_refund_no: str) -> WeChatRefund:
        """GET /v3/refund/domestic/refunds/{out_refund_no}."""
        if not _OUT_REFUND_NO.fullmatch(out_refund_no):
            raise ValueError("out_refund_no must be 1..64 of [0-9A-Za-z_-|*@]")
        data = self._call_json(
            "GET", f"/v3/refund/domestic/refunds/{quote(out_refund_no, safe='')}"
        )
        return _parse_response(parse_refund, data)

    def trade_bill(self, bill_date: date, bill_type: str = "ALL") -> str:
        """Fetch one day's trade bill text (GET /v3/bill/tradebill, then its download_url).

        The download is signed with our Authorization like any request, but its response is
        NOT signed by WeChat (documented); integrity comes from the SHA1 ``hash_value`` of the
        signed tradebill response, which is checked here.
        """
        if bill_type not in ("ALL", "SUCCESS", "REFUND"):
            raise ValueError("bill_type must be ALL, SUCCESS or REFUND")
        data = self._call_json(
            "GET",
            "/v3/bill/tradebill",
            query={"bill_date": bill_date.isoformat(), "bill_type": bill_type},
        )
        download_url = data.get("download_url")
        hash_type = data.get("hash_type")
        hash_value = data.get("hash_value")
        if not (
            isinstance(download_url, str) and isinstance(hash_value, str) and hash_type == "SHA1"
        ):
            raise ProviderUnavailable("tradebill response malformed", code="response_malformed")
        path_with_query = self._download_path(download_url.strip())
        _, _, content = self._send(
            "GET", download_url.strip(), path_with_query, b"", verify=False, follow=True
        )
        if hashlib.sha1(content).hexdigest() != hash_value.strip().lower():
            raise ProviderUnavailable("bill file hash mismatch", code="bill_hash_mismatch")
        try:
            return content.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ProviderUnavailable("bill file is not UTF-8", code="response_malformed") from exc

    # ----------------------------------------------------------------- transport

    def _download_path(self, url: str) -> str:
        parts = urlsplit(url)
        base = urlsplit(self._base)
        same_origin = (parts.scheme, parts.netloc) == (base.scheme, base.netloc)
        trusted = parts.scheme == "https" and (parts.hostname or "").endswith(
            _TRUSTED_DOWNLOAD_HOST_SUFFIXES
        )
        if not (same_origin or trusted):
            raise ProviderRejected(f"refusing bill download from {parts.netloc!r}")
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def _call_json(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        content = self._call(method, path, query=query, body=body)
        try:
            data = json.loads(content.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProviderUnavailable("response is not JSON", code="response_malformed") from exc
        if not isinstance(data, dict):
            raise ProviderUnavailable("response is not an object", code="response_malformed")
        return data

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> bytes:
        path_with_query = path + (f"?{urlencode(query)}" if query else "")
        payload = (
            json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            if body is not None
            else b""
        )
        _, _, content = self._send(method, self._base + path_with_query, path_with_query, payload)
        return content

    def _send(
        self,
        method: str,
        url: str,
        path_with_query: str,
        payload: bytes,
        *,
        verify: bool = True,
        follow: bool = False,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Sign and send exactly ``payload``; verify a 2xx response's signature."""
        now = self._clock()
        headers = {
            "Authorization": build_authorization(
                mchid=self.config.mchid,
                serial_no=self.config.merchant_serial_no,
                private_key=self._private_key,
                method=method,
                path_with_query=path_with_query,
                body=payload,
                timestamp=str(int(now.timestamp())),
                nonce=new_nonce(),
            ),
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if payload:
            headers["Content-Type"] = "application/json"
        if self.config.platform_public_key_id:
            # In public-key mode WeChat signs the response with the key named here.
            headers["Wechatpay-Serial"] = self.config.platform_public_key_id
        try:
            response = self._session.request(
                method,
                url,
                data=payload or None,
                headers=headers,
                timeout=self.config.timeout,
                allow_redirects=follow,
            )
            content = response.content
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"WeChat Pay unreachable: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            if verify:
                self.verify_signed(response.headers, content)
            return status, response.headers, content
        _raise_for_error(status, content)
        raise AssertionError("unreachable")  # pragma: no cover


def _raise_for_error(status: int, content: bytes) -> None:
    code = message = None
    try:
        data = json.loads(content.decode("utf-8"))
        if isinstance(data, dict):
            code = data.get("code") if isinstance(data.get("code"), str) else None
            message = data.get("message") if isinstance(data.get("message"), str) else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        pass
    text = f"WeChat Pay HTTP {status}: {code or '-'} {message or ''}".strip()
    if status >= 500 or status == 429 or status < 400:
        raise ProviderUnavailable(text, provider_code=code, http_status=status)
    raise ProviderRejected(text, provider_code=code, http_status=status)


def _parse_response(parser: Callable[[Mapping[str, Any]], _T], data: Mapping[str, Any]) -> _T:
    try:
        return parser(data)
    except NotificationMalformed as exc:
        raise ProviderUnavailable(str(exc), code="response_malformed") from exc


def _check_out_trade_no(out_trade_no: str) -> None:
    if not isinstance(out_trade_no, str) or not _OUT_TRADE_NO.fullmatch(out_trade_no):
        raise ValueError("out_trade_no must be 6..32 of [0-9A-Za-z_-|*]")


def _check_positive_fen(fen: int) -> None:
    if isinstance(fen, bool) or not isinstance(fen, int) or fen <= 0:
        raise ValueError("amount must be a positive integer number of fen")

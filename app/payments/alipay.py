"""Alipay open platform (gateway.do, RSA2): trades, refunds, bills and async notifications.

What comes from ``alipay-sdk-python`` and what does not, and why:

* From the SDK: the request and model classes (``AlipayTradeCreateRequest`` + model, ...),
  which produce the method name and the ``biz_content`` JSON, and the request signer
  (``get_sign_content`` + ``sign_with_rsa2``, which needs a PKCS#1 key: a PKCS#8 key is
  converted here).
* Not ``DefaultAlipayClient.execute``: its HTTP layer cannot reach a gateway on a non-default
  port (``url += port`` is str + int -> TypeError, and the connection always uses 80/443), so
  it cannot be pointed at a local fake; it stamps ``timestamp`` in the server's local zone
  (Alipay wants Beijing time); its non-200 path concatenates str and bytes; and its response
  check accepts SHA1 signatures. Transport here is ``requests`` with bounded timeouts.
* Not ``SignatureUtils.verify_with_rsa``: it raises instead of returning False and accepts a
  SHA1 (``RSA``) signature even when ``sign_type=RSA2`` is claimed, because ``rsa.verify``
  detects the hash from the signature. Verification here is SHA256withRSA only
  (``cryptography``), after insisting on ``sign_type == "RSA2"``.

Notification signing string (异步通知验签): every posted parameter except ``sign`` and
``sign_type``, values as posted (URL-decoded once, by the web framework), sorted by key,
``k=v`` joined by ``&``. Alipay's own SDKs disagree on empty values (``getSignCheckContentV1``
keeps them, EasySDK drops them), so the empty-free string is tried first and, only if empty
values are present, the string with them; either way the signature must verify.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import requests
from alipay.aop.api.domain.AlipayDataDataserviceBillDownloadurlQueryModel import (
    AlipayDataDataserviceBillDownloadurlQueryModel,
)
from alipay.aop.api.domain.AlipayTradeCreateModel import AlipayTradeCreateModel
from alipay.aop.api.domain.AlipayTradeFastpayRefundQueryModel import (
    AlipayTradeFastpayRefundQueryModel,
)
from alipay.aop.api.domain.AlipayTradePrecreateModel import AlipayTradePrecreateModel
from alipay.aop.api.domain.AlipayTradeQueryModel import AlipayTradeQueryModel
from alipay.aop.api.domain.AlipayTradeRefundModel import AlipayTradeRefundModel
from alipay.aop.api.request.AlipayDataDataserviceBillDownloadurlQueryRequest import (
    AlipayDataDataserviceBillDownloadurlQueryRequest,
)
from alipay.aop.api.request.AlipayTradeCreateRequest import AlipayTradeCreateRequest
from alipay.aop.api.request.AlipayTradeFastpayRefundQueryRequest import (
    AlipayTradeFastpayRefundQueryRequest,
)
from alipay.aop.api.request.AlipayTradePrecreateRequest import AlipayTradePrecreateRequest
from alipay.aop.api.request.AlipayTradeQueryRequest import AlipayTradeQueryRequest
from alipay.aop.api.request.AlipayTradeRefundRequest import AlipayTradeRefundRequest
from alipay.aop.api.util.SignatureUtils import get_sign_content, sign_with_rsa2
from alipay.aop.api.util.WebUtils import url_encode
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from app.payments.errors import (
    NotificationMalformed,
    ProviderMismatch,
    ProviderRejected,
    ProviderUnavailable,
    SignatureInvalid,
)
from app.payments.money import fen_to_yuan, yuan_to_fen

DEFAULT_GATEWAY_URL = "https://openapi.alipay.com/gateway.do"
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
CHARSET = "utf-8"
TRADE_STATUSES = frozenset({"WAIT_BUYER_PAY", "TRADE_SUCCESS", "TRADE_FINISHED", "TRADE_CLOSED"})
SUCCESS_CODE = "10000"
_OUT_NO = re.compile(r"[0-9A-Za-z_]{1,64}")
_MAX_FEN = 100_000_000 * 100
_MALFORMED = "response_malformed"
# Alipay says "system busy, retry with the same parameters" with these.
_RETRYABLE_SUB_CODES = frozenset({"ACQ.SYSTEM_ERROR", "aop.ACQ.SYSTEM_ERROR"})


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class AlipayConfig:
    """One Alipay application in public-key mode (not certificate mode).

    Keys may be full PEM or the bare base64 the Alipay console shows; the app private key
    may be PKCS#1 or PKCS#8. ``seller_id`` is the merchant PID (2088...), checked on
    notifications when set.
    """

    app_id: str
    app_private_key_pem: str
    alipay_public_key_pem: str
    notify_url: str
    seller_id: str | None = None
    gateway_url: str = DEFAULT_GATEWAY_URL
    timeout: tuple[float, float] = (5.0, 15.0)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class AlipayNotification:
    """A verified async notification (``notify_type=trade_status_sync``).

    Refunds re-use the payment's notify_url: a partial refund arrives as TRADE_SUCCESS with
    ``refund_fee`` (the CUMULATIVE refunded total), ``gmt_refund`` and ``out_biz_no`` (our
    out_request_no); a full refund as TRADE_CLOSED with the same fields. Check
    ``is_refund`` before crediting anything.
    """

    app_id: str
    seller_id: str
    out_trade_no: str
    trade_no: str
    trade_status: str
    total_amount_fen: int
    notify_id: str
    notify_time: str
    notify_type: str
    refund_fee_fen: int | None = None
    gmt_refund: str | None = None
    out_biz_no: str | None = None
    gmt_payment: str | None = None
    receipt_amount_fen: int | None = None
    buyer_pay_amount_fen: int | None = None
    buyer_id: str | None = None
    buyer_open_id: str | None = None
    raw: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_refund(self) -> bool:
        """True for a refund-triggered notification (even if trade_status is TRADE_SUCCESS)."""
        return bool(self.gmt_refund or self.out_biz_no or (self.refund_fee_fen or 0) > 0)

    @property
    def is_payment_success(self) -> bool:
        """True only for a payment to credit: paid status and no refund data."""
        return self.trade_status in ("TRADE_SUCCESS", "TRADE_FINISHED") and not self.is_refund


@dataclass(frozen=True)
class AlipayTrade:
    """``alipay.trade.query`` result."""

    out_trade_no: str
    trade_no: str
    trade_status: str
    total_amount_fen: int
    buyer_pay_amount_fen: int | None = None
    receipt_amount_fen: int | None = None
    send_pay_date: str | None = None
    buyer_user_id: str | None = None
    buyer_open_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class AlipayRefund:
    """``alipay.trade.refund`` result. ``fund_change`` Y means money moved now; N (or absent)
    means ask ``query_refund`` -- code 10000 alone does not prove a refund succeeded."""

    out_trade_no: str
    trade_no: str
    fund_change: bool
    refund_fee_fen: int
    gmt_refund_pay: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class AlipayRefundQuery:
    """``alipay.trade.fastpay.refund.query`` result (code 10000 only means the query ran)."""

    out_trade_no: str
    trade_no: str
    out_request_no: str
    refund_status: str
    refund_amount_fen: int | None
    total_amount_fen: int | None
    gmt_refund_pay: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def succeeded(self) -> bool:
        """REFUND_SUCCESS, or (older gateway behaviour for alipay.trade.refund) no status but
        the refund's data returned; an empty answer means "not refunded, retry the refund with
        the same out_request_no"."""
        if self.refund_status:
            return self.refund_status == "REFUND_SUCCESS"
        return bool(self.trade_no) and (self.refund_amount_fen or 0) > 0


# --------------------------------------------------------------------------- keys & signatures


def _pem_body(text: str) -> bytes:
    return base64.b64decode("".join(text.split()), validate=True)


def load_private_key(pem_or_base64: str) -> rsa.RSAPrivateKey:
    """Load the app private key from PEM (PKCS#1 or PKCS#8) or bare base64 DER."""
    text = pem_or_base64.strip()
    if "-----BEGIN" in text:
        key: Any = serialization.load_pem_private_key(text.encode("ascii"), password=None)
    else:
        key = serialization.load_der_private_key(_pem_body(text), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("Alipay app private key must be RSA")
    return key


def load_public_key(pem_or_base64: str) -> rsa.RSAPublicKey:
    """Load the Alipay public key from PEM or the bare base64 SubjectPublicKeyInfo."""
    text = pem_or_base64.strip()
    if "-----BEGIN" in text:
        key: Any = serialization.load_pem_public_key(text.encode("ascii"))
    else:
        key = serialization.load_der_public_key(_pem_body(text))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("Alipay public key must be RSA")
    return key


def pkcs1_pem(private_key: rsa.RSAPrivateKey) -> str:
    """The PKCS#1 (``BEGIN RSA PRIVATE KEY``) form that the SDK's ``sign_with_rsa2`` loads."""
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode("ascii")


def verify_rsa2(public_key: rsa.RSAPublicKey, message: bytes, sign_b64: str) -> bool:
    """SHA256withRSA only; a SHA1 signature over the same bytes does NOT verify here."""
    try:
        signature = base64.b64decode(sign_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def notification_sign_content(params: Mapping[str, str], *, keep_empty: bool = False) -> str:
    """Sorted ``k=v`` pairs joined by ``&`` without ``sign``/``sign_type`` (and empty values
    unless ``keep_empty``)."""
    pairs = [
        f"{key}={params[key]}"
        for key in sorted(params)
        if key not in ("sign", "sign_type") and (keep_empty or params[key] != "")
    ]
    return "&".join(pairs)


def verify_notification_signature(params: Mapping[str, str], public_key: rsa.RSAPublicKey) -> None:
    """Raise SignatureInvalid unless ``params`` carry a valid RSA2 signature by Alipay."""
    if params.get("sign_type") != "RSA2":
        raise SignatureInvalid(f"sign_type must be RSA2, got {params.get('sign_type')!r}")
    sign = params.get("sign")
    if not sign:
        raise SignatureInvalid("notification has no sign")
    charset = (params.get("charset") or CHARSET).lower()
    if charset not in ("utf-8", "utf8", "gbk", "gb2312", "gb18030"):
        raise SignatureInvalid(f"unsupported charset {charset!r}")
    encoding = "utf-8" if charset in ("utf-8", "utf8") else "gb18030"
    candidates = [notification_sign_content(params)]
    if any(value == "" for value in params.values()):
        candidates.append(notification_sign_content(params, keep_empty=True))
    for content in candidates:
        try:
            message = content.encode(encoding)
        except UnicodeEncodeError as exc:
            raise SignatureInvalid("notification does not encode in its charset") from exc
        if verify_rsa2(public_key, message, sign):
            return
    raise SignatureInvalid("Alipay notification signature does not verify")


def _optional_fen(params: Mapping[str, Any], key: str) -> int | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise NotificationMalformed(f"{key} is not a string")
    try:
        return yuan_to_fen(value)
    except ValueError as exc:
        raise NotificationMalformed(f"{key} is not a yuan amount: {value!r}") from exc


def _required(params: Mapping[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise NotificationMalformed(f"{key} missing")
    return value


def _optional(params: Mapping[str, Any], key: str) -> str | None:
    value = params.get(key)
    return value if isinstance(value, str) and value else None


def parse_notification(params: Mapping[str, str]) -> AlipayNotification:
    """Parse (already verified) notification parameters into a typed notification."""
    status = _required(params, "trade_status")
    if status not in TRADE_STATUSES:
        raise NotificationMalformed(f"unknown trade_status {status!r}")
    total = _optional_fen(params, "total_amount")
    if total is None:
        raise NotificationMalformed("total_amount missing")
    return AlipayNotification(
        app_id=_required(params, "app_id"),
        seller_id=_optional(params, "seller_id") or "",
        out_trade_no=_required(params, "out_trade_no"),
        trade_no=_required(params, "trade_no"),
        trade_status=status,
        total_amount_fen=total,
        notify_id=_required(params, "notify_id"),
        notify_time=_optional(params, "notify_time") or "",
        notify_type=_optional(params, "notify_type") or "",
        refund_fee_fen=_optional_fen(params, "refund_fee"),
        gmt_refund=_optional(params, "gmt_refund"),
        out_biz_no=_optional(params, "out_biz_no"),
        gmt_payment=_optional(params, "gmt_payment"),
        receipt_amount_fen=_optional_fen(params, "receipt_amount"),
        buyer_pay_amount_fen=_optional_fen(params, "buyer_pay_amount"),
        buyer_id=_optional(params, "buyer_id"),
        buyer_open_id=_optional(params, "buyer_open_id"),
        raw={key: params[key] for key in params},  # first values, also for a MultiDict
    )


# --------------------------------------------------------------------------- replies


def notification_ack() -> tuple[int, bytes, dict[str, str]]:
    """Alipay stops retrying only on the literal body ``success``."""
    return 200, b"success", {"Content-Type": "text/plain; charset=utf-8"}


def notification_fail() -> tuple[int, bytes, dict[str, str]]:
    """Anything but ``success`` makes Alipay retry (2m, 10m, 10m, 1h, 2h, 6h, 15h)."""
    return 200, b"fail", {"Content-Type": "text/plain; charset=utf-8"}


# --------------------------------------------------------------------------- client


def _default_clock() -> datetime:
    return datetime.now(UTC)


def _beijing(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def extract_signed_content(text: str, key: str) -> str | None:
    """The exact JSON text of ``key``'s value, as Alipay signed it (not a re-serialisation)."""
    match = re.search(r'"' + re.escape(key) + r'"\s*:\s*', text)
    if match is None:
        return None
    try:
        _, end = json.JSONDecoder().raw_decode(text, match.end())
    except json.JSONDecodeError:
        return None
    return text[match.end() : end]


class AlipayClient:
    """Calls the Alipay gateway for one app; every network wait is bounded by ``timeout``."""

    def __init__(
        self,
        config: AlipayConfig,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], datetime] = _default_clock,
    ) -> None:
        self.config = config
        self._private_pkcs1 = pkcs1_pem(load_private_key(config.app_private_key_pem))
        self._alipay_key = load_public_key(config.alipay_public_key_pem)
        self._session = session or requests.Session()
        self._clock = clock

    # ----------------------------------------------------------------- notifications

    def verify_notification(self, params: Mapping[str, str]) -> AlipayNotification:
        """Verify (RSA2 only) and parse an async notification; check app_id and seller_id.

        ``params`` is the POSTed form decoded once (e.g. Flask ``request.form``), including
        ``sign`` and ``sign_type``. Dedupe on ``notify_id`` / out_trade_no is the caller's.
        """
        verify_notification_signature(params, self._alipay_key)
        notification = parse_notification(params)
        if notification.app_id != self.config.app_id:
            raise ProviderMismatch(f"app_id {notification.app_id!r} is not ours")
        if self.config.seller_id and notification.seller_id != self.config.seller_id:
            raise ProviderMismatch(f"seller_id {notification.seller_id!r} is not ours")
        return notification

    # ----------------------------------------------------------------- API calls

    def create_trade(
        self,
        out_trade_no: str,
        subject: str,
        amount_fen: int,
        *,
        buyer_id: str | None = None,
        buyer_open_id: str | None = None,
        op_app_id: str | None = None,
        time_expire: datetime | None = None,
        body: str | None = None,
    ) -> str:
        """``alipay.trade.create`` for the mini-program (JSAPI_PAY); returns ``trade_no`` for
        ``my.tradePay``. Pass exactly one of buyer_id (2088...) or buyer_open_id."""
        _check_out_no(out_trade_no)
        if (buyer_id is None) == (buyer_open_id is None):
            raise ValueError("pass exactly one of buyer_id or buyer_open_id")
        model = AlipayTradeCreateModel()
        model.out_trade_no = out_trade_no
        model.total_amount = _yuan(amount_fen)
        model.subject = _subject(subject)
        model.product_code = "JSAPI_PAY"
        if buyer_id is not None:
            model.buyer_id = buyer_id
        if buyer_open_id is not None:
            model.buyer_open_id = buyer_open_id
        if op_app_id:
            model.op_app_id = op_app_id
        if time_expire is not None:
            model.time_expire = _beijing(time_expire)
        if body:
            model.body = body[:128]
        request = AlipayTradeCreateRequest(biz_model=model)
        request.notify_url = self.config.notify_url
        node = self._execute(request)
        return _node_str(node, "trade_no")

    def precreate(
        self,
        out_trade_no: str,
        subject: str,
        amount_fen: int,
        *,
        time_expire: datetime | None = None,
    ) -> str:
        """``alipay.trade.precreate`` (visitor scans a QR code at the pile); returns qr_code."""
        _check_out_no(out_trade_no)
        model = AlipayTradePrecreateModel()
        model.out_trade_no = out_trade_no
        model.total_amount = _yuan(amount_fen)
        model.subject = _subject(subject)
        if time_expire is not None:
            model.time_expire = _beijing(time_expire)
        request = AlipayTradePrecreateRequest(biz_model=model)
        request.notify_url = self.config.notify_url
        node = self._execute(request)
        return _node_str(node, "qr_code")

    def query(self, out_trade_no: str) -> AlipayTrade:
        """``alipay.trade.query``; an unknown trade -> ProviderRejected ACQ.TRADE_NOT_EXIST."""
        _check_out_no(out_trade_no)
        model = AlipayTradeQueryModel()
        model.out_trade_no = out_trade_no
        node = self._execute(AlipayTradeQueryRequest(biz_model=model))
        status = _node_str(node, "trade_status")
        if status not in TRADE_STATUSES:
            raise ProviderUnavailable(f"unknown trade_status {status!r}", code="response_malformed")
        return AlipayTrade(
            out_trade_no=_node_str(node, "out_trade_no"),
            trade_no=_node_str(node, "trade_no"),
            trade_status=status,
            total_amount_fen=_node_fen(node, "total_amount", required=True) or 0,
            buyer_pay_amount_fen=_node_fen(node, "buyer_pay_amount"),
            receipt_amount_fen=_node_fen(node, "receipt_amount"),
            send_pay_date=_node_opt(node, "send_pay_date"),
            buyer_user_id=_node_opt(node, "buyer_user_id"),
            buyer_open_id=_node_opt(node, "buyer_open_id"),
            raw=node,
        )

    def refund(
        self,
        out_trade_no: str,
        out_request_no: str,
        refund_fen: int,
        reason: str | None = None,
    ) -> AlipayRefund:
        """``alipay.trade.refund``. On a timeout or ProviderUnavailable, retry with the SAME
        out_request_no (Alipay de-duplicates on it); a new number would refund twice."""
        _check_out_no(out_trade_no)
        _check_out_no(out_request_no)
        model = AlipayTradeRefundModel()
        model.out_trade_no = out_trade_no
        model.out_request_no = out_request_no
        model.refund_amount = _yuan(refund_fen)
        if reason:
            model.refund_reason = reason[:256]
        node = self._execute(AlipayTradeRefundRequest(biz_model=model))
        return AlipayRefund(
            out_trade_no=_node_str(node, "out_trade_no"),
            trade_no=_node_str(node, "trade_no"),
            fund_change=node.get("fund_change") == "Y",
            refund_fee_fen=_node_fen(node, "refund_fee", required=True) or 0,
            gmt_refund_pay=_node_opt(node, "gmt_refund_pay"),
            raw=node,
        )

    def query_refund(self, out_trade_no: str, out_request_no: str) -> AlipayRefundQuery:
        """``alipay.trade.fastpay.refund.query`` for one refund request."""
        _check_out_no(out_trade_no)
        _check_out_no(out_request_no)
        model = AlipayTradeFastpayRefundQueryModel()
        model.out_trade_no = out_trade_no
        model.out_request_no = out_request_no
        model.query_options = ["gmt_refund_pay"]
        node = self._execute(AlipayTradeFastpayRefundQueryRequest(biz_model=model))
        return AlipayRefundQuery(
            out_trade_no=_node_opt(node, "out_trade_no") or out_trade_no,
            trade_no=_node_opt(node, "trade_no") or "",
            out_request_no=_node_opt(node, "out_request_no") or out_request_no,
            refund_status=_node_opt(node, "refund_status") or "",
            refund_amount_fen=_node_fen(node, "refund_amount"),
            total_amount_fen=_node_fen(node, "total_amount"),
            gmt_refund_pay=_node_opt(node, "gmt_refund_pay"),
            raw=node,
        )

    def bill_download_url(self, bill_date: date | str, bill_type: str = "trade") -> str:
        """``alipay.data.dataservice.bill.downloadurl.query``; the URL is valid ~30 s."""
        if bill_type not in ("trade", "signcustomer"):
            raise ValueError("bill_type must be trade or signcustomer")
        model = AlipayDataDataserviceBillDownloadurlQueryModel()
        model.bill_type = bill_type
        model.bill_date = bill_date.isoformat() if isinstance(bill_date, date) else bill_date
        node = self._execute(AlipayDataDataserviceBillDownloadurlQueryRequest(biz_model=model))
        return _node_str(node, "bill_download_url")

    def download_bill(self, url: str) -> bytes:
        """Fetch the bill zip (unsigned; parse it with :mod:`app.payments.bills`)."""
        try:
            response = self._session.get(url, timeout=self.config.timeout)
            content = response.content
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"bill download failed: {exc}") from exc
        if response.status_code != 200:
            raise ProviderUnavailable(
                f"bill download HTTP {response.status_code}", http_status=response.status_code
            )
        return content

    # ----------------------------------------------------------------- transport

    def sign_request_params(self, request: Any) -> tuple[dict[str, str], dict[str, str]]:
        """Common parameters (with ``sign``) for the URL, and business parameters for the body.

        The signature covers every parameter except ``sign``, sorted, ``k=v&...`` (Alipay's
        request rule; unlike notifications, ``sign_type`` is included).
        """
        params: dict[str, str] = {
            key: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            for key, value in request.get_params().items()
        }
        method = params.pop("method")
        version = params.pop("version", "1.0")
        notify_url = params.pop("notify_url", None)
        common: dict[str, str] = {
            "app_id": self.config.app_id,
            "method": method,
            "format": "JSON",
            "charset": CHARSET,
            "sign_type": "RSA2",
            "timestamp": _beijing(self._clock()),
            "version": version,
        }
        if notify_url:
            common["notify_url"] = notify_url
        content = get_sign_content({**common, **params})
        common["sign"] = sign_with_rsa2(self._private_pkcs1, content, CHARSET)
        return common, params

    def _execute(self, request: Any) -> dict[str, Any]:
        common, business = self.sign_request_params(request)
        method = common["method"]
        url = self.config.gateway_url + ("&" if "?" in self.config.gateway_url else "?")
        url += url_encode(common, CHARSET)
        try:
            response = self._session.post(
                url,
                data=url_encode(business, CHARSET).encode("ascii"),
                headers={"Content-Type": f"application/x-www-form-urlencoded;charset={CHARSET}"},
                timeout=self.config.timeout,
                allow_redirects=False,
            )
            content = response.content
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"Alipay gateway unreachable: {exc}") from exc
        if response.status_code != 200:
            raise ProviderUnavailable(
                f"Alipay gateway HTTP {response.status_code}", http_status=response.status_code
            )
        return self._verified_node(method, content)

    def _verified_node(self, method: str, content: bytes) -> dict[str, Any]:
        """Verify the response's RSA2 ``sign`` over the exact response JSON text, then map
        Alipay's ``code`` to success / ProviderUnavailable / ProviderRejected."""
        try:
            text = content.decode(CHARSET)
            document = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProviderUnavailable("gateway response is not JSON", code=_MALFORMED) from exc
        if not isinstance(document, dict):
            raise ProviderUnavailable("gateway response is not an object", code=_MALFORMED)
        key = method.replace(".", "_") + "_response"
        if key not in document and "error_response" in document:
            key = "error_response"
        node = document.get(key)
        signed = extract_signed_content(text, key)
        if not isinstance(node, dict) or signed is None:
            raise ProviderUnavailable(f"gateway response has no {key}", code="response_malformed")
        sign = document.get("sign")
        code = node.get("code")
        if isinstance(sign, str) and sign:
            if not self._verify_response(signed, sign):
                raise SignatureInvalid(f"{key} signature does not verify")
        elif code == SUCCESS_CODE:
            raise SignatureInvalid(f"unsigned success response for {method}")
        if code == SUCCESS_CODE:
            return node
        sub_code = node.get("sub_code") if isinstance(node.get("sub_code"), str) else None
        detail = node.get("sub_msg") or node.get("msg") or ""
        message = f"Alipay {method}: {code} {sub_code or ''} {detail}".strip()
        if (
            code == "20000"
            or sub_code in _RETRYABLE_SUB_CODES
            or (sub_code or "").startswith("isp.")
        ):
            raise ProviderUnavailable(message, provider_code=sub_code or code)
        raise ProviderRejected(message, provider_code=sub_code or code)

    def _verify_response(self, signed: str, sign: str) -> bool:
        if verify_rsa2(self._alipay_key, signed.encode(CHARSET), sign):
            return True
        # Alipay's own SDKs retry with "\/" unescaped: some responses are signed that way.
        return "\\/" in signed and verify_rsa2(
            self._alipay_key, signed.replace("\\/", "/").encode(CHARSET), sign
        )


# --------------------------------------------------------------------------- helpers


def _check_out_no(value: str) -> None:
    if not isinstance(value, str) or not _OUT_NO.fullmatch(value):
        raise ValueError("Alipay order/request numbers are 1..64 of [0-9A-Za-z_]")


def _yuan(fen: int) -> str:
    if isinstance(fen, bool) or not isinstance(fen, int) or not 0 < fen <= _MAX_FEN:
        raise ValueError("amount must be 1 fen .. 100,000,000 yuan")
    return fen_to_yuan(fen)


def _subject(subject: str) -> str:
    if not subject or len(subject) > 256 or any(c in subject for c in "/=&"):
        raise ValueError("subject must be 1..256 characters without / = &")
    return subject


def _node_opt(node: Mapping[str, Any], key: str) -> str | None:
    value = node.get(key)
    return value if isinstance(value, str) and value else None


def _node_str(node: Mapping[str, Any], key: str) -> str:
    value = _node_opt(node, key)
    if value is None:
        raise ProviderUnavailable(f"response has no {key}", code="response_malformed")
    return value


def _node_fen(node: Mapping[str, Any], key: str, *, required: bool = False) -> int | None:
    value = node.get(key)
    if value is None or value == "":
        if required:
            raise ProviderUnavailable(f"response has no {key}", code="response_malformed")
        return None
    try:
        return yuan_to_fen(str(value))
    except ValueError as exc:
        raise ProviderUnavailable(f"{key} is not a yuan amount", code="response_malformed") from exc

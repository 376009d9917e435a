"""WeChat Pay v3 test doubles: our own keys, notifications built byte-for-byte as WeChat
builds them, a small local fake of the API, and a trade-bill writer.

Written independently of ``app.payments.wechat_v3`` (own signing-string and header code), so a
shared misunderstanding does not make both sides agree on something WeChat would reject.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.payments.wechat_v3 import WeChatPayConfig
from tests.support.local_http import LocalHTTPFake

# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class RsaKeyPair:
    """An RSA-2048 pair as PEM text: private in PKCS#8 and PKCS#1, public as SPKI."""

    private_pem: str
    private_pkcs1_pem: str
    public_pem: str

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        return load_private(self.private_pem)

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return load_public(self.public_pem)

    @property
    def public_base64(self) -> str:
        """The bare base64 form consoles show (no PEM armour)."""
        return "".join(line for line in self.public_pem.splitlines() if "-----" not in line)


def generate_rsa_keypair(bits: int = 2048) -> RsaKeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return RsaKeyPair(
        private_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        private_pkcs1_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode(),
        public_pem=key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
    )


@functools.lru_cache(maxsize=16)
def cached_keypair(name: str) -> RsaKeyPair:
    """One generated pair per name per test session (RSA generation is the slow part)."""
    return generate_rsa_keypair()


@functools.lru_cache(maxsize=32)
def load_private(private_pem: str) -> rsa.RSAPrivateKey:
    """Parsing a PEM private key validates it (tens of ms): do it once per key."""
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@functools.lru_cache(maxsize=32)
def load_public(public_pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def sha256_rsa_sign(private_pem: str, message: bytes) -> str:
    signature = load_private(private_pem).sign(message, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode()


def sha256_rsa_verify(public_pem: str, message: bytes, signature_b64: str) -> bool:
    try:
        load_public(public_pem).verify(
            base64.b64decode(signature_b64), message, padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class WeChatPayTestKeys:
    """Everything a merchant and "WeChat" hold, made up for tests."""

    merchant: RsaKeyPair
    platform: RsaKeyPair
    mchid: str = "1900009191"
    appid: str = "wxd678efh567hg6787"
    merchant_serial: str = "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C"
    platform_key_id: str = "PUB_KEY_ID_0119000091912025112400112233000001"
    apiv3_key: str = "0123456789abcdefghijklmnopqrstuv"


def make_wechat_keys() -> WeChatPayTestKeys:
    return WeChatPayTestKeys(
        merchant=cached_keypair("wechat-merchant"), platform=cached_keypair("wechat-platform")
    )


def make_wechat_config(
    keys: WeChatPayTestKeys, api_base_url: str = "https://api.mch.weixin.qq.com", **overrides: Any
) -> WeChatPayConfig:
    values: dict[str, Any] = {
        "mchid": keys.mchid,
        "appid": keys.appid,
        "merchant_private_key_pem": keys.merchant.private_pem,
        "merchant_serial_no": keys.merchant_serial,
        "apiv3_key": keys.apiv3_key,
        "platform_public_key_pem": keys.platform.public_pem,
        "platform_public_key_id": keys.platform_key_id,
        "notify_url": "https://pay.example.com/api/payments/wechat/notify",
        "api_base_url": api_base_url,
        "timeout": (2.0, 5.0),
    }
    values.update(overrides)
    return WeChatPayConfig(**values)


# --------------------------------------------------------------------------- notifications


def encrypt_resource(
    apiv3_key: str, plaintext: bytes, *, associated_data: str, nonce: str | None = None
) -> dict[str, str]:
    """AEAD_AES_256_GCM as WeChat does: 12-char nonce string, tag appended, base64."""
    nonce = nonce or secrets.token_hex(6)
    ciphertext = AESGCM(apiv3_key.encode()).encrypt(
        nonce.encode(), plaintext, associated_data.encode()
    )
    return {
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": base64.b64encode(ciphertext).decode(),
        "nonce": nonce,
        "associated_data": associated_data,
    }


def signed_headers(
    private_pem: str,
    serial: str,
    body: bytes,
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """WeChat's signature headers over ``timestamp\\nnonce\\nbody\\n``."""
    ts = str(timestamp if timestamp is not None else int(time.time()))
    nonce = nonce or secrets.token_hex(16)
    message = ts.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
    return {
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": sha256_rsa_sign(private_pem, message),
        "Wechatpay-Timestamp": ts,
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }


def transaction_resource(
    keys: WeChatPayTestKeys,
    out_trade_no: str,
    total_fen: int,
    *,
    openid: str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
    trade_state: str = "SUCCESS",
    transaction_id: str = "4200000985202511241234567890",
    success_time: str = "2025-11-24T10:34:56+08:00",
    appid: str | None = None,
    mchid: str | None = None,
    payer_total_fen: int | None = None,
) -> dict[str, Any]:
    """The decrypted resource of a TRANSACTION.SUCCESS notification (支付成功回调)."""
    return {
        "appid": appid or keys.appid,
        "mchid": mchid or keys.mchid,
        "out_trade_no": out_trade_no,
        "transaction_id": transaction_id,
        "trade_type": "JSAPI",
        "trade_state": trade_state,
        "trade_state_desc": "支付成功",
        "bank_type": "CMC",
        "attach": "",
        "success_time": success_time,
        "payer": {"openid": openid},
        "amount": {
            "total": total_fen,
            "payer_total": total_fen if payer_total_fen is None else payer_total_fen,
            "currency": "CNY",
            "payer_currency": "CNY",
        },
    }


def refund_resource(
    keys: WeChatPayTestKeys,
    out_trade_no: str,
    out_refund_no: str,
    refund_fen: int,
    total_fen: int,
    *,
    refund_status: str = "SUCCESS",
    refund_id: str = "50000000382019052709732678859",
    mchid: str | None = None,
) -> dict[str, Any]:
    """The decrypted resource of a REFUND.* notification (退款结果通知)."""
    return {
        "mchid": mchid or keys.mchid,
        "out_trade_no": out_trade_no,
        "transaction_id": "4200000985202511241234567890",
        "out_refund_no": out_refund_no,
        "refund_id": refund_id,
        "refund_status": refund_status,
        "success_time": "2025-11-24T12:00:00+08:00",
        "user_received_account": "招商银行信用卡0403",
        "amount": {
            "total": total_fen,
            "refund": refund_fen,
            "payer_total": total_fen,
            "payer_refund": refund_fen,
        },
    }


def build_notification(
    keys: WeChatPayTestKeys,
    resource: Mapping[str, Any],
    *,
    event_type: str = "TRANSACTION.SUCCESS",
    original_type: str | None = None,
    timestamp: int | None = None,
    notification_id: str = "EV-2018022511223320873",
    sign_with: RsaKeyPair | None = None,
    serial: str | None = None,
    apiv3_key: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """Headers and raw body exactly as WeChat POSTs a v3 notification."""
    kind = original_type or ("refund" if event_type.startswith("REFUND.") else "transaction")
    plaintext = json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode()
    envelope = {
        "id": notification_id,
        "create_time": "2025-11-24T10:35:00+08:00",
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": "支付成功" if kind == "transaction" else "退款状态变更",
        "resource": {
            "original_type": kind,
            **encrypt_resource(apiv3_key or keys.apiv3_key, plaintext, associated_data=kind),
        },
    }
    body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
    headers = signed_headers(
        (sign_with or keys.platform).private_pem,
        serial or keys.platform_key_id,
        body,
        timestamp=timestamp,
    )
    headers["Content-Type"] = "application/json"
    return headers, body


# --------------------------------------------------------------------------- fake API server


@dataclass
class RecordedRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    authorization_ok: bool
    authorization_error: str = ""

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


_AUTH_PARAM = re.compile(r'(\w+)="([^"]*)"')


def check_authorization(
    keys: WeChatPayTestKeys, method: str, target: str, body: bytes, header: str, now: float
) -> str:
    """'' if the merchant's Authorization header is right, else why not (as WeChat checks)."""
    scheme, _, rest = header.partition(" ")
    if scheme != "WECHATPAY2-SHA256-RSA2048":
        return f"bad scheme {scheme!r}"
    params = dict(_AUTH_PARAM.findall(rest))
    expected = {"mchid", "nonce_str", "signature", "timestamp", "serial_no"}
    if set(params) != expected:
        return f"bad parameters {sorted(params)}"
    if params["mchid"] != keys.mchid:
        return "mchid mismatch"
    if params["serial_no"] != keys.merchant_serial:
        return "serial_no mismatch"
    if not params["timestamp"].isdigit() or abs(int(params["timestamp"]) - now) >= 300:
        return "timestamp out of window"
    message = (
        f"{method}\n{target}\n{params['timestamp']}\n{params['nonce_str']}\n".encode()
        + body
        + b"\n"
    )
    if not sha256_rsa_verify(keys.merchant.public_pem, message, params["signature"]):
        return "signature does not verify"
    return ""


class FakeWeChatPayServer(LocalHTTPFake):
    """A local stand-in for api.mch.weixin.qq.com (JSAPI order, query, close, refund, bills).

    Every request's Authorization is checked against the merchant public key (401 SIGN_ERROR
    otherwise) and recorded. Responses are signed with the platform key unless a fault is set.
    """

    def __init__(self, keys: WeChatPayTestKeys, *, clock: Callable[[], float] = time.time):
        self.keys = keys
        self.clock = clock
        self.requests: list[RecordedRequest] = []
        self.orders: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.bill_text: str | None = None
        self.refund_initial_status = "PROCESSING"
        # Fault injection for tests.
        self.tamper_responses = False
        self.unsigned_responses = False
        self.sign_responses_with: RsaKeyPair | None = None
        self.response_serial: str | None = None
        self.response_timestamp_offset = 0
        self.corrupt_bill = False
        self.forced_error: tuple[int, str, str] | None = None
        self.delay_seconds = 0.0
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget state and faults, so one running server can serve many tests."""
        with self._lock:
            self.requests.clear()
            self.orders.clear()
            self.refunds.clear()
            self.bill_text = None
            self.refund_initial_status = "PROCESSING"
            self.tamper_responses = False
            self.unsigned_responses = False
            self.sign_responses_with = None
            self.response_serial = None
            self.response_timestamp_offset = 0
            self.corrupt_bill = False
            self.forced_error = None
            self.delay_seconds = 0.0

    # ------------------------------------------------------------- lifecycle

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)

    # ------------------------------------------------------------- state helpers

    def mark_paid(
        self, out_trade_no: str, transaction_id: str = "4200000985202511240000000001"
    ) -> None:
        with self._lock:
            order = self.orders[out_trade_no]
            order.update(
                trade_state="SUCCESS",
                trade_state_desc="支付成功",
                transaction_id=transaction_id,
                success_time="2025-11-24T10:34:56+08:00",
                bank_type="OTHERS",
            )

    # ------------------------------------------------------------- request handling

    def handle(self, method: str, target: str, body: bytes) -> tuple[int, bytes, bool]:
        """Return (status, body, sign?) for one authorised request."""
        if self.forced_error is not None:
            status, code, message = self.forced_error
            return status, _json({"code": code, "message": message}), True
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        data = json.loads(body) if body else {}
        with self._lock:
            if method == "POST" and path == "/v3/pay/transactions/jsapi":
                return self._create_order(data)
            match = re.fullmatch(r"/v3/pay/transactions/out-trade-no/([^/]+)", path)
            if method == "GET" and match:
                if query.get("mchid") != [self.keys.mchid]:
                    return 400, _json({"code": "PARAM_ERROR", "message": "mchid"}), True
                order = self.orders.get(match.group(1))
                if order is None:
                    return 404, _json({"code": "ORDER_NOT_EXIST", "message": "订单不存在"}), True
                return 200, _json(_public_order(order)), True
            match = re.fullmatch(r"/v3/pay/transactions/out-trade-no/([^/]+)/close", path)
            if method == "POST" and match:
                order = self.orders.get(match.group(1))
                if data.get("mchid") != self.keys.mchid or order is None:
                    return 400, _json({"code": "PARAM_ERROR", "message": "close"}), True
                if order["trade_state"] == "SUCCESS":
                    return 400, _json({"code": "ORDERPAID", "message": "订单已支付"}), True
                order["trade_state"] = "CLOSED"
                return 204, b"", True
            if method == "POST" and path == "/v3/refund/domestic/refunds":
                return self._create_refund(data)
            match = re.fullmatch(r"/v3/refund/domestic/refunds/([^/]+)", path)
            if method == "GET" and match:
                refund = self.refunds.get(match.group(1))
                if refund is None:
                    missing = {"code": "RESOURCE_NOT_EXISTS", "message": "退款单不存在"}
                    return 404, _json(missing), True
                return 200, _json(refund), True
            if method == "GET" and path == "/v3/bill/tradebill":
                if self.bill_text is None:
                    return 400, _json({"code": "NO_STATEMENT_EXIST", "message": "无账单"}), True
                digest = hashlib.sha1(self.bill_text.encode()).hexdigest()
                return (
                    200,
                    _json(
                        {
                            "hash_type": "SHA1",
                            "hash_value": digest,
                            "download_url": f"{self.base_url}/v3/billdownload/file?token=T0k3n_x",
                        }
                    ),
                    True,
                )
            if method == "GET" and path == "/v3/billdownload/file":
                assert self.bill_text is not None
                content = self.bill_text.encode()
                if self.corrupt_bill:
                    content = content.replace(b"0.01", b"0.02", 1) + b"\n"
                return 200, content, False
        return 404, _json({"code": "NOT_FOUND", "message": path}), True

    def _create_order(self, data: dict[str, Any]) -> tuple[int, bytes, bool]:
        required_ok = (
            data.get("appid") == self.keys.appid
            and data.get("mchid") == self.keys.mchid
            and isinstance(data.get("amount", {}).get("total"), int)
            and data["amount"].get("currency") == "CNY"
            and data.get("payer", {}).get("openid")
            and data.get("description")
            and data.get("notify_url", "").startswith("https://")
        )
        if not required_ok:
            return 400, _json({"code": "PARAM_ERROR", "message": "参数错误"}), True
        out_trade_no = data["out_trade_no"]
        existing = self.orders.get(out_trade_no)
        if existing is not None:
            if existing["request"] != data:
                return 400, _json({"code": "INVALID_REQUEST", "message": "订单号重复"}), True
            return 200, _json({"prepay_id": existing["prepay_id"]}), True
        prepay_id = "wx" + secrets.token_hex(15)
        self.orders[out_trade_no] = {
            "request": data,
            "prepay_id": prepay_id,
            "trade_state": "NOTPAY",
            "trade_state_desc": "订单未支付",
        }
        return 200, _json({"prepay_id": prepay_id}), True

    def _create_refund(self, data: dict[str, Any]) -> tuple[int, bytes, bool]:
        order = self.orders.get(data.get("out_trade_no", ""))
        amount = data.get("amount", {})
        if order is None or order["trade_state"] != "SUCCESS":
            return 400, _json({"code": "RESOURCE_NOT_EXISTS", "message": "订单不存在"}), True
        total = order["request"]["amount"]["total"]
        if amount.get("total") != total or not 0 < amount.get("refund", 0) <= total:
            return 400, _json({"code": "PARAM_ERROR", "message": "金额"}), True
        existing = self.refunds.get(data["out_refund_no"])
        if existing is not None:
            return 200, _json(existing), True
        refund = {
            "refund_id": "5030" + secrets.token_hex(10),
            "out_refund_no": data["out_refund_no"],
            "transaction_id": order["transaction_id"],
            "out_trade_no": data["out_trade_no"],
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": "2025-11-24T11:00:00+08:00",
            "status": self.refund_initial_status,
            "funds_account": "AVAILABLE",
            "amount": {
                "total": total,
                "refund": amount["refund"],
                "payer_total": total,
                "payer_refund": amount["refund"],
                "settlement_refund": amount["refund"],
                "settlement_total": total,
                "discount_refund": 0,
                "currency": "CNY",
            },
        }
        self.refunds[data["out_refund_no"]] = refund
        return 200, _json(refund), True

    def response_headers(self, status: int, body: bytes, sign: bool) -> dict[str, str]:
        headers = {"Request-ID": secrets.token_hex(8)}
        if body:
            headers["Content-Type"] = (
                "application/json; charset=utf-8" if sign else "application/octet-stream"
            )
        if not sign or self.unsigned_responses:
            return headers
        key = self.sign_responses_with or self.keys.platform
        headers.update(
            signed_headers(
                key.private_pem,
                self.response_serial or self.keys.platform_key_id,
                body,
                timestamp=int(self.clock()) + self.response_timestamp_offset,
            )
        )
        return headers


def _public_order(order: Mapping[str, Any]) -> dict[str, Any]:
    request = order["request"]
    result: dict[str, Any] = {
        "appid": request["appid"],
        "mchid": request["mchid"],
        "out_trade_no": request["out_trade_no"],
        "trade_state": order["trade_state"],
        "trade_state_desc": order["trade_state_desc"],
        "amount": {"total": request["amount"]["total"], "payer_currency": "CNY"},
    }
    if order["trade_state"] == "SUCCESS":
        result.update(
            transaction_id=order["transaction_id"],
            trade_type="JSAPI",
            bank_type=order["bank_type"],
            success_time=order["success_time"],
            payer={"openid": request["payer"]["openid"]},
        )
        result["amount"].update(
            payer_total=request["amount"]["total"], currency="CNY", payer_currency="CNY"
        )
    return result


def _json(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _make_handler(fake: FakeWeChatPayServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls per request
        wbufsize = 1 << 16  # headers and body leave in one write
        timeout = 5  # bound every socket read of the fake

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            error = check_authorization(
                fake.keys,
                self.command,
                self.path,
                body,
                self.headers.get("Authorization", ""),
                fake.clock(),
            )
            fake.requests.append(
                RecordedRequest(
                    self.command, self.path, dict(self.headers.items()), body, not error, error
                )
            )
            if fake.delay_seconds:
                time.sleep(fake.delay_seconds)
            if error:
                status, payload, sign = 401, _json({"code": "SIGN_ERROR", "message": error}), True
            else:
                status, payload, sign = fake.handle(self.command, self.path, body)
            headers = fake.response_headers(status, payload, sign)
            if fake.tamper_responses and payload:
                payload += b" "  # still valid JSON, no longer the signed bytes
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if payload:
                    self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                return  # the client gave up (timeout tests); nothing to report

        do_GET = _serve
        do_POST = _serve

    return Handler


# --------------------------------------------------------------------------- bills


WECHAT_ALL_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
    "交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,"
    "充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,"
    "费率备注"
)
WECHAT_SUMMARY_HEADER = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
)


@dataclass(frozen=True)
class WeChatBillLine:
    """One line of an ALL trade bill; a refund line when ``out_refund_no`` is set."""

    trade_time: str
    out_trade_no: str
    transaction_id: str
    total_fen: int
    trade_state: str = "SUCCESS"
    openid: str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    description: str = "电动自行车充电"
    out_refund_no: str = ""
    refund_id: str = ""
    refund_fen: int = 0
    refund_status: str = "SUCCESS"
    fee_yuan: Decimal = field(default=Decimal("0.00000"))


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def write_wechat_trade_bill(
    lines: Iterable[WeChatBillLine], *, appid: str, mchid: str, with_summary: bool = True
) -> str:
    """An ALL-type trade bill in WeChat's layout (UTF-8 text, backtick-prefixed fields)."""
    out = [WECHAT_ALL_HEADER]
    count = settlement = refunds = orders = requested = 0
    fees = Decimal("0")
    for line in lines:
        is_refund = bool(line.out_refund_no)
        fields = [
            line.trade_time,
            appid,
            mchid,
            "0",
            "",
            line.transaction_id,
            line.out_trade_no,
            line.openid,
            "JSAPI",
            "REFUND" if is_refund else line.trade_state,
            "OTHERS",
            "CNY",
            _yuan(line.total_fen),
            "0.00",
            line.refund_id if is_refund else "0",
            line.out_refund_no if is_refund else "0",
            _yuan(line.refund_fen if is_refund else 0),
            "0.00",
            "ORIGINAL" if is_refund else "",
            line.refund_status if is_refund else "",
            line.description,
            "",
            f"{line.fee_yuan:.5f}",
            "0.60%",
            _yuan(line.total_fen),
            _yuan(line.refund_fen if is_refund else 0),
            "",
        ]
        out.append(",".join("`" + value for value in fields))
        count += 1
        fees += line.fee_yuan
        if is_refund:
            refunds += line.refund_fen
            requested += line.refund_fen
        else:
            settlement += line.total_fen
            orders += line.total_fen
    if with_summary:
        out.append(WECHAT_SUMMARY_HEADER)
        summary = [
            str(count),
            _yuan(settlement),
            _yuan(refunds),
            "0.00",
            f"{fees:.5f}",
            _yuan(orders),
            _yuan(requested),
        ]
        out.append(",".join("`" + value for value in summary))
    return "\r\n".join(out) + "\r\n"

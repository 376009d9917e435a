"""Alipay test doubles: our own keys, notifications signed as Alipay signs them, a local fake
gateway (gateway.do) with RSA2-signed responses, and 业务明细 bill-zip writers.

Written independently of ``app.payments.alipay`` so the two sides are not wrong together.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import secrets
import threading
import time
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from app.payments.alipay import AlipayConfig
from tests.support.local_http import LocalHTTPFake
from tests.support.wechatpay_fake import (
    RsaKeyPair,
    cached_keypair,
    load_private,
    sha256_rsa_verify,
)

BEIJING = timezone(timedelta(hours=8))


@dataclass(frozen=True)
class AlipayTestKeys:
    app: RsaKeyPair  # ours: signs requests (the SDK wants its PKCS#1 form)
    alipay: RsaKeyPair  # "Alipay's": signs responses and notifications
    app_id: str = "2021004100000001"
    seller_id: str = "2088102177846880"


def make_alipay_keys() -> AlipayTestKeys:
    return AlipayTestKeys(
        app=cached_keypair("alipay-app"), alipay=cached_keypair("alipay-platform")
    )


def make_alipay_config(
    keys: AlipayTestKeys,
    gateway_url: str = "https://openapi.alipay.com/gateway.do",
    **overrides: Any,
) -> AlipayConfig:
    values: dict[str, Any] = {
        "app_id": keys.app_id,
        "app_private_key_pem": keys.app.private_pkcs1_pem,
        "alipay_public_key_pem": keys.alipay.public_base64,
        "notify_url": "https://pay.example.com/api/payments/alipay/notify",
        "seller_id": keys.seller_id,
        "gateway_url": gateway_url,
        "timeout": (2.0, 5.0),
    }
    values.update(overrides)
    return AlipayConfig(**values)


def rsa_sign(private_pem: str, message: bytes, sign_type: str = "RSA2") -> str:
    """RSA2 = SHA256withRSA, RSA = SHA1withRSA (the legacy type we must refuse)."""
    key = load_private(private_pem)
    digest = hashes.SHA256() if sign_type == "RSA2" else hashes.SHA1()
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), digest)).decode()


# --------------------------------------------------------------------------- notifications


def payment_notification_params(
    keys: AlipayTestKeys,
    out_trade_no: str,
    total_fen: int,
    *,
    trade_status: str = "TRADE_SUCCESS",
    trade_no: str = "2025112422001403030500012345",
    app_id: str | None = None,
    seller_id: str | None = None,
    notify_id: str = "2025112400222103456012341234567890",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Unsigned parameters of a trade_status_sync notification (values as POSTed, decoded)."""
    total = f"{total_fen // 100}.{total_fen % 100:02d}"
    params = {
        "gmt_create": "2025-11-24 10:34:50",
        "charset": "utf-8",
        "gmt_payment": "2025-11-24 10:34:56",
        "notify_time": "2025-11-24 10:34:57",
        "subject": "充电桩 A-03 充电",
        "buyer_id": "2088102122524333",
        "invoice_amount": total,
        "version": "1.0",
        "notify_id": notify_id,
        "fund_bill_list": '[{"amount":"' + total + '","fundChannel":"ALIPAYACCOUNT"}]',
        "notify_type": "trade_status_sync",
        "out_trade_no": out_trade_no,
        "total_amount": total,
        "trade_status": trade_status,
        "trade_no": trade_no,
        "auth_app_id": app_id or keys.app_id,
        "receipt_amount": total,
        "point_amount": "0.00",
        "buyer_pay_amount": total,
        "app_id": app_id or keys.app_id,
        "seller_id": seller_id or keys.seller_id,
    }
    params.update(extra or {})
    return params


def sign_notification(
    params: Mapping[str, str],
    private_pem: str,
    sign_type: str = "RSA2",
    *,
    keep_empty: bool = False,
) -> dict[str, str]:
    """Sign as Alipay does: all parameters but sign/sign_type, sorted, k=v joined by &."""
    content = "&".join(
        f"{key}={params[key]}"
        for key in sorted(params)
        if key not in ("sign", "sign_type") and (keep_empty or params[key] != "")
    )
    signed = dict(params)
    signed["sign"] = rsa_sign(private_pem, content.encode("utf-8"), sign_type)
    signed["sign_type"] = sign_type
    return signed


# --------------------------------------------------------------------------- fake gateway


@dataclass
class GatewayRequest:
    method: str
    common: dict[str, str]
    biz: dict[str, Any]
    signature_ok: bool
    error: str = ""


class FakeAlipayGateway(LocalHTTPFake):
    """A local stand-in for openapi.alipay.com/gateway.do (+ a bill download URL).

    Checks each request's RSA2 signature with the app public key and that ``timestamp`` is
    Beijing time within 5 minutes; answers with RSA2-signed JSON like the real gateway.
    """

    def __init__(self, keys: AlipayTestKeys) -> None:
        self.keys = keys
        self.requests: list[GatewayRequest] = []
        self.trades: dict[str, dict[str, Any]] = {}
        self.refunds: dict[tuple[str, str], dict[str, Any]] = {}
        self.bill_zip: bytes | None = None
        # Fault injection.
        self.tamper_responses = False
        self.sha1_responses = False
        self.unsigned_responses = False
        self.escape_slashes = False
        self.forced_error: tuple[str, str, str] | None = None  # code, sub_code, sub_msg
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget state and faults, so one running gateway can serve many tests."""
        with self._lock:
            self.requests.clear()
            self.trades.clear()
            self.refunds.clear()
            self.bill_zip = None
            self.tamper_responses = False
            self.sha1_responses = False
            self.unsigned_responses = False
            self.escape_slashes = False
            self.forced_error = None

    @property
    def gateway_url(self) -> str:
        return self.base_url + "/gateway.do"

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)

    def mark_paid(self, out_trade_no: str) -> None:
        with self._lock:
            self.trades[out_trade_no]["trade_status"] = "TRADE_SUCCESS"

    # ------------------------------------------------------------- gateway logic

    def check_request(self, common: Mapping[str, str], business: Mapping[str, str]) -> str:
        params = {**common, **business}
        sign = params.pop("sign", "")
        content = "&".join(f"{k}={params[k]}" for k in sorted(params) if params[k] != "")
        if params.get("sign_type") != "RSA2":
            return "sign_type must be RSA2"
        if not sha256_rsa_verify(self.keys.app.public_pem, content.encode(), sign):
            return "isv.invalid-signature"
        if params.get("app_id") != self.keys.app_id:
            return "isv.invalid-app-id"
        if params.get("charset") != "utf-8" or params.get("format") != "JSON":
            return "isv.invalid-charset-or-format"
        try:
            stamp = datetime.strptime(params.get("timestamp", ""), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return "isv.invalid-timestamp"
        drift = abs(stamp.replace(tzinfo=BEIJING).timestamp() - time.time())
        if drift > 300:
            return "isv.invalid-timestamp (not Beijing time?)"
        return ""

    def dispatch(self, method: str, biz: dict[str, Any], notify_url: str) -> dict[str, Any]:
        if self.forced_error is not None:
            code, sub_code, sub_msg = self.forced_error
            return {
                "code": code,
                "msg": "Business Failed",
                "sub_code": sub_code,
                "sub_msg": sub_msg,
            }
        ok = {"code": "10000", "msg": "Success"}
        with self._lock:
            if method in ("alipay.trade.create", "alipay.trade.precreate"):
                out_trade_no = biz["out_trade_no"]
                trade = self.trades.setdefault(
                    out_trade_no,
                    {
                        "trade_no": "2025112422001" + secrets.token_hex(7)[:15],
                        "total_amount": biz["total_amount"],
                        "trade_status": "WAIT_BUYER_PAY",
                        "biz": biz,
                        "notify_url": notify_url,
                    },
                )
                if method == "alipay.trade.create":
                    return {**ok, "out_trade_no": out_trade_no, "trade_no": trade["trade_no"]}
                return {
                    **ok,
                    "out_trade_no": out_trade_no,
                    "qr_code": "https://qr.alipay.com/bax0" + trade["trade_no"][-8:],
                }
            if method == "alipay.trade.query":
                trade = self.trades.get(biz.get("out_trade_no", ""))
                if trade is None:
                    return _business_failed("ACQ.TRADE_NOT_EXIST", "交易不存在")
                return {
                    **ok,
                    "out_trade_no": biz["out_trade_no"],
                    "trade_no": trade["trade_no"],
                    "trade_status": trade["trade_status"],
                    "total_amount": trade["total_amount"],
                    "buyer_user_id": "2088102122524333",
                    "buyer_logon_id": "159****5620",
                }
            if method == "alipay.trade.refund":
                trade = self.trades.get(biz.get("out_trade_no", ""))
                if trade is None or trade["trade_status"] != "TRADE_SUCCESS":
                    return _business_failed("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
                key = (biz["out_trade_no"], biz["out_request_no"])
                if key not in self.refunds:
                    self.refunds[key] = {"refund_amount": biz["refund_amount"]}
                refunded = sum(
                    _fen(r["refund_amount"]) for (no, _), r in self.refunds.items() if no == key[0]
                )
                return {
                    **ok,
                    "out_trade_no": key[0],
                    "trade_no": trade["trade_no"],
                    "fund_change": "Y",
                    "refund_fee": f"{refunded // 100}.{refunded % 100:02d}",
                    "gmt_refund_pay": "2025-11-24 12:00:00",
                    "buyer_logon_id": "159****5620",
                }
            if method == "alipay.trade.fastpay.refund.query":
                key = (biz.get("out_trade_no", ""), biz.get("out_request_no", ""))
                refund = self.refunds.get(key)
                if refund is None:
                    return ok
                trade = self.trades[key[0]]
                return {
                    **ok,
                    "out_trade_no": key[0],
                    "trade_no": trade["trade_no"],
                    "out_request_no": key[1],
                    "refund_amount": refund["refund_amount"],
                    "total_amount": trade["total_amount"],
                    "refund_status": "REFUND_SUCCESS",
                    "gmt_refund_pay": "2025-11-24 12:00:00",
                }
            if method == "alipay.data.dataservice.bill.downloadurl.query":
                if self.bill_zip is None:
                    return _business_failed("isp.bill_not_exist", "账单不存在")
                return {**ok, "bill_download_url": f"{self.base_url}/bill/download.zip?t=1"}
        return {"code": "40004", "msg": "Business Failed", "sub_code": "isv.invalid-method"}

    def render(self, method: str, node: Mapping[str, Any]) -> bytes:
        """Gateway response text: the signed content is the exact JSON of the node."""
        key = method.replace(".", "_") + "_response"
        content = json.dumps(node, ensure_ascii=False, separators=(",", ":"))
        sign = rsa_sign(
            self.keys.alipay.private_pem,
            content.encode(),
            "RSA" if self.sha1_responses else "RSA2",
        )
        if self.escape_slashes:
            content = content.replace("/", "\\/")
        if self.tamper_responses:
            content = content.replace('"10000"', '"10000" ', 1) + " "
        if self.unsigned_responses:
            return f'{{"{key}":{content}}}'.encode()
        return f'{{"{key}":{content},"sign":"{sign}"}}'.encode()


def _business_failed(sub_code: str, sub_msg: str) -> dict[str, str]:
    return {"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg}


def _fen(yuan: str) -> int:
    whole, _, frac = yuan.partition(".")
    return int(whole) * 100 + int((frac + "00")[:2])


def _make_handler(fake: FakeAlipayGateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls per request
        wbufsize = 1 << 16  # headers and body leave in one write
        timeout = 5

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if urlsplit(self.path).path == "/bill/download.zip" and fake.bill_zip is not None:
                self._reply(200, fake.bill_zip, "application/zip")
            else:
                self._reply(404, b"not found", "text/plain")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8") if length else ""
            parts = urlsplit(self.path)
            common = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            business = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
            method = common.get("method", "")
            error = fake.check_request(common, business)
            try:
                biz = json.loads(business.get("biz_content", "{}"))
            except json.JSONDecodeError:
                biz, error = {}, error or "biz_content is not JSON"
            fake.requests.append(GatewayRequest(method, common, biz, not error, error))
            if error:
                node = {"code": "40002", "msg": "Invalid Arguments", "sub_code": error}
                key = method.replace(".", "_") + "_response"
                text = json.dumps({key: node}, ensure_ascii=False).encode()
                self._reply(200, text, "text/html;charset=utf-8")
                return
            node = fake.dispatch(method, biz, common.get("notify_url", ""))
            self._reply(200, fake.render(method, node), "text/html;charset=utf-8")

    return Handler


# --------------------------------------------------------------------------- bills

ALIPAY_DETAIL_HEADER = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,"
    "终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,"
    "商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,"
    "退款批次号/请求号,服务费（元）,分润（元）,备注"
)


@dataclass(frozen=True)
class AlipayBillLine:
    """One 业务明细 row. Refund rows: business 退款, negative 商家实收, out_request_no set."""

    trade_no: str
    out_trade_no: str
    order_yuan: str
    received_yuan: str
    business: str = "交易"
    created: str = "2025-11-23 10:00:00"
    finished: str = "2025-11-23 10:00:05"
    out_request_no: str = ""
    fee_yuan: str = "0.00"
    subject: str = "充电桩 A-03 充电"


def write_alipay_trade_csv(
    lines: Iterable[AlipayBillLine], *, pid: str, bill_date: str = "2025-11-23"
) -> str:
    """The 业务明细 CSV text (before GBK encoding), laid out like Alipay's file."""
    rows = list(lines)
    buffer = io.StringIO()
    year, month, day = bill_date.split("-")
    buffer.write("#支付宝业务明细查询\r\n")
    buffer.write(f"#账号：[{pid}0156]\r\n")
    day_text = f"{year}年{month}月{day}日"
    buffer.write(f"#起始日期：[{day_text} 00:00:00]   终止日期：[{day_text} 23:59:59]\r\n")
    buffer.write(
        "#-----------------------------------------业务明细列表----------------------------------------\r\n"
    )
    buffer.write(ALIPAY_DETAIL_HEADER + "\r\n")
    writer = csv.writer(buffer, lineterminator="\r\n")
    for line in rows:
        values = [
            line.trade_no,
            line.out_trade_no,
            line.business,
            line.subject,
            line.created,
            line.finished,
            "",
            "",
            "",
            "",
            "**明(159******20)",
            line.order_yuan,
            line.received_yuan,
            "0.00",
            "0.00",
            "0.00",
            "0.00",
            "0.00",
            "",
            "0.00",
            "0.00",
            line.out_request_no,
            line.fee_yuan,
            "0.00",
            "",
        ]
        # Alipay appends a tab to identifier fields so Excel keeps them as text.
        writer.writerow(
            [value + "\t" if i in (0, 1, 2, 21) else value for i, value in enumerate(values)]
        )
    buffer.write(
        "#-----------------------------------------业务明细列表结束------------------------------------\r\n"
    )
    trades = sum(1 for line in rows if line.business == "交易")
    refunds = len(rows) - trades
    buffer.write(f"#交易合计：{trades}笔，商家实收共0.00元，商家优惠共0.00元\r\n")
    buffer.write(f"#退款合计：{refunds}笔，商家实收退款共0.00元，商家优惠退款共0.00元\r\n")
    buffer.write("#导出时间：[2025年11月24日 09:12:34]\r\n")
    return buffer.getvalue()


class _GbkZipInfo(zipfile.ZipInfo):
    """Member names in GBK without the UTF-8 flag, as Alipay's zips have them."""

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:
        return self.filename.encode("gbk"), self.flag_bits & ~0x800


def write_alipay_trade_bill_zip(
    lines: Iterable[AlipayBillLine], *, pid: str, bill_date: str = "2025-11-23"
) -> bytes:
    """The downloadable zip: 业务明细 and 业务明细(汇总), GBK-encoded, GBK member names."""
    compact = bill_date.replace("-", "")
    detail = write_alipay_trade_csv(lines, pid=pid, bill_date=bill_date)
    summary = (
        "#支付宝业务汇总查询\r\n#账号：[" + pid + "0156]\r\n"
        "门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）\r\n"
        "#-----------------------------------------业务汇总列表结束------------------------------------\r\n"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in (
            (f"{pid}0156_{compact}_业务明细.csv", detail),
            (f"{pid}0156_{compact}_业务明细(汇总).csv", summary),
        ):
            info = _GbkZipInfo(name, date_time=(2025, 11, 24, 9, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text.encode("gbk"))
    return buffer.getvalue()

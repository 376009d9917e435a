"""Daily bill files from WeChat Pay and Alipay, parsed into typed rows, and reconciliation.

WeChat trade bill (``ALL``; 交易账单文件格式说明, pay.weixin.qq.com): UTF-8 text, a header
line, detail lines whose every field is prefixed with a backtick (`` `2026-11-23 10:00:00,`wx..``),
then the summary header ``总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,
订单总金额,申请退款总金额`` and one summary line. Refund rows have 交易状态 ``REFUND``.

Alipay trade bill (``alipay.data.dataservice.bill.downloadurl.query``, bill_type=trade): a zip
whose ``..._业务明细.csv`` is GBK text: ``#`` comment lines, a header (支付宝交易号, 商户订单号,
业务类型 交易/退款, ..., 订单金额（元）, 商家实收（元）, ..., 退款批次号/请求号, ...), data rows
(fields often end with a tab so Excel keeps them as text), an end marker and ``#`` totals.
Columns are located by header name, not position, because both providers have changed
layouts over time.

Amounts are yuan strings converted with Decimal into fen; fees keep sub-fen precision
(WeChat writes 5 decimals) and stay ``Decimal`` yuan.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Literal, TypeVar

from app.payments.errors import PaymentError
from app.payments.money import yuan_to_fen

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
Provider = Literal["wechat", "alipay"]
RecordKind = Literal["payment", "refund"]
MismatchKind = Literal["missing_here", "missing_there", "amount_differs", "status_differs"]

WECHAT_SUMMARY_FIRST_COLUMN = "总交易单数"


class BillFormatError(PaymentError):
    """The bill file does not have the layout we expect: stop, do not reconcile half a file."""

    code = "bill_malformed"


@dataclass(frozen=True)
class BillRow:
    """One payment or refund line of a provider's bill.

    ``amount_fen`` is the order total for a payment and the refund amount (positive) for a
    refund. ``status`` uses one vocabulary for both providers: SUCCESS for a paid order or a
    succeeded refund, else the provider's word (REVOKED, PROCESSING, ABNORMAL, CLOSED...).
    """

    provider: Provider
    kind: RecordKind
    out_trade_no: str
    provider_trade_no: str
    amount_fen: int
    status: str
    occurred_at: datetime | None = None
    out_refund_no: str = ""
    provider_refund_no: str = ""
    fee_yuan: Decimal = Decimal("0")

    @property
    def key(self) -> tuple[str, str, str]:
        return _key(self.provider, self.kind, self.out_trade_no, self.out_refund_no)


@dataclass(frozen=True)
class WeChatBillSummary:
    """The summary line of a WeChat trade bill (fee keeps its 5 decimals)."""

    total_count: int
    settlement_total_fen: int
    refund_total_fen: int
    coupon_refund_total_fen: int
    fee_total_yuan: Decimal
    order_total_fen: int | None
    requested_refund_total_fen: int | None


@dataclass(frozen=True)
class WeChatTradeBill:
    rows: tuple[BillRow, ...]
    summary: WeChatBillSummary | None


@dataclass(frozen=True)
class OrderRecord:
    """What our database says the provider should list for the day (paid orders, refunds)."""

    provider: Provider
    kind: RecordKind
    out_trade_no: str
    amount_fen: int
    status: str = "SUCCESS"
    out_refund_no: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return _key(self.provider, self.kind, self.out_trade_no, self.out_refund_no)


@dataclass(frozen=True)
class Mismatch:
    """One reconciliation finding. ``reference`` is the out_trade_no (payments) or
    out_refund_no (refunds)."""

    kind: MismatchKind
    provider: str
    record_kind: str
    reference: str
    ours: OrderRecord | None
    theirs: BillRow | None
    detail: str = ""


_Keyed = TypeVar("_Keyed", OrderRecord, BillRow)


def _key(provider: str, kind: str, out_trade_no: str, out_refund_no: str) -> tuple[str, str, str]:
    return (provider, kind, out_refund_no if kind == "refund" else out_trade_no)


# --------------------------------------------------------------------------- amounts


def _fen(value: str, what: str, *, signed: bool = False) -> int:
    """Yuan -> fen; bills write negatives for refunds, which ``signed`` accepts."""
    text = value.strip()
    negative = signed and text.startswith("-")
    if negative:
        text = text[1:]
    try:
        fen = yuan_to_fen(text)
    except ValueError as exc:
        raise BillFormatError(f"{what} is not a yuan amount: {value!r}") from exc
    return -fen if negative else fen


def _decimal(value: str, what: str) -> Decimal:
    text = value.strip() or "0"
    try:
        result = Decimal(text)
    except InvalidOperation as exc:
        raise BillFormatError(f"{what} is not a number: {value!r}") from exc
    if not result.is_finite():
        raise BillFormatError(f"{what} is not a finite number: {value!r}")
    return result


def _time(value: str) -> datetime | None:
    text = value.strip()
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
    except ValueError as exc:
        raise BillFormatError(f"not a bill time: {value!r}") from exc


def _columns(header: Sequence[str], required: Iterable[str]) -> dict[str, int]:
    index = {name: i for i, name in enumerate(header)}
    missing = [name for name in required if name not in index]
    if missing:
        raise BillFormatError(f"bill header lacks {', '.join(missing)}")
    return index


# --------------------------------------------------------------------------- WeChat


def _wechat_fields(line: str) -> list[str]:
    """Split a backtick-prefixed line. Splitting on ``,``` keeps commas inside fields."""
    if not line.startswith("`"):
        raise BillFormatError(f"WeChat bill data line does not start with a backtick: {line!r}")
    return line[1:].split(",`")


def parse_wechat_trade_bill(text: str) -> WeChatTradeBill:
    """Parse a WeChat v3 trade bill (ALL, SUCCESS or REFUND type)."""
    lines = [line for line in text.lstrip("\ufeff").splitlines() if line.strip()]
    if not lines:
        raise BillFormatError("empty WeChat bill")
    header = [name.strip() for name in lines[0].split(",")]
    total_column = "订单金额" if "订单金额" in header else "应结订单金额"
    columns = _columns(header, ("交易时间", "微信订单号", "商户订单号", "交易状态", total_column))
    rows: list[BillRow] = []
    summary: WeChatBillSummary | None = None
    position = 1
    while position < len(lines):
        line = lines[position]
        if line.startswith(WECHAT_SUMMARY_FIRST_COLUMN):
            if position + 1 >= len(lines):
                raise BillFormatError("WeChat bill summary header without values")
            summary = _wechat_summary(line, lines[position + 1])
            if position + 2 != len(lines):
                raise BillFormatError("unexpected lines after the WeChat bill summary")
            break
        fields = _wechat_fields(line)
        if len(fields) != len(header):
            raise BillFormatError(
                f"WeChat bill line has {len(fields)} fields, header has {len(header)}"
            )
        rows.append(_wechat_row(columns, fields, total_column))
        position += 1
    return WeChatTradeBill(rows=tuple(rows), summary=summary)


def _wechat_row(columns: Mapping[str, int], fields: Sequence[str], total_column: str) -> BillRow:
    def get(name: str) -> str:
        return fields[columns[name]].strip() if name in columns else ""

    trade_state = get("交易状态").upper()
    out_trade_no = get("商户订单号")
    provider_trade_no = get("微信订单号")
    occurred_at = _time(get("交易时间"))
    fee = _decimal(get("手续费"), "手续费")
    if trade_state != "REFUND":
        return BillRow(
            provider="wechat",
            kind="payment",
            out_trade_no=out_trade_no,
            provider_trade_no=provider_trade_no,
            amount_fen=_fen(get(total_column), total_column),
            status=trade_state,
            occurred_at=occurred_at,
            fee_yuan=fee,
        )
    requested = get("申请退款金额")
    amount = _fen(requested, "申请退款金额") if requested else 0
    if amount == 0:
        amount = _fen(get("退款金额"), "退款金额")
    out_refund_no = get("商户退款单号")
    if not out_refund_no or out_refund_no == "0":
        raise BillFormatError("WeChat refund row without 商户退款单号")
    return BillRow(
        provider="wechat",
        kind="refund",
        out_trade_no=out_trade_no,
        provider_trade_no=provider_trade_no,
        amount_fen=amount,
        status=(get("退款状态") or "SUCCESS").upper(),
        occurred_at=occurred_at,
        out_refund_no=out_refund_no,
        provider_refund_no=get("微信退款单号"),
        fee_yuan=fee,
    )


def _wechat_summary(header_line: str, values_line: str) -> WeChatBillSummary:
    header = [name.strip() for name in header_line.split(",")]
    values = _wechat_fields(values_line)
    if len(values) != len(header):
        raise BillFormatError("WeChat bill summary does not match its header")
    data = dict(zip(header, (value.strip() for value in values), strict=True))

    def fen(name: str) -> int | None:
        return _fen(data[name], name) if data.get(name) else None

    try:
        count = int(data.get("总交易单数", ""))
    except ValueError as exc:
        raise BillFormatError("总交易单数 is not an integer") from exc
    return WeChatBillSummary(
        total_count=count,
        settlement_total_fen=fen("应结订单总金额") or 0,
        refund_total_fen=fen("退款总金额") or 0,
        coupon_refund_total_fen=fen("充值券退款总金额") or 0,
        fee_total_yuan=_decimal(data.get("手续费总金额", ""), "手续费总金额"),
        order_total_fen=fen("订单总金额"),
        requested_refund_total_fen=fen("申请退款总金额"),
    )


# --------------------------------------------------------------------------- Alipay

_ALIPAY_TRADE_NO = "支付宝交易号"
_ALIPAY_REQUIRED = (
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "完成时间",
    "订单金额(元)",
    "商家实收(元)",
    "退款批次号/请求号",
)


def _normalise_header(name: str) -> str:
    return name.strip().replace("（", "(").replace("）", ")")


def _zip_member_name(info: zipfile.ZipInfo) -> str:
    """Alipay names members in GBK without the UTF-8 flag; zipfile decoded them as cp437."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("gb18030")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


def parse_alipay_trade_bill(data: bytes) -> tuple[BillRow, ...]:
    """Parse the downloaded Alipay bill zip: the 业务明细 member (not 业务明细(汇总))."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise BillFormatError("Alipay bill is not a zip") from exc
    with archive:
        members = [(info, _zip_member_name(info)) for info in archive.infolist()]
        details = [
            info for info, name in members if name.endswith("业务明细.csv") and "汇总" not in name
        ]
        if len(details) != 1:
            raise BillFormatError(f"expected one 业务明细.csv in the zip, found {len(details)}")
        raw = archive.read(details[0])
    return parse_alipay_trade_csv(raw.decode("gb18030"))


def parse_alipay_trade_csv(text: str) -> tuple[BillRow, ...]:
    """Parse the 业务明细 CSV text (already decoded from GBK)."""
    lines = text.lstrip("\ufeff").splitlines()
    position = 0
    while position < len(lines) and (
        not lines[position].strip() or lines[position].startswith("#")
    ):
        position += 1
    if position >= len(lines):
        raise BillFormatError("Alipay bill has no header")
    header = [_normalise_header(name) for name in next(csv.reader([lines[position]]))]
    if not header or header[0] != _ALIPAY_TRADE_NO:
        raise BillFormatError(f"unexpected Alipay bill header: {lines[position]!r}")
    columns = _columns(header, _ALIPAY_REQUIRED)
    fee_column = "服务费(元)" if "服务费(元)" in columns else "手续费(元)"
    body: list[str] = []
    for line in lines[position + 1 :]:
        if line.startswith("#"):
            break
        if line.strip():
            body.append(line)
    rows: list[BillRow] = []
    for fields in csv.reader(body):
        if len(fields) < len(header):
            raise BillFormatError(f"Alipay bill row has {len(fields)} fields, not {len(header)}")
        rows.append(_alipay_row(columns, fields, fee_column))
    return tuple(rows)


def _alipay_row(columns: Mapping[str, int], fields: Sequence[str], fee_column: str) -> BillRow:
    def get(name: str) -> str:
        return fields[columns[name]].strip() if name in columns else ""

    business = get("业务类型")
    if business not in ("交易", "退款"):
        raise BillFormatError(f"unknown Alipay 业务类型 {business!r}")
    order_fen = _fen(get("订单金额(元)"), "订单金额(元)", signed=True)
    if business == "交易":
        kind: RecordKind = "payment"
        amount = order_fen
    else:
        # Refund rows carry the refunded money in 商家实收, negative (some files: positive).
        kind = "refund"
        amount = abs(_fen(get("商家实收(元)"), "商家实收(元)", signed=True)) or abs(order_fen)
    return BillRow(
        provider="alipay",
        kind=kind,
        out_trade_no=get("商户订单号"),
        provider_trade_no=get("支付宝交易号"),
        amount_fen=amount,
        status="SUCCESS",
        occurred_at=_time(get("完成时间")),
        out_refund_no=get("退款批次号/请求号") if kind == "refund" else "",
        fee_yuan=_decimal(get(fee_column), fee_column),
    )


# --------------------------------------------------------------------------- reconcile


def reconcile(ours: Iterable[OrderRecord], theirs: Iterable[BillRow]) -> list[Mismatch]:
    """Compare our records with the provider's bill rows, keyed by provider, kind and
    out_trade_no (payments) / out_refund_no (refunds).

    ``missing_here``: the provider lists it, we have no record (money we never credited,
    or a refund we did not ask for). ``missing_there``: we have it, the bill does not.
    A key present on both sides may give both ``amount_differs`` and ``status_differs``.
    Duplicate keys on either side raise ValueError: they mean a bug, not a mismatch.
    """
    our_map = _index(ours, "our records")
    their_map = _index(theirs, "the bill")
    findings: list[Mismatch] = []
    for key in sorted(our_map.keys() | their_map.keys()):
        provider, kind, reference = key
        mine, bill = our_map.get(key), their_map.get(key)
        if bill is None:
            findings.append(Mismatch("missing_there", provider, kind, reference, mine, None))
            continue
        if mine is None:
            findings.append(Mismatch("missing_here", provider, kind, reference, None, bill))
            continue
        if mine.amount_fen != bill.amount_fen:
            detail = f"ours {mine.amount_fen} fen, theirs {bill.amount_fen} fen"
            findings.append(
                Mismatch("amount_differs", provider, kind, reference, mine, bill, detail)
            )
        if mine.status.upper() != bill.status.upper():
            detail = f"ours {mine.status}, theirs {bill.status}"
            findings.append(
                Mismatch("status_differs", provider, kind, reference, mine, bill, detail)
            )
    return findings


def _index(items: Iterable[_Keyed], where: str) -> dict[tuple[str, str, str], _Keyed]:
    result: dict[tuple[str, str, str], _Keyed] = {}
    for item in items:
        if item.key in result:
            raise ValueError(f"duplicate {item.key} in {where}")
        result[item.key] = item
    return result

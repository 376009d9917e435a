"""Bill parsing (files generated in the providers' layouts) and reconciliation."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from app.payments.alipay import AlipayClient
from app.payments.bills import (
    BillFormatError,
    BillRow,
    OrderRecord,
    parse_alipay_trade_bill,
    parse_alipay_trade_csv,
    parse_wechat_trade_bill,
    reconcile,
)
from tests.support.alipay_fake import (
    AlipayBillLine,
    AlipayTestKeys,
    FakeAlipayGateway,
    write_alipay_trade_bill_zip,
    write_alipay_trade_csv,
)
from tests.support.wechatpay_fake import WeChatBillLine, write_wechat_trade_bill

APPID, MCHID, PID = "wxd678efh567hg6787", "1900009191", "2088102177846880"


def _wechat_bill() -> str:
    return write_wechat_trade_bill(
        [
            WeChatBillLine(
                "2025-11-23 10:00:00",
                "EVC20251123000001",
                "4200000001",
                1230,
                fee_yuan=Decimal("0.07380"),
            ),
            WeChatBillLine("2025-11-23 10:05:00", "EVC20251123000002", "4200000002", 500),
            WeChatBillLine(
                "2025-11-23 11:00:00",
                "EVC20251123000001",
                "4200000001",
                1230,
                out_refund_no="RF20251123000001",
                refund_id="50300001",
                refund_fen=300,
                refund_status="PROCESSING",
            ),
        ],
        appid=APPID,
        mchid=MCHID,
    )


def test_wechat_all_bill_rows_and_summary() -> None:
    text = _wechat_bill()
    assert text.splitlines()[1].startswith("`2025-11-23 10:00:00,`wxd678efh567hg6787,`1900009191")
    bill = parse_wechat_trade_bill(text)
    paid, small, refund = bill.rows
    assert paid == BillRow(
        provider="wechat",
        kind="payment",
        out_trade_no="EVC20251123000001",
        provider_trade_no="4200000001",
        amount_fen=1230,
        status="SUCCESS",
        occurred_at=datetime(2025, 11, 23, 2, 0, tzinfo=UTC),
        fee_yuan=Decimal("0.07380"),
    )
    assert small.amount_fen == 500
    assert (refund.kind, refund.amount_fen, refund.status) == ("refund", 300, "PROCESSING")
    assert (refund.out_refund_no, refund.provider_refund_no) == ("RF20251123000001", "50300001")
    assert bill.summary is not None
    assert bill.summary.total_count == 3
    assert bill.summary.order_total_fen == 1730
    assert bill.summary.refund_total_fen == 300
    assert bill.summary.fee_total_yuan == Decimal("0.07380")


def test_wechat_bill_with_bom_and_without_summary() -> None:
    text = "\ufeff" + write_wechat_trade_bill(
        [WeChatBillLine("2025-11-23 10:00:00", "EVC20251123000001", "4200000001", 1)],
        appid=APPID,
        mchid=MCHID,
        with_summary=False,
    )
    bill = parse_wechat_trade_bill(text)
    assert len(bill.rows) == 1 and bill.summary is None


def test_wechat_fields_may_contain_commas() -> None:
    text = write_wechat_trade_bill(
        [
            WeChatBillLine(
                "2025-11-23 10:00:00",
                "EVC20251123000001",
                "4200000001",
                1,
                description="充电, 2 小时",
            )
        ],
        appid=APPID,
        mchid=MCHID,
    )
    assert parse_wechat_trade_bill(text).rows[0].amount_fen == 1


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: "",
        lambda t: t.replace("商户订单号", "订单"),
        lambda t: t.replace("`0.60%,`1.00,", "`0.60%,`1.005,", 1),
        lambda t: t.replace("`2025-11-23", "2025-11-23", 1),
        lambda t: t.replace(",`JSAPI", ",`JSAPI,`extra", 1),
        lambda t: t.replace("`2025-11-23 10:00:00", "`23/11/2025", 1),
        lambda t: t.rstrip("\r\n").rsplit("\r\n", 1)[0] + "\r\n",  # summary header, no values
    ],
)
def test_wechat_bill_format_errors(mangle: object) -> None:
    text = write_wechat_trade_bill(
        [WeChatBillLine("2025-11-23 10:00:00", "EVC20251123000001", "4200000001", 100)],
        appid=APPID,
        mchid=MCHID,
    )
    with pytest.raises(BillFormatError):
        parse_wechat_trade_bill(mangle(text))  # type: ignore[operator]


ALIPAY_LINES = [
    AlipayBillLine(
        "2025112322001400000001", "EVC20251123000101", "12.30", "12.30", fee_yuan="0.07"
    ),
    AlipayBillLine("2025112322001400000002", "EVC20251123000102", "3.00", "3.00"),
    AlipayBillLine(
        "2025112322001400000001",
        "EVC20251123000101",
        "12.30",
        "-5.00",
        business="退款",
        out_request_no="RF20251123000101",
    ),
]


def test_alipay_zip_is_gbk_with_gbk_member_names() -> None:
    data = write_alipay_trade_bill_zip(ALIPAY_LINES, pid=PID)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        assert all(not info.flag_bits & 0x800 for info in infos)
        assert "业务明细" not in infos[0].filename  # decoded as cp437 by zipfile
        raw = archive.read(infos[0])
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")


def test_alipay_bill_rows() -> None:
    rows = parse_alipay_trade_bill(write_alipay_trade_bill_zip(ALIPAY_LINES, pid=PID))
    paid, small, refund = rows
    assert (paid.kind, paid.amount_fen, paid.status) == ("payment", 1230, "SUCCESS")
    assert paid.provider_trade_no == "2025112322001400000001"  # trailing tab stripped
    assert paid.fee_yuan == Decimal("0.07")
    assert paid.occurred_at == datetime(2025, 11, 23, 2, 0, 5, tzinfo=UTC)
    assert small.amount_fen == 300
    assert (refund.kind, refund.amount_fen, refund.out_refund_no) == (
        "refund",
        500,
        "RF20251123000101",
    )


def test_alipay_bill_errors() -> None:
    with pytest.raises(BillFormatError):
        parse_alipay_trade_bill(b"not a zip")
    empty = io.BytesIO()
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("other.csv", "x")
    with pytest.raises(BillFormatError):
        parse_alipay_trade_bill(empty.getvalue())
    text = write_alipay_trade_csv(ALIPAY_LINES, pid=PID)
    with pytest.raises(BillFormatError):
        parse_alipay_trade_csv(text.replace(",交易\t,", ",转账\t,", 1))
    with pytest.raises(BillFormatError):
        parse_alipay_trade_csv(text.replace("商家实收（元）", "实收"))
    with pytest.raises(BillFormatError):
        parse_alipay_trade_csv("#只有注释\r\n")


def test_alipay_bill_through_the_gateway(
    alipay_client: AlipayClient, alipay_gateway: FakeAlipayGateway, alipay_keys: AlipayTestKeys
) -> None:
    alipay_gateway.bill_zip = write_alipay_trade_bill_zip(ALIPAY_LINES, pid=alipay_keys.seller_id)
    url = alipay_client.bill_download_url(date(2025, 11, 23))
    assert alipay_gateway.requests[-1].biz == {"bill_type": "trade", "bill_date": "2025-11-23"}
    rows = parse_alipay_trade_bill(alipay_client.download_bill(url))
    assert len(rows) == 3


def test_reconcile_finds_each_kind_of_mismatch() -> None:
    theirs = parse_wechat_trade_bill(_wechat_bill()).rows + parse_alipay_trade_bill(
        write_alipay_trade_bill_zip(ALIPAY_LINES, pid=PID)
    )
    ours = [
        OrderRecord("wechat", "payment", "EVC20251123000001", 1230),  # matches
        OrderRecord("wechat", "payment", "EVC20251123000002", 600),  # amount differs
        OrderRecord("wechat", "refund", "EVC20251123000001", 300, out_refund_no="RF20251123000001"),
        # ^ we think SUCCESS, WeChat's bill says PROCESSING: status differs
        OrderRecord("wechat", "payment", "EVC20251123000009", 100),  # missing there
        OrderRecord("alipay", "payment", "EVC20251123000101", 1230),
        OrderRecord("alipay", "refund", "EVC20251123000101", 500, out_refund_no="RF20251123000101"),
        # alipay EVC20251123000102 is missing here
    ]
    findings = reconcile(ours, theirs)
    summary = sorted((m.kind, m.provider, m.record_kind, m.reference) for m in findings)
    assert summary == [
        ("amount_differs", "wechat", "payment", "EVC20251123000002"),
        ("missing_here", "alipay", "payment", "EVC20251123000102"),
        ("missing_there", "wechat", "payment", "EVC20251123000009"),
        ("status_differs", "wechat", "refund", "RF20251123000001"),
    ]
    amount = next(m for m in findings if m.kind == "amount_differs")
    assert amount.ours is not None and amount.theirs is not None
    assert amount.detail == "ours 600 fen, theirs 500 fen"


def test_reconcile_clean_day_and_duplicates() -> None:
    row = BillRow("wechat", "payment", "EVC1", "42", 100, "SUCCESS")
    assert reconcile([OrderRecord("wechat", "payment", "EVC1", 100)], [row]) == []
    with pytest.raises(ValueError):
        reconcile([], [row, row])
    both = reconcile([OrderRecord("wechat", "payment", "EVC1", 1, status="REVOKED")], [row])
    assert {m.kind for m in both} == {"amount_differs", "status_differs"}

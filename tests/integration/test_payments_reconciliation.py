"""Reconciliation: provider bill files (generated in the providers' layouts) against our
orders and refunds; every mismatch kind found, stored, and shown per tenant."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from app.models import ChargingAccount
from app.services import payments, payments_refunds
from app.services.payments_common import BEIJING
from app.services.payments_refunds import RefundEvent
from app.services.uow import UnitOfWork
from tests.factories import World
from tests.integration.test_payments_helpers import API, PayEnv, build_env
from tests.support.alipay_fake import AlipayBillLine, write_alipay_trade_bill_zip
from tests.support.wechatpay_fake import WeChatBillLine, write_wechat_trade_bill

DAY = "2025-11-24"


@pytest.fixture
def env(app: Flask, world: World, tmp_path: Path) -> Iterator[PayEnv]:
    yield from build_env(app, world, tmp_path)


def paid(account_id: int, amount: int, provider: str, txid: str, hour: int,
         day: int = 24) -> str:
    """An order paid at ``hour`` o'clock Beijing time, through the services."""
    uow = UnitOfWork()
    account = uow.session.get(ChargingAccount, account_id)
    assert account is not None
    order = payments.create_order(uow, provider=provider, purpose="topup",
                                  charging_account=account, amount_fen=amount)
    no = order.out_trade_no
    result, _ = payments.apply_paid(uow, payments.PaidEvent(
        provider, no, txid, amount, datetime(2025, 11, day, hour, tzinfo=BEIJING), None,
        "notification"))
    assert result == "credited"
    uow.commit()
    db.session.rollback()
    return no


def unpaid(account_id: int, amount: int, provider: str = "wechat") -> str:
    uow = UnitOfWork()
    account = uow.session.get(ChargingAccount, account_id)
    assert account is not None
    no = payments.create_order(uow, provider=provider, purpose="topup",
                               charging_account=account, amount_fen=amount).out_trade_no
    uow.commit()
    db.session.rollback()
    return no


def refunded(env: PayEnv, amount: int, request_id: str) -> tuple[str, str]:
    """A wallet refund of A that succeeded at 12:00 on DAY: (out_refund_no, out_trade_no)."""
    (part,) = payments_refunds.request_wallet_refund(
        UnitOfWork(), env.world.a.actor, env.account_a, amount_fen=amount, reason="test",
        request_id=request_id, submit=False)
    no, order_id = part.out_refund_no, part.order_id
    uow = UnitOfWork()
    with uow:
        result, _ = payments_refunds.apply_refund_update(uow, RefundEvent(
            "wechat", no, "success", amount, "50300001", datetime(2025, 11, 24, 12,
                                                                  tzinfo=BEIJING)))
        assert result == "refund_updated"
        uow.commit()
    from app.models import PaymentOrder

    order = db.session.get(PaymentOrder, order_id)
    assert order is not None
    out_trade_no = order.out_trade_no
    db.session.rollback()
    return no, out_trade_no


def upload(env: PayEnv, who: str, provider: str, content: bytes | None,
           bill_date: str = DAY) -> Any:
    data: dict[str, Any] = {"provider": provider, "bill_date": bill_date}
    if content is not None:
        data["file"] = (io.BytesIO(content), "bill.csv")
    return env.call("POST", f"{API}/payments/reconciliations", who, data=data,
                    content_type="multipart/form-data")


def items(env: PayEnv, who: str, run_id: int) -> set[tuple[str, str, str]]:
    res = env.call("GET", f"{API}/payments/reconciliations/{run_id}/items", who)
    assert res.status_code == 200, res.get_json()
    return {(i["kind"], i["record_kind"], i["reference"]) for i in res.get_json()}


def test_every_wechat_mismatch_kind_is_found_and_shown_per_tenant(env: PayEnv) -> None:
    a, b = env.account_a, env.world.b.account.id
    ok = paid(a, 1000, "wechat", "4200000201", 9)
    differs = paid(a, 2000, "wechat", "4200000202", 10)
    gone = paid(a, 3000, "wechat", "4200000203", 11)  # newest of A: the refund goes here
    b_gone = paid(b, 1000, "wechat", "4200000204", 13)
    late = unpaid(a, 1000)  # WeChat has it paid, we never heard
    paid(a, 5000, "wechat", "4200000205", 10, day=23)  # another day: not on this bill
    refund_no, refund_order = refunded(env, 500, "recon-req-0001")
    assert refund_order == gone
    lines = [
        WeChatBillLine("2025-11-24 09:00:00", ok, "4200000201", 1000),
        WeChatBillLine("2025-11-24 10:00:00", differs, "4200000202", 2100),
        WeChatBillLine("2025-11-24 10:30:00", late, "4200000206", 1000),
        WeChatBillLine("2025-11-24 10:40:00", "EVsomeoneelse000001", "4200000207", 800),
        WeChatBillLine("2025-11-24 12:00:00", gone, "4200000203", 3000,
                       out_refund_no=refund_no, refund_id="50300001", refund_fen=500),
        WeChatBillLine("2025-11-24 12:30:00", differs, "4200000202", 2000,
                       out_refund_no="RFnotours0000000001", refund_id="50300002",
                       refund_fen=100),
    ]
    text = write_wechat_trade_bill(lines, appid=env.wk.appid, mchid=env.wk.mchid)
    assert upload(env, "op_b", "wechat", b"").status_code == 422  # an empty file
    res = upload(env, "admin", "wechat", text.encode())
    assert res.status_code == 201, res.get_json()
    run = res.get_json()
    assert run["bill_rows"] == 6 and run["mismatch_count"] == 6 and run["source"] == "upload"
    everything = {
        ("amount_differs", "payment", differs),
        ("missing_there", "payment", gone),
        ("missing_there", "payment", b_gone),
        ("status_differs", "payment", late),
        ("missing_here", "payment", "EVsomeoneelse000001"),
        ("missing_here", "refund", "RFnotours0000000001"),
    }
    assert items(env, "admin", run["id"]) == everything
    assert items(env, "grid", run["id"]) == everything  # its tree, and the unattributed
    assert items(env, "op_a", run["id"]) == everything - {
        ("missing_there", "payment", b_gone), ("missing_here", "payment", "EVsomeoneelse000001")}
    assert items(env, "op_b", run["id"]) == {("missing_there", "payment", b_gone)}
    res = env.call("GET", f"{API}/payments/reconciliations/{run['id']}/items", "resident")
    assert res.status_code == 403
    detail = env.call("GET", f"{API}/payments/reconciliations/{run['id']}/items"
                      "?kind=amount_differs", "op_a").get_json()
    assert [(d["our_amount_fen"], d["their_amount_fen"]) for d in detail] == [(2000, 2100)]
    listed = {who: env.call("GET", f"{API}/payments/reconciliations", who).get_json()
              for who in ("admin", "op_a", "op_b")}
    assert [r["mismatch_count"] for r in listed["admin"]] == [6]
    assert [r["mismatch_count"] for r in listed["op_a"]] == [4]
    assert [r["mismatch_count"] for r in listed["op_b"]] == [1]
    assert env.call("GET", f"{API}/payments/reconciliations/999/items", "admin"
                    ).status_code == 404


def test_a_clean_day_has_no_mismatch_and_the_bill_can_be_fetched(env: PayEnv) -> None:
    ok = paid(env.account_a, 1000, "wechat", "4200000211", 9)
    env.wechat.bill_text = write_wechat_trade_bill(
        [WeChatBillLine("2025-11-24 09:00:00", ok, "4200000211", 1000)],
        appid=env.wk.appid, mchid=env.wk.mchid)
    res = upload(env, "op_a", "wechat", None)
    assert res.status_code == 201, res.get_json()
    assert res.get_json()["source"] == "fetch" and res.get_json()["mismatch_count"] == 0
    env.wechat.bill_text = None  # no bill for that day at WeChat
    res = upload(env, "admin", "wechat", None, bill_date="2025-11-25")
    assert res.status_code == 502 and res.get_json()["code"] == "provider_rejected"


def test_alipay_bill_zip(env: PayEnv) -> None:
    ok = paid(env.account_a, 1000, "alipay", "2025112422001000000001", 9)
    gone = paid(env.account_a, 3000, "alipay", "2025112422001000000002", 10)
    lines = [
        AlipayBillLine("2025112422001000000001", ok, "10.00", "10.00",
                       finished="2025-11-24 09:00:05"),
        AlipayBillLine("2025112422001000000009", "EValiunknown0000001", "5.00", "5.00"),
        AlipayBillLine("2025112422001000000001", ok, "10.00", "-2.00", business="退款",
                       out_request_no="RFalinotours000001"),
    ]
    content = write_alipay_trade_bill_zip(lines, pid=env.ak.seller_id, bill_date=DAY)
    res = upload(env, "admin", "alipay", content)
    assert res.status_code == 201, res.get_json()
    assert items(env, "admin", res.get_json()["id"]) == {
        ("missing_there", "payment", gone),
        ("missing_here", "payment", "EValiunknown0000001"),
        ("missing_here", "refund", "RFalinotours000001"),
    }
    env.alipay.bill_zip = content
    fetched = upload(env, "admin", "alipay", None)
    assert fetched.status_code == 201 and fetched.get_json()["mismatch_count"] == 3


@pytest.mark.parametrize("data", [
    {"provider": "wechat", "bill_date": DAY, "file": (io.BytesIO(b"\xff\xfe garbage"), "x")},
    {"provider": "wechat", "bill_date": DAY, "file": (io.BytesIO(b"a,b\n`1,`2\n"), "x")},
    {"provider": "alipay", "bill_date": DAY, "file": (io.BytesIO(b"PK\x03\x04broken"), "x")},
    {"provider": "alipay", "bill_date": DAY, "file": (io.BytesIO("#只有注释\n".encode()), "x")},
    {"provider": "paypal", "bill_date": DAY},
    {"provider": "wechat", "bill_date": "2025-13-01"},
    {"provider": "wechat"},
    {"provider": "wechat", "bill_date": DAY, "extra": "x"},
])
def test_bad_bill_imports_are_4xx(env: PayEnv, data: dict[str, Any]) -> None:
    res = env.call("POST", f"{API}/payments/reconciliations", "admin", data=data,
                   content_type="multipart/form-data")
    assert res.status_code == 422, res.get_data(as_text=True)
    assert set(res.get_json()) == {"code", "message", "details"}


def test_who_may_import(env: PayEnv) -> None:
    text = write_wechat_trade_bill([], appid=env.wk.appid, mchid=env.wk.mchid).encode()
    assert upload(env, "grid", "wechat", text).status_code == 403
    assert upload(env, "resident", "wechat", text).status_code == 403
    assert upload(env, "op_a", "wechat", text).status_code == 201


def test_the_cli_imports_a_bill_file(env: PayEnv, tmp_path: Path) -> None:
    ok = paid(env.account_a, 1000, "wechat", "4200000221", 9)
    path = tmp_path / "bill.csv"
    path.write_text(write_wechat_trade_bill(
        [WeChatBillLine("2025-11-24 09:00:00", ok, "4200000221", 1200)],
        appid=env.wk.appid, mchid=env.wk.mchid))
    db.session.rollback()
    result = env.app.test_cli_runner().invoke(args=[
        "payments", "import-bill", "--provider", "wechat", "--date", DAY, "--file", str(path)])
    assert result.exit_code == 0, result.output
    assert "1 bill rows, 1 of ours, 1 mismatches" in result.output


def test_the_daily_job_fetches_and_reconciles_both_bills(env: PayEnv) -> None:
    from datetime import date

    from app.jobs.payments import import_yesterdays_bills

    ok = paid(env.account_a, 1000, "wechat", "4200000231", 9)
    env.wechat.bill_text = write_wechat_trade_bill(
        [WeChatBillLine("2025-11-24 09:00:00", ok, "4200000231", 1000)],
        appid=env.wk.appid, mchid=env.wk.mchid)
    report = import_yesterdays_bills(today=date(2025, 11, 25))
    assert report["wechat"]["mismatches"] == 0 and report["wechat"]["run_id"] > 0
    assert report["alipay"]["error"] == "provider_unavailable"  # no bill yet: retry later
    env.alipay.bill_zip = write_alipay_trade_bill_zip([], pid=env.ak.seller_id, bill_date=DAY)
    report = import_yesterdays_bills(today=date(2025, 11, 25))  # an hour later
    assert set(report) == {"alipay"} and report["alipay"]["mismatches"] == 0
    assert import_yesterdays_bills(today=date(2025, 11, 25)) == {}  # both done for the day

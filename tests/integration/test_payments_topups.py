"""Top-ups through WeChat Pay and Alipay: orders, notifications (verified for real,
applied exactly once), the order query job, visitor orders and the ON_PAID hook."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from app.extensions import db
from app.jobs.payments import query_stale_orders
from app.models import LedgerTransaction, PaymentNotification, PaymentOrder
from app.models.base import utcnow
from app.services import accounts, payments
from app.services.uow import UnitOfWork
from tests.factories import PIN, World
from tests.integration.test_payments_helpers import (
    API,
    BUYER_ID,
    OPENID,
    PayEnv,
    assert_fail_reply,
    build_env,
    unique,
)
from tests.support.wechatpay_fake import cached_keypair


@pytest.fixture
def env(app: Flask, world: World, tmp_path: Path) -> Iterator[PayEnv]:
    yield from build_env(app, world, tmp_path)


def _credits(key: str) -> int:
    db.session.rollback()
    n = db.session.execute(select(func.count(LedgerTransaction.id)).where(
        LedgerTransaction.idempotency_key == key)).scalar_one()
    db.session.rollback()
    return int(n)


# --------------------------------------------------------------------------- WeChat


def test_wechat_topup_is_credited_once(env: PayEnv) -> None:
    before = env.wallet()
    checkout = env.wechat_order(2000)
    order = checkout["order"]
    assert order["status"] == "created" and order["amount_fen"] == 2000
    params = checkout["pay_params"]
    assert set(params) == {"timeStamp", "nonceStr", "package", "signType", "paySign"}
    # what reached "WeChat": our amount, our number, the payer's openid, signed by us
    (request,) = env.wechat.requests
    assert request.authorization_ok, request.authorization_error
    assert request.json["amount"] == {"total": 2000, "currency": "CNY"}
    assert request.json["out_trade_no"] == order["out_trade_no"]
    assert request.json["payer"] == {"openid": OPENID}
    assert params["package"] == f"prepay_id={env.wechat.orders[order['out_trade_no']]['prepay_id']}"

    headers, body = env.wechat_payment(order["out_trade_no"], 2000, "4200000001")
    res = env.post_wechat(headers, body)
    assert res.status_code == 204 and res.get_data() == b""
    assert env.wallet() == before + 2000
    stored = env.order(order["out_trade_no"])
    assert stored.status == "paid" and stored.provider_transaction_id == "4200000001"
    assert _credits("wechat:4200000001") == 1
    # WeChat's retry of the same notification: acknowledged, nothing more
    assert env.post_wechat(headers, body).status_code == 204
    assert env.wallet() == before + 2000
    # the status endpoint, for the payer and for the operator of the community
    for who in ("resident", "op_a", "admin", "grid"):
        res = env.call("GET", f"{API}/payments/orders/{order['out_trade_no']}", who)
        assert res.status_code == 200 and res.get_json()["status"] == "paid", who
    env.check_books()


@pytest.mark.parametrize("amount", [999, 1500, 0, -1000, 10**9])
def test_amounts_come_from_our_offer(env: PayEnv, amount: int) -> None:
    res = env.call("POST", f"{API}/payments/wechat/orders", "resident",
                   json={"charging_account_id": env.account_a, "amount_fen": amount})
    assert res.status_code == 422, res.get_json()
    assert env.wechat.requests == []


@pytest.mark.parametrize("body", [
    {"amount_fen": "1000"},
    {"amount_fen": 1000.0},
    {"amount_fen": 1000, "out_trade_no": "EVmine000001"},
    {"amount_fen": 1000, "total_fen": 1},
    {},
])
def test_bad_order_input_is_refused(env: PayEnv, body: dict[str, Any]) -> None:
    res = env.call("POST", f"{API}/payments/wechat/orders", "resident",
                   json={"charging_account_id": env.account_a, **body})
    assert res.status_code == 422, res.get_json()
    assert set(res.get_json()) == {"code", "message", "details"}


def test_only_bound_accounts_can_be_topped_up(env: PayEnv) -> None:
    b_account = env.world.b.account.id
    res = env.call("POST", f"{API}/payments/wechat/orders", "resident",
                   json={"charging_account_id": b_account, "amount_fen": 1000})
    assert res.status_code == 404
    res = env.call("POST", f"{API}/payments/wechat/orders", "stranger",
                   json={"charging_account_id": env.account_a, "amount_fen": 1000})
    assert res.status_code == 404
    # staff pay in the app, not for someone: JSAPI orders are for payers only
    res = env.call("POST", f"{API}/payments/wechat/orders", "op_a",
                   json={"charging_account_id": env.account_a, "amount_fen": 1000})
    assert res.status_code == 403
    assert env.wechat.requests == []


def _tampered(env: PayEnv, no: str) -> tuple[dict[str, str], bytes]:
    headers, body = env.wechat_payment(no, 1000, "4200000002")
    return headers, body.replace(b'"event_type":"TRANSACTION.SUCCESS"',
                                 b'"event_type":"TRANSACTION.SUCCESS" ')


BAD_WECHAT: dict[str, Any] = {
    "tampered body": lambda env, no: _tampered(env, no),
    "wrong key": lambda env, no: env.wechat_payment(no, 1000, "4200000002",
                                                    sign_with=cached_keypair("intruder")),
    "unknown serial": lambda env, no: env.wechat_payment(
        no, 1000, "4200000002", serial="PUB_KEY_ID_0000000000000000000000000000000000"),
    "stale timestamp": lambda env, no: env.wechat_payment(
        no, 1000, "4200000002", timestamp=int(time.time()) - 300),
    "future timestamp": lambda env, no: env.wechat_payment(
        no, 1000, "4200000002", timestamp=int(time.time()) + 360),
    "wrong amount": lambda env, no: env.wechat_payment(no, 1, "4200000002"),
    "wrong appid": lambda env, no: env.wechat_payment(no, 1000, "4200000002",
                                                      appid="wx0000000000000bad"),
    "wrong mchid": lambda env, no: env.wechat_payment(no, 1000, "4200000002",
                                                      mchid="1900000000"),
    "wrong apiv3 key": lambda env, no: env.wechat_payment(
        no, 1000, "4200000002", apiv3_key="vutsrqponmlkjihgfedcba9876543210"),
    "not paid": lambda env, no: env.wechat_payment(no, 1000, "4200000002",
                                                   trade_state="NOTPAY"),
    "unknown order": lambda env, no: env.wechat_payment("EVnotours00000001", 1000,
                                                        "4200000002"),
    "no headers": lambda env, no: ({}, env.wechat_payment(no, 1000, "4200000002")[1]),
    "signature probe": lambda env, no: (
        {**env.wechat_payment(no, 1000, "4200000002")[0],
         "Wechatpay-Signature": "WECHATPAY/SIGNTEST/" + "A" * 40},
        env.wechat_payment(no, 1000, "4200000002")[1]),
}


@pytest.mark.parametrize("case", sorted(BAD_WECHAT))
def test_bad_wechat_notifications_move_no_money(env: PayEnv, case: str) -> None:
    no = env.wechat_order(1000)["order"]["out_trade_no"]
    env.wechat.mark_paid(no, "4200000002")
    before, entries = env.wallet(), env.ledger_count()
    headers, body = BAD_WECHAT[case](env, no)
    res = env.post_wechat(headers, body)
    assert_fail_reply(res)
    assert 400 <= res.status_code < 500, (case, res.status_code)
    # and its replay is refused the same way
    assert_fail_reply(env.post_wechat(headers, body))
    assert env.wallet() == before and env.ledger_count() == entries
    assert env.order(no).status == "created"
    env.check_books()


def test_a_refused_amount_is_stored_and_stays_refused(env: PayEnv) -> None:
    no = env.wechat_order(1000)["order"]["out_trade_no"]
    headers, body = env.wechat_payment(no, 1001, "4200000003", notification_id="EV-amount-1")
    assert_fail_reply(env.post_wechat(headers, body), 400)
    db.session.rollback()
    stored = db.session.execute(select(PaymentNotification).where(
        PaymentNotification.notification_id == "EV-amount-1")).scalar_one()
    assert stored.result == "amount_mismatch" and stored.payload["amount"]["total"] == 1001
    assert_fail_reply(env.post_wechat(headers, body), 400)
    assert env.order(no).status == "created"
    env.check_books()


def test_replays_after_a_credit(env: PayEnv) -> None:
    no = env.wechat_order(1000)["order"]["out_trade_no"]
    headers, body = env.wechat_payment(no, 1000, "4200000004", notification_id="EV-replay-1")
    assert env.post_wechat(headers, body).status_code == 204
    after = env.wallet()
    # the same bytes later, re-signed by nobody: stale
    old_headers, old_body = env.wechat_payment(no, 1000, "4200000004",
                                               notification_id="EV-replay-1",
                                               timestamp=int(time.time()) - 3600)
    assert_fail_reply(env.post_wechat(old_headers, old_body), 401)
    # the same notification id carrying other content: refused
    other = env.wechat_payment(no, 1000, "4200000099", notification_id="EV-replay-1")
    assert_fail_reply(env.post_wechat(*other), 400)
    # another notification id for the same payment (WeChat re-sent it): nothing more
    again = env.wechat_payment(no, 1000, "4200000004", notification_id="EV-replay-2")
    assert env.post_wechat(*again).status_code == 204
    # another transaction id for an order already paid: refused, no money
    double = env.wechat_payment(no, 1000, "4200000005", notification_id="EV-replay-3")
    assert_fail_reply(env.post_wechat(*double), 400)
    assert env.wallet() == after
    env.check_books()


def test_fifty_identical_notifications_at_once_credit_once(env: PayEnv) -> None:
    no = env.wechat_order(5000)["order"]["out_trade_no"]
    before = env.wallet()
    headers, body = env.wechat_payment(no, 5000, "4200000050")
    barrier = threading.Barrier(50)
    statuses: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    db.session.rollback()
    app = env.app

    def worker() -> None:
        try:
            with app.app_context():
                client = app.test_client()
                barrier.wait(timeout=30)
                res = client.post(f"{API}/payments/wechat/notify", headers=headers, data=body)
                with lock:
                    statuses.append(res.status_code)
                db.session.remove()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sorted(set(statuses)) == [204], statuses
    assert env.wallet() == before + 5000
    assert _credits("wechat:4200000050") == 1
    db.session.rollback()
    assert db.session.execute(select(func.count(PaymentNotification.id))).scalar_one() == 1
    env.check_books()


# --------------------------------------------------------------------------- the query job


def test_a_missed_notification_is_caught_by_the_query_job(env: PayEnv) -> None:
    no = env.wechat_order(3000)["order"]["out_trade_no"]
    before = env.wallet()
    env.wechat.mark_paid(no, "4200000060")
    now = utcnow()
    assert query_stale_orders(now=now) == {}  # not yet due: created < N minutes ago
    report = query_stale_orders(now=now + timedelta(minutes=6))
    assert report == {"credited": 1}
    assert env.wallet() == before + 3000
    # a second pass does not query it again (it is paid)
    assert query_stale_orders(now=now + timedelta(minutes=20)) == {}
    # the late notification afterwards: acknowledged, nothing more
    late = env.wechat_payment(no, 3000, "4200000060")
    assert env.post_wechat(*late).status_code == 204
    assert env.wallet() == before + 3000
    assert _credits("wechat:4200000060") == 1
    env.check_books()


def test_an_expired_unpaid_order_is_closed_and_a_late_payment_still_counts(env: PayEnv) -> None:
    no = env.wechat_order(1000)["order"]["out_trade_no"]
    now = utcnow()
    assert query_stale_orders(now=now + timedelta(minutes=6)) == {"pending": 1}
    assert env.order(no).status == "created"
    assert query_stale_orders(now=now + timedelta(minutes=31)) == {"closed": 1}
    assert env.order(no).status == "closed"
    assert env.wechat.orders[no]["trade_state"] == "CLOSED"  # closed at WeChat too
    # the payer's money arriving anyway is theirs: credited, never lost
    before = env.wallet()
    late = env.wechat_payment(no, 1000, "4200000061")
    assert env.post_wechat(*late).status_code == 204
    assert env.wallet() == before + 1000
    env.check_books()


def test_the_query_job_refuses_a_wrong_amount(env: PayEnv) -> None:
    no = env.wechat_order(1000)["order"]["out_trade_no"]
    env.wechat.orders[no]["request"]["amount"]["total"] = 1  # WeChat says 1 fen
    env.wechat.mark_paid(no, "4200000062")
    before = env.wallet()
    assert query_stale_orders(now=utcnow() + timedelta(minutes=6)) == {"amount_mismatch": 1}
    assert env.wallet() == before and env.order(no).status == "created"
    env.check_books()


def test_provider_down_while_creating_leaves_the_order_to_the_job(env: PayEnv) -> None:
    env.wechat.forced_error = (500, "SYSTEM_ERROR", "busy")
    res = env.call("POST", f"{API}/payments/wechat/orders", "resident",
                   json={"charging_account_id": env.account_a, "amount_fen": 1000})
    assert res.status_code == 503 and res.get_json()["code"] == "provider_unavailable"
    no = res.get_json()["details"]["out_trade_no"]
    assert env.order(no).status == "created"
    env.wechat.forced_error = (400, "PARAM_ERROR", "bad")
    res = env.call("POST", f"{API}/payments/wechat/orders", "resident",
                   json={"charging_account_id": env.account_a, "amount_fen": 1000})
    assert res.status_code == 502 and res.get_json()["code"] == "provider_rejected"
    env.wechat.forced_error = None
    # the first order never reached WeChat: the job closes it once expired
    assert query_stale_orders(now=utcnow() + timedelta(minutes=31)) == {"closed": 1}
    assert env.order(no).status == "closed"


# --------------------------------------------------------------------------- Alipay


def test_alipay_mini_program_topup(env: PayEnv) -> None:
    checkout = env.alipay_order(1000)
    no = checkout["order"]["out_trade_no"]
    trade = env.alipay.trades[no]
    assert checkout["trade_no"] == trade["trade_no"]
    assert trade["total_amount"] == "10.00" and trade["biz"]["buyer_id"] == BUYER_ID
    assert trade["biz"]["product_code"] == "JSAPI_PAY"
    before = env.wallet()
    params = env.alipay_params(no, 1000, trade["trade_no"])
    res = env.post_alipay(params)
    assert res.status_code == 200 and res.get_data() == b"success"
    assert env.wallet() == before + 1000
    assert env.post_alipay(params).get_data() == b"success"  # Alipay's retry
    # TRADE_FINISHED later (end of the refund window): same trade, nothing more
    finished = env.alipay_params(no, 1000, trade["trade_no"], trade_status="TRADE_FINISHED")
    assert env.post_alipay(finished).get_data() == b"success"
    assert env.wallet() == before + 1000
    assert _credits(f"alipay:{trade['trade_no']}") == 1
    env.check_books()


def test_bad_alipay_notifications_move_no_money(env: PayEnv) -> None:
    no = env.alipay_order(1000)["order"]["out_trade_no"]
    trade_no = env.alipay.trades[no]["trade_no"]
    before, entries = env.wallet(), env.ledger_count()
    good = env.alipay_params(no, 1000, trade_no)
    signed_then_tampered = dict(good)
    from tests.support.alipay_fake import sign_notification

    signed_then_tampered = sign_notification(good, env.ak.alipay.private_pem)
    signed_then_tampered["total_amount"] = "100.00"
    cases = [
        env.call("POST", f"{API}/payments/alipay/notify", data=signed_then_tampered),
        env.post_alipay(good, sign_type="RSA"),  # SHA1: refused
        env.post_alipay(good, private_pem=cached_keypair("intruder").private_pem),
        env.post_alipay(env.alipay_params(no, 1000, trade_no, app_id="2021000000000009")),
        env.post_alipay(env.alipay_params(no, 1000, trade_no, seller_id="2088000000000009")),
        env.post_alipay(env.alipay_params(no, 999, trade_no)),  # wrong amount
        env.post_alipay(env.alipay_params("EVnotours00000002", 1000, trade_no)),
        env.call("POST", f"{API}/payments/alipay/notify", data={"trade_status": "x"}),
    ]
    for res in cases:
        assert res.status_code == 200 and res.get_data() == b"fail"
    assert env.wallet() == before and env.ledger_count() == entries
    assert env.order(no).status == "created"
    env.check_books()


def test_a_partial_refund_notification_never_credits(env: PayEnv) -> None:
    no = env.alipay_order(2000)["order"]["out_trade_no"]
    trade_no = env.alipay.trades[no]["trade_no"]
    assert env.post_alipay(env.alipay_params(no, 2000, trade_no)).get_data() == b"success"
    after = env.wallet()
    refund_fields = {"refund_fee": "5.00", "gmt_refund": "2025-11-24 12:00:00.123",
                     "out_biz_no": "RFsomeoneelse0001"}
    partial = env.alipay_params(no, 2000, trade_no, extra=refund_fields)
    assert env.post_alipay(partial).get_data() == b"success"
    full = env.alipay_params(no, 2000, trade_no, trade_status="TRADE_CLOSED",
                             extra={**refund_fields, "refund_fee": "20.00"})
    assert env.post_alipay(full).get_data() == b"success"
    assert env.wallet() == after
    assert env.order(no).status == "paid"
    env.check_books()


def test_alipay_qr_order_paid_without_notification(env: PayEnv) -> None:
    res = env.call("POST", f"{API}/payments/alipay/qr-orders", "op_a",
                   json={"charging_account_id": env.account_a, "amount_fen": 5000})
    assert res.status_code == 201, res.get_json()
    checkout = res.get_json()
    assert checkout["qr_code"].startswith("https://qr.alipay.com/")
    no = checkout["order"]["out_trade_no"]
    # operator B may not make a QR for A's account
    res = env.call("POST", f"{API}/payments/alipay/qr-orders", "op_b",
                   json={"charging_account_id": env.account_a, "amount_fen": 5000})
    assert res.status_code == 404
    before = env.wallet()
    now = utcnow()
    assert query_stale_orders(now=now + timedelta(minutes=6)) == {"pending": 1}
    env.alipay.mark_paid(no)
    assert query_stale_orders(now=now + timedelta(minutes=12)) == {"credited": 1}
    assert env.wallet() == before + 5000
    late = env.alipay_params(no, 5000, env.alipay.trades[no]["trade_no"])
    assert env.post_alipay(late).get_data() == b"success"
    assert env.wallet() == before + 5000
    env.check_books()


def test_an_unscanned_qr_is_closed_after_expiry(env: PayEnv) -> None:
    res = env.call("POST", f"{API}/payments/alipay/qr-orders", "resident",
                   json={"charging_account_id": env.account_a, "amount_fen": 1000})
    no = res.get_json()["order"]["out_trade_no"]
    del env.alipay.trades[no]  # Alipay knows a precreated trade only once it is scanned
    assert query_stale_orders(now=utcnow() + timedelta(minutes=40)) == {"closed": 1}
    assert env.order(no).status == "closed"


# --------------------------------------------------------------------------- for other code


def test_visitor_order_and_the_on_paid_hook(env: PayEnv) -> None:
    uow = UnitOfWork()
    visitor = accounts.open_charging_account(
        uow.session, community_id=env.world.a.community.id, account_no="13800000077",
        pin=PIN, kind="temporary")
    order = payments.create_order(uow, provider="wechat", purpose="visitor_charge",
                                  charging_account=visitor, amount_fen=437,
                                  reference="S-visitor-1", payer_id=OPENID)
    uow.commit()
    checkout = payments.launch_order(uow, order.id, payer_openid=OPENID)
    no = checkout.order.out_trade_no
    assert checkout.pay_params is not None
    seen: list[tuple[str, str | None, int]] = []

    def hook(session: Any, paid: PaymentOrder) -> None:
        # runs inside the crediting transaction: the money is already on the wallet
        seen.append((paid.purpose, paid.reference, paid.amount_fen))

    payments.ON_PAID.append(hook)
    try:
        assert env.post_wechat(*env.wechat_payment(no, 437, "4200000070")).status_code == 204
    finally:
        payments.ON_PAID.remove(hook)
    assert seen == [("visitor_charge", "S-visitor-1", 437)]
    assert env.wallet(visitor.id) == 437
    env.check_books()


def test_a_failing_hook_rolls_the_payment_back(env: PayEnv) -> None:
    no = env.wechat_order(1000)["order"]["out_trade_no"]
    before = env.wallet()

    def broken(session: Any, paid: PaymentOrder) -> None:
        raise RuntimeError("the charging code failed")

    payments.ON_PAID.append(broken)
    try:
        headers, body = env.wechat_payment(no, 1000, "4200000071")
        assert_fail_reply(env.post_wechat(headers, body), 500)  # WeChat retries
    finally:
        payments.ON_PAID.remove(broken)
    assert env.wallet() == before and env.order(no).status == "created"
    db.session.rollback()
    assert db.session.execute(select(func.count(PaymentNotification.id))).scalar_one() == 0
    # the retry, once the hook is fixed, credits
    assert env.post_wechat(headers, body).status_code == 204
    assert env.wallet() == before + 1000
    env.check_books()


def test_unconfigured_providers_answer_503(env: PayEnv) -> None:
    import dataclasses

    s = env.app.config["SETTINGS"]
    env.app.config["SETTINGS"] = dataclasses.replace(s, wechatpay_mchid="", alipay_app_id="")
    res = env.call("POST", f"{API}/payments/wechat/orders", "resident",
                   json={"charging_account_id": env.account_a, "amount_fen": 1000})
    assert res.status_code == 503 and res.get_json()["code"] == "configuration_error"
    headers, body = env.wechat_payment(unique("EV"), 1000, "4200000072")
    assert_fail_reply(env.post_wechat(headers, body), 503)
    assert env.call("POST", f"{API}/payments/alipay/notify",
                    data={"a": "b"}).get_data() == b"fail"


def test_the_cli_queries_orders(env: PayEnv) -> None:
    no = env.wechat_order(1000)["order"]["out_trade_no"]
    env.wechat.mark_paid(no, "4200000080")
    db.session.rollback()
    with env.app.app_context():  # make the order due now
        db.session.execute(db.update(PaymentOrder).where(PaymentOrder.out_trade_no == no)
                           .values(next_query_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    result = env.app.test_cli_runner().invoke(args=["payments", "query-orders"])
    assert result.exit_code == 0, result.output
    assert "orders: {'credited': 1}" in result.output
    assert env.order(no).status == "paid"

"""Refunds: over the original payments (newest first, never more than paid), ABNORMAL and
CLOSED compensation, retries with the same out_refund_no, cash refunds, visitors' change."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from app.domain.errors import Conflict
from app.extensions import db
from app.jobs.payments import process_refunds
from app.models import LedgerTransaction, PaymentOrder, Refund
from app.models.base import utcnow
from app.services import accounts, payments, payments_refunds
from app.services.uow import UnitOfWork
from tests.factories import PIN, World
from tests.integration.test_payments_helpers import (
    API,
    OPENID,
    PayEnv,
    build_env,
    unique,
)


@pytest.fixture
def env(app: Flask, world: World, tmp_path: Path) -> Iterator[PayEnv]:
    yield from build_env(app, world, tmp_path)


def paid_wechat(env: PayEnv, amount: int, txid: str, at: str) -> str:
    no = str(env.wechat_order(amount)["order"]["out_trade_no"])
    env.wechat.mark_paid(no, txid)
    res = env.post_wechat(*env.wechat_payment(no, amount, txid, success_time=at))
    assert res.status_code == 204
    return no


def refund(env: PayEnv, amount: int, who: str = "op_a", request_id: str | None = None,
           account_id: int | None = None) -> Any:
    return env.call("POST", f"{API}/charging-accounts/{account_id or env.account_a}/refunds",
                    who, json={"amount_fen": amount, "reason": "moving out",
                               "request_id": request_id or unique("req-")})


def refund_calls(env: PayEnv) -> list[dict[str, Any]]:
    return [r.json for r in env.wechat.requests
            if r.method == "POST" and r.target == "/v3/refund/domestic/refunds"]


def keys_of(out_refund_no: str) -> list[str]:
    db.session.rollback()
    keys = list(db.session.execute(select(LedgerTransaction.idempotency_key).where(
        LedgerTransaction.reference == out_refund_no)).scalars())
    db.session.rollback()
    return sorted(keys)


def test_wallet_refund_goes_back_over_the_newest_payments_first(env: PayEnv) -> None:
    older = paid_wechat(env, 1000, "4200000101", "2025-11-24T10:00:00+08:00")
    newer = paid_wechat(env, 2000, "4200000102", "2025-11-24T11:00:00+08:00")
    assert env.wallet() == 5000 + 3000  # the seed was cash
    res = refund(env, 2500)
    assert res.status_code == 201, res.get_json()
    parts = res.get_json()
    assert [(p["out_trade_no"], p["amount_fen"], p["status"]) for p in parts] == [
        (newer, 2000, "processing"), (older, 500, "processing")]
    assert env.wallet() == 5500  # debited when requested
    calls = refund_calls(env)
    assert [(c["out_trade_no"], c["amount"]["refund"], c["amount"]["total"]) for c in calls] == [
        (newer, 2000, 2000), (older, 500, 1000)]
    assert [c["out_refund_no"] for c in calls] == [p["out_refund_no"] for p in parts]
    for part, total in zip(parts, (2000, 1000), strict=True):
        note = env.wechat_refund_note(part["out_trade_no"], part["out_refund_no"],
                                      part["amount_fen"], total)
        assert env.post_wechat(*note).status_code == 204
        assert env.post_wechat(*note).status_code == 204  # the same notification again
    for part in parts:
        res = env.call("GET", f"{API}/payments/refunds/{part['id']}", "resident")
        assert res.status_code == 200 and res.get_json()["status"] == "success"
    assert env.wallet() == 5500
    listed = env.call("GET", f"{API}/charging-accounts/{env.account_a}/refunds", "op_a")
    assert [r["id"] for r in listed.get_json()] == sorted((p["id"] for p in parts), reverse=True)
    env.check_books()


def test_a_refund_never_exceeds_what_was_paid(env: PayEnv) -> None:
    paid_wechat(env, 1000, "4200000111", "2025-11-24T10:00:00+08:00")
    paid_wechat(env, 2000, "4200000112", "2025-11-24T11:00:00+08:00")
    entries = env.ledger_count()
    res = refund(env, 3001)  # the wallet holds 8000, but only 3000 came from WeChat Pay
    assert res.status_code == 409, res.get_json()
    assert res.get_json()["details"]["refundable_fen"] == 3000
    assert env.ledger_count() == entries and refund_calls(env) == []
    assert refund(env, 2500).status_code == 201
    res = refund(env, 501)
    assert res.status_code == 409 and res.get_json()["details"]["refundable_fen"] == 500
    assert refund(env, 500).status_code == 201
    assert refund(env, 1).status_code == 409
    env.check_books()


@pytest.mark.parametrize("status", ["ABNORMAL", "CLOSED"])
def test_abnormal_or_closed_restores_the_wallet_once(env: PayEnv, status: str) -> None:
    no = paid_wechat(env, 1000, "4200000121", "2025-11-24T10:00:00+08:00")
    before = env.wallet()
    (part,) = refund(env, 1000).get_json()
    assert env.wallet() == before - 1000
    bad = env.wechat_refund_note(no, part["out_refund_no"], 1000, 1000, status=status)
    assert env.post_wechat(*bad).status_code == 204
    assert env.wallet() == before
    again = env.wechat_refund_note(no, part["out_refund_no"], 1000, 1000, status=status)
    assert env.post_wechat(*again).status_code == 204
    late_success = env.wechat_refund_note(no, part["out_refund_no"], 1000, 1000)
    assert env.post_wechat(*late_success).status_code == 204  # final states stay final
    assert env.wallet() == before
    res = env.call("GET", f"{API}/payments/refunds/{part['id']}", "op_a")
    assert res.get_json()["status"] == status.lower()
    assert keys_of(part["out_refund_no"]) == [f"refund-restore:{part['out_refund_no']}",
                                              f"refund:{part['out_refund_no']}"]
    # the money is back on the wallet, so it can be refunded again (a new refund number)
    (second,) = refund(env, 1000).get_json()
    assert second["out_refund_no"] != part["out_refund_no"]
    assert env.wallet() == before - 1000
    env.check_books()


def test_a_refund_notification_with_another_amount_is_refused(env: PayEnv) -> None:
    no = paid_wechat(env, 1000, "4200000125", "2025-11-24T10:00:00+08:00")
    (part,) = refund(env, 600).get_json()
    before = env.wallet()
    wrong = env.wechat_refund_note(no, part["out_refund_no"], 700, 1000, status="ABNORMAL")
    assert env.post_wechat(*wrong).status_code == 400
    assert env.wallet() == before
    env.check_books()


def test_a_retry_reuses_the_same_out_refund_no(env: PayEnv) -> None:
    paid_wechat(env, 2000, "4200000131", "2025-11-24T10:00:00+08:00")
    before = env.wallet()
    env.wechat.forced_error = (500, "SYSTEM_ERROR", "busy")
    res = refund(env, 1500)
    assert res.status_code == 201
    (part,) = res.get_json()
    assert part["status"] == "pending" and part["last_error"].startswith("unavailable")
    assert env.wallet() == before - 1500  # held back while the provider is unsure
    env.wechat.forced_error = None
    assert process_refunds(now=utcnow()) == {}  # the next attempt is not due yet
    assert process_refunds(now=utcnow() + timedelta(minutes=2)) == {"processing": 1}
    calls = [c for c in (r.json for r in env.wechat.requests if r.body)
             if c.get("out_refund_no")]
    assert [c["out_refund_no"] for c in calls] == [part["out_refund_no"]] * 2
    # the refund notification never comes: the job asks, WeChat says SUCCESS
    env.wechat.refunds[part["out_refund_no"]]["status"] = "SUCCESS"
    assert process_refunds(now=utcnow() + timedelta(minutes=10)) == {"refund_updated": 1}
    res = env.call("GET", f"{API}/payments/refunds/{part['id']}", "op_a")
    assert res.get_json()["status"] == "success"
    assert env.wallet() == before - 1500
    env.check_books()


def test_the_retry_endpoint(env: PayEnv) -> None:
    paid_wechat(env, 1000, "4200000135", "2025-11-24T10:00:00+08:00")
    env.wechat.forced_error = (503, "SYSTEM_ERROR", "busy")
    (part,) = refund(env, 1000).get_json()
    env.wechat.forced_error = None
    url = f"{API}/payments/refunds/{part['id']}/retry"
    assert env.call("POST", url, "op_b").status_code == 404
    assert env.call("POST", url, "grid").status_code == 403
    assert env.call("POST", url, "resident").status_code == 403
    res = env.call("POST", url, "op_a")
    assert res.status_code == 200 and res.get_json()["status"] == "processing"
    env.wechat.refunds[part["out_refund_no"]]["status"] = "SUCCESS"
    assert env.call("POST", url, "op_a").get_json()["status"] == "success"
    assert env.call("POST", url, "op_a").status_code == 409
    env.check_books()


def test_a_refused_refund_fails_and_restores_the_wallet(env: PayEnv) -> None:
    no = paid_wechat(env, 1000, "4200000141", "2025-11-24T10:00:00+08:00")
    env.wechat.orders[no]["trade_state"] = "REFUND"  # WeChat will refuse it
    before = env.wallet()
    (part,) = refund(env, 800).get_json()
    assert part["status"] == "failed" and part["last_error"].startswith("rejected")
    assert env.wallet() == before
    env.check_books()


def test_a_repeated_request_returns_the_same_refunds(env: PayEnv) -> None:
    paid_wechat(env, 1000, "4200000151", "2025-11-24T10:00:00+08:00")
    first = refund(env, 700, request_id="office-req-0001").get_json()
    second = refund(env, 700, request_id="office-req-0001")
    assert second.status_code == 201
    assert [p["id"] for p in second.get_json()] == [p["id"] for p in first]
    assert len(refund_calls(env)) == 1
    other = refund(env, 300, request_id="office-req-0001")
    assert other.status_code == 409 and other.get_json()["code"] == "idempotency_conflict"
    # the same request id on another account is another request
    assert env.wallet() == 5000 + 1000 - 700
    env.check_books()


def test_refunds_above_the_limit_need_the_platform_admin(env: PayEnv) -> None:
    paid_wechat(env, 5000, "4200000161", "2025-11-24T10:00:00+08:00")
    s = env.app.config["SETTINGS"]
    env.app.config["SETTINGS"] = dataclasses.replace(s, refund_approval_limit_fen=2000)
    res = refund(env, 2001)
    assert res.status_code == 403 and res.get_json()["details"]["limit_fen"] == 2000
    assert refund(env, 2001, who="admin").status_code == 201
    assert refund(env, 2000).status_code == 201


def test_only_the_owning_office_refunds(env: PayEnv) -> None:
    paid_wechat(env, 1000, "4200000171", "2025-11-24T10:00:00+08:00")
    entries = env.ledger_count()
    assert refund(env, 500, who="op_b").status_code == 404
    assert refund(env, 500, who="grid").status_code == 403
    assert refund(env, 500, who="resident").status_code == 403
    assert env.ledger_count() == entries
    (part,) = refund(env, 500).get_json()
    for who, status in (("op_b", 404), ("stranger", 404), ("grid", 200), ("admin", 200)):
        res = env.call("GET", f"{API}/payments/refunds/{part['id']}", who)
        assert res.status_code == status, who
    res = env.call("GET", f"{API}/charging-accounts/{env.account_a}/refunds", "op_b")
    assert res.status_code == 404
    assert env.call("GET", f"{API}/payments/refunds/999999", "admin").status_code == 404


def test_cash_is_refunded_only_as_cash_and_only_what_was_paid(env: PayEnv) -> None:
    url = f"{API}/charging-accounts/{env.account_a}/cash-refunds"
    body = {"amount_fen": 2000, "reason": "moved out", "request_id": "cash-back-0001"}
    res = env.call("POST", url, "op_a", json=body)
    assert res.status_code == 201 and res.get_json()["applied"] is True
    assert env.call("POST", url, "op_a", json=body).get_json()["applied"] is False
    assert env.wallet() == 3000
    res = env.call("POST", url, "op_a", json={**body, "amount_fen": 3001,
                                               "request_id": "cash-back-0002"})
    assert res.status_code == 409 and res.get_json()["details"]["refundable_fen"] == 3000
    assert env.call("POST", url, "op_b", json={**body, "request_id": "cash-back-0003"}
                    ).status_code == 404
    assert env.call("POST", url, "grid", json={**body, "request_id": "cash-back-0004"}
                    ).status_code == 403
    # WeChat Pay money is not cash
    paid_wechat(env, 1000, "4200000181", "2025-11-24T10:00:00+08:00")
    res = env.call("POST", url, "op_a", json={**body, "amount_fen": 3001,
                                               "request_id": "cash-back-0005"})
    assert res.status_code == 409
    assert env.call("POST", url, "op_a", json={**body, "amount_fen": 3000,
                                                "request_id": "cash-back-0006"}
                    ).status_code == 201
    assert env.wallet() == 1000
    env.check_books()


def _visitor(env: PayEnv, amount: int, txid: str) -> tuple[int, PaymentOrder]:
    uow = UnitOfWork()
    visitor = accounts.open_charging_account(
        uow.session, community_id=env.world.a.community.id, account_no="13800000088",
        pin=PIN, kind="temporary")
    order = payments.create_order(uow, provider="wechat", purpose="visitor_charge",
                                  charging_account=visitor, amount_fen=amount,
                                  reference="S-visit-9")
    uow.commit()
    no = payments.launch_order(uow, order.id, payer_openid=OPENID).order.out_trade_no
    env.wechat.mark_paid(no, txid)
    assert env.post_wechat(*env.wechat_payment(no, amount, txid)).status_code == 204
    db.session.rollback()
    paid = db.session.execute(select(PaymentOrder).where(
        PaymentOrder.out_trade_no == no)).scalar_one()
    return visitor.id, paid


def test_a_visitors_unused_prepayment_goes_back(env: PayEnv) -> None:
    visitor_id, order = _visitor(env, 437, "4200000191")
    uow = UnitOfWork()
    part = payments_refunds.refund_unused(uow, order, 300, "unused prepayment")
    refund_id = part.id
    uow.commit()  # sends the refund after the commit
    db.session.rollback()
    sent = db.session.get(Refund, refund_id)
    assert sent is not None and sent.status == "processing" and sent.kind == "visitor_unused"
    (call,) = refund_calls(env)
    assert call["amount"] == {"refund": 300, "total": 437, "currency": "CNY"}
    with pytest.raises(Conflict):
        payments_refunds.refund_unused(UnitOfWork(), order, 138, "too much")
    db.session.rollback()
    assert env.wallet(visitor_id) == 137
    env.check_books()


def test_the_charging_settle_hook_refunds_the_change_once(env: PayEnv) -> None:
    visitor_id, _ = _visitor(env, 500, "4200000195")
    settled = SimpleNamespace(charging_account_id=visitor_id, public_id="S-visit-9")
    for _ in range(2):  # settled twice by mistake: one refund
        uow = UnitOfWork()
        payments_refunds.refund_visitor_change(uow.session, settled, 120)
        uow.commit()
    db.session.rollback()
    parts = db.session.execute(select(Refund).where(
        Refund.charging_account_id == visitor_id)).scalars().all()
    assert [(p.amount_fen, p.status, p.request_key) for p in parts] == [
        (120, "pending", "settle:S-visit-9")]
    db.session.rollback()
    assert refund_calls(env) == []  # the job sends it
    assert process_refunds(now=utcnow()) == {"processing": 1}
    assert [c["amount"]["refund"] for c in refund_calls(env)] == [120]
    assert env.wallet(visitor_id) == 380
    env.check_books()


def test_alipay_refund_and_its_notification(env: PayEnv) -> None:
    no = env.alipay_order(2000)["order"]["out_trade_no"]
    trade_no = env.alipay.trades[no]["trade_no"]
    env.alipay.mark_paid(no)
    assert env.post_alipay(env.alipay_params(no, 2000, trade_no)).get_data() == b"success"
    before = env.wallet()
    (part,) = refund(env, 1500).get_json()
    assert part["status"] == "success"  # fund_change Y
    assert env.alipay.refunds[(no, part["out_refund_no"])] == {"refund_amount": "15.00"}
    notice = env.alipay_params(no, 2000, trade_no, extra={
        "refund_fee": "15.00", "gmt_refund": "2025-11-24 12:00:00.000",
        "out_biz_no": part["out_refund_no"]})
    assert env.post_alipay(notice).get_data() == b"success"
    assert env.wallet() == before - 1500
    env.check_books()


def test_a_refund_we_never_asked_for_moves_nothing(env: PayEnv) -> None:
    no = paid_wechat(env, 1000, "4200000199", "2025-11-24T10:00:00+08:00")
    before, entries = env.wallet(), env.ledger_count()
    for status in ("SUCCESS", "ABNORMAL"):
        note = env.wechat_refund_note(no, "RFnotours00000000001", 1000, 1000, status=status)
        assert env.post_wechat(*note).status_code == 204  # nothing to retry; reconciliation
    assert env.wallet() == before and env.ledger_count() == entries


def test_the_settle_hook_is_registered_with_the_charging_code() -> None:
    from app.services import charging

    assert charging.ON_SETTLED.count(payments_refunds.refund_visitor_change) == 1
    payments.register_charging_hooks()  # registering again changes nothing
    assert charging.ON_SETTLED.count(payments_refunds.refund_visitor_change) == 1


def test_the_cli_processes_refunds(env: PayEnv) -> None:
    paid_wechat(env, 1000, "4200000198", "2025-11-24T10:00:00+08:00")
    env.wechat.forced_error = (500, "SYSTEM_ERROR", "busy")
    (part,) = refund(env, 1000).get_json()
    env.wechat.forced_error = None
    db.session.rollback()
    with env.app.app_context():
        db.session.execute(db.update(Refund).where(Refund.id == part["id"])
                           .values(next_attempt_at=utcnow()))
        db.session.commit()
    result = env.app.test_cli_runner().invoke(args=["payments", "process-refunds"])
    assert result.exit_code == 0, result.output
    assert "refunds: {'processing': 1}" in result.output

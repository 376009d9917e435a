"""A visitor's temporary charge: pay one order, charge, get the unused part refunded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from app.domain.access import Role
from app.extensions import db
from app.models import ChargingAccount, LedgerAccount, Refund
from tests.e2e.conftest import Site
from tests.e2e.helpers import session_row, settled, snapshot
from tests.e2e.test_charging import plugged
from tests.integration.test_payments_helpers import configure_payments, make_user, servers
from tests.support.bridge import wait_until
from tests.support.ledger_checks import assert_ledger_invariants
from tests.support.wechatpay_fake import build_notification, transaction_resource

pytestmark = pytest.mark.mqtt


def _notification(wechat: Any, out_trade_no: str, amount_fen: int) -> tuple[Any, bytes]:
    """What WeChat Pay would post: signed with its key, the resource AES-GCM encrypted."""
    resource = transaction_resource(wechat.keys, out_trade_no, amount_fen,
                                    transaction_id=f"4200{int(time.time() * 1000)}")
    return build_notification(wechat.keys, resource, timestamp=int(time.time()),
                              notification_id=f"EV-{out_trade_no}")


def _post(site: Site, note: tuple[Any, bytes]) -> Any:
    db.session.rollback()
    headers, body = note
    return site.api.client.post("/api/v1/payments/wechat/notify", headers=headers, data=body)


def _pay(site: Site, wechat: Any, out_trade_no: str, amount_fen: int) -> Any:
    return _post(site, _notification(wechat, out_trade_no, amount_fen))


def test_visitor_pays_charges_and_gets_the_change_back(site: Site, app: Flask,
                                                       tmp_path: Path) -> None:
    wechat, alipay = servers()
    wechat.reset()
    configure_payments(app, tmp_path, wechat, alipay)
    _, token = make_user(Role.VISITOR, "openid-visitor-1", "guest")
    guest = site.api.with_token(token)
    plugged(site, 2)
    res = guest.post("/api/v1/visitor-charges",
                     json={"port_code": site.port_codes[2], "amount_fen": 500})
    assert res.status_code == 201, res.get_json()
    order = res.get_json()
    assert order["status"] == "pending_payment" and order["pay_params"]["signType"] == "RSA"
    sid = order["session_id"]
    assert order["order"]["amount_fen"] == 500 and order["order"]["status"] == "created"
    note = _notification(wechat, order["order"]["out_trade_no"], 500)
    assert _post(site, note).status_code in (200, 204)
    wait_until(lambda: session_row(sid).status == "active", timeout=20)
    site.pile.advance(1800)
    site.pile.unplug(2)
    done = wait_until(lambda: settled(sid), timeout=20)
    assert done.method == "visitor" and 0 < done.cost_fen < 500
    assert done.refund_fen == 500 - done.cost_fen
    refund = snapshot(db.session.execute(select(Refund)).scalar_one())
    assert refund.amount_fen == 500 - done.cost_fen
    account = db.session.get(ChargingAccount, done.charging_account_id)
    wallet = db.session.get(LedgerAccount, account.wallet_account_id)
    assert wallet.balance_fen == 0  # paid 500, charged cost, the rest on its way back
    db.session.rollback()
    # the same notification again changes nothing
    assert _post(site, note).status_code in (200, 204)
    assert session_row(sid).cost_fen == done.cost_fen
    assert_ledger_invariants(db.session)


def test_port_taken_before_payment_refunds_everything(site: Site, app: Flask,
                                                      tmp_path: Path) -> None:
    wechat, alipay = servers()
    wechat.reset()
    configure_payments(app, tmp_path, wechat, alipay)
    _, token = make_user(Role.VISITOR, "openid-visitor-2", "guest")
    guest = site.api.with_token(token)
    plugged(site, 1)
    order = guest.post("/api/v1/visitor-charges",
                       json={"port_code": site.port_codes[1], "amount_fen": 300}).get_json()
    # a resident starts on that port while the visitor is still paying
    started = site.phone.post("/api/v1/charging-sessions", json={
        "charging_account_id": site.account_id, "port_code": site.port_codes[1]})
    assert started.status_code == 201
    assert _pay(site, wechat, order["order"]["out_trade_no"], 300).status_code in (200, 204)
    failed = wait_until(lambda: (r := session_row(order["session_id"])).status == "failed"
                        and r)
    assert failed.failure_reason == "paid_but_port_busy"
    refund = snapshot(db.session.execute(select(Refund)).scalar_one())
    assert refund.amount_fen == 300
    assert_ledger_invariants(db.session)

"""Payment endpoints: who sees which order, and bad input is always a 4xx JSON error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.extensions import db
from app.models import ChargingAccount
from app.services import payments
from app.services.uow import UnitOfWork
from tests.factories import World
from tests.integration.test_payments_helpers import API, PayEnv, build_env


@pytest.fixture
def env(app: Flask, world: World, tmp_path: Path) -> Iterator[PayEnv]:
    yield from build_env(app, world, tmp_path)


def b_order() -> str:
    """An order of tenant B's account (made through the service, no provider call)."""
    uow = UnitOfWork()
    account = db.session.execute(
        db.select(ChargingAccount).where(ChargingAccount.account_no == "13900000002")
    ).scalar_one()
    no = payments.create_order(uow, provider="wechat", purpose="topup",
                               charging_account=account, amount_fen=1000).out_trade_no
    uow.commit()
    db.session.rollback()
    return no


def test_who_sees_which_order(env: PayEnv) -> None:
    mine = env.wechat_order(1000)["order"]["out_trade_no"]
    theirs = b_order()
    expected = {
        "resident": {mine: 200, theirs: 404},
        "stranger": {mine: 404, theirs: 404},
        "op_a": {mine: 200, theirs: 404},
        "op_b": {mine: 404, theirs: 200},
        "grid": {mine: 200, theirs: 200},
        "admin": {mine: 200, theirs: 200},
    }
    for who, cases in expected.items():
        for no, status in cases.items():
            res = env.call("GET", f"{API}/payments/orders/{no}", who)
            assert res.status_code == status, (who, no)
            if status == 404:
                assert res.get_json()["code"] == "not_found"
    listed = {who: {o["out_trade_no"] for o in
                    env.call("GET", f"{API}/payments/orders", who).get_json()}
              for who in expected}
    assert listed == {"resident": {mine}, "stranger": set(), "op_a": {mine},
                      "op_b": {theirs}, "grid": {mine, theirs}, "admin": {mine, theirs}}
    res = env.call("GET", f"{API}/payments/orders?charging_account_id="
                   f"{env.world.b.account.id}", "op_a")
    assert res.status_code == 404
    res = env.call("GET", f"{API}/payments/orders?status=created&provider=wechat"
                   f"&charging_account_id={env.account_a}", "op_a")
    assert [o["out_trade_no"] for o in res.get_json()] == [mine]
    assert env.call("GET", f"{API}/payments/orders/{mine}").status_code == 401


BAD_REQUESTS: list[tuple[str, str, str, dict[str, Any], int]] = [
    ("GET", "/payments/orders/" + "E" * 1000, "admin", {}, 404),
    ("GET", "/payments/orders/%00abc", "admin", {}, 404),
    ("GET", "/payments/orders/EV'%20OR%201=1", "admin", {}, 404),
    ("GET", "/payments/orders?status=bogus", "admin", {}, 422),
    ("GET", "/payments/orders?limit=0", "admin", {}, 422),
    ("GET", "/payments/orders?charging_account_id=abc", "admin", {}, 422),
    ("GET", "/payments/orders?charging_account_id=99999999999", "admin", {}, 422),
    ("POST", "/payments/alipay/orders", "resident",
     {"json": {"charging_account_id": 1, "amount_fen": 1000}}, 422),
    ("POST", "/payments/alipay/orders", "resident",
     {"json": {"charging_account_id": 1, "amount_fen": 1000, "buyer_id": "2088102122524333",
               "buyer_open_id": "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5"}}, 422),
    ("POST", "/payments/alipay/orders", "resident",
     {"json": {"charging_account_id": 1, "amount_fen": 1000, "buyer_id": "x"}}, 422),
    ("POST", "/payments/wechat/orders", "resident",
     {"data": "{not json", "content_type": "application/json"}, 400),
    ("POST", "/payments/wechat/orders", "resident", {"json": [1, 2]}, 422),
    ("POST", "/payments/wechat/orders", "resident",
     {"json": {"charging_account_id": 2**31, "amount_fen": 1000}}, 422),
    ("POST", "/charging-accounts/1/refunds", "op_a",
     {"json": {"amount_fen": 10.5, "reason": "x", "request_id": "abcdefgh"}}, 422),
    ("POST", "/charging-accounts/1/refunds", "op_a",
     {"json": {"amount_fen": 100, "reason": "x" * 81, "request_id": "abcdefgh"}}, 422),
    ("POST", "/charging-accounts/1/refunds", "op_a",
     {"json": {"amount_fen": 100, "reason": "x", "request_id": "short"}}, 422),
    ("POST", "/charging-accounts/1/refunds", "op_a",
     {"json": {"amount_fen": 100, "reason": "a\x00b", "request_id": "abcdefgh"}}, 422),
    ("POST", "/charging-accounts/1/cash-refunds", "op_a",
     {"json": {"amount_fen": 0, "reason": "x", "request_id": "abcdefgh"}}, 422),
    ("POST", "/payments/refunds/1/retry", "op_a", {}, 404),
    ("GET", "/payments/refunds/2147483648", "admin", {}, 404),
    ("GET", "/payments/reconciliations?provider=x", "admin", {}, 422),
    ("GET", "/payments/reconciliations/1/items?kind=x", "admin", {}, 422),
    ("GET", "/payments/reconciliations/1/items?limit=100000", "admin", {}, 422),
    ("POST", "/payments/wechat/orders", None,
     {"json": {"charging_account_id": 1, "amount_fen": 1000}}, 401),
]


@pytest.mark.parametrize(("method", "path", "who", "kw", "status"), BAD_REQUESTS)
def test_bad_requests_are_4xx_json(env: PayEnv, method: str, path: str, who: str | None,
                                   kw: dict[str, Any], status: int) -> None:
    entries = env.ledger_count()
    res = env.call(method, API + path, who, **kw)
    assert res.status_code == status, res.get_data(as_text=True)[:300]
    body = res.get_json()
    assert set(body) == {"code", "message", "details"}, body
    assert env.ledger_count() == entries


def test_bad_notification_bodies(env: PayEnv) -> None:
    for body in (b"", b"{}", b"\xff" * 100, b"[" * 5000, b'{"id": 1}'):
        res = env.post_wechat({"Content-Type": "application/json"}, body)
        assert 400 <= res.status_code < 500 and res.get_json()["code"] == "FAIL"
    res = env.call("POST", f"{API}/payments/wechat/notify", data=b"x" * (2 * 1024 * 1024),
                   headers={"Content-Type": "application/json"})
    assert res.status_code == 413
    for kw in ({"json": {"sign": "x"}}, {"data": b"\xff\xfe"}, {"data": {"sign": "%%%"}}):
        res = env.call("POST", f"{API}/payments/alipay/notify", **kw)
        assert res.status_code == 200 and res.get_data() == b"fail"


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.dictionaries(
    st.sampled_from(["charging_account_id", "amount_fen", "buyer_id", "reason", "request_id",
                     "x"]),
    st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63), st.floats(),
              st.text(max_size=40), st.lists(st.integers(), max_size=2)),
    max_size=4))
def test_fuzzed_bodies_never_5xx(env: PayEnv, body: dict[str, Any]) -> None:
    for path, who in (("/payments/wechat/orders", "resident"),
                      ("/payments/alipay/qr-orders", "op_a"),
                      (f"/charging-accounts/{env.account_a}/refunds", "op_a"),
                      (f"/charging-accounts/{env.account_a}/cash-refunds", "op_a")):
        res = env.call("POST", API + path, who, json=body)
        assert res.status_code < 500, (path, body, res.get_data(as_text=True)[:200])
    env.check_books()


def test_payment_settings_from_the_environment(tmp_path: Path) -> None:
    from app.config import load_settings
    from app.domain.errors import ConfigurationError
    from app.services.payments_providers import build_wechat_client, wechat_notify_url

    s = load_settings(environ={"PAYMENT_TOPUP_AMOUNTS_FEN": "1000, 2000,5000",
                               "REFUND_APPROVAL_LIMIT_FEN": "30000",
                               "PUBLIC_BASE_URL": "https://evc.example.com/"})
    assert s.payment_topup_amounts_fen == (1000, 2000, 5000)
    assert s.refund_approval_limit_fen == 30000
    assert wechat_notify_url(s) == "https://evc.example.com/api/v1/payments/wechat/notify"
    with pytest.raises(ConfigurationError):
        load_settings(environ={"PAYMENT_TOPUP_AMOUNTS_FEN": "10 yuan"})
    with pytest.raises(ConfigurationError):  # not configured: a clear 503, not a crash
        build_wechat_client(s)
    broken = load_settings(environ={
        "WECHATPAY_MCHID": "1900009191", "WECHAT_APPID": "wxd678efh567hg6787",
        "WECHATPAY_CERT_SERIAL": "ABC", "WECHATPAY_APIV3_KEY": "0123456789abcdefghijklmnopqrstuv",
        "WECHATPAY_PRIVATE_KEY_PATH": str(tmp_path / "nope.pem")})
    with pytest.raises(ConfigurationError, match="cannot be read"):
        build_wechat_client(broken)

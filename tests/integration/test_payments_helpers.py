"""Shared set-up for the payment integration tests (no tests here).

Real keys (our own), real signatures and encryption byte for byte, the real endpoints
through Flask's test client (each request in a fresh app context, as a server runs them),
and real HTTP to local fake WeChat Pay / Alipay servers. The fakes start once per test
session; each test resets them.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask
from flask_jwt_extended import create_access_token
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from app.domain.access import Actor, Role
from app.extensions import db
from app.models import (
    ChargingAccount,
    LedgerAccount,
    LedgerTransaction,
    PaymentOrder,
    User,
)
from app.services import accounts
from app.services.uow import UnitOfWork
from tests.factories import PASSWORD, PIN, World
from tests.support.alipay_fake import (
    AlipayTestKeys,
    FakeAlipayGateway,
    make_alipay_keys,
    payment_notification_params,
    sign_notification,
)
from tests.support.ledger_checks import assert_ledger_invariants
from tests.support.wechatpay_fake import (
    FakeWeChatPayServer,
    RsaKeyPair,
    WeChatPayTestKeys,
    build_notification,
    make_wechat_keys,
    refund_resource,
    transaction_resource,
)

API = "/api/v1"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
BUYER_ID = "2088102122524333"
OFFERED = (1000, 2000, 3000, 5000, 10000, 50000)
_counter = itertools.count(1)


@functools.lru_cache(maxsize=1)
def servers() -> tuple[FakeWeChatPayServer, FakeAlipayGateway]:
    """The two fake providers, started once per test session (daemon threads)."""
    wechat = FakeWeChatPayServer(make_wechat_keys()).start()
    alipay = FakeAlipayGateway(make_alipay_keys()).start()
    return wechat, alipay


def unique(prefix: str) -> str:
    return f"{prefix}{int(time.time())}{next(_counter):06d}{secrets.token_hex(3)}"


@dataclass
class PayEnv:
    app: Flask
    world: World
    wechat: FakeWeChatPayServer
    alipay: FakeAlipayGateway
    resident_id: int
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def wk(self) -> WeChatPayTestKeys:
        return self.wechat.keys

    @property
    def ak(self) -> AlipayTestKeys:
        return self.alipay.keys

    @property
    def account_a(self) -> int:
        return self.world.a.account.id

    # ------------------------------------------------------------- requests

    def call(self, method: str, url: str, who: str | None = None, **kw: Any) -> TestResponse:
        """One request in a fresh app context; ``who`` names a token (resident, op_a...)."""
        db.session.rollback()  # the test's session must not hold SQLite's write lock
        headers = dict(kw.pop("headers", {}) or {})
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens[who]}"
        with self.app.app_context():
            return self.app.test_client().open(url, method=method, headers=headers, **kw)

    def wechat_order(self, amount_fen: int = 1000, account_id: int | None = None,
                     who: str = "resident") -> dict[str, Any]:
        res = self.call("POST", f"{API}/payments/wechat/orders", who, json={
            "charging_account_id": account_id or self.account_a, "amount_fen": amount_fen})
        assert res.status_code == 201, res.get_json()
        return dict(res.get_json())

    def alipay_order(self, amount_fen: int = 1000) -> dict[str, Any]:
        res = self.call("POST", f"{API}/payments/alipay/orders", "resident", json={
            "charging_account_id": self.account_a, "amount_fen": amount_fen,
            "buyer_id": BUYER_ID})
        assert res.status_code == 201, res.get_json()
        return dict(res.get_json())

    def wechat_payment(self, out_trade_no: str, amount_fen: int, transaction_id: str, *,
                       notification_id: str | None = None, timestamp: int | None = None,
                       sign_with: RsaKeyPair | None = None, serial: str | None = None,
                       apiv3_key: str | None = None, **resource_kw: Any
                       ) -> tuple[dict[str, str], bytes]:
        resource = transaction_resource(self.wk, out_trade_no, amount_fen,
                                        transaction_id=transaction_id, **resource_kw)
        return build_notification(
            self.wk, resource, timestamp=int(time.time()) if timestamp is None else timestamp,
            notification_id=notification_id or unique("EV-"), sign_with=sign_with,
            serial=serial, apiv3_key=apiv3_key)

    def wechat_refund_note(self, out_trade_no: str, out_refund_no: str, refund_fen: int,
                           total_fen: int, status: str = "SUCCESS",
                           notification_id: str | None = None) -> tuple[dict[str, str], bytes]:
        resource = refund_resource(self.wk, out_trade_no, out_refund_no, refund_fen, total_fen,
                                   refund_status=status, refund_id=unique("5030"))
        return build_notification(self.wk, resource, event_type=f"REFUND.{status}",
                                  timestamp=int(time.time()),
                                  notification_id=notification_id or unique("EV-R-"))

    def post_wechat(self, headers: dict[str, str], body: bytes) -> TestResponse:
        return self.call("POST", f"{API}/payments/wechat/notify", headers=headers, data=body)

    def alipay_params(self, out_trade_no: str, amount_fen: int, trade_no: str,
                      **kw: Any) -> dict[str, str]:
        kw.setdefault("notify_id", unique("N"))
        return payment_notification_params(self.ak, out_trade_no, amount_fen,
                                           trade_no=trade_no, **kw)

    def post_alipay(self, params: dict[str, str], sign_type: str = "RSA2",
                    private_pem: str | None = None) -> TestResponse:
        signed = sign_notification(params, private_pem or self.ak.alipay.private_pem,
                                   sign_type)
        return self.call("POST", f"{API}/payments/alipay/notify", data=signed)

    # ------------------------------------------------------------- reading the database

    def wallet(self, account_id: int | None = None) -> int:
        db.session.rollback()
        account = db.session.get(ChargingAccount, account_id or self.account_a)
        assert account is not None
        balance = db.session.get(LedgerAccount, account.wallet_account_id)
        assert balance is not None
        value = balance.balance_fen
        db.session.rollback()
        return value

    def order(self, out_trade_no: str) -> PaymentOrder:
        db.session.rollback()
        order = db.session.execute(
            select(PaymentOrder).where(PaymentOrder.out_trade_no == out_trade_no)).scalar_one()
        return order

    def ledger_count(self) -> int:
        db.session.rollback()
        count = int(db.session.execute(select(func.count(LedgerTransaction.id))).scalar_one())
        db.session.rollback()
        return count

    def check_books(self) -> None:
        db.session.rollback()
        assert_ledger_invariants(db.session)
        db.session.rollback()


def configure_payments(app: Flask, tmp_path: Path, wechat: FakeWeChatPayServer,
                       alipay: FakeAlipayGateway, **overrides: Any) -> None:
    """Point the app's one Settings object at the fakes, with keys in files as in prod."""
    wk, ak = wechat.keys, alipay.keys
    files = {
        "merchant.pem": wk.merchant.private_pem,
        "platform_public.pem": wk.platform.public_pem,
        "alipay_app.pem": ak.app.private_pkcs1_pem,
        "alipay_public.pem": ak.alipay.public_pem,
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    values: dict[str, Any] = {
        "wechat_appid": wk.appid,
        "wechatpay_mchid": wk.mchid,
        "wechatpay_private_key_path": str(tmp_path / "merchant.pem"),
        "wechatpay_cert_serial": wk.merchant_serial,
        "wechatpay_apiv3_key": wk.apiv3_key,
        "wechatpay_public_key_path": str(tmp_path / "platform_public.pem"),
        "wechatpay_public_key_id": wk.platform_key_id,
        "wechatpay_api_base_url": wechat.base_url,
        "wechatpay_notify_url": "https://pay.example.com/api/v1/payments/wechat/notify",
        "alipay_app_id": ak.app_id,
        "alipay_private_key_path": str(tmp_path / "alipay_app.pem"),
        "alipay_public_key_path": str(tmp_path / "alipay_public.pem"),
        "alipay_seller_id": ak.seller_id,
        "alipay_gateway_url": alipay.gateway_url,
        "alipay_notify_url": "https://pay.example.com/api/v1/payments/alipay/notify",
        "payment_topup_amounts_fen": OFFERED,
    }
    values.update(overrides)
    app.config["SETTINGS"] = dataclasses.replace(app.config["SETTINGS"], **values)


def login(env_app: Flask, username: str) -> str:
    db.session.rollback()
    with env_app.app_context():
        res = env_app.test_client().post(f"{API}/auth/login",
                                         json={"username": username, "password": PASSWORD})
    assert res.status_code == 200, res.get_json()
    return str(res.get_json()["access_token"])


def make_user(role: Role, openid: str | None, name: str) -> tuple[int, str]:
    user = User(role=role.value, openid=openid, display_name=name)
    db.session.add(user)
    db.session.commit()
    token = create_access_token(identity=user)
    user_id = user.id
    db.session.rollback()
    return user_id, token


def build_env(app: Flask, world: World, tmp_path: Path) -> Iterator[PayEnv]:
    """The world with a resident bound to A's account, tokens for everyone, fakes reset."""
    wechat, alipay = servers()
    wechat.reset()
    alipay.reset()
    configure_payments(app, tmp_path, wechat, alipay)
    resident_id, resident_token = make_user(Role.RESIDENT, OPENID, "payer")
    accounts.bind_account(UnitOfWork(), Actor(resident_id, Role.RESIDENT),
                          community_id=world.a.community.id,
                          account_no=world.a.account.account_no or "", pin=PIN)
    # a resident without any binding, and one with no openid (never logged in by WeChat)
    _, stranger = make_user(Role.RESIDENT, "openid-stranger", "stranger")
    db.session.rollback()
    env = PayEnv(app, world, wechat, alipay, resident_id)
    env.tokens.update(resident=resident_token, stranger=stranger)
    for name in ("op_a", "op_b", "grid", "admin"):
        env.tokens[name] = login(app, name)
    db.session.rollback()
    yield env
    env.check_books()  # the ledger invariants hold after every payment test


def assert_fail_reply(res: TestResponse, status: int | None = None) -> None:
    """WeChat's failure reply: 4xx/5xx with {"code": "FAIL", "message": ...}."""
    assert 400 <= res.status_code < 600, res.status_code
    if status is not None:
        assert res.status_code == status, (res.status_code, res.get_data(as_text=True))
    body = res.get_json()
    assert body["code"] == "FAIL" and isinstance(body["message"], str), body

"""Logging in: WeChat code2Session against a local WeChat, passwords, tokens, lockout."""

from __future__ import annotations

from typing import Any

from flask import Flask

from app.extensions import db
from app.models import SharedToken, User
from tests.factories import PASSWORD, PIN
from tests.support.fake_wechat import FakeWeChat


def test_wechat_login_creates_a_resident_once(world: Any, api: Any, wechat: FakeWeChat) -> None:
    wechat.issue_code("code-1", "openid-alice", unionid="union-alice")
    res = api.client.post("/api/v1/auth/wechat-login", json={"code": "code-1"})
    assert res.status_code == 200, res.get_json()
    first = res.get_json()
    assert first["role"] == "resident"
    wechat.issue_code("code-2", "openid-alice")
    second = api.client.post("/api/v1/auth/wechat-login", json={"code": "code-2"}).get_json()
    assert second["user_id"] == first["user_id"]
    assert db.session.query(User).filter_by(openid="openid-alice").count() == 1
    # the access token wechatpy fetched is shared through the database, not per process
    assert db.session.get(SharedToken, f"{wechat.appid}_access_token") is not None
    me = api.with_token(first["access_token"]).get("/api/v1/auth/me").get_json()
    assert me["role"] == "resident"


def test_wechat_rejects_a_reused_or_unknown_code(world: Any, api: Any,
                                                 wechat: FakeWeChat) -> None:
    wechat.issue_code("code-1", "openid-bob")
    assert api.client.post("/api/v1/auth/wechat-login", json={"code": "code-1"}).status_code == 200
    res = api.client.post("/api/v1/auth/wechat-login", json={"code": "code-1"})
    assert res.status_code == 401
    assert res.get_json()["code"] == "unauthenticated"


def test_resident_binds_accounts_and_changes_pin(world: Any, api: Any,
                                                  wechat: FakeWeChat) -> None:
    wechat.issue_code("c", "openid-carol")
    token = api.client.post("/api/v1/auth/wechat-login", json={"code": "c"}).get_json()
    me = api.with_token(token["access_token"])
    assert me.get("/api/v1/charging-accounts").get_json() == []
    for tenant in (world.a, world.b):  # one user binds several accounts
        res = me.post("/api/v1/me/bindings", json={
            "community_id": tenant.community.id, "account_no": tenant.account.account_no,
            "pin": PIN})
        assert res.status_code == 201, res.get_json()
    listed = me.get("/api/v1/charging-accounts").get_json()
    assert {a["id"] for a in listed} == {world.a.account.id, world.b.account.id}
    res = me.post(f"/api/v1/charging-accounts/{world.a.account.id}/pin",
                  json={"old_pin": PIN, "new_pin": "246813"})
    assert res.status_code == 204
    assert me.delete(f"/api/v1/me/bindings/{world.a.account.id}").status_code == 204
    assert me.get(f"/api/v1/charging-accounts/{world.a.account.id}").status_code == 404
    bind_again = me.post("/api/v1/me/bindings", json={
        "community_id": world.a.community.id, "account_no": world.a.account.account_no,
        "pin": "246813"})
    assert bind_again.status_code == 201


def test_pin_lockout_after_repeated_failures(world: Any, api: Any, wechat: FakeWeChat,
                                             app: Flask) -> None:
    wechat.issue_code("c", "openid-dave")
    token = api.client.post("/api/v1/auth/wechat-login", json={"code": "c"}).get_json()
    me = api.with_token(token["access_token"])
    body = {"community_id": world.a.community.id, "account_no": world.a.account.account_no,
            "pin": "975310"}
    limit = app.config["SETTINGS"].keypad_max_failures
    for _ in range(limit):
        assert me.post("/api/v1/me/bindings", json=body).status_code == 401
    locked = me.post("/api/v1/me/bindings", json=dict(body, pin=PIN))
    assert locked.status_code == 423
    assert locked.get_json()["code"] == "account_locked"
    # the property office lifts it with a reset
    op = api.login("op_a")
    assert op.post(f"/api/v1/charging-accounts/{world.a.account.id}/pin-reset",
                   json={"new_pin": "864202"}).status_code == 204
    assert me.post("/api/v1/me/bindings", json=dict(body, pin="864202")).status_code == 201


def test_password_login_lockout(world: Any, api: Any, app: Flask) -> None:
    limit = app.config["SETTINGS"].login_max_failures
    for _ in range(limit):
        res = api.client.post("/api/v1/auth/login", json={"username": "op_a", "password": "x"})
        assert res.status_code == 401
    res = api.client.post("/api/v1/auth/login", json={"username": "op_a", "password": PASSWORD})
    assert res.status_code == 423
    unknown = api.client.post("/api/v1/auth/login", json={"username": "nobody", "password": "x"})
    assert unknown.status_code == 401


def test_refresh_rotates_and_logout_revokes(world: Any, api: Any) -> None:
    tokens = api.client.post("/api/v1/auth/login",
                             json={"username": "op_a", "password": PASSWORD}).get_json()
    refresh_hdr = {"Authorization": f"Bearer {tokens['refresh_token']}"}
    new = api.client.post("/api/v1/auth/refresh", headers=refresh_hdr)
    assert new.status_code == 200
    again = api.client.post("/api/v1/auth/refresh", headers=refresh_hdr)
    assert again.status_code == 401 and again.get_json()["code"] == "token_revoked"
    fresh = new.get_json()
    me = api.with_token(fresh["access_token"])
    assert me.post("/api/v1/auth/logout",
                   json={"refresh_token": fresh["refresh_token"]}).status_code == 200
    assert me.get("/api/v1/auth/me").get_json()["code"] == "token_revoked"
    res = api.client.post("/api/v1/auth/refresh",
                          headers={"Authorization": f"Bearer {fresh['refresh_token']}"})
    assert res.status_code == 401


def test_disabled_user_token_stops_working(world: Any, api: Any) -> None:
    op = api.login("op_a")
    world.a.operator.is_active = False
    db.session.commit()
    res = op.get("/api/v1/auth/me")
    assert res.status_code == 401


def test_operator_manages_accounts_cards_and_cash(world: Any, api: Any) -> None:
    op = api.login("op_a")
    created = op.post("/api/v1/charging-accounts", json={
        "community_id": world.a.community.id, "account_no": "13912345678", "pin": "102938",
        "holder_name": "New Resident"})
    assert created.status_code == 201, created.get_json()
    account_id = created.get_json()["id"]
    dup = op.post("/api/v1/charging-accounts", json={
        "community_id": world.a.community.id, "account_no": "13912345678", "pin": "102938"})
    assert dup.status_code == 409
    card = op.post(f"/api/v1/charging-accounts/{account_id}/cards",
                   json={"card_uid": "04a1b2c3d4"})
    assert card.status_code == 201 and card.get_json()["card_uid"] == "04A1B2C3D4"
    topup = {"amount_fen": 2000, "request_id": "office-0001"}
    first = op.post(f"/api/v1/charging-accounts/{account_id}/cash-topups", json=topup)
    second = op.post(f"/api/v1/charging-accounts/{account_id}/cash-topups", json=topup)
    assert first.get_json()["applied"] and not second.get_json()["applied"]
    assert second.get_json()["balance"]["available_fen"] == 2000
    # cannot close with money on it; reverse the top-up first
    assert op.delete(f"/api/v1/charging-accounts/{account_id}").status_code == 409
    txn = first.get_json()["transaction_id"]
    rev = op.post(f"/api/v1/ledger-transactions/{txn}/reversal", json={"reason": "typo"})
    assert rev.status_code == 201 and rev.get_json()["balance"]["available_fen"] == 0
    assert op.post(f"/api/v1/ledger-transactions/{txn}/reversal",
                   json={"reason": "typo"}).get_json()["applied"] is False
    history = op.get(f"/api/v1/charging-accounts/{account_id}/transactions").get_json()
    assert [h["kind"] for h in history] == ["topup_reversal", "topup"]
    assert op.delete(f"/api/v1/charging-accounts/{account_id}").status_code == 204
    assert op.get(f"/api/v1/charging-accounts/{account_id}").status_code == 404
    # the number is free again once the account is closed
    reopened = op.post("/api/v1/charging-accounts", json={
        "community_id": world.a.community.id, "account_no": "13912345678", "pin": "102938"})
    assert reopened.status_code == 201

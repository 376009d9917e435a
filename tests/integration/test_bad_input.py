"""Bad input gets a 4xx in the one JSON error format, never a 500, and changes nothing.

Table-driven: wrong types, unknown and forbidden fields, oversized strings, bad phone
numbers, PINs and passwords, malformed and non-object JSON, wrong content types, a body
over MAX_CONTENT_LENGTH, bad amounts and ids, unknown routes and wrong methods. Then
tokens: expired, forged, ``alg: none``, HS512, a refresh token used as an access token,
a revoked one (also after a restart). Last, a hypothesis fuzz of two write endpoints.

Every request runs in its own application context, as in production (see
test_tenancy.py for why the shared ``api`` fixture is not used).
"""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt as pyjwt
import pytest
from flask import Flask
from flask_jwt_extended import create_access_token, create_refresh_token
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.warnings import InsecureKeyLengthWarning
from sqlalchemy import inspect, select, text
from werkzeug.test import TestResponse

from app import create_app
from app.config import load_settings
from app.domain.access import Role
from app.extensions import db
from app.models import LedgerTransaction, User
from app.services import accounts, places
from app.services.uow import UnitOfWork
from tests.conftest import TEST_SETTINGS
from tests.factories import PASSWORD, PIN, TEST_TARIFF, World

API = "/api/v1"
MAX_BODY = 1024 * 1024  # the MAX_CONTENT_LENGTH default
KB10 = "x" * 10 * 1024

# Which error codes go with which status (the body must carry one of them).
CODES: dict[int, set[str]] = {
    400: {"bad_request"},
    401: {"unauthenticated", "invalid_token", "token_expired", "token_revoked"},
    403: {"forbidden"},
    404: {"not_found"},
    405: {"method_not_allowed"},
    409: {"conflict", "idempotency_conflict", "insufficient_funds"},
    413: {"request_entity_too_large"},
    422: {"validation_error", "invalid_input"},
    423: {"account_locked"},
}


# --- requests as production serves them -----------------------------------------------


def call(app: Flask, method: str, url: str, token: str | None = None,
         headers: dict[str, str] | None = None, **kw: Any) -> TestResponse:
    """One request in a fresh app context (fresh ``g``, fresh DB session), like a server."""
    db.session.rollback()  # the test's own session must not hold SQLite's write lock
    all_headers = dict(headers or {})
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    with app.app_context():  # buffered: a stream is read (and closed) inside its request
        return app.test_client().open(url, method=method, headers=all_headers, buffered=True,
                                      **kw)


def snapshot() -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table that exists in the database, in a stable order."""
    db.session.rollback()
    with db.engine.connect() as conn:
        rows = {
            name: sorted((tuple(r) for r in conn.execute(text(f'SELECT * FROM "{name}"'))),
                         key=repr)
            for name in inspect(conn).get_table_names()
        }
        conn.rollback()
    return rows


def assert_error(res: TestResponse, status: int | set[int]) -> dict[str, Any]:
    allowed = {status} if isinstance(status, int) else status
    assert res.status_code in allowed, (res.status_code, res.get_data(as_text=True)[:300])
    assert res.mimetype == "application/json", res.mimetype
    body = res.get_json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("code"), str) and body["code"] in CODES[res.status_code], body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert isinstance(body.get("details"), dict), body
    return body


# --- the world, as ids ------------------------------------------------------------------


@dataclass(frozen=True)
class Ids:
    account: int
    community: int
    company: int
    pile: int
    building: int
    card: int
    topup: int
    operator: int
    b_company: int


@dataclass(frozen=True)
class Ctx:
    ids: Ids
    tokens: dict[str, str]


@pytest.fixture
def ctx(app: Flask, world: World) -> Iterator[Ctx]:
    a = world.a
    uow = UnitOfWork()
    building = places.create_building(uow, a.actor, community_id=a.community.id, name="Shed",
                                      kind="shed")
    card = accounts.add_card(uow, a.actor, a.account.id, "AA000001")
    topup = db.session.execute(select(LedgerTransaction.id).where(
        LedgerTransaction.charging_account_id == a.account.id)).scalar_one()
    ids = Ids(account=a.account.id, community=a.community.id, company=a.company.id,
              pile=a.pile.id, building=building.id, card=card.id, topup=topup,
              operator=a.operator.id, b_company=world.b.company.id)
    tokens = {"op_a": create_access_token(identity=a.operator),
              "admin": create_access_token(identity=world.admin)}
    db.session.rollback()
    yield Ctx(ids, tokens)


# --- the table ----------------------------------------------------------------------------

Body = Any  # a JSON value, or a function of the Ids giving one
NO_BODY = object()


@dataclass(frozen=True)
class Bad:
    id: str
    method: str
    url: str  # formatted with the Ids fields: "{account}", "{community}", ...
    status: int
    json: Body = NO_BODY
    data: Any = None  # raw body: text, bytes, or a dict for a multipart form
    content_type: str | None = None
    actor: str | None = "op_a"  # None: anonymous

    def request(self, app: Flask, c: Ctx) -> TestResponse:
        kw: dict[str, Any] = {}
        if self.json is not NO_BODY:
            kw["json"] = self.json(c.ids) if callable(self.json) else self.json
        if self.data is not None:
            kw["data"] = self.data
        if self.content_type is not None:
            kw["content_type"] = self.content_type
        token = c.tokens[self.actor] if self.actor else None
        return call(app, self.method, self.url.format(**vars(c.ids)), token, **kw)


TOPUP = f"{API}/charging-accounts/{{account}}/cash-topups"
ACCOUNTS = f"{API}/charging-accounts"
ACCOUNT = f"{API}/charging-accounts/{{account}}"
COMMUNITY = f"{API}/communities/{{community}}"
COMPANY = f"{API}/property-companies/{{company}}"
PILE = f"{API}/piles/{{pile}}"
BUILDING = f"{API}/buildings/{{building}}"
BUILDINGS = f"{API}/communities/{{community}}/buildings"
CARD = f"{API}/cards/{{card}}"
CARDS = f"{API}/charging-accounts/{{account}}/cards"
PIN_CHANGE = f"{API}/charging-accounts/{{account}}/pin"
PIN_RESET = f"{API}/charging-accounts/{{account}}/pin-reset"
REVERSAL = f"{API}/ledger-transactions/{{topup}}/reversal"
STAFF = f"{API}/staff"
LOGIN = f"{API}/auth/login"
ME = f"{API}/auth/me"
GOOD_TOPUP = {"amount_fen": 100, "request_id": "bad-input-0001"}


def topup(**changes: Any) -> dict[str, Any]:
    return {**GOOD_TOPUP, **changes}


def new_account(**changes: Any) -> Callable[[Ids], dict[str, Any]]:
    def body(ids: Ids) -> dict[str, Any]:
        return {"community_id": ids.community, "account_no": "13800000009", "pin": "135792",
                "holder_name": "Bad Input", **changes}
    return body


def new_staff(**changes: Any) -> dict[str, Any]:
    return {"username": "new_operator", "password": "pass-word-42",
            "role": "property_operator", **changes}


def pin_change(new_pin: str) -> dict[str, Any]:
    return {"old_pin": PIN, "new_pin": new_pin}


def _table() -> list[Bad]:
    """Every case; its group is the id up to the first "-" (one test per group)."""
    t: list[Bad] = []

    # wrong types
    for name, value in [("string", "100"), ("float", 10.5), ("whole-float", 100.0),
                        ("true", True), ("false", False), ("null", None), ("list", [100]),
                        ("object", {"fen": 100}), ("exponent-string", "1e2")]:
        t.append(Bad(f"type-amount-{name}", "POST", TOPUP, 422, topup(amount_fen=value)))
    t += [
        Bad("type-request-id-int", "POST", TOPUP, 422, topup(request_id=12345678)),
        Bad("type-memo-int", "POST", TOPUP, 422, topup(memo=5)),
        Bad("type-community-id-string", "POST", ACCOUNTS, 422,
            lambda i: new_account(community_id=str(i.community))(i)),
        Bad("type-community-id-float", "POST", ACCOUNTS, 422,
            lambda i: new_account(community_id=float(i.community))(i)),
        Bad("type-community-id-bool", "POST", ACCOUNTS, 422, new_account(community_id=True)),
        Bad("type-account-no-int", "POST", ACCOUNTS, 422, new_account(account_no=13800000009)),
        Bad("type-pin-int", "POST", ACCOUNTS, 422, new_account(pin=135792)),
        Bad("type-holder-int", "POST", ACCOUNTS, 422, new_account(holder_name=5)),
        Bad("type-kind-unknown", "POST", ACCOUNTS, 422, new_account(kind="vip")),
        Bad("type-lat-string", "PATCH", COMMUNITY, 422, {"lat": "north"}),
        Bad("type-lat-bool", "PATCH", COMMUNITY, 422, {"lat": True}),
        Bad("type-lat-nan", "PATCH", COMMUNITY, 422, data='{"lat": NaN}',
            content_type="application/json"),
        Bad("type-lat-out-of-range", "PATCH", COMMUNITY, 422, {"lat": 91}),
        Bad("type-min-balance-string", "PATCH", COMMUNITY, 422, {"min_start_balance_fen": "100"}),
        Bad("type-min-balance-float", "PATCH", COMMUNITY, 422, {"min_start_balance_fen": 1.5}),
        Bad("type-enabled-word", "PATCH", PILE, 422, {"enabled": "maybe"}),
        Bad("type-building-id-string", "PATCH", PILE, 422,
            lambda i: {"building_id": str(i.building)}),
        Bad("type-grace-string", "PATCH", ACCOUNT, 422, {"grace_fen": "10"}),
        Bad("type-grace-float", "PATCH", ACCOUNT, 422, {"grace_fen": 10.5}),
        Bad("type-status-closed", "PATCH", ACCOUNT, 422, {"status": "closed"}),
        Bad("type-card-status", "PATCH", CARD, 422, {"status": "lost"}),
        Bad("type-card-status-bool", "PATCH", CARD, 422, {"status": True}),
        Bad("type-contact-phone-int", "PATCH", COMPANY, 422, {"contact_phone": 12345}),
        Bad("type-staff-role-resident", "POST", STAFF, 422, new_staff(role="resident")),
        Bad("type-staff-company-string", "POST", STAFF, 422,
            new_staff(property_company_id="1")),
        Bad("type-old-pin-int", "POST", PIN_CHANGE, 422, {"old_pin": 135790, "new_pin": "246801"}),
        Bad("type-login-username-int", "POST", LOGIN, 422, {"username": 5, "password": "x"},
            actor=None),
        Bad("type-login-password-null", "POST", LOGIN, 422, {"username": "op_a", "password": None},
            actor=None),
    ]
    for query in ("limit=abc", "limit=0", "limit=201", "limit=1.5", "offset=-1",
                  "property_company_id=abc", "property_company_id=0",
                  f"property_company_id={2**40}", f"limit={10**30}"):
        t.append(Bad(f"query-communities-{query}", "GET", f"{API}/communities?{query}", 422))
    for query in ("before_id=abc", "before_id=0", f"before_id={2**40}", "limit=0"):
        t.append(Bad(f"query-transactions-{query}", "GET",
                     f"{ACCOUNT}/transactions?{query}", 422))
    for query in ("community_id=abc", "community_id=-1", f"community_id={2**40}",
                  "community_id=" + "9" * 5000):
        t.append(Bad(f"query-accounts-{query[:20]}", "GET", f"{ACCOUNTS}?{query}", 422))

    # unknown and forbidden fields: refused, never ignored
    for field, value in [("balance", 10**6), ("balance_fen", 10**6), ("role", "platform_admin"),
                         ("tenant_id", 2), ("id", 99), ("community_id", 2),
                         ("account_no", "13800000001"), ("pin_hash", "x"), ("pin", "246801"),
                         ("kind", "temporary"), ("wallet_account_id", 1), ("closed_at", None)]:
        t.append(Bad(f"field-account-{field}", "PATCH", ACCOUNT, 422,
                     {"holder_name": "Eve", field: value}))
    t += [
        Bad("field-community-own-company", "PATCH", COMMUNITY, 422,
            lambda i: {"property_company_id": i.company}),
        Bad("field-community-other-company", "PATCH", COMMUNITY, 422,
            lambda i: {"name": "Moved", "property_company_id": i.b_company}),
        Bad("field-community-tenant-id", "PATCH", COMMUNITY, 422, {"tenant_id": 2}),
        Bad("field-community-id", "PATCH", COMMUNITY, 422, {"id": 99}),
        Bad("field-community-created-at", "PATCH", COMMUNITY, 422, {"created_at": "2020-01-01"}),
        Bad("field-company-power-company", "PATCH", COMPANY, 422, {"power_company_id": 2}),
        Bad("field-company-id", "PATCH", COMPANY, 422, {"id": 99}),
        Bad("field-company-ledger", "PATCH", COMPANY, 422, {"collection_account_id": 1}),
        Bad("field-pile-community", "PATCH", PILE, 422, {"community_id": 2}),
        Bad("field-pile-serial", "PATCH", PILE, 422, {"serial": "NEW1"}),
        Bad("field-pile-online", "PATCH", PILE, 422, {"online": True}),
        Bad("field-pile-port-count", "PATCH", PILE, 422, {"port_count": 8}),
        Bad("field-pile-mqtt-hash", "PATCH", PILE, 422, {"mqtt_password_hash": "x"}),
        Bad("field-building-community", "PATCH", BUILDING, 422, {"community_id": 2}),
        Bad("field-card-account", "PATCH", CARD, 422,
            {"status": "blocked", "charging_account_id": 2}),
        Bad("field-card-uid", "PATCH", CARD, 422, {"status": "blocked", "card_uid": "BB000009"}),
        Bad("field-me-role", "PATCH", ME, 422, {"role": "platform_admin"}),
        Bad("field-me-company", "PATCH", ME, 422, {"property_company_id": 2}),
        Bad("field-me-active", "PATCH", ME, 422, {"is_active": False}),
        Bad("field-me-username", "PATCH", ME, 422, {"username": "root"}),
        Bad("field-me-tenant", "PATCH", ME, 422, {"display_name": "Eve", "tenant_id": 2}),
        Bad("field-topup-balance", "POST", TOPUP, 422, topup(balance_fen=10**6)),
        Bad("field-topup-channel", "POST", TOPUP, 422, topup(channel="wechat")),
        Bad("field-topup-unknown", "POST", TOPUP, 422, topup(foo=1)),
        Bad("field-account-create-balance", "POST", ACCOUNTS, 422,
            new_account(balance_fen=10**6)),
        Bad("field-account-create-status", "POST", ACCOUNTS, 422, new_account(status="active")),
        Bad("field-staff-active", "POST", STAFF, 422, new_staff(is_active=True)),
        Bad("field-staff-id", "POST", STAFF, 422, new_staff(id=1)),
        Bad("field-reversal-amount", "POST", REVERSAL, 422, {"reason": "x", "amount_fen": 1}),
        Bad("field-login-role", "POST", LOGIN, 422,
            {"username": "op_a", "password": PASSWORD, "role": "platform_admin"}, actor=None),
    ]

    # oversized strings
    t += [
        Bad("long-community-name", "PATCH", COMMUNITY, 422, {"name": "n" * 101}),
        Bad("long-community-name-10k", "PATCH", COMMUNITY, 422, {"name": KB10}),
        Bad("long-community-address", "PATCH", COMMUNITY, 422, {"address": "a" * 201}),
        Bad("long-company-name", "PATCH", COMPANY, 422, {"name": "n" * 101}),
        Bad("long-company-phone", "PATCH", COMPANY, 422, {"contact_phone": "1" * 21}),
        Bad("long-building-name", "PATCH", BUILDING, 422, {"name": "n" * 101}),
        Bad("long-new-building-name", "POST", BUILDINGS, 422, {"name": KB10}),
        Bad("long-holder-name", "PATCH", ACCOUNT, 422, {"holder_name": "h" * 51}),
        Bad("long-new-holder-name", "POST", ACCOUNTS, 422, new_account(holder_name=KB10)),
        Bad("long-memo", "POST", TOPUP, 422, topup(memo="m" * 129)),
        Bad("long-memo-10k", "POST", TOPUP, 422, topup(memo=KB10)),
        Bad("long-request-id", "POST", TOPUP, 422, topup(request_id="r" * 65)),
        Bad("long-reason", "POST", REVERSAL, 422, {"reason": "r" * 201}),
        Bad("long-reason-10k", "POST", REVERSAL, 422, {"reason": KB10}),
        Bad("long-card-uid", "POST", CARDS, 422, {"card_uid": "A" * 25}),
        Bad("long-card-uid-10k", "POST", CARDS, 422, {"card_uid": KB10}),
        Bad("long-pile-model", "PATCH", PILE, 422, {"model": "m" * 61}),
        Bad("long-me-display-name", "PATCH", ME, 422, {"display_name": "d" * 51}),
        Bad("long-staff-username", "POST", STAFF, 422, new_staff(username="u" * 51)),
        Bad("long-staff-display-name", "POST", STAFF, 422, new_staff(display_name=KB10)),
        Bad("long-login-username", "POST", LOGIN, 422, {"username": KB10, "password": "x"},
            actor=None),
        Bad("long-login-password", "POST", LOGIN, 422, {"username": "op_a", "password": KB10},
            actor=None),
        Bad("long-wechat-code", "POST", f"{API}/auth/wechat-login", 422, {"code": KB10},
            actor=None),
        Bad("long-refresh-token", "POST", f"{API}/auth/logout", 422, {"refresh_token": KB10}),
        # text a database cannot store
        Bad("text-nul-in-name", "PATCH", COMMUNITY, 422, {"name": "a\x00b"}),
        Bad("text-nul-in-memo", "POST", TOPUP, 422, topup(memo="\x00")),
        Bad("text-nul-in-login", "POST", LOGIN, 422, {"username": "op_a\x00", "password": "x"},
            actor=None),
        Bad("text-surrogate-in-holder", "PATCH", ACCOUNT, 422, data='{"holder_name": "\\ud800"}',
            content_type="application/json"),
        Bad("text-surrogate-in-login", "POST", LOGIN, 422,
            data='{"username": "\\udfff", "password": "x"}', content_type="application/json",
            actor=None),
    ]

    # bad phone numbers
    for phone in ("12345", "23800000000", "1380000000a", "138000000001", "", "+8613800000009",
                  "1380000000０", "13800000009\n"):
        t.append(Bad(f"phone-account-{phone}", "POST", ACCOUNTS, 422,
                     new_account(account_no=phone)))
    for phone in ("12345", "23800000000", "1380000000a", "138000000001"):
        t.append(Bad(f"phone-me-{phone}", "PATCH", ME, 422, {"phone": phone}))
        t.append(Bad(f"phone-staff-{phone}", "POST", STAFF, 422, new_staff(phone=phone)))
        t.append(Bad(f"phone-binding-{phone}", "POST", f"{API}/me/bindings", 422,
                     lambda i, p=phone: {"community_id": i.community, "account_no": p,
                                         "pin": PIN}))

    # bad PINs: the wrong shape (schema) and too easy to guess (domain rule)
    for pin in ("12345", "1234567", "abcdef", "12a456", "", "111111", "123456", "654321",
                "１３５７９２", "١٣٥٧٩٢", "135792\n"):
        t.append(Bad(f"pin-new-account-{pin}", "POST", ACCOUNTS, 422, new_account(pin=pin)))
        t.append(Bad(f"pin-reset-{pin}", "POST", PIN_RESET, 422, {"new_pin": pin}))
        t.append(Bad(f"pin-change-{pin}", "POST", PIN_CHANGE, 422, pin_change(pin)))

    # bad passwords for new staff (and for a password change)
    for label, password in [("short", "abc12"), ("seven", "abcde12"), ("no-digits", "abcdefghij"),
                            ("no-letters", "1234567890"), ("empty", ""), ("129", "a1" * 65),
                            ("10k", KB10 + "1")]:
        t.append(Bad(f"password-staff-{label}", "POST", STAFF, 422, new_staff(password=password)))
    t.append(Bad("password-change-short", "POST", f"{API}/auth/me/password", 422,
                 {"old_password": PASSWORD, "new_password": "abc12"}))

    # malformed JSON, also on the anonymous login
    for label, raw in [("truncated", "{bad"), ("missing-value", '{"amount_fen": }'),
                       ("single-quotes", "{'amount_fen': 100}"),
                       ("trailing-garbage", '{"amount_fen": 100} x'),
                       ("deeply-nested", "[" * 100_000 + "]" * 100_000),
                       ("5000-digit-number", '{"amount_fen": ' + "1" * 5000 + "}")]:
        t.append(Bad(f"json-{label}", "POST", TOPUP, 400, data=raw,
                     content_type="application/json"))
        t.append(Bad(f"json-login-{label}", "POST", LOGIN, 400, data=raw,
                     content_type="application/json", actor=None))
    t.append(Bad("json-bad-utf8", "POST", TOPUP, 400, data=b'{"memo": "\xff\xfe"}',
                 content_type="application/json"))

    # JSON that is not an object
    for label, raw in [("empty-list", "[]"), ("list", "[1, 2]"), ("number", "5"),
                       ("float", "1.5"), ("string", '"amount_fen"'), ("null", "null"),
                       ("true", "true"), ("nan", "NaN")]:
        t.append(Bad(f"shape-topup-{label}", "POST", TOPUP, 422, data=raw,
                     content_type="application/json"))
        t.append(Bad(f"shape-patch-{label}", "PATCH", COMMUNITY, 422, data=raw,
                     content_type="application/json"))
    t.append(Bad("shape-login-list", "POST", LOGIN, 422, ["op_a", PASSWORD], actor=None))
    t.append(Bad("shape-account-list", "POST", ACCOUNTS, 422, [{"community_id": 1}]))

    # empty body and the wrong content type: the required fields are missing
    for url, name in [(TOPUP, "topup"), (ACCOUNTS, "account"), (STAFF, "staff"),
                      (REVERSAL, "reversal")]:
        t.append(Bad(f"empty-{name}", "POST", url, 422))
        t.append(Bad(f"empty-json-{name}", "POST", url, 422, data="",
                     content_type="application/json"))
    t.append(Bad("empty-login", "POST", LOGIN, 422, actor=None))
    t += [
        Bad("ctype-text-plain", "POST", TOPUP, 422, data=json.dumps(GOOD_TOPUP),
            content_type="text/plain"),
        Bad("ctype-form", "POST", TOPUP, 422, data="amount_fen=100&request_id=bad-input-0001",
            content_type="application/x-www-form-urlencoded"),
        Bad("ctype-multipart", "POST", TOPUP, 422,
            data={"amount_fen": "100", "request_id": "bad-input-0001"}),
        Bad("ctype-login-text", "POST", LOGIN, 422,
            data=json.dumps({"username": "op_a", "password": PASSWORD}),
            content_type="text/plain", actor=None),
    ]

    # a body over MAX_CONTENT_LENGTH
    huge = '{"memo": "' + "x" * MAX_BODY + '"}'
    t += [
        Bad("huge-topup", "POST", TOPUP, 413, data=huge, content_type="application/json"),
        Bad("huge-patch", "PATCH", COMMUNITY, 413, data=huge, content_type="application/json"),
        Bad("huge-login", "POST", LOGIN, 413, data=huge, content_type="application/json",
            actor=None),
    ]

    # amounts and numbers out of range
    for amount in (0, -1, -5000, 10_000_001, 2**31, 2**63, -(2**63)):
        t.append(Bad(f"amount-{amount}", "POST", TOPUP, 422, topup(amount_fen=amount)))
    t += [
        Bad("amount-grace-negative", "PATCH", ACCOUNT, 422, {"grace_fen": -1}),
        Bad("amount-grace-too-big", "PATCH", ACCOUNT, 422, {"grace_fen": 1001}),
        Bad("amount-min-balance-negative", "PATCH", COMMUNITY, 422, {"min_start_balance_fen": -1}),
        Bad("amount-min-balance-too-big", "PATCH", COMMUNITY, 422,
            {"min_start_balance_fen": 100_001}),
    ]
    for ports in (0, -1, 65):
        t.append(Bad(f"amount-port-count-{ports}", "POST", f"{API}/piles", 422,
                     lambda i, n=ports: {"community_id": i.community, "serial": "BAD1",
                                         "port_count": n}))

    # ids out of range: in the path (no such route or object) and in bodies (invalid)
    for raw in ("0", "-1", str(2**31), str(2**40), str(2**64), "9" * 5000, "abc", "1.5"):
        label = raw[:12]
        t += [
            Bad(f"path-account-{label}", "GET", f"{API}/charging-accounts/{raw}", 404),
            Bad(f"path-topup-{label}", "POST", f"{API}/charging-accounts/{raw}/cash-topups",
                404, GOOD_TOPUP),
            Bad(f"path-community-{label}", "PATCH", f"{API}/communities/{raw}", 404,
                {"name": "x"}),
            Bad(f"path-building-{label}", "DELETE", f"{API}/buildings/{raw}", 404),
            Bad(f"path-reversal-{label}", "POST",
                f"{API}/ledger-transactions/{raw}/reversal", 404, {"reason": "x"}),
        ]
    for value in (0, -1, 2**31, 2**40):
        t.append(Bad(f"body-community-id-{value}", "POST", ACCOUNTS, 422,
                     new_account(community_id=value)))
        t.append(Bad(f"body-pile-community-{value}", "POST", f"{API}/piles", 422,
                     {"community_id": value, "serial": "BAD2", "port_count": 1}))
    t.append(Bad("body-building-id-2**40", "PATCH", PILE, 422, {"building_id": 2**40}))

    # unknown routes and wrong methods, with and without a token
    for actor in ("op_a", None):
        who = actor or "anon"
        t += [
            Bad(f"route-unknown-{who}", "GET", f"{API}/nope", 404, actor=actor),
            Bad(f"route-v2-{who}", "GET", "/api/v2/charging-accounts", 404, actor=actor),
            Bad(f"route-root-{who}", "GET", "/nope", 404, actor=actor),
            Bad(f"route-sub-{who}", "POST", f"{ACCOUNT}/nope", 404, GOOD_TOPUP, actor=actor),
            Bad(f"method-put-{who}", "PUT", ACCOUNT, 405, {"holder_name": "x"}, actor=actor),
            Bad(f"method-delete-list-{who}", "DELETE", f"{API}/communities", 405, actor=actor),
            Bad(f"method-get-topup-{who}", "GET", TOPUP, 405, actor=actor),
            Bad(f"method-patch-login-{who}", "PATCH", LOGIN, 405, {}, actor=actor),
            Bad(f"method-delete-staff-{who}", "DELETE", STAFF, 405, actor=actor),
        ]
    for code in ("%00", "A" * 17, "%F0%9F%9A%B2", "..%2F..%2Fetc", "%E2%80%8B"):
        t.append(Bad(f"public-port-{code[:8]}", "GET", f"{API}/public/ports/{code}", 404,
                     actor=None))

    # charging sessions and tariffs
    sessions = f"{API}/charging-sessions"
    for label, public_id in [("nul", "%00" * 17), ("short", "S123"), ("long", "S" * 18),
                             ("unknown", "S0000000000000000"), ("surrogate", "%ED%A0%80" * 17)]:
        t += [
            Bad(f"session-get-{label}", "GET", f"{sessions}/{public_id}", 404),
            Bad(f"session-stop-{label}", "POST", f"{sessions}/{public_id}/stop", 404),
            Bad(f"session-events-{label}", "GET", f"{sessions}/{public_id}/events", 404),
        ]
    for query in ("status=bogus", "limit=0", "before_id=abc", "community_id=0",
                  f"charging_account_id={2**40}"):
        t.append(Bad(f"query-sessions-{query}", "GET", f"{sessions}?{query}", 422))
    start = {"charging_account_id": 1, "port_id": 1}
    t += [
        Bad("start-account-string", "POST", sessions, 422, {**start, "charging_account_id": "1"}),
        Bad("start-max-amount-zero", "POST", sessions, 422, {**start, "max_amount_fen": 0}),
        Bad("start-max-amount-float", "POST", sessions, 422, {**start, "max_amount_fen": 10.5}),
        Bad("start-port-code-junk", "POST", sessions, 422,
            {"charging_account_id": 1, "port_code": "%%%%"}),
        Bad("start-unknown-field", "POST", sessions, 422, {**start, "cost_fen": 0}),
    ]
    tariffs = f"{API}/communities/{{community}}/tariffs"
    for label, body in [
        ("rules-string", {"rules": "cheap"}),
        ("rules-list", {"rules": [TEST_TARIFF]}),
        ("rules-empty", {"rules": {}}),
        ("rules-mode", {"rules": {**TEST_TARIFF, "mode": "free"}}),
        ("rules-negative", {"rules": {**TEST_TARIFF, "energy_fen_per_kwh": -1}}),
        ("rules-float", {"rules": {**TEST_TARIFF, "energy_fen_per_kwh": 60.5}}),
        ("rules-huge", {"rules": {**TEST_TARIFF, "energy_fen_per_kwh": 10**30}}),
        ("rules-unknown-key", {"rules": {**TEST_TARIFF, "discount": 50}}),
        ("rules-nul-key", {"rules": {**TEST_TARIFF, "x\x00": 1}}),
        ("effective-naive", {"rules": TEST_TARIFF, "effective_from": "2030-01-01T00:00:00"}),
        ("effective-junk", {"rules": TEST_TARIFF, "effective_from": "tomorrow"}),
        ("unknown-field", {"rules": TEST_TARIFF, "version": 7}),
    ]:
        t.append(Bad(f"tariff-{label}", "POST", tariffs, 422, body))
    return t


TABLE = _table()
GROUPS: dict[str, list[Bad]] = {}
for _case in TABLE:
    GROUPS.setdefault(_case.id.split("-", 1)[0], []).append(_case)


def test_table_ids_are_unique() -> None:
    ids = [case.id for case in TABLE]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


@pytest.mark.parametrize("group", list(GROUPS))
def test_bad_requests_are_4xx_json_errors_and_change_nothing(app: Flask, ctx: Ctx,
                                                             group: str) -> None:
    """Each case of the group in turn, on one world: none may change a row, so they can
    share it; every failing case is reported, not just the first."""
    failures = []
    for case in GROUPS[group]:
        before = snapshot()
        res = case.request(app, ctx)
        try:
            assert_error(res, case.status)
            assert snapshot() == before, "the request changed the database"
        except AssertionError as exc:
            failures.append(f"{case.id}: {exc}")
    assert not failures, f"{len(failures)} of {len(GROUPS[group])} cases failed:\n" + (
        "\n".join(failures))


# Positive controls for the bodies the table bends: unbent, they work.
GOOD: list[tuple[str, str, str, Body, int]] = [
    ("topup", "POST", TOPUP, GOOD_TOPUP, 201),
    ("account", "POST", ACCOUNTS, new_account(), 201),
    ("staff", "POST", STAFF, new_staff(), 201),
    ("pin-change", "POST", PIN_CHANGE, pin_change("246801"), 204),
    ("pin-reset", "POST", PIN_RESET, {"new_pin": "246801"}, 204),
    ("community", "PATCH", COMMUNITY, {"name": "Renamed", "lat": 31.2, "min_start_balance_fen": 0},
     200),
    ("account-patch", "PATCH", ACCOUNT, {"holder_name": "Eve", "grace_fen": 1000}, 200),
    ("card", "PATCH", CARD, {"status": "blocked"}, 200),
    ("reversal", "POST", REVERSAL, {"reason": "entered twice"}, 201),
    ("me", "PATCH", ME, {"display_name": "Op A", "phone": "13800000008"}, 200),
    ("transactions", "GET", f"{ACCOUNT}/transactions?limit=200&before_id=2147483647", None, 200),
]


@pytest.mark.parametrize(("method", "url", "body", "status"),
                         [pytest.param(*g[1:], id=g[0]) for g in GOOD])
def test_good_request_control(app: Flask, ctx: Ctx, method: str, url: str, body: Body,
                              status: int) -> None:
    payload = body(ctx.ids) if callable(body) else body
    kw = {"json": payload} if payload is not None else {}
    res = call(app, method, url.format(**vars(ctx.ids)), ctx.tokens["op_a"], **kw)
    assert res.status_code == status, res.get_data(as_text=True)[:300]


def test_login_with_good_credentials_control(app: Flask, ctx: Ctx) -> None:
    res = call(app, "POST", LOGIN, json={"username": "op_a", "password": PASSWORD})
    assert res.status_code == 200


# --- tokens --------------------------------------------------------------------------------


def _b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def _claims(app: Flask, ctx: Ctx) -> dict[str, Any]:
    return dict(pyjwt.decode(ctx.tokens["op_a"], options={"verify_signature": False}))


def _operator(ctx: Ctx) -> User:
    user = db.session.get(User, ctx.ids.operator)
    assert user is not None
    return user


def _expired(app: Flask, ctx: Ctx) -> str:
    token = create_access_token(identity=_operator(ctx), expires_delta=timedelta(seconds=-1))
    db.session.rollback()
    return token


def _other_secret(app: Flask, ctx: Ctx) -> str:
    return pyjwt.encode(_claims(app, ctx), "another-secret-" + "z" * 40, algorithm="HS256")


def _alg_none(app: Flask, ctx: Ctx) -> str:
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(app, ctx))}."


def _hs512(app: Flask, ctx: Ctx) -> str:
    # the right secret, the wrong algorithm: the algorithm is pinned to HS256
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # the key is sized for HS256
        return pyjwt.encode(_claims(app, ctx), app.config["JWT_SECRET_KEY"], algorithm="HS512")


def _refresh(app: Flask, ctx: Ctx) -> str:
    token = create_refresh_token(identity=_operator(ctx))
    db.session.rollback()
    return token


def _no_subject(app: Flask, ctx: Ctx) -> str:
    claims = {k: v for k, v in _claims(app, ctx).items() if k != "sub"}
    return pyjwt.encode(claims, app.config["JWT_SECRET_KEY"], algorithm="HS256")


def _garbage(app: Flask, ctx: Ctx) -> str:
    return "not-a-jwt"


def _disabled_user(app: Flask, ctx: Ctx) -> str:
    _operator(ctx).is_active = False
    db.session.commit()
    return ctx.tokens["op_a"]


BAD_TOKENS: dict[str, tuple[Callable[[Flask, Ctx], str], str]] = {
    "expired": (_expired, "token_expired"),
    "other-secret": (_other_secret, "invalid_token"),
    "alg-none": (_alg_none, "invalid_token"),
    "hs512": (_hs512, "invalid_token"),
    "refresh-as-access": (_refresh, "invalid_token"),
    "no-subject": (_no_subject, "invalid_token"),
    "garbage": (_garbage, "invalid_token"),
    "disabled-user": (_disabled_user, "unauthenticated"),
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_bad_token_is_refused(app: Flask, ctx: Ctx, kind: str) -> None:
    make, code = BAD_TOKENS[kind]
    token = make(app, ctx)
    before = snapshot()
    for method, url, body in (("POST", TOPUP, GOOD_TOPUP), ("GET", ACCOUNTS, None)):
        res = call(app, method, url.format(**vars(ctx.ids)), token,
                   **({"json": body} if body else {}))
        assert assert_error(res, 401)["code"] == code
    assert snapshot() == before


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="none"),
    pytest.param({"Authorization": "Token abc"}, id="other-scheme"),
    pytest.param({"Authorization": "Bearer"}, id="bearer-alone"),
    pytest.param({"Authorization": "Bearer a b"}, id="bearer-two-parts"),
])
def test_missing_or_malformed_authorization_is_refused(app: Flask, ctx: Ctx,
                                                       headers: dict[str, str]) -> None:
    before = snapshot()
    res = call(app, "POST", TOPUP.format(**vars(ctx.ids)), headers=headers, json=GOOD_TOPUP)
    assert_error(res, 401)
    assert snapshot() == before


def test_bad_token_in_the_query_string_is_refused(app: Flask, ctx: Ctx) -> None:
    before = snapshot()
    for token in ("garbage", _alg_none(app, ctx), _other_secret(app, ctx)):
        res = call(app, "POST", TOPUP.format(**vars(ctx.ids)) + f"?access_token={token}",
                   json=GOOD_TOPUP)
        assert_error(res, 401)
    assert snapshot() == before


def _login_pair(app: Flask) -> tuple[str, str]:
    res = call(app, "POST", LOGIN, json={"username": "op_a", "password": PASSWORD})
    assert res.status_code == 200
    body = res.get_json()
    return body["access_token"], body["refresh_token"]


def test_logout_revokes_access_and_refresh_tokens(app: Flask, ctx: Ctx) -> None:
    access, refresh = _login_pair(app)
    assert call(app, "GET", ACCOUNTS, access).status_code == 200  # control
    res = call(app, "POST", f"{API}/auth/logout", access, json={"refresh_token": refresh})
    assert res.status_code == 200, res.get_json()
    before = snapshot()
    res = call(app, "POST", TOPUP.format(**vars(ctx.ids)), access, json=GOOD_TOPUP)
    assert assert_error(res, 401)["code"] == "token_revoked"
    assert assert_error(call(app, "POST", f"{API}/auth/refresh", refresh), 401)["code"] == (
        "token_revoked")
    assert snapshot() == before


def test_revocation_survives_a_restart(app: Flask, ctx: Ctx, database_url: str) -> None:
    revoked, _ = _login_pair(app)
    still_good, _ = _login_pair(app)
    assert call(app, "POST", f"{API}/auth/logout", revoked, json={}).status_code == 200
    db.session.rollback()
    restarted = create_app(load_settings(environ={}, **TEST_SETTINGS, database_url=database_url))
    try:
        with restarted.app_context():
            client = restarted.test_client()
            res = client.get(ACCOUNTS, headers={"Authorization": f"Bearer {revoked}"})
            assert assert_error(res, 401)["code"] == "token_revoked"
            # control: the new process accepts the tokens it should
            res = client.get(ACCOUNTS, headers={"Authorization": f"Bearer {still_good}"})
            assert res.status_code == 200
            db.session.remove()
    finally:
        with restarted.app_context():
            db.engine.dispose()


# --- fuzz -------------------------------------------------------------------------------------

# Any code point: NUL, and lone surrogates (which st.characters() leaves out by default).
TEXT = st.text(st.characters(exclude_categories=()) | st.characters(categories=["Cs"]),
               max_size=60)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats() | TEXT,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
VALID_TOPUP = {
    "amount_fen": st.integers(min_value=1, max_value=10**5),
    "request_id": st.from_regex(r"[A-Za-z0-9_-]{8,64}", fullmatch=True),
    "memo": TEXT,
}
VALID_ACCOUNT = {
    "community_id": st.integers(min_value=1, max_value=3),
    "account_no": st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
    "pin": st.from_regex(r"[0-9]{6}", fullmatch=True),
    "holder_name": TEXT,
    "kind": st.sampled_from(["resident", "temporary"]),
}
WILD = JSON_VALUES | st.sampled_from(
    [0, -1, 10_000_000, 10_000_001, 2**31, 2**63, 10.5, "100", True, "", "x" * 10_240])


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """A valid body with some fields dropped or replaced, and perhaps an unknown one added."""
    body = {name: draw(strategy) for name, strategy in valid.items()}
    for name in draw(st.lists(st.sampled_from(sorted(valid)), unique=True)):
        if draw(st.booleans()):
            del body[name]
        else:
            body[name] = draw(WILD)
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        body[draw(TEXT | st.sampled_from(["balance_fen", "role", "tenant_id", "id"]))] = draw(WILD)
    return body


FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


def _never_5xx(res: TestResponse) -> None:
    assert res.status_code < 500, res.get_data(as_text=True)[:300]
    if res.status_code >= 400:
        assert_error(res, res.status_code)


@FUZZ
@given(body=mutated(VALID_TOPUP) | JSON_VALUES)
def test_fuzz_cash_topup_never_5xx(app: Flask, ctx: Ctx, body: Any) -> None:
    _never_5xx(call(app, "POST", TOPUP.format(**vars(ctx.ids)), ctx.tokens["op_a"], json=body))


@FUZZ
@given(body=mutated(VALID_ACCOUNT) | JSON_VALUES,
       actor=st.sampled_from(["op_a", "admin", "resident"]))
def test_fuzz_account_create_never_5xx(app: Flask, ctx: Ctx, body: Any, actor: str) -> None:
    if actor == "resident" and "resident" not in ctx.tokens:
        user = User(role=Role.RESIDENT.value, openid="openid-fuzz")
        db.session.add(user)
        db.session.commit()
        ctx.tokens["resident"] = create_access_token(identity=user)
        db.session.rollback()
    _never_5xx(call(app, "POST", ACCOUNTS, ctx.tokens[actor], json=body))

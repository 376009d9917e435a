"""Tenancy: nobody reaches another tenant's objects, on every endpoint that takes an id.

The matrix below names every route with a path parameter; a test derives the
same set from the app's URL map and from the published OpenAPI document, so a new
endpoint with an id fails the suite until it is added here.

For each route and method:

* operator A acting on B's object gets 404 (403 where the role itself is refused);
* the power company's ``grid`` user may read, never change (403);
* a resident who has not bound B's account gets 404 (403 where residents may not come);
* none of these requests changes a single row anywhere in the database (each one is
  checked against a snapshot of every table taken just before it);
* positive controls: operator A does the same thing to A's own object, and the
  platform admin to B's, successfully, so a 404 is never just a broken endpoint.

Every request runs in its own application context, as in production. The shared
``api`` fixture sends all requests inside the test's one app context, where
``flask.g`` (and the actor cached in it) outlives a request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pytest
from flask import Flask
from flask_jwt_extended import create_access_token
from sqlalchemy import inspect, select, text
from werkzeug.test import TestResponse

from app.domain.access import Actor, Role
from app.domain.charging import StartMethod
from app.extensions import db
from app.models import (
    ChargingAccount,
    Community,
    Incident,
    LedgerAccount,
    LedgerTransaction,
    PaymentOrder,
    Port,
    PropertyCompany,
    ReconciliationItem,
    ReconciliationRun,
    Refund,
    User,
)
from app.models.base import utcnow
from app.services import accounts, charging, places, wallet
from app.services.uow import UnitOfWork
from tests.factories import PASSWORD, PIN, TEST_TARIFF, Tenant, World

API = "/api/v1"
NEW_PIN = "246801"
MONTH = f"{utcnow():%Y-%m}"
CODES = {403: "forbidden", 404: "not_found", 409: "conflict"}

# --- requests as production serves them -----------------------------------------------


def call(app: Flask, method: str, url: str, token: str | None = None, **kw: Any) -> TestResponse:
    """One request in a fresh app context (fresh ``g``, fresh DB session), like a server."""
    db.session.rollback()  # the test's own session must not hold SQLite's write lock
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with app.app_context():  # buffered: a stream is read (and closed) inside its request
        return app.test_client().open(url, method=method, headers=headers, buffered=True, **kw)


def login(app: Flask, username: str) -> str:
    res = call(app, "POST", f"{API}/auth/login",
               json={"username": username, "password": PASSWORD})
    assert res.status_code == 200, res.get_json()
    return str(res.get_json()["access_token"])


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


def assert_error(res: TestResponse, status: int) -> None:
    assert res.status_code == status, (res.status_code, res.get_data(as_text=True)[:300])
    assert res.mimetype == "application/json"
    body = res.get_json()
    assert isinstance(body.get("code"), str) and isinstance(body.get("message"), str), body
    assert isinstance(body.get("details"), dict), body
    assert body["code"] == CODES[status], body


# --- the two tenants, with one of everything ---------------------------------------------


@dataclass(frozen=True)
class Side:
    """One tenant's objects as plain ids (no ORM object outlives the set-up)."""

    tag: str
    company: int
    community: int
    building: int
    pile: int
    port: int
    account: int
    account_no: str
    spare_account: int  # zero balance, so it can be closed
    card: int
    topup: int  # the seed cash top-up, for reversal
    operator: int
    session: str  # a charging session's public id, still starting
    order: str  # a WeChat Pay order's out_trade_no (created, not paid)
    refund: int  # a provider refund that already succeeded
    incident: int  # an open safety incident on the pile
    acked_incident: int  # an acknowledged one


@dataclass
class Ctx:
    a: Side
    b: Side
    tokens: dict[str, str] = field(default_factory=dict)
    resident_id: int = 0


def _open_session(tenant: Tenant, tag: str, user_id: int | None) -> str:
    """A scan-to-charge session waiting for its pile (no broker needed): 1000 fen held."""
    wallet.record_cash_topup(UnitOfWork(), tenant.actor, tenant.account.id, amount_fen=1000,
                             request_id=f"session-hold-{tag}")
    pile, port = tenant.pile, tenant.pile.ports[0]
    pile.online, pile.last_seen_at, port.status = True, utcnow(), "idle"
    opened = charging.open_session(db.session, pile=pile, port=port, method=StartMethod.APP,
                                   now=utcnow(), account=tenant.account, amount_fen=1000,
                                   user_id=user_id)
    db.session.commit()
    return opened.session.public_id


def _payments(tenant: Tenant, tag: str, topup: int) -> tuple[str, int]:
    """An order and a finished refund, written directly: no payment provider here."""
    now = utcnow()
    order = PaymentOrder(out_trade_no=f"TEST{tag}{now:%H%M%S%f}", provider="wechat",
                         trade_type="jsapi", purpose="topup", amount_fen=100,
                         charging_account_id=tenant.account.id,
                         property_company_id=tenant.company.id, description="test order",
                         expires_at=now + timedelta(hours=2), next_query_at=now, updated_at=now)
    db.session.add(order)
    db.session.flush()
    refund = Refund(out_refund_no=f"R{order.out_trade_no}", order_id=order.id,
                    charging_account_id=tenant.account.id, property_company_id=tenant.company.id,
                    provider="wechat", kind="wallet", amount_fen=100, reason="test",
                    status="success", debit_transaction_id=topup, next_attempt_at=now,
                    updated_at=now, finished_at=now)
    db.session.add(refund)
    db.session.commit()
    return order.out_trade_no, refund.id


def _incidents(tenant: Tenant) -> tuple[int, int]:
    """An open and an acknowledged incident on the tenant's pile, written directly."""
    now = utcnow()
    ids = []
    for kind, state in (("smoke", "open"), ("plug_fault", "acknowledged")):
        incident = Incident(
            category="safety", kind=kind, dedup_key=f"safety:{tenant.pile.id}:1:{kind}",
            community_id=tenant.community.id, pile_id=tenant.pile.id,
            port_id=tenant.pile.ports[0].id, port_no=1, severity="critical", state=state,
            opened_at=now, last_raised_at=now, updated_at=now,
            acknowledged_at=None if state == "open" else now)
        db.session.add(incident)
        db.session.flush()
        ids.append(incident.id)
    db.session.commit()
    return ids[0], ids[1]


def _side(tenant: Tenant, n: int, session_user: int | None) -> Side:
    uow = UnitOfWork()
    tag = tenant.company.name[-1]
    building = places.create_building(uow, tenant.actor, community_id=tenant.community.id,
                                      name=f"Shed {tag}", kind="shed")
    spare = accounts.create_charging_account(uow, tenant.actor, community_id=tenant.community.id,
                                             account_no=f"1370000000{n}", pin=PIN)
    card = accounts.add_card(uow, tenant.actor, tenant.account.id, f"{tag}{tag}000001")
    topup = db.session.execute(select(LedgerTransaction.id).where(
        LedgerTransaction.charging_account_id == tenant.account.id,
        LedgerTransaction.kind == "topup").order_by(LedgerTransaction.id).limit(1)).scalar_one()
    session = _open_session(tenant, tag, session_user)
    order, refund = _payments(tenant, tag, topup)
    incident, acked_incident = _incidents(tenant)
    return Side(tag=tag, company=tenant.company.id, community=tenant.community.id,
                building=building.id, pile=tenant.pile.id, port=tenant.pile.ports[0].id,
                account=tenant.account.id, account_no=tenant.account.account_no,
                spare_account=spare.id, card=card.id, topup=topup, operator=tenant.operator.id,
                session=session, order=order, refund=refund, incident=incident,
                acked_incident=acked_incident)


def make_resident(name: str) -> tuple[int, str]:
    """A mini-program user, made directly (no WeChat here), with an access token."""
    user = User(role=Role.RESIDENT.value, openid=f"openid-{name}", display_name=name)
    db.session.add(user)
    db.session.commit()
    token = create_access_token(identity=user)
    user_id = user.id
    db.session.rollback()
    return user_id, token


@pytest.fixture
def ctx(app: Flask, world: World) -> Iterator[Ctx]:
    app.config["SSE_MAX_SECONDS"] = 0  # a session's event stream ends at once
    resident_id, resident_token = make_resident("resident-a")
    c = Ctx(_side(world.a, 1, resident_id), _side(world.b, 2, None))
    c.resident_id, c.tokens["resident"] = resident_id, resident_token
    db.session.rollback()
    for name in ("op_a", "op_b", "grid", "admin"):
        c.tokens[name] = login(app, name)
    # the resident holds A's account, so "unbound" below really means "not this one"
    accounts.bind_account(UnitOfWork(), Actor(c.resident_id, Role.RESIDENT),
                          community_id=c.a.community, account_no=c.a.account_no, pin=PIN)
    db.session.rollback()
    yield c


def assert_b_intact(c: Ctx) -> None:
    """The headline facts about tenant B, spelled out (the snapshot covers the rest)."""
    db.session.rollback()
    account = db.session.get(ChargingAccount, c.b.account)
    assert account is not None and account.status == "active"
    assert account.holder_name == "Resident b"
    wallet_account = db.session.get(LedgerAccount, account.wallet_account_id)
    assert wallet_account is not None and wallet_account.balance_fen == 5000
    company = db.session.get(PropertyCompany, c.b.company)
    community = db.session.get(Community, c.b.community)
    assert company is not None and company.name == "Property B"
    assert community is not None and community.name == "Community B"
    db.session.rollback()


# --- the matrix ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    method: str
    rule: str  # exactly as in the URL map
    path: Callable[[Side], dict[str, int | str]]
    body: Callable[[Side], dict[str, Any]] | None = None
    ok: int = 200  # the owner doing it
    other_op: int = 404  # operator A on B's object
    grid: int = 403  # the power company's read-only user on B's object
    resident: int = 403  # a resident without B's account bound
    admin: int | None = None  # the platform admin on B's object (default: ok)
    owner: str = "op_a"  # who runs the positive control on A's object

    @property
    def id(self) -> str:
        return f"{self.method} {self.rule.removeprefix(API)}"

    def url(self, side: Side) -> str:
        values = self.path(side)
        return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: str(values[m.group(1)]), self.rule)

    def kwargs(self, side: Side) -> dict[str, Any]:
        return {"json": self.body(side)} if self.body else {}


def _company(s: Side) -> dict[str, int | str]:
    return {"company_id": s.company}


def _community(s: Side) -> dict[str, int | str]:
    return {"community_id": s.community}


def _building(s: Side) -> dict[str, int | str]:
    return {"building_id": s.building}


def _pile(s: Side) -> dict[str, int | str]:
    return {"pile_id": s.pile}


def _port(s: Side) -> dict[str, int | str]:
    return {"port_id": s.port}


def _account(s: Side) -> dict[str, int | str]:
    return {"account_id": s.account}


def _spare(s: Side) -> dict[str, int | str]:
    return {"account_id": s.spare_account}


def _card(s: Side) -> dict[str, int | str]:
    return {"card_id": s.card}


def _topup(s: Side) -> dict[str, int | str]:
    return {"transaction_id": s.topup}


def _staff(s: Side) -> dict[str, int | str]:
    return {"user_id": s.operator}


def _session(s: Side) -> dict[str, int | str]:
    return {"public_id": s.session}


def _order(s: Side) -> dict[str, int | str]:
    return {"out_trade_no": s.order}


def _refund(s: Side) -> dict[str, int | str]:
    return {"refund_id": s.refund}


def _settlement(s: Side) -> dict[str, int | str]:
    return {"company_id": s.company, "month": MONTH}


def _incident(s: Side) -> dict[str, int | str]:
    return {"incident_id": s.incident}


def _acked_incident(s: Side) -> dict[str, int | str]:
    return {"incident_id": s.acked_incident}


def _report_month(s: Side) -> dict[str, int | str]:
    return {"community_id": s.community, "month": MONTH}


ACC = f"{API}/charging-accounts/<int:account_id>"
SESSION = f"{API}/charging-sessions/<string(length=17):public_id>"
INCIDENT = f"{API}/incidents/<int:incident_id>"
MATRIX: list[Case] = [
    Case("GET", f"{API}/property-companies/<int:company_id>", _company, grid=200),
    Case("PATCH", f"{API}/property-companies/<int:company_id>", _company,
         lambda s: {"name": f"Renamed {s.tag}"}),
    Case("GET", f"{API}/communities/<int:community_id>", _community, grid=200),
    Case("PATCH", f"{API}/communities/<int:community_id>", _community,
         lambda s: {"name": f"Renamed {s.tag}"}),
    Case("GET", f"{API}/communities/<int:community_id>/buildings", _community, grid=200),
    Case("POST", f"{API}/communities/<int:community_id>/buildings", _community,
         lambda s: {"name": f"New shed {s.tag}"}, ok=201),
    Case("GET", f"{API}/buildings/<int:building_id>", _building, grid=200),
    Case("PATCH", f"{API}/buildings/<int:building_id>", _building,
         lambda s: {"name": f"Renamed shed {s.tag}"}),
    Case("DELETE", f"{API}/buildings/<int:building_id>", _building, ok=204),
    Case("GET", f"{API}/piles/<int:pile_id>", _pile, grid=200),
    Case("PATCH", f"{API}/piles/<int:pile_id>", _pile, lambda s: {"enabled": False}),
    Case("GET", f"{API}/ports/<int:port_id>", _port, grid=200),
    Case("GET", f"{API}/ports/<int:port_id>/qr.svg", _port, grid=200),
    Case("GET", f"{API}/ports/<int:port_id>/qr.png", _port, grid=200),
    Case("GET", ACC, _account, grid=200, resident=404),
    Case("PATCH", ACC, _account, lambda s: {"holder_name": "Mallory"}, resident=404),
    Case("DELETE", ACC, _spare, ok=204),
    Case("GET", f"{ACC}/balance", _account, grid=200, resident=404),
    Case("GET", f"{ACC}/transactions", _account, grid=200, resident=404),
    Case("POST", f"{ACC}/pin", _account, lambda s: {"old_pin": PIN, "new_pin": NEW_PIN},
         ok=204, resident=404),
    Case("POST", f"{ACC}/pin-reset", _account, lambda s: {"new_pin": NEW_PIN}, ok=204),
    Case("POST", f"{ACC}/cash-topups", _account,
         lambda s: {"amount_fen": 100, "request_id": f"cross-tenant-{s.tag}"}, ok=201),
    Case("POST", f"{API}/ledger-transactions/<int:transaction_id>/reversal", _topup,
         lambda s: {"reason": "entered twice"}, ok=201),
    Case("GET", f"{ACC}/cards", _account, grid=200, resident=404),
    Case("POST", f"{ACC}/cards", _account, lambda s: {"card_uid": f"{s.tag}{s.tag}000002"},
         ok=201),
    Case("PATCH", f"{API}/cards/<int:card_id>", _card, lambda s: {"status": "blocked"},
         resident=404),
    Case("DELETE", f"{API}/cards/<int:card_id>", _card, ok=204),
    # residents only: staff are refused by role; the owner is the resident bound to A
    Case("DELETE", f"{API}/me/bindings/<int:account_id>", _account, ok=204, other_op=403,
         resident=404, admin=403, owner="resident"),
    Case("GET", f"{API}/staff/<int:user_id>", _staff),
    Case("GET", SESSION, _session, grid=200, resident=404),
    Case("POST", f"{SESSION}/stop", _session, ok=202, resident=404),
    Case("GET", f"{SESSION}/events", _session, grid=200, resident=404),
    Case("GET", f"{API}/communities/<int:community_id>/tariffs", _community, grid=200),
    Case("POST", f"{API}/communities/<int:community_id>/tariffs", _community,
         lambda s: {"rules": TEST_TARIFF}, ok=201),
    Case("GET", f"{API}/payments/orders/<string:out_trade_no>", _order, grid=200, resident=404),
    Case("GET", f"{ACC}/refunds", _account, grid=200, resident=404),
    # ok=409: the owner gets past role and tenant checks to the business rule (the wallet
    # was paid in cash, so there is nothing to refund over WeChat Pay / Alipay)
    Case("POST", f"{ACC}/refunds", _account,
         lambda s: {"amount_fen": 100, "reason": "moving out", "request_id": f"refund-{s.tag}-01"},
         ok=409),
    Case("POST", f"{ACC}/cash-refunds", _account,
         lambda s: {"amount_fen": 100, "reason": "moving out", "request_id": f"cash-{s.tag}-01"},
         ok=201),
    Case("GET", f"{API}/payments/refunds/<int:refund_id>", _refund, grid=200, resident=404),
    # ok=409 likewise: found and allowed, but a refund that succeeded has nothing to retry
    Case("POST", f"{API}/payments/refunds/<int:refund_id>/retry", _refund, ok=409),
    Case("GET", f"{API}/property-companies/<int:company_id>/settlements/<string:month>",
         _settlement, grid=200),
    # operations: incidents, pile history, theft and loss, reports
    Case("GET", INCIDENT, _incident, grid=200),
    Case("POST", f"{INCIDENT}/acknowledge", _incident, lambda s: {"note": "on my way"}),
    Case("POST", f"{INCIDENT}/resolve", _acked_incident, lambda s: {"note": "fixed"}),
    Case("GET", f"{INCIDENT}/notifications", _incident, grid=200),
    Case("GET", f"{API}/piles/<int:pile_id>/history", _pile, grid=200),
    Case("GET", f"{API}/communities/<int:community_id>/loss", _community, grid=200),
    Case("GET", f"{API}/communities/<int:community_id>/loss-checks", _community, grid=200),
    Case("POST", f"{API}/communities/<int:community_id>/loss-checks", _community,
         lambda s: {"day": "2025-01-01"}, ok=201),
    Case("GET", f"{API}/communities/<int:community_id>/reports/<string:month>", _report_month,
         grid=200),
]

# Routes with a path parameter that are deliberately not tenant-scoped.
NOT_TENANT_SCOPED = {
    # What a port's printed QR code opens, before logging in: public by design
    # (see test_public_port_lookup_is_public_and_shows_only_public_fields).
    ("GET", f"{API}/public/ports/<string:code>"),
    # A provider's daily bill spans every tenant: the run is shared, its items are
    # filtered per tenant (see test_reconciliation_items_are_filtered_per_tenant).
    ("GET", f"{API}/payments/reconciliations/<int:run_id>/items"),
}


def _id_routes(app: Flask) -> set[tuple[str, str]]:
    return {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        # The API's routes: the console is static files over the API, and /q/<code> (what
        # a QR code opens outside WeChat) shows only public facts (test_web_pages.py).
        if rule.arguments and rule.rule.startswith(f"{API}/")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_matrix_covers_every_route_with_a_path_parameter(app: Flask) -> None:
    covered = {(c.method, c.rule) for c in MATRIX} | NOT_TENANT_SCOPED
    assert len(covered) == len(MATRIX) + len(NOT_TENANT_SCOPED), "a route is listed twice"
    routes = _id_routes(app)
    assert routes - covered == set(), "routes with an id that the tenancy matrix misses"
    assert covered - routes == set(), "matrix entries for routes that no longer exist"
    spec = call(app, "GET", "/api/openapi.json").get_json()
    documented = {
        (method.upper(), path)
        for path, operations in spec["paths"].items() if "{" in path
        for method in operations if method != "parameters"
    }
    assert documented == {(m, _openapi_path(r)) for m, r in covered}


CASES = [pytest.param(c, id=c.id) for c in MATRIX]


@pytest.mark.parametrize("case", CASES)
def test_outsiders_on_b_are_refused_and_change_nothing(app: Flask, ctx: Ctx,
                                                       case: Case) -> None:
    """Operator A, the read-only grid user and a resident without B's account, on B's object."""
    assert case.method == "GET" or case.grid == 403, "matrix error: the grid user only reads"
    failures = []
    for actor, expected in (("op_a", case.other_op), ("grid", case.grid),
                            ("resident", case.resident)):
        before = snapshot()
        res = call(app, case.method, case.url(ctx.b), ctx.tokens[actor], **case.kwargs(ctx.b))
        try:
            if expected >= 400:
                assert_error(res, expected)
            else:
                assert res.status_code == expected, res.get_data(as_text=True)[:300]
            assert snapshot() == before, "the request changed the database"
            assert_b_intact(ctx)
        except AssertionError as exc:
            failures.append(f"{actor} (expected {expected}): {exc}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("case", CASES)
def test_owner_and_platform_admin_succeed(app: Flask, ctx: Ctx, case: Case) -> None:
    """Positive controls: the same request works for those allowed to make it."""
    own = call(app, case.method, case.url(ctx.a), ctx.tokens[case.owner], **case.kwargs(ctx.a))
    assert own.status_code == case.ok, own.get_data(as_text=True)[:300]
    admin_expected = case.ok if case.admin is None else case.admin
    res = call(app, case.method, case.url(ctx.b), ctx.tokens["admin"], **case.kwargs(ctx.b))
    if admin_expected >= 400:
        assert_error(res, admin_expected)
    else:
        assert res.status_code == admin_expected, res.get_data(as_text=True)[:300]


# --- beyond path ids ---------------------------------------------------------------------


def _ids(res: TestResponse, key: str = "id") -> set[Any]:
    assert res.status_code == 200, res.get_data(as_text=True)[:300]
    return {item[key] for item in res.get_json()}


def test_lists_and_filters_show_only_the_own_tenant(app: Flask, ctx: Ctx) -> None:
    op = ctx.tokens["op_a"]
    a, b = ctx.a, ctx.b
    assert _ids(call(app, "GET", f"{API}/property-companies", op)) == {a.company}
    assert _ids(call(app, "GET", f"{API}/communities", op)) == {a.community}
    assert _ids(call(app, "GET", f"{API}/piles", op)) == {a.pile}
    assert _ids(call(app, "GET", f"{API}/charging-accounts", op)) == {a.account, a.spare_account}
    assert b.operator not in _ids(call(app, "GET", f"{API}/staff", op))
    # asking for B's things by filter gives nothing, not B's things
    for url in (f"{API}/communities?property_company_id={b.company}",
                f"{API}/piles?community_id={b.community}",
                f"{API}/charging-accounts?community_id={b.community}"):
        assert _ids(call(app, "GET", url, op)) == set(), url
    assert _ids(call(app, "GET", f"{API}/charging-sessions", op), "session_id") == {a.session}
    assert _ids(call(app, "GET", f"{API}/charging-sessions?community_id={b.community}", op)
                ) == set()
    assert_error(call(app, "GET", f"{API}/charging-sessions?charging_account_id={b.account}",
                      op), 404)
    # the filters themselves work (positive control)
    assert _ids(call(app, "GET", f"{API}/charging-accounts?community_id={a.community}",
                     op)) == {a.account, a.spare_account}
    history = call(app, "GET", f"{API}/charging-accounts/{a.account}/transactions"
                   f"?before_id={a.topup + 1}", op)
    assert _ids(history) == {a.topup}


def test_grid_and_admin_lists_span_both_tenants(app: Flask, ctx: Ctx) -> None:
    for who in ("grid", "admin"):
        token = ctx.tokens[who]
        companies = _ids(call(app, "GET", f"{API}/property-companies", token))
        assert {ctx.a.company, ctx.b.company} <= companies, who
        accounts_seen = _ids(call(app, "GET", f"{API}/charging-accounts", token))
        assert {ctx.a.account, ctx.b.account} <= accounts_seen, who


def test_ids_of_b_in_request_bodies_are_refused(app: Flask, ctx: Ctx) -> None:
    op = ctx.tokens["op_a"]
    a, b = ctx.a, ctx.b
    before = snapshot()
    refused = [
        ("POST", f"{API}/communities", {"property_company_id": b.company, "name": "Sneaky"}, 404),
        ("POST", f"{API}/piles", {"community_id": b.community, "serial": "SNEAKY1",
                                  "port_count": 2}, 404),
        ("POST", f"{API}/charging-accounts", {"community_id": b.community,
                                              "account_no": "13600000009", "pin": PIN}, 404),
    ]
    for method, url, body, status in refused:
        assert_error(call(app, method, url, op, json=body), status)
    # B's building and a building that does not exist are refused alike (nothing leaks)
    msgs = []
    for building in (b.building, 2**31 - 1):
        res = call(app, "PATCH", f"{API}/piles/{a.pile}", op, json={"building_id": building})
        assert res.status_code == 422, res.get_json()
        msgs.append(res.get_json())
        res = call(app, "POST", f"{API}/piles", op, json={
            "community_id": a.community, "serial": "SNEAKY2", "port_count": 1,
            "building_id": building})
        assert res.status_code == 422, res.get_json()
        msgs.append(res.get_json())
    assert msgs[0] == msgs[2] and msgs[1] == msgs[3]
    assert snapshot() == before
    assert_b_intact(ctx)
    # an operator may add colleagues, but only to its own company, whatever it asks for
    res = call(app, "POST", f"{API}/staff", op, json={
        "username": "new_op", "password": "pass-word-42", "role": "property_operator",
        "property_company_id": b.company})
    assert res.status_code == 201, res.get_json()
    assert res.get_json()["property_company_id"] == a.company


def test_grid_cannot_create_anything(app: Flask, ctx: Ctx) -> None:
    grid = ctx.tokens["grid"]
    b = ctx.b
    before = snapshot()
    attempts: list[tuple[str, dict[str, Any]]] = [
        (f"{API}/power-companies", {"name": "Grid 2"}),
        (f"{API}/property-companies", {"power_company_id": 1, "name": "Property C"}),
        (f"{API}/communities", {"property_company_id": b.company, "name": "Community C"}),
        (f"{API}/piles", {"community_id": b.community, "serial": "GRID1", "port_count": 1}),
        (f"{API}/charging-accounts", {"community_id": b.community,
                                      "account_no": "13600000001", "pin": PIN}),
        (f"{API}/staff", {"username": "grid2", "password": "pass-word-42",
                          "role": "property_operator", "property_company_id": b.company}),
        (f"{API}/me/bindings", {"community_id": b.community, "account_no": b.account_no,
                                "pin": PIN}),
        (f"{API}/charging-sessions", {"charging_account_id": b.account, "port_id": b.port}),
    ]
    for url, body in attempts:
        assert_error(call(app, "POST", url, grid, json=body), 403)
    assert snapshot() == before
    assert_b_intact(ctx)


def test_resident_sees_an_account_only_after_binding_it(app: Flask, ctx: Ctx) -> None:
    _, token = make_resident("resident-b")
    b = ctx.b
    urls = [f"{API}/charging-accounts/{b.account}", f"{API}/charging-accounts/{b.account}/balance",
            f"{API}/charging-accounts/{b.account}/transactions",
            f"{API}/charging-accounts/{b.account}/cards"]
    before = snapshot()
    for url in urls:
        assert_error(call(app, "GET", url, token), 404)
    assert _ids(call(app, "GET", f"{API}/charging-accounts", token)) == set()
    assert snapshot() == before
    bound = call(app, "POST", f"{API}/me/bindings", token,
                 json={"community_id": b.community, "account_no": b.account_no, "pin": PIN})
    assert bound.status_code == 201, bound.get_json()
    for url in urls:
        assert call(app, "GET", url, token).status_code == 200, url
    balance = call(app, "GET", urls[1], token).get_json()
    assert balance == {"available_fen": 5000, "held_fen": 1000, "total_fen": 6000}
    assert _ids(call(app, "GET", f"{API}/charging-accounts", token)) == {b.account}
    # binding B's account opens nothing of A's
    assert_error(call(app, "GET", f"{API}/charging-accounts/{ctx.a.account}", token), 404)
    assert call(app, "DELETE", f"{API}/me/bindings/{b.account}", token).status_code == 204
    assert_error(call(app, "GET", urls[0], token), 404)


def test_public_port_lookup_is_public_and_shows_only_public_fields(app: Flask,
                                                                  ctx: Ctx) -> None:
    db.session.rollback()
    port = db.session.get(Port, ctx.b.port)
    assert port is not None
    code = port.public_code
    db.session.rollback()
    res = call(app, "GET", f"{API}/public/ports/{code}")
    assert res.status_code == 200
    assert set(res.get_json()) <= {"port_id", "public_code", "number", "status", "pile_serial",
                                   "pile_online", "community_id", "community_name",
                                   "building_name", "tariff"}  # no accounts or balances
    assert set(res.get_json()["tariff"]) == {"version", "effective_from", "rules"}  # prices
    assert len(code) == 10  # unguessable, so ports cannot be enumerated
    assert_error(call(app, "GET", f"{API}/public/ports/NOSUCHCODE"), 404)


def test_port_qr_png_is_a_decodable_png_for_the_tenant_only(app: Flask, ctx: Ctx) -> None:
    """The printable sticker as PNG: a real image of a sensible size, A's staff only."""
    png = pytest.importorskip("png")  # pypng, from the qrcode[png] dependency
    res = call(app, "GET", f"{API}/ports/{ctx.a.port}/qr.png", ctx.tokens["op_a"])
    assert res.status_code == 200, res.get_data(as_text=True)[:300]
    assert res.mimetype == "image/png"
    body = res.get_data()
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, rows, _info = png.Reader(bytes=body).read()
    assert width == height and 100 <= width <= 2000
    assert len(list(rows)) == height
    # the power company reads it; operator B and residents do not; nobody without a token
    assert call(app, "GET", f"{API}/ports/{ctx.a.port}/qr.png",
                ctx.tokens["grid"]).status_code == 200
    assert_error(call(app, "GET", f"{API}/ports/{ctx.a.port}/qr.png", ctx.tokens["op_b"]), 404)
    assert_error(call(app, "GET", f"{API}/ports/{ctx.a.port}/qr.png",
                      ctx.tokens["resident"]), 403)
    assert call(app, "GET", f"{API}/ports/{ctx.a.port}/qr.png").status_code == 401


def test_an_operator_registers_a_pile_and_sees_its_mqtt_password_once(app: Flask,
                                                                     ctx: Ctx) -> None:
    """Positive control for POST /piles (the matrix above only checks refusals)."""
    res = call(app, "POST", f"{API}/piles", ctx.tokens["op_a"], json={
        "community_id": ctx.a.community, "serial": "NEWPILE1", "port_count": 2,
        "building_id": ctx.a.building, "model": "EB-2"})
    assert res.status_code == 201, res.get_data(as_text=True)[:300]
    body = res.get_json()
    assert body["serial"] == body["mqtt_username"] == "NEWPILE1"
    assert isinstance(body["mqtt_password"], str) and len(body["mqtt_password"]) >= 16
    assert [p["number"] for p in body["ports"]] == [1, 2]
    assert all(p["qr_payload"].endswith(f"/q/{p['public_code']}") for p in body["ports"])
    shown_again = call(app, "GET", f"{API}/piles/{body['id']}", ctx.tokens["op_a"]).get_json()
    assert "mqtt_password" not in shown_again and shown_again["serial"] == "NEWPILE1"


def test_cash_request_ids_are_per_account_not_platform_wide(app: Flask, ctx: Ctx) -> None:
    """Tenant B's top-up is not swallowed because tenant A once used the same request id."""
    body = {"amount_fen": 100, "request_id": "office-0001"}
    first = call(app, "POST", f"{API}/charging-accounts/{ctx.a.account}/cash-topups",
                 ctx.tokens["op_a"], json=body)
    second = call(app, "POST", f"{API}/charging-accounts/{ctx.b.account}/cash-topups",
                  ctx.tokens["op_b"], json=body)
    assert first.status_code == second.status_code == 201
    assert first.get_json()["applied"] and second.get_json()["applied"]
    assert first.get_json()["transaction_id"] != second.get_json()["transaction_id"]
    assert second.get_json()["balance"]["available_fen"] == 5100
    # still idempotent within one account
    again = call(app, "POST", f"{API}/charging-accounts/{ctx.b.account}/cash-topups",
                 ctx.tokens["op_b"], json=body)
    assert again.status_code == 201 and not again.get_json()["applied"]
    assert again.get_json()["balance"]["available_fen"] == 5100


def test_reconciliation_items_are_filtered_per_tenant(app: Flask, ctx: Ctx) -> None:
    run = ReconciliationRun(provider="wechat", bill_date=date(2025, 1, 1), source="upload",
                            file_sha256="0" * 64, bill_rows=2, our_records=2, mismatch_count=2)
    db.session.add(run)
    db.session.flush()
    items = {}
    for side in (ctx.a, ctx.b):
        item = ReconciliationItem(run_id=run.id, kind="missing_there", record_kind="payment",
                                  reference=side.order, out_trade_no=side.order,
                                  property_company_id=side.company, our_amount_fen=100)
        db.session.add(item)
        db.session.flush()
        items[side.tag] = item.id
    run_id = run.id
    db.session.commit()
    url = f"{API}/payments/reconciliations/{run_id}/items"
    before = snapshot()
    assert _ids(call(app, "GET", url, ctx.tokens["op_a"])) == {items["A"]}
    assert _ids(call(app, "GET", url, ctx.tokens["op_b"])) == {items["B"]}
    assert _ids(call(app, "GET", url, ctx.tokens["grid"])) == set(items.values())
    assert _ids(call(app, "GET", url, ctx.tokens["admin"])) == set(items.values())
    assert_error(call(app, "GET", url, ctx.tokens["resident"]), 403)
    assert snapshot() == before

"""Monthly settlement of a property company, on a hand-computed example, and its exports."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from openpyxl import load_workbook
from sqlalchemy import func, select

from app.domain.ledger import Posting, TransactionKind
from app.extensions import db
from app.models import (
    ChargingAccount,
    ChargingSession,
    LedgerEntry,
    LedgerTransaction,
    MasterMeterReading,
    TariffVersion,
)
from app.services import ledger, payments, payments_refunds, payments_settlement, places, wallet
from app.services.payments_common import BEIJING
from app.services.payments_refunds import RefundEvent
from app.services.uow import UnitOfWork
from tests.factories import World
from tests.integration.test_payments_helpers import API, PayEnv, build_env

MONTH = "2025-11"


@pytest.fixture
def env(app: Flask, world: World, tmp_path: Path) -> Iterator[PayEnv]:
    yield from build_env(app, world, tmp_path)


class Clock:
    """The ledger's clock, so the example's money lands in November 2025."""

    def __init__(self) -> None:
        self.now = datetime(2025, 11, 10, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _paid(account_id: int, amount: int, provider: str, txid: str, at: datetime) -> None:
    uow = UnitOfWork()
    account = uow.session.get(ChargingAccount, account_id)
    assert account is not None
    order = payments.create_order(uow, provider=provider, purpose="topup",
                                  charging_account=account, amount_fen=amount)
    assert payments.apply_paid(uow, payments.PaidEvent(
        provider, order.out_trade_no, txid, amount, at, None, "notification"))[0] == "credited"
    uow.commit()


def _reading(community_id: int, serial: str, wh: int, at: datetime) -> None:
    db.session.add(MasterMeterReading(community_id=community_id, meter_serial=serial,
                                      energy_wh=wh, read_at=at))
    db.session.commit()


def bj(day: int, hour: int = 0, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=BEIJING)


@pytest.fixture
def example(env: PayEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[PayEnv]:
    clock = Clock()
    monkeypatch.setattr(ledger, "utcnow", clock)
    a, b = env.world.a, env.world.b
    uow = UnitOfWork()
    clock.now = bj(31, 23, 59, month=10).astimezone(UTC)  # the last minute of October
    wallet.record_cash_topup(uow, a.actor, a.account.id, amount_fen=999, request_id="oct-1")
    clock.now = bj(1).astimezone(UTC)  # the first second of November (Beijing)
    wallet.record_cash_topup(uow, a.actor, a.account.id, amount_fen=111, request_id="nov-0")
    clock.now = bj(10, 10).astimezone(UTC)
    wallet.record_cash_topup(uow, a.actor, a.account.id, amount_fen=3000, request_id="nov-1")
    mistake = wallet.record_cash_topup(uow, a.actor, a.account.id, amount_fen=500,
                                       request_id="nov-2")
    wallet.reverse_cash_topup(uow, a.actor, mistake.transaction_id, reason="typed twice")
    _paid(a.account.id, 2000, "wechat", "4200000301", bj(10, 10))
    _paid(a.account.id, 1000, "alipay", "2025111022001000000301", bj(10, 11))
    wallet.record_cash_topup(uow, b.actor, b.account.id, amount_fen=7000, request_id="b-nov")
    # refunds: 600 paid back, 400 came back ABNORMAL (restored): net 600, both over Alipay
    for amount, status, request_id in ((600, "success", "refund-0001"),
                                       (400, "abnormal", "refund-0002")):
        (part,) = payments_refunds.request_wallet_refund(
            UnitOfWork(), a.actor, a.account.id, amount_fen=amount, reason="example",
            request_id=request_id, submit=False)
        assert part.provider == "alipay"
        uow = UnitOfWork()
        with uow:
            payments_refunds.apply_refund_update(uow, RefundEvent(
                "alipay", part.out_refund_no, status, None, None, None))
            uow.commit()
    # one settled charge: 20.00 held, 12.34 earned
    uow = UnitOfWork()
    account = uow.session.get(ChargingAccount, a.account.id)
    assert account is not None
    hold = ledger.place_hold(uow.session, account, amount_fen=2000, key="S-example")
    ledger.capture_hold(uow.session, hold.id, cost_fen=1234,
                        revenue_account_id=a.company.revenue_account_id,
                        property_company_id=a.company.id)
    uow.commit()
    clock.now = bj(1, month=12).astimezone(UTC)  # December: not in November
    wallet.record_cash_topup(uow, a.actor, a.account.id, amount_fen=222, request_id="dec-1")
    # master meters: A's two communities, B's one
    second = places.create_community(UnitOfWork(), a.actor, property_company_id=a.company.id,
                                     name="Community A2", master_meter_serial="MM9")
    for wh, at in ((90_000, bj(31, 23, 50, month=10)), (100_000, bj(1, 0, 10)),
                   (150_000, bj(15, 12)), (223_456, bj(30, 23, 50)),
                   (230_000, bj(1, 0, 5, month=12))):
        _reading(a.community.id, "MM1", wh, at)
    _reading(second.id, "MM9", 5_000, bj(2))
    _reading(second.id, "MM9", 7_500, bj(29))
    _reading(b.community.id, "MM2", 0, bj(1, 1))
    _reading(b.community.id, "MM2", 99_999, bj(30, 1))
    # settled charging: A sells 1000 + 3321 Wh in November; December, B and an unsettled
    # session do not count
    for n, (tenant, start_wh, end_wh, status, at) in enumerate((
            (a, 5000, 6000, "settled", bj(3, 9)), (a, 6000, 9321, "settled", bj(30, 23)),
            (a, 9321, 9999, "settled", bj(1, 0, 1, month=12)), (b, 0, 777, "settled", bj(3)),
            (a, 100, 200, "active", None))):
        _charge(tenant, n, start_wh, end_wh, status, at)
    db.session.rollback()
    yield env


def _charge(tenant: Any, n: int, start_wh: int, end_wh: int, status: str,
            settled_at: datetime | None) -> None:
    """A charging session row, written directly (its lifecycle is the charging code's)."""
    tariff = TariffVersion(community_id=tenant.community.id, version=100 + n,
                           effective_from=bj(1, month=1), rules={"kind": "test"})
    db.session.add(tariff)
    db.session.flush()
    db.session.add(ChargingSession(
        public_id=f"S-settle-{n}", pile_id=tenant.pile.id, port_id=tenant.pile.ports[0].id,
        community_id=tenant.community.id, method="app", status=status,
        charging_account_id=tenant.account.id, tariff_version_id=tariff.id,
        max_amount_fen=1000, max_minutes=60, cost_fen=0, reconciled_fen=0,
        start_energy_wh=start_wh, last_energy_wh=end_wh,
        end_energy_wh=end_wh if status == "settled" else None, settled_at=settled_at))
    db.session.commit()


def test_the_hand_computed_example(example: PayEnv) -> None:
    env = example
    url = f"{API}/property-companies/{env.world.a.company.id}/settlements/{MONTH}"
    res = env.call("GET", url, "op_a")
    assert res.status_code == 200, res.get_json()
    s = res.get_json()
    assert s["topups_by_channel"] == {"alipay": 1000, "cash": 111 + 3000 + 500, "wechat": 2000}
    assert s["topups_fen"] == 6611
    assert s["topup_reversals_fen"] == 500
    assert s["refunds_by_channel"] == {"alipay": 600} and s["refunds_fen"] == 600
    assert s["other_collected_by_kind"] == {} and s["other_collected_fen"] == 0
    assert s["net_collected_fen"] == 6611 - 500 - 600
    assert s["net_collected_fen"] == collected(env.world.a.company.collection_account_id)
    assert s["revenue_by_kind"] == {"capture": 1234} and s["revenue_fen"] == 1234
    assert s["energy_sold_wh"] == 1000 + 3321
    meters = {(m["meter_serial"], m["energy_wh"], m["readings"]) for m in s["meters"]}
    assert meters == {("MM1", 123_456, 3), ("MM9", 2_500, 2)}
    assert s["master_energy_wh"] == 125_956 and s["grid_price_fen_per_kwh"] == 56
    # 125.956 kWh x 56 fen = 7053.536 fen, rounded half up once
    assert s["owed_to_power_company_fen"] == 7054
    other = env.call("GET", f"{API}/property-companies/{env.world.b.company.id}"
                     f"/settlements/{MONTH}", "op_b").get_json()
    assert other["topups_by_channel"] == {"cash": 7000} and other["refunds_fen"] == 0
    assert other["master_energy_wh"] == 99_999 and other["owed_to_power_company_fen"] == 5600
    assert other["energy_sold_wh"] == 777
    env.check_books()


def collected(collection_account_id: int) -> int:
    """What the collection account received in November, straight from its entries."""
    db.session.rollback()
    total = db.session.execute(
        select(func.coalesce(func.sum(LedgerEntry.amount_fen), 0))
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .where(LedgerEntry.account_id == collection_account_id,
               LedgerTransaction.created_at >= bj(1),
               LedgerTransaction.created_at < bj(1, month=12))).scalar_one()
    db.session.rollback()
    return -int(total)


def test_coin_sales_are_collected_money(example: PayEnv, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    env = example
    monkeypatch.setattr(ledger, "utcnow", lambda: bj(20).astimezone(UTC))
    company = env.world.a.company
    collection, revenue = company.collection_account_id, company.revenue_account_id
    uow = UnitOfWork()
    ledger.post(uow.session, key="coins:test-1", kind=TransactionKind.COIN_SALE,
                postings=[Posting(collection, -300), Posting(revenue, 300)], amount_fen=300,
                channel="coin", property_company_id=company.id)
    uow.commit()
    s = env.call("GET", f"{API}/property-companies/{company.id}/settlements/{MONTH}",
                 "op_a").get_json()
    assert s["other_collected_by_kind"] == {"coin_sale": 300}
    assert s["net_collected_fen"] == 5511 + 300 == collected(collection)
    assert s["revenue_by_kind"] == {"capture": 1234, "coin_sale": 300}


def test_more_energy_sources_add_up(example: PayEnv) -> None:
    env = example
    a_company = env.world.a.company.id  # a plain int: the hook runs in the request's session
    db.session.rollback()

    def coins(session: Any, company_id: int, start: datetime, end: datetime) -> int:
        assert (start, end) == (bj(1), bj(1, month=12))
        return 79 if company_id == a_company else 0

    payments_settlement.ENERGY_SOLD_SOURCES.append(coins)
    try:
        res = env.call("GET", f"{API}/property-companies/{a_company}/settlements/{MONTH}",
                       "admin")
    finally:
        payments_settlement.ENERGY_SOLD_SOURCES.remove(coins)
    assert res.get_json()["energy_sold_wh"] == 4321 + 79


def test_exports(example: PayEnv) -> None:
    env = example
    url = f"{API}/property-companies/{env.world.a.company.id}/settlements/{MONTH}"
    res = env.call("GET", url + "?format=csv", "op_a")
    assert res.status_code == 200 and res.mimetype == "text/csv"
    assert "attachment" in res.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(res.get_data().decode("utf-8-sig"))))
    assert rows[0] == ["section", "item", "energy_wh", "energy_kwh", "amount_fen",
                       "amount_yuan"]
    assert ["topups", "total", "", "", "6611", "66.11"] in rows
    assert ["refunds", "alipay", "", "", "600", "6.00"] in rows
    assert ["net_collected", "topups - reversals - refunds + other", "", "", "5511",
            "55.11"] in rows
    assert ["revenue", "capture", "", "", "1234", "12.34"] in rows
    assert ["energy_sold", "settled charging", "4321", "4.321", "", ""] in rows
    owed = [r for r in rows if r[0] == "owed_to_power_company"]
    assert owed == [["owed_to_power_company", "125.956 kWh x 56 fen/kWh", "125956", "125.956",
                     "7054", "70.54"]]
    res = env.call("GET", url + "?format=xlsx", "grid")
    assert res.status_code == 200
    book = load_workbook(io.BytesIO(res.get_data()))
    assert book.sheetnames == ["Settlement", "Master meters"]
    sheet = book["Settlement"]
    values = [[c.value for c in row] for row in sheet.iter_rows()]
    assert values[2][:2] == ["month", MONTH]
    assert ["owed_to_power_company", "125.956 kWh x 56 fen/kWh", 125956, "125.956", 7054,
            "70.54"] in values
    meters = [[c.value for c in row] for row in book["Master meters"].iter_rows()]
    assert [m[2] for m in meters[1:]] == ["MM1", "MM9"] and [m[7] for m in meters[1:]] == [
        123_456, 2_500]


def test_the_cli_writes_the_xlsx(example: PayEnv, tmp_path: Path) -> None:
    env = example
    target = tmp_path / "nov.xlsx"
    db.session.rollback()
    result = env.app.test_cli_runner().invoke(args=[
        "payments", "settlement", "--company", str(env.world.a.company.id), "--month", MONTH,
        "--format", "xlsx", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert "7054 fen" in result.output
    assert load_workbook(target)["Settlement"].max_row > 10
    bad = env.app.test_cli_runner().invoke(args=[
        "payments", "settlement", "--company", "999", "--month", MONTH])
    assert bad.exit_code != 0 and "no property company" in bad.output


def test_who_sees_a_settlement(env: PayEnv) -> None:
    a, b = env.world.a.company.id, env.world.b.company.id
    for who, company, status in (("op_a", a, 200), ("op_b", a, 404), ("grid", a, 200),
                                 ("admin", b, 200), ("resident", a, 403), ("op_a", 99999, 404)):
        res = env.call("GET", f"{API}/property-companies/{company}/settlements/{MONTH}", who)
        assert res.status_code == status, (who, company, res.get_json())


@pytest.mark.parametrize("suffix", ["2025-13", "2025-1", "abcd", "1999-12", "2025-11-01",
                                    "2025-11?format=pdf", "2025-11?format="])
def test_bad_settlement_requests_are_4xx(env: PayEnv, suffix: str) -> None:
    res = env.call("GET", f"{API}/property-companies/{env.world.a.company.id}/settlements/"
                   f"{suffix}", "op_a")
    assert res.status_code == 422, res.get_data(as_text=True)
    assert set(res.get_json()) == {"code", "message", "details"}


def test_an_empty_month(env: PayEnv) -> None:
    res = env.call("GET", f"{API}/property-companies/{env.world.a.company.id}"
                   "/settlements/2024-02", "op_a")
    s = res.get_json()
    assert (s["topups_fen"], s["refunds_fen"], s["revenue_fen"], s["master_energy_wh"],
            s["owed_to_power_company_fen"], s["meters"]) == (0, 0, 0, 0, 0, [])

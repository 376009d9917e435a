"""Reports on a hand-computed example.

Community A (two ports, registered long before), Beijing time, March 2025:

==================  ======================================================  ============
when                what                                                    figures
==================  ======================================================  ============
10 Mar 09:00        cash top-up                                             2000 fen
10 Mar 09:30        WeChat top-up                                           1000 fen
10 Mar 10:00-12:00  session 1, port 1, 1000 Wh (1 yuan/kWh)                 100 fen
10 Mar 20:00        coins in pile A's box, port 2                           200 fen
10 Mar 23:00-01:00  session 2, port 2, 500 Wh, ends on the 11th             50 fen
11 Mar 10:00        the cash top-up reversed                                2000 fen
11 Mar 11:00        refund                                                  300 fen
11 Mar 11:30        refund of 100 that failed and was restored              net 0
==================  ======================================================  ============

10 Mar: 1 session, 1000 Wh, revenue 100 + 200 = 300, top-ups 3000; busy 2 h + 1 h = 10800
port-s of 2 × 86400 = 172800: 62.5 ‰ → 63. 11 Mar: 1 session, 500 Wh, revenue 50,
reversals 2000, refunds 300; busy 3600 s: 20.83 ‰ → 21. March: busy 14400 of
31 × 172800 = 5356800 port-s: 2.69 ‰ → 3.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook

from app.domain.charging import StartMethod, StopReason
from app.domain.ledger import Posting, TransactionKind, refund_postings, topup_postings
from app.extensions import db
from app.models import MasterMeterReading, MeterReading, Pile
from app.services import charging, ledger, wallet
from app.services.uow import UnitOfWork
from tests.factories import ApiClient, World

API = "/api/v1"
BJ = ZoneInfo("Asia/Shanghai")


def bj(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 3, day, hour, minute, tzinfo=BJ)


@pytest.fixture
def march(world: World, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    clock = {"now": bj(1, 0)}
    monkeypatch.setattr(ledger, "utcnow", lambda: clock["now"])
    a = world.a
    pile = db.session.get(Pile, a.pile.id)
    assert pile is not None
    ports = sorted(pile.ports, key=lambda p: p.number)
    for port in ports:
        port.created_at = datetime(2025, 1, 1, tzinfo=BJ)
    db.session.commit()
    company = a.company
    account = a.account

    def at(day: int, hour: int, minute: int = 0) -> None:
        clock["now"] = bj(day, hour, minute)

    at(10, 9)
    cash = wallet.record_cash_topup(UnitOfWork(), a.actor, account.id, amount_fen=2000,
                                    request_id="march-cash")
    at(10, 9, 30)
    ledger.post(db.session, key="wechat:march-1", kind=TransactionKind.TOPUP,
                postings=topup_postings(wallet=account.wallet_account_id,
                                        collection=company.collection_account_id,
                                        amount_fen=1000),
                amount_fen=1000, channel="wechat", charging_account_id=account.id,
                property_company_id=company.id)
    db.session.commit()

    def session(port_index: int, start: datetime, end: datetime, wh: int) -> str:
        pile.online, pile.last_seen_at = True, start
        ports[port_index].status = "plugged"
        opened = charging.open_session(db.session, pile=pile, port=ports[port_index],
                                       method=StartMethod.APP, now=start, account=account,
                                       amount_fen=1000)
        row = opened.session
        row.status, row.started_at, row.start_energy_wh = "active", start, 5000
        db.session.add_all([
            MeterReading(port_id=ports[port_index].id, measured_at=start, energy_wh=5000,
                         delta_wh=0, power_w=500, voltage_dv=2200, current_ma=2300,
                         temp_dc=300, session_ref=row.public_id),
            MeterReading(port_id=ports[port_index].id, measured_at=end, energy_wh=5000 + wh,
                         delta_wh=wh, power_w=500, voltage_dv=2200, current_ma=2300,
                         temp_dc=300, session_ref=row.public_id)])
        db.session.flush()
        clock["now"] = end
        charging.settle_session(db.session, row, reason=StopReason.USER,
                                end_energy_wh=5000 + wh, ended_at=end, now=end)
        ports[port_index].status = "plugged"
        db.session.commit()
        return row.public_id

    at(10, 10)
    one = session(0, bj(10, 10), bj(10, 12), 1000)
    at(10, 20)
    ledger.post(db.session, key="coin:march-1", kind=TransactionKind.COIN_SALE,
                postings=[Posting(company.collection_account_id, -200),
                          Posting(company.revenue_account_id, 200)],
                amount_fen=200, channel="coin", property_company_id=company.id,
                reference=f"{pile.serial}/2")
    db.session.commit()
    at(10, 23)
    two = session(1, bj(10, 23), bj(11, 1), 500)
    at(11, 10)
    wallet.reverse_cash_topup(UnitOfWork(), a.actor, cash.transaction_id, reason="twice")
    at(11, 11)
    for key, amount, restore in (("refund:r1", 300, False), ("refund:r2", 100, False),
                                 ("refund-restore:r2", 100, True)):
        postings = refund_postings(wallet=account.wallet_account_id,
                                   collection=company.collection_account_id,
                                   amount_fen=amount)
        if restore:
            postings = [Posting(p.account_id, -p.amount_fen) for p in postings]
        ledger.post(db.session, key=key, kind=TransactionKind.REFUND, postings=postings,
                    amount_fen=amount, channel="wechat", charging_account_id=account.id,
                    property_company_id=company.id)
        at(11, 11, 30)
    db.session.add_all([
        MasterMeterReading(community_id=a.community.id, meter_serial="MM-A",
                           energy_wh=100_000, read_at=bj(1, 0)),
        MasterMeterReading(community_id=a.community.id, meter_serial="MM-A",
                           energy_wh=102_000, read_at=datetime(2025, 4, 1, tzinfo=BJ))])
    db.session.commit()
    return {"sessions": (one, two), "community": a.community.id, "serial": pile.serial,
            "account": account.id, "ports": [p.id for p in ports]}


DAY10 = {"sessions": 1, "energy_wh": 1000, "revenue_fen": 300, "charging_fen": 100,
         "coin_fen": 200, "topups_fen": 3000, "topups_by_channel": {"cash": 2000,
                                                                     "wechat": 1000},
         "topup_reversals_fen": 0, "refunds_fen": 0, "busy_port_s": 10_800,
         "available_port_s": 172_800, "utilisation_per_mille": 63}
DAY11 = {"sessions": 1, "energy_wh": 500, "revenue_fen": 50, "charging_fen": 50,
         "coin_fen": 0, "topups_fen": 0, "topups_by_channel": {}, "topup_reversals_fen": 2000,
         "refunds_fen": 300, "busy_port_s": 3600, "available_port_s": 172_800,
         "utilisation_per_mille": 21}


def _subset(row: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in expected}


def test_daily_report_matches_the_hand_computed_example(world: World, api: ApiClient,
                                                        march: dict[str, Any]) -> None:
    op = api.login("op_a")
    res = op.get(f"{API}/reports/daily?from=2025-03-10&to=2025-03-11")
    assert res.status_code == 200, res.get_json()
    body = res.get_json()
    assert (body["granularity"], body["from"], body["to"]) == ("day", "2025-03-10",
                                                               "2025-03-11")
    ten, eleven = body["rows"]  # operator A: community A only
    assert (ten["community_id"], ten["period"], eleven["period"]) == (
        march["community"], "2025-03-10", "2025-03-11")
    assert _subset(ten, DAY10) == DAY10
    assert _subset(eleven, DAY11) == DAY11
    assert body["totals"]["revenue_fen"] == 350 and body["totals"]["utilisation_per_mille"] == 42
    assert body["chart"]["labels"] == ["2025-03-10", "2025-03-11"]
    assert body["chart"]["series"]["revenue_fen"] == [300, 50]
    assert body["chart"]["series"]["utilisation_per_mille"] == [63, 21]
    # the power company sees both communities; B had nothing (and no ports yet)
    grid = api.login("grid").get(f"{API}/reports/daily?from=2025-03-10&to=2025-03-11")
    rows = grid.get_json()["rows"]
    assert {r["community_id"] for r in rows} == {world.a.community.id, world.b.community.id}
    b = [r for r in rows if r["community_id"] == world.b.community.id]
    assert all(r["revenue_fen"] == 0 and r["utilisation_per_mille"] is None for r in b)
    only_a = api.login("grid").get(
        f"{API}/reports/daily?from=2025-03-10&to=2025-03-11&community_id={world.a.community.id}")
    assert [r["period"] for r in only_a.get_json()["rows"]] == ["2025-03-10", "2025-03-11"]


def test_monthly_report_sums_the_days(api: ApiClient, march: dict[str, Any]) -> None:
    body = api.login("op_a").get(f"{API}/reports/monthly?from=2025-02&to=2025-03").get_json()
    feb, mar = body["rows"]
    assert (feb["period"], feb["revenue_fen"], feb["available_port_s"]) == (
        "2025-02", 0, 28 * 172_800)
    assert _subset(mar, {
        "period": "2025-03", "sessions": 2, "energy_wh": 1500, "revenue_fen": 350,
        "topups_fen": 3000, "topup_reversals_fen": 2000, "refunds_fen": 300,
        "busy_port_s": 14_400, "available_port_s": 31 * 172_800,
        "utilisation_per_mille": 3}) == {
        "period": "2025-03", "sessions": 2, "energy_wh": 1500, "revenue_fen": 350,
        "topups_fen": 3000, "topup_reversals_fen": 2000, "refunds_fen": 300,
        "busy_port_s": 14_400, "available_port_s": 31 * 172_800,
        "utilisation_per_mille": 3}


def test_csv_and_xlsx_exports(api: ApiClient, march: dict[str, Any]) -> None:
    op = api.login("op_a")
    res = op.get(f"{API}/reports/daily?from=2025-03-10&to=2025-03-11&format=csv")
    assert res.status_code == 200 and res.mimetype == "text/csv"
    assert 'filename="daily-2025-03-10-2025-03-11.csv"' in res.headers["Content-Disposition"]
    text = res.get_data().decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["period"] for r in rows] == ["2025-03-10", "2025-03-11"]
    assert (rows[0]["revenue_fen"], rows[0]["topups_cash_fen"], rows[0]["topups_wechat_fen"],
            rows[0]["utilisation_per_mille"]) == ("300", "2000", "1000", "63")
    assert rows[1]["refunds_fen"] == "300"
    res = op.get(f"{API}/reports/monthly?from=2025-03&to=2025-03&format=xlsx")
    assert res.status_code == 200
    assert res.mimetype.endswith("spreadsheetml.sheet")
    sheet = load_workbook(io.BytesIO(res.get_data())).active
    header, row = [c.value for c in sheet[1]], [c.value for c in sheet[2]]
    got = dict(zip(header, row, strict=True))
    assert (got["period"], got["revenue_fen"], got["utilisation_per_mille"]) == ("2025-03", 350,
                                                                               3)


def test_monthly_data_set_per_user_port_and_master_meter(api: ApiClient,
                                                         march: dict[str, Any]) -> None:
    grid = api.login("grid")
    url = f"{API}/communities/{march['community']}/reports/2025-03"
    data = grid.get(url).get_json()
    [user] = data["users"]
    assert _subset(user, {"charging_account_id": march["account"], "sessions": 2,
                          "energy_wh": 1500, "charged_fen": 150, "topups_fen": 3000,
                          "topup_reversals_fen": 2000, "refunds_fen": 300}) == {
        "charging_account_id": march["account"], "sessions": 2, "energy_wh": 1500,
        "charged_fen": 150, "topups_fen": 3000, "topup_reversals_fen": 2000,
        "refunds_fen": 300}
    one, two = data["ports"]
    assert (one["port_no"], one["sessions"], one["energy_wh"], one["meter_wh"],
            one["busy_port_s"]) == (1, 1, 1000, 1000, 7200)
    assert (two["port_no"], two["energy_wh"], two["meter_wh"], two["busy_port_s"],
            two["utilisation_per_mille"]) == (2, 500, 500, 7200, 3)
    assert one["available_port_s"] == 31 * 86_400
    master = data["master_meter"]
    assert (master["meter_serial"], master["readings"], master["first_wh"]) == ("MM-A", 1,
                                                                                100_000)
    assert (master["master_wh"], master["sockets_wh"], master["loss_wh"],
            master["loss_per_mille"], master["master_complete"]) == (2000, 1500, 500, 250,
                                                                      True)
    res = grid.get(url + "?format=csv")
    text = res.get_data().decode("utf-8-sig")
    assert text.splitlines()[0] == "users" and "master_meter" in text.splitlines()
    res = grid.get(url + "?format=xlsx")
    book = load_workbook(io.BytesIO(res.get_data()))
    assert book.sheetnames == ["Users", "Ports", "Master Meter"]
    assert api.login("op_b").get(url).status_code == 404


@pytest.mark.parametrize(("url", "status"), [
    ("/reports/daily", 422),
    ("/reports/daily?from=2025-03-10", 422),
    ("/reports/daily?from=2025-03-11&to=2025-03-10", 422),
    ("/reports/daily?from=2024-01-01&to=2025-03-10", 422),
    ("/reports/daily?from=2025-03-10&to=2025-03-11&format=pdf", 422),
    ("/reports/daily?from=10/03/2025&to=2025-03-11", 422),
    ("/reports/monthly?from=2025-13&to=2025-12", 422),
    ("/reports/monthly?from=2025-03&to=2025-02", 422),
    ("/reports/monthly?from=2020-01&to=2025-01", 422),
    ("/communities/{a}/reports/2025-3", 422),
    ("/communities/{a}/reports/march", 422),
    ("/communities/{a}/reports/2025-03?format=doc", 422),
    ("/communities/{b}/reports/2025-03", 404),
    ("/reports/daily?from=2025-03-10&to=2025-03-11&community_id={b}", 404),
])
def test_bad_report_requests(world: World, api: ApiClient, url: str, status: int) -> None:
    res = api.login("op_a").get(API + url.format(a=world.a.community.id,
                                                 b=world.b.community.id))
    assert res.status_code == status, res.get_json()
    assert set(res.get_json()) == {"code", "message", "details"}


def test_busy_time_never_runs_past_now(world: World, march: dict[str, Any]) -> None:
    """A session whose end lies ahead of the report's clock (a pile clock running fast)
    counts busy time only up to now, so utilisation stays within the available time."""
    from app.services import reports

    day = bj(10, 0).date()
    row = reports.daily_report(UnitOfWork(), world.a.actor, day, day,
                               community_id=march["community"], now=bj(10, 11)).rows[0]
    assert (row.busy_port_s, row.available_port_s) == (3600, 2 * 11 * 3600)
    assert row.utilisation_per_mille == 45

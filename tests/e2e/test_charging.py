"""Charging end to end over the real broker with the simulated pile."""

from __future__ import annotations

from typing import Any

import pytest

from app.extensions import db
from tests.e2e.conftest import Site
from tests.e2e.helpers import balance, pile_online, port_status, session_row, settled
from tests.support.bridge import wait_until
from tests.support.ledger_checks import assert_ledger_invariants

pytestmark = pytest.mark.mqtt


def scan(site: Site, port: int = 1, **extra: Any) -> Any:
    return site.phone.post("/api/v1/charging-sessions", json={
        "charging_account_id": site.account_id, "port_code": site.port_codes[port], **extra})


def plugged(site: Site, port: int = 1) -> None:
    wait_until(lambda: pile_online(site.pile_id))
    site.pile.plug(port)
    wait_until(lambda: port_status(site.pile_id, port) == "plugged")


def test_scan_to_charge_then_stop_from_the_phone(site: Site) -> None:
    plugged(site)
    res = scan(site, max_amount_fen=2000)
    assert res.status_code == 201, res.get_json()
    body = res.get_json()
    assert body["status"] == "active"
    assert body["remaining_s"] is None or body["remaining_s"] > 0
    assert balance(site.account_id).held_fen == 2000
    site.pile.advance(1800)  # half an hour of charging at ~150-250 W
    sid = body["session_id"]
    wait_until(lambda: session_row(sid).cost_fen > 0)
    live = site.phone.get(f"/api/v1/charging-sessions/{sid}").get_json()
    assert live["energy_wh"] > 0 and live["power_w"] > 0 and live["cost_fen"] > 0
    assert live["remaining_s"] > 0
    stop = site.phone.post(f"/api/v1/charging-sessions/{sid}/stop")
    assert stop.status_code == 202, stop.get_json()
    done = wait_until(lambda: settled(sid))
    energy = done.end_energy_wh - done.start_energy_wh
    assert done.stop_reason == "user"
    assert done.cost_fen == (energy * 100 + 500) // 1000  # 1 yuan/kWh, rounded once, half up
    bal = balance(site.account_id)
    assert (bal.available_fen, bal.held_fen) == (5000 - done.cost_fen, 0)
    receipt = site.phone.get(f"/api/v1/charging-sessions/{sid}").get_json()
    assert receipt["status"] == "settled" and receipt["available_fen"] == bal.available_fen
    wait_until(lambda: (site.pile.display or {}).get("reason") == "settled")
    assert site.pile.display["balance_fen"] == bal.available_fen
    assert_ledger_invariants(db.session)


def _account(site: Site) -> Any:
    from app.models import ChargingAccount

    return db.session.get(ChargingAccount, site.account_id)


def test_keypad_login_starts_and_wrong_pins_lock_the_account(site: Site, app: Any) -> None:
    from tests.factories import PIN

    plugged(site)
    account_no = snapshot_value(lambda: _account(site).account_no)
    limit = app.config["SETTINGS"].keypad_max_failures
    for _ in range(limit):
        req = site.pile.keypad_login(1, account_no, "975310")
        wait_until(lambda req=req: any(r["req_id"] == req for r in site.pile.auth_replies))
    replies = site.pile.auth_replies
    assert [r["reason"] for r in replies] == ["wrong_pin"] * limit
    req = site.pile.keypad_login(1, account_no, PIN)
    reply = wait_until(lambda: next((r for r in site.pile.auth_replies if r["req_id"] == req),
                                    None))
    assert reply["allow"] is False and reply["reason"] == "account_blocked"
    # the office resets the PIN; the right PIN now starts a charge
    op = site.api.login("op_a")
    assert op.post(f"/api/v1/charging-accounts/{site.account_id}/pin-reset",
                   json={"new_pin": "864202"}).status_code == 204
    req = site.pile.keypad_login(1, account_no, "864202")
    reply = wait_until(lambda: next((r for r in site.pile.auth_replies if r["req_id"] == req),
                                    None))
    assert reply["allow"] is True and reply["limits"]["max_amount_fen"] > 0
    assert reply["balance_fen"] == 0  # the whole 50 yuan is held (default hold cap)
    wait_until(lambda: site.pile.ports[1].session is not None)
    sid = reply["session_id"]
    wait_until(lambda: session_row(sid).status == "active")
    site.pile.advance(600)
    site.pile.unplug(1)
    done = wait_until(lambda: settled(sid))
    assert done.stop_reason == "unplugged" and done.method == "keypad"
    assert balance(site.account_id).available_fen == 5000 - done.cost_fen
    assert_ledger_invariants(db.session)


def snapshot_value(read: Any) -> Any:
    value = read()
    db.session.rollback()
    return value


def test_card_swipe_starts_unknown_and_blocked_cards_are_denied(site: Site) -> None:
    plugged(site)
    op = site.api.login("op_a")
    card = op.post(f"/api/v1/charging-accounts/{site.account_id}/cards",
                   json={"card_uid": "A1B2C3D4"}).get_json()
    unknown = site.pile.swipe_card(1, "FFFF0000")
    wait_until(lambda: any(r["req_id"] == unknown and r["reason"] == "unknown_card"
                           for r in site.pile.auth_replies))
    assert op.patch(f"/api/v1/cards/{card['id']}", json={"status": "blocked"}).status_code == 200
    blocked = site.pile.swipe_card(1, "A1B2C3D4")
    wait_until(lambda: any(r["req_id"] == blocked and r["reason"] == "card_blocked"
                           for r in site.pile.auth_replies))
    assert op.patch(f"/api/v1/cards/{card['id']}", json={"status": "active"}).status_code == 200
    ok = site.pile.swipe_card(1, "A1B2C3D4")
    reply = wait_until(lambda: next((r for r in site.pile.auth_replies
                                     if r["req_id"] == ok and r["allow"]), None))
    wait_until(lambda: session_row(reply["session_id"]).status == "active")
    site.pile.advance(900)
    site.pile.swipe_card(1, "A1B2C3D4")  # the same card again stops
    done = wait_until(lambda: settled(reply["session_id"]))
    assert done.method == "card" and done.stop_reason == "user" and done.cost_fen > 0
    assert_ledger_invariants(db.session)


def test_coins_buy_an_allowance_and_are_earned_at_once(site: Site) -> None:
    from sqlalchemy import select

    from app.models import ChargingSession, LedgerTransaction

    plugged(site, 2)
    site.pile.insert_coins(2, 100)  # 1 yuan: 1 kWh at 1 yuan/kWh
    row = wait_until(lambda: snapshot_value(lambda: db.session.execute(
        select(ChargingSession).where(ChargingSession.method == "coin")).scalar_one_or_none()))
    assert row.coin_fen == 100 and row.max_amount_fen == 100 and row.max_energy_wh == 1000
    wait_until(lambda: session_row(row.public_id).status == "active")
    site.pile.advance(10 * 3600)  # long enough to use the whole allowance
    done = wait_until(lambda: settled(row.public_id))
    assert done.stop_reason in ("limit_reached", "full")
    assert done.cost_fen <= 100
    sale = snapshot_value(lambda: db.session.execute(select(LedgerTransaction).where(
        LedgerTransaction.kind == "coin_sale")).scalar_one())
    assert sale.amount_fen == 100
    assert_ledger_invariants(db.session)


def test_start_failures_release_the_hold_and_say_why(site: Site, app: Any) -> None:
    wait_until(lambda: pile_online(site.pile_id))
    # not plugged: the pile nacks
    res = scan(site, port=1)
    assert res.status_code == 409
    assert res.get_json()["details"]["reason"] == "nack:not_plugged"
    assert balance(site.account_id).held_fen == 0
    # port busy: a session is already running there
    plugged(site, 2)
    assert scan(site, port=2, max_amount_fen=1000).status_code == 201
    busy = scan(site, port=2)
    assert busy.status_code == 409 and busy.get_json()["details"]["reason"] == "port_busy"
    assert balance(site.account_id).held_fen == 1000
    # no answer: the pile hangs (its link is up for the broker, but it does not act)
    site.pile.plug(1)
    wait_until(lambda: port_status(site.pile_id, 1) == "plugged")
    app.config["START_WAIT_S"] = 1.5
    site.pile._client.on_message = lambda *a: None  # deaf from now on
    silent = scan(site, port=1)
    assert silent.status_code == 409
    assert silent.get_json()["details"]["reason"] == "ack_timeout"
    assert balance(site.account_id).held_fen == 1000  # only port 2's hold remains
    # pile offline: refused before anything is held
    site.pile.drop_link()
    wait_until(lambda: not pile_online(site.pile_id), timeout=30)
    offline = scan(site, port=1)
    assert offline.status_code == 409
    assert offline.get_json()["details"]["reason"] == "pile_offline"
    assert balance(site.account_id).held_fen == 1000
    assert_ledger_invariants(db.session)


def test_balance_runs_out_mid_session(site: Site) -> None:
    """The pile stops by itself at the pushed limit; the bill never exceeds the hold."""
    plugged(site)
    res = scan(site, max_amount_fen=30)  # 30 fen: 300 Wh at 1 yuan/kWh
    assert res.status_code == 201, res.get_json()
    sid = res.get_json()["session_id"]
    assert res.get_json()["max_energy_wh"] == 300
    site.pile.advance(6 * 3600)
    done = wait_until(lambda: settled(sid))
    assert done.stop_reason in ("limit_reached", "full")
    assert done.cost_fen <= 30
    assert done.end_energy_wh - done.start_energy_wh <= 300
    assert balance(site.account_id).available_fen == 5000 - done.cost_fen
    assert_ledger_invariants(db.session)


def test_platform_stops_a_pile_that_overruns_its_limit(site: Site) -> None:
    """A pile that ignores the limit (broken firmware) is stopped by the platform within one
    meter report; the overshoot is billed from the wallet only up to its grace (0 here)."""
    plugged(site)
    res = scan(site, max_amount_fen=30)
    sid = res.get_json()["session_id"]
    site.pile.ports[1].session.limits = {"max_energy_wh": None, "max_minutes": None,
                                         "max_amount_fen": None}  # the firmware bug
    stops_before = len([m for m in site.pile.received if m.get("type") == "stop"])
    site.pile.advance(6 * 3600)
    wait_until(lambda: len([m for m in site.pile.received if m.get("type") == "stop"])
               > stops_before)
    stop = [m for m in site.pile.received if m.get("type") == "stop"][-1]
    assert stop["reason"] == "balance" and stop["session_id"] == sid
    done = wait_until(lambda: settled(sid))
    assert done.cost_fen <= 30 + 0  # hold + grace
    assert_ledger_invariants(db.session)


def test_operator_stop_and_critical_alarm_stop(site: Site) -> None:
    plugged(site, 1)
    plugged(site, 2)
    one = scan(site, port=1, max_amount_fen=1000).get_json()["session_id"]
    two = scan(site, port=2, max_amount_fen=1000).get_json()["session_id"]
    site.pile.advance(600)
    op = site.api.login("op_a")
    assert op.post(f"/api/v1/charging-sessions/{one}/stop").status_code == 202
    assert wait_until(lambda: settled(one)).stop_reason == "operator"
    other_op = site.api.login("op_b")
    assert other_op.post(f"/api/v1/charging-sessions/{two}/stop").status_code == 404
    site.pile.raise_alarm(2, "smoke", "critical", value=1, threshold=1)
    done = wait_until(lambda: settled(two))
    assert done.stop_reason == "alarm"
    assert_ledger_invariants(db.session)


def test_duplicated_and_reordered_reports_bill_the_same(site: Site) -> None:
    from simulator.pile import Faults

    plugged(site)
    site.pile.faults = Faults(dup=0.3, reorder=0.3, delay=0.0)
    sid = scan(site, max_amount_fen=3000).get_json()["session_id"]
    site.pile.advance(3600)
    site.pile.flush()
    site.pile.unplug(1)
    site.pile.flush()
    done = wait_until(lambda: settled(sid))
    energy = done.end_energy_wh - done.start_energy_wh
    assert done.cost_fen == (energy * 100 + 500) // 1000
    assert balance(site.account_id).available_fen == 5000 - done.cost_fen
    assert_ledger_invariants(db.session)


def test_offline_card_session_uploaded_later_is_billed_once(site: Site) -> None:
    from sqlalchemy import func, select

    from app.models import ChargingSession

    plugged(site)
    op = site.api.login("op_a")
    op.post(f"/api/v1/charging-accounts/{site.account_id}/cards", json={"card_uid": "0A0B0C0D"})
    # the pile got the offline policy with its config at connect time
    wait_until(lambda: site.pile.config.get("offline_card_limits") is not None)
    site.pile.drop_link()
    wait_until(lambda: not pile_online(site.pile_id), timeout=30)
    assert site.pile.swipe_card(1, "0A0B0C0D") is None  # runs locally
    site.pile.advance(3 * 3600)  # hours pass without a link
    site.pile.unplug(1)
    site.pile.restore_link()
    row = wait_until(lambda: snapshot_value(lambda: db.session.execute(
        select(ChargingSession).where(ChargingSession.local_id.is_not(None))
    ).scalar_one_or_none()), timeout=20)
    assert row.status == "settled" and row.method == "card"
    assert 0 < row.cost_fen <= 500  # the offline card limit
    # the pile uploads the same batch again (e.g. it never saw the PUBACK): nothing more
    again = [m for m in site.pile.sent if m.type == "offline_sessions"][-1]
    site.pile.publish_raw("offline_sessions", dict(again, seq=again["seq"] + 1000))
    site.pile.advance(60)
    wait_until(lambda: snapshot_value(lambda: db.session.execute(select(func.count()).select_from(
        ChargingSession).where(ChargingSession.local_id.is_not(None))).scalar_one()) == 1)
    assert balance(site.account_id).available_fen == 5000 - row.cost_fen
    assert_ledger_invariants(db.session)


def test_pile_offline_too_long_is_billed_then_reconciled(site: Site, app: Any) -> None:
    from datetime import timedelta

    from app.models.base import utcnow
    from app.services.charging import close_abandoned_sessions
    from app.services.uow import UnitOfWork

    plugged(site)
    sid = scan(site, max_amount_fen=3000).get_json()["session_id"]
    site.pile.advance(1800)
    wait_until(lambda: session_row(sid).cost_fen > 0)
    site.pile.drop_link()
    wait_until(lambda: not pile_online(site.pile_id), timeout=30)
    site.pile.advance(1800)  # keeps charging without a link
    closed = close_abandoned_sessions(UnitOfWork(), offline_timeout_s=600,
                                      now=utcnow() + timedelta(hours=1))
    assert closed == 1
    first = settled(sid)
    assert first.stop_reason == "pile_offline"
    site.pile.unplug(1)  # its own end report waits in the pile's backlog
    site.pile.restore_link()
    later = wait_until(lambda: (r := session_row(sid)).reconciled_fen > 0 and r, timeout=20)
    energy = later.end_energy_wh - later.start_energy_wh
    assert later.cost_fen + later.reconciled_fen == (energy * 100 + 500) // 1000
    assert balance(site.account_id).available_fen == (
        5000 - later.cost_fen - later.reconciled_fen)
    assert_ledger_invariants(db.session)


def test_full_battery_and_power_loss_end_sessions(site: Site) -> None:
    from simulator.physics import Battery

    plugged(site, 1)
    site.pile.unplug(1)
    site.pile.plug(1, Battery(nominal_v=48, capacity_wh=480, soc=0.9))  # nearly full
    wait_until(lambda: port_status(site.pile_id, 1) == "plugged")
    full = scan(site, port=1, max_amount_fen=1000).get_json()["session_id"]
    plugged(site, 2)
    lost = scan(site, port=2, max_amount_fen=1000).get_json()["session_id"]
    site.pile.advance(4 * 3600)
    assert wait_until(lambda: settled(full)).stop_reason == "full"
    site.pile.reboot()  # mains power lost and back: the running session ends
    assert wait_until(lambda: settled(lost), timeout=20).stop_reason == "power_loss"
    assert balance(site.account_id).held_fen == 0
    assert_ledger_invariants(db.session)


def test_bridge_restart_mid_session_loses_nothing(site: Site, app: Any) -> None:
    """Open sessions live in the database: a restarted bridge carries on billing them."""
    from tests.support.bridge import running_bridge

    plugged(site)
    sid = scan(site, max_amount_fen=3000).get_json()["session_id"]
    site.pile.advance(600)
    wait_until(lambda: session_row(sid).cost_fen > 0)
    db.session.rollback()
    site.bridge.stop()  # the bridge dies; the pile keeps charging and reporting
    site.pile.advance(1200)
    with running_bridge(app, worker="again"):
        site.pile.unplug(1)
        done = wait_until(lambda: settled(sid), timeout=30)
    energy = done.end_energy_wh - done.start_energy_wh
    assert done.cost_fen == (energy * 100 + 500) // 1000
    assert_ledger_invariants(db.session)


def test_live_updates_are_pushed_as_server_sent_events(site: Site, app: Any) -> None:
    import json
    import threading

    plugged(site)
    sid = scan(site, max_amount_fen=2000).get_json()["session_id"]
    app.config["SSE_MAX_SECONDS"] = 30
    events: list[dict[str, Any]] = []

    def charge_then_unplug() -> None:
        site.pile.advance(900)
        site.pile.unplug(1)

    res = site.phone.get(f"/api/v1/charging-sessions/{sid}/events", buffered=False)
    assert res.status_code == 200 and res.mimetype == "text/event-stream"
    threading.Timer(1.5, charge_then_unplug).start()
    for chunk in res.response:
        for block in chunk.decode().split("\n\n"):
            if block.startswith("event: session"):
                events.append(json.loads(block.split("data: ", 1)[1]))
        if any(e["status"] == "settled" for e in events):
            break
    res.close()
    assert events[0]["status"] == "active"
    assert events[-1]["status"] == "settled" and events[-1]["cost_fen"] > 0
    assert events[-1]["energy_wh"] > 0 and len(events) >= 2

"""The simulated pile follows the protocol (in-memory link: deterministic, no broker)."""

from __future__ import annotations

from typing import Any

import pytest

from app.protocol import ProtocolError, validate_uplink
from simulator import Battery, Faults, MessageFactory, SimulatedPile, command, reading
from simulator.messages import now_ms
from simulator.pile import ANSWER_TIMEOUT_S

TARIFF = {"tariff_id": "T1", "text": "1.00元/度", "energy_fen_per_kwh": 100,
          "time_fen_per_hour": 0}
NO_LIMITS: dict[str, Any] = {"max_energy_wh": None, "max_minutes": None, "max_amount_fen": None}


def limits(**kw: int) -> dict[str, Any]:
    return {**NO_LIMITS, **kw}


def start(port: int = 1, session_id: str = "S1", **kw: Any) -> dict[str, Any]:
    body = {"port": port, "session_id": session_id, "req_id": None, "method": "app",
            "limits": limits(max_minutes=600), "tariff": TARIFF}
    body.update(kw)
    return command("start", **body)


def stop(port: int = 1, session_id: str = "S1") -> dict[str, Any]:
    return command("stop", port=port, session_id=session_id, reason="user")


def new_pile(ports: int = 2, **kw: Any) -> SimulatedPile:
    pile = SimulatedPile("PMEM1", ports=ports, broker_url=None, seed=7, **kw)
    pile.connect()
    return pile


def wire_valid(pile: SimulatedPile) -> list[dict[str, Any]]:
    """Everything the pile put on the wire passes the platform's validation."""
    return [validate_uplink(w.topic, w.payload) for w in pile.wire]


def acks(pile: SimulatedPile) -> list[dict[str, Any]]:
    return [w.json() for w in pile.wire if w.msg_type == "cmd_ack"]


def test_online_first_with_snapshot_and_will_conn() -> None:
    pile = new_pile()
    wire = wire_valid(pile)
    assert pile.wire[0].msg_type == "online"
    assert wire[0]["conn"] == 1 and wire[0]["port_count"] == 2
    will = pile.sent_of("offline")[0]
    assert will["conn"] == 1 and will["reason"] == "link_lost"
    assert will["seq"] < wire[0]["seq"]


def test_start_meter_taper_and_energy_limit() -> None:
    pile = new_pile(meter_interval_s=60)
    pile.plug(1, Battery(nominal_v=60, capacity_wh=720, soc=0.75, cc_current_a=2.5))
    pile.deliver("start", start(limits=limits(max_energy_wh=150, max_minutes=600)))
    ack = acks(pile)[-1]
    assert ack["ok"] and ack["energy_wh"] == 0 and ack["cmd"] == "start"
    pile.advance(8 * 3600)
    wire_valid(pile)
    readings = [r for w in pile.wire if w.msg_type == "meter" for r in w.json()["readings"]
                if r["session_id"] == "S1"]
    energies = [r["energy_wh"] for r in readings]
    powers = [r["power_w"] for r in readings]
    assert energies == sorted(energies)
    assert max(powers) > 150 and powers[-1] < 0.7 * max(powers)  # constant current, then taper
    end = pile.sent_of("session_end")[-1]
    assert end["reason"] == "limit_reached"
    assert end["energy_end_wh"] - end["energy_start_wh"] == 150
    assert pile.ports[1].status == "plugged" and pile.ports[1].session is None


def test_full_detection_ends_the_session() -> None:
    pile = new_pile()
    pile.plug(1, Battery(soc=0.9))
    pile.deliver("start", start())
    pile.advance(6 * 3600)
    end = pile.sent_of("session_end")[-1]
    assert end["reason"] == "full"
    assert pile.ports[1].status == "full"
    pile.unplug(1)
    assert pile.ports[1].status == "idle"


def test_time_and_amount_limits() -> None:
    pile = new_pile()
    pile.plug(1, Battery(soc=0.1))
    pile.plug(2, Battery(soc=0.1))
    pile.deliver("start", start(1, "S-time", limits=limits(max_minutes=30)))
    pile.deliver("start", start(2, "S-money", limits=limits(max_amount_fen=10)))
    pile.advance(3 * 3600)
    ends = {e["session_id"]: e for e in pile.sent_of("session_end")}
    assert ends["S-time"]["ended_at"] - ends["S-time"]["started_at"] == 30 * 60 * 1000
    used = ends["S-money"]["energy_end_wh"] - ends["S-money"]["energy_start_wh"]
    assert 100 <= used <= 102  # 10 fen at 100 fen/kWh, stopped at the first step past it
    assert {e["reason"] for e in ends.values()} == {"limit_reached"}


def test_nacks_busy_not_plugged_invalid_and_unknown_session() -> None:
    pile = new_pile()
    pile.deliver("start", start(1, "S1"))
    pile.plug(1)
    pile.deliver("start", start(1, "S2"))
    pile.deliver("start", start(1, "S3"))
    pile.deliver("start", start(9, "S4"))
    pile.deliver("stop", stop(2, "S2"))
    reasons = [(a["session_id"], a["ok"], a["reason"]) for a in acks(pile)]
    assert reasons == [("S1", False, "not_plugged"), ("S2", True, None),
                       ("S3", False, "port_busy"), ("S4", False, "invalid"),
                       ("S2", False, "unknown_session")]
    wire_valid(pile)


def test_repeated_cmd_id_is_acked_again_without_acting_twice() -> None:
    pile = new_pile()
    pile.plug(1)
    cmd = start()
    pile.deliver("start", cmd)
    pile.advance(120)
    pile.deliver("start", cmd)
    first, second = acks(pile)
    assert first["cmd_id"] == second["cmd_id"] and first["seq"] < second["seq"]
    assert {k: first[k] for k in ("ok", "reason", "energy_wh")} == {
        k: second[k] for k in ("ok", "reason", "energy_wh")}
    assert len(pile.received) == 1  # acted once
    halt = stop()
    pile.deliver("stop", halt)
    pile.deliver("stop", halt)
    assert len(pile.sent_of("session_end")) == 1
    assert [a["ok"] for a in acks(pile)] == [True, True, True, True]


def test_stale_command_is_nacked_expired_and_not_acted_on() -> None:
    pile = new_pile()
    pile.plug(1)
    pile.deliver("start", start(ttl_s=-1))
    assert acks(pile)[-1]["reason"] == "expired"
    assert pile.ports[1].session is None


def test_stop_acks_the_counter_then_session_end_follows() -> None:
    pile = new_pile()
    pile.plug(1, Battery(soc=0.2))
    pile.deliver("start", start())
    pile.advance(3600)
    pile.deliver("stop", stop())
    ack = acks(pile)[-1]
    end = pile.sent_of("session_end")[-1]
    assert ack["cmd"] == "stop" and ack["ok"]
    assert ack["energy_wh"] == end["energy_end_wh"] > 0
    assert end["reason"] == "stopped_by_platform"
    types = [w.msg_type for w in pile.wire]
    assert types.index("session_end") > len(types) - 4 > types.index("cmd_ack")


def test_keypad_card_and_coin_requests() -> None:
    pile = new_pile()
    pile.plug(1)
    pile.plug(2)
    req = pile.keypad_login(1, "13812345678", "246810")
    card_req = pile.swipe_card(2, "04a2b3c4")
    assert req and card_req
    reqs = pile.sent_of("auth_request")
    assert reqs[0]["method"] == "keypad" and "card_uid" not in reqs[0]
    assert reqs[1]["card_uid"] == "04A2B3C4" and "pin" not in reqs[1]
    pile.deliver("auth_reply", command("auth_reply", req_id=req, port=1, allow=True,
                                       reason=None, session_id="SK", limits=None,
                                       balance_fen=1250))
    pile.deliver("start", start(1, "SK", req_id=req, method="keypad"))
    assert pile.ports[1].session is not None and pile.display["balance_fen"] == 1250
    pile.unplug(2)
    coin_req = pile.insert_coins(1, 200)
    assert pile.sent_of("coin_insert")[0]["req_id"] == coin_req
    wire_valid(pile)


def test_unanswered_coins_run_a_local_session(monkeypatch: pytest.MonkeyPatch) -> None:
    pile = new_pile()
    pile.plug(2)
    pile.insert_coins(2, 100)
    clock = __import__("time").monotonic() + ANSWER_TIMEOUT_S + 1
    monkeypatch.setattr("simulator.pile.time.monotonic", lambda: clock)
    pile.pump()
    session = pile.ports[2].session
    assert session is not None and session.local_id and session.coin_fen == 100


def test_offline_sessions_are_uploaded_in_time_order_after_reconnect() -> None:
    pile = new_pile()
    pile.drop_link()
    assert not pile.connected
    pile.plug(1, Battery(soc=0.3))
    pile.swipe_card(1, "04A2B3C4D5E680")
    pile.advance(600)
    pile.plug(2, Battery(soc=0.3))
    pile.insert_coins(2, 20)
    pile.advance(7200)  # the coin session reaches its amount (20 fen = 200 Wh)
    pile.unplug(1)
    pile.advance(60)
    before = len(pile.wire)
    assert all(w.msg_type != "meter" for w in pile.wire[1:])  # nothing "now" while offline
    pile.restore_link()
    after = [w.json() for w in pile.wire[before:]]
    assert [pile.wire[before + i].msg_type for i in range(len(after))][:2] == [
        "online", "offline_sessions"]
    assert after[0]["conn"] == 2
    sessions = after[1]["sessions"]
    assert [s["method"] for s in sessions] == ["card", "coin"]
    assert sessions[0]["started_at"] < sessions[1]["started_at"]
    assert sessions[1]["reason"] == "limit_reached" and sessions[1]["coin_fen"] == 20
    assert sessions[0]["reason"] == "unplugged"
    assert len({s["local_id"] for s in sessions}) == 2
    wire_valid(pile)


def test_session_end_during_outage_is_delivered_after_online() -> None:
    pile = new_pile()
    pile.plug(1, Battery(soc=0.3))
    pile.deliver("start", start(limits=limits(max_energy_wh=50)))
    pile.drop_link()
    pile.advance(3600)  # the limit is enforced without a link
    assert pile.ports[1].session is None
    before = len(pile.wire)
    pile.restore_link()
    types = [w.msg_type for w in pile.wire[before:]]
    assert types[:2] == ["online", "session_end"]
    end = pile.wire[before + 1].json()
    assert end["energy_end_wh"] - end["energy_start_wh"] == 50
    assert end["seq"] < pile.wire[before].json()["seq"]  # created offline, sent later


def test_reboot_new_boot_seq_restarts_counters_survive() -> None:
    pile = new_pile()
    pile.plug(1, Battery(soc=0.3))
    pile.deliver("start", start())
    pile.advance(3600)
    energy = pile.ports[1].energy_wh
    old_boot = pile.boot_id
    before = len(pile.wire)
    pile.reboot()
    assert pile.boot_id != old_boot
    msgs = [w.json() for w in pile.wire[before:]]
    online = next(m for m in msgs if "firmware" in m)
    assert online["boot_id"] != old_boot and online["seq"] == 2  # seq 1 = the will
    assert online["conn"] == 2
    assert online["ports"][0]["energy_wh"] == energy
    end = next(m for m in msgs if "energy_start_wh" in m)
    assert end["reason"] == "power_loss" and end["boot_id"] == old_boot
    assert pile.ports[1].energy_wh == energy


def test_fault_injection_duplicates_and_reorders_identical_payloads() -> None:
    pile = new_pile(faults=Faults(dup=0.3, reorder=0.3))
    for port in (1, 2):
        pile.plug(port, Battery(soc=0.2))
        pile.deliver("start", start(port, f"S{port}"))
    pile.advance(4 * 3600)
    pile.flush()
    keys = [(m["boot_id"], m["seq"]) for m in wire_valid(pile)]
    assert len(keys) > len(set(keys))  # duplicates: same key, same bytes
    by_key: dict[Any, bytes] = {}
    for w in pile.wire:
        m = w.json()
        assert by_key.setdefault((m["boot_id"], m["seq"]), w.payload) == w.payload
    seqs = [s for _, s in keys]
    assert seqs != sorted(seqs)  # reordered
    assert sorted(set(seqs)) == sorted(m["seq"] for m in pile.sent if m.type != "offline")


def test_critical_alarm_cuts_power_and_faults_the_port() -> None:
    pile = new_pile()
    pile.plug(1)
    pile.deliver("start", start())
    assert pile.raise_alarm(1, "over_temperature", "critical", value=782, threshold=700)
    alarm = pile.sent_of("alarm")[-1]
    assert alarm["cut_off"] and alarm["session_id"] == "S1"
    assert pile.sent_of("session_end")[-1]["reason"] == "alarm"
    assert pile.ports[1].status == "fault"
    assert not pile.raise_alarm(None, "smoke", "minor")
    pile.clear_alarm(1, "over_temperature")
    assert pile.ports[1].status == "plugged"
    wire_valid(pile)


def test_config_time_sync_and_balance() -> None:
    pile = new_pile()
    cfg = command("config", config_id="cfg-2", tariff=TARIFF, keepalive_s=30,
                  meter_interval_s=15, full_power_w=20, full_minutes=5,
                  offline_card_limits=None, offline_coin_max_minutes=120)
    pile.deliver("config", cfg)
    ack = pile.sent_of("config_ack")[-1]
    assert ack["ok"] and ack["config_id"] == "cfg-2"
    assert pile.meter_interval_s == 15 and pile.config["offline_card_limits"] is None
    server_ts = now_ms() + 3_600_000  # the pile's clock was an hour late
    pile.deliver("time_sync", command("time_sync", ts=server_ts, utc_offset_min=480))
    assert abs(pile.now_ms() - server_ts) < 1000
    pile.deliver("balance", command("balance", ts=server_ts, account_hint="138****5678",
                                    balance_fen=642,
                                    port=1, reason="settled"))
    assert pile.display == {"account_hint": "138****5678", "balance_fen": 642, "port": 1,
                            "reason": "settled"}
    pile.drop_link()
    pile.plug(1)
    pile.swipe_card(1, "04A2B3C4")
    assert pile.ports[1].session is None  # cards refused offline by this config


def test_invalid_command_is_nacked_invalid() -> None:
    pile = new_pile()
    bad = start()
    bad["limits"] = {"max_minutes": 10}
    pile.deliver("start", bad)
    assert acks(pile)[-1]["reason"] == "invalid"


def test_message_factory_builds_valid_messages_without_a_connection() -> None:
    f = MessageFactory("PBENCH1")
    msgs = [
        f.meter([reading(p, 1000 + p, power_w=180, session_id="S1") for p in range(1, 11)]),
        f.heartbeat(port_statuses=["idle"] * 10, uptime_s=5),
        f.port_status(port=1, status="plugged", prev_status="idle"),
        f.alarm(port=None, kind="smoke", severity="critical", cut_off=True),
        f.cmd_ack(cmd_id="f47ac10b-58cc", cmd="start", ok=True, port=1, session_id="S1",
                  energy_wh=10),
        f.master_meter(meter_id="M1", energy_wh=10, read_at=1),
    ]
    assert [m["seq"] for m in msgs] == list(range(1, 7))
    for m in msgs:
        validate_uplink(m.topic, f.encode(m))
    f.new_boot()
    assert f.heartbeat(port_statuses=["idle"], uptime_s=0)["seq"] == 1
    with pytest.raises(ProtocolError):
        validate_uplink("meter", f.meter([]))

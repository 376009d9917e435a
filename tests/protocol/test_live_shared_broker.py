"""A simulated pile against the real Mosquitto on 127.0.0.1:1883, observed by plain paho."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app.protocol import UPLINK_TYPES, downlink_topic, encode, validate_uplink
from simulator import Battery, SimulatedPile, command
from tests.protocol.conftest import Recorder

pytestmark = pytest.mark.mqtt

TARIFF = {"tariff_id": "T1", "text": "1.00元/度", "energy_fen_per_kwh": 100,
          "time_fen_per_hour": 0}


@pytest.fixture
def pile_and_platform(
    shared_broker: tuple[str, int], unique_pile_id: str,
    recorder_factory: Callable[..., Recorder],
) -> Iterator[tuple[SimulatedPile, Recorder]]:
    host, port = shared_broker
    platform = recorder_factory(host, port).start()
    platform.subscribe(f"piles/{unique_pile_id}/up/#")
    pile = SimulatedPile(unique_pile_id, ports=2, broker_url=f"mqtt://{host}:{port}", seed=11,
                         meter_interval_s=60)
    pile.connect()
    yield pile, platform
    pile.disconnect()


def valid(received: list[Any]) -> list[dict[str, Any]]:
    return [validate_uplink(m.topic, m.payload) for m in received]


def test_every_uplink_type_reaches_a_plain_subscriber_valid(
    pile_and_platform: tuple[SimulatedPile, Recorder],
) -> None:
    pile, platform = pile_and_platform
    pid = pile.pile_id
    platform.wait_type("online")
    pile.plug(1, Battery(soc=0.5))                                       # port_status
    pile.keypad_login(1, "13812345678", "246810")                       # auth_request
    pile.insert_coins(2, 100)                                           # coin_insert
    platform.publish(downlink_topic(pid, "start"), encode(command(
        "start", port=1, session_id="S-live-1", req_id=None, method="app",
        limits={"max_energy_wh": None, "max_minutes": 30, "max_amount_fen": None},
        tariff=TARIFF)))
    platform.wait_type("cmd_ack")                                       # cmd_ack
    platform.publish(downlink_topic(pid, "config"), encode(command(
        "config", config_id="cfg-live", tariff=TARIFF, keepalive_s=60, meter_interval_s=60,
        full_power_w=30, full_minutes=10,
        offline_card_limits={"max_energy_wh": 500, "max_minutes": 60, "max_amount_fen": None},
        offline_coin_max_minutes=60)))
    platform.wait_type("config_ack")                                    # config_ack
    pile.advance(31 * 60)                                               # meter, heartbeat,
    pile.raise_alarm(2, "leakage", "major", value=35, threshold=30)    # session_end, alarm
    pile.report_master_meter("M-1", 51234870)                          # master_meter
    pile.drop_link()                                                    # offline (will)
    pile.swipe_card(1, "04A2B3C4")
    pile.advance(120)
    pile.unplug(1)
    pile.restore_link()                                                 # offline_sessions
    assert platform.wait_for(
        lambda ms: {m.msg_type for m in ms} >= UPLINK_TYPES, timeout=15), sorted(
            UPLINK_TYPES - {m.msg_type for m in platform.messages})
    messages = valid(platform.messages)
    assert {m["pile_id"] for m in messages} == {pid}
    sessions = [s for m in messages if "sessions" in m for s in m["sessions"]]
    assert [s["card_uid"] for s in sessions] == ["04A2B3C4"]


def test_start_ack_then_tapering_meter_until_the_energy_limit(
    pile_and_platform: tuple[SimulatedPile, Recorder],
) -> None:
    pile, platform = pile_and_platform
    pid = pile.pile_id
    pile.plug(1, Battery(nominal_v=60, capacity_wh=720, soc=0.75, cc_current_a=2.5))
    cmd = command("start", port=1, session_id="S-live-2", req_id=None, method="app",
                  limits={"max_energy_wh": 150, "max_minutes": 720, "max_amount_fen": None},
                  tariff=TARIFF)
    platform.publish(downlink_topic(pid, "start"), encode(cmd))
    ack = validate_uplink("cmd_ack", platform.wait_type("cmd_ack")[0].payload)
    assert ack["cmd_id"] == cmd["cmd_id"] and ack["ok"] and ack["reason"] is None
    start_counter = ack["energy_wh"]
    pile.advance(8 * 3600)  # simulated; stops by itself at 150 Wh
    end = validate_uplink("session_end", platform.wait_type("session_end")[0].payload)
    assert end["reason"] == "limit_reached"
    assert end["energy_start_wh"] == start_counter
    assert end["energy_end_wh"] - start_counter == 150
    assert pile.wait_published()
    readings = [r for m in valid(platform.of_type("meter")) for r in m["readings"]
                if r["session_id"] == "S-live-2"]
    energies = [r["energy_wh"] for r in readings]
    powers = [r["power_w"] for r in readings]
    assert len(readings) >= 30
    assert energies == sorted(energies) and energies[-1] <= start_counter + 150
    assert max(powers) > 150 and powers[-1] < 0.5 * max(powers)  # tapering towards full
    # Re-sending the same start (platform retry) is acked again, nothing restarts.
    platform.publish(downlink_topic(pid, "start"), encode(cmd))
    acks = platform.wait_type("cmd_ack", 2)
    assert validate_uplink("cmd_ack", acks[1].payload)["ok"]
    assert pile.ports[1].session is None


def test_the_last_will_carries_the_connection_counter(
    pile_and_platform: tuple[SimulatedPile, Recorder],
) -> None:
    pile, platform = pile_and_platform
    first = validate_uplink("online", platform.wait_type("online")[0].payload)
    pile.drop_link()  # no DISCONNECT: the broker publishes the will
    will = validate_uplink("offline", platform.wait_type("offline")[0].payload)
    assert will["reason"] == "link_lost"
    assert will["conn"] == first["conn"]
    pile.restore_link()
    second = validate_uplink("online", platform.wait_type("online", 2)[1].payload)
    assert second["conn"] == first["conn"] + 1
    # The platform's rule: a will counts only if will.conn >= last online.conn.
    assert will["conn"] < second["conn"]
    pile.reboot()
    will2 = validate_uplink("offline", platform.wait_type("offline", 2)[1].payload)
    third = validate_uplink("online", platform.wait_type("online", 3)[2].payload)
    assert will2["conn"] == second["conn"]
    assert third["conn"] == second["conn"] + 1
    assert third["boot_id"] != second["boot_id"] and third["seq"] == 2

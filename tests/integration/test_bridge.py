"""The bridge against the real Mosquitto on loopback and the real database."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from app import protocol
from app.extensions import db
from app.models import (
    AlarmEvent,
    DownlinkCommand,
    MasterMeterReading,
    MeterReading,
    Pile,
    PileEvent,
    PileInbox,
    Port,
    RejectedUplink,
)
from app.services import outbox
from simulator.messages import MessageFactory, reading
from tests.support.bridge import (
    SHARED_BROKER,
    PileClient,
    configure_mqtt,
    running_bridge,
    wait_until,
)

pytestmark = pytest.mark.mqtt


def _ports(status: str = "idle", energy: int = 0) -> list[dict[str, Any]]:
    return [{"port": n, "status": status, "energy_wh": energy, "session_id": None,
             "local_id": None} for n in (1, 2)]


def _pile(world: Any) -> Pile:
    return db.session.get(Pile, world.a.pile.id)


def _port(world: Any, number: int) -> Port:
    return next(p for p in _pile(world).ports if p.number == number)


def test_the_message_set_round_trips(app: Flask, world: Any) -> None:
    configure_mqtt(app)
    serial = world.a.pile.serial
    f = MessageFactory(serial)
    with running_bridge(app) as bridge:
        pile = PileClient(SHARED_BROKER, serial)
        try:
            def send(msg: Any) -> None:
                pile.publish(msg.topic, f.encode(msg))

            send(f.online(conn=1, ports=_ports("idle", 1000)))
            wait_until(lambda: _pile(world).online)
            send(f.heartbeat(port_statuses=["idle", "idle"], uptime_s=60))
            send(f.port_status(port=1, status="plugged", prev_status="idle"))
            send(f.meter([reading(1, 1010, delta_wh=10, power_w=180, current_ma=3500)]))
            send(f.alarm(port=2, kind="over_temperature", severity="critical", value=850,
                         threshold=800, cut_off=True))
            send(f.master_meter(meter_id=world.a.community.master_meter_serial,
                                energy_wh=123456, read_at=f.clock()))
            wait_until(lambda: db.session.scalar(
                select(func.count()).select_from(MasterMeterReading)) == 1)
            assert _port(world, 1).status == "plugged"
            assert _port(world, 2).status == "idle"
            assert _port(world, 1).energy_wh == 1010 and _port(world, 1).power_w == 180
            assert db.session.scalar(select(func.count()).select_from(MeterReading)) == 1
            alarm = db.session.execute(select(AlarmEvent)).scalar_one()
            assert (alarm.kind, alarm.severity, alarm.cut_off) == ("over_temperature",
                                                                   "critical", True)
            # downlink: a command goes out through the outbox and its ack settles it
            command = outbox.enqueue_command(db.session, world.a.pile.id, "stop", {
                "port": 1, "session_id": "S1", "reason": "operator"})
            db.session.commit()
            bridge._nudge.set()
            def downlink(kind: str) -> Any:
                topic = protocol.downlink_topic(serial, kind)
                return next((m for m in pile.received if m.topic == topic), None)

            down = wait_until(lambda: downlink("stop"), timeout=10)
            # after `online` the platform set the pile's clock and pushed its config
            for kind in ("time_sync", "config"):
                protocol.validate_downlink(kind, json.loads(downlink(kind).payload))
            sent = json.loads(down.payload)
            protocol.validate_downlink("stop", sent)
            assert sent["cmd_id"] == command.cmd_id
            send(f.cmd_ack(cmd_id=sent["cmd_id"], cmd="stop", ok=True, port=1,
                           session_id="S1", energy_wh=1010))
            wait_until(lambda: db.session.get(DownlinkCommand, command.id).status == "acked")
            send(f.offline(conn=1, reason="shutdown"))
            wait_until(lambda: not _pile(world).online)
        finally:
            pile.close()
    kinds = set(db.session.scalars(select(PileEvent.kind)))
    assert {"online", "port_status", "alarm_raised", "cmd_ack", "offline"} <= kinds


def test_duplicated_and_shuffled_reports_store_the_same_energy(app: Flask, world: Any) -> None:
    """1,000 meter reports, each sent twice and shuffled, store what one clean pass stores."""
    configure_mqtt(app)
    clean, messy = world.a.pile.serial, world.b.pile.serial
    rng = random.Random(7)
    reports: dict[str, list[bytes]] = {}
    deltas = [rng.randint(0, 5) for _ in range(1000)]
    for serial in (clean, messy):
        f = MessageFactory(serial, rng=random.Random(1))
        energy = 5000
        msgs = []
        for delta in deltas:
            energy += delta
            msgs.append(f.encode(f.meter([reading(1, energy, delta_wh=delta, power_w=150)])))
        reports[serial] = msgs
    messy_stream = reports[messy] * 2
    rng.shuffle(messy_stream)
    pile_a_id, pile_b_id = world.a.pile.id, world.b.pile.id
    db.session.rollback()
    with running_bridge(app):
        a = PileClient(SHARED_BROKER, clean)
        b = PileClient(SHARED_BROKER, messy)
        try:
            ta = threading.Thread(target=lambda: [a.publish(f"piles/{clean}/up/meter", m)
                                                  for m in reports[clean]])
            tb = threading.Thread(target=lambda: [b.publish(f"piles/{messy}/up/meter", m)
                                                  for m in messy_stream])
            ta.start(), tb.start()
            ta.join(120), tb.join(120)

            def stored(pile_id: int) -> int:
                return db.session.scalar(select(func.count()).select_from(PileInbox).where(
                    PileInbox.pile_id == pile_id)) or 0

            wait_until(lambda: stored(pile_a_id) == 1000 and stored(pile_b_id) == 1000,
                       timeout=60)
        finally:
            a.close(), b.close()
    port_a = next(p for p in db.session.get(Pile, world.a.pile.id).ports if p.number == 1)
    port_b = next(p for p in db.session.get(Pile, world.b.pile.id).ports if p.number == 1)
    assert port_a.energy_wh == port_b.energy_wh
    assert port_a.meter_seq == port_b.meter_seq == 1000

    def readings(port_id: int) -> list[tuple[Any, ...]]:
        return sorted(db.session.execute(select(MeterReading.energy_wh, MeterReading.delta_wh)
                                         .where(MeterReading.port_id == port_id)).all())

    assert readings(port_a.id) == readings(port_b.id)
    assert len(readings(port_b.id)) == 1000


def test_crash_between_commit_and_ack_applies_nothing_twice(app: Flask, world: Any) -> None:
    configure_mqtt(app)
    serial = world.a.pile.serial
    f = MessageFactory(serial)
    group = f"crash{random.randint(0, 10**6)}"
    with running_bridge(app, worker="c", group=group) as bridge:
        bridge.client.ack = lambda mid, qos: None  # type: ignore[method-assign]  # dies before acking
        pile = PileClient(SHARED_BROKER, serial)
        for i in range(1, 51):
            msg = f.meter([reading(1, 100 + i, delta_wh=1, power_w=100)])
            pile.publish(msg.topic, f.encode(msg))
        wait_until(lambda: db.session.scalar(select(func.count()).select_from(MeterReading))
                   == 50)
        pile.close()
        # crash: no DISCONNECT packet, no acks; the broker keeps the session's unacked messages
        bridge._stop.set()
        bridge.client.socket().close()
    with running_bridge(app, worker="c", group=group) as bridge:
        wait_until(lambda: bridge.stats.duplicates >= 1, timeout=20)
        time.sleep(0.5)
    assert db.session.scalar(select(func.count()).select_from(MeterReading)) == 50
    assert db.session.scalar(select(func.count()).select_from(PileInbox)) == 50


def test_the_link_process_killed_mid_stream_is_replaced_and_nothing_is_lost(
        app: Flask, world: Any) -> None:
    """``flask bridge run`` keeps paho in a child process (and on PostgreSQL ingests in
    two lanes). Killed mid-stream, the worker starts another child; the broker
    redelivers what was not acked, nothing applies twice, and commands go out through
    the new child."""
    configure_mqtt(app)
    serial = world.a.pile.serial
    f = MessageFactory(serial)
    lanes = 2 if app.config["SETTINGS"].database_url.startswith("postgresql") else 1
    with running_bridge(app, worker="p", group=f"proc{random.randint(0, 10**6)}",
                        link="process", lanes=lanes) as bridge:
        first_child = bridge.link.pid
        pile = PileClient(SHARED_BROKER, serial)
        try:
            for i in range(1, 201):
                msg = f.meter([reading(1, 100 + i, delta_wh=1, power_w=100)])
                pile.publish(msg.topic, f.encode(msg))
                if i == 100:
                    os.kill(first_child, signal.SIGKILL)
            wait_until(lambda: db.session.scalar(
                select(func.count()).select_from(MeterReading)) == 200, timeout=30)
            wait_until(lambda: bridge.stats.connected and bridge.stats.connects >= 2)
            assert bridge.link.pid != first_child
            command = outbox.enqueue_command(db.session, world.a.pile.id, "stop", {
                "port": 1, "session_id": "S1", "reason": "operator"})
            db.session.commit()
            bridge.on_nudge()
            stop_topic = protocol.downlink_topic(serial, "stop")
            sent = wait_until(lambda: next((json.loads(m.payload) for m in pile.received
                                            if m.topic == stop_topic), None), timeout=10)
            assert sent["cmd_id"] == command.cmd_id
        finally:
            pile.close()
    assert db.session.scalar(select(func.count()).select_from(PileInbox)) == 200
    assert _port(world, 1).energy_wh == 300


def test_a_late_will_does_not_mark_a_reconnected_pile_offline(app: Flask, world: Any) -> None:
    configure_mqtt(app)
    serial = world.a.pile.serial
    pile_id = world.a.pile.id
    f = MessageFactory(serial)

    def state() -> tuple[bool, int]:
        pile = db.session.get(Pile, pile_id)
        return pile.online, pile.conn_counter

    with running_bridge(app):
        # A real take-over: the pile reconnects with the same client id; the broker drops
        # the old link and publishes that link's will (conn=1).
        will1 = f.offline(conn=1)
        first = PileClient(SHARED_BROKER, serial, will=(will1.topic, f.encode(will1)))
        online1 = f.online(conn=1, ports=_ports())
        first.publish(online1.topic, f.encode(online1))
        wait_until(lambda: state() == (True, 1))
        will2 = f.offline(conn=2)
        second = PileClient(SHARED_BROKER, serial, will=(will2.topic, f.encode(will2)))
        online2 = f.online(conn=2, ports=_ports())
        second.publish(online2.topic, f.encode(online2))
        wait_until(lambda: state() == (True, 2))
        # A will that arrives late (delayed, or handled by another bridge worker after the
        # newer online): it must not mark the reconnected pile offline.
        late_will = f.offline(conn=1)
        second.publish(late_will.topic, f.encode(late_will))
        wait_until(lambda: db.session.scalar(select(func.count()).select_from(PileEvent).where(
            PileEvent.pile_id == pile_id, PileEvent.kind == "stale_will")) >= 1)
        assert state() == (True, 2)
        # The newest link dies: its will (conn=2) does mark the pile offline.
        second.client.socket().close()
        second.close(clean=False)
        wait_until(lambda: state() == (False, 2), timeout=60)
        first.close(clean=False)


def test_bad_payloads_are_rejected_counted_and_acked(app: Flask, world: Any) -> None:
    configure_mqtt(app)
    serial = world.a.pile.serial
    f = MessageFactory(serial)
    good = f.heartbeat(port_statuses=["idle", "idle"], uptime_s=5)
    wrong_version = dict(f.heartbeat(port_statuses=["idle"], uptime_s=5), v="2.0")
    bad_schema = dict(f.heartbeat(port_statuses=["idle"], uptime_s=5), uptime_s="x")
    other = dict(f.heartbeat(port_statuses=["idle"], uptime_s=5), pile_id="SOMEONE-ELSE")
    cases = [
        (f"piles/{serial}/up/heartbeat", b"{not json"),
        (f"piles/{serial}/up/heartbeat", b"x" * (protocol.MAX_PAYLOAD_BYTES + 1)),
        (f"piles/{serial}/up/heartbeat", json.dumps(wrong_version).encode()),
        (f"piles/{serial}/up/heartbeat", json.dumps(bad_schema).encode()),
        (f"piles/{serial}/up/heartbeat", json.dumps(other).encode()),
        (f"piles/{serial}/up/no_such_type", json.dumps(dict(good)).encode()),
        ("piles/UNKNOWN-PILE-9/up/heartbeat",
         f.encode(MessageFactory("UNKNOWN-PILE-9").heartbeat(port_statuses=["idle"], uptime_s=1))),
    ]
    with running_bridge(app) as bridge:
        pile = PileClient(SHARED_BROKER, serial)
        for topic, payload in cases:
            pile.publish(topic, payload)
        pile.publish(good.topic, f.encode(good))  # the bridge keeps going after all that
        wait_until(lambda: db.session.scalar(select(func.count()).select_from(PileInbox)) == 1)
        wait_until(lambda: db.session.scalar(select(func.count()).select_from(
            RejectedUplink).where(RejectedUplink.pile_serial == serial)) == 6)
        reasons = set(db.session.scalars(select(RejectedUplink.reason).where(
            RejectedUplink.pile_serial == serial)))
        assert {"malformed", "oversized", "version", "schema"} <= reasons
        wait_until(lambda: db.session.scalar(select(func.count()).select_from(
            RejectedUplink).where(RejectedUplink.pile_serial == "UNKNOWN-PILE-9")) >= 1)
        wait_until(lambda: bridge.stats.reasons["unknown_pile"] >= 1)
        pile.close()


def test_a_message_whose_handler_fails_is_isolated_and_the_bridge_lives(
        app: Flask, world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in one handler must not stall or kill the worker: that message is recorded as
    a reject, the rest of its batch is applied, and later messages keep flowing."""
    from app.services import telemetry

    def broken(ctx: Any, pile: Any, u: Any) -> None:
        raise RuntimeError("a bug in a handler")

    monkeypatch.setitem(telemetry.HANDLERS, "master_meter", [broken])
    configure_mqtt(app)
    serial = world.a.pile.serial
    f = MessageFactory(serial)
    with running_bridge(app, batch_wait_s=0.5):
        pile = PileClient(SHARED_BROKER, serial)
        for msg in (f.heartbeat(port_statuses=["idle", "idle"], uptime_s=1),
                    f.master_meter(meter_id="X", energy_wh=1, read_at=f.clock()),
                    f.heartbeat(port_statuses=["idle", "idle"], uptime_s=2)):
            pile.publish(msg.topic, f.encode(msg))
        wait_until(lambda: db.session.scalar(select(func.count()).select_from(
            RejectedUplink).where(RejectedUplink.reason == "handler_error")) == 1)
        later = f.heartbeat(port_statuses=["idle", "idle"], uptime_s=3)
        pile.publish(later.topic, f.encode(later))
        wait_until(lambda: db.session.scalar(select(func.count()).select_from(PileInbox)) == 3)
        pile.close()


def test_a_batch_writes_port_statuses_as_if_one_by_one(app: Flask, world: Any) -> None:
    """port_status messages are written together per run of messages (one UPDATE); state
    and events are exactly those of applying the same stream one message per batch."""
    import itertools

    from app.services.telemetry import PileDirectory, Uplink, apply_uplinks
    from app.services.uow import UnitOfWork

    def stream(serial: str) -> list[Any]:
        f = MessageFactory(serial, rng=random.Random(3),
                           clock=itertools.count(1_700_000_000_000, 1000).__next__)
        m1 = f.port_status(port=1, status="plugged", prev_status="idle")
        m2 = f.port_status(port=1, status="charging", prev_status="plugged")
        m3 = f.port_status(port=2, status="plugged", prev_status="idle")
        m4 = f.port_status(port=2, status="charging", prev_status="plugged")
        ack = f.cmd_ack(cmd_id="unknown-cmd-1", cmd="stop", ok=True)  # not deferrable
        f.new_boot()
        m5 = f.port_status(port=1, status="idle", prev_status="full")
        beat = f.heartbeat(port_statuses=["idle", "charging"], uptime_s=5)
        # arrival order: an older message after a newer one, a new boot before a late one
        return [m2, m1, m3, beat, ack, m5, m4, m1]

    def apply(messages: list[Any]) -> None:
        uplinks = [Uplink(m.type, m["pile_id"], protocol.validate_uplink(m.topic, dict(m)))
                   for m in messages]
        apply_uplinks(UnitOfWork(), uplinks, [], PileDirectory())

    batched, one_by_one = world.a.pile, world.b.pile
    apply(stream(batched.serial))
    for message in stream(one_by_one.serial):
        apply([message])

    def outcome(pile_id: int) -> tuple[Any, ...]:
        ports = {p.id: p.number for p in db.session.get(Pile, pile_id).ports}
        states = sorted((p.number, p.status, p.status_seq, p.status_ts)
                        for p in db.session.get(Pile, pile_id).ports)
        events = [(e.kind, ports.get(e.port_id), (e.detail or {}).get("status"))
                  for e in db.session.execute(select(PileEvent).where(
                      PileEvent.pile_id == pile_id).order_by(PileEvent.id)).scalars()]
        return states, events

    states, events = outcome(batched.id)
    assert (states, events) == outcome(one_by_one.id)
    assert [e for e in events if e[0] == "port_status"] == [
        ("port_status", 1, "charging"), ("port_status", 2, "plugged"),
        ("port_status", 1, "idle"), ("port_status", 2, "charging")]
    assert [s[1] for s in states[:2]] == ["idle", "charging"]

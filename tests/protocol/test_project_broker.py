"""The project's Mosquitto config (deploy/mosquitto) enforces per-pile security.

Runs a private broker on a free loopback port (tests/support/mosquitto.py);
never touches the shared one.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from app.protocol import downlink_topic, encode, uplink_topic, validate_uplink
from simulator import SimulatedPile, command
from tests.protocol.conftest import Recorder
from tests.support.mosquitto import ProjectBroker, mosquitto_available, project_broker

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]

CONF = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "mosquitto.conf"
A, B = f"PA{uuid.uuid4().hex[:6]}", f"PB{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def broker() -> Iterator[ProjectBroker]:
    with project_broker({A: "secret-a-123", B: "secret-b-456"}) as b:
        yield b


@pytest.fixture
def platform(broker: ProjectBroker, recorder_factory: Callable[..., Recorder]) -> Recorder:
    rec = recorder_factory(broker.host, broker.port, username=broker.platform_user,
                           password=broker.platform_password).start()
    rec.subscribe("piles/#")
    return rec


def as_pile(broker: ProjectBroker, recorder_factory: Callable[..., Recorder], pile_id: str,
            client_id: str | None = None) -> Recorder:
    return recorder_factory(broker.host, broker.port, client_id=client_id or pile_id,
                            username=pile_id, password=broker.passwords[pile_id]).start()


def connack(broker: ProjectBroker, username: str | None, password: str | None) -> object:
    """The CONNACK reason a client gets with these credentials."""
    result: list[object] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"x{uuid.uuid4().hex[:8]}")
    if username is not None:
        client.username_pw_set(username, password)

    def on_connect(c: mqtt.Client, u: object, f: object, rc: object, p: object) -> None:
        result.append(rc)
        done.set()

    client.on_connect = on_connect
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert done.wait(5), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


def test_shipped_config_has_the_limits_the_docs_promise() -> None:
    text = CONF.read_text()
    settings = dict(re.findall(r"^(\w+) (.+)$", text, re.M))
    assert settings["max_queued_messages"] == "0"
    assert int(settings["max_queued_bytes"]) > 0
    assert int(settings["max_inflight_messages"]) >= 20
    assert settings["persistence"] == "true"
    assert settings["allow_anonymous"] == "false"
    assert settings["use_username_as_clientid"] == "true"
    # a listener option before the first listener would open a stray default listener
    first_listener = text.index("\nlistener ")
    assert text.index("\nuse_username_as_clientid") > first_listener


def test_anonymous_and_wrong_passwords_are_refused(broker: ProjectBroker) -> None:
    assert connack(broker, None, None).is_failure
    assert connack(broker, A, "wrong").is_failure
    assert connack(broker, "P-unknown", "whatever").is_failure
    assert not connack(broker, A, broker.passwords[A]).is_failure


def test_a_pile_publishes_only_under_its_own_topic(
    broker: ProjectBroker, platform: Recorder, recorder_factory: Callable[..., Recorder],
) -> None:
    pile_a = as_pile(broker, recorder_factory, A)
    pile_a.publish(uplink_topic(A, "heartbeat"), b'{"own": true}')
    forged = pile_a.client.publish(uplink_topic(B, "heartbeat"), b'{"forged": true}', qos=1)
    forged.wait_for_publish(5)  # PUBACKed (MQTT 3.1.1 cannot refuse a publish) ...
    assert pile_a.disconnected.wait(5)  # ... and Mosquitto 2.0 then drops the connection
    # The broker routed (or not) the forged message before its PUBACK; a sentinel sent
    # afterwards reaches the platform's single connection after it.
    platform.publish(uplink_topic(A, "heartbeat"), b'{"sentinel": true}')
    assert platform.wait_for(lambda ms: len(ms) >= 2, timeout=5)
    assert [m.payload for m in platform.messages] == [b'{"own": true}', b'{"sentinel": true}']


def test_a_pile_cannot_read_another_piles_downlink(
    broker: ProjectBroker, platform: Recorder, recorder_factory: Callable[..., Recorder],
) -> None:
    pile_a = as_pile(broker, recorder_factory, A)
    pile_a.subscribe(f"piles/{B}/down/#")
    pile_a.subscribe("piles/+/up/#")  # nor anybody's uplink
    pile_a.subscribe(f"piles/{A}/down/#")
    platform.publish(downlink_topic(B, "stop"), b'{"for": "B"}')
    platform.publish(uplink_topic(B, "meter"), b'{"from": "B"}')
    platform.publish(downlink_topic(A, "stop"), b'{"for": "A"}')
    assert pile_a.wait_for(lambda ms: len(ms) >= 1, timeout=5)
    assert [m.topic for m in pile_a.messages] == [downlink_topic(A, "stop")]


def test_another_client_id_with_a_piles_credentials_takes_over_never_runs_beside(
    broker: ProjectBroker, platform: Recorder, recorder_factory: Callable[..., Recorder],
) -> None:
    """use_username_as_clientid: the clone becomes client A and the broker drops the
    first connection. Mosquitto 2.0.11 with password_file cannot refuse it outright
    (see docs/broker.md), but two devices with one credential never run side by side."""
    original = as_pile(broker, recorder_factory, A)
    original.client.reconnect_delay_set(60, 120)  # stay down once kicked off
    clone = as_pile(broker, recorder_factory, A, client_id="clone-of-" + A)
    assert not clone.connect_result.is_failure
    assert original.disconnected.wait(5), "the first connection should have been closed"
    clone.publish(uplink_topic(A, "heartbeat"), b"{}")
    assert platform.wait_for(lambda ms: len(ms) >= 1, timeout=5)
    assert re.search(rf"New client connected from \S+ as {A} ", broker.log())
    assert f"as clone-of-{A}" not in broker.log()
    assert f"Client {A} already connected, closing old connection" in broker.log()


def test_simulated_pile_with_credentials_and_its_will(
    broker: ProjectBroker, platform: Recorder,
) -> None:
    pile = SimulatedPile(B, ports=2, broker_url=broker.url, password=broker.passwords[B],
                         seed=5)
    pile.connect()
    try:
        online = validate_uplink(uplink_topic(B, "online"),
                                 platform.wait_type("online")[0].payload)
        platform.publish(downlink_topic(B, "balance"), encode(command(
            "balance", account_hint="138****5678", balance_fen=642, port=None,
            reason="query")))
        assert pile.wait_for(lambda: pile.display is not None, timeout=5)
        pile.drop_link()
        will = validate_uplink(uplink_topic(B, "offline"),
                               platform.wait_type("offline")[0].payload)
        assert will["conn"] == online["conn"] and will["reason"] == "link_lost"
    finally:
        pile.disconnect()


def test_python_written_password_hashes_authenticate() -> None:
    """Without mosquitto_passwd the launcher writes $7$ PBKDF2-SHA512 lines itself."""
    with project_broker({"PHASH1": "pbkdf2-secret"}, use_tool=False) as b:
        line = (b.directory / "passwd").read_text().splitlines()[-1]
        assert re.fullmatch(r"PHASH1:\$7\$101\$[A-Za-z0-9+/=]{16}\$[A-Za-z0-9+/=]{88}", line)
        assert not connack(b, "PHASH1", "pbkdf2-secret").is_failure
        assert connack(b, "PHASH1", "pbkdf2-secreT").is_failure

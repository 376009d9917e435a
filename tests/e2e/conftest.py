"""End to end: the real app, the real bridge on the real broker, simulated piles."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from app.mqtt_bridge.worker import BridgeWorker
from simulator.pile import SimulatedPile
from tests.factories import ApiClient, resident
from tests.support.bridge import SHARED_BROKER, configure_mqtt, running_bridge


@dataclass
class Site:
    """Plain ids only: on SQLite, touching an expired ORM object from the test thread
    would open a transaction (and take the write lock the bridge needs)."""

    world: Any
    bridge: BridgeWorker
    pile: SimulatedPile  # world.a's pile, 2 ports
    phone: ApiClient  # a resident bound to world.a's account
    api: ApiClient
    account_id: int
    pile_id: int
    serial: str
    port_codes: dict[int, str]
    community_id: int


@pytest.fixture
def site(app: Flask, world: Any, api: ApiClient) -> Iterator[Site]:
    configure_mqtt(app)
    app.config["START_WAIT_S"] = 8
    phone = resident(api, world.a.account)
    serial = world.a.pile.serial
    ids = {"account_id": world.a.account.id, "pile_id": world.a.pile.id, "serial": serial,
           "port_codes": {p.number: p.public_code for p in world.a.pile.ports},
           "community_id": world.a.community.id}
    db.session.commit()
    # On PostgreSQL the bridge runs as `flask bridge run` does: paho in a child process,
    # two ingest lanes. SQLite has one writer: one lane, paho on a thread.
    deployed = ({"link": "process", "lanes": 2}
                if app.config["SETTINGS"].database_url.startswith("postgresql") else {})
    with running_bridge(app, **deployed) as bridge:
        pile = SimulatedPile(serial, ports=2, broker_url=SHARED_BROKER, meter_interval_s=30,
                             keepalive_s=60, seed=1)
        pile.connect()
        try:
            yield Site(world, bridge, pile, phone, api, **ids)
        finally:
            pile.disconnect()

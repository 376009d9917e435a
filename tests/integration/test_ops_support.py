"""Helpers shared by the operations tests (incidents, notifications, loss, reports).

No tests here. Uplinks are applied through the bridge's own service
(``telemetry.apply_uplinks``: the same batch transaction, handlers and hooks as a real
bridge) without a broker, so each case is fast and deterministic; the end-to-end tests in
``tests/e2e/test_safety.py`` run the same paths over the real broker with simulated piles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from flask import Flask
from sqlalchemy import select

from app import protocol
from app.config import Settings
from app.domain.charging import StartMethod
from app.extensions import db
from app.models import ChargingSession, DownlinkCommand, Incident, Pile, User
from app.models.base import utcnow
from app.services import charging, telemetry, wallet
from app.services.uow import UnitOfWork
from simulator.messages import MessageFactory, reading
from tests.factories import Tenant, World

__all__ = ["PileFeed", "contacts", "incidents_of", "notify_settings", "reading",
           "start_session", "stop_commands"]

WEBHOOK_SECRET = "whsec-test-0123456789abcdef"
SMS_SECRET = "sms-secret-test-42"


def notify_settings(app: Flask, base_url: str, **more: Any) -> Settings:
    """Every channel pointed at ``base_url`` (a capture server)."""
    settings = dataclasses.replace(
        app.config["SETTINGS"],
        notify_webhook_url=f"{base_url}/fire-platform/hook",
        notify_webhook_secret=WEBHOOK_SECRET,
        notify_sms_url=f"{base_url}/sms/send", notify_sms_key_id="key-1",
        notify_sms_secret=SMS_SECRET, notify_sms_sign_name="充电平台",
        notify_sms_template="SMS_ALARM_1",
        notify_wechat_template_id="TPL-ALARM", notify_wechat_page="pages/incident/index",
        wechat_api_base_url=base_url + "/", **more)
    app.config["SETTINGS"] = settings
    return settings


def contacts(world: World) -> dict[str, Any]:
    """Give op_a a phone and an openid, company A a contact phone, the grid user a phone."""
    op = db.session.get(User, world.a.operator.id)
    assert op is not None
    op.phone, op.openid = "13800000001", "openid-op-a"
    world.a.company.contact_phone = "13900000002"
    grid = db.session.get(User, world.grid_user.id)
    assert grid is not None
    grid.phone = "13700000003"
    db.session.commit()
    return {"operator_phone": "13800000001", "operator_openid": "openid-op-a",
            "company_phone": "13900000002", "grid_phone": "13700000003"}


class PileFeed:
    """One pile's uplinks, applied as one bridge batch each call."""

    def __init__(self, serial: str, clock: Any = None) -> None:
        self.serial = serial
        self.factory = MessageFactory(serial, clock=clock) if clock else MessageFactory(serial)
        self.directory = telemetry.PileDirectory()
        self.conn = 0

    def apply(self, *messages: dict[str, Any]) -> telemetry.BatchResult:
        uplinks = []
        for m in messages:
            body = protocol.validate_uplink(m.topic, protocol.encode(m))  # type: ignore[attr-defined]
            uplinks.append(telemetry.Uplink(m.type, self.serial, body))  # type: ignore[attr-defined]
        db.session.commit()
        result = telemetry.apply_uplinks(UnitOfWork(), uplinks, [], self.directory)
        db.session.expire_all()
        return result

    def online(self, energy: int = 1000) -> telemetry.BatchResult:
        self.conn += 1
        ports = [{"port": n, "status": "idle", "energy_wh": energy, "session_id": None,
                  "local_id": None} for n in (1, 2)]
        return self.apply(self.factory.online(conn=self.conn, ports=ports))

    def alarm(self, port: int | None, kind: str, severity: str, *, value: int | None = None,
              threshold: int | None = None, cut_off: bool = False, state: str = "raised",
              session_id: str | None = None) -> telemetry.BatchResult:
        return self.apply(self.factory.alarm(port=port, kind=kind, severity=severity,
                                             cut_off=cut_off, state=state, value=value,
                                             threshold=threshold, session_id=session_id))

    def meter(self, readings: Iterable[dict[str, Any]]) -> telemetry.BatchResult:
        return self.apply(self.factory.meter(list(readings)))


def start_session(tenant: Tenant, port_no: int = 1, *, energy_wh: int = 1000,
                  started_at: datetime | None = None) -> str:
    """A running scan-to-charge session on ``port_no`` (no broker: the ack is written)."""
    wallet.record_cash_topup(UnitOfWork(), tenant.actor, tenant.account.id, amount_fen=1000,
                             request_id=f"ops-hold-{port_no}-{utcnow().timestamp()}")
    pile = db.session.get(Pile, tenant.pile.id)
    assert pile is not None
    port = next(p for p in pile.ports if p.number == port_no)
    pile.online, pile.last_seen_at, port.status = True, utcnow(), "plugged"
    opened = charging.open_session(db.session, pile=pile, port=port, method=StartMethod.APP,
                                   now=utcnow(), account=tenant.account, amount_fen=1000)
    row = opened.session
    row.status, row.started_at = "active", started_at or utcnow()
    row.start_energy_wh = row.last_energy_wh = energy_wh
    port.status = "charging"
    db.session.commit()
    return row.public_id


def stop_commands(pile_id: int) -> list[dict[str, Any]]:
    rows = db.session.execute(select(DownlinkCommand.payload).where(
        DownlinkCommand.pile_id == pile_id, DownlinkCommand.msg_type == "stop")
        .order_by(DownlinkCommand.id)).scalars().all()
    db.session.rollback()
    return list(rows)


def incidents_of(pile_id: int | None = None, **where: Any) -> list[Incident]:
    stmt = select(Incident).order_by(Incident.id)
    if pile_id is not None:
        stmt = stmt.where(Incident.pile_id == pile_id)
    for key, value in where.items():
        stmt = stmt.where(getattr(Incident, key) == value)
    rows = list(db.session.execute(stmt).scalars())
    return rows


def session_of(public_id: str) -> ChargingSession:
    return db.session.execute(select(ChargingSession).where(
        ChargingSession.public_id == public_id)).scalar_one()

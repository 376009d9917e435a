"""Charging: scan to charge, live state (polling and server-sent events), stop, history,
and the communities' tariffs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Response, current_app, stream_with_context
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from app.api.schemas import Blueprint, Fen, Id, StrictSchema
from app.api.security import BEARER, MANAGERS, STAFF, current_actor, requires
from app.domain.access import Role
from app.domain.charging import SessionStatus, StopReason
from app.domain.errors import Conflict, InvalidInput
from app.extensions import db
from app.models import TariffVersion
from app.mqtt_bridge.publisher import nudge_bridge
from app.services import charging, tariffs, visitors
from app.services.uow import UnitOfWork

blp = Blueprint("charging", __name__, url_prefix="/api/v1",
                description="Charging sessions and tariffs")

RESIDENTS = (Role.RESIDENT, Role.VISITOR)
EVERYONE = (*STAFF, *RESIDENTS)
SESSION_ID = r"<string(length=17):public_id>"


class StartArgs(StrictSchema):
    charging_account_id = Id(required=True)
    port_id = Id()
    port_code = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9]{4,16}$"))
    max_amount_fen = Fen()


class SessionSchema(Schema):
    session_id = fields.String(attribute="session.public_id")
    status = fields.String(attribute="session.status")
    method = fields.String(attribute="session.method")
    pile_id = fields.Integer(attribute="session.pile_id")
    port_id = fields.Integer(attribute="session.port_id")
    port_number = fields.Integer(attribute="session.port.number")
    pile_serial = fields.String(attribute="session.pile.serial")
    community_id = fields.Integer(attribute="session.community_id")
    charging_account_id = fields.Integer(attribute="session.charging_account_id",
                                         allow_none=True)
    power_w = fields.Integer(attribute="session.power_w", allow_none=True)
    peak_power_w = fields.Integer(attribute="session.peak_power_w", allow_none=True)
    energy_wh = fields.Integer()
    cost_fen = fields.Integer(attribute="session.cost_fen")
    max_amount_fen = fields.Integer(attribute="session.max_amount_fen")
    max_energy_wh = fields.Integer(attribute="session.max_energy_wh", allow_none=True)
    max_minutes = fields.Integer(attribute="session.max_minutes")
    elapsed_s = fields.Integer()
    remaining_s = fields.Integer(allow_none=True)
    available_fen = fields.Integer(allow_none=True)
    refund_fen = fields.Integer(attribute="session.refund_fen", allow_none=True)
    started_at = fields.DateTime(attribute="session.started_at", allow_none=True)
    ended_at = fields.DateTime(attribute="session.ended_at", allow_none=True)
    stop_reason = fields.String(attribute="session.stop_reason", allow_none=True)
    failure_reason = fields.String(attribute="session.failure_reason", allow_none=True)


class VisitorArgs(StrictSchema):
    port_code = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9]{4,16}$"))
    amount_fen = Fen(required=True)
    max_minutes = fields.Integer(strict=True, validate=validate.Range(min=1, max=720))
    provider = fields.String(load_default="wechat", validate=validate.OneOf(["wechat"]))


class VisitorOrderSchema(Schema):
    out_trade_no = fields.String()
    amount_fen = fields.Integer()
    status = fields.String()
    provider = fields.String()


class VisitorChargeSchema(Schema):
    session_id = fields.String(attribute="session.public_id")
    status = fields.String(attribute="session.status")
    max_amount_fen = fields.Integer(attribute="session.max_amount_fen")
    max_energy_wh = fields.Integer(attribute="session.max_energy_wh", allow_none=True)
    max_minutes = fields.Integer(attribute="session.max_minutes")
    order = fields.Nested(VisitorOrderSchema, attribute="checkout.order")
    pay_params = fields.Dict(attribute="checkout.pay_params", allow_none=True)


class SessionListArgs(StrictSchema):
    charging_account_id = Id(strict=False)
    community_id = Id(strict=False)
    status = fields.String(validate=validate.OneOf([s.value for s in SessionStatus]))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    before_id = Id(strict=False)


class SessionRowSchema(Schema):
    id = fields.Integer()
    session_id = fields.String(attribute="public_id")
    status = fields.String()
    method = fields.String()
    pile_id = fields.Integer()
    port_id = fields.Integer()
    charging_account_id = fields.Integer(allow_none=True)
    start_energy_wh = fields.Integer(allow_none=True)
    end_energy_wh = fields.Integer(allow_none=True)
    cost_fen = fields.Integer()
    refund_fen = fields.Integer(allow_none=True)
    started_at = fields.DateTime(allow_none=True)
    ended_at = fields.DateTime(allow_none=True)
    stop_reason = fields.String(allow_none=True)
    failure_reason = fields.String(allow_none=True)


class TariffArgs(StrictSchema):
    rules = fields.Dict(required=True)
    effective_from = fields.AwareDateTime(load_default=None)


class TariffSchema(Schema):
    id = fields.Integer()
    community_id = fields.Integer()
    version = fields.Integer()
    effective_from = fields.DateTime()
    rules = fields.Dict()
    created_at = fields.DateTime()


def _view(public_id: str) -> charging.LiveView:
    return charging.live_view(UnitOfWork(), current_actor(), public_id)


@blp.route("/charging-sessions")
class Sessions(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(StartArgs)
    @blp.response(201, SessionSchema)
    @requires(*RESIDENTS)
    def post(self, args: dict[str, Any]) -> charging.LiveView:
        """Scan to charge: hold the money, start the port, wait for the pile's ack.

        Answers with the running session and its estimated remaining time, or 409 with
        the reason (pile offline, port busy, pile refused, no answer) and nothing held.
        """
        if ("port_id" in args) == ("port_code" in args):
            raise InvalidInput("give exactly one of port_id and port_code")
        uow = UnitOfWork()
        started = charging.start_app_session(uow, current_actor(), **args)
        public_id = started.public_id
        nudge_bridge(current_app.config["SETTINGS"])  # SQLite; PostgreSQL NOTIFY already did
        outcome = charging.await_start(uow, public_id, current_app.config.get(
            "START_WAIT_S", 12))
        if outcome.status == SessionStatus.FAILED.value:
            raise Conflict("the pile did not start charging",
                           reason=outcome.failure_reason, session_id=public_id)
        return _view(public_id)

    @blp.doc(security=BEARER)
    @blp.arguments(SessionListArgs, location="query")
    @blp.response(200, SessionRowSchema(many=True))
    @requires(*EVERYONE)
    def get(self, args: dict[str, Any]) -> list[Any]:
        """History: yours (all bound accounts, or one), or your communities' for staff."""
        return charging.list_sessions(UnitOfWork(), current_actor(), **args)


@blp.route("/visitor-charges", methods=["POST"])
@blp.doc(security=BEARER)
@blp.arguments(VisitorArgs)
@blp.response(201, VisitorChargeSchema)
@requires(*RESIDENTS)
def visitor_charge(args: dict[str, Any]) -> Any:
    """A visitor's temporary charge: pay this order (``pay_params`` for wx.requestPayment);
    the port starts when the payment arrives; the unused part is refunded at settlement."""
    return visitors.start_visitor_charge(UnitOfWork(), current_actor(), **args)


@blp.route(f"/charging-sessions/{SESSION_ID}")
@blp.doc(security=BEARER)
@blp.response(200, SessionSchema)
@requires(*EVERYONE)
def get_session(public_id: str) -> charging.LiveView:
    """Live state while charging; the receipt once settled."""
    return _view(public_id)


@blp.route(f"/charging-sessions/{SESSION_ID}/stop", methods=["POST"])
@blp.doc(security=BEARER)
@blp.response(202, SessionSchema)
@requires(Role.RESIDENT, Role.VISITOR, Role.PLATFORM_ADMIN, Role.PROPERTY_OPERATOR)
def stop_session(public_id: str) -> charging.LiveView:
    """Stop from the phone (or the console); the pile's end report settles the bill."""
    charging.request_stop(UnitOfWork(), current_actor(), public_id, StopReason.USER)
    nudge_bridge(current_app.config["SETTINGS"])
    return _view(public_id)


@blp.route(f"/charging-sessions/{SESSION_ID}/events")
@blp.doc(security=BEARER, responses={200: {"content": {"text/event-stream": {}}}})
@requires(*EVERYONE)
def session_events(public_id: str) -> Response:
    """Server-sent events: the live state whenever it changes, until the session is over.

    EventSource cannot send headers: pass the token as ``?access_token=``.
    """
    actor = current_actor()
    charging.live_view(UnitOfWork(), actor, public_id)  # 404 before streaming
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    max_seconds = app.config.get("SSE_MAX_SECONDS", 3600)

    def stream() -> Iterator[str]:
        last = None
        deadline = time.monotonic() + max_seconds
        yield "retry: 3000\n\n"
        while time.monotonic() < deadline:
            with app.app_context():
                view = charging.live_view(UnitOfWork(), actor, public_id)
                body = json.dumps(SessionSchema().dump(view), default=str)
                done = view.session.status in (SessionStatus.SETTLED.value,
                                               SessionStatus.FAILED.value)
                db.session.remove()
            if body != last:
                last = body
                yield f"event: session\ndata: {body}\n\n"
            if done:
                yield "event: end\ndata: {}\n\n"
                return
            time.sleep(1)

    return Response(stream_with_context(stream()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@blp.route("/communities/<int:community_id>/tariffs")
class CommunityTariffs(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, TariffSchema(many=True))
    @requires(*STAFF)
    def get(self, community_id: int) -> list[TariffVersion]:
        """Every version, newest first (versions are never edited)."""
        return tariffs.list_versions(UnitOfWork(), current_actor(), community_id)

    @blp.doc(security=BEARER)
    @blp.arguments(TariffArgs)
    @blp.response(201, TariffSchema)
    @requires(*MANAGERS)
    def post(self, args: dict[str, Any], community_id: int) -> TariffVersion:
        """A new tariff version, in force from ``effective_from`` (default: now)."""
        return tariffs.set_tariff(UnitOfWork(), current_actor(), community_id, args["rules"],
                                  args["effective_from"])

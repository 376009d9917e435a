"""Operations: incidents, live monitoring (overview and server-sent events), pile history,
and the theft and loss check."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import Response, current_app, stream_with_context
from flask.views import MethodView
from marshmallow import Schema, fields, validate, validates_schema
from marshmallow import ValidationError as MarshmallowValidationError
from webargs.fields import DelimitedList

from app.api.schemas import Blueprint, Id, StrictSchema
from app.api.security import BEARER, MANAGERS, STAFF, current_actor, requires
from app.domain.errors import InvalidInput
from app.extensions import db
from app.models import Incident
from app.models.base import utcnow
from app.models.operations import INCIDENT_CATEGORIES, INCIDENT_KINDS, INCIDENT_STATES, SEVERITIES
from app.notify import dispatcher as _dispatcher  # noqa: F401  (kicks after commits)
from app.services import access, incidents, loss, monitoring
from app.services.uow import UnitOfWork

blp = Blueprint("operations", __name__, url_prefix="/api/v1",
                description="Incidents, live monitoring, pile history, theft and loss")

NOTE = fields.String(validate=validate.Length(max=300), load_default=None, allow_none=True)


# --------------------------------------------------------------------------- incidents


class IncidentSchema(Schema):
    id = fields.Integer()
    category = fields.String()
    kind = fields.String()
    severity = fields.String()
    state = fields.String()
    community_id = fields.Integer()
    pile_id = fields.Integer(allow_none=True)
    pile_serial = fields.Function(lambda i: i.pile.serial if i.pile else None)
    port_id = fields.Integer(allow_none=True)
    port_no = fields.Integer(allow_none=True)
    opened_at = fields.DateTime()
    last_raised_at = fields.DateTime()
    last_cleared_at = fields.DateTime(allow_none=True)
    cleared_by_pile = fields.Function(
        lambda i: i.last_cleared_at is not None and i.last_cleared_at >= i.last_raised_at)
    raised_count = fields.Integer()
    cleared_count = fields.Integer()
    cut_off = fields.Boolean()
    value = fields.Integer(allow_none=True)
    threshold = fields.Integer(allow_none=True)
    reason = fields.String()
    details = fields.Dict()
    session_id = fields.String(attribute="session_ref", allow_none=True)
    stop_scope = fields.String()
    period_start = fields.DateTime(allow_none=True)
    period_end = fields.DateTime(allow_none=True)
    notified_level = fields.Integer()
    next_escalation_at = fields.DateTime(allow_none=True)
    acknowledged_at = fields.DateTime(allow_none=True)
    acknowledged_by_user_id = fields.Integer(allow_none=True)
    acknowledge_note = fields.String(allow_none=True)
    resolved_at = fields.DateTime(allow_none=True)
    resolved_by_user_id = fields.Integer(allow_none=True)
    resolution_note = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class IncidentListArgs(StrictSchema):
    community_id = Id(strict=False)
    pile_id = Id(strict=False)
    state = DelimitedList(fields.String(validate=validate.OneOf(INCIDENT_STATES)))
    severity = DelimitedList(fields.String(validate=validate.OneOf(SEVERITIES)))
    kind = fields.String(validate=validate.OneOf(INCIDENT_KINDS))
    category = fields.String(validate=validate.OneOf(INCIDENT_CATEGORIES))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    before_id = Id(strict=False)


class ActionArgs(StrictSchema):
    note = NOTE


class NotificationSchema(Schema):
    id = fields.Integer()
    level = fields.Integer()
    audience = fields.String()
    reason = fields.String()
    channel = fields.String()
    recipient = fields.Function(lambda n: _mask(n.channel, n.recipient))
    user_id = fields.Integer(allow_none=True)
    status = fields.String()
    attempts = fields.Integer()
    next_attempt_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True)
    last_error = fields.String(allow_none=True)
    created_at = fields.DateTime()


def _mask(channel: str, recipient: str) -> str:
    """Phone numbers and openids are personal data: show enough to recognise them."""
    if channel == "sms" and len(recipient) >= 7:
        return recipient[:3] + "****" + recipient[-4:]
    if channel == "wechat":
        return recipient[:6] + "…"
    return recipient


@blp.route("/incidents")
@blp.doc(security=BEARER)
@blp.arguments(IncidentListArgs, location="query")
@blp.response(200, IncidentSchema(many=True))
@requires(*STAFF)
def list_incidents(args: dict[str, Any]) -> list[Incident]:
    """Incidents of the caller's communities, newest first (the power company: its whole
    tree). Filters: community, pile, state and severity (comma-separated), kind, category."""
    return incidents.list_incidents(UnitOfWork(), current_actor(), **args)


@blp.route("/incidents/<int:incident_id>")
@blp.doc(security=BEARER)
@blp.response(200, IncidentSchema)
@requires(*STAFF)
def get_incident(incident_id: int) -> Incident:
    return incidents.get_incident(UnitOfWork(), current_actor(), incident_id)


@blp.route("/incidents/<int:incident_id>/acknowledge", methods=["POST"])
@blp.doc(security=BEARER)
@blp.arguments(ActionArgs)
@blp.response(200, IncidentSchema)
@requires(*MANAGERS)
def acknowledge_incident(args: dict[str, Any], incident_id: int) -> Incident:
    """open → acknowledged (who and when); stops the escalation. 409 in any other state."""
    return incidents.acknowledge(UnitOfWork(), current_actor(), incident_id, args["note"])


@blp.route("/incidents/<int:incident_id>/resolve", methods=["POST"])
@blp.doc(security=BEARER)
@blp.arguments(ActionArgs)
@blp.response(200, IncidentSchema)
@requires(*MANAGERS)
def resolve_incident(args: dict[str, Any], incident_id: int) -> Incident:
    """acknowledged → resolved (who and when). 409 in any other state."""
    return incidents.resolve(UnitOfWork(), current_actor(), incident_id, args["note"])


@blp.route("/incidents/<int:incident_id>/notifications")
@blp.doc(security=BEARER)
@blp.response(200, NotificationSchema(many=True))
@requires(*STAFF)
def incident_notifications(incident_id: int) -> list[Any]:
    """Who was told, how, when, and whether it arrived."""
    return incidents.list_notifications(UnitOfWork(), current_actor(), incident_id)


# --------------------------------------------------------------------------- monitoring


class MonitoringArgs(StrictSchema):
    community_id = Id(strict=False)


class EventArgs(MonitoringArgs):
    access_token = fields.String()  # EventSource cannot send headers (read by flask-jwt)


class OverviewSchema(Schema):
    generated_at = fields.DateTime()
    communities = fields.List(fields.Dict())
    totals = fields.Dict()


def _overview(community_id: int | None) -> dict[str, Any]:
    actor = current_actor()
    uow = UnitOfWork()
    if community_id is not None:
        access.get_community(uow.session, actor, community_id)
    rows = monitoring.overview(uow, actor, community_id)
    return {"generated_at": utcnow(), "communities": [r.as_dict() for r in rows],
            "totals": monitoring.totals(rows)}


@blp.route("/monitoring/overview")
@blp.doc(security=BEARER)
@blp.arguments(MonitoringArgs, location="query")
@blp.response(200, OverviewSchema)
@requires(*STAFF)
def monitoring_overview(args: dict[str, Any]) -> dict[str, Any]:
    """Per community: piles online/offline, ports by status, live power (W), sessions in
    progress, incidents not resolved by severity; and the totals."""
    return _overview(args.get("community_id"))


@blp.route("/monitoring/events")
@blp.doc(security=BEARER, responses={200: {"content": {"text/event-stream": {}}}})
@blp.arguments(EventArgs, location="query")
@requires(*STAFF)
def monitoring_events(args: dict[str, Any]) -> Response:
    """Server-sent events: ``overview`` (the overview, whenever it changes) and ``incident``
    (each incident opened or changed after the stream began). Pass the token as
    ``?access_token=``."""
    actor = current_actor()
    community_id = args.get("community_id")
    first = _overview(community_id)  # 404 before streaming
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    max_seconds = app.config.get("SSE_MAX_SECONDS", 3600)
    poll_s = app.config.get("MONITORING_POLL_S", 1.0)

    def stream() -> Iterator[str]:
        yield "retry: 3000\n\n"
        body = json.dumps(OverviewSchema().dump(first)["communities"], default=str)
        last_body = body
        yield f"event: overview\ndata: {json.dumps(OverviewSchema().dump(first), default=str)}\n\n"
        since = first["generated_at"]
        sent: dict[int, Any] = {}
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            time.sleep(poll_s)
            with app.app_context():
                uow = UnitOfWork()
                rows = monitoring.overview(uow, actor, community_id)
                changed = monitoring.changed_incidents(uow, actor, since, community_id)
                fresh = [i for i in changed if sent.get(i.id) != i.updated_at]
                incident_data = [json.dumps(IncidentSchema().dump(i), default=str)
                                 for i in fresh]
                for i in fresh:
                    sent[i.id] = i.updated_at
                    since = max(since, i.updated_at)
                snapshot = {"generated_at": utcnow(),
                            "communities": [r.as_dict() for r in rows],
                            "totals": monitoring.totals(rows)}
                db.session.remove()
            for data in incident_data:
                yield f"event: incident\ndata: {data}\n\n"
            body = json.dumps(snapshot["communities"], default=str)
            if body != last_body:
                last_body = body
                yield (f"event: overview\ndata: "
                       f"{json.dumps(OverviewSchema().dump(snapshot), default=str)}\n\n")
        yield "event: end\ndata: {}\n\n"

    return Response(stream_with_context(stream()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# --------------------------------------------------------------------------- pile history


class HistoryArgs(StrictSchema):
    first = fields.Date(data_key="from")
    last = fields.Date(data_key="to")


class PileEventSchema(Schema):
    at = fields.DateTime()
    kind = fields.String()
    port_id = fields.Integer(allow_none=True)
    detail = fields.Dict()


class AlarmSchema(Schema):
    at = fields.DateTime()
    received_at = fields.DateTime()
    port_id = fields.Integer(allow_none=True)
    kind = fields.String()
    severity = fields.String()
    state = fields.String()
    value = fields.Integer(allow_none=True)
    threshold = fields.Integer(allow_none=True)
    cut_off = fields.Boolean()
    session_id = fields.String(attribute="session_ref", allow_none=True)


class HistorySessionSchema(Schema):
    session_id = fields.String(attribute="public_id")
    port_id = fields.Integer()
    method = fields.String()
    status = fields.String()
    started_at = fields.DateTime(allow_none=True)
    ended_at = fields.DateTime(allow_none=True)
    energy_wh = fields.Function(lambda s: max(0, (s.end_energy_wh or s.last_energy_wh or 0)
                                              - s.start_energy_wh)
                                if s.start_energy_wh is not None else None)
    cost_fen = fields.Integer()
    stop_reason = fields.String(allow_none=True)


class PileHistorySchema(Schema):
    pile_id = fields.Integer(attribute="pile.id")
    serial = fields.String(attribute="pile.serial")
    online = fields.Boolean(attribute="pile.online")
    first = fields.Date(data_key="from", attribute="first_day")
    last = fields.Date(data_key="to", attribute="last_day")
    status_changes = fields.List(fields.Nested(PileEventSchema))
    alarms = fields.List(fields.Nested(AlarmSchema))
    incidents = fields.List(fields.Nested(IncidentSchema))
    sessions = fields.List(fields.Nested(HistorySessionSchema))
    energy_per_day = fields.List(fields.Dict())


@blp.route("/piles/<int:pile_id>/history")
@blp.doc(security=BEARER)
@blp.arguments(HistoryArgs, location="query")
@blp.response(200, PileHistorySchema)
@requires(*STAFF)
def pile_history(args: dict[str, Any], pile_id: int) -> monitoring.PileHistory:
    """Status changes, alarms, incidents, sessions and energy per local day (default: the
    last 7 days; at most 92)."""
    return monitoring.pile_history(UnitOfWork(), current_actor(), pile_id,
                                   args.get("first"), args.get("last"))


# --------------------------------------------------------------------------- loss


class LossSeriesArgs(StrictSchema):
    first = fields.Date(data_key="from")
    last = fields.Date(data_key="to")


class LossSeriesSchema(Schema):
    community_id = fields.Integer()
    first = fields.String(data_key="from")
    last = fields.String(data_key="to")
    days = fields.List(fields.Dict())
    total = fields.Dict()


class LossCheckSchema(Schema):
    id = fields.Integer()
    community_id = fields.Integer()
    kind = fields.String()
    period_start = fields.DateTime()
    period_end = fields.DateTime()
    master_wh = fields.Integer()
    sockets_wh = fields.Integer()
    loss_wh = fields.Integer()
    loss_per_mille = fields.Integer(allow_none=True)
    master_complete = fields.Boolean()
    master_span_s = fields.Integer(allow_none=True)
    ports = fields.Integer()
    verdicts = fields.Function(lambda c: c.verdicts.split(",") if c.verdicts else [])
    reason = fields.String()
    incident_id = fields.Integer(allow_none=True)
    checked_at = fields.DateTime()


class LossCheckArgs(StrictSchema):
    day = fields.Date()
    start = fields.AwareDateTime()
    end = fields.AwareDateTime()

    @validates_schema
    def _one_period(self, data: dict[str, Any], **_kw: Any) -> None:
        if ("day" in data) == ("start" in data or "end" in data):
            raise MarshmallowValidationError("give either day, or start and end")
        if "day" not in data and not ("start" in data and "end" in data):
            raise MarshmallowValidationError("give both start and end")


@blp.route("/communities/<int:community_id>/loss")
@blp.doc(security=BEARER)
@blp.arguments(LossSeriesArgs, location="query")
@blp.response(200, LossSeriesSchema)
@requires(*STAFF)
def loss_series(args: dict[str, Any], community_id: int) -> dict[str, Any]:
    """Master meter against the sum of the sockets per local day, computed now from the
    readings (nothing stored): energies, loss, loss ratio (‰) and the verdict each day gets.
    Default: the 14 days up to yesterday."""
    uow = UnitOfWork()
    actor = current_actor()
    last = args.get("last")
    if last is None:
        community = access.get_community(uow.session, actor, community_id)
        last = utcnow().astimezone(ZoneInfo(community.timezone)).date() - timedelta(days=1)
    first: date = args.get("first") or last - timedelta(days=13)
    community, rows, whole = loss.daily_figures(uow, actor, community_id, first, last)
    return {"community_id": community.id, "first": first.isoformat(),
            "last": last.isoformat(), "days": [r.as_dict() for r in rows],
            "total": {"master_wh": whole.master_wh, "sockets_wh": whole.sockets_wh,
                      "loss_wh": whole.loss_wh, "loss_per_mille": whole.per_mille,
                      "master_complete": whole.master_complete}}


@blp.route("/communities/<int:community_id>/loss-checks")
class LossChecks(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, LossCheckSchema(many=True))
    @requires(*STAFF)
    def get(self, community_id: int) -> list[Any]:
        """Stored checks (the daily job's and on-demand ones), newest period first."""
        return loss.list_checks(UnitOfWork(), current_actor(), community_id)

    @blp.doc(security=BEARER)
    @blp.arguments(LossCheckArgs)
    @blp.response(201, LossCheckSchema)
    @requires(*MANAGERS)
    def post(self, args: dict[str, Any], community_id: int) -> Any:
        """Check one period now (``day``: a local calendar day; or ``start``/``end``), store
        the figures and open a loss incident if they warrant one."""
        uow = UnitOfWork()
        actor = current_actor()
        if "day" in args:
            community = access.get_community(uow.session, actor, community_id, manage=True)
            period = loss.day_period(args["day"], community.timezone)
            start, end = period.start, period.end
            uow.session.rollback()
        else:
            start, end = args["start"], args["end"]
        if end <= start:
            raise InvalidInput("end must be after start", field="end")
        return loss.check_period(uow, actor, community_id, start, end).check

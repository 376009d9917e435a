"""Reports: revenue, energy, sessions, utilisation, top-ups and refunds per community per
day and per month (JSON for charts, CSV, XLSX), and the monthly data set."""

from __future__ import annotations

from typing import Any

from flask import Response
from marshmallow import Schema, fields, validate

from app.api.schemas import Blueprint, Id, StrictSchema
from app.api.security import BEARER, STAFF, current_actor, requires
from app.services import reports
from app.services.uow import UnitOfWork

blp = Blueprint("reports", __name__, url_prefix="/api/v1",
                description="Reports and exports")

FORMAT = fields.String(load_default="json", validate=validate.OneOf(["json", "csv", "xlsx"]))
MONTH = validate.Regexp(r"^20[0-9]{2}-(0[1-9]|1[0-2])$", error="a month is YYYY-MM")


class DailyArgs(StrictSchema):
    first = fields.Date(data_key="from", required=True)
    last = fields.Date(data_key="to", required=True)
    community_id = Id(strict=False)
    format = FORMAT


class MonthlyArgs(StrictSchema):
    first = fields.String(data_key="from", required=True, validate=MONTH)
    last = fields.String(data_key="to", required=True, validate=MONTH)
    community_id = Id(strict=False)
    format = FORMAT


class DatasetArgs(StrictSchema):
    format = FORMAT


class ReportSchema(Schema):
    granularity = fields.String()
    first = fields.String(data_key="from")
    last = fields.String(data_key="to")
    rows = fields.List(fields.Dict())
    totals = fields.Dict()
    chart = fields.Dict()


class DatasetSchema(Schema):
    community_id = fields.Integer()
    community = fields.String()
    month = fields.String()
    period_start = fields.String()
    period_end = fields.String()
    users = fields.List(fields.Dict())
    ports = fields.List(fields.Dict())
    master_meter = fields.Dict()


def _download(body: bytes, name: str, fmt: str) -> Response:
    mimetype = "text/csv; charset=utf-8" if fmt == "csv" else reports.XLSX_MIMETYPE
    return Response(body, mimetype=mimetype,
                    headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'})


def _report(report: reports.Report, fmt: str, name: str) -> Any:
    if fmt == "json":
        return {**report.as_dict(), "first": report.first, "last": report.last}
    body = reports.report_csv(report) if fmt == "csv" else reports.report_xlsx(report)
    return _download(body, name, fmt)


@blp.route("/reports/daily")
@blp.doc(security=BEARER)
@blp.arguments(DailyArgs, location="query")
@blp.response(200, ReportSchema)
@requires(*STAFF)
def daily(args: dict[str, Any]) -> Any:
    """One row per community (the caller's, or ``community_id``) per local day, at most 366
    days; ``chart`` has the series summed over the communities. ``format=csv|xlsx``
    downloads the rows."""
    report = reports.daily_report(UnitOfWork(), current_actor(), args["first"], args["last"],
                                  community_id=args.get("community_id"))
    return _report(report, args["format"], f"daily-{report.first}-{report.last}")


@blp.route("/reports/monthly")
@blp.doc(security=BEARER)
@blp.arguments(MonthlyArgs, location="query")
@blp.response(200, ReportSchema)
@requires(*STAFF)
def monthly(args: dict[str, Any]) -> Any:
    """One row per community per month (``from``/``to`` = YYYY-MM, at most 24 months)."""
    report = reports.monthly_report(UnitOfWork(), current_actor(), args["first"],
                                    args["last"], community_id=args.get("community_id"))
    return _report(report, args["format"], f"monthly-{report.first}-{report.last}")


@blp.route("/communities/<int:community_id>/reports/<string:month>")
@blp.doc(security=BEARER)
@blp.arguments(DatasetArgs, location="query")
@blp.response(200, DatasetSchema)
@requires(*STAFF)
def dataset(args: dict[str, Any], community_id: int, month: str) -> Any:
    """The community's monthly data set: per charging account, per port (sessions, energy,
    the socket meter's count, utilisation) and the master meter against the sockets."""
    data = reports.monthly_dataset(UnitOfWork(), current_actor(), community_id, month)
    if args["format"] == "json":
        return data.as_dict()
    body = (reports.dataset_csv(data) if args["format"] == "csv"
            else reports.dataset_xlsx(data))
    return _download(body, f"community-{data.community_id}-{data.month}", args["format"])

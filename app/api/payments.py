"""Payments: top-up orders, provider notifications, refunds, reconciliation, settlement.

The two notification endpoints take no JWT: the provider's signature is the credential.
They verify with ``app.payments`` (WeChat over the RAW body, Alipay over the posted form),
hand the verified event to ONE service that stores and applies it in one transaction, and
reply exactly as each provider expects (WeChat: 204 / 4xx-5xx ``{"code": "FAIL"}``;
Alipay: the literal ``success`` / ``fail``).
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from flask import Response, request
from flask_smorest.fields import Upload
from marshmallow import Schema, fields, validate

from app.api.accounts import TopupResultSchema
from app.api.errors import error_response
from app.api.schemas import Blueprint, Fen, Id, ListArgs, StrictSchema
from app.api.security import BEARER, MANAGERS, STAFF, current_actor, requires
from app.domain.access import Role
from app.domain.errors import ConfigurationError, DomainError
from app.models import PaymentOrder, ReconciliationItem, Refund
from app.payments import alipay as alipay_replies
from app.payments import wechat_v3 as wechat_replies
from app.payments.errors import (
    NotificationMalformed,
    PaymentError,
    ProviderMismatch,
    SignatureInvalid,
    StaleNotification,
)
from app.services import payments, payments_reconciliation, payments_refunds
from app.services import payments_settlement as settlement
from app.services.payments_common import PaymentProviderRejected, PaymentProviderUnavailable
from app.services.payments_providers import alipay_client, wechat_client
from app.services.uow import UnitOfWork

log = logging.getLogger(__name__)

blp = Blueprint("payments", __name__, url_prefix="/api/v1",
                description="Payments: top-ups, notifications, refunds, reconciliation")

PAYERS = (Role.RESIDENT, Role.VISITOR)
OUT_NO = validate.Regexp(r"^[0-9A-Za-z_]{6,32}$", error="6..32 of [0-9A-Za-z_]")
REQUEST_ID = validate.Regexp(r"^[A-Za-z0-9_-]{8,64}$", error="8..64 of [A-Za-z0-9_-]")


@blp.app_errorhandler(PaymentProviderUnavailable)
def _provider_unavailable(exc: DomainError) -> tuple[Response, int]:
    return error_response(503, exc.code, exc.message, exc.details)


@blp.app_errorhandler(PaymentProviderRejected)
def _provider_rejected(exc: DomainError) -> tuple[Response, int]:
    return error_response(502, exc.code, exc.message, exc.details)


# --------------------------------------------------------------------------- schemas


class OrderSchema(Schema):
    id = fields.Integer()
    out_trade_no = fields.String()
    provider = fields.String()
    trade_type = fields.String()
    purpose = fields.String()
    charging_account_id = fields.Integer()
    amount_fen = fields.Integer()
    description = fields.String()
    status = fields.String()
    provider_transaction_id = fields.String(allow_none=True)
    expires_at = fields.DateTime()
    paid_at = fields.DateTime(allow_none=True)
    closed_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class CheckoutSchema(Schema):
    order = fields.Nested(OrderSchema)
    pay_params = fields.Dict(keys=fields.String(), values=fields.String(), allow_none=True)
    trade_no = fields.String(allow_none=True)
    qr_code = fields.String(allow_none=True)


class TopupArgs(StrictSchema):
    charging_account_id = Id(required=True)
    amount_fen = Fen(required=True)


class AlipayTopupArgs(TopupArgs):
    buyer_id = fields.String(validate=validate.Regexp(r"^2088[0-9]{12}$"))
    buyer_open_id = fields.String(validate=validate.Regexp(r"^[0-9A-Za-z_-]{8,64}$"))


class OrderListArgs(ListArgs):
    charging_account_id = Id(strict=False)
    status = fields.String(validate=validate.OneOf(["created", "paid", "closed", "failed"]))
    provider = fields.String(validate=validate.OneOf(["wechat", "alipay"]))


class RefundSchema(Schema):
    id = fields.Integer()
    out_refund_no = fields.String()
    order_id = fields.Integer()
    out_trade_no = fields.Method("_out_trade_no")
    charging_account_id = fields.Integer()
    provider = fields.String()
    kind = fields.String()
    amount_fen = fields.Integer()
    reason = fields.String()
    status = fields.String()
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)

    def _out_trade_no(self, refund: Refund) -> str | None:
        order = UnitOfWork().session.get(PaymentOrder, refund.order_id)
        return order.out_trade_no if order else None


class WalletRefundArgs(StrictSchema):
    amount_fen = Fen(required=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=80))
    request_id = fields.String(required=True, validate=REQUEST_ID)


class CashRefundArgs(StrictSchema):
    amount_fen = Fen(required=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=200))
    request_id = fields.String(required=True, validate=REQUEST_ID)


class BillImportArgs(StrictSchema):
    provider = fields.String(required=True, validate=validate.OneOf(["wechat", "alipay"]))
    bill_date = fields.Date(required=True)


class BillFileArgs(Schema):
    file = Upload()


class BillImportForm(Schema):
    """The whole multipart body, for the OpenAPI document (form and file are parsed apart)."""

    provider = fields.String(required=True, validate=validate.OneOf(["wechat", "alipay"]))
    bill_date = fields.Date(required=True)
    file = Upload(metadata={"description": "the bill; omit it to fetch from the provider"})


class RunSchema(Schema):
    id = fields.Integer(attribute="run.id")
    provider = fields.String(attribute="run.provider")
    bill_date = fields.Date(attribute="run.bill_date")
    source = fields.String(attribute="run.source")
    bill_rows = fields.Integer(attribute="run.bill_rows")
    file_sha256 = fields.String(attribute="run.file_sha256")
    created_at = fields.DateTime(attribute="run.created_at")
    mismatch_count = fields.Integer(attribute="visible_mismatches")


class RunListArgs(ListArgs):
    provider = fields.String(validate=validate.OneOf(["wechat", "alipay"]))


class ItemSchema(Schema):
    id = fields.Integer()
    kind = fields.String()
    record_kind = fields.String()
    reference = fields.String()
    out_trade_no = fields.String()
    property_company_id = fields.Integer(allow_none=True)
    our_amount_fen = fields.Integer(allow_none=True)
    their_amount_fen = fields.Integer(allow_none=True)
    our_status = fields.String(allow_none=True)
    their_status = fields.String(allow_none=True)
    provider_trade_no = fields.String(allow_none=True)
    detail = fields.String()


class ItemListArgs(StrictSchema):
    kind = fields.String(validate=validate.OneOf(
        ["missing_here", "missing_there", "amount_differs", "status_differs"]))
    limit = fields.Integer(load_default=200, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1_000_000))


class SettlementArgs(StrictSchema):
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv", "xlsx"]))


class MeterLineSchema(Schema):
    community_id = fields.Integer()
    community_name = fields.String()
    meter_serial = fields.String()
    first_read_at = fields.DateTime()
    last_read_at = fields.DateTime()
    first_wh = fields.Integer()
    last_wh = fields.Integer()
    energy_wh = fields.Integer()
    readings = fields.Integer()


class SettlementSchema(Schema):
    property_company_id = fields.Integer()
    property_company_name = fields.String()
    power_company_name = fields.String()
    month = fields.String()
    period_start = fields.DateTime()
    period_end = fields.DateTime()
    topups_by_channel = fields.Dict(keys=fields.String(), values=fields.Integer())
    topups_fen = fields.Integer()
    topup_reversals_fen = fields.Integer()
    refunds_by_channel = fields.Dict(keys=fields.String(), values=fields.Integer())
    refunds_fen = fields.Integer()
    other_collected_by_kind = fields.Dict(keys=fields.String(), values=fields.Integer())
    other_collected_fen = fields.Integer()
    net_collected_fen = fields.Integer()
    revenue_by_kind = fields.Dict(keys=fields.String(), values=fields.Integer())
    revenue_fen = fields.Integer()
    energy_sold_wh = fields.Integer()
    meters = fields.List(fields.Nested(MeterLineSchema))
    master_energy_wh = fields.Integer()
    grid_price_fen_per_kwh = fields.Integer()
    owed_to_power_company_fen = fields.Integer()


# --------------------------------------------------------------------------- top-ups


@blp.route("/payments/wechat/orders", methods=["POST"])
@blp.doc(security=BEARER)
@blp.arguments(TopupArgs)
@blp.response(201, CheckoutSchema)
@requires(*PAYERS)
def wechat_topup(args: dict[str, Any]) -> payments.Checkout:
    """A WeChat Pay JSAPI top-up of a bound account; returns ``wx.requestPayment``'s
    arguments. The amount must be one of the offered ones; the payer is the caller."""
    return payments.start_topup(UnitOfWork(), current_actor(), provider="wechat",
                                trade_type="jsapi", **args)


@blp.route("/payments/alipay/orders", methods=["POST"])
@blp.doc(security=BEARER)
@blp.arguments(AlipayTopupArgs)
@blp.response(201, CheckoutSchema)
@requires(*PAYERS)
def alipay_topup(args: dict[str, Any]) -> payments.Checkout:
    """An Alipay mini-program top-up (alipay.trade.create); returns the ``trade_no`` for
    ``my.tradePay``. Needs the payer's buyer_id (2088…) or buyer_open_id."""
    return payments.start_topup(UnitOfWork(), current_actor(), provider="alipay",
                                trade_type="jsapi", **args)


@blp.route("/payments/alipay/qr-orders", methods=["POST"])
@blp.doc(security=BEARER)
@blp.arguments(TopupArgs)
@blp.response(201, CheckoutSchema)
@requires(*PAYERS, *MANAGERS)
def alipay_qr_topup(args: dict[str, Any]) -> payments.Checkout:
    """An Alipay QR order (alipay.trade.precreate) to top up an account: the payer scans it."""
    return payments.start_topup(UnitOfWork(), current_actor(), provider="alipay",
                                trade_type="qr", **args)


@blp.route("/payments/orders")
@blp.doc(security=BEARER)
@blp.arguments(OrderListArgs, location="query")
@blp.response(200, OrderSchema(many=True))
@requires()
def list_orders(args: dict[str, Any]) -> list[PaymentOrder]:
    """Staff: orders of their tenants. Residents: their own orders and their accounts'."""
    return payments.list_orders(UnitOfWork(), current_actor(), **args)


@blp.route("/payments/orders/<string:out_trade_no>")
@blp.doc(security=BEARER)
@blp.response(200, OrderSchema)
@requires()
def get_order(out_trade_no: str) -> PaymentOrder:
    """An order's status, by our out_trade_no."""
    return payments.get_order(UnitOfWork(), current_actor(), out_trade_no)


# --------------------------------------------------------------------------- notifications


def _reply(reply: tuple[int, bytes, dict[str, str]]) -> Response:
    status, body, headers = reply
    return Response(body, status=status, headers=headers)


@blp.route("/payments/wechat/notify", methods=["POST"])
def wechat_notify() -> Response:
    """WeChat Pay v3 notifications (payments and refunds). No JWT: the Wechatpay-Signature
    over the raw body is verified, the timestamp must be within 5 minutes, the resource is
    decrypted with the APIv3 key. Replies 204 when stored and applied (or a stored copy),
    4xx ``{"code": "FAIL"}`` when refused (nothing moves), 5xx when we failed."""
    body = request.get_data(cache=False)
    try:
        note = wechat_client().verify_notification(dict(request.headers), body)
    except (SignatureInvalid, StaleNotification) as exc:
        log.warning("WeChat notification refused: %s", exc)
        return _reply(wechat_replies.notification_fail(exc.code, 401))
    except (NotificationMalformed, ProviderMismatch) as exc:
        log.warning("WeChat notification refused: %s", exc)
        return _reply(wechat_replies.notification_fail(exc.code, 400))
    except ConfigurationError as exc:
        log.error("WeChat notification while unconfigured: %s", exc.message)
        return _reply(wechat_replies.notification_fail("not configured", 503))
    except PaymentError as exc:
        return _reply(wechat_replies.notification_fail(exc.code, 400))
    try:
        outcome = payments.handle_wechat_notification(UnitOfWork(), note)
    except Exception:
        log.exception("WeChat notification %s could not be applied", note.id)
        return _reply(wechat_replies.notification_fail("internal error", 500))
    if outcome.accepted:
        return _reply(wechat_replies.notification_ack())
    return _reply(wechat_replies.notification_fail(outcome.result, 400))


@blp.route("/payments/alipay/notify", methods=["POST"])
def alipay_notify() -> Response:
    """Alipay async notifications (trade_status_sync, including refund-triggered ones).
    No JWT: RSA2 over the sorted form parameters is verified. Replies ``success`` when
    stored and applied (or a stored copy), ``fail`` otherwise (Alipay retries)."""
    params = request.form.to_dict()
    try:
        note = alipay_client().verify_notification(params)
    except ConfigurationError as exc:
        log.error("Alipay notification while unconfigured: %s", exc.message)
        return _reply(alipay_replies.notification_fail())
    except PaymentError as exc:
        log.warning("Alipay notification refused: %s", exc)
        return _reply(alipay_replies.notification_fail())
    try:
        outcome = payments.handle_alipay_notification(UnitOfWork(), note)
    except Exception:
        log.exception("Alipay notification %s could not be applied", note.notify_id)
        return _reply(alipay_replies.notification_fail())
    if outcome.accepted:
        return _reply(alipay_replies.notification_ack())
    return _reply(alipay_replies.notification_fail())


# --------------------------------------------------------------------------- refunds


@blp.route("/charging-accounts/<int:account_id>/refunds", methods=["POST"])
@blp.doc(security=BEARER)
@blp.arguments(WalletRefundArgs)
@blp.response(201, RefundSchema(many=True))
@requires(*MANAGERS)
def request_refund(args: dict[str, Any], account_id: int) -> list[Refund]:
    """Approve a refund of a resident's wallet back over its WeChat Pay / Alipay payments,
    newest first. Operators approve up to REFUND_APPROVAL_LIMIT_FEN; above, the platform
    admin. Retrying with the same ``request_id`` returns the same refunds."""
    return payments_refunds.request_wallet_refund(UnitOfWork(), current_actor(), account_id,
                                                  **args)


@blp.route("/charging-accounts/<int:account_id>/refunds", methods=["GET"])
@blp.doc(security=BEARER)
@blp.response(200, RefundSchema(many=True))
@requires()
def account_refunds(account_id: int) -> list[Refund]:
    return payments_refunds.list_account_refunds(UnitOfWork(), current_actor(), account_id)


@blp.route("/charging-accounts/<int:account_id>/cash-refunds", methods=["POST"])
@blp.doc(security=BEARER)
@blp.arguments(CashRefundArgs)
@blp.response(201, TopupResultSchema)
@requires(*MANAGERS)
def cash_refund(args: dict[str, Any], account_id: int) -> Any:
    """Cash handed back at the office: a compensating REFUND entry, at most the account's
    cash paid in minus reversals and earlier cash refunds."""
    return payments_refunds.record_cash_refund(UnitOfWork(), current_actor(), account_id,
                                               **args)


@blp.route("/payments/refunds/<int:refund_id>")
@blp.doc(security=BEARER)
@blp.response(200, RefundSchema)
@requires()
def get_refund(refund_id: int) -> Refund:
    return payments_refunds.get_refund(UnitOfWork(), current_actor(), refund_id)


@blp.route("/payments/refunds/<int:refund_id>/retry", methods=["POST"])
@blp.doc(security=BEARER)
@blp.response(200, RefundSchema)
@requires(*MANAGERS)
def retry_refund(refund_id: int) -> Refund:
    """Send a pending refund again (same out_refund_no) or re-check a processing one."""
    return payments_refunds.retry_refund(UnitOfWork(), current_actor(), refund_id)


# --------------------------------------------------------------------------- reconciliation


@blp.route("/payments/reconciliations", methods=["POST"])
@blp.doc(security=BEARER, requestBody={"required": True, "content": {
    "multipart/form-data": {"schema": BillImportForm}}})
@blp.arguments(BillImportArgs, location="form")
@blp.arguments(BillFileArgs, location="files")
@blp.response(201, RunSchema)
@requires(Role.PLATFORM_ADMIN, Role.PROPERTY_OPERATOR)
def import_bill(args: dict[str, Any], files: dict[str, Any]) -> Any:
    """Reconcile a provider's daily trade bill (multipart: ``provider``, ``bill_date`` and
    the ``file``; without a file the bill is fetched from the provider)."""
    upload = files.get("file")
    content = upload.read() if upload is not None else None
    bill_date: date = args["bill_date"]
    return payments_reconciliation.import_bill(UnitOfWork(), current_actor(),
                                               provider=args["provider"], bill_date=bill_date,
                                               content=content)


@blp.route("/payments/reconciliations", methods=["GET"])
@blp.doc(security=BEARER)
@blp.arguments(RunListArgs, location="query")
@blp.response(200, RunSchema(many=True))
@requires(*STAFF)
def list_runs(args: dict[str, Any]) -> Any:
    return payments_reconciliation.list_runs(UnitOfWork(), current_actor(), **args)


@blp.route("/payments/reconciliations/<int:run_id>/items")
@blp.doc(security=BEARER)
@blp.arguments(ItemListArgs, location="query")
@blp.response(200, ItemSchema(many=True))
@requires(*STAFF)
def list_items(args: dict[str, Any], run_id: int) -> list[ReconciliationItem]:
    """A run's mismatches: the platform admin all, the power company its tree (and rows only
    the provider knows), an operator its property company's."""
    return payments_reconciliation.list_items(UnitOfWork(), current_actor(), run_id, **args)


# --------------------------------------------------------------------------- settlement


@blp.route("/property-companies/<int:company_id>/settlements/<string:month>")
@blp.doc(security=BEARER)
@blp.arguments(SettlementArgs, location="query")
@blp.response(200, SettlementSchema)
@requires(*STAFF)
def get_settlement(args: dict[str, Any], company_id: int, month: str) -> Any:
    """A property company's monthly settlement (month = YYYY-MM, Beijing time); ``format``
    csv or xlsx downloads it."""
    result = settlement.monthly_settlement(UnitOfWork(), current_actor(), company_id, month)
    if args["format"] == "json":
        return result
    name = f"settlement-{result.property_company_id}-{result.month}.{args['format']}"
    if args["format"] == "csv":
        body, mimetype = settlement.to_csv(result), "text/csv; charset=utf-8"
    else:
        body = settlement.to_xlsx(result)
        mimetype = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return Response(body, mimetype=mimetype,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})

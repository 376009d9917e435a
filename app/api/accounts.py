"""Charging accounts, bindings, PINs, IC cards, balances and cash top-ups."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from app.api.schemas import PHONE, PIN, Blueprint, Fen, Id, Name, StrictSchema
from app.api.security import BEARER, MANAGERS, current_actor, requires
from app.domain.access import Role
from app.models import ChargingAccount, ICCard, LedgerTransaction
from app.models.people import SUBSCRIPTION_KINDS
from app.services import accounts, subscriptions, wallet
from app.services.ledger import Balance, balance_of
from app.services.uow import UnitOfWork

blp = Blueprint("accounts", __name__, url_prefix="/api/v1",
                description="Charging accounts, cards and wallets")

ANYONE = (Role.PLATFORM_ADMIN, Role.POWER_COMPANY, Role.PROPERTY_OPERATOR, Role.RESIDENT,
          Role.VISITOR)


class BalanceSchema(Schema):
    available_fen = fields.Integer()
    held_fen = fields.Integer()
    total_fen = fields.Integer()


class CardSchema(Schema):
    id = fields.Integer()
    card_uid = fields.String()
    charging_account_id = fields.Integer()
    status = fields.String()


class AccountSchema(Schema):
    id = fields.Integer()
    community_id = fields.Integer()
    community_name = fields.String(attribute="community.name")
    account_no = fields.String()
    holder_name = fields.String()
    kind = fields.String()
    status = fields.String()
    locked_until = fields.DateTime(attribute="pin_locked_until", allow_none=True)
    balance = fields.Method("_balance")
    cards = fields.List(fields.Nested(CardSchema))

    def _balance(self, account: ChargingAccount) -> dict[str, int]:
        return BalanceSchema().dump(balance_of(UnitOfWork().session, account))


class AccountArgs(StrictSchema):
    community_id = Id(required=True)
    account_no = fields.String(required=True, validate=PHONE)
    pin = fields.String(required=True, validate=PIN)
    holder_name = Name(50, load_default="")
    kind = fields.String(validate=validate.OneOf(["resident", "temporary"]),
                         load_default="resident")


class AccountPatch(StrictSchema):
    holder_name = Name(50)
    status = fields.String(validate=validate.OneOf(["active", "blocked"]))
    grace_fen = fields.Integer(strict=True, validate=validate.Range(min=0, max=1000))


class AccountListArgs(StrictSchema):
    community_id = Id(strict=False)


class PinChangeArgs(StrictSchema):
    old_pin = fields.String(required=True, validate=PIN)
    new_pin = fields.String(required=True, validate=PIN)


class PinResetArgs(StrictSchema):
    new_pin = fields.String(required=True, validate=PIN)


class BindArgs(StrictSchema):
    community_id = Id(required=True)
    account_no = fields.String(required=True, validate=PHONE)
    pin = fields.String(required=True, validate=PIN)


class CardArgs(StrictSchema):
    card_uid = fields.String(required=True, validate=validate.Length(min=8, max=24))


class CardPatch(StrictSchema):
    status = fields.String(required=True, validate=validate.OneOf(["active", "blocked"]))


class SubscriptionResultArgs(StrictSchema):
    kind = fields.String(required=True, validate=validate.OneOf(SUBSCRIPTION_KINDS))
    template_id = fields.String(required=True,
                                validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$"))
    result = fields.String(required=True, validate=validate.OneOf(
        ["accept", "reject", "ban", "filter"]), metadata={
        "description": "what wx.requestSubscribeMessage answered for this template"})


class SubscriptionArgs(StrictSchema):
    subscriptions = fields.List(fields.Nested(SubscriptionResultArgs), required=True,
                                validate=validate.Length(min=1, max=10))


class AvailableSubscriptionSchema(Schema):
    template_id = fields.String()
    kind = fields.String()
    available = fields.Integer(metadata={"description": "messages the server may still send"})


class SubscriptionsSchema(Schema):
    subscriptions = fields.List(fields.Nested(AvailableSubscriptionSchema))


class CashTopupArgs(StrictSchema):
    amount_fen = Fen(required=True)
    # The client's idempotency key: a retried or double-clicked top-up credits once.
    request_id = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9_-]{8,64}$"))
    # Stored as the transaction's reference, a 128-character column.
    memo = fields.String(validate=validate.Length(max=128), load_default="")


class ReversalArgs(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=200))


class TopupResultSchema(Schema):
    transaction_id = fields.Integer()
    applied = fields.Boolean()
    balance = fields.Nested(BalanceSchema)


class TransactionSchema(Schema):
    id = fields.Integer()
    kind = fields.String()
    channel = fields.String(allow_none=True)
    amount_fen = fields.Integer()
    reference = fields.String(allow_none=True)
    memo = fields.String()
    created_at = fields.DateTime()


class HistoryArgs(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    before_id = Id(strict=False)


@blp.route("/charging-accounts")
class Accounts(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(AccountListArgs, location="query")
    @blp.response(200, AccountSchema(many=True))
    @requires(*ANYONE)
    def get(self, args: dict[str, Any]) -> list[ChargingAccount]:
        """Staff: accounts in their communities. Residents: the accounts they bound."""
        return accounts.list_accounts(UnitOfWork(), current_actor(), args.get("community_id"))

    @blp.doc(security=BEARER)
    @blp.arguments(AccountArgs)
    @blp.response(201, AccountSchema)
    @requires(Role.PLATFORM_ADMIN, Role.PROPERTY_OPERATOR, Role.RESIDENT)
    def post(self, args: dict[str, Any]) -> ChargingAccount:
        return accounts.create_charging_account(UnitOfWork(), current_actor(), **args)


@blp.route("/charging-accounts/<int:account_id>")
class AccountItem(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, AccountSchema)
    @requires(*ANYONE)
    def get(self, account_id: int) -> ChargingAccount:
        from app.services import access

        return access.get_charging_account(UnitOfWork().session, current_actor(), account_id)

    @blp.doc(security=BEARER)
    @blp.arguments(AccountPatch)
    @blp.response(200, AccountSchema)
    @requires(Role.PLATFORM_ADMIN, Role.PROPERTY_OPERATOR, Role.RESIDENT)
    def patch(self, args: dict[str, Any], account_id: int) -> ChargingAccount:
        return accounts.update_charging_account(UnitOfWork(), current_actor(), account_id, args)

    @blp.doc(security=BEARER)
    @blp.response(204)
    @requires(*MANAGERS)
    def delete(self, account_id: int) -> None:
        """Close an account with a zero balance (its history stays)."""
        accounts.close_charging_account(UnitOfWork(), current_actor(), account_id)


@blp.route("/charging-accounts/<int:account_id>/balance")
@blp.doc(security=BEARER)
@blp.response(200, BalanceSchema)
@requires(*ANYONE)
def account_balance(account_id: int) -> Balance:
    return accounts.account_balance(UnitOfWork(), current_actor(), account_id)


@blp.route("/charging-accounts/<int:account_id>/transactions")
@blp.doc(security=BEARER)
@blp.arguments(HistoryArgs, location="query")
@blp.response(200, TransactionSchema(many=True))
@requires(*ANYONE)
def account_transactions(args: dict[str, Any], account_id: int) -> list[LedgerTransaction]:
    """Top-ups, charges and refunds, newest first; page with ``before_id``."""
    return wallet.account_history(UnitOfWork(), current_actor(), account_id, **args)


@blp.route("/charging-accounts/<int:account_id>/pin", methods=["POST"])
@blp.doc(security=BEARER)
@blp.arguments(PinChangeArgs)
@blp.response(204)
@requires(*ANYONE)
def change_pin(args: dict[str, Any], account_id: int) -> None:
    accounts.change_pin(UnitOfWork(), current_actor(), account_id, **args)


@blp.route("/charging-accounts/<int:account_id>/pin-reset", methods=["POST"])
@blp.doc(security=BEARER)
@blp.arguments(PinResetArgs)
@blp.response(204)
@requires(*MANAGERS)
def reset_pin(args: dict[str, Any], account_id: int) -> None:
    accounts.reset_pin(UnitOfWork(), current_actor(), account_id, **args)


@blp.route("/charging-accounts/<int:account_id>/cash-topups", methods=["POST"])
@blp.doc(security=BEARER)
@blp.arguments(CashTopupArgs)
@blp.response(201, TopupResultSchema)
@requires(*MANAGERS)
def cash_topup(args: dict[str, Any], account_id: int) -> Any:
    return wallet.record_cash_topup(UnitOfWork(), current_actor(), account_id, **args)


@blp.route("/ledger-transactions/<int:transaction_id>/reversal", methods=["POST"])
@blp.doc(security=BEARER)
@blp.arguments(ReversalArgs)
@blp.response(201, TopupResultSchema)
@requires(*MANAGERS)
def reverse_topup(args: dict[str, Any], transaction_id: int) -> Any:
    """Reverse a mistaken cash top-up with a compensating entry."""
    return wallet.reverse_cash_topup(UnitOfWork(), current_actor(), transaction_id, **args)


@blp.route("/charging-accounts/<int:account_id>/cards")
class AccountCards(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, CardSchema(many=True))
    @requires(*ANYONE)
    def get(self, account_id: int) -> list[ICCard]:
        from app.services import access

        return access.get_charging_account(UnitOfWork().session, current_actor(),
                                           account_id).cards

    @blp.doc(security=BEARER)
    @blp.arguments(CardArgs)
    @blp.response(201, CardSchema)
    @requires(*MANAGERS)
    def post(self, args: dict[str, Any], account_id: int) -> ICCard:
        return accounts.add_card(UnitOfWork(), current_actor(), account_id, args["card_uid"])


@blp.route("/cards/<int:card_id>")
class CardItem(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(CardPatch)
    @blp.response(200, CardSchema)
    @requires(*ANYONE)
    def patch(self, args: dict[str, Any], card_id: int) -> ICCard:
        """Block a lost card (anyone who holds the account) or unblock it (office)."""
        return accounts.set_card_status(UnitOfWork(), current_actor(), card_id, args["status"])

    @blp.doc(security=BEARER)
    @blp.response(204)
    @requires(*MANAGERS)
    def delete(self, card_id: int) -> None:
        accounts.remove_card(UnitOfWork(), current_actor(), card_id)


@blp.route("/me/bindings", methods=["POST"])
@blp.doc(security=BEARER)
@blp.arguments(BindArgs)
@blp.response(201, AccountSchema)
@requires(Role.RESIDENT, Role.VISITOR)
def bind(args: dict[str, Any]) -> ChargingAccount:
    """Bind a charging account by proving its number and PIN."""
    return accounts.bind_account(UnitOfWork(), current_actor(), **args)


@blp.route("/me/bindings/<int:account_id>", methods=["DELETE"])
@blp.doc(security=BEARER)
@blp.response(204)
@requires(Role.RESIDENT, Role.VISITOR)
def unbind(account_id: int) -> None:
    accounts.unbind_account(UnitOfWork(), current_actor(), account_id)


@blp.route("/me/subscriptions")
class MySubscriptions(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, SubscriptionsSchema)
    @requires(Role.RESIDENT, Role.VISITOR)
    def get(self) -> dict[str, Any]:
        """The WeChat subscribe messages I accepted and that are not used up yet."""
        return {"subscriptions": subscriptions.available(UnitOfWork(), current_actor())}

    @blp.doc(security=BEARER)
    @blp.arguments(SubscriptionArgs)
    @blp.response(200, SubscriptionsSchema)
    @requires(Role.RESIDENT, Role.VISITOR)
    def post(self, args: dict[str, Any]) -> dict[str, Any]:
        """Record what wx.requestSubscribeMessage answered: each ``accept`` lets the server
        send that template to me once (alarms on my charge today)."""
        return {"subscriptions": subscriptions.record(UnitOfWork(), current_actor(),
                                                      args["subscriptions"])}

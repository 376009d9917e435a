"""Logging in: staff by password, residents through WeChat; tokens and revocation."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_jwt_extended import decode_token, get_jwt, jwt_required
from marshmallow import Schema, fields, validate

from app.api.schemas import PHONE, Blueprint, MessageSchema, Name, StrictSchema
from app.api.security import BEARER, current_actor, issue_tokens, requires, token_expiry
from app.domain.access import Role
from app.domain.errors import AuthenticationFailed
from app.models import User
from app.services import users
from app.services.uow import UnitOfWork

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Log in and out")


class LoginArgs(StrictSchema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=50))
    password = fields.String(required=True, validate=validate.Length(min=1, max=128))


class WeChatLoginArgs(StrictSchema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=128))


class LogoutArgs(StrictSchema):
    refresh_token = fields.String(validate=validate.Length(max=2048))


class TokensSchema(Schema):
    access_token = fields.String()
    refresh_token = fields.String()
    token_type = fields.String()
    role = fields.String()
    user_id = fields.Integer()


class UserSchema(Schema):
    id = fields.Integer()
    role = fields.String()
    username = fields.String(allow_none=True)
    display_name = fields.String()
    phone = fields.String(allow_none=True)
    phone_verified_at = fields.DateTime(allow_none=True, metadata={
        "description": "when WeChat vouched for the phone; null if it was typed"})
    power_company_id = fields.Integer(allow_none=True)
    property_company_id = fields.Integer(allow_none=True)
    is_active = fields.Boolean()


class ProfileArgs(StrictSchema):
    display_name = Name(50)
    phone = fields.String(validate=PHONE)


class PhoneCodeArgs(StrictSchema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=128), metadata={
        "description": "from a button with open-type=\"getPhoneNumber\" (e.detail.code)"})


class PasswordArgs(StrictSchema):
    old_password = fields.String(required=True, validate=validate.Length(min=1, max=128))
    new_password = fields.String(required=True, validate=validate.Length(min=1, max=128))


@blp.route("/login", methods=["POST"])
@blp.arguments(LoginArgs)
@blp.response(200, TokensSchema)
def login(args: dict[str, Any]) -> dict[str, Any]:
    """Staff log in with username and password."""
    return issue_tokens(users.password_login(UnitOfWork(), args["username"], args["password"]))


@blp.route("/wechat-login", methods=["POST"])
@blp.arguments(WeChatLoginArgs)
@blp.response(200, TokensSchema)
def wechat_login(args: dict[str, Any]) -> dict[str, Any]:
    """Mini-program log in: the code from ``wx.login`` (code2Session on the server)."""
    return issue_tokens(users.wechat_login(UnitOfWork(), args["code"]))


@blp.route("/refresh", methods=["POST"])
@blp.doc(security=BEARER)
@blp.response(200, TokensSchema)
@jwt_required(refresh=True)
def refresh() -> dict[str, Any]:
    """Trade a refresh token for a new pair; the old refresh token stops working."""
    claims = get_jwt()
    users.revoke_token(UnitOfWork(), jti=claims["jti"], user_id=int(claims["sub"]),
                       expires_at=token_expiry(claims))
    user = users.active_user(UnitOfWork(), int(claims["sub"]))
    if user is None:
        raise AuthenticationFailed("this user no longer exists or is disabled")
    return issue_tokens(user)


@blp.route("/logout", methods=["POST"])
@blp.doc(security=BEARER)
@blp.arguments(LogoutArgs)
@blp.response(200, MessageSchema)
@jwt_required()
def logout(args: dict[str, Any]) -> dict[str, Any]:
    """Revoke the access token (and the refresh token, if given)."""
    claims = get_jwt()
    users.revoke_token(UnitOfWork(), jti=claims["jti"], user_id=int(claims["sub"]),
                       expires_at=token_expiry(claims))
    if args.get("refresh_token"):
        try:
            other = decode_token(args["refresh_token"], allow_expired=True)
        except Exception as exc:
            raise AuthenticationFailed("the refresh token is not valid") from exc
        if other.get("sub") == claims["sub"]:
            users.revoke_token(UnitOfWork(), jti=other["jti"], user_id=int(other["sub"]),
                               expires_at=token_expiry(other))
    return {"message": "logged out"}


@blp.route("/me")
class Me(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, UserSchema)
    @requires()
    def get(self) -> User:
        """Who am I."""
        user = users.active_user(UnitOfWork(), current_actor().user_id)
        assert user is not None
        return user

    @blp.doc(security=BEARER)
    @blp.arguments(ProfileArgs)
    @blp.response(200, UserSchema)
    @requires()
    def patch(self, args: dict[str, Any]) -> User:
        """Change my display name or phone."""
        return users.update_profile(UnitOfWork(), current_actor(), **args)


@blp.route("/me/phone", methods=["POST"])
@blp.doc(security=BEARER)
@blp.arguments(PhoneCodeArgs)
@blp.response(200, UserSchema)
@requires(Role.RESIDENT, Role.VISITOR)
def bind_phone(args: dict[str, Any]) -> User:
    """Bind my phone number as WeChat knows it: the server trades the getPhoneNumber code
    at WeChat (getuserphonenumber); mainland mobiles only."""
    return users.bind_wechat_phone(UnitOfWork(), current_actor(), args["code"])


@blp.route("/me/password", methods=["POST"])
@blp.doc(security=BEARER)
@blp.arguments(PasswordArgs)
@blp.response(200, MessageSchema)
@requires()
def change_password(args: dict[str, Any]) -> dict[str, Any]:
    """Staff change their own password."""
    users.change_password(UnitOfWork(), current_actor(), **args)
    return {"message": "password changed"}

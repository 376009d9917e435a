"""Staff users: the platform admin creates operators; operators add colleagues."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import fields, validate
from sqlalchemy import select

from app.api.auth import UserSchema
from app.api.schemas import PHONE, Blueprint, Id, Name, StrictSchema
from app.api.security import BEARER, MANAGERS, current_actor, requires
from app.domain.access import Role
from app.domain.errors import NotFound
from app.models import User
from app.services import users
from app.services.uow import UnitOfWork

blp = Blueprint("staff", __name__, url_prefix="/api/v1", description="Staff users")


class StaffArgs(StrictSchema):
    username = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9_.-]{3,50}$"))
    password = fields.String(required=True, validate=validate.Length(min=1, max=128))
    role = fields.String(required=True, validate=validate.OneOf(
        [Role.PLATFORM_ADMIN.value, Role.POWER_COMPANY.value, Role.PROPERTY_OPERATOR.value]))
    display_name = Name(50, load_default="")
    phone = fields.String(validate=PHONE, load_default=None)
    power_company_id = Id(load_default=None)
    property_company_id = Id(load_default=None)


def _visible_staff(user_id: int | None = None) -> list[User]:
    actor = current_actor()
    stmt = select(User).where(User.role.in_(
        [Role.PLATFORM_ADMIN.value, Role.POWER_COMPANY.value, Role.PROPERTY_OPERATOR.value]))
    if actor.role is Role.PROPERTY_OPERATOR:
        stmt = stmt.where(User.property_company_id == actor.property_company_id)
    if user_id is not None:
        stmt = stmt.where(User.id == user_id)
    return list(UnitOfWork().session.execute(stmt.order_by(User.id)).scalars())


@blp.route("/staff")
class Staff(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, UserSchema(many=True))
    @requires(*MANAGERS)
    def get(self) -> list[User]:
        return _visible_staff()

    @blp.doc(security=BEARER)
    @blp.arguments(StaffArgs)
    @blp.response(201, UserSchema)
    @requires(*MANAGERS)
    def post(self, args: dict[str, Any]) -> User:
        return users.create_staff_user(UnitOfWork(), current_actor(), **args)


@blp.route("/staff/<int:user_id>")
@blp.doc(security=BEARER)
@blp.response(200, UserSchema)
@requires(*MANAGERS)
def get_staff(user_id: int) -> User:
    found = _visible_staff(user_id)
    if not found:
        raise NotFound("no such user")
    return found[0]

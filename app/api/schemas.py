"""Schema building blocks shared by the blueprints.

Every input schema rejects unknown fields (marshmallow's RAISE), so a PATCH
carrying ``balance``, ``role`` or ``tenant_id`` is refused, not ignored.
"""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

PHONE = validate.Regexp(r"^1[3-9]\d{9}$", error="must be an 11-digit mobile number")
PIN = validate.Regexp(r"^\d{6}$", error="must be exactly 6 digits")


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


def Name(max_len: int = 100, **kw: object) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=max_len), **kw)  # type: ignore[arg-type]


def Id(**kw: object) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(min=1, max=2**31 - 1), **kw)  # type: ignore[arg-type]


def Fen(**kw: object) -> fields.Integer:
    """Money in integer fen; strings and floats are refused."""
    return fields.Integer(strict=True, validate=validate.Range(min=1, max=10_000_000), **kw)  # type: ignore[arg-type]


class ListArgs(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1_000_000))


class MessageSchema(Schema):
    message = fields.String()

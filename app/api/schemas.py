"""Schema building blocks shared by the blueprints.

Every input schema rejects unknown fields (marshmallow's RAISE), so a PATCH
carrying ``balance``, ``role`` or ``tenant_id`` is refused, not ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import flask
import flask_smorest
from marshmallow import RAISE, Schema, ValidationError, fields, pre_load, validate
from webargs.flaskparser import FlaskParser

PHONE = validate.Regexp(r"^1[3-9]\d{9}$", error="must be an 11-digit mobile number")
PIN = validate.Regexp(r"^\d{6}$", error="must be exactly 6 digits")


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE

    @pre_load
    def _refuse_unstorable_text(self, data: Any, **_kw: Any) -> Any:
        """NUL (PostgreSQL text cannot hold it) and lone surrogates (not UTF-8) are
        invalid input here, not a 500 from the database driver later."""
        if isinstance(data, Mapping):
            bad = [k for k, v in data.items() if isinstance(v, str) and not _storable(v)]
            if bad:
                raise ValidationError({k: ["must be text without NUL or lone surrogates"]
                                       for k in bad})
        return data


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def Name(max_len: int = 100, **kw: object) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=max_len), **kw)  # type: ignore[arg-type]


def Id(*, strict: bool = True, **kw: object) -> fields.Integer:
    """A row id. ``strict=False`` in query strings, where every value arrives as text."""
    return fields.Integer(strict=strict, validate=validate.Range(min=1, max=2**31 - 1), **kw)  # type: ignore[arg-type]


def Fen(**kw: object) -> fields.Integer:
    """Money in integer fen; strings and floats are refused."""
    return fields.Integer(strict=True, validate=validate.Range(min=1, max=10_000_000), **kw)  # type: ignore[arg-type]


class ListArgs(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1_000_000))


class MessageSchema(Schema):
    message = fields.String()


class JSONParser(FlaskParser):
    """webargs' parser, with every unparseable JSON body a 400 (not only syntax errors).

    ``json.loads`` raises RecursionError for deeply nested arrays and ValueError for
    numbers with thousands of digits; webargs only catches JSONDecodeError.
    """

    def _raw_load_json(self, req: flask.Request) -> Any:
        try:
            return super()._raw_load_json(req)
        except json.JSONDecodeError:
            raise
        except (RecursionError, ValueError) as exc:
            raise json.JSONDecodeError(f"cannot parse the body: {exc}", "<body>", 0) from exc


class Blueprint(flask_smorest.Blueprint):
    """The blueprint every API module uses: flask-smorest's, with the parser above."""

    ARGUMENTS_PARSER = JSONParser()

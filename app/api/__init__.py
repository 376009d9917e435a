"""REST adapters. Each handler parses, authorizes, calls ONE service, serializes."""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.routing import IntegerConverter, Map, UnicodeConverter, ValidationError

from app.api import accounts, auth, charging, operations, payments, places, reports, staff
from app.extensions import api

BLUEPRINTS = [auth.blp, places.blp, accounts.blp, staff.blp, charging.blp, payments.blp,
              operations.blp, reports.blp]


class IdConverter(IntegerConverter):
    """``<int:…>`` stops at the INTEGER columns' maximum, so a bigger id is no route (404)
    instead of a database overflow (500). A BIGINT id says ``<int(max=…):…>``."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(map, *args, **kwargs)


class TextConverter(UnicodeConverter):
    """``<string:…>`` never passes NUL on (PostgreSQL text cannot hold it): no route (404),
    not a 500 from the database driver."""

    def to_python(self, value: str) -> str:
        if "\x00" in value:
            raise ValidationError()
        return value


def register_api(app: Flask) -> None:
    # before any rule is added
    app.url_map.converters.update(int=IdConverter, string=TextConverter, default=TextConverter)
    api.init_app(app, spec_kwargs={"components": {"securitySchemes": {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}}})
    for blp in BLUEPRINTS:
        api.register_blueprint(blp)

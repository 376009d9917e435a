"""REST adapters. Each handler parses, authorizes, calls ONE service, serializes."""

from __future__ import annotations

from flask import Flask

from app.api import accounts, auth, places, staff
from app.extensions import api

BLUEPRINTS = [auth.blp, places.blp, accounts.blp, staff.blp]


def register_api(app: Flask) -> None:
    api.init_app(app, spec_kwargs={"components": {"securitySchemes": {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}}})
    for blp in BLUEPRINTS:
        api.register_blueprint(blp)

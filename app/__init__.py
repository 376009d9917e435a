"""The EV-bike charging platform: ``create_app()`` builds the web application.

Importing the package is cheap on purpose: Flask, SQLAlchemy and the
extensions are imported inside ``create_app``, so ``import app.protocol``
(the pile simulator, a vendor's test tool) loads neither.
``from app import create_app`` works as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.engine import Engine

    from app.config import Settings


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """App factory: one Settings object, extensions, API, console, CLI."""
    import logging

    from flask import Flask

    from app.config import load_settings
    from app.extensions import db, jwt, migrate

    settings = settings or load_settings(**overrides)
    app = Flask(__name__, instance_relative_config=False)
    app.config.from_mapping(settings.to_flask())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    from app import models  # noqa: F401  (register the tables)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(_migrations_dir()))
    jwt.init_app(app)
    with app.app_context():
        _tune_engine(db.engine)

    from app.api import register_api
    from app.api.errors import register_error_handlers
    from app.api.security import init_jwt
    from app.cli import register_cli
    from app.console import register_console
    from app.landing import register_landing

    init_jwt(app)
    register_api(app)
    register_console(app)
    register_landing(app)
    register_error_handlers(app)
    register_cli(app)

    @app.teardown_request
    def _end_transaction(exc: BaseException | None) -> None:
        # Services commit their own work; whatever a request only read ends here, so no
        # transaction (on SQLite: the write lock) outlives the request.
        db.session.rollback()

    @app.teardown_appcontext
    def _close(exc: BaseException | None) -> None:
        db.session.remove()

    return app


def _migrations_dir() -> Any:
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "migrations"


def _tune_engine(engine: Engine) -> None:
    """SQLite: foreign keys on, WAL, and BEGIN IMMEDIATE so writers queue, not fail."""
    from sqlalchemy import event

    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

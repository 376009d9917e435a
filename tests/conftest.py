"""Fixtures: each test gets a fresh app and a fresh database, as in Flask's tutorial.

The database is SQLite by default; ``--db postgresql`` (or EVC_TEST_DB=postgresql)
runs the same suite against the real PostgreSQL on loopback. The schema is
always built by the Alembic migrations, never by ``create_all``, so what the
tests exercise is what production gets.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import text

from app import create_app
from app.config import load_settings
from app.extensions import db

PG_ADMIN_URL = os.environ.get("EVC_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")

TEST_SETTINGS: dict[str, Any] = {
    "env": "testing",
    "secret_key": "test-secret-key-" + "x" * 32,
    "jwt_secret_key": "test-jwt-secret-" + "y" * 32,
    # Fast hashing in tests only; production uses scrypt.
    "password_hash_method": "pbkdf2:sha256:1000",
    "wechat_appid": "wxtestappid0000001",
    "wechat_secret": "test-wechat-secret",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--db", choices=["sqlite", "postgresql"],
                     default=os.environ.get("EVC_TEST_DB", "sqlite"),
                     help="database backend for the suite")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--db") == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs --db postgresql")
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def db_backend(pytestconfig: pytest.Config) -> str:
    return str(pytestconfig.getoption("--db"))


def _migrated_app(database_url: str) -> Flask:
    app = create_app(load_settings(environ={}, **TEST_SETTINGS, database_url=database_url))
    with app.app_context():
        upgrade(revision="heads")
        db.engine.dispose()
    return app


@pytest.fixture(scope="session")
def database_template(db_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database: a template file (SQLite) or a per-run database (PostgreSQL)."""
    if db_backend == "sqlite":
        path = tmp_path_factory.mktemp("db") / "template.sqlite3"
        _migrated_app(f"sqlite:///{path}")
        yield str(path)
        return
    name = f"evc_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    _migrated_app(url)
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(db_backend: str, database_template: str, tmp_path: Path) -> str:
    if db_backend == "sqlite":
        target = tmp_path / "test.sqlite3"
        shutil.copyfile(database_template, target)
        return f"sqlite:///{target}"
    return database_template


@pytest.fixture
def app(database_url: str, db_backend: str) -> Iterator[Flask]:
    app = create_app(load_settings(environ={}, **TEST_SETTINGS, database_url=database_url))
    app.config["TESTING"] = True
    if db_backend == "postgresql":
        with app.app_context():
            _truncate_all()
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


def _truncate_all() -> None:
    tables = [t.name for t in db.metadata.sorted_tables]
    db.session.execute(text(
        "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
    db.session.commit()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def world(app: Flask) -> Any:
    from tests.factories import build_world

    return build_world()


@pytest.fixture
def api(client: FlaskClient) -> Any:
    from tests.factories import ApiClient

    return ApiClient(client)


@pytest.fixture
def wechat(app: Flask) -> Iterator[Any]:
    """A local stand-in for WeChat's API (login, phone numbers), wired into the app."""
    import dataclasses

    from tests.support.fake_wechat import running_fake_wechat

    s = app.config["SETTINGS"]
    with running_fake_wechat(s.wechat_appid, s.wechat_secret) as fake:
        app.config["SETTINGS"] = dataclasses.replace(s, wechat_api_base_url=fake.url)
        yield fake

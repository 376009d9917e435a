"""Unit of work: everything a service changes commits together, or nothing does."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from sqlalchemy import Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.domain.errors import Conflict
from app.extensions import db


class UnitOfWork:
    """Wraps one SQLAlchemy session transaction.

    ``after_commit`` callbacks run only once the commit succeeded — the place to
    nudge the outbox sender or publish a live event, never to change data.
    """

    def __init__(self, session: Session | None = None) -> None:
        self.session: Session = session if session is not None else db.session
        self._after_commit: list[Callable[[], Any]] = []

    def __enter__(self) -> UnitOfWork:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.rollback()

    def commit(self) -> None:
        self.session.commit()
        hooks, self._after_commit = self._after_commit, []
        for hook in hooks:
            hook()

    def commit_or_conflict(self, message: str) -> None:
        """Commit; a unique constraint that refuses it becomes a 409 ``Conflict`` saying
        ``message`` (the race another request won), and nothing of this work stays."""
        try:
            self.commit()
        except IntegrityError as exc:
            self.rollback()
            raise Conflict(message) from exc

    def rollback(self) -> None:
        self._after_commit.clear()
        self.session.rollback()

    def after_commit(self, fn: Callable[[], Any]) -> None:
        self._after_commit.append(fn)


def insert_ignoring_duplicates(session: Session, model: Any, index_elements: list[str]) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` in the session's dialect.

    Used to claim idempotency keys: of two concurrent claims, exactly one inserts.
    """
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(model).on_conflict_do_nothing(index_elements=index_elements)

"""Send queued notifications at once, from a thread of whichever process queued them.

The bridge queues notification rows (incidents', and users' own such as charge finished)
inside its batch transaction; after the commit it *kicks* this dispatcher
(``app.services.notifications.QUEUED_HOOKS``), whose thread sends them. The thread is
separate so that a slow or dead notifier never delays the next batch (and with it the next
alarm's stop command). It sends what is due when kicked, exits after a while without kicks
and is started again by the next one. Retries of failed sends are the
jobs process's ``operations.deliver_notifications``; a crash between commit and send loses
nothing, the row is still pending.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask, current_app

from app.extensions import db
from app.notify import build_channels
from app.services import notifications
from app.services.uow import UnitOfWork

log = logging.getLogger(__name__)

IDLE_EXIT_S = 30.0
PAGE = 50


class Dispatcher:
    def __init__(self, app: Flask, *, idle_exit_s: float = IDLE_EXIT_S) -> None:
        self.app = app
        self.idle_exit_s = idle_exit_s
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.sent = 0

    def kick(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="notify-dispatcher",
                                                daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        with self._lock:
            self._stopped = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(timeout=self.idle_exit_s)
            with self._lock:
                if self._stopped or not self._wake.is_set():
                    self._thread = None
                    return
                self._wake.clear()
            self.deliver_once()

    def deliver_once(self) -> int:
        with self.app.app_context():
            try:
                settings = self.app.config["SETTINGS"]
                done = 0
                while True:  # everything due now, a page at a time
                    result = notifications.deliver_due(UnitOfWork(),
                                                       build_channels(settings, db.session),
                                                       limit=PAGE)
                    done += sum(result.values())
                    self.sent += result.get("sent", 0)
                    if sum(result.values()) < PAGE:
                        return done
            except Exception:  # never let the thread die on a database hiccup
                log.exception("notification dispatch failed")
                db.session.rollback()
                return 0
            finally:
                db.session.remove()


def dispatcher_for(app: Flask) -> Dispatcher:
    registry: dict[str, Any] = app.extensions.setdefault("evc", {})
    dispatcher = registry.get("notify_dispatcher")
    if dispatcher is None:
        dispatcher = registry["notify_dispatcher"] = Dispatcher(app)
    return dispatcher  # type: ignore[no-any-return]


def kick_current_app() -> None:
    """Registered in ``notifications.QUEUED_HOOKS``: runs after a commit that queued rows."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if app.config.get("NOTIFY_DISPATCH", True):
        dispatcher_for(app).kick()


if kick_current_app not in notifications.QUEUED_HOOKS:
    notifications.QUEUED_HOOKS.append(kick_current_app)

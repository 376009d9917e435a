"""The jobs process: runs every module's JOBS on its interval, forever.

One job failing is logged and retried at its next turn; it never stops the others.
Jobs claim rows with row locks (SKIP LOCKED on PostgreSQL), so running two job
processes is safe, if wasteful.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask

from app.extensions import db

log = logging.getLogger("evc.jobs")


def all_jobs() -> list[tuple[str, int, Callable[[], Any]]]:
    from app.jobs import charging, operations, payments

    return [*charging.JOBS, *payments.JOBS, *operations.JOBS]


def run_forever(app: Flask, stop: threading.Event | None = None, tick_s: float = 1.0) -> None:
    stop = stop or threading.Event()
    jobs = all_jobs()
    next_run = dict.fromkeys((name for name, _, _ in jobs), 0.0)
    log.info("jobs: %s", ", ".join(f"{n} every {i}s" for n, i, _ in jobs))
    while not stop.is_set():
        now = time.monotonic()
        for name, interval, fn in jobs:
            if now < next_run[name]:
                continue
            next_run[name] = now + interval
            with app.app_context():
                try:
                    result = fn()
                    if result:
                        log.info("job %s: %s", name, result)
                except Exception:
                    log.exception("job %s failed", name)
                    db.session.rollback()
                finally:
                    db.session.remove()
        stop.wait(tick_s)

"""Where the bridge spends its time: the ingest path without the broker, under cProfile.

    python -m bench.ingest_profile                    # PostgreSQL, realistic mix
    python -m bench.ingest_profile --readings 10 --db sqlite
    python -m bench.ingest_profile --no-profile --statements   # time per SQL statement

Builds a fresh database like bench/ingest.py (a charge running on every port unless
``--no-sessions``), pre-generates the same uplinks,
and feeds them to ``BridgeWorker.process`` in batches of ``--batch`` (what the
worker's ingest thread does with what paho delivers; acks are skipped, no
broker). Prints messages/s and the functions with the most cumulative and
internal time.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ingest import (  # noqa: E402
    bench_database,
    build_app,
    cpu_seconds,
    generate,
    reset_telemetry,
    seed_piles,
)


def _backend_pids(app: object) -> list[int]:
    """The PostgreSQL backends connected to the bench database (the worker's among them)."""
    from app.extensions import db

    if db.engine.dialect.name != "postgresql":
        return []
    from sqlalchemy import text

    with app.app_context():  # type: ignore[attr-defined]
        return [int(pid) for pid in db.session.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).scalars()]


def _time_statements() -> dict[str, list[float]]:
    """Wall seconds and calls per SQL statement (its first 90 characters), the telemetry
    COPYs included (they bypass SQLAlchemy); ``clear()`` the result to start afresh."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from app.services import telemetry

    spent: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])

    def add(key: str, seconds: float) -> None:
        spent[key][0] += seconds
        spent[key][1] += 1

    @event.listens_for(Engine, "before_cursor_execute")
    def before(conn: Any, *_: Any) -> None:
        conn.info["bench_t0"] = time.perf_counter()

    @event.listens_for(Engine, "after_cursor_execute")
    def after(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        add(" ".join(statement.split())[:90], time.perf_counter() - conn.info.pop("bench_t0"))

    copy = telemetry.pg_copy

    def timed_copy(session: Any, table: str, *args: Any) -> None:
        t0 = time.perf_counter()
        try:
            copy(session, table, *args)
        finally:
            add(f"COPY {table} (binary)", time.perf_counter() - t0)

    telemetry.pg_copy = timed_copy
    return spent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ingest_profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--piles", type=int, default=500)
    p.add_argument("--readings", type=int, default=None)
    p.add_argument("--batch", type=int, default=200, help="messages per batch")
    p.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--no-profile", action="store_true", help="time only")
    p.add_argument("--statements", action="store_true",
                   help="wall time per SQL statement over the timed batches")
    p.add_argument("--no-sessions", action="store_true",
                   help="readings with power and no session (the incident path)")
    args = p.parse_args(argv)

    with contextlib.ExitStack() as stack:
        if args.db == "postgresql":
            url = stack.enter_context(bench_database())
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            url = f"sqlite:///{tmp}/bench.sqlite3"
        app = build_app(url)
        fleet = seed_piles(app, args.piles, sessions=not args.no_sessions)
        if args.db == "postgresql":
            reset_telemetry(app)
        messages, readings, _ = generate(fleet, args.messages, args.readings, seed=1)

        from app.mqtt_bridge.worker import BridgeWorker, Inbound, settle_garbage_collector

        worker = BridgeWorker(app, worker="profile")
        now = time.monotonic()
        inbound = [Inbound(t, pl, i + 1, 0, 0, now) for i, (t, pl) in enumerate(messages)]
        batches = [inbound[i:i + args.batch] for i in range(0, len(inbound), args.batch)]
        profiler = cProfile.Profile()
        statements = _time_statements() if args.statements else {}
        with app.app_context():
            worker.process(batches[0])  # warm-up: pile directory, statement caches
            statements.clear()
            settle_garbage_collector()  # as run_forever does
            backend = _backend_pids(app)
            pg_cpu0, py_cpu0 = sum(map(cpu_seconds, backend)), time.process_time()
            started = time.perf_counter()
            if not args.no_profile:
                profiler.enable()
            for batch in batches[1:]:
                worker.process(batch)
            profiler.disable()
            elapsed = time.perf_counter() - started
            pg_cpu, py_cpu = sum(map(cpu_seconds, backend)) - pg_cpu0, time.process_time() - py_cpu0
            done = sum(len(b) for b in batches[1:])
            from app.extensions import db

            db.session.remove()
            db.engine.dispose()
        print(f"{done} messages ({readings} readings in all) in {elapsed:.2f} s: "
              f"{done / elapsed:,.0f} msg/s on {args.db}, batches of {args.batch}"
              + ("" if args.no_profile else " (under cProfile: slower than real)"))
        if backend:
            print(f"CPU per message: Python {py_cpu / done * 1e6:,.0f} µs, "
                  f"PostgreSQL backend {pg_cpu / done * 1e6:,.0f} µs "
                  f"(wall {elapsed / done * 1e6:,.0f} µs)")
        print(f"stats: {worker.stats.snapshot()}")
        timed = len(batches) - 1
        for key, (seconds, calls) in sorted(statements.items(), key=lambda kv: -kv[1][0]):
            print(f"{seconds / timed * 1000:7.1f} ms/batch {calls / timed:6.1f}x  {key}")
        if not args.no_profile:
            for key in ("cumulative", "tottime"):
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(args.top)
                print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pile uplinks become stored state here: one batch of messages, one transaction.

The bridge hands over already-validated messages; this module de-duplicates
them through the inbox (pile, boot_id, seq), applies each new one, and writes
rejects for the record. It never commits: ``apply_uplinks`` does, once, so the
bridge can acknowledge the whole batch to the broker after that commit.

Hot path: plain SQLAlchemy Core, no ORM objects. On PostgreSQL the bulk writes
(inbox claims, port meter state, events) are one statement each per batch over
``json_to_recordset`` (all rows in one JSON parameter), meter readings one binary
COPY, and the batch locks its piles in id order first so bridge workers sharing
the load queue instead of deadlocking; on SQLite (one writer at a time anyway)
they are executemany. bench/ingest.py measures it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, or_, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.domain.telemetry import Stamp, is_newer, is_silent, will_applies
from app.models import (
    AlarmEvent,
    Community,
    DownlinkCommand,
    MasterMeterReading,
    MeterReading,
    Pile,
    PileEvent,
    PileInbox,
    Port,
    RejectedUplink,
)
from app.models.base import utcnow
from app.services.uow import UnitOfWork, insert_ignoring_duplicates

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Uplink:
    msg_type: str
    pile_serial: str
    body: Mapping[str, Any]

    @property
    def stamp(self) -> Stamp:
        return Stamp(self.body["boot_id"], self.body["seq"], self.body["ts"])


@dataclass(frozen=True, slots=True)
class Rejected:
    topic: str
    pile_serial: str | None
    reason: str
    message: str
    excerpt: str


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    UNKNOWN_PILE = "unknown_pile"
    FAILED = "failed"  # its handler raised: recorded as a reject, never retried forever


@dataclass(frozen=True, slots=True)
class PileRef:
    id: int
    serial: str
    community_id: int
    ports: Mapping[int, int]  # port number → port id


class PileDirectory:
    """serial → pile and port ids. Piles are registered rarely: cache, reload on a miss."""

    def __init__(self) -> None:
        self._by_serial: dict[str, PileRef] = {}

    def resolve(self, session: Session, serials: Iterable[str]) -> dict[str, PileRef]:
        wanted = set(serials)
        missing = wanted - self._by_serial.keys()
        if missing:
            rows = session.execute(
                select(Pile.id, Pile.serial, Pile.community_id, Port.number, Port.id)
                .join(Port, Port.pile_id == Pile.id)
                .where(Pile.serial.in_(missing))
            ).all()
            found: dict[str, dict[str, Any]] = {}
            for pile_id, serial, community_id, number, port_id in rows:
                entry = found.setdefault(serial, {"id": pile_id, "community_id": community_id,
                                                  "ports": {}})
                entry["ports"][number] = port_id
            for serial, entry in found.items():
                self._by_serial[serial] = PileRef(entry["id"], serial, entry["community_id"],
                                                  entry["ports"])
        return {s: self._by_serial[s] for s in wanted if s in self._by_serial}

    def forget(self, serial: str) -> None:
        self._by_serial.pop(serial, None)


@dataclass(frozen=True, slots=True)
class PendingStatus:
    """A port status waiting to be written with the others of its run of messages."""

    pile: PileRef
    port_no: int
    port_id: int
    status: str
    stamp: Stamp
    event: dict[str, Any] | None  # the event to record if it applies


@dataclass
class BatchContext:
    """What handlers share while one batch is applied."""

    session: Session
    now: datetime
    meter_rows: list[dict[str, Any]] = field(default_factory=list)
    # meter readings that name a session, by session public id: (port id, reading, message)
    session_readings: dict[str, list[tuple[int, Mapping[str, Any], Uplink]]] = field(
        default_factory=dict)
    port_meter_updates: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    touched_piles: set[int] = field(default_factory=set)
    # piles whose heartbeat says "online": one UPDATE per batch in flush() (perf: bench/)
    heartbeat_piles: set[int] = field(default_factory=set)
    # port_status messages not yet written: see queue_port_status / apply_port_statuses
    port_statuses: list[PendingStatus] = field(default_factory=list)
    after_commit: list[Callable[[], Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    # what the worker carries from batch to batch for the batch hooks (their caches)
    carry: dict[str, Any] = field(default_factory=dict)
    nudge: bool = False  # commands were queued: the outbox should run now

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def event(self, pile: PileRef, kind: str, port_no: int | None = None,
              **detail: Any) -> None:
        self.events.append({
            "pile_id": pile.id,
            "port_id": pile.ports.get(port_no) if port_no is not None else None,
            "kind": kind, "at": self.now, "detail": detail,
        })


Handler = Callable[[BatchContext, PileRef, Uplink], None]
BatchHook = Callable[[BatchContext], None]
# Handlers run in registration order: telemetry's own first, then charging's
# (app.services.charging registers its handlers when imported, at the end of this module).
HANDLERS: dict[str, list[Handler]] = {}
# Run once per batch after every message was handled (e.g. update running sessions).
BATCH_HOOKS: list[BatchHook] = []


def handles(msg_type: str) -> Callable[[Handler], Handler]:
    """Register a handler of one uplink type."""

    def register(fn: Handler) -> Handler:
        HANDLERS.setdefault(msg_type, []).append(fn)
        return fn

    return register


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True)
class BatchResult:
    outcomes: list[Outcome]
    counters: dict[str, int]
    nudge: bool = False


def apply_uplinks(
    uow: UnitOfWork,
    uplinks: list[Uplink],
    rejected: list[Rejected],
    directory: PileDirectory,
    carry: dict[str, Any] | None = None,
) -> BatchResult:
    """Apply a batch once and commit; the caller acknowledges the messages afterwards.

    ``carry`` is the worker's memory between batches (hooks fill it only after a
    commit); without it every batch starts from the database alone."""
    with uow:
        ctx = BatchContext(uow.session, utcnow(), carry={} if carry is None else carry)
        outcomes = ingest(ctx, uplinks, directory)
        unknown = [
            Rejected(f"piles/{u.pile_serial}/up/{u.msg_type}", u.pile_serial, "unknown_pile",
                     "no pile is registered with this serial", "")
            for u, o in zip(uplinks, outcomes, strict=True) if o is Outcome.UNKNOWN_PILE
        ]
        record_rejects(ctx, rejected + unknown)
        uow.session.commit()
    for hook in ctx.after_commit:
        try:
            hook()
        except Exception:  # a failed nudge must not undo a committed batch
            log.exception("after-commit hook failed")
    return BatchResult(outcomes, ctx.counters, ctx.nudge)


def ingest(ctx: BatchContext, uplinks: list[Uplink], directory: PileDirectory) -> list[Outcome]:
    session = ctx.session
    piles = directory.resolve(session, {u.pile_serial for u in uplinks})
    outcomes: list[Outcome] = []
    claims: list[dict[str, Any]] = []
    seen: set[tuple[int, str, int]] = set()
    candidates: list[tuple[int, PileRef, tuple[int, str, int]]] = []
    for i, u in enumerate(uplinks):
        pile = piles.get(u.pile_serial)
        if pile is None:
            outcomes.append(Outcome.UNKNOWN_PILE)
            continue
        key = (pile.id, u.body["boot_id"], u.body["seq"])
        outcomes.append(Outcome.DUPLICATE)
        if key in seen:
            continue
        seen.add(key)
        claims.append({"pile_id": key[0], "boot_id": key[1], "seq": key[2],
                       "msg_type": u.msg_type, "received_at": ctx.now})
        candidates.append((i, pile, key))
    if not claims:
        return outcomes
    inserted = _claim_inbox(session, claims)
    for i, pile, key in candidates:
        if key not in inserted:
            continue
        outcomes[i] = Outcome.APPLIED
        uplink = uplinks[i]
        ctx.touched_piles.add(pile.id)
        if ctx.port_statuses and uplink.msg_type not in DEFERS_PORT_STATUS:
            apply_port_statuses(ctx)  # this handler sees the port state message by message
        handlers = HANDLERS.get(uplink.msg_type)
        if not handlers:
            ctx.event(pile, f"unhandled_{uplink.msg_type}")
        for handler in handlers or ():
            handler(ctx, pile, uplink)
    apply_port_statuses(ctx)
    for hook in BATCH_HOOKS:
        hook(ctx)
    ctx.count("applied", sum(1 for o in outcomes if o is Outcome.APPLIED))
    ctx.count("duplicate", sum(1 for o in outcomes if o is Outcome.DUPLICATE))
    flush(ctx)
    if ctx.touched_piles:
        if _is_postgresql(session):
            session.execute(_PG_PILES_SEEN, {"ids": sorted(ctx.touched_piles), "now": ctx.now})
        else:
            session.execute(
                update(Pile).where(Pile.id.in_(ctx.touched_piles)).values(last_seen_at=ctx.now)
            )
    return outcomes


def flush(ctx: BatchContext) -> None:
    """Write what the handlers accumulated so far, in bulk (safe to call repeatedly)."""
    session = ctx.session
    apply_port_statuses(ctx)
    is_pg = _is_postgresql(session)
    if ctx.meter_rows:
        if is_pg:
            pg_copy(session, "meter_readings", _PG_METER_COLUMNS, ctx.meter_rows)
        else:
            session.execute(MeterReading.__table__.insert(), ctx.meter_rows)
    if ctx.port_meter_updates:
        if is_pg:
            _pg_update_port_meters(session, ctx.port_meter_updates)
        else:
            session.execute(_PORT_METER_UPDATE, ctx.port_meter_updates)
    if ctx.events:
        if is_pg:
            _pg_insert_events(session, ctx.events)
        else:
            session.execute(PileEvent.__table__.insert(), ctx.events)
    if ctx.heartbeat_piles:
        if is_pg:
            session.execute(_PG_PILES_ONLINE, {"ids": sorted(ctx.heartbeat_piles)})
        else:
            session.execute(
                update(Pile.__table__)
                .where(Pile.__table__.c.id.in_(sorted(ctx.heartbeat_piles)),
                       Pile.__table__.c.online.is_(False))
                .values(online=True, went_offline_at=None)
            )
    ctx.meter_rows, ctx.port_meter_updates, ctx.events = [], [], []
    ctx.heartbeat_piles = set()


# --- PostgreSQL bulk paths: one statement per batch instead of one per row -----------
#
# The rows travel as ONE JSON text parameter, unpacked by ``json_to_recordset``: orjson
# writes it, PostgreSQL parses it. Passing one array per column instead made psycopg
# adapt (and for text, escape) every element in Python, which cost more than the
# statements themselves (bench/ingest_profile.py). Meter readings, the most rows and
# insert-only, go by binary COPY instead: no JSON or text to parse on either side.
# Id lists are one array parameter (``= ANY``): one prepared statement whatever their
# length, where an IN list is a new statement to parse and plan for every length.


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def pg_rows(rows: Iterable[Mapping[str, Any]]) -> str:
    """The JSON parameter of a ``json_to_recordset(CAST(:rows AS JSON))`` statement.

    orjson writes aware datetimes as RFC 3339 with their offset, which PostgreSQL
    reads back exactly; it is several times the stdlib encoder's speed."""
    return orjson.dumps(list(rows)).decode()


_PG_INBOX_CLAIM = text("""
    INSERT INTO pile_inbox (pile_id, boot_id, seq, msg_type, received_at)
    SELECT u.pile_id, u.boot_id, u.seq, u.msg_type, :received_at
    FROM json_to_recordset(CAST(:rows AS JSON))
         AS u(pile_id BIGINT, boot_id TEXT, seq BIGINT, msg_type TEXT)
    ON CONFLICT (pile_id, boot_id, seq) DO NOTHING
    RETURNING pile_id, boot_id, seq
""")

# NO KEY UPDATE: what an UPDATE of non-key columns takes anyway, and compatible with the
# KEY SHARE locks that foreign-key checks (inbox, events, readings) take on the same rows.
_PG_LOCK_PILES = text("SELECT id FROM piles WHERE id = ANY(CAST(:ids AS BIGINT[])) "
                      "ORDER BY id FOR NO KEY UPDATE")


def _claim_inbox(session: Session, claims: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """Insert the inbox keys; returns those that were new (the others are duplicates).

    On PostgreSQL the batch's piles are first locked in id order: everything the
    handlers update hangs off those piles, so concurrent bridge workers wait for
    each other instead of deadlocking on pile and port rows taken in message order.
    """
    if not _is_postgresql(session):
        stmt = insert_ignoring_duplicates(session, PileInbox, ["pile_id", "boot_id", "seq"])
        return {tuple(row) for row in session.execute(
            stmt.returning(PileInbox.pile_id, PileInbox.boot_id, PileInbox.seq), claims).all()}
    session.execute(_PG_LOCK_PILES, {"ids": sorted({c["pile_id"] for c in claims})})
    rows = session.execute(_PG_INBOX_CLAIM, {
        "rows": pg_rows({"pile_id": c["pile_id"], "boot_id": c["boot_id"], "seq": c["seq"],
                         "msg_type": c["msg_type"]} for c in claims),
        "received_at": claims[0]["received_at"],
    }).all()
    return {tuple(row) for row in rows}


# column → PostgreSQL type of the binary COPY: the table's own types, as COPY BINARY
# converts nothing. psycopg's binary int4 wraps an int out of range instead of failing;
# the protocol schema bounds every reading within these types (tests/unit/test_meter_copy).
_PG_METER_COLUMNS = {
    "port_id": "int4", "measured_at": "timestamptz", "energy_wh": "int8",
    "delta_wh": "int4", "power_w": "int4", "voltage_dv": "int4", "current_ma": "int4",
    "temp_dc": "int4", "session_ref": "text",
}


def pg_copy(session: Session, table: str, columns: Mapping[str, str],
            rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows with one binary ``COPY … FROM STDIN`` in the session's transaction
    (``columns``: two or more, name → PostgreSQL type).

    COPY is not a statement SQLAlchemy can run, so it goes through the session's own
    psycopg connection (the same transaction); its errors are raised as SQLAlchemy's,
    so the bridge still tells "database away, retry the batch" from a bad message.
    """
    import psycopg

    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    values = itemgetter(*columns)  # a row's values as a tuple, in column order
    conn = session.connection().connection.driver_connection
    try:
        with conn.cursor() as cursor, cursor.copy(sql) as copy:
            copy.set_types(list(columns.values()))
            for row in rows:
                copy.write_row(values(row))
    except psycopg.Error as exc:
        raise DBAPIError.instance(sql, None, exc, psycopg.Error) from exc


_PG_EVENTS_INSERT = text("""
    INSERT INTO pile_events (pile_id, port_id, kind, at, detail)
    SELECT v.pile_id, v.port_id, v.kind, v.at, CAST(v.detail AS JSON)
    FROM json_to_recordset(CAST(:rows AS JSON))
         AS v(pile_id INTEGER, port_id INTEGER, kind VARCHAR(30), at TIMESTAMPTZ, detail TEXT)
""")


def _pg_insert_events(session: Session, events: list[dict[str, Any]]) -> None:
    """The events in one statement instead of one INSERT each. ``detail`` is written by
    the encoder the JSON column uses (json.dumps), so the stored text is the same."""
    session.execute(_PG_EVENTS_INSERT, {"rows": pg_rows(
        {**e, "detail": json.dumps(e["detail"])} for e in events)})


_PG_PILES_ONLINE = text("UPDATE piles SET online = true, went_offline_at = NULL "
                        "WHERE id = ANY(CAST(:ids AS INTEGER[])) AND online IS false")
_PG_PILES_SEEN = text("UPDATE piles SET last_seen_at = :now "
                      "WHERE id = ANY(CAST(:ids AS INTEGER[]))")


_PG_PORT_METER_UPDATE = text("""
    UPDATE ports AS p SET energy_wh = v.p_energy, power_w = v.p_power,
        voltage_dv = v.p_voltage, current_ma = v.p_current, temp_dc = v.p_temp,
        meter_boot_id = v.p_boot, meter_seq = v.p_seq, meter_ts = v.p_ts
    FROM json_to_recordset(CAST(:rows AS JSON))
         AS v(p_id BIGINT, p_energy BIGINT, p_power INTEGER, p_voltage INTEGER,
              p_current INTEGER, p_temp INTEGER, p_boot TEXT, p_seq BIGINT, p_ts BIGINT)
    WHERE p.id = v.p_id
      AND (p.meter_boot_id IS NULL
           OR (p.meter_boot_id = v.p_boot AND p.meter_seq < v.p_seq)
           OR (p.meter_boot_id <> v.p_boot AND p.meter_ts < v.p_ts))
""")


def _pg_update_port_meters(session: Session, updates: list[dict[str, Any]]) -> None:
    """The same guarded update as _PORT_METER_UPDATE, for the newest reading of each port.

    UPDATE … FROM applies one source row per target row, so the batch is first
    reduced to its newest reading per port (is_newer, as the SQL guard decides).
    """
    newest: dict[int, dict[str, Any]] = {}
    for row in updates:
        current = newest.get(row["p_id"])
        if current is None or is_newer(Stamp(current["p_boot"], current["p_seq"],
                                             current["p_ts"]),
                                       Stamp(row["p_boot"], row["p_seq"], row["p_ts"])):
            newest[row["p_id"]] = row
    session.execute(_PG_PORT_METER_UPDATE, {"rows": pg_rows(newest.values())})


def record_rejects(ctx: BatchContext, rejected: list[Rejected]) -> None:
    if not rejected:
        return
    ctx.session.execute(RejectedUplink.__table__.insert(), [
        {"topic": r.topic[:200], "pile_serial": (r.pile_serial or None) and r.pile_serial[:64],
         "reason": r.reason[:30], "message": r.message[:300], "excerpt": r.excerpt[:512],
         "received_at": ctx.now}
        for r in rejected
    ])
    ctx.count("rejected", len(rejected))


# --- guarded port updates: never move state backwards ---------------------------------


def _newer(boot_col: Any, seq_col: Any, ts_col: Any) -> Any:
    """SQL twin of app.domain.telemetry.is_newer, for bulk updates."""
    return or_(
        boot_col.is_(None),
        and_(boot_col == bindparam("p_boot"), seq_col < bindparam("p_seq")),
        and_(boot_col != bindparam("p_boot"), ts_col < bindparam("p_ts")),
    )


_PORT_METER_UPDATE = (
    update(Port.__table__)
    .where(Port.__table__.c.id == bindparam("p_id"))
    .where(_newer(Port.__table__.c.meter_boot_id, Port.__table__.c.meter_seq,
                  Port.__table__.c.meter_ts))
    .values(
        energy_wh=bindparam("p_energy"), power_w=bindparam("p_power"),
        voltage_dv=bindparam("p_voltage"), current_ma=bindparam("p_current"),
        temp_dc=bindparam("p_temp"), meter_boot_id=bindparam("p_boot"),
        meter_seq=bindparam("p_seq"), meter_ts=bindparam("p_ts"),
    )
)

_PORT_STATUS_UPDATE = (
    update(Port.__table__)
    .where(Port.__table__.c.id == bindparam("p_id"))
    .where(_newer(Port.__table__.c.status_boot_id, Port.__table__.c.status_seq,
                  Port.__table__.c.status_ts))
    .values(
        status=bindparam("p_status"), status_changed_at=bindparam("p_at"),
        status_boot_id=bindparam("p_boot"), status_seq=bindparam("p_seq"),
        status_ts=bindparam("p_ts"),
    )
)


def set_port_status(ctx: BatchContext, pile: PileRef, port_no: int, status: str,
                    uplink: Uplink) -> bool:
    """Apply a port status if the message is newer than the port's state."""
    port_id = pile.ports.get(port_no)
    if port_id is None:
        ctx.count("unknown_port")
        ctx.event(pile, "unknown_port", port=port_no)
        return False
    s = uplink.stamp
    result = ctx.session.execute(_PORT_STATUS_UPDATE, {
        "p_id": port_id, "p_status": status, "p_at": ctx.now,
        "p_boot": s.boot_id, "p_seq": s.seq, "p_ts": s.ts_ms,
    })
    return bool(result.rowcount)  # type: ignore[attr-defined]


# Message types whose handlers neither read nor write port status: a run of them lets
# the port_status messages among them be written together (one SELECT, one UPDATE).
DEFERS_PORT_STATUS = frozenset({"port_status", "meter", "heartbeat"})

_PG_PORT_STATUS_STATE = text("SELECT id, status_boot_id, status_seq, status_ts FROM ports "
                             "WHERE id = ANY(CAST(:ids AS BIGINT[]))")
_PG_PORT_STATUS_UPDATE = text("""
    UPDATE ports AS p SET status = v.p_status, status_changed_at = :p_at,
        status_boot_id = v.p_boot, status_seq = v.p_seq, status_ts = v.p_ts
    FROM json_to_recordset(CAST(:rows AS JSON))
         AS v(p_id BIGINT, p_status TEXT, p_boot TEXT, p_seq BIGINT, p_ts BIGINT)
    WHERE p.id = v.p_id
      AND (p.status_boot_id IS NULL
           OR (p.status_boot_id = v.p_boot AND p.status_seq < v.p_seq)
           OR (p.status_boot_id <> v.p_boot AND p.status_ts < v.p_ts))
""")


def queue_port_status(ctx: BatchContext, pile: PileRef, port_no: int, status: str,
                      uplink: Uplink, event: dict[str, Any] | None = None) -> None:
    """set_port_status, written later with the rest of its run (apply_port_statuses):
    a per-message UPDATE was a fifth of the bridge's time (bench/ingest.py)."""
    port_id = pile.ports.get(port_no)
    if port_id is None:
        ctx.count("unknown_port")
        ctx.event(pile, "unknown_port", port=port_no)
        return
    ctx.port_statuses.append(PendingStatus(pile, port_no, port_id, status, uplink.stamp,
                                           event))


def apply_port_statuses(ctx: BatchContext) -> None:
    """Write the queued port statuses with exactly the outcome of writing them one by one
    in message order: each applies if newer (``is_newer``, the SQL guard's twin) than the
    port's state at that point, and records its event only then. The batch holds its
    piles' locks, so the state read here is the state the updates meet."""
    if not ctx.port_statuses:
        return
    pending, ctx.port_statuses = ctx.port_statuses, []
    session = ctx.session
    ids = sorted({p.port_id for p in pending})
    port = Port.__table__.c
    if _is_postgresql(session):
        rows = session.execute(_PG_PORT_STATUS_STATE, {"ids": ids}).all()
    else:
        rows = session.execute(select(port.id, port.status_boot_id, port.status_seq,
                                      port.status_ts).where(port.id.in_(ids))).all()
    state: dict[int, Stamp | None] = {
        port_id: Stamp(boot, seq, ts) if boot is not None else None
        for port_id, boot, seq, ts in rows}
    newest: dict[int, PendingStatus] = {}
    for p in pending:
        if p.port_id in state and is_newer(state[p.port_id], p.stamp):
            state[p.port_id] = p.stamp
            newest[p.port_id] = p
            if p.event is not None:
                ctx.event(p.pile, "port_status", p.port_no, **p.event)
    if not newest:
        return
    values = [{"p_id": p.port_id, "p_status": p.status, "p_boot": p.stamp.boot_id,
               "p_seq": p.stamp.seq, "p_ts": p.stamp.ts_ms} for p in newest.values()]
    if _is_postgresql(session):
        session.execute(_PG_PORT_STATUS_UPDATE, {"rows": pg_rows(values), "p_at": ctx.now})
    else:
        session.execute(_PORT_STATUS_UPDATE, [{**v, "p_at": ctx.now} for v in values])


# --- the handlers of the telemetry messages -------------------------------------------


@handles("online")
def on_online(ctx: BatchContext, pile: PileRef, u: Uplink) -> None:
    b = u.body
    result = ctx.session.execute(
        update(Pile).where(Pile.id == pile.id, Pile.conn_counter <= b["conn"]).values(
            online=True, conn_counter=b["conn"], boot_id=b["boot_id"], firmware=b["firmware"],
            keepalive_s=b["keepalive_s"], went_offline_at=None,
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        ctx.count("stale_online")
        ctx.event(pile, "stale_online", conn=b["conn"])
        return
    for port in b["ports"]:
        set_port_status(ctx, pile, port["port"], port["status"], u)
    ctx.event(pile, "online", conn=b["conn"], boot_id=b["boot_id"], firmware=b["firmware"])


@handles("offline")
def on_offline(ctx: BatchContext, pile: PileRef, u: Uplink) -> None:
    b = u.body
    current = ctx.session.execute(
        select(Pile.conn_counter).where(Pile.id == pile.id)
    ).scalar_one()
    if not will_applies(b["conn"], current):
        ctx.count("stale_will")
        ctx.event(pile, "stale_will", conn=b["conn"], current_conn=current)
        return
    ctx.heartbeat_piles.discard(pile.id)  # an earlier heartbeat in this batch is superseded
    ctx.session.execute(
        update(Pile).where(Pile.id == pile.id).values(online=False, went_offline_at=ctx.now)
    )
    ctx.event(pile, "offline", conn=b["conn"], reason=b["reason"])


@handles("heartbeat")
def on_heartbeat(ctx: BatchContext, pile: PileRef, u: Uplink) -> None:
    """A heartbeat brings an offline pile back online: written once per batch (flush)."""
    ctx.heartbeat_piles.add(pile.id)


@handles("port_status")
def on_port_status(ctx: BatchContext, pile: PileRef, u: Uplink) -> None:
    b = u.body
    queue_port_status(ctx, pile, b["port"], b["status"], u, event={
        "status": b["status"], "prev": b["prev_status"],
        "session": b["session_id"] or b["local_id"], "fault": b["fault_code"]})


@handles("meter")
def on_meter(ctx: BatchContext, pile: PileRef, u: Uplink) -> None:
    b = u.body
    at = ms_to_datetime(b["ts"])
    for r in b["readings"]:
        port_id = pile.ports.get(r["port"])
        if port_id is None:
            ctx.count("unknown_port")
            continue
        ctx.meter_rows.append({
            "port_id": port_id, "measured_at": at, "energy_wh": r["energy_wh"],
            "delta_wh": r["delta_wh"], "power_w": r["power_w"], "voltage_dv": r["voltage_dv"],
            "current_ma": r["current_ma"], "temp_dc": r["temp_dc"],
            "session_ref": r["session_id"] or r["local_id"],
        })
        session_ref = r["session_id"]
        if session_ref:
            ctx.session_readings.setdefault(session_ref, []).append((port_id, r, u))
        ctx.port_meter_updates.append({
            "p_id": port_id, "p_energy": r["energy_wh"], "p_power": r["power_w"],
            "p_voltage": r["voltage_dv"], "p_current": r["current_ma"], "p_temp": r["temp_dc"],
            "p_boot": b["boot_id"], "p_seq": b["seq"], "p_ts": b["ts"],
        })


@handles("alarm")
def on_alarm(ctx: BatchContext, pile: PileRef, u: Uplink) -> None:
    b = u.body
    ctx.session.execute(AlarmEvent.__table__.insert(), [{
        "pile_id": pile.id, "port_id": pile.ports.get(b["port"]) if b["port"] else None,
        "kind": b["kind"], "severity": b["severity"], "state": b["state"],
        "value": b["value"], "threshold": b["threshold"], "cut_off": b["cut_off"],
        "session_ref": b["session_id"], "at": ms_to_datetime(b["ts"]), "received_at": ctx.now,
    }])
    ctx.event(pile, f"alarm_{b['state']}", b["port"], alarm=b["kind"], severity=b["severity"])
    ctx.count("alarms")


def _settle_command(ctx: BatchContext, pile: PileRef, u: Uplink) -> None:
    b = u.body
    ok = b["ok"]
    result = ctx.session.execute(
        update(DownlinkCommand)
        .where(DownlinkCommand.cmd_id == b["cmd_id"], DownlinkCommand.pile_id == pile.id,
               DownlinkCommand.status.in_(("pending", "sent")))
        .values(status="acked" if ok else "nacked", acked_at=ctx.now,
                result_reason=b["reason"], result=dict(b))
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        ctx.count("late_or_unknown_ack")
    ctx.event(pile, "cmd_ack" if ok else "cmd_nack", b.get("port"), cmd_id=b["cmd_id"],
              reason=b["reason"])


handles("cmd_ack")(_settle_command)
handles("config_ack")(_settle_command)


@handles("master_meter")
def on_master_meter(ctx: BatchContext, pile: PileRef, u: Uplink) -> None:
    b = u.body
    community_id = ctx.session.execute(
        select(Community.id).where(Community.master_meter_serial == b["meter_id"])
    ).scalar_one_or_none()
    if community_id is None or community_id != pile.community_id:
        ctx.count("unknown_master_meter")
        ctx.event(pile, "unknown_master_meter", meter_id=b["meter_id"])
        return
    stmt = insert_ignoring_duplicates(ctx.session, MasterMeterReading, ["meter_serial", "read_at"])
    ctx.session.execute(stmt.values(
        community_id=community_id, meter_serial=b["meter_id"], energy_wh=b["energy_wh"],
        read_at=ms_to_datetime(b["read_at"]),
    ))


def mark_silent_piles_offline(uow: UnitOfWork, now: datetime | None = None) -> int:
    """Piles silent for 1.5 × their keepalive are offline, even if no will came."""
    now = now or utcnow()
    with uow:
        piles = uow.session.execute(
            select(Pile).where(Pile.online.is_(True)).with_for_update(skip_locked=True)
        ).scalars().all()
        silent = [p for p in piles if is_silent(p.last_seen_at, p.keepalive_s, now)]
        for pile in silent:
            pile.online = False
            pile.went_offline_at = now
            uow.session.add(PileEvent(pile_id=pile.id, kind="offline", at=now,
                                      detail={"reason": "silent",
                                              "last_seen": pile.last_seen_at.isoformat()
                                              if pile.last_seen_at else None}))
        uow.commit()
    return len(silent)


# The charging handlers (auth, coins, sessions, acks) register themselves on import.
from app.services import charging as _charging  # noqa: E402,F401
from app.services import incidents as _incidents  # noqa: E402,F401  (after charging's)

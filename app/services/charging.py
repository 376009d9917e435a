"""Charging sessions: start (app, keypad, card, coin), run, stop, settle — each once.

Entry points:
* the API (scan to charge, stop from the phone or the console) calls the
  ``start_app_session`` / ``request_stop`` services;
* the bridge calls the uplink handlers registered below (auth requests, coins,
  command acks, meter reports, session ends, offline sessions, alarms), inside
  its batch transaction;
* the jobs process calls ``close_abandoned_sessions``.

Money moves only through app.services.ledger: a hold when a session starts, a
capture (with the change released) when it is settled. The cost comes from the
tariff engine on the session's cumulative meter profile, so duplicates and
reordering cannot change it, and settlement is idempotent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import Text, bindparam, cast, select, text, type_coerce, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.domain.access import Actor
from app.domain.accounts import normalise_card_uid
from app.domain.charging import (
    OPEN_STATUSES,
    PILE_REASONS,
    STOP_COMMAND_REASON,
    FullDetection,
    SessionStatus,
    StartMethod,
    StopReason,
    limit_reached,
    settle_amounts,
    settlement_profile,
)
from app.domain.errors import (
    AccountLocked,
    Conflict,
    DomainError,
    InsufficientFunds,
    InvalidInput,
    NotFound,
)
from app.domain.ledger import Posting, TransactionKind, coin_sale_postings
from app.domain.safety import IncidentPolicy, SafetyEvent, StopScope
from app.domain.tariff import (
    MeterSample,
    ProfileError,
    RunningCost,
    SessionLimits,
    Tariff,
    allowance_for_coins,
    cost_of,
    estimate_remaining_seconds,
    limits_for_balance,
)
from app.domain.telemetry import is_silent
from app.models import (
    ChargingAccount,
    ChargingSession,
    Community,
    DownlinkCommand,
    Hold,
    ICCard,
    LedgerAccount,
    MeterReading,
    Pile,
    Port,
    TariffVersion,
)
from app.models.base import utcnow
from app.services import access, ledger, outbox, telemetry
from app.services.accounts import check_pin
from app.services.context import keypad_lockout
from app.services.tariffs import tariff_in_force
from app.services.telemetry import (
    BatchContext,
    PileRef,
    Uplink,
    flush,
    handles,
    ms_to_datetime,
)
from app.services.uow import UnitOfWork

log = logging.getLogger(__name__)

START_TTL_S = 30  # a start command not acked by then has failed
STOP_TTL_S = 120
DEFAULT_HOLD_FEN = 5000  # what a scan-to-charge freezes unless the user picks an amount
STARTABLE_PORT_STATUSES = frozenset({"idle", "plugged", "full"})
FULL = FullDetection()


def new_public_id() -> str:
    return "S" + secrets.token_hex(8)


# --- tariffs ---------------------------------------------------------------------------


def tariff_of(version: TariffVersion) -> Tariff:
    return Tariff.from_dict(version.rules)


def tariff_summary(version: TariffVersion) -> dict[str, Any]:
    """What the pile's display shows (the protocol's tariff object)."""
    t = tariff_of(version)
    energy = t.max_energy_fen_per_kwh + t.service_fen_per_kwh if t.is_energy_based else 0
    hourly = 0 if t.is_energy_based else t.hourly_rate_for(None)
    text = (f"{energy / 100:.2f} yuan/kWh" if t.is_energy_based
            else f"up to {hourly / 100:.2f} yuan/h")
    return {"tariff_id": f"{version.community_id}-{version.version}", "text": text[:64],
            "energy_fen_per_kwh": energy, "time_fen_per_hour": hourly}


# --- opening a session -----------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    session: ChargingSession
    start_command: DownlinkCommand


def _check_port_startable(session: Session, pile: Pile, port: Port, now: datetime) -> None:
    if not pile.enabled:
        raise Conflict("this pile is out of service", reason="pile_disabled")
    if not pile.online or is_silent(pile.last_seen_at, pile.keepalive_s, now):
        raise Conflict("the pile is offline; try another pile", reason="pile_offline")
    if port.status not in STARTABLE_PORT_STATUSES:
        raise Conflict(f"the port is {port.status}", reason="port_busy")
    busy = session.execute(
        select(ChargingSession.id).where(
            ChargingSession.port_id == port.id,
            ChargingSession.status.in_([s.value for s in OPEN_STATUSES]),
        )
    ).first()
    if busy:
        raise Conflict("the port is in use", reason="port_busy")


def open_session(
    session: Session,
    *,
    pile: Pile,
    port: Port,
    method: StartMethod,
    now: datetime,
    account: ChargingAccount | None = None,
    amount_fen: int | None = None,
    user_id: int | None = None,
    card_uid: str | None = None,
    coin_fen: int | None = None,
    req_id: str | None = None,
) -> Opened:
    """Check the port, hold the money, compute the limits, queue the start command.

    Runs in the caller's transaction. For an account, ``amount_fen`` caps the hold
    (default: the available balance up to DEFAULT_HOLD_FEN).
    """
    _check_port_startable(session, pile, port, now)
    version = tariff_in_force(session, pile.community_id, now)
    tariff = tariff_of(version)
    public_id = new_public_id()
    hold: Hold | None = None
    if account is not None:
        available = ledger.balance_of(session, account).available_fen
        community = session.get(Community, pile.community_id)
        assert community is not None
        minimum = max(community.min_start_balance_fen, 1)
        if available < minimum:
            raise InsufficientFunds(
                "the balance is below the community's minimum to start; top up first",
                available_fen=available, minimum_fen=minimum)
        hold_fen = min(available, amount_fen or DEFAULT_HOLD_FEN)
        limits = limits_for_balance(tariff, hold_fen, None, now)
        if limits.max_amount_fen <= 0:
            raise InsufficientFunds("the balance does not cover the minimum charge")
        hold = ledger.place_hold(session, account, amount_fen=hold_fen, key=public_id)
    elif coin_fen is not None:
        limits = allowance_for_coins(tariff, coin_fen, now)
        if limits.max_amount_fen <= 0:
            raise InsufficientFunds("the coins do not cover the minimum charge")
    else:
        raise InvalidInput("a session needs an account or coins")
    charging = ChargingSession(
        public_id=public_id, pile_id=pile.id, port_id=port.id, community_id=pile.community_id,
        method=method.value, status=SessionStatus.STARTING.value,
        charging_account_id=account.id if account else None, user_id=user_id,
        card_uid=card_uid, coin_fen=coin_fen, tariff_version_id=version.id,
        hold_id=hold.id if hold else None, max_amount_fen=limits.max_amount_fen,
        max_energy_wh=limits.max_energy_wh, max_minutes=limits.max_minutes, cost_fen=0,
    )
    session.add(charging)
    return Opened(charging, _queue_start(session, charging, port, version, limits, req_id, now))


def _queue_start(session: Session, charging: ChargingSession, port: Port,
                 version: TariffVersion, limits: SessionLimits, req_id: str | None,
                 now: datetime) -> DownlinkCommand:
    try:
        session.flush()
    except IntegrityError as exc:  # the partial unique index: someone else just started
        raise Conflict("the port is in use", reason="port_busy") from exc
    command = outbox.enqueue_command(session, charging.pile_id, "start", {
        "port": port.number, "session_id": charging.public_id, "req_id": req_id,
        # a visitor's order is started from the phone, like a scan (the protocol's word)
        "method": "app" if charging.method == StartMethod.VISITOR.value else charging.method,
        "limits": _limits_body(limits),
        "tariff": tariff_summary(version),
    }, ttl_s=START_TTL_S, now=now)
    charging.start_cmd_id = command.cmd_id
    return command


def _limits_body(limits: SessionLimits) -> dict[str, int | None]:
    return {"max_energy_wh": limits.max_energy_wh, "max_minutes": limits.max_minutes,
            "max_amount_fen": limits.max_amount_fen}


def start_app_session(
    uow: UnitOfWork,
    actor: Actor,
    *,
    charging_account_id: int,
    port_id: int | None = None,
    port_code: str | None = None,
    max_amount_fen: int | None = None,
) -> ChargingSession:
    """Scan to charge: the resident's phone starts a charge on a port."""
    with uow:
        account = access.get_charging_account(uow.session, actor, charging_account_id)
        if account.status != "active":
            raise Conflict("this charging account is blocked", reason="account_blocked")
        port = _find_port(uow.session, port_id, port_code)
        if port.pile.community_id != account.community_id:
            raise Conflict("this account belongs to another community",
                           reason="wrong_community")
        opened = open_session(uow.session, pile=port.pile, port=port, method=StartMethod.APP,
                              now=utcnow(), account=account, amount_fen=max_amount_fen,
                              user_id=actor.user_id)
        uow.commit()
        return opened.session


def _find_port(session: Session, port_id: int | None, port_code: str | None) -> Port:
    port: Port | None = None
    if port_id is not None:
        port = session.get(Port, port_id)
    elif port_code:
        port = session.execute(
            select(Port).where(Port.public_code == port_code.strip().upper())
        ).scalar_one_or_none()
    if port is None:
        raise NotFound("no such port")
    return port


def await_start(uow: UnitOfWork, public_id: str, timeout_s: float) -> ChargingSession:
    """Wait (bounded) for the pile's answer to a start; on silence the start fails."""
    deadline = time.monotonic() + timeout_s
    pause = 0.003
    while True:
        status = uow.session.execute(
            select(ChargingSession.status).where(ChargingSession.public_id == public_id)
        ).scalar_one()
        uow.session.rollback()  # never sleep inside a transaction (SQLite: the write lock)
        if status != SessionStatus.STARTING.value:
            return uow.session.execute(
                select(ChargingSession).where(ChargingSession.public_id == public_id)
            ).scalar_one()
        if time.monotonic() >= deadline:
            return fail_start(uow, public_id, "ack_timeout")
        time.sleep(pause)
        pause = min(pause * 1.5, 0.01)


def fail_start(uow: UnitOfWork, public_id: str, reason: str) -> ChargingSession:
    """Give up on a start: release the money; tell the pile to stop in case it did start."""
    with uow:
        charging = _lock_session(uow.session, public_id)
        if charging.status == SessionStatus.STARTING.value:
            _fail(uow.session, charging, reason, utcnow(), cancel=True)
        uow.commit()
        return charging


def _lock_session(session: Session, public_id: str) -> ChargingSession:
    charging = session.execute(
        select(ChargingSession).where(ChargingSession.public_id == public_id)
        .with_for_update().execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if charging is None:
        raise NotFound("no such charging session")
    return charging


def _fail(session: Session, charging: ChargingSession, reason: str, now: datetime,
          *, cancel: bool) -> None:
    charging.status = SessionStatus.FAILED.value
    charging.failure_reason = reason[:40]
    charging.stop_reason = StopReason.START_FAILED.value
    charging.ended_at = now
    if charging.hold_id is not None:
        ledger.release_hold(session, charging.hold_id, reference=charging.public_id)
    if cancel:
        outbox.enqueue_command(session, charging.pile_id, "stop", {
            "port": charging.port.number, "session_id": charging.public_id, "reason": "other",
        }, ttl_s=STOP_TTL_S, now=now)


# --- stopping --------------------------------------------------------------------------


def request_stop(uow: UnitOfWork, actor: Actor, public_id: str, reason: StopReason
                 ) -> ChargingSession:
    """Stop from the phone (the session's user) or the console (its community's staff)."""
    with uow:
        charging = _lock_session(uow.session, public_id)
        if actor.is_staff:
            access.get_community(uow.session, actor, charging.community_id, manage=True)
            reason = StopReason.OPERATOR
        elif charging.user_id != actor.user_id and not (
            charging.charging_account_id
            and access.is_bound(uow.session, actor.user_id, charging.charging_account_id)
        ):
            raise NotFound("no such charging session")
        if charging.status not in (SessionStatus.STARTING.value, SessionStatus.ACTIVE.value):
            raise Conflict(f"the session is already {charging.status}")
        send_stop(uow.session, charging, reason, utcnow())
        uow.commit()
        return charging


def send_stop(session: Session, charging: ChargingSession, reason: StopReason,
              now: datetime) -> None:
    """Queue a stop (once); the pile's session_end settles the session."""
    if charging.stop_requested:
        return
    charging.stop_requested = reason.value
    if charging.status == SessionStatus.ACTIVE.value:
        charging.status = SessionStatus.STOPPING.value
    outbox.enqueue_command(session, charging.pile_id, "stop", {
        "port": charging.port.number, "session_id": charging.public_id,
        "reason": STOP_COMMAND_REASON.get(reason, "other"),
    }, ttl_s=STOP_TTL_S, now=now)


# --- settlement ------------------------------------------------------------------------


def _session_samples(session: Session, charging: ChargingSession) -> list[MeterSample]:
    rows = session.execute(
        select(MeterReading.measured_at, MeterReading.energy_wh, MeterReading.power_w).where(
            MeterReading.port_id == charging.port_id,
            MeterReading.session_ref == charging.public_id,
        )
    ).all()
    return [MeterSample(at, energy, power) for at, energy, power in rows]


def settle_session(
    session: Session,
    charging: ChargingSession,
    *,
    reason: StopReason,
    end_energy_wh: int | None,
    ended_at: datetime,
    now: datetime,
) -> bool:
    """Bill a session once. A later, fuller end report for an already settled session
    (e.g. closed on a pile-offline timeout) is reconciled by charging the difference.
    Returns whether anything changed.
    """
    if charging.status == SessionStatus.FAILED.value:
        return False
    version = session.get(TariffVersion, charging.tariff_version_id)
    assert version is not None
    tariff = tariff_of(version)
    started_at = charging.started_at or charging.created_at
    start_energy = charging.start_energy_wh
    if start_energy is None:
        start_energy = end_energy_wh if end_energy_wh is not None else 0
    start = MeterSample(started_at, start_energy, 0)
    end = None
    if end_energy_wh is not None:
        end = MeterSample(max(ended_at, started_at), end_energy_wh, 0)
    try:
        profile = settlement_profile(start, _session_samples(session, charging), end)
        cost = cost_of(tariff, profile).total_fen
    except ProfileError:
        log.exception("session %s: unpriceable profile; billed at 0", charging.public_id)
        profile, cost = [start], 0
    if charging.method == StartMethod.COIN.value:
        cost = min(cost, charging.coin_fen or 0)  # coins are the whole payment
    if charging.status == SessionStatus.SETTLED.value:
        return _reconcile(session, charging, cost, profile[-1].energy_wh)
    charged = _charge(session, charging, cost)
    charging.status = SessionStatus.SETTLED.value
    charging.stop_reason = (charging.stop_reason or reason.value)
    charging.cost_fen = charged
    charging.end_energy_wh = profile[-1].energy_wh
    charging.last_energy_wh = profile[-1].energy_wh
    charging.ended_at = ended_at
    charging.settled_at = now
    for hook in ON_SETTLED:  # settled: status, reason, cost, energy and end are set
        hook(session, charging, charging.refund_fen or 0)
    _display_balance(session, charging, now)
    return True


def _charge(session: Session, charging: ChargingSession, cost: int) -> int:
    """Capture from the hold (the change goes back); what the floor allows, never more."""
    if charging.hold_id is None:
        return cost  # coin sessions were paid when the coins went in
    hold = session.get(Hold, charging.hold_id)
    account = session.get(ChargingAccount, charging.charging_account_id)
    assert hold is not None and account is not None
    wallet = session.get(LedgerAccount, account.wallet_account_id)
    assert wallet is not None
    session.refresh(wallet)
    # Beyond what was held (= what the user authorised) only the wallet's explicit
    # grace may be used, e.g. for a meter's overshoot past the pushed limit.
    grace = -(wallet.floor_fen or 0)
    collectable = hold.amount_fen + min(grace, max(0, wallet.balance_fen + grace))
    charged = min(cost, collectable)
    if charged < cost:
        log.warning("session %s: cost %d fen exceeds what the account can pay (%d)",
                    charging.public_id, cost, charged)
    split = settle_amounts(cost_fen=charged, held_fen=hold.amount_fen,
                           prepaid_visitor=account.kind == "temporary")
    company = charging.pile.community.property_company
    ledger.capture_hold(session, hold.id, cost_fen=split.cost_fen,
                        revenue_account_id=company.revenue_account_id,
                        property_company_id=company.id, reference=charging.public_id)
    charging.refund_fen = split.refund_fen or None
    return charged


def _reconcile(session: Session, charging: ChargingSession, cost: int, end_energy: int) -> bool:
    """Bill what a late end report adds beyond what was already billed (once)."""
    already = charging.cost_fen + charging.reconciled_fen
    extra = cost - already
    if extra <= 0 or charging.charging_account_id is None:
        return False
    account = session.get(ChargingAccount, charging.charging_account_id)
    assert account is not None
    wallet = session.get(LedgerAccount, account.wallet_account_id)
    assert wallet is not None
    extra = min(extra, max(0, wallet.balance_fen - (wallet.floor_fen or 0)))
    if extra <= 0:
        return False
    company = charging.pile.community.property_company
    result = ledger.post(
        session, key=f"reconcile:{charging.public_id}", kind=TransactionKind.CAPTURE,
        postings=[Posting(account.wallet_account_id, -extra),
                  Posting(company.revenue_account_id, extra)],
        amount_fen=extra, channel="charging", charging_account_id=account.id,
        property_company_id=company.id, reference=charging.public_id,
        memo="late end report from the pile")
    if result.applied:
        charging.reconciled_fen += extra
        charging.end_energy_wh = end_energy
    return result.applied


# Called when a session is settled: (session, charging, refund_fen). Visitors' unused
# prepayment goes back to the payer through the payments module, which registers here.
ON_SETTLED: list[Any] = []


def _display_balance(session: Session, charging: ChargingSession, now: datetime) -> None:
    if charging.charging_account_id is None or not charging.pile.online:
        return
    account = session.get(ChargingAccount, charging.charging_account_id)
    assert account is not None
    balance = ledger.balance_of(session, account).available_fen
    outbox.enqueue_command(session, charging.pile_id, "balance", {
        "account_hint": (account.account_no or "visitor")[-4:], "balance_fen": max(balance, 0),
        "port": charging.port.number, "reason": "settled",
    }, ttl_s=30, now=now)


# --- uplink handlers (run by the bridge inside its batch transaction) -----------------------


def _port_and_pile(ctx: BatchContext, pile_ref: PileRef, port_no: int) -> tuple[Pile, Port]:
    pile = ctx.session.get(Pile, pile_ref.id)
    assert pile is not None
    port_id = pile_ref.ports.get(port_no)
    port = ctx.session.get(Port, port_id) if port_id else None
    if port is None:
        raise NotFound("no such port on this pile")
    return pile, port


def _reply_auth(ctx: BatchContext, pile_ref: PileRef, b: Mapping[str, Any], *, allow: bool,
                reason: str | None = None, session_id: str | None = None,
                limits: dict[str, int | None] | None = None,
                balance_fen: int | None = None) -> None:
    outbox.enqueue_command(ctx.session, pile_ref.id, "auth_reply", {
        "req_id": b["req_id"], "port": b["port"], "allow": allow, "reason": reason,
        "session_id": session_id, "limits": limits, "balance_fen": balance_fen,
    }, ttl_s=30, now=ctx.now)
    ctx.nudge = True


DENY_REASONS = {"pile_offline": "port_unavailable", "port_busy": "port_unavailable",
                "pile_disabled": "port_unavailable", "wrong_community": "unknown_account"}


OFFLINE_CARD_LIMITS = {"max_energy_wh": 2000, "max_minutes": 480, "max_amount_fen": 500}
OFFLINE_COIN_MAX_MINUTES = 480


def pile_config(session: Session, pile: Pile, meter_interval_s: int, now: datetime
                ) -> dict[str, Any]:
    """What a pile should run with: the tariff to display, intervals, offline policy."""
    body: dict[str, Any] = {
        "tariff": tariff_summary(tariff_in_force(session, pile.community_id, now)),
        "keepalive_s": pile.keepalive_s, "meter_interval_s": meter_interval_s,
        "full_power_w": FULL.threshold_w, "full_minutes": FULL.minutes,
        "offline_card_limits": OFFLINE_CARD_LIMITS,
        "offline_coin_max_minutes": OFFLINE_COIN_MAX_MINUTES,
    }
    digest = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return {"config_id": digest, **body}


@handles("online")
def on_online_sync(ctx: BatchContext, pile_ref: PileRef, u: Uplink) -> None:
    """After every (re)connect: set the pile's clock, and push the config if it changed."""
    pile = ctx.session.get(Pile, pile_ref.id)
    assert pile is not None
    if pile.conn_counter != u.body["conn"]:
        return  # a stale online (older connection)
    zone = ZoneInfo(pile.community.timezone)
    offset = ctx.now.astimezone(zone).utcoffset()
    outbox.enqueue_command(ctx.session, pile.id, "time_sync", {
        "utc_offset_min": int(offset.total_seconds() // 60) if offset else 0,
    }, ttl_s=30, now=ctx.now)
    try:
        config = pile_config(ctx.session, pile, u.body["meter_interval_s"], ctx.now)
    except Conflict:
        ctx.event(pile_ref, "no_tariff")
    else:
        if config["config_id"] != u.body["config_id"]:
            outbox.enqueue_command(ctx.session, pile.id, "config", config, ttl_s=3600,
                                   now=ctx.now)
    ctx.nudge = True


@handles("auth_request")
def on_auth_request(ctx: BatchContext, pile_ref: PileRef, u: Uplink) -> None:
    """Keypad (account number + PIN) or IC card at the pile: allow with limits, or deny."""
    b = u.body
    session = ctx.session
    savepoint = session.begin_nested()
    try:
        pile, port = _port_and_pile(ctx, pile_ref, b["port"])
        account, method, card_uid = _authenticate(ctx, pile, b)
        if account.status != "active":
            raise Conflict("blocked", reason="account_blocked")
        opened = open_session(session, pile=pile, port=port, method=method, now=ctx.now,
                              account=account, card_uid=card_uid, req_id=b["req_id"])
    except _Denied as denied:
        savepoint.commit()  # keep the PIN failure count
        _reply_auth(ctx, pile_ref, b, allow=False, reason=denied.reason)
        ctx.event(pile_ref, "auth_denied", b["port"], reason=denied.reason)
        return
    except DomainError as exc:
        savepoint.rollback()
        reason = _deny_reason(exc)
        _reply_auth(ctx, pile_ref, b, allow=False, reason=reason)
        ctx.event(pile_ref, "auth_denied", b["port"], reason=reason)
        return
    savepoint.commit()
    balance = ledger.balance_of(session, account).available_fen
    _reply_auth(ctx, pile_ref, b, allow=True, session_id=opened.session.public_id,
                limits={"max_energy_wh": opened.session.max_energy_wh,
                        "max_minutes": opened.session.max_minutes,
                        "max_amount_fen": opened.session.max_amount_fen},
                balance_fen=balance)
    ctx.event(pile_ref, "auth_allowed", b["port"], session=opened.session.public_id)


class _Denied(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _deny_reason(exc: DomainError) -> str:
    if isinstance(exc, InsufficientFunds):
        return "insufficient_balance"
    if isinstance(exc, AccountLocked):
        return "account_blocked"
    reason = exc.details.get("reason") if exc.details else None
    if reason == "account_blocked":
        return "account_blocked"
    return DENY_REASONS.get(str(reason), "other")


def _authenticate(ctx: BatchContext, pile: Pile, b: Mapping[str, Any]
                  ) -> tuple[ChargingAccount, StartMethod, str | None]:
    session = ctx.session
    if b["method"] == "card":
        try:
            uid = normalise_card_uid(b.get("card_uid", ""))
        except InvalidInput:
            raise _Denied("unknown_card") from None
        card = session.execute(select(ICCard).where(ICCard.card_uid == uid)).scalar_one_or_none()
        if card is None or card.account.community_id != pile.community_id:
            raise _Denied("unknown_card")
        if card.status != "active" or card.account.status == "closed":
            raise _Denied("card_blocked")
        return card.account, StartMethod.CARD, uid
    account = session.execute(
        select(ChargingAccount).where(
            ChargingAccount.community_id == pile.community_id,
            ChargingAccount.account_no == b.get("account_no", ""),
            ChargingAccount.status != "closed",
        )
    ).scalar_one_or_none()
    if account is None:
        raise _Denied("unknown_account")
    try:
        ok = check_pin(session, account, b.get("pin", ""), keypad_lockout(), ctx.now)
    except AccountLocked:
        raise _Denied("account_blocked") from None
    if not ok:
        raise _Denied("wrong_pin")
    return account, StartMethod.KEYPAD, None


@handles("coin_insert")
def on_coin_insert(ctx: BatchContext, pile_ref: PileRef, u: Uplink) -> None:
    """Coins at the pile: the money is received and earned at once; the pile gets limits."""
    b = u.body
    session = ctx.session
    pile = session.get(Pile, pile_ref.id)
    assert pile is not None
    company = pile.community.property_company
    savepoint = session.begin_nested()
    try:
        _, port = _port_and_pile(ctx, pile_ref, b["port"])
        ledger.post(session, key=f"coin:{pile.serial}:{u.body['boot_id']}:{b['req_id']}",
                    kind=TransactionKind.COIN_SALE,
                    postings=coin_sale_postings(collection=company.collection_account_id,
                                                revenue=company.revenue_account_id,
                                                amount_fen=b["coin_fen"]),
                    amount_fen=b["coin_fen"], channel="coin", property_company_id=company.id,
                    reference=f"{pile.serial}/{b['port']}")
        opened = open_session(session, pile=pile, port=port, method=StartMethod.COIN,
                              now=ctx.now, coin_fen=b["coin_fen"], req_id=b["req_id"])
        savepoint.commit()
        ctx.event(pile_ref, "coin_session", b["port"], session=opened.session.public_id,
                  coin_fen=b["coin_fen"])
    except DomainError as exc:
        savepoint.rollback()
        # The coins are in the box whatever happens: record them, and say why no start.
        ledger.post(session, key=f"coin:{pile.serial}:{u.body['boot_id']}:{b['req_id']}",
                    kind=TransactionKind.COIN_SALE,
                    postings=coin_sale_postings(collection=company.collection_account_id,
                                                revenue=company.revenue_account_id,
                                                amount_fen=b["coin_fen"]),
                    amount_fen=b["coin_fen"], channel="coin", property_company_id=company.id,
                    reference=f"{pile.serial}/{b['port']}", memo="coins without a start")
        ctx.event(pile_ref, "coin_rejected", b["port"], reason=exc.code, message=exc.message)
    ctx.nudge = True


def _session_by_public_id(session: Session, public_id: str | None, pile_id: int
                          ) -> ChargingSession | None:
    if not public_id:
        return None
    return session.execute(
        select(ChargingSession).where(ChargingSession.public_id == public_id,
                                      ChargingSession.pile_id == pile_id)
        .with_for_update().execution_options(populate_existing=True)
    ).scalar_one_or_none()


@handles("cmd_ack")
def on_cmd_ack(ctx: BatchContext, pile_ref: PileRef, u: Uplink) -> None:
    b = u.body
    charging = _session_by_public_id(ctx.session, b.get("session_id"), pile_ref.id)
    if charging is None:
        return
    if b["cmd"] == "start":
        if b["ok"] and charging.status == SessionStatus.STARTING.value:
            charging.status = SessionStatus.ACTIVE.value
            charging.started_at = ms_to_datetime(u.body["ts"])
            charging.start_energy_wh = b.get("energy_wh")
            charging.last_energy_wh = b.get("energy_wh")
            if charging.stop_requested:  # stopped while starting
                charging.status = SessionStatus.STOPPING.value
        elif not b["ok"] and charging.status == SessionStatus.STARTING.value:
            _fail(ctx.session, charging, f"nack:{b.get('reason') or 'unknown'}", ctx.now,
                  cancel=False)
        elif b["ok"] and charging.status == SessionStatus.FAILED.value:
            # The pile started after we gave up waiting: switch it off again.
            outbox.enqueue_command(ctx.session, pile_ref.id, "stop", {
                "port": charging.port.number, "session_id": charging.public_id,
                "reason": "other"}, ttl_s=STOP_TTL_S, now=ctx.now)
    ctx.nudge = True


@handles("session_end")
def on_session_end(ctx: BatchContext, pile_ref: PileRef, u: Uplink) -> None:
    b = u.body
    charging = _session_by_public_id(ctx.session, b["session_id"], pile_ref.id)
    if charging is None:
        ctx.event(pile_ref, "session_end_unknown", b["port"], session=b["session_id"])
        return
    flush(ctx)  # this batch's meter readings count too
    reason = PILE_REASONS.get(b["reason"]) or StopReason(charging.stop_requested or "user")
    if charging.start_energy_wh is None:
        charging.start_energy_wh = b["energy_start_wh"]
        charging.started_at = charging.started_at or ms_to_datetime(b["started_at"])
    if charging.status == SessionStatus.STARTING.value:
        charging.status = SessionStatus.ACTIVE.value  # the ack was lost; the end proves it ran
    settle_session(ctx.session, charging, reason=reason, end_energy_wh=b["energy_end_wh"],
                   ended_at=ms_to_datetime(b["ended_at"]), now=ctx.now)
    charging.peak_power_w = max(charging.peak_power_w or 0, b["peak_power_w"])
    ctx.event(pile_ref, "session_end", b["port"], session=charging.public_id,
              reason=reason.value, cost_fen=charging.cost_fen)


@handles("offline_sessions")
def on_offline_sessions(ctx: BatchContext, pile_ref: PileRef, u: Uplink) -> None:
    """Card and coin sessions the pile ran without a link: billed once, by local_id."""
    session = ctx.session
    pile = session.get(Pile, pile_ref.id)
    assert pile is not None
    for item in sorted(u.body["sessions"], key=lambda s: s["started_at"]):
        exists = session.execute(
            select(ChargingSession.id).where(ChargingSession.pile_id == pile.id,
                                             ChargingSession.local_id == item["local_id"])
        ).first()
        if exists:
            continue
        port_id = pile_ref.ports.get(item["port"])
        if port_id is None:
            ctx.count("unknown_port")
            continue
        savepoint = session.begin_nested()
        try:
            _bill_offline(ctx, pile, port_id, item)
            savepoint.commit()
        except DomainError as exc:
            savepoint.rollback()
            ctx.event(pile_ref, "offline_session_rejected", item["port"],
                      local_id=item["local_id"], reason=exc.code)


def _bill_offline(ctx: BatchContext, pile: Pile, port_id: int, item: Mapping[str, Any]) -> None:
    session = ctx.session
    started = ms_to_datetime(item["started_at"])
    ended = ms_to_datetime(item["ended_at"])
    version = tariff_in_force(session, pile.community_id, started)
    account: ChargingAccount | None = None
    coin_fen: int | None = None
    if item["method"] == "card":
        card = session.execute(
            select(ICCard).where(ICCard.card_uid == normalise_card_uid(item["card_uid"] or ""))
        ).scalar_one_or_none()
        if card is None or card.account.community_id != pile.community_id:
            raise NotFound("unknown card in an offline session")
        account = card.account
    else:
        coin_fen = item["coin_fen"] or 0
        company = pile.community.property_company
        ledger.post(session, key=f"coin:{pile.serial}:offline:{item['local_id']}",
                    kind=TransactionKind.COIN_SALE,
                    postings=coin_sale_postings(collection=company.collection_account_id,
                                                revenue=company.revenue_account_id,
                                                amount_fen=coin_fen),
                    amount_fen=coin_fen, channel="coin", property_company_id=company.id,
                    reference=f"{pile.serial}/{item['port']}")
    charging = ChargingSession(
        public_id=new_public_id(), pile_id=pile.id, port_id=port_id,
        community_id=pile.community_id, local_id=item["local_id"],
        method=(StartMethod.CARD if account else StartMethod.COIN).value,
        # settled from the start: it is over, and must not look "in progress" on the port
        status=SessionStatus.SETTLED.value,
        charging_account_id=account.id if account else None, card_uid=item.get("card_uid"),
        coin_fen=coin_fen, tariff_version_id=version.id, max_amount_fen=coin_fen or 0,
        max_minutes=0, start_energy_wh=item["energy_start_wh"], started_at=started,
        peak_power_w=item["peak_power_w"], cost_fen=0,
    )
    session.add(charging)
    session.flush()
    tariff = tariff_of(version)
    profile = [MeterSample(started, item["energy_start_wh"], 0),
               MeterSample(max(ended, started), max(item["energy_end_wh"],
                                                    item["energy_start_wh"]), 0)]
    cost = cost_of(tariff, profile).total_fen
    if coin_fen is not None:
        cost = min(cost, coin_fen)
    elif account is not None:
        cost = _charge_without_hold(session, charging, account, cost)
    charging.stop_reason = (PILE_REASONS.get(item["reason"]) or StopReason.USER).value
    charging.cost_fen = cost
    charging.end_energy_wh = profile[-1].energy_wh
    charging.last_energy_wh = profile[-1].energy_wh
    charging.ended_at = ended
    charging.settled_at = ctx.now


def _charge_without_hold(session: Session, charging: ChargingSession,
                         account: ChargingAccount, cost: int) -> int:
    wallet = session.get(LedgerAccount, account.wallet_account_id)
    assert wallet is not None
    session.refresh(wallet)
    charged = min(cost, max(0, wallet.balance_fen - (wallet.floor_fen or 0)))
    if charged:
        company = charging.pile.community.property_company
        ledger.post(session, key=f"capture:{charging.pile_id}:{charging.local_id}",
                    kind=TransactionKind.CAPTURE,
                    postings=[Posting(account.wallet_account_id, -charged),
                              Posting(company.revenue_account_id, charged)],
                    amount_fen=charged, channel="charging", charging_account_id=account.id,
                    property_company_id=company.id, reference=charging.public_id,
                    memo="offline card session")
    return charged


# The stop rules of app.domain.safety with the default thresholds (the incident service
# uses the same severity policy; only its escalation delays are configurable).
SAFETY_POLICY = IncidentPolicy()


def stop_port_sessions(session: Session, pile_id: int, port_id: int | None, now: datetime
                       ) -> int:
    """Send ``stop`` (reason alarm) to the sessions running on one port, or on every port of
    the pile (``port_id`` None). Idempotent: a session already asked to stop is skipped."""
    stmt = select(ChargingSession).where(
        ChargingSession.pile_id == pile_id,
        ChargingSession.status.in_([SessionStatus.STARTING.value, SessionStatus.ACTIVE.value]),
    )
    if port_id is not None:
        stmt = stmt.where(ChargingSession.port_id == port_id)
    stopped = 0
    for charging in session.execute(stmt).scalars():
        if not charging.stop_requested:
            stopped += 1
        send_stop(session, charging, StopReason.ALARM, now)
    return stopped


@handles("alarm")
def on_alarm_stop(ctx: BatchContext, pile_ref: PileRef, u: Uplink) -> None:
    """A safety alarm stops what ``app.domain.safety.stop_scope`` says, at once: every
    critical alarm (as the platform classifies it: e.g. over_temperature at 70.0 °C even if
    the pile says major), overcurrent and overload at any severity; the named port, or every
    port for smoke and for an alarm that names none. Runs before the incident is recorded
    and needs nothing but the alarm itself, so nothing else can hold it up."""
    event = SafetyEvent.from_alarm(pile_ref.serial, u.body)
    scope = SAFETY_POLICY.stop_for(event)
    if scope is StopScope.NONE:
        return
    port_id = pile_ref.ports.get(event.port_no) if event.port_no is not None else None
    if scope is StopScope.PILE or port_id is None:  # an unknown port: stop the whole pile
        port_id = None
    stop_port_sessions(ctx.session, pile_ref.id, port_id, ctx.now)
    ctx.nudge = True


_RUNNING = ChargingSession.__table__
# ``running`` is read as its stored text: compared with what this worker wrote last, it
# says whether the worker's own copy of the running cost is still the row's (no JSON
# parsing, no rebuilding the tariff engine's state for every reading).
_RUNNING_COLUMNS = (
    _RUNNING.c.id, _RUNNING.c.public_id, _RUNNING.c.port_id, _RUNNING.c.status,
    _RUNNING.c.stop_requested, _RUNNING.c.tariff_version_id,
    cast(_RUNNING.c.running, Text).label("running"),
    _RUNNING.c.start_energy_wh, _RUNNING.c.started_at, _RUNNING.c.cost_fen,
    _RUNNING.c.last_energy_wh, _RUNNING.c.power_w, _RUNNING.c.peak_power_w,
    _RUNNING.c.last_meter_at, _RUNNING.c.max_amount_fen, _RUNNING.c.max_energy_wh,
    _RUNNING.c.max_minutes,
)
_OPEN = [s.value for s in OPEN_STATUSES]
# PostgreSQL: one prepared statement whatever the number of sessions (an IN list of N
# parameters is a new statement for every N), rows locked in id order. NO KEY UPDATE:
# what the UPDATE of non-key columns that follows takes anyway.
_PG_LOCK_RUNNING = (
    select(*_RUNNING_COLUMNS)
    .where(text("charging_sessions.public_id = ANY(CAST(:ids AS TEXT[]))"),
           _RUNNING.c.status.in_(_OPEN))
    .order_by(_RUNNING.c.id).with_for_update(key_share=True)
)
# s_running is the state's JSON text, stored as it is (a JSON column keeps its text).
_PG_UPDATE_RUNNING = text("""
    UPDATE charging_sessions AS s SET running = CAST(v.s_running AS JSON),
        cost_fen = v.s_cost, last_energy_wh = v.s_energy, power_w = v.s_power,
        peak_power_w = v.s_peak, last_meter_at = v.s_at, start_energy_wh = v.s_start_energy
    FROM json_to_recordset(CAST(:rows AS JSON))
         AS v(s_id INTEGER, s_running TEXT, s_cost INTEGER, s_energy BIGINT, s_power INTEGER,
              s_peak INTEGER, s_at TIMESTAMPTZ, s_start_energy BIGINT)
    WHERE s.id = v.s_id
""")
_UPDATE_RUNNING = (
    update(_RUNNING).where(_RUNNING.c.id == bindparam("s_id")).values(
        running=type_coerce(bindparam("s_running"), Text), cost_fen=bindparam("s_cost"),
        last_energy_wh=bindparam("s_energy"), power_w=bindparam("s_power"),
        peak_power_w=bindparam("s_peak"), last_meter_at=bindparam("s_at"),
        start_energy_wh=bindparam("s_start_energy"))
)


class RunningCosts:
    """A bridge worker's memory of the running costs it wrote, between batches.

    session id → (the ``running`` text written, the RunningCost it encodes). An entry
    is used only while the row still holds exactly that text, so another worker's or
    a restart's write is never missed; entries enter only after their batch commits.
    Tariff versions are immutable, so their engines are kept too."""

    MAX_SESSIONS = 200_000  # past this, start afresh (ended sessions are never asked for)

    def __init__(self) -> None:
        self.states: dict[int, tuple[str, RunningCost]] = {}
        self.tariffs: dict[int, Tariff] = {}

    def state_of(self, row: Any, tariff: Tariff) -> RunningCost | None:
        if row.running is None:
            return None
        cached = self.states.get(row.id)
        if cached is not None and cached[0] == row.running:
            return cached[1]
        return RunningCost.from_state(tariff, orjson.loads(row.running))

    def remember(self, written: dict[int, tuple[str, RunningCost]]) -> None:
        if len(self.states) + len(written) > self.MAX_SESSIONS:
            self.states.clear()
        self.states.update(written)

    def tariffs_for(self, session: Session, version_ids: set[int]) -> dict[int, Tariff]:
        missing = version_ids - self.tariffs.keys()
        if missing:
            for version_id, rules in session.execute(
                    select(TariffVersion.id, TariffVersion.rules)
                    .where(TariffVersion.id.in_(missing))):
                self.tariffs[version_id] = Tariff.from_dict(rules)
        return self.tariffs


@dataclass(frozen=True, slots=True)
class Progress:
    """What a batch's new meter samples change on one running session."""

    running: RunningCost | None
    cost_fen: int
    last_energy_wh: int | None
    power_w: int | None
    peak_power_w: int | None
    last_meter_at: datetime | None
    start_energy_wh: int | None
    stop: bool  # a limit is reached: the platform sends the stop itself


def advance(row: Any, tariff: Tariff, running: RunningCost | None,
            samples: list[MeterSample]) -> Progress | None:
    """Price the new samples (oldest first) of a session row whose running cost so far is
    ``running`` (None before its first priced reading); None if nothing changes.

    Plain Python over the row's columns: the bridge computes every session of a batch
    this way and writes them all in one statement."""
    start_energy = row.start_energy_wh
    if running is None:
        if start_energy is None:
            start_energy = samples[0].energy_wh
        start_at = row.started_at or samples[0].at
        running = RunningCost.begin(tariff, MeterSample(start_at, start_energy, 0))
        before = None
    else:
        before = running
    fresh = [s for s in samples
             if s.at >= running.last.at and s.energy_wh >= running.last.energy_wh]
    if not fresh:
        if start_energy == row.start_energy_wh:
            return None
        # the first samples predate the start: only the start reading is learnt
        return Progress(before, row.cost_fen, row.last_energy_wh, row.power_w,
                        row.peak_power_w, row.last_meter_at, start_energy, False)
    running = running.add(fresh)
    latest = fresh[-1]
    cost = running.cost
    stop = (row.status == SessionStatus.ACTIVE.value and not row.stop_requested
            and limit_reached(SessionLimits(row.max_amount_fen, row.max_energy_wh,
                                            row.max_minutes),
                              energy_wh=cost.energy_wh, seconds=cost.seconds,
                              cost_fen=cost.total_fen))
    return Progress(running, cost.total_fen, latest.energy_wh, latest.power_w,
                    max(row.peak_power_w or 0, latest.power_w), latest.at, start_energy, stop)


def update_running_sessions(ctx: BatchContext) -> None:
    """Meter reports of sessions in progress: live figures, and the platform's own stop
    when the money, energy or time runs out (the pile should have stopped already).

    Hot path (every reading of a charge lands here): the sessions are read and written
    as rows, one locking SELECT and one UPDATE per batch, no ORM objects; only a session
    that must be stopped is loaded as one. The worker's RunningCosts (``ctx.carry``)
    spares re-reading each session's running state from its JSON."""
    if not ctx.session_readings:
        return
    session = ctx.session
    readings, ctx.session_readings = ctx.session_readings, {}
    session.flush()  # what the handlers changed through the ORM (acks, ends) is read below
    is_pg = session.get_bind().dialect.name == "postgresql"
    if is_pg:
        rows = session.execute(_PG_LOCK_RUNNING, {"ids": list(readings)}).all()
    else:
        rows = session.execute(
            select(*_RUNNING_COLUMNS)
            .where(_RUNNING.c.public_id.in_(list(readings)), _RUNNING.c.status.in_(_OPEN))
            .order_by(_RUNNING.c.id).with_for_update()).all()
    if not rows:
        return
    memory: RunningCosts = ctx.carry.setdefault("running_costs", RunningCosts())
    tariffs = memory.tariffs_for(session, {r.tariff_version_id for r in rows})
    changed: list[tuple[int, Progress]] = []
    for row in rows:
        samples = sorted(
            (MeterSample(ms_to_datetime(u.body["ts"]), r["energy_wh"], r["power_w"])
             for port_id, r, u in readings[row.public_id] if port_id == row.port_id),
            key=lambda s: s.at,
        )
        if not samples:
            continue
        tariff = tariffs[row.tariff_version_id]
        progress = advance(row, tariff, memory.state_of(row, tariff), samples)
        if progress is not None:
            changed.append((row.id, progress))
    if not changed:
        return
    written: dict[int, tuple[str, RunningCost]] = {}
    values = []
    for i, p in changed:
        state = None
        if p.running is not None:
            state = orjson.dumps(p.running.to_state()).decode()
            written[i] = (state, p.running)
        values.append({"s_id": i, "s_running": state, "s_cost": p.cost_fen,
                       "s_energy": p.last_energy_wh, "s_power": p.power_w,
                       "s_peak": p.peak_power_w, "s_at": p.last_meter_at,
                       "s_start_energy": p.start_energy_wh})
    if is_pg:
        session.execute(_PG_UPDATE_RUNNING, {"rows": telemetry.pg_rows(values)})
    else:
        session.execute(_UPDATE_RUNNING, values)
    ctx.after_commit.append(lambda: memory.remember(written))
    ids = {i for i, _ in changed}
    for obj in list(session.identity_map.values()):  # loaded earlier in this batch: stale now
        if isinstance(obj, ChargingSession) and obj.id in ids:
            session.expire(obj)
    for session_id in sorted(i for i, p in changed if p.stop):
        charging = session.get(ChargingSession, session_id)
        assert charging is not None
        send_stop(session, charging, StopReason.BALANCE, ctx.now)
        ctx.nudge = True


telemetry.BATCH_HOOKS.append(update_running_sessions)


def _expired_start(session: Session, command: DownlinkCommand) -> None:
    """A start command nobody acked: the session fails and its money is released."""
    if command.msg_type != "start":
        return
    public_id = command.payload.get("session_id")
    charging = session.execute(
        select(ChargingSession).where(ChargingSession.public_id == public_id)
    ).scalar_one_or_none()
    if charging is not None and charging.status == SessionStatus.STARTING.value:
        _fail(session, charging, "ack_timeout", utcnow(), cancel=True)


outbox.EXPIRY_HOOKS.append(_expired_start)


# --- reading sessions --------------------------------------------------------------------


@dataclass(frozen=True)
class LiveView:
    session: ChargingSession
    energy_wh: int
    elapsed_s: int
    remaining_s: int | None
    available_fen: int | None


def live_view(uow: UnitOfWork, actor: Actor, public_id: str) -> LiveView:
    """What the phone and the console show while charging (and the receipt after)."""
    session = uow.session
    charging = session.execute(
        select(ChargingSession).where(ChargingSession.public_id == public_id)
    ).scalar_one_or_none()
    if charging is None:
        raise NotFound("no such charging session")
    _check_can_see(session, actor, charging)
    now = utcnow()
    energy = 0
    if charging.start_energy_wh is not None:
        energy = (charging.end_energy_wh or charging.last_energy_wh or
                  charging.start_energy_wh) - charging.start_energy_wh
    started = charging.started_at
    end = charging.ended_at or now
    elapsed = int((end - started).total_seconds()) if started else 0
    remaining: int | None = None
    available: int | None = None
    if charging.status in (SessionStatus.ACTIVE.value, SessionStatus.STARTING.value):
        version = session.get(TariffVersion, charging.tariff_version_id)
        assert version is not None
        remaining = estimate_remaining_seconds(
            tariff_of(version), charging.max_amount_fen, charging.cost_fen,
            charging.power_w, now)
        if charging.max_minutes and started:
            by_time = charging.max_minutes * 60 - elapsed
            remaining = by_time if remaining is None else min(remaining, by_time)
    if charging.charging_account_id is not None:
        account = session.get(ChargingAccount, charging.charging_account_id)
        assert account is not None
        available = ledger.balance_of(session, account).available_fen
    return LiveView(charging, max(energy, 0), max(elapsed, 0),
                    None if remaining is None else max(remaining, 0), available)


def _check_can_see(session: Session, actor: Actor, charging: ChargingSession) -> None:
    if actor.is_staff:
        access.get_community(session, actor, charging.community_id)
        return
    if charging.user_id == actor.user_id:
        return
    if charging.charging_account_id and access.is_bound(session, actor.user_id,
                                                         charging.charging_account_id):
        return
    raise NotFound("no such charging session")


def list_sessions(uow: UnitOfWork, actor: Actor, *, charging_account_id: int | None = None,
                  community_id: int | None = None, status: str | None = None,
                  limit: int = 50, before_id: int | None = None) -> list[ChargingSession]:
    """History: a resident's (per account or across all bound accounts), or staff's."""
    from app.models import AccountBinding

    stmt = select(ChargingSession)
    if actor.is_staff:
        stmt = stmt.where(ChargingSession.community_id.in_(access.scoped_community_ids(actor)))
    else:
        bound = select(AccountBinding.charging_account_id).where(
            AccountBinding.user_id == actor.user_id)
        stmt = stmt.where((ChargingSession.charging_account_id.in_(bound))
                          | (ChargingSession.user_id == actor.user_id))
    if charging_account_id is not None:
        access.get_charging_account(uow.session, actor, charging_account_id)
        stmt = stmt.where(ChargingSession.charging_account_id == charging_account_id)
    if community_id is not None:
        stmt = stmt.where(ChargingSession.community_id == community_id)
    if status is not None:
        stmt = stmt.where(ChargingSession.status == status)
    if before_id is not None:
        stmt = stmt.where(ChargingSession.id < before_id)
    return list(uow.session.execute(stmt.order_by(ChargingSession.id.desc()).limit(limit))
                .scalars())


# --- jobs ------------------------------------------------------------------------------


def close_abandoned_sessions(uow: UnitOfWork, *, offline_timeout_s: int = 1800,
                             now: datetime | None = None) -> int:
    """Sessions on piles offline for too long are billed to their last reading.

    If the pile later uploads its own end, ``settle_session`` reconciles the difference.
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=offline_timeout_s)
    closed = 0
    with uow:
        rows = uow.session.execute(
            select(ChargingSession).join(Pile, Pile.id == ChargingSession.pile_id).where(
                ChargingSession.status.in_([SessionStatus.ACTIVE.value,
                                            SessionStatus.STOPPING.value]),
                Pile.online.is_(False), Pile.went_offline_at < cutoff,
            ).with_for_update(skip_locked=True, of=ChargingSession)
        ).scalars().all()
        for charging in rows:
            settle_session(uow.session, charging, reason=StopReason.PILE_OFFLINE,
                           end_energy_wh=charging.last_energy_wh,
                           ended_at=charging.last_meter_at or charging.started_at or now,
                           now=now)
            closed += 1
        uow.commit()
    return closed

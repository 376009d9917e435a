"""Commands to piles: written with the state change that causes them, sent after commit.

A command is a row (the outbox). The bridge sends due rows, re-sends until the
pile acks or the command expires; an expired command is a visible failure,
never a silent hang. Piles de-duplicate by ``cmd_id``, so re-sending is safe.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app import protocol
from app.models import DownlinkCommand, Pile, PileEvent
from app.models.base import utcnow

DEFAULT_TTL_S = 60
NOTIFY_CHANNEL = "evc_outbox"
ACK_TIMEOUT_S = protocol.ACK_TIMEOUT_S
FIRE_AND_FORGET = frozenset({"auth_reply", "time_sync", "balance"})


@dataclass(frozen=True)
class OutgoingMessage:
    command_id: int
    topic: str
    payload: bytes


def enqueue_command(
    session: Session,
    pile_id: int,
    msg_type: str,
    body: dict[str, Any],
    *,
    ttl_s: int = DEFAULT_TTL_S,
    now: datetime | None = None,
) -> DownlinkCommand:
    """Add a command to the outbox in the caller's transaction (validated now, not later)."""
    now = now or utcnow()
    expires = now + timedelta(seconds=ttl_s)
    payload = {
        "v": protocol.PROTOCOL_VERSION,
        "cmd_id": uuid.uuid4().hex,
        "ts": int(now.timestamp() * 1000),
        "expires_at": int(expires.timestamp() * 1000),
        **body,
    }
    protocol.validate_downlink(msg_type, payload)
    command = DownlinkCommand(
        cmd_id=payload["cmd_id"], pile_id=pile_id, msg_type=msg_type, payload=payload,
        status="pending", attempts=0, expects_ack=msg_type not in FIRE_AND_FORGET,
        next_attempt_at=now, expires_at=expires,
    )
    session.add(command)
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        # Delivered to the bridges' LISTEN at commit (never if we roll back): the command
        # leaves within milliseconds, with no extra connection from the web process.
        session.execute(text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"))
    return command


def claim_due(session: Session, now: datetime, limit: int = 200) -> list[OutgoingMessage]:
    """Due commands to (re)send, marked as sent; several bridges skip each other's rows."""
    stmt = (
        select(DownlinkCommand, Pile.serial)
        .join(Pile, Pile.id == DownlinkCommand.pile_id)
        .where(DownlinkCommand.status.in_(("pending", "sent")),
               DownlinkCommand.next_attempt_at <= now,
               DownlinkCommand.expires_at > now)
        .order_by(DownlinkCommand.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=DownlinkCommand)
    )
    out: list[OutgoingMessage] = []
    for command, serial in session.execute(stmt).all():
        command.attempts += 1
        command.sent_at = now
        if command.expects_ack:
            command.status = "sent"
            command.next_attempt_at = now + timedelta(seconds=ACK_TIMEOUT_S)
        else:
            command.status = "acked"  # nothing to wait for
        out.append(OutgoingMessage(
            command.id, protocol.downlink_topic(serial, command.msg_type),
            protocol.encode(command.payload)))
    return out


ExpiryHook = Callable[[Session, DownlinkCommand], None]
EXPIRY_HOOKS: list[ExpiryHook] = []


def expire_overdue(session: Session, now: datetime) -> list[DownlinkCommand]:
    """Commands past their expiry without an ack fail visibly (event + hooks)."""
    overdue = list(session.execute(
        select(DownlinkCommand)
        .where(DownlinkCommand.status.in_(("pending", "sent")),
               DownlinkCommand.expires_at <= now)
        .with_for_update(skip_locked=True)
    ).scalars())
    for command in overdue:
        command.status = "expired"
        command.result_reason = "no_ack" if command.attempts else "never_sent"
        session.add(PileEvent(pile_id=command.pile_id, kind="command_expired", at=now,
                              detail={"cmd_id": command.cmd_id, "type": command.msg_type,
                                      "attempts": command.attempts}))
        for hook in EXPIRY_HOOKS:
            hook(session, command)
    return overdue

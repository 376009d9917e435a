"""The resident's *charge finished* WeChat message, queued when their session is settled.

``app.services.charging`` calls its ``ON_SETTLED`` hooks in the settling transaction, once
per session, with the session's figures set; :func:`on_settled` is one. When the template
is configured (``NOTIFY_WECHAT_CHARGE_FINISHED_TEMPLATE_ID``, with ``WECHAT_APPID`` and
``WECHAT_SECRET``) and the session's user, a resident or visitor with an openid, holds an
unused accept of that template (``app.services.subscriptions``), one accept is spent
(``used_for = "session:<public_id>"``) and one ``user_notifications`` row is queued
(``dedup_key = "charge_finished:<public_id>"``), in that same transaction; it is sent
after the commit like every notification (``app.services.notifications``).

Both writes share one SAVEPOINT: the accept stays spent only if the row is new, so a
second run for the same session spends and sends nothing; and a failure here is logged
and rolled back to the savepoint, never undoing the settlement it rides on.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from app.config import Settings
from app.domain.charging import SessionStatus
from app.models import ChargingSession, Community, User
from app.models.base import utcnow
from app.services import charging, context, notifications, subscriptions

log = logging.getLogger(__name__)

CHARGE_FINISHED = "charge_finished"  # UserNotification.kind, WeChatSubscription.kind
RECIPIENT_ROLES = ("resident", "visitor")  # mini-program users
RECEIPT_PAGE = "pages/receipt/receipt"  # miniprogram/app.json


def charge_finished_configured(settings: Settings) -> bool:
    return bool(settings.notify_wechat_charge_finished_template_id and settings.wechat_appid
                and settings.wechat_secret)


def receipt_page(public_id: str) -> str:
    return f"{RECEIPT_PAGE}?session_id={public_id}"


def charge_finished_payload(session: Session, charge: ChargingSession) -> dict[str, Any]:
    """The facts of a settled session the message is rendered from (``app.notify.wechat``)."""
    community = session.get(Community, charge.community_id)
    assert community is not None
    start, end = charge.start_energy_wh, charge.end_energy_wh
    return {
        "type": CHARGE_FINISHED, "session_id": charge.public_id,
        "stop_reason": charge.stop_reason,
        "energy_wh": max(0, end - start) if start is not None and end is not None else 0,
        "cost_fen": charge.cost_fen,
        "ended_at": charge.ended_at.isoformat() if charge.ended_at else None,
        "timezone": community.timezone, "community_name": community.name,
        "pile_serial": charge.pile.serial, "port_no": charge.port.number,
        "page": receipt_page(charge.public_id),
    }


def on_settled(session: Session, charge: Any, refund_fen: int) -> None:
    """``charging.ON_SETTLED`` hook: spend the user's accept and queue their message."""
    if charge.status != SessionStatus.SETTLED.value or charge.user_id is None:
        return  # e.g. a paid visitor session that could not start (visitors.py)
    settings = context.settings()
    if not charge_finished_configured(settings):
        return
    user = session.get(User, charge.user_id)
    if (user is None or not user.openid or not user.is_active
            or user.role not in RECIPIENT_ROLES):
        return
    try:
        queued = _spend_and_queue(session, charge, user,
                                  settings.notify_wechat_charge_finished_template_id)
    except Exception:  # a message is never worth a settlement
        log.exception("session %s: the charge-finished message could not be queued",
                      charge.public_id)
        return
    if queued:
        notifications.run_queued_hooks_after_commit(session)


def _spend_and_queue(session: Session, charge: ChargingSession, user: User,
                     template_id: str) -> bool:
    now = charge.settled_at or utcnow()
    savepoint = session.begin_nested()
    try:
        if (subscriptions.claim(session, user.id, template_id, f"session:{charge.public_id}",
                                now)
                and notifications.queue_user_message(
                    session, user_id=user.id, kind=CHARGE_FINISHED, channel="wechat",
                    recipient=user.openid or "", template_id=template_id,
                    payload=charge_finished_payload(session, charge),
                    dedup_key=f"{CHARGE_FINISHED}:{charge.public_id}", now=now)):
            savepoint.commit()
            return True
        savepoint.rollback()  # no accept, or already queued: nothing spent
        return False
    except Exception:
        savepoint.rollback()
        raise


if on_settled not in charging.ON_SETTLED:
    charging.ON_SETTLED.append(on_settled)

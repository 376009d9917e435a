"""WeChat subscribe messages (订阅消息) a mini-program user accepted.

``wx.requestSubscribeMessage`` asks the user about up to three templates; each *accept*
lets the server send that template to that user exactly once (a one-time subscription),
and accepts add up. The mini-program reports the result here; every accept is one row
in ``wechat_subscriptions``, and whoever sends such a message first claims a row
(:func:`claim`): no row, no message (WeChat would refuse it with 43101 anyway).

Spent by: the alarm path (``app.services.incidents``: a resident whose charge an incident
concerns gets the alarm template when they hold an unused accept for
``NOTIFY_WECHAT_TEMPLATE_ID``), and the settlement (``app.services.charge_notices``: the
charge-finished template, ``NOTIFY_WECHAT_CHARGE_FINISHED_TEMPLATE_ID``, once per session).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.domain.access import Actor
from app.domain.errors import InvalidInput, NotFound
from app.models import User, WeChatSubscription
from app.models.base import utcnow
from app.services.uow import UnitOfWork

# Unused accepts kept per user and template; more taps add nothing (bounds the table).
MAX_UNUSED_PER_TEMPLATE = 20


@dataclass(frozen=True)
class Available:
    template_id: str
    kind: str
    available: int


def _available(session: Session, user_id: int) -> list[Available]:
    rows = session.execute(
        select(WeChatSubscription.template_id, WeChatSubscription.kind, func.count())
        .where(WeChatSubscription.user_id == user_id, WeChatSubscription.used_at.is_(None))
        .group_by(WeChatSubscription.template_id, WeChatSubscription.kind)
        .order_by(WeChatSubscription.kind, WeChatSubscription.template_id)
    ).all()
    return [Available(template_id, kind, n) for template_id, kind, n in rows]


def record(uow: UnitOfWork, actor: Actor, results: Iterable[Mapping[str, str]]
           ) -> list[Available]:
    """Store what ``wx.requestSubscribeMessage`` answered: one row per ``accept`` (other
    answers — reject, ban, filter — grant nothing). Returns what the user now holds."""
    with uow:
        session = uow.session
        user = session.get(User, actor.user_id)
        if user is None:
            raise NotFound("no such user")
        if not user.openid:
            raise InvalidInput("log in with WeChat first: subscribe messages go to an openid")
        now = utcnow()
        for item in results:
            if item["result"] != "accept":
                continue
            unused = session.execute(
                select(func.count()).select_from(WeChatSubscription).where(
                    WeChatSubscription.user_id == user.id,
                    WeChatSubscription.template_id == item["template_id"],
                    WeChatSubscription.used_at.is_(None))
            ).scalar_one()
            if unused >= MAX_UNUSED_PER_TEMPLATE:
                continue
            session.add(WeChatSubscription(user_id=user.id, template_id=item["template_id"],
                                           kind=item["kind"], created_at=now))
            session.flush()
        uow.commit()
        return _available(session, user.id)


def available(uow: UnitOfWork, actor: Actor) -> list[Available]:
    """The caller's unused accepts, per template."""
    return _available(uow.session, actor.user_id)


def claim(session: Session, user_id: int, template_id: str, used_for: str,
          now: datetime | None = None) -> bool:
    """Spend one of the user's unused accepts of ``template_id`` (oldest first), in the
    caller's transaction. False when there is none: the message must not be sent."""
    if not template_id:
        return False
    for _ in range(3):  # another transaction may spend the oldest first: take the next
        oldest = (select(WeChatSubscription.id)
                  .where(WeChatSubscription.user_id == user_id,
                         WeChatSubscription.template_id == template_id,
                         WeChatSubscription.used_at.is_(None))
                  .order_by(WeChatSubscription.id).limit(1).scalar_subquery())
        result = session.execute(
            update(WeChatSubscription)
            .where(WeChatSubscription.id == oldest, WeChatSubscription.used_at.is_(None))
            .values(used_at=now or utcnow(), used_for=used_for[:100])
            .execution_options(synchronize_session=False))
        if getattr(result, "rowcount", 0):
            return True
        if session.execute(select(oldest)).scalar() is None:  # none left
            return False
    return False

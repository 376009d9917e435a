"""WeChat mini-program subscribe messages (订阅消息) through wechatpy.

``WeChatClient.wxa.send_subscribe_message(openid, template_id, data, page)`` with the API
base URL configurable (``WECHAT_API_BASE_URL``, as ``app/integrations/wechat.py`` does, so
tests point it at a local server) and the access_token shared by every process through the
``shared_tokens`` table. Each token read or write is its own short transaction: the send
itself happens with no transaction open (on SQLite that would hold the write lock).

The template is chosen in the mini-program's admin console (``NOTIFY_WECHAT_TEMPLATE_ID``)
and must have these keywords, filled as follows::

    thing1   place: community, pile, port     (≤ 20 characters)
    phrase2  severity: 紧急 / 重要 / 一般        (≤ 5)
    thing3   what: 烟雾报警, 过流, ...            (≤ 20)
    time4    when it happened, local time
    thing5   incident number and a hint       (≤ 20)

The resident's *charge finished* message (``user_notifications``, kind
``charge_finished``, queued at settlement by ``app.services.charge_notices``) uses its own
template (``NOTIFY_WECHAT_CHARGE_FINISHED_TEMPLATE_ID``, stored on the row) and opens
``pages/receipt/receipt?session_id=…``. Which keyword carries what is the setting
``NOTIFY_WECHAT_CHARGE_FINISHED_FIELDS`` (``what=keyword`` pairs; fields left out are not
sent), by default::

    reason=phrase1             why it ended: 充满 / 拔枪 / 用户停止 / 余额不足 / 告警停止 …  (≤ 5)
    energy=character_string2   energy: "1.50kWh"
    cost=amount3               what was charged: "¥1.50"
    ended_at=time4             when it ended, local time
    place=thing5               community, pile, port      (≤ 20)

A user receives a subscribe message only after accepting it in the mini-program
(``wx.requestSubscribeMessage``); WeChat answers 43101 otherwise, which is permanent for
this message (retrying cannot help).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.orm import Session
from wechatpy.client import WeChatClient
from wechatpy.client.api import WeChatWxa
from wechatpy.exceptions import WeChatClientException

from app.integrations.wechat import DatabaseTokenStorage
from app.notify.base import STOP_REASON_LABELS, DeliveryError, Message, kwh, yuan
from app.services.charge_notices import CHARGE_FINISHED

PERMANENT_ERRCODES = frozenset({40003, 43101, 47003})  # bad openid, refused, bad data


class _ShortTransactionStorage(DatabaseTokenStorage):  # type: ignore[misc]
    """The shared token storage, committing (or ending) its own transaction each time."""

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return super().get(key, default)
        finally:
            self._session.commit()

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        super().set(key, value, ttl)
        self._session.commit()

    def delete(self, key: str) -> None:
        super().delete(key)
        self._session.commit()


def subscribe_data(message: Message) -> dict[str, dict[str, str]]:
    return {
        "thing1": {"value": message.short_place(20)},
        "phrase2": {"value": message.severity_label[:5]},
        "thing3": {"value": message.kind_label[:20]},
        "time4": {"value": message.local_time()},
        "thing5": {"value": f"事件{message.get('incident_id')} 请尽快处理"[:20]},
    }


def charge_finished_values(message: Message) -> dict[str, str]:
    """What a charge-finished message can say, by field name (the setting maps the names
    to the template's keywords), each within its keyword type's limits."""
    reason = str(message.get("stop_reason") or "")
    return {
        "reason": STOP_REASON_LABELS.get(reason, "已结束")[:5],
        "energy": f"{kwh(int(message.get('energy_wh') or 0))}kWh",
        "cost": yuan(int(message.get("cost_fen") or 0)),
        "ended_at": message.local_time(key="ended_at"),
        "place": message.short_place(20),
    }


def charge_finished_data(message: Message, fields: Iterable[tuple[str, str]]
                         ) -> dict[str, dict[str, str]]:
    values = charge_finished_values(message)
    return {keyword: {"value": values[what]} for what, keyword in fields}


class WeChatSubscribeChannel:
    name = "wechat"

    def __init__(self, appid: str, secret: str, template_id: str, api_base_url: str,
                 session: Session, *, page: str = "", timeout_s: float = 5,
                 charge_finished_fields: Iterable[tuple[str, str]] = ()) -> None:
        base = api_base_url.rstrip("/") + "/"

        class _Client(WeChatClient):  # type: ignore[misc]
            API_BASE_URL = base + "cgi-bin/"

            def fetch_access_token(self) -> Any:
                return self._fetch_access_token(
                    url=base + "cgi-bin/token",
                    params={"grant_type": "client_credential", "appid": self.appid,
                            "secret": self.secret},
                )

        class _Wxa(WeChatWxa):  # type: ignore[misc]
            API_BASE_URL = base

        self._client = _Client(appid, secret, session=_ShortTransactionStorage(session),
                               timeout=timeout_s)
        self._wxa = _Wxa(self._client)
        self.template_id = template_id
        self.page = page or None
        self.charge_finished_fields = tuple(charge_finished_fields)

    def send(self, recipient: str, message: Message) -> None:
        """An incident's alarm (the channel's template), or a user message with its own
        template and data by its payload's ``type`` (e.g. ``charge_finished``)."""
        template_id = message.template_id or self.template_id
        if not template_id:
            raise DeliveryError("no WeChat template configured for this message",
                                permanent=True)
        page = message.get("page") or self.page  # a charging user's: their receipt
        if page and not message.get("page"):
            page = f"{page}{'&' if '?' in page else '?'}incident={message.get('incident_id')}"
        data = (charge_finished_data(message, self.charge_finished_fields)
                if message.get("type") == CHARGE_FINISHED else subscribe_data(message))
        try:
            self._wxa.send_subscribe_message(recipient, template_id, data, page=page)
        except WeChatClientException as exc:
            raise DeliveryError(f"WeChat refused: {exc.errcode} {exc.errmsg}",
                                permanent=exc.errcode in PERMANENT_ERRCODES) from exc
        except Exception as exc:  # network: requests errors surface as various types
            raise DeliveryError(f"WeChat unreachable: {exc.__class__.__name__}") from exc

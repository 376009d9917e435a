"""Notification channels for incidents and users' own messages: WeChat subscribe
messages, SMS, webhook.

Pluggable behind one interface (:class:`app.notify.base.Channel`: ``send(recipient,
message)``, raising :class:`~app.notify.base.DeliveryError`). The service layer queues
rows (``incident_notifications`` in the transaction that opens or escalates an incident,
``user_notifications`` e.g. in the one that settles a charge);
:mod:`app.notify.dispatcher` and the jobs process send them after commit and retry
(``app.services.notifications.deliver_due``). A channel is active when its settings are
present (``app.services.incidents.configured_channels``; WeChat also when only the
charge-finished template is set); only active channels get rows queued.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.config import Settings
from app.notify.base import Channel, DeliveryError, Message
from app.notify.sms import PROVIDERS, SmsChannel
from app.notify.webhook import WebhookChannel
from app.notify.wechat import WeChatSubscribeChannel
from app.services.charge_notices import charge_finished_configured
from app.services.incidents import configured_channels

__all__ = ["Channel", "DeliveryError", "Message", "build_channels"]


def build_channels(settings: Settings, session: Session) -> dict[str, Channel]:
    """The active channels for these settings (``session`` keeps WeChat's shared token)."""
    active = configured_channels(settings)
    channels: dict[str, Channel] = {}
    if "webhook" in active:
        channels["webhook"] = WebhookChannel(settings.notify_webhook_secret,
                                             timeout_s=settings.notify_timeout_s)
    if "sms" in active:
        factory = PROVIDERS.get(settings.notify_sms_provider)
        if factory is not None:
            channels["sms"] = SmsChannel(factory(settings), settings.notify_sms_template)
    if "wechat" in active or charge_finished_configured(settings):
        channels["wechat"] = WeChatSubscribeChannel(
            settings.wechat_appid, settings.wechat_secret, settings.notify_wechat_template_id,
            settings.wechat_api_base_url, session, page=settings.notify_wechat_page,
            timeout_s=settings.notify_timeout_s,
            charge_finished_fields=settings.notify_wechat_charge_finished_fields)
    return channels

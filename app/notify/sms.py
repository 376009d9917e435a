"""SMS: one small provider interface, and a generic signed HTTP gateway behind it.

Chinese SMS providers only send pre-approved *templates* with parameters, under an approved
*sign name* (签名), so the interface is template-shaped::

    class SmsProvider(Protocol):
        def send_template(self, phone: str, template: str, params: dict[str, str],
                          *, request_id: str) -> None: ...

:class:`SmsChannel` turns an incident into the template parameters
(:func:`template_params`: ``kind``, ``severity``, ``place``, ``time``, ``id``) and hands
them to the provider chosen by ``NOTIFY_SMS_PROVIDER`` (see :data:`PROVIDERS`).

The built-in ``http`` provider (:class:`HttpSmsGateway`) POSTs JSON to ``NOTIFY_SMS_URL``::

    {"phone": "13800000000", "sign_name": ..., "template": ..., "params": {...},
     "request_id": "evc-<notification id>"}

signed with the key pair ``NOTIFY_SMS_KEY_ID`` / ``NOTIFY_SMS_SECRET``::

    X-SMS-Key: <key id>
    X-SMS-Timestamp: <unix seconds>
    X-SMS-Nonce: <random hex>
    X-SMS-Signature: base64(HMAC-SHA256(secret,
        "POST\\n" + path + "\\n" + timestamp + "\\n" + nonce + "\\n" + hex(SHA-256(body))))

and expects a 2xx answer whose JSON ``code`` is ``"OK"`` (or no ``code`` at all). It fits an
in-house SMS relay or a carrier's HTTP interface with a thin adapter in front.

Plugging in Aliyun or Tencent Cloud
-----------------------------------
Write a class with ``send_template`` and register it in :data:`PROVIDERS` (one line), then
set ``NOTIFY_SMS_PROVIDER`` to its name; ``NOTIFY_SMS_KEY_ID``/``NOTIFY_SMS_SECRET`` carry the
AccessKey, ``NOTIFY_SMS_SIGN_NAME``/``NOTIFY_SMS_TEMPLATE`` the approved sign and template.

* Aliyun (dysmsapi ``SendSms``): ``pip install alibabacloud_dysmsapi20170525``; call
  ``Client(Config(access_key_id=..., access_key_secret=..., endpoint="dysmsapi.aliyuncs.com"))
  .send_sms(SendSmsRequest(phone_numbers=phone, sign_name=..., template_code=template,
  template_param=json.dumps(params), out_id=request_id))`` and raise
  :class:`DeliveryError` unless ``body.code == "OK"`` (``isv.MOBILE_NUMBER_ILLEGAL`` is
  permanent).
* Tencent Cloud (``SendSms``, API 2021-01-11): ``pip install tencentcloud-sdk-python-sms``;
  ``SmsClient(Credential(key_id, secret), "ap-guangzhou").SendSms(req)`` with
  ``PhoneNumberSet=["+86" + phone]``, ``SmsSdkAppId``, ``SignName``, ``TemplateId`` and
  ``TemplateParamSet`` = the values of ``params`` in the template's order; raise unless
  ``SendStatusSet[0].Code == "Ok"``.

Both SDKs sign their requests themselves (Aliyun signature v3, Tencent TC3-HMAC-SHA256).
Neither is a dependency of this project: install the one you use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlparse

import requests

from app.notify.base import DeliveryError, Message


class SmsProvider(Protocol):
    def send_template(self, phone: str, template: str, params: dict[str, str], *,
                      request_id: str) -> None:
        """Send or raise :class:`DeliveryError`."""


def string_to_sign(path: str, timestamp: str, nonce: str, body: bytes) -> str:
    return "\n".join(["POST", path, timestamp, nonce, hashlib.sha256(body).hexdigest()])


def signature(secret: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), string_to_sign(path, timestamp, nonce, body).encode(),
                   hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


class HttpSmsGateway:
    """The generic signed HTTP gateway (module docstring)."""

    def __init__(self, url: str, key_id: str, secret: str, sign_name: str, *,
                 timeout_s: float = 5, clock: Callable[[], float] = time.time) -> None:
        self.url, self.key_id, self.secret, self.sign_name = url, key_id, secret, sign_name
        self.path = urlparse(url).path or "/"
        self.timeout_s = timeout_s
        self.clock = clock

    def send_template(self, phone: str, template: str, params: dict[str, str], *,
                      request_id: str) -> None:
        body = json.dumps({"phone": phone, "sign_name": self.sign_name, "template": template,
                           "params": params, "request_id": request_id},
                          ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        timestamp, nonce = str(int(self.clock())), secrets.token_hex(8)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "X-SMS-Key": self.key_id,
            "X-SMS-Timestamp": timestamp,
            "X-SMS-Nonce": nonce,
            "X-SMS-Signature": signature(self.secret, self.path, timestamp, nonce, body),
        }
        try:
            res = requests.post(self.url, data=body, headers=headers, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise DeliveryError(f"SMS gateway unreachable: {exc.__class__.__name__}") from exc
        if not 200 <= res.status_code < 300:
            raise DeliveryError(f"SMS gateway answered {res.status_code}")
        try:
            answer = res.json()
        except ValueError:
            answer = {}
        code = answer.get("code", "OK") if isinstance(answer, dict) else "OK"
        if code != "OK":
            raise DeliveryError(f"SMS gateway refused: {code}",
                                permanent=str(code).startswith("invalid_"))


# name -> factory(settings) for NOTIFY_SMS_PROVIDER
PROVIDERS: dict[str, Callable[..., SmsProvider]] = {
    "http": lambda s: HttpSmsGateway(s.notify_sms_url, s.notify_sms_key_id,
                                     s.notify_sms_secret, s.notify_sms_sign_name,
                                     timeout_s=s.notify_timeout_s),
}


def template_params(message: Message) -> dict[str, str]:
    """What the approved template may show. Chinese providers cap a variable at 20-35
    characters, so each is cut to 20."""
    return {
        "kind": message.kind_label[:20],
        "severity": message.severity_label[:20],
        "place": message.short_place(20),
        "time": message.local_time()[:20],
        "id": str(message.get("incident_id"))[:20],
    }


class SmsChannel:
    name = "sms"

    def __init__(self, provider: SmsProvider, template: str) -> None:
        self.provider = provider
        self.template = template

    def send(self, recipient: str, message: Message) -> None:
        self.provider.send_template(recipient, self.template, template_params(message),
                                    request_id=f"evc-{message.delivery_id}")

"""The WeChat mini-program's server API through wechatpy.

Log-in (code2Session) and the user's phone number (``getuserphonenumber``: wechatpy 1.8
has no method for it, so it is posted through the same client, which adds the shared
access_token and retries once with a new one if WeChat says it expired).

Two things wechatpy does not do for a multi-worker deployment, done here:
the API base URL is configurable (tests point it at a local server that answers
as WeChat does), and the access_token is kept in the database, shared by all
workers, instead of per process (workers would otherwise invalidate each
other's tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session
from wechatpy.client import WeChatClient
from wechatpy.client.api import WeChatWxa
from wechatpy.exceptions import WeChatClientException
from wechatpy.session import SessionStorage

from app.domain.errors import (
    AuthenticationFailed,
    ConfigurationError,
    InvalidInput,
    UpstreamUnavailable,
)
from app.models import SharedToken
from app.models.base import utcnow


class DatabaseTokenStorage(SessionStorage):  # type: ignore[misc]
    """wechatpy's session storage on the shared_tokens table."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, key: str, default: Any = None) -> Any:
        row = self._session.get(SharedToken, key)
        if row is None or (row.expires_at is not None and row.expires_at <= utcnow()):
            return default
        return row.value

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        expires = utcnow() + timedelta(seconds=ttl) if ttl else None
        row = self._session.get(SharedToken, key)
        if row is None:
            self._session.add(SharedToken(key=key, value=str(value), expires_at=expires))
        else:
            row.value, row.expires_at = str(value), expires
        self._session.flush()

    def delete(self, key: str) -> None:
        row = self._session.get(SharedToken, key)
        if row is not None:
            self._session.delete(row)
            self._session.flush()


@dataclass(frozen=True)
class WeChatSession:
    openid: str
    unionid: str | None
    session_key: str


# system busy, API call limits: worth trying again later
TRANSIENT_ERRCODES = frozenset({-1, 45009, 45011})
# our appid/secret/server are not accepted (e.g. fetching the access_token): not the code
CREDENTIAL_ERRCODES = frozenset({40013, 40125, 40164, 41002, 41004})


@dataclass(frozen=True)
class PhoneNumber:
    """``phone_info`` of getuserphonenumber: the number WeChat vouches for, and the
    watermark saying for which mini-program (appid) and when it was handed out."""

    phone_number: str  # with the country code for foreign numbers: "+1 202…"
    pure_phone_number: str  # without it
    country_code: str
    watermark_appid: str
    watermark_timestamp: int


class MiniProgramClient:
    def __init__(self, appid: str, secret: str, api_base_url: str, session: Session) -> None:
        if not appid or not secret:
            raise ConfigurationError("WECHAT_APPID and WECHAT_SECRET are needed for WeChat login")
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

        self._client = _Client(appid, secret, session=DatabaseTokenStorage(session), timeout=5)
        self._wxa = _Wxa(self._client)

    def code_to_session(self, js_code: str) -> WeChatSession:
        """Exchange ``wx.login``'s code for the user's openid (code2Session)."""
        try:
            data = self._wxa.code_to_session(js_code)
        except WeChatClientException as exc:
            raise AuthenticationFailed("WeChat rejected the login code",
                                       errcode=exc.errcode) from exc
        except Exception as exc:  # network failure: say so, do not 500
            raise AuthenticationFailed("WeChat could not be reached; try again") from exc
        openid = data.get("openid") if isinstance(data, dict) else None
        if not openid:
            raise AuthenticationFailed("WeChat returned no openid")
        return WeChatSession(openid, data.get("unionid"), data.get("session_key", ""))

    def phone_number(self, code: str) -> PhoneNumber:
        """Trade a ``getPhoneNumber`` button's code for the user's number (one use, 5 min)."""
        try:
            data = self._wxa._post("wxa/business/getuserphonenumber", data={"code": code})
        except WeChatClientException as exc:
            if exc.errcode is None or exc.errcode in TRANSIENT_ERRCODES:
                raise UpstreamUnavailable("WeChat could not be reached; try again") from exc
            if exc.errcode in CREDENTIAL_ERRCODES:
                raise ConfigurationError("WeChat refused the mini-program's credentials",
                                         errcode=exc.errcode) from exc
            raise InvalidInput("WeChat rejected the phone number code", field="code",
                               errcode=exc.errcode) from exc
        except Exception as exc:  # network failure
            raise UpstreamUnavailable("WeChat could not be reached; try again") from exc
        info = data.get("phone_info") if isinstance(data, dict) else None
        watermark = info.get("watermark") if isinstance(info, dict) else None
        if not isinstance(info, dict) or not isinstance(watermark, dict):
            raise UpstreamUnavailable("WeChat returned no phone number")
        try:
            return PhoneNumber(
                phone_number=str(info.get("phoneNumber") or ""),
                pure_phone_number=str(info.get("purePhoneNumber") or ""),
                country_code=str(info.get("countryCode") or ""),
                watermark_appid=str(watermark.get("appid") or ""),
                watermark_timestamp=int(watermark.get("timestamp") or 0),
            )
        except (TypeError, ValueError) as exc:
            raise UpstreamUnavailable("WeChat returned a malformed phone number") from exc

"""The WeChat mini-program's server API through wechatpy.

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

from app.domain.errors import AuthenticationFailed, ConfigurationError
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

"""A local HTTP server answering as WeChat's open API does (code2Session, token)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.support.local_http import LocalHTTPFake


class FakeWeChat(LocalHTTPFake):
    def __init__(self, appid: str, secret: str) -> None:
        self.appid, self.secret = appid, secret
        self.codes: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.url = ""

    def issue_code(self, code: str, openid: str, unionid: str | None = None) -> None:
        """What wx.login would have handed the phone for this user."""
        answer: dict[str, Any] = {"openid": openid, "session_key": "c2Vzc2lvbmtleQ=="}
        if unionid:
            answer["unionid"] = unionid
        self.codes[code] = answer

    def answer(self, path: str, query: dict[str, list[str]]) -> dict[str, Any]:
        self.requests.append((path, query))
        one = {k: v[0] for k, v in query.items()}
        if path == "/cgi-bin/token":
            if one.get("appid") != self.appid or one.get("secret") != self.secret:
                return {"errcode": 40125, "errmsg": "invalid appsecret"}
            return {"access_token": "ACCESS_TOKEN_1", "expires_in": 7200}
        if path == "/sns/jscode2session":
            if one.get("appid") != self.appid or one.get("secret") != self.secret:
                return {"errcode": 40125, "errmsg": "invalid appsecret"}
            code = one.get("js_code", "")
            if code not in self.codes:
                return {"errcode": 40029, "errmsg": "invalid code"}
            return self.codes.pop(code)  # a code works once
        return {"errcode": 404, "errmsg": "not found"}


    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parsed = urlparse(self.path)
                body = json.dumps(fake.answer(parsed.path, parse_qs(parsed.query))).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@contextmanager
def running_fake_wechat(appid: str, secret: str) -> Iterator[FakeWeChat]:
    with FakeWeChat(appid, secret) as fake:
        fake.url = fake.base_url + "/"
        yield fake

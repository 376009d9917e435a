"""A local HTTP server answering as WeChat's open API does (code2Session, token, and
the mini-program's getuserphonenumber)."""

from __future__ import annotations

import json
import time
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
        self.phone_codes: dict[str, dict[str, Any]] = {}
        self.access_token = "ACCESS_TOKEN_1"
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.url = ""

    def issue_code(self, code: str, openid: str, unionid: str | None = None) -> None:
        """What wx.login would have handed the phone for this user."""
        answer: dict[str, Any] = {"openid": openid, "session_key": "c2Vzc2lvbmtleQ=="}
        if unionid:
            answer["unionid"] = unionid
        self.codes[code] = answer

    def issue_phone_code(self, code: str, phone: str, *, country_code: str = "86",
                         appid: str | None = None) -> None:
        """What a ``getPhoneNumber`` button would have handed the mini-program: ``phone``
        is the pure number; ``appid`` the watermark's (default: ours)."""
        full = phone if country_code == "86" else f"+{country_code} {phone}"
        self.phone_codes[code] = {"phoneNumber": full, "purePhoneNumber": phone,
                                  "countryCode": country_code,
                                  "watermark": {"timestamp": int(time.time()),
                                                "appid": appid or self.appid}}

    def answer(self, path: str, query: dict[str, list[str]],
               body: dict[str, Any] | None = None) -> dict[str, Any]:
        self.requests.append((path, query))
        one = {k: v[0] for k, v in query.items()}
        if path == "/cgi-bin/token":
            if one.get("appid") != self.appid or one.get("secret") != self.secret:
                return {"errcode": 40125, "errmsg": "invalid appsecret"}
            return {"access_token": self.access_token, "expires_in": 7200}
        if path == "/wxa/business/getuserphonenumber":
            if body is None:  # WeChat wants a POST with a JSON body
                return {"errcode": 47001, "errmsg": "data format error"}
            if one.get("access_token") != self.access_token:
                return {"errcode": 40001, "errmsg": "invalid credential, access_token is "
                                                    "invalid or not latest"}
            info = self.phone_codes.pop(str(body.get("code", "")), None)  # works once
            if info is None:
                return {"errcode": 40029, "errmsg": "invalid code"}
            return {"errcode": 0, "errmsg": "ok", "phone_info": info}
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

            def do_POST(self) -> None:
                parsed = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {}
                answer = fake.answer(parsed.path, parse_qs(parsed.query),
                                     body if isinstance(body, dict) else {})
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@contextmanager
def running_fake_wechat(appid: str, secret: str) -> Iterator[FakeWeChat]:
    with FakeWeChat(appid, secret) as fake:
        fake.url = fake.base_url + "/"
        yield fake

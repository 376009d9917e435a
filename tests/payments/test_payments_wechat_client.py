"""WeChat Pay v3 client against a local fake API that checks our Authorization header."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from app.payments.bills import parse_wechat_trade_bill
from app.payments.errors import (
    ProviderRejected,
    ProviderUnavailable,
    SignatureInvalid,
    StaleNotification,
)
from app.payments.wechat_v3 import WeChatPayClient, WeChatRefund
from tests.support.wechatpay_fake import (
    FakeWeChatPayServer,
    WeChatBillLine,
    WeChatPayTestKeys,
    cached_keypair,
    check_authorization,
    make_wechat_config,
    write_wechat_trade_bill,
)

OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


def _order(client: WeChatPayClient, out_trade_no: str = "EVC20251124000001") -> str:
    return client.create_jsapi_order(out_trade_no, "充电桩 A-03 充电", 1230, OPENID)


def test_create_jsapi_order_signs_the_exact_request(
    wechat_client: WeChatPayClient,
    wechat_server: FakeWeChatPayServer,
    wechat_keys: WeChatPayTestKeys,
) -> None:
    expire = datetime(2025, 11, 24, 3, 0, 0, tzinfo=UTC)
    prepay_id = wechat_client.create_jsapi_order(
        "EVC20251124000001", "充电桩 A-03 充电", 1230, OPENID, expire_at=expire, attach="pile=A-03"
    )
    assert prepay_id.startswith("wx")
    (request,) = wechat_server.requests
    assert request.authorization_ok, request.authorization_error
    assert request.method == "POST" and request.target == "/v3/pay/transactions/jsapi"
    assert request.headers["Authorization"].startswith("WECHATPAY2-SHA256-RSA2048 mchid=")
    assert request.headers["Wechatpay-Serial"] == wechat_keys.platform_key_id
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"]
    assert request.json == {
        "appid": wechat_keys.appid,
        "mchid": wechat_keys.mchid,
        "description": "充电桩 A-03 充电",
        "out_trade_no": "EVC20251124000001",
        "notify_url": "https://pay.example.com/api/payments/wechat/notify",
        "amount": {"total": 1230, "currency": "CNY"},
        "payer": {"openid": OPENID},
        "time_expire": "2025-11-24T11:00:00+08:00",
        "attach": "pile=A-03",
    }


def test_fake_rejects_a_forged_authorization(wechat_keys: WeChatPayTestKeys) -> None:
    """The fake's check is real: a request signed with another key is refused (401)."""
    forged = make_wechat_config(
        wechat_keys, merchant_private_key_pem=cached_keypair("intruder").private_pem
    )
    with FakeWeChatPayServer(wechat_keys) as server:
        client = WeChatPayClient(
            make_wechat_config(
                wechat_keys,
                server.base_url,
                merchant_private_key_pem=forged.merchant_private_key_pem,
            )
        )
        with pytest.raises(ProviderRejected) as info:
            _order(client)
    assert info.value.http_status == 401 and info.value.provider_code == "SIGN_ERROR"
    assert server.requests[0].authorization_error == "signature does not verify"
    assert check_authorization(wechat_keys, "GET", "/", b"", "Basic abc", 0) == "bad scheme 'Basic'"


def test_same_order_twice_returns_the_same_prepay_id(
    wechat_client: WeChatPayClient,
) -> None:
    assert _order(wechat_client) == _order(wechat_client)
    with pytest.raises(ProviderRejected) as info:
        wechat_client.create_jsapi_order("EVC20251124000001", "其他", 999, OPENID)
    assert info.value.provider_code == "INVALID_REQUEST"


def test_jsapi_pay_params_verify_with_the_merchant_public_key(
    wechat_client: WeChatPayClient, wechat_keys: WeChatPayTestKeys
) -> None:
    prepay_id = _order(wechat_client)
    params = wechat_client.jsapi_pay_params(prepay_id)
    assert set(params) == {"timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert params["package"] == f"prepay_id={prepay_id}"
    assert params["signType"] == "RSA"
    assert params["timeStamp"].isdigit() and len(params["timeStamp"]) == 10
    assert len(params["nonceStr"]) <= 32
    message = (
        f"{wechat_keys.appid}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n"
    ).encode()
    wechat_keys.merchant.public_key.verify(
        base64.b64decode(params["paySign"]), message, padding.PKCS1v15(), hashes.SHA256()
    )


def test_query_close_and_the_order_lifecycle(
    wechat_client: WeChatPayClient, wechat_server: FakeWeChatPayServer
) -> None:
    _order(wechat_client)
    unpaid = wechat_client.query_order("EVC20251124000001")
    assert unpaid.trade_state == "NOTPAY" and not unpaid.is_paid and unpaid.amount_total_fen == 1230
    assert wechat_server.requests[-1].target == (
        f"/v3/pay/transactions/out-trade-no/EVC20251124000001?mchid={wechat_server.keys.mchid}"
    )
    wechat_server.mark_paid("EVC20251124000001")
    paid = wechat_client.query_order("EVC20251124000001")
    assert paid.is_paid and paid.payer_openid == OPENID and paid.payer_total_fen == 1230
    assert paid.success_time is not None
    with pytest.raises(ProviderRejected) as info:
        wechat_client.close_order("EVC20251124000001")
    assert info.value.provider_code == "ORDERPAID"

    _order(wechat_client, "EVC20251124000002")
    wechat_client.close_order("EVC20251124000002")  # 204, empty signed body
    assert wechat_client.query_order("EVC20251124000002").trade_state == "CLOSED"
    assert all(r.authorization_ok for r in wechat_server.requests)


def test_unknown_order_is_rejected_with_the_provider_code(
    wechat_client: WeChatPayClient,
) -> None:
    with pytest.raises(ProviderRejected) as info:
        wechat_client.query_order("EVC20990101000001")
    assert info.value.provider_code == "ORDER_NOT_EXIST" and info.value.http_status == 404


def test_refund_and_query_refund(
    wechat_client: WeChatPayClient, wechat_server: FakeWeChatPayServer
) -> None:
    _order(wechat_client)
    wechat_server.mark_paid("EVC20251124000001")
    refund = wechat_client.refund("EVC20251124000001", "RF20251124000001", 500, 1230, "充电未开始")
    assert isinstance(refund, WeChatRefund)
    assert refund.refund_status == "PROCESSING"
    assert (refund.amount_refund_fen, refund.amount_total_fen) == (500, 1230)
    body = wechat_server.requests[-1].json
    assert body["amount"] == {"refund": 500, "total": 1230, "currency": "CNY"}
    assert body["reason"] == "充电未开始" and body["notify_url"].startswith("https://")
    # A retry with the same out_refund_no is the same refund.
    again = wechat_client.refund("EVC20251124000001", "RF20251124000001", 500, 1230)
    assert again.refund_id == refund.refund_id
    assert len(wechat_server.refunds) == 1
    queried = wechat_client.query_refund("RF20251124000001")
    assert queried.refund_id == refund.refund_id and queried.out_trade_no == "EVC20251124000001"
    with pytest.raises(ProviderRejected):
        wechat_client.query_refund("RF_UNKNOWN")


def test_argument_checks(wechat_client: WeChatPayClient) -> None:
    with pytest.raises(ValueError):
        wechat_client.create_jsapi_order("short", "x", 1, OPENID)
    with pytest.raises(ValueError):
        wechat_client.create_jsapi_order("EVC20251124000001", "x", 0, OPENID)
    with pytest.raises(ValueError):
        wechat_client.create_jsapi_order(
            "EVC20251124000001", "x", 1, OPENID, expire_at=datetime(2025, 1, 1)
        )
    with pytest.raises(ValueError):
        wechat_client.refund("EVC20251124000001", "RF1", 2000, 1230)


def test_trade_bill_downloads_and_checks_the_hash(
    wechat_client: WeChatPayClient,
    wechat_server: FakeWeChatPayServer,
    wechat_keys: WeChatPayTestKeys,
) -> None:
    wechat_server.bill_text = write_wechat_trade_bill(
        [
            WeChatBillLine("2025-11-23 10:00:00", "EVC20251123000001", "4200000001", 1),
            WeChatBillLine(
                "2025-11-23 11:00:00",
                "EVC20251123000001",
                "4200000001",
                1,
                out_refund_no="RF20251123000001",
                refund_id="5030000001",
                refund_fen=1,
            ),
        ],
        appid=wechat_keys.appid,
        mchid=wechat_keys.mchid,
    )
    text = wechat_client.trade_bill(date(2025, 11, 23))
    assert text == wechat_server.bill_text
    first, download = wechat_server.requests[-2:]
    assert first.target == "/v3/bill/tradebill?bill_date=2025-11-23&bill_type=ALL"
    assert download.target == "/v3/billdownload/file?token=T0k3n_x"
    assert download.authorization_ok  # the download is signed like any request
    bill = parse_wechat_trade_bill(text)
    assert [row.kind for row in bill.rows] == ["payment", "refund"]

    wechat_server.corrupt_bill = True
    with pytest.raises(ProviderUnavailable) as info:
        wechat_client.trade_bill(date(2025, 11, 23))
    assert info.value.code == "bill_hash_mismatch"


def test_no_bill_yet_is_rejected(wechat_client: WeChatPayClient) -> None:
    with pytest.raises(ProviderRejected) as info:
        wechat_client.trade_bill(date(2025, 11, 23))
    assert info.value.provider_code == "NO_STATEMENT_EXIST"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"tamper_responses": True}, SignatureInvalid),
        ({"unsigned_responses": True}, SignatureInvalid),
        ({"sign_responses_with": "intruder"}, SignatureInvalid),
        ({"response_serial": "PUB_KEY_ID_UNKNOWN"}, SignatureInvalid),
        ({"response_timestamp_offset": -301}, StaleNotification),
        ({"response_timestamp_offset": 600}, StaleNotification),
    ],
)
def test_responses_must_be_signed_by_wechat(
    wechat_client: WeChatPayClient,
    wechat_server: FakeWeChatPayServer,
    fault: dict[str, object],
    error: type[Exception],
) -> None:
    for name, value in fault.items():
        setattr(
            wechat_server, name, cached_keypair(value) if name == "sign_responses_with" else value
        )
    with pytest.raises(error):
        _order(wechat_client)


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (500, "SYSTEM_ERROR", ProviderUnavailable),
        (503, "SYSTEM_ERROR", ProviderUnavailable),
        (429, "FREQUENCY_LIMITED", ProviderUnavailable),
        (400, "PARAM_ERROR", ProviderRejected),
        (403, "NO_AUTH", ProviderRejected),
    ],
)
def test_error_statuses(
    wechat_client: WeChatPayClient,
    wechat_server: FakeWeChatPayServer,
    status: int,
    code: str,
    error: type[Exception],
) -> None:
    wechat_server.forced_error = (status, code, "错误")
    with pytest.raises(error) as info:
        _order(wechat_client)
    assert info.value.provider_code == code  # type: ignore[attr-defined]


def test_timeouts_are_bounded(wechat_keys: WeChatPayTestKeys) -> None:
    with FakeWeChatPayServer(wechat_keys) as server:
        server.delay_seconds = 0.6
        client = WeChatPayClient(
            make_wechat_config(wechat_keys, server.base_url, timeout=(1.0, 0.1))
        )
        started = datetime.now(UTC)
        with pytest.raises(ProviderUnavailable):
            _order(client)
        assert (datetime.now(UTC) - started).total_seconds() < 0.6


def test_unreachable_provider(wechat_offline: WeChatPayClient) -> None:
    with pytest.raises(ProviderUnavailable):
        _order(wechat_offline)


def test_error_body_is_json(wechat_server: FakeWeChatPayServer) -> None:
    status, body, _ = wechat_server.handle("GET", "/v3/unknown", b"")
    assert status == 404 and json.loads(body)["code"] == "NOT_FOUND"

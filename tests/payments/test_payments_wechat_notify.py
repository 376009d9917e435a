"""WeChat Pay v3 notifications: signature, freshness, decryption, parsing, replies."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from app.payments.errors import (
    NotificationMalformed,
    ProviderMismatch,
    SignatureInvalid,
    StaleNotification,
)
from app.payments.wechat_v3 import (
    WeChatPayClient,
    WeChatRefund,
    WeChatTransaction,
    check_transaction,
    notification_ack,
    notification_fail,
)
from tests.support.wechatpay_fake import (
    WeChatPayTestKeys,
    build_notification,
    cached_keypair,
    encrypt_resource,
    make_wechat_config,
    refund_resource,
    signed_headers,
    transaction_resource,
)

NOW = datetime(2025, 11, 24, 2, 35, 0, tzinfo=UTC)
TS = int(NOW.timestamp())


def _payment(keys: WeChatPayTestKeys, **kwargs: object) -> tuple[dict[str, str], bytes]:
    resource = transaction_resource(keys, "EVC20251124000001", 1230)
    return build_notification(keys, resource, timestamp=TS, **kwargs)  # type: ignore[arg-type]


def test_valid_payment_notification_decrypts_to_a_transaction(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys
) -> None:
    headers, body = _payment(wechat_keys)
    result = wechat_offline.verify_notification(headers, body, now=NOW)
    assert result.id == "EV-2018022511223320873"
    assert result.event_type == "TRANSACTION.SUCCESS"
    tx = result.resource
    assert isinstance(tx, WeChatTransaction)
    assert tx.appid == wechat_keys.appid and tx.mchid == wechat_keys.mchid
    assert tx.out_trade_no == "EVC20251124000001"
    assert tx.transaction_id == "4200000985202511241234567890"
    assert tx.trade_state == "SUCCESS" and tx.is_paid
    assert tx.amount_total_fen == 1230 and tx.payer_total_fen == 1230
    assert tx.payer_openid == "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    assert tx.success_time == datetime(2025, 11, 24, 2, 34, 56, tzinfo=UTC)


def test_headers_are_case_insensitive(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys
) -> None:
    headers, body = _payment(wechat_keys)
    lowered = {k.lower(): v for k, v in headers.items()}
    assert wechat_offline.verify_notification(lowered, body, now=NOW).resource.out_trade_no


@pytest.mark.parametrize("status", ["SUCCESS", "ABNORMAL", "CLOSED"])
def test_refund_notifications(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys, status: str
) -> None:
    resource = refund_resource(
        wechat_keys, "EVC20251124000001", "RF20251124000001", 500, 1230, refund_status=status
    )
    headers, body = build_notification(
        wechat_keys, resource, event_type=f"REFUND.{status}", timestamp=TS
    )
    refund = wechat_offline.verify_notification(headers, body, now=NOW).resource
    assert isinstance(refund, WeChatRefund)
    assert refund.refund_status == status
    assert (refund.amount_refund_fen, refund.amount_total_fen) == (500, 1230)
    assert refund.out_refund_no == "RF20251124000001"
    assert refund.refund_id == "50000000382019052709732678859"


def test_tampered_body_is_rejected(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys
) -> None:
    headers, body = _payment(wechat_keys)
    with pytest.raises(SignatureInvalid):
        wechat_offline.verify_notification(headers, body.replace(b"EV-", b"EX-"), now=NOW)
    with pytest.raises(SignatureInvalid):
        wechat_offline.verify_notification(headers, body + b"\n", now=NOW)


def test_signed_by_another_key_is_rejected(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys
) -> None:
    headers, body = _payment(wechat_keys, sign_with=cached_keypair("intruder"))
    with pytest.raises(SignatureInvalid):
        wechat_offline.verify_notification(headers, body, now=NOW)


def test_unknown_serial_is_rejected_without_network(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys
) -> None:
    # The client's base URL is a closed port: any download attempt would be a different error.
    headers, body = _payment(wechat_keys, serial="5157F09EFDC096DE15EBE81A47057A7232F1B8E1")
    with pytest.raises(SignatureInvalid, match="unknown Wechatpay-Serial"):
        wechat_offline.verify_notification(headers, body, now=NOW)


def test_wechat_signature_probe_is_rejected(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys
) -> None:
    headers, body = _payment(wechat_keys)
    headers["Wechatpay-Signature"] = "WECHATPAY/SIGNTEST/" + headers["Wechatpay-Signature"][19:]
    with pytest.raises(SignatureInvalid):
        wechat_offline.verify_notification(headers, body, now=NOW)


@pytest.mark.parametrize(
    "missing", ["Wechatpay-Signature", "Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Serial"]
)
def test_missing_signature_header(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys, missing: str
) -> None:
    headers, body = _payment(wechat_keys)
    del headers[missing]
    with pytest.raises(SignatureInvalid):
        wechat_offline.verify_notification(headers, body, now=NOW)


def test_other_signature_type_is_rejected(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys
) -> None:
    headers, body = _payment(wechat_keys)
    headers["Wechatpay-Signature-Type"] = "WECHATPAY2-SM2-WITH-SM3"
    with pytest.raises(SignatureInvalid):
        wechat_offline.verify_notification(headers, body, now=NOW)


@pytest.mark.parametrize(
    ("offset", "stale"),
    [
        (timedelta(minutes=5), True),
        (-timedelta(minutes=5), True),
        (timedelta(days=30), True),
        (-timedelta(hours=1), True),
        (timedelta(minutes=4, seconds=59), False),
        (-timedelta(minutes=4, seconds=59), False),
    ],
)
def test_timestamp_freshness(
    wechat_offline: WeChatPayClient,
    wechat_keys: WeChatPayTestKeys,
    offset: timedelta,
    stale: bool,
) -> None:
    headers, body = _payment(wechat_keys)
    now = NOW + offset  # message at NOW, our clock elsewhere: both past and future
    if stale:
        with pytest.raises(StaleNotification):
            wechat_offline.verify_notification(headers, body, now=now)
    else:
        assert wechat_offline.verify_notification(headers, body, now=now).id


def test_stale_check_uses_the_client_clock_by_default(wechat_keys: WeChatPayTestKeys) -> None:
    client = WeChatPayClient(
        make_wechat_config(wechat_keys, "http://127.0.0.1:9"),
        clock=lambda: NOW + timedelta(hours=1),
    )
    headers, body = _payment(wechat_keys)
    with pytest.raises(StaleNotification):
        client.verify_notification(headers, body)


@pytest.mark.parametrize(
    ("field", "value"), [("appid", "wx0000000000000000"), ("mchid", "1230000109")]
)
def test_other_merchant_is_a_mismatch(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys, field: str, value: str
) -> None:
    resource = transaction_resource(wechat_keys, "EVC20251124000001", 1230, **{field: value})
    headers, body = build_notification(wechat_keys, resource, timestamp=TS)
    with pytest.raises(ProviderMismatch):
        wechat_offline.verify_notification(headers, body, now=NOW)


def test_refund_for_other_mchid_is_a_mismatch(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys
) -> None:
    resource = refund_resource(wechat_keys, "EVC1234567", "RF1", 1, 1, mchid="1230000109")
    headers, body = build_notification(
        wechat_keys, resource, event_type="REFUND.SUCCESS", timestamp=TS
    )
    with pytest.raises(ProviderMismatch):
        wechat_offline.verify_notification(headers, body, now=NOW)


def test_check_transaction_helper(wechat_keys: WeChatPayTestKeys) -> None:
    tx = WeChatTransaction(
        appid=wechat_keys.appid,
        mchid=wechat_keys.mchid,
        out_trade_no="EVC000001",
        transaction_id="42",
        trade_state="SUCCESS",
        amount_total_fen=1,
        payer_total_fen=1,
        payer_openid="o",
        success_time=None,
    )
    check_transaction(tx, wechat_keys.appid, wechat_keys.mchid)
    with pytest.raises(ProviderMismatch):
        check_transaction(tx, "wxother", wechat_keys.mchid)
    with pytest.raises(ProviderMismatch):
        check_transaction(tx, wechat_keys.appid, "1")


def _signed(keys: WeChatPayTestKeys, body: bytes) -> dict[str, str]:
    return signed_headers(keys.platform.private_pem, keys.platform_key_id, body, timestamp=TS)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1,2,3]",
        b"\xff\xfe",
        b'{"id":"EV-1","event_type":"TRANSACTION.SUCCESS","resource_type":"plain"}',
        b'{"id":"EV-1","event_type":"TRANSACTION.SUCCESS","resource_type":"encrypt-resource"}',
    ],
)
def test_malformed_but_signed_bodies(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys, body: bytes
) -> None:
    with pytest.raises(NotificationMalformed):
        wechat_offline.verify_notification(_signed(wechat_keys, body), body, now=NOW)


def _envelope(resource: dict[str, str], event_type: str = "TRANSACTION.SUCCESS") -> bytes:
    return json.dumps(
        {
            "id": "EV-2",
            "create_time": "2025-11-24T10:35:00+08:00",
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "支付成功",
            "resource": {"original_type": "transaction", **resource},
        }
    ).encode()


def test_bad_base64_ciphertext(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys
) -> None:
    resource = encrypt_resource(wechat_keys.apiv3_key, b"{}", associated_data="transaction")
    resource["ciphertext"] = "***not base64***"
    body = _envelope(resource)
    with pytest.raises(NotificationMalformed):
        wechat_offline.verify_notification(_signed(wechat_keys, body), body, now=NOW)


def test_ciphertext_that_does_not_decrypt(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys
) -> None:
    resource = encrypt_resource(wechat_keys.apiv3_key, b"{}", associated_data="transaction")
    raw = bytearray(base64.b64decode(resource["ciphertext"]))
    raw[0] ^= 1
    resource["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    body = _envelope(resource)
    with pytest.raises(NotificationMalformed) as info:
        wechat_offline.verify_notification(_signed(wechat_keys, body), body, now=NOW)
    assert info.value.code == "decrypt_failed"


def test_wrong_apiv3_key(wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys) -> None:
    resource = transaction_resource(wechat_keys, "EVC20251124000001", 1230)
    headers, body = build_notification(
        wechat_keys, resource, timestamp=TS, apiv3_key="vutsrqponmlkjihgfedcba9876543210"
    )
    with pytest.raises(NotificationMalformed):
        wechat_offline.verify_notification(headers, body, now=NOW)


def test_associated_data_is_authenticated(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys
) -> None:
    resource = encrypt_resource(wechat_keys.apiv3_key, b"{}", associated_data="transaction")
    resource["associated_data"] = "refund"
    body = _envelope(resource)
    with pytest.raises(NotificationMalformed):
        wechat_offline.verify_notification(_signed(wechat_keys, body), body, now=NOW)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r["amount"].update(total="1230"),
        lambda r: r["amount"].update(total=-1),
        lambda r: r["amount"].update(total=True),
        lambda r: r["amount"].update(currency="USD"),
        lambda r: r.pop("out_trade_no"),
        lambda r: r.update(trade_state="NOTPAY"),
        lambda r: r.update(success_time="yesterday"),
    ],
)
def test_decrypted_resource_is_validated(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys, mutate: object
) -> None:
    resource = transaction_resource(wechat_keys, "EVC20251124000001", 1230)
    mutate(resource)  # type: ignore[operator]
    headers, body = build_notification(wechat_keys, resource, timestamp=TS)
    with pytest.raises(NotificationMalformed):
        wechat_offline.verify_notification(headers, body, now=NOW)


def test_unknown_event_and_mismatched_original_type(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys
) -> None:
    resource = transaction_resource(wechat_keys, "EVC20251124000001", 1230)
    for kwargs in ({"event_type": "TRANSACTION.FAIL"}, {"original_type": "refund"}):
        headers, body = build_notification(wechat_keys, resource, timestamp=TS, **kwargs)
        with pytest.raises(NotificationMalformed):
            wechat_offline.verify_notification(headers, body, now=NOW)


def test_platform_certificate_mode(wechat_keys: WeChatPayTestKeys) -> None:
    """During the certificate -> public key migration both serials must verify."""
    platform_key = wechat_keys.platform.private_key
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(platform_key.public_key())
        .serial_number(0x5157F09EFDC096DE15EBE81A47057A7232F1B8E1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .sign(platform_key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    pem = cert.public_bytes(Encoding.PEM).decode()
    client = WeChatPayClient(
        make_wechat_config(
            wechat_keys,
            "http://127.0.0.1:9",
            platform_certificates={"5157f09efdc096de15ebe81a47057a7232f1b8e1": pem},
        )
    )
    for serial in ("5157F09EFDC096DE15EBE81A47057A7232F1B8E1", wechat_keys.platform_key_id):
        headers, body = _payment(wechat_keys, serial=serial)
        assert client.verify_notification(headers, body, now=NOW).resource.out_trade_no


def test_replies() -> None:
    assert notification_ack() == (204, b"", {})
    status, body, headers = notification_fail("签名错误")
    assert status == 500
    assert json.loads(body) == {"code": "FAIL", "message": "签名错误"}
    assert headers["Content-Type"].startswith("application/json")
    status, body, _ = notification_fail("x" * 100, status=400)
    assert status == 400 and len(json.loads(body)["message"]) == 64
    with pytest.raises(ValueError):
        notification_fail("ok", status=200)


def test_config_validation(wechat_keys: WeChatPayTestKeys) -> None:
    with pytest.raises(ValueError):
        make_wechat_config(wechat_keys, apiv3_key="short")
    with pytest.raises(ValueError):
        make_wechat_config(wechat_keys, platform_public_key_id=None)


def test_werkzeug_headers_are_accepted(
    wechat_offline: WeChatPayClient, wechat_keys: WeChatPayTestKeys
) -> None:
    from werkzeug.datastructures import Headers

    headers, body = _payment(wechat_keys)
    assert wechat_offline.verify_notification(Headers(headers), body, now=NOW).id

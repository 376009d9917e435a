"""Alipay: RSA2-only notification verification and the gateway client against a fake."""

from __future__ import annotations

import pytest
from alipay.aop.api.util.SignatureUtils import verify_with_rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from app.payments.alipay import (
    AlipayClient,
    load_public_key,
    notification_ack,
    notification_fail,
    notification_sign_content,
    verify_notification_signature,
)
from app.payments.errors import (
    NotificationMalformed,
    ProviderMismatch,
    ProviderRejected,
    ProviderUnavailable,
    SignatureInvalid,
)
from tests.support.alipay_fake import (
    AlipayTestKeys,
    FakeAlipayGateway,
    make_alipay_config,
    payment_notification_params,
    sign_notification,
)
from tests.support.wechatpay_fake import cached_keypair

# --------------------------------------------------------------------------- notifications


def _signed(
    keys: AlipayTestKeys, params: dict[str, str], sign_type: str = "RSA2"
) -> dict[str, str]:
    return sign_notification(params, keys.alipay.private_pem, sign_type)


def test_valid_rsa2_payment_notification(
    alipay_offline: AlipayClient, alipay_keys: AlipayTestKeys
) -> None:
    params = _signed(
        alipay_keys, payment_notification_params(alipay_keys, "EVC20251124000001", 1230)
    )
    note = alipay_offline.verify_notification(params)
    assert note.app_id == alipay_keys.app_id and note.seller_id == alipay_keys.seller_id
    assert note.out_trade_no == "EVC20251124000001"
    assert note.trade_no == "2025112422001403030500012345"
    assert note.trade_status == "TRADE_SUCCESS"
    assert note.total_amount_fen == 1230 and note.receipt_amount_fen == 1230
    assert note.notify_id == "2025112400222103456012341234567890"
    assert not note.is_refund and note.is_payment_success


def test_sha1_rsa_notification_is_rejected(
    alipay_offline: AlipayClient, alipay_keys: AlipayTestKeys
) -> None:
    params = payment_notification_params(alipay_keys, "EVC20251124000001", 1230)
    with pytest.raises(SignatureInvalid):
        alipay_offline.verify_notification(_signed(alipay_keys, params, "RSA"))


def test_sha1_signature_claiming_rsa2_is_rejected(
    alipay_offline: AlipayClient, alipay_keys: AlipayTestKeys
) -> None:
    """The SDK's verify_with_rsa would accept this; we must not."""
    params = _signed(
        alipay_keys, payment_notification_params(alipay_keys, "EVC20251124000001", 1230), "RSA"
    )
    params["sign_type"] = "RSA2"
    content = notification_sign_content(params).encode()
    assert verify_with_rsa(alipay_keys.alipay.public_base64, content, params["sign"])  # the pitfall
    with pytest.raises(SignatureInvalid):
        alipay_offline.verify_notification(params)


@pytest.mark.parametrize(
    ("field", "value"),
    [("total_amount", "0.01"), ("trade_status", "TRADE_FINISHED"), ("out_trade_no", "EVC9")],
)
def test_tampered_notification_is_rejected(
    alipay_offline: AlipayClient, alipay_keys: AlipayTestKeys, field: str, value: str
) -> None:
    params = _signed(
        alipay_keys, payment_notification_params(alipay_keys, "EVC20251124000001", 1230)
    )
    params[field] = value
    with pytest.raises(SignatureInvalid):
        alipay_offline.verify_notification(params)


def test_added_parameter_breaks_the_signature(
    alipay_offline: AlipayClient, alipay_keys: AlipayTestKeys
) -> None:
    params = _signed(
        alipay_keys, payment_notification_params(alipay_keys, "EVC20251124000001", 1230)
    )
    params["refund_fee"] = "12.30"
    with pytest.raises(SignatureInvalid):
        alipay_offline.verify_notification(params)


@pytest.mark.parametrize("mutate", ["drop_sign", "drop_sign_type", "garbage_sign", "other_key"])
def test_missing_or_foreign_signatures(
    alipay_offline: AlipayClient, alipay_keys: AlipayTestKeys, mutate: str
) -> None:
    params = payment_notification_params(alipay_keys, "EVC20251124000001", 1230)
    signed = _signed(alipay_keys, params)
    if mutate == "drop_sign":
        del signed["sign"]
    elif mutate == "drop_sign_type":
        del signed["sign_type"]
    elif mutate == "garbage_sign":
        signed["sign"] = "not*base64"
    else:
        signed = sign_notification(params, cached_keypair("intruder").private_pem)
    with pytest.raises(SignatureInvalid):
        alipay_offline.verify_notification(signed)


def test_empty_values_either_convention(
    alipay_offline: AlipayClient, alipay_keys: AlipayTestKeys
) -> None:
    params = payment_notification_params(
        alipay_keys, "EVC20251124000001", 1230, extra={"passback_params": ""}
    )
    for keep_empty in (False, True):
        signed = sign_notification(params, alipay_keys.alipay.private_pem, keep_empty=keep_empty)
        assert alipay_offline.verify_notification(signed).total_amount_fen == 1230


@pytest.mark.parametrize(
    ("field", "value"), [("app_id", "2021009999999999"), ("seller_id", "2088000000000000")]
)
def test_other_app_or_seller_is_a_mismatch(
    alipay_offline: AlipayClient, alipay_keys: AlipayTestKeys, field: str, value: str
) -> None:
    params = payment_notification_params(alipay_keys, "EVC20251124000001", 1230, **{field: value})
    with pytest.raises(ProviderMismatch):
        alipay_offline.verify_notification(_signed(alipay_keys, params))


@pytest.mark.parametrize(
    "extra",
    [
        {"total_amount": "12.345"},
        {"total_amount": "-1"},
        {"total_amount": "1e3"},
        {"trade_status": "REFUND_SUCCESS"},
        {"refund_fee": "abc"},
        {"notify_id": ""},
    ],
)
def test_signed_but_malformed(
    alipay_offline: AlipayClient, alipay_keys: AlipayTestKeys, extra: dict[str, str]
) -> None:
    params = payment_notification_params(alipay_keys, "EVC20251124000001", 1230, extra=extra)
    with pytest.raises(NotificationMalformed):
        alipay_offline.verify_notification(_signed(alipay_keys, params))


def test_partial_refund_notification_is_recognisable(
    alipay_offline: AlipayClient, alipay_keys: AlipayTestKeys
) -> None:
    params = payment_notification_params(
        alipay_keys,
        "EVC20251124000001",
        1230,
        extra={
            "refund_fee": "5.00",
            "gmt_refund": "2025-11-24 12:00:00.123",
            "out_biz_no": "RF001",
        },
    )
    note = alipay_offline.verify_notification(_signed(alipay_keys, params))
    assert note.trade_status == "TRADE_SUCCESS"  # still "success": do not credit again
    assert note.is_refund and not note.is_payment_success
    assert (note.refund_fee_fen, note.out_biz_no) == (500, "RF001")


def test_full_refund_and_timeout_close_differ(
    alipay_offline: AlipayClient, alipay_keys: AlipayTestKeys
) -> None:
    refunded = payment_notification_params(
        alipay_keys,
        "EVC20251124000001",
        1230,
        trade_status="TRADE_CLOSED",
        extra={"refund_fee": "12.30", "gmt_refund": "2025-11-24 12:00:00", "gmt_close": "x"},
    )
    closed = payment_notification_params(
        alipay_keys, "EVC20251124000002", 1230, trade_status="TRADE_CLOSED"
    )
    assert alipay_offline.verify_notification(_signed(alipay_keys, refunded)).is_refund
    assert not alipay_offline.verify_notification(_signed(alipay_keys, closed)).is_refund


def test_payment_notification_with_zero_refund_fee_is_a_payment(
    alipay_offline: AlipayClient, alipay_keys: AlipayTestKeys
) -> None:
    params = payment_notification_params(
        alipay_keys, "EVC20251124000001", 1230, extra={"refund_fee": "0.00"}
    )
    assert alipay_offline.verify_notification(_signed(alipay_keys, params)).is_payment_success


def test_standalone_signature_check(alipay_keys: AlipayTestKeys) -> None:
    key = load_public_key(alipay_keys.alipay.public_pem)
    params = _signed(alipay_keys, payment_notification_params(alipay_keys, "EVC20251124000001", 1))
    verify_notification_signature(params, key)
    params["charset"] = "latin-1"
    with pytest.raises(SignatureInvalid):
        verify_notification_signature(params, key)


def test_replies() -> None:
    assert notification_ack()[:2] == (200, b"success")
    assert notification_fail()[:2] == (200, b"fail")


# --------------------------------------------------------------------------- gateway client


def test_create_trade_for_the_mini_program(
    alipay_client: AlipayClient, alipay_gateway: FakeAlipayGateway, alipay_keys: AlipayTestKeys
) -> None:
    trade_no = alipay_client.create_trade(
        "EVC20251124000001", "充电桩 A-03 充电", 1230, buyer_id="2088102122524333"
    )
    assert trade_no.startswith("2025112422001")
    (request,) = alipay_gateway.requests
    assert request.signature_ok, request.error  # RSA2 + Beijing timestamp checked by the fake
    assert request.method == "alipay.trade.create"
    assert request.common["notify_url"] == "https://pay.example.com/api/payments/alipay/notify"
    assert request.biz == {
        "out_trade_no": "EVC20251124000001",
        "total_amount": "12.30",
        "subject": "充电桩 A-03 充电",
        "product_code": "JSAPI_PAY",
        "buyer_id": "2088102122524333",
    }


def test_create_trade_needs_exactly_one_buyer(alipay_client: AlipayClient) -> None:
    with pytest.raises(ValueError):
        alipay_client.create_trade("EVC20251124000001", "充电", 1230)
    with pytest.raises(ValueError):
        alipay_client.create_trade(
            "EVC20251124000001", "充电", 1230, buyer_id="a", buyer_open_id="b"
        )


def test_precreate_returns_the_qr_code(
    alipay_client: AlipayClient, alipay_gateway: FakeAlipayGateway
) -> None:
    qr = alipay_client.precreate("EVC20251124000003", "访客充电", 300)
    assert qr.startswith("https://qr.alipay.com/")
    assert alipay_gateway.requests[-1].biz["total_amount"] == "3.00"


def test_query_refund_and_refund_query(
    alipay_client: AlipayClient, alipay_gateway: FakeAlipayGateway
) -> None:
    alipay_client.precreate("EVC20251124000003", "访客充电", 1230)
    assert alipay_client.query("EVC20251124000003").trade_status == "WAIT_BUYER_PAY"
    alipay_gateway.mark_paid("EVC20251124000003")
    trade = alipay_client.query("EVC20251124000003")
    assert trade.trade_status == "TRADE_SUCCESS" and trade.total_amount_fen == 1230

    first = alipay_client.refund("EVC20251124000003", "RF20251124000001", 500, "充电失败")
    retry = alipay_client.refund("EVC20251124000003", "RF20251124000001", 500, "充电失败")
    assert first.fund_change and first.refund_fee_fen == 500
    assert retry.refund_fee_fen == 500  # same out_request_no: not refunded twice
    status = alipay_client.query_refund("EVC20251124000003", "RF20251124000001")
    assert status.succeeded and status.refund_amount_fen == 500 and status.total_amount_fen == 1230
    missing = alipay_client.query_refund("EVC20251124000003", "RF20251124000009")
    assert not missing.succeeded


def test_unknown_trade_is_rejected_with_the_sub_code(alipay_client: AlipayClient) -> None:
    with pytest.raises(ProviderRejected) as info:
        alipay_client.query("EVC20990101000001")
    assert info.value.provider_code == "ACQ.TRADE_NOT_EXIST"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("tamper_responses", SignatureInvalid),
        ("sha1_responses", SignatureInvalid),
        ("unsigned_responses", SignatureInvalid),
    ],
)
def test_responses_must_be_rsa2_signed(
    alipay_client: AlipayClient,
    alipay_gateway: FakeAlipayGateway,
    fault: str,
    error: type[Exception],
) -> None:
    setattr(alipay_gateway, fault, True)
    with pytest.raises(error):
        alipay_client.precreate("EVC20251124000003", "访客充电", 300)


def test_escaped_slashes_still_verify(
    alipay_client: AlipayClient, alipay_gateway: FakeAlipayGateway
) -> None:
    alipay_gateway.escape_slashes = True
    assert alipay_client.precreate("EVC20251124000003", "访客充电", 300).startswith("https://")


@pytest.mark.parametrize(
    ("forced", "error"),
    [
        (("40004", "ACQ.TRADE_HAS_CLOSE", "交易已关闭"), ProviderRejected),
        (("40004", "ACQ.SYSTEM_ERROR", "系统错误"), ProviderUnavailable),
        (("20000", "isp.unknow-error", "服务暂不可用"), ProviderUnavailable),
    ],
)
def test_business_errors(
    alipay_client: AlipayClient,
    alipay_gateway: FakeAlipayGateway,
    forced: tuple[str, str, str],
    error: type[Exception],
) -> None:
    alipay_gateway.forced_error = forced
    with pytest.raises(error) as info:
        alipay_client.refund("EVC20251124000003", "RF20251124000001", 1)
    assert info.value.provider_code == forced[1]  # type: ignore[attr-defined]


def test_a_badly_signed_request_is_refused(
    alipay_keys: AlipayTestKeys, alipay_gateway: FakeAlipayGateway
) -> None:
    config = make_alipay_config(
        alipay_keys,
        alipay_gateway.gateway_url,
        app_private_key_pem=cached_keypair("intruder").private_pkcs1_pem,
    )
    with pytest.raises(ProviderRejected) as info:
        AlipayClient(config).precreate("EVC20251124000003", "访客充电", 300)
    assert info.value.provider_code == "isv.invalid-signature"


def test_pkcs8_and_bare_base64_keys_are_accepted(
    alipay_keys: AlipayTestKeys, alipay_gateway: FakeAlipayGateway
) -> None:
    bare = "".join(ln for ln in alipay_keys.app.private_pem.splitlines() if "-----" not in ln)
    for private in (alipay_keys.app.private_pem, bare):
        config = make_alipay_config(
            alipay_keys,
            alipay_gateway.gateway_url,
            app_private_key_pem=private,
            alipay_public_key_pem=alipay_keys.alipay.public_pem,
        )
        assert AlipayClient(config).precreate("EVC20251124000004", "访客充电", 300)
    assert all(request.signature_ok for request in alipay_gateway.requests)


def test_argument_checks(alipay_client: AlipayClient) -> None:
    for bad in ({"amount_fen": 0}, {"amount_fen": True}, {"subject": "a/b"}, {"subject": ""}):
        kwargs = {"out_trade_no": "EVC20251124000003", "subject": "充电", "amount_fen": 1} | bad
        with pytest.raises(ValueError):
            alipay_client.precreate(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        alipay_client.precreate("EVC-2025", "充电", 1)


def test_gateway_unreachable(alipay_offline: AlipayClient) -> None:
    with pytest.raises(ProviderUnavailable):
        alipay_offline.precreate("EVC20251124000003", "访客充电", 300)


def test_flask_form_multidict_is_accepted(
    alipay_offline: AlipayClient, alipay_keys: AlipayTestKeys
) -> None:
    from werkzeug.datastructures import ImmutableMultiDict

    params = _signed(alipay_keys, payment_notification_params(alipay_keys, "EVC20251124000001", 1))
    note = alipay_offline.verify_notification(ImmutableMultiDict(list(params.items())))
    assert note.total_amount_fen == 1 and note.raw["out_trade_no"] == "EVC20251124000001"


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)


@settings(max_examples=25, deadline=None)
@given(extra=st.dictionaries(st.from_regex(r"x_[a-z_]{1,10}", fullmatch=True), _text, max_size=4))
def test_any_posted_values_round_trip(alipay_keys: AlipayTestKeys, extra: dict[str, str]) -> None:
    """Values with &, =, spaces or any Unicode are signed as posted, never re-encoded."""
    key = load_public_key(alipay_keys.alipay.public_pem)
    params = payment_notification_params(alipay_keys, "EVC20251124000001", 1, extra=extra)
    signed = _signed(alipay_keys, params)
    verify_notification_signature(signed, key)
    for name in extra:
        tampered = dict(signed, **{name: extra[name] + "!"})
        with pytest.raises(SignatureInvalid):
            verify_notification_signature(tampered, key)

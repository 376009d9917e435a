"""Fixtures for the provider-facing payment layer: our own keys and local fake providers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.payments.alipay import AlipayClient
from app.payments.wechat_v3 import WeChatPayClient
from tests.support.alipay_fake import (
    AlipayTestKeys,
    FakeAlipayGateway,
    make_alipay_config,
    make_alipay_keys,
)
from tests.support.wechatpay_fake import (
    FakeWeChatPayServer,
    WeChatPayTestKeys,
    make_wechat_config,
    make_wechat_keys,
)


@pytest.fixture(scope="session")
def wechat_keys() -> WeChatPayTestKeys:
    return make_wechat_keys()


@pytest.fixture(scope="session")
def wechat_offline(wechat_keys: WeChatPayTestKeys) -> WeChatPayClient:
    """A client whose base URL is a closed port (notification tests are offline).

    Clients are stateless apart from their HTTP session, so one per session is enough;
    loading the RSA keys is the slow part.
    """
    return WeChatPayClient(make_wechat_config(wechat_keys, "http://127.0.0.1:9"))


@pytest.fixture(scope="session")
def _wechat_server(wechat_keys: WeChatPayTestKeys) -> Iterator[FakeWeChatPayServer]:
    with FakeWeChatPayServer(wechat_keys) as server:
        yield server


@pytest.fixture
def wechat_server(_wechat_server: FakeWeChatPayServer) -> FakeWeChatPayServer:
    """The running fake, with no state or faults left from earlier tests."""
    _wechat_server.reset()
    return _wechat_server


@pytest.fixture(scope="session")
def _wechat_client(
    wechat_keys: WeChatPayTestKeys, _wechat_server: FakeWeChatPayServer
) -> WeChatPayClient:
    return WeChatPayClient(make_wechat_config(wechat_keys, _wechat_server.base_url))


@pytest.fixture
def wechat_client(
    _wechat_client: WeChatPayClient, wechat_server: FakeWeChatPayServer
) -> WeChatPayClient:
    return _wechat_client


@pytest.fixture(scope="session")
def alipay_keys() -> AlipayTestKeys:
    return make_alipay_keys()


@pytest.fixture(scope="session")
def alipay_offline(alipay_keys: AlipayTestKeys) -> AlipayClient:
    return AlipayClient(make_alipay_config(alipay_keys, "http://127.0.0.1:9/gateway.do"))


@pytest.fixture(scope="session")
def _alipay_gateway(alipay_keys: AlipayTestKeys) -> Iterator[FakeAlipayGateway]:
    with FakeAlipayGateway(alipay_keys) as gateway:
        yield gateway


@pytest.fixture
def alipay_gateway(_alipay_gateway: FakeAlipayGateway) -> FakeAlipayGateway:
    _alipay_gateway.reset()
    return _alipay_gateway


@pytest.fixture(scope="session")
def _alipay_client(alipay_keys: AlipayTestKeys, _alipay_gateway: FakeAlipayGateway) -> AlipayClient:
    return AlipayClient(make_alipay_config(alipay_keys, _alipay_gateway.gateway_url))


@pytest.fixture
def alipay_client(_alipay_client: AlipayClient, alipay_gateway: FakeAlipayGateway) -> AlipayClient:
    return _alipay_client

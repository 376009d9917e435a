"""The pages served as HTML: ``/q/<code>`` (what a phone camera, not WeChat, opens from a
port's QR code) and the console's shell."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from app.domain.tariff import Tariff, describe
from app.extensions import db
from app.services.places import port_qr_payload


def test_the_qr_url_shows_the_port_its_status_prices_and_how_to_charge(
        client: FlaskClient, world: Any) -> None:
    port = world.a.pile.ports[0]
    path = "/" + port_qr_payload(port).split("/", 3)[3]
    assert path == f"/q/{port.public_code}"
    res = client.get(path)
    assert res.status_code == 200
    page = res.get_data(as_text=True)
    assert world.a.community.name in page and world.a.pile.serial in page
    assert 'data-status="offline"' in page  # the pile has never connected
    assert "电费 0.60 元/度" in page and "服务费 0.40 元/度" in page
    assert "微信" in page
    # lower case works too (codes are read back from labels by hand)
    assert client.get(f"/q/{port.public_code.lower()}").status_code == 200


def test_unknown_disabled_or_absurd_codes_get_a_plain_404_page(
        client: FlaskClient, world: Any) -> None:
    for code in ("NOPE0000", "x" * 200):
        res = client.get(f"/q/{code}")
        assert res.status_code == 404
        assert "未找到充电口" in res.get_data(as_text=True)
    assert client.get("/q/%00").status_code == 404  # no route (NUL never reaches the DB)
    world.a.pile.enabled = False
    db.session.commit()
    assert client.get(f"/q/{world.a.pile.ports[0].public_code}").status_code == 404


def test_every_tariff_mode_reads_as_a_price_list() -> None:
    tou = Tariff.from_dict({"mode": "per_kwh", "service_fen_per_kwh": 30, "tou": [
        {"name": "valley", "start": "00:00", "end": "08:00", "energy_fen_per_kwh": 35},
        {"name": "peak", "start": "08:00", "end": "24:00", "energy_fen_per_kwh": 90}]})
    assert describe(tou) == ["谷时段 00:00–08:00：电费 0.35 元/度",
                             "峰时段 08:00–24:00：电费 0.90 元/度", "服务费 0.30 元/度"]
    hourly = Tariff.from_dict({"mode": "per_hour", "fen_per_hour": 25,
                               "billing_unit_minutes": 30, "minimum_charge_fen": 10})
    assert describe(hourly) == ["按时长 0.25 元/小时", "每 30 分钟计费一次，不足按整段计",
                                "每次最低 0.10 元"]
    tiers = Tariff.from_dict({"mode": "power_tier", "free_minutes": 5, "power_bands": [
        {"min_w": 0, "max_w": 400, "fen_per_hour": 30},
        {"min_w": 400, "max_w": 1200, "fen_per_hour": 120}]})
    assert describe(tiers) == ["功率 0–400 W：0.30 元/小时", "功率 400–1200 W：1.20 元/小时",
                               "前 5 分钟免费"]


def test_the_console_shell_runs_only_its_own_scripts(client: FlaskClient) -> None:
    res = client.get("/console/")
    assert res.status_code == 200
    csp = res.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    page = res.get_data(as_text=True)
    assert '<script type="module" src="/console/static/js/app.js">' in page
    assert client.get("/").headers["Location"].endswith("/console/")

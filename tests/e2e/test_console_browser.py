"""The browser console in a real browser: Debian's Chromium driven by Playwright, against
the app served on loopback, with the real bridge on the real broker and a simulated pile.

Covers log-in, a live status update arriving from the pile, an alarm appearing (and being
acknowledged), a tariff change, and a report chart. Set ``EVC_SCREENSHOT_DIR`` to keep a
screenshot of each page seen.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask

from app.services.broker_auth import pile_mqtt_password
from tests.e2e.conftest import Site
from tests.e2e.helpers import port_status, settled
from tests.factories import PASSWORD
from tests.support.bridge import wait_until
from tests.support.web import serving

CHROMIUM = "/usr/bin/chromium"
UI_TIMEOUT_MS = 30_000  # generous: CI machines are small and busy


def _playwright() -> Any:
    """Playwright and Chromium, or skip (fail in CI, where the browser tests must run)."""
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "the playwright package is not installed"
    else:
        if not Path(CHROMIUM).exists():
            problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser tests: {problem}")
        pytest.skip(problem)
    return sync_playwright


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = _playwright()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-background-networking", "--disable-component-update",
            "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


class Console:
    """One browser tab on the console; records the page's script errors."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.set_default_timeout(UI_TIMEOUT_MS)

    def log_in(self, username: str, password: str = PASSWORD) -> None:
        self.page.goto(f"{self.base}/console/")
        self.page.fill("#username", username)
        self.page.fill("#password", password)
        self.page.click("#login")

    def go(self, route: str) -> None:
        self.page.goto(f"{self.base}/console/#/{route}")

    def shot(self, name: str) -> None:
        where = os.environ.get("EVC_SCREENSHOT_DIR")
        if where:
            Path(where).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=True)


@pytest.fixture
def console(app: Flask, site: Site, browser: Any) -> Iterator[Console]:
    app.config["MONITORING_POLL_S"] = 0.3
    with serving(app) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
        page = context.new_page()
        c = Console(page, base)
        try:
            yield c
        finally:
            context.close()
    # refused requests (a bad log-in, a bad tariff) are logged by Chromium as failed
    # resources; anything else (a script error) fails the test
    assert [e for e in c.errors if not e.startswith("Failed to load resource")] == []


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def test_log_in_refuses_a_wrong_password_then_shows_the_operators_communities(
        console: Console, site: Site) -> None:
    expect = _expect()
    console.log_in("op_a", "wrong-password-1")
    expect(console.page.locator("form.login .error")).to_contain_text("password")
    console.log_in("op_a")
    expect(console.page.locator("#who")).to_contain_text("property_operator")
    cards = console.page.locator("article.community")
    expect(cards).to_have_count(1)  # op_a sees world a's community only
    expect(cards.first).to_have_attribute("data-community", str(site.community_id))
    # residents have no business in the console
    console.page.click("#logout")
    expect(console.page.locator("#login")).to_be_visible()


def test_a_port_plugged_in_at_the_pile_shows_on_the_live_page_without_a_reload(
        console: Console, site: Site) -> None:
    expect = _expect()
    console.log_in("op_a")
    card = console.page.locator(f'article.community[data-community="{site.community_id}"]')
    expect(card.locator(".ports-plugged")).to_have_text("0")
    expect(console.page.locator(".live-dot.on")).to_have_count(1)
    console.page.evaluate("window.__marker = 'same page'")
    wait_until(lambda: site.pile.connected)
    site.pile.plug(1)
    expect(card.locator(".ports-plugged")).to_have_text("1")
    expect(card.locator(".ports-idle")).to_have_text("1")
    assert console.page.evaluate("window.__marker") == "same page"  # pushed, not reloaded
    console.shot("live")


def test_an_alarm_from_the_pile_appears_at_once_and_the_operator_acknowledges_it(
        console: Console, site: Site) -> None:
    expect = _expect()
    console.log_in("op_a")
    feed = console.page.locator("#incident-feed")
    expect(console.page.locator(".live-dot.on")).to_have_count(1)
    wait_until(lambda: site.pile.connected)
    site.pile.plug(2)
    wait_until(lambda: port_status(site.pile_id, 2) == "plugged")
    site.pile.raise_alarm(2, "smoke", "critical", value=1, threshold=1)
    item = feed.locator('li[data-kind="smoke"]')
    expect(item).to_be_visible()
    expect(item).to_contain_text("critical")
    card = console.page.locator(f'article.community[data-community="{site.community_id}"]')
    expect(card.locator(".open-incidents")).to_have_text("1")
    console.shot("live-alarm")
    item.locator("a").click()
    expect(console.page.locator("#incident-state")).to_contain_text("open")
    console.page.fill("#ack-form input[name=note]", "on my way to the shed")
    console.page.click("#ack-form button[type=submit]")
    expect(console.page.locator("#incident-state")).to_contain_text("acknowledged")
    expect(console.page.locator("#incident-detail")).to_contain_text("on my way to the shed")
    console.shot("incident")


def test_a_tariff_change_takes_effect_and_a_bad_one_is_refused_with_the_reason(
        console: Console, site: Site) -> None:
    expect = _expect()
    console.log_in("op_a")
    console.go(f"tariffs/{site.community_id}")
    in_force = console.page.locator("#tariff-in-force")
    before = int(in_force.get_attribute("data-version") or 0)
    console.page.fill("#quick-tariff input[name=energy]", "0.80")
    console.page.fill("#quick-tariff input[name=service]", "0.20")
    console.page.click("#quick-save")
    expect(in_force).to_have_attribute("data-version", str(before + 1))
    expect(in_force).to_contain_text("¥0.80/kWh")
    expect(in_force).to_contain_text("¥0.20/kWh")
    versions = site.api.login("op_a").get(
        f"/api/v1/communities/{site.community_id}/tariffs").get_json()
    newest = max(versions, key=lambda v: v["version"])
    assert newest["rules"]["energy_fen_per_kwh"] == 80
    assert newest["rules"]["service_fen_per_kwh"] == 20
    console.shot("tariffs")
    # the tariff engine's refusal reaches the operator; nothing is saved
    console.page.fill("#rules-json", '{"mode": "per_kwh", "energy_fen_per_kwh": -5}')
    console.page.click("#rules-save")
    expect(console.page.locator("#toast.error")).to_contain_text("energy_fen_per_kwh")
    expect(in_force).to_have_attribute("data-version", str(before + 1))


def test_the_report_chart_shows_the_days_coin_revenue(console: Console, site: Site) -> None:
    expect = _expect()
    wait_until(lambda: site.pile.connected)
    site.pile.plug(1)
    wait_until(lambda: port_status(site.pile_id, 1) == "plugged")
    site.pile.insert_coins(1, 300)
    operator = site.api.login("op_a")
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()

    def coin_revenue() -> int:
        report = operator.get("/api/v1/reports/daily", query_string={
            "from": today, "to": today, "community_id": site.community_id}).get_json()
        return int(report["totals"]["coin_fen"])

    wait_until(lambda: coin_revenue() == 300, timeout=20)
    console.log_in("op_a")
    console.go(f"reports?community_id={site.community_id}")
    bar = console.page.locator(f'#chart-revenue rect.bar[data-label="{today}"]')
    expect(bar).to_have_attribute("data-value", "300")
    height = float(bar.get_attribute("height") or 0)
    assert height > 100  # the day's revenue is the tallest bar of the fortnight
    expect(console.page.locator("#report-totals")).to_contain_text("¥3.00")
    labels = console.page.locator("#chart-revenue rect.bar").evaluate_all(
        "bars => bars.map(b => b.dataset.label)")
    assert len(labels) == 14 and labels[-1] == today
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", label) for label in labels)
    console.shot("reports")


def test_an_operator_registers_a_pile_sees_its_password_once_and_its_qr_labels(
        app: Flask, console: Console, site: Site) -> None:
    expect = _expect()
    console.log_in("op_a")
    console.go(f"community/{site.community_id}")
    serial = f"CB{os.getpid() % 10000:04d}"
    form = console.page.locator("#register-pile-form")
    form.locator("input[name=serial]").fill(serial)
    form.locator("input[name=port_count]").fill("2")
    form.locator("button[type=submit]").click()
    password = console.page.locator("#mqtt-password")
    expect(password).not_to_be_empty()
    secret = password.inner_text()
    assert len(secret) >= 16
    # the one the broker's password file gets
    assert secret == pile_mqtt_password(serial, app.config["SECRET_KEY"])
    console.page.locator("#mqtt-secret").locator("xpath=..").locator("a").click()
    labels = console.page.locator("#qr-labels img")
    expect(labels).to_have_count(2)
    # the label images are real QR codes fetched with the operator's token
    console.page.wait_for_function("img => img.complete && img.naturalWidth > 50",
                                   arg=labels.first.element_handle(),
                                   timeout=UI_TIMEOUT_MS)
    assert secret not in console.page.content()  # shown once: not on the pile's own page
    console.shot("pile")


def test_a_cash_top_up_at_the_office_shows_in_the_balance_and_history(
        console: Console, site: Site) -> None:
    expect = _expect()
    console.log_in("op_a")
    console.go(f"account/{site.account_id}")
    available = console.page.locator("#balance-available")
    expect(available).to_have_text("¥50.00")  # build_world's opening balance
    form = console.page.locator("#topup-form")
    form.locator("input[name=amount_fen]").fill("12.50")
    form.locator("button[type=submit]").click()
    expect(available).to_have_text("¥62.50")
    expect(console.page.locator("#transactions")).to_contain_text("¥12.50")
    form.locator("input[name=amount_fen]").fill("12.505")  # not an amount in fen
    form.locator("button[type=submit]").click()
    expect(console.page.locator("#toast.error")).to_contain_text("yuan")
    expect(available).to_have_text("¥62.50")
    console.shot("account")


def test_an_operator_stops_a_charge_remotely_and_the_pile_settles_it(
        console: Console, site: Site) -> None:
    expect = _expect()
    wait_until(lambda: site.pile.connected)
    site.pile.plug(1)
    wait_until(lambda: port_status(site.pile_id, 1) == "plugged")
    res = site.phone.post("/api/v1/charging-sessions", json={
        "charging_account_id": site.account_id, "port_code": site.port_codes[1],
        "max_amount_fen": 1000})
    assert res.status_code == 201, res.get_json()
    session_id = res.get_json()["session_id"]
    site.pile.advance(120)
    console.log_in("op_a")
    console.go(f"pile/{site.pile_id}")
    console.page.on("dialog", lambda d: d.accept())
    console.page.click(f'button[data-stop="{session_id}"]')
    expect(console.page.locator("#toast.ok")).to_contain_text("Stop sent")
    ended = wait_until(lambda: settled(session_id), timeout=20)
    assert ended.stop_reason == "operator"
    assert [m for m in site.pile.received if m.get("type") == "stop"]
    expect(console.page.locator(f'button[data-stop="{session_id}"]')).to_have_count(0)

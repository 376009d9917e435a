"""Screenshots of the console's main pages, for the README (docs/screenshots/).

    python -m scripts.screenshots [--base http://127.0.0.1:5000] [--out docs/screenshots]

Run it against ``make demo`` (its seeded admin, simulated piles and a few minutes of
charging make the pages worth looking at). Drives Debian's Chromium through Playwright,
as the browser tests do; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
        "--disable-dev-shm-usage"]
# (file name, hash route, a selector that shows the page has its data; the view is
# scrolled to it when it is below the fold)
PAGES = [
    ("live", "live", "article.community"),
    ("communities", "communities", "table"),
    ("community", "community/{community}", "#live-ports .port"),
    ("pile", "pile/{pile}", "img"),
    ("accounts", "accounts", "table"),
    ("account", "account/{account}", "#balance"),
    ("tariffs", "tariffs", "#tariff-in-force"),
    ("incidents", "incidents?state=", "section"),
    ("reports", "reports", "#chart-revenue"),
    ("loss", "loss", "section"),
    ("admin", "admin", "table"),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.screenshots", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="http://127.0.0.1:5000")
    p.add_argument("--out", default="docs/screenshots", type=Path)
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default="demo-pass-2026")
    p.add_argument("--community", type=int, default=1)
    p.add_argument("--pile", type=int, default=1)
    p.add_argument("--account", type=int, default=1)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    ids = {"community": args.community, "pile": args.pile, "account": args.account}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860}, locale="zh-CN")
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{args.base}/console/")
        page.screenshot(path=str(args.out / "login.png"))
        page.fill("#username", args.user)
        page.fill("#password", args.password)
        page.click("#login")
        page.wait_for_selector("#logout")
        for name, route, ready in PAGES:
            page.goto(f"{args.base}/console/#/{route.format(**ids)}")
            try:
                page.wait_for_selector(ready, timeout=10_000)
            except PlaywrightTimeout:  # a page without data is still worth a picture
                print(f"{name}: {ready} did not appear", file=sys.stderr)
            else:
                page.locator(ready).first.evaluate(
                    "el => el.closest('section') ? el.closest('section').scrollIntoView() : null")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(args.out / f"{name}.png"))
            print(args.out / f"{name}.png")
        browser.close()
    for e in errors:
        print("page error:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

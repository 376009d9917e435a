"""Scan-to-power latency: phone scan → start command → pile ack → API response.

    python -m bench.scan_to_power                 # 200 timed scans, 10 piles x 10 ports
    python -m bench.scan_to_power --scans 500 --web-workers 2

One run on loopback, torn down at the end:

* a fresh PostgreSQL database built by the migrations, one community with a tariff,
  ``--piles`` piles x 10 ports and one resident's charging account with money;
* the web app under gunicorn (``--web-workers`` gthread workers) and one bridge worker
  (``flask --app wsgi bridge run``), both subprocesses, on the broker at ``--broker``;
* simulated piles (simulator.pile.SimulatedPile) in this process, every port plugged.

Each timed sample is one ``POST /api/v1/charging-sessions`` over real HTTP, which
returns only after the pile's ack has been applied (or fails). Between rounds the
sessions are stopped and settled, untimed. In the same run a bare MQTT round trip
(publish QoS 1 → a responder client → reply QoS 1 → received) is timed on the same
broker: the floor that any command round trip sits on.

Prints p50/p90/p99/max for both and whether scan-to-power p99 < 150 ms.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ingest import JWT_SECRET, SECRET, bench_database, build_app  # noqa: E402

TARGET_P99_MS = 150.0
PORTS = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(app: Any, piles: int) -> tuple[list[str], int, str, dict[str, dict[int, str]]]:
    """Migrate; one community, its tariff, piles, and a resident with 10,000 yuan."""
    import logging
    from datetime import UTC, datetime

    from flask_jwt_extended import create_access_token
    from flask_migrate import upgrade

    from app.domain.access import Actor, Role
    from app.extensions import db
    from app.models import AccountBinding, User
    from app.services import accounts, demo, places, tariffs, users, wallet
    from app.services.uow import UnitOfWork

    with app.app_context():
        logging.disable(logging.INFO)
        try:
            upgrade(revision="heads")
        finally:
            logging.disable(logging.NOTSET)
        uow = UnitOfWork()
        admin = demo.create_platform_admin("bench-admin", "bench-pass-2026")
        root = Actor(admin.id, Role.PLATFORM_ADMIN)
        grid = places.create_power_company(uow, root, name="Grid", grid_price_fen_per_kwh=56)
        company = places.create_property_company(uow, root, power_company_id=grid.id,
                                                 name="Property", contact_phone=None)
        operator = users.create_staff_user(uow, root, username="bench-op",
                                           password="bench-pass-2026",
                                           role="property_operator",
                                           property_company_id=company.id)
        op = Actor(operator.id, Role.PROPERTY_OPERATOR, grid.id, company.id)
        community = places.create_community(uow, op, property_company_id=company.id,
                                            name="Bench Garden", master_meter_serial="BMM1")
        tariffs.set_tariff(uow, op, community.id,
                           {"mode": "per_kwh", "energy_fen_per_kwh": 60,
                            "service_fen_per_kwh": 40}, datetime(2020, 1, 1, tzinfo=UTC))
        serials, codes = [], {}
        for i in range(piles):
            pile = places.register_pile(uow, op, community_id=community.id,
                                        serial=f"S{i + 1:04d}-{uuid.uuid4().hex[:6]}",
                                        port_count=PORTS).pile
            serials.append(pile.serial)
            codes[pile.serial] = {p.number: p.public_code for p in pile.ports}
        account = accounts.create_charging_account(uow, op, community_id=community.id,
                                                   account_no="13900000001", pin="135790")
        wallet.record_cash_topup(uow, op, account.id, amount_fen=1_000_000,
                                 request_id="bench-topup-1")
        user = User(role=Role.RESIDENT.value, openid="bench-openid")
        db.session.add(user)
        db.session.flush()
        db.session.add(AccountBinding(user_id=user.id, charging_account_id=account.id))
        db.session.commit()
        token = create_access_token(identity=user, expires_delta=False)
        account_id = account.id
        db.session.remove()
        db.engine.dispose()
    return serials, account_id, token, codes


PLATFORM_USERS = ("evc-s2p-bridge", "evc-s2p-web", "evc-s2p-ping", "evc-s2p-pong")


@contextlib.contextmanager
def project_broker(serials: list[str], workdir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """Mosquitto with the project config (deploy/mosquitto): ACLs, queues, TCP_NODELAY."""
    from app.services.broker_auth import pile_mqtt_password
    from bench.ingest import _launcher

    accounts = {u: secrets.token_urlsafe(12) for u in PLATFORM_USERS}
    accounts.update({s: pile_mqtt_password(s, SECRET) for s in serials})
    with _launcher().run_broker(workdir / "broker", accounts,
                                platform_users=PLATFORM_USERS) as (port, _proc):
        yield f"mqtt://127.0.0.1:{port}", accounts


@contextlib.contextmanager
def servers(db_url: str, broker: str, accounts: dict[str, str], web_port: int,
            web_workers: int, workdir: Path) -> Iterator[None]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("MQTT_", "DATABASE_URL", "EVC_", "FLASK_"))}
    env = {**base, "EVC_ENV": "testing", "DATABASE_URL": db_url, "MQTT_URL": broker,
           "SECRET_KEY": SECRET, "JWT_SECRET_KEY": JWT_SECRET, "PYTHONPATH": str(ROOT),
           "MQTT_CLIENT_PREFIX": f"bench-{uuid.uuid4().hex[:6]}"}
    users = {"web": "evc-s2p-web", "bridge": "evc-s2p-bridge"}
    commands = {
        "web": [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", str(web_workers),
                "--threads", "8", "-b", f"127.0.0.1:{web_port}", "wsgi:app"],
        # a group of our own: other deployments' (or retired) workers on the same broker
        # must not take a share of this run's messages
        "bridge": [sys.executable, "-m", "flask", "--app", "wsgi", "bridge", "run",
                   "--group", f"s2p{uuid.uuid4().hex[:8]}"],
    }
    procs = []
    for name, cmd in commands.items():
        out = (workdir / f"{name}.log").open("wb")
        user = users[name]
        if user in accounts:  # one MQTT account per process (client id = username)
            proc_env = {**env, "MQTT_USERNAME": user, "MQTT_PASSWORD": accounts[user]}
        else:
            proc_env = env
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=proc_env, stdout=out,
                                      stderr=subprocess.STDOUT))
    try:
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_http(url: str, timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {"n": len(ordered), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99),
            "max": ordered[-1], "mean": statistics.fmean(ordered)}


def mqtt_round_trips(broker: str, count: int, accounts: dict[str, str]) -> list[float]:
    """Publish QoS 1 → responder → reply QoS 1, timed from publish to receipt."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from app.mqtt_bridge.worker import no_delay, parse_mqtt_url

    host, port, _ = parse_mqtt_url(broker)
    tag = uuid.uuid4().hex[:8]
    got = threading.Event()
    responder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="evc-s2p-pong")
    pinger = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="evc-s2p-ping")
    responder.on_message = lambda c, u, m: c.publish(f"evc/bench/{tag}/pong", m.payload, qos=1)
    pinger.on_message = lambda c, u, m: got.set()
    for client, topic, user in ((responder, f"evc/bench/{tag}/ping", "evc-s2p-pong"),
                                (pinger, f"evc/bench/{tag}/pong", "evc-s2p-ping")):
        if user in accounts:
            client.username_pw_set(user, accounts[user])
        client.connect(host, port)
        no_delay(client)
        client.subscribe(topic, qos=1)
        client.loop_start()
    time.sleep(0.5)
    samples = []
    for i in range(count):
        got.clear()
        t0 = time.perf_counter()
        pinger.publish(f"evc/bench/{tag}/ping", str(i).encode(), qos=1)
        if not got.wait(5):
            raise RuntimeError("a bare MQTT round trip was lost")
        samples.append((time.perf_counter() - t0) * 1000)
    for client in (responder, pinger):
        client.disconnect()
        client.loop_stop()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=int, default=200)
    parser.add_argument("--piles", type=int, default=10)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--broker", default="project",
                        help="'project' (default): a private Mosquitto with deploy/mosquitto's "
                             "config; or an mqtt:// URL of an anonymous broker")
    args = parser.parse_args(argv)

    import requests

    from simulator.pile import SimulatedPile

    with bench_database() as db_url, tempfile.TemporaryDirectory(prefix="evc-s2p-") as tmp:
        app = build_app(db_url)
        serials, account_id, token, codes = seed(app, args.piles)
        web_port = free_port()
        base = f"http://127.0.0.1:{web_port}/api/v1"
        headers = {"Authorization": f"Bearer {token}"}
        with contextlib.ExitStack() as stack:
            if args.broker == "project":
                broker, accounts = stack.enter_context(project_broker(serials, Path(tmp)))
            else:
                broker, accounts = args.broker, {}
            stack.enter_context(servers(db_url, broker, accounts, web_port, args.web_workers,
                                        Path(tmp)))
            wait_http(f"http://127.0.0.1:{web_port}/api/openapi.json")
            piles = [SimulatedPile(s, ports=PORTS, broker_url=broker, seed=i,
                                   meter_interval_s=60, password=accounts.get(s))
                     for i, s in enumerate(serials)]
            for pile in piles:
                pile.connect()
                for port in range(1, PORTS + 1):
                    pile.plug(port)
            time.sleep(2)  # online + port statuses applied by the bridge
            http = requests.Session()
            slots = [(pile, port) for pile in piles for port in range(1, PORTS + 1)]
            samples: list[float] = []
            failures: dict[str, int] = {}
            warmup = 5
            while len(samples) < args.scans:
                started = []
                for pile, port in slots:
                    if len(samples) >= args.scans:
                        break
                    body = {"charging_account_id": account_id,
                            "port_code": codes[pile.pile_id][port], "max_amount_fen": 100}
                    t0 = time.perf_counter()
                    res = http.post(f"{base}/charging-sessions", json=body, headers=headers,
                                    timeout=30)
                    elapsed = (time.perf_counter() - t0) * 1000
                    if res.status_code != 201:
                        reason = res.json().get("details", {}).get("reason", res.status_code)
                        failures[str(reason)] = failures.get(str(reason), 0) + 1
                        continue
                    started.append(res.json()["session_id"])
                    if warmup:
                        warmup -= 1
                    else:
                        samples.append(elapsed)
                if not started:
                    print(f"no start succeeded in a round: {failures}", file=sys.stderr)
                    return 1
                print(f"  {len(samples)}/{args.scans} timed scans; failed: {failures}", flush=True)
                for sid in started:  # untimed: stop and let the piles settle
                    http.post(f"{base}/charging-sessions/{sid}/stop", headers=headers,
                              timeout=30)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and any(
                    http.get(f"{base}/charging-sessions/{sid}", headers=headers,
                             timeout=30).json()["status"] != "settled" for sid in started[-3:]):
                    time.sleep(0.2)
                time.sleep(1)
            bare = mqtt_round_trips(broker, args.scans, accounts)
            for pile in piles:
                pile.disconnect()
    scan = percentiles(samples)
    mqtt_rt = percentiles(bare)
    print(f"\nscan to power on loopback: {args.piles} piles x {PORTS} ports, "
          f"{args.web_workers} web workers, broker {args.broker}")
    print(f"{'path':<28}{'n':>6}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name, p in (("scan -> ack -> response", scan), ("bare MQTT round trip", mqtt_rt)):
        print(f"{name:<28}{p['n']:>6}{p['p50']:>10.1f}{p['p90']:>10.1f}{p['p99']:>10.1f}"
              f"{p['max']:>10.1f}")
    if failures:
        print(f"failed starts: {failures}")
    verdict = "meets" if scan["p99"] < TARGET_P99_MS else "misses"
    print(f"scan-to-power p99 {scan['p99']:.1f} ms {verdict} the {TARGET_P99_MS:.0f} ms target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``make demo``: the whole platform on one machine, with simulated piles.

    python -m scripts.demo [--speed 30] [--web-port 5000] [--broker-port 1883] [--duration S]

1. the database (``DATABASE_URL``, default SQLite in instance/): ``flask db upgrade``
   and ``flask seed-demo`` (idempotent);
2. a broker: the one on 127.0.0.1:1883 if it answers and lets anonymous clients
   in; otherwise Mosquitto with the project config (deploy/mosquitto) on that port
   (or, if 1883 is taken by a broker that wants credentials, on a free port), with
   the accounts the platform generates (``flask broker write-auth``): one per pile,
   ``evc-platform`` for the bridge and ``evc-web`` for the web process;
3. the web app (``flask run`` on 127.0.0.1:5000: the API and the console), one bridge worker
   (``flask bridge run``) and the simulator driving the demo piles P0001…P0006
   (10 ports each), sped up so that charging is visible.

Children are supervised: Ctrl-C stops them all; if one dies the others are
stopped and the demo exits non-zero. Everything it writes is under instance/.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
INSTANCE = ROOT / "instance"
BROKER_DIR = INSTANCE / "mosquitto"
DEMO_PILES = [f"P{i:04d}" for i in range(1, 7)]  # what `flask seed-demo` registers
DEMO_ACCOUNTS = [f"{13800000000 + i}" for i in range(1, 10)]  # its charging accounts
DEMO_PIN = "135790"
DEMO_PASSWORD = "demo-pass-2026"
PLATFORM_USER, WEB_USER = "evc-platform", "evc-web"


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def anonymous_ok(host: str, port: int) -> bool:
    """Whether the broker there accepts a client without credentials."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    result: list[Any] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"evc-demo-probe-"
                                                               f"{secrets.token_hex(4)}")
    client.on_connect = lambda c, u, f, rc, p: (result.append(rc), done.set())
    try:
        client.connect(host, port, keepalive=10)
    except OSError:
        return False
    client.loop_start()
    done.wait(5)
    client.disconnect()
    client.loop_stop()
    return bool(result) and not result[0].is_failure


def forget_session(host: str, port: int, client_id: str) -> None:
    """Drop a persistent session on a shared broker so nothing queues for it after the demo."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.on_connect = lambda *a: done.set()
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    with contextlib.suppress(OSError):
        client.connect(host, port, keepalive=10, clean_start=True, properties=props)
        client.loop_start()
        done.wait(5)
        client.disconnect()
        client.loop_stop()


def _launcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "evc_run_broker", ROOT / "deploy" / "mosquitto" / "run_broker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _die_with_parent() -> None:
    """Linux: a child gets SIGTERM if the demo itself is killed."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    pump: threading.Thread | None = None


@dataclass
class Supervisor:
    env: dict[str, str]
    children: list[Child] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env or self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)
        child = Child(name, proc)
        child.pump = threading.Thread(target=self._pump, args=(child,), daemon=True)
        child.pump.start()
        self.children.append(child)
        return child

    @staticmethod
    def _pump(child: Child) -> None:
        assert child.proc.stdout is not None
        for raw in child.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                print(f"[{child.name}] {line}", flush=True)

    def dead(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def stop_all(self) -> None:
        self.stopping.set()
        for child in reversed(self.children):  # simulator first, broker last
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGINT if child.name != "broker"
                              else signal.SIGTERM)
            deadline = time.monotonic() + 10
            while child.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait(5)


def flask(sup: Supervisor, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a flask CLI command to completion; its output, or exit with it."""
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT,
                          env=env or sup.env, capture_output=True, text=True, timeout=300)
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        say(f"`flask {' '.join(args)}` failed:\n{output}")
        raise SystemExit(1)
    return output


@dataclass
class Broker:
    url: str
    anonymous: bool
    started: bool
    platform_password: str = ""
    web_password: str = ""
    pile_passwords: dict[str, str] = field(default_factory=dict)


def start_own_broker(sup: Supervisor, port: int) -> Broker:
    """The project config on ``port``, with the accounts the platform generates."""
    launcher = _launcher()
    if not Path(launcher.MOSQUITTO).exists():
        say(f"nothing answers on 127.0.0.1:{port} and Mosquitto is not installed.")
        say("install it (Debian/Ubuntu: sudo apt-get install mosquitto) or start any MQTT "
            f"broker on 127.0.0.1:{port}, then run `make demo` again.")
        raise SystemExit(2)
    BROKER_DIR.mkdir(parents=True, exist_ok=True)
    (BROKER_DIR / "data").mkdir(exist_ok=True)
    platform_pw, web_pw = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    extra = BROKER_DIR / "extra-users"
    extra.write_text(f"{WEB_USER}:{web_pw}\n", encoding="utf-8")
    extra.chmod(0o600)
    out = flask(sup, "broker", "write-auth", "--dir", str(BROKER_DIR), "--platform-user",
                PLATFORM_USER, "--extra-users-file", str(extra),
                env={**sup.env, "MQTT_PASSWORD": platform_pw})
    say(out.splitlines()[0] if out else "broker accounts written")
    conf = BROKER_DIR / "mosquitto.conf"
    conf.write_text(launcher.render_config(
        port=port, data_dir=BROKER_DIR / "data", password_file=BROKER_DIR / "passwd",
        acl_file=BROKER_DIR / "acl", log_file=BROKER_DIR / "mosquitto.log"), encoding="utf-8")
    child = sup.run("broker", [launcher.MOSQUITTO, "-c", str(conf)])
    deadline = time.monotonic() + 10
    while not answers("127.0.0.1", port):
        if child.proc.poll() is not None or time.monotonic() > deadline:
            log = (BROKER_DIR / "mosquitto.log")
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            say(f"Mosquitto did not start on 127.0.0.1:{port}:\n{tail}")
            raise SystemExit(1)
        time.sleep(0.1)
    from app.config import load_settings
    from app.services.broker_auth import pile_mqtt_password

    secret = load_settings().secret_key
    return Broker(f"mqtt://127.0.0.1:{port}", False, True, platform_pw, web_pw,
                  {s: pile_mqtt_password(s, secret) for s in DEMO_PILES})


def choose_broker(sup: Supervisor, port: int) -> Broker:
    if answers("127.0.0.1", port):
        if anonymous_ok("127.0.0.1", port):
            say(f"using the MQTT broker already on 127.0.0.1:{port} (anonymous)")
            return Broker(f"mqtt://127.0.0.1:{port}", True, False)
        launcher = _launcher()
        other = launcher.free_port()
        say(f"the broker on 127.0.0.1:{port} wants credentials the demo does not have; "
            f"starting the project's Mosquitto on 127.0.0.1:{other} instead")
        return start_own_broker(sup, other)
    say(f"no broker on 127.0.0.1:{port}: starting Mosquitto with the project config there")
    return start_own_broker(sup, port)


def wait_http(url: str, child: Child, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            return
        with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(url, timeout=2):
            return
        time.sleep(0.3)


def banner(web: str, broker: Broker) -> None:
    lines = [
        "",
        "=" * 72,
        "  the charging platform is running",
        f"  console        {web}/console/   (the browser console for staff)",
        f"  web API        {web}/api/v1/   (OpenAPI: {web}/api/openapi.json)",
        f"  demo log-ins   admin, grid, operator1, operator2 / password {DEMO_PASSWORD}",
        f"  keypad         accounts {DEMO_ACCOUNTS[0]}…{DEMO_ACCOUNTS[-1]}, PIN {DEMO_PIN}",
        f"  broker         {broker.url} "
        + ("(anonymous)" if broker.anonymous else f"(accounts in {BROKER_DIR / 'passwd'})"),
        f"  piles          {DEMO_PILES[0]}…{DEMO_PILES[-1]} x 10 ports, simulated",
        "  stop           Ctrl-C",
        "=" * 72,
        "",
    ]
    print("\n".join(lines), flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--speed", type=float, default=30.0,
                   help="simulated seconds per real second (default 30: a minute every 2 s)")
    p.add_argument("--web-port", type=int, default=5000)
    p.add_argument("--broker-port", type=int, default=1883)
    p.add_argument("--duration", type=float, default=None,
                   help="stop by itself after this many seconds (default: until Ctrl-C)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if answers("127.0.0.1", args.web_port):
        say(f"127.0.0.1:{args.web_port} is already in use (another demo?); stop it or pass "
            "--web-port")
        return 2
    INSTANCE.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "FLASK_"))}
    base.setdefault("PYTHONUNBUFFERED", "1")
    sup = Supervisor(base)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    code = 0
    broker: Broker | None = None
    try:
        db = os.environ.get("DATABASE_URL") or f"SQLite {INSTANCE / 'evcharge.sqlite3'}"
        say(f"database: {db}")
        flask(sup, "db", "upgrade")
        for line in flask(sup, "seed-demo").splitlines():
            if not line.startswith("INFO"):
                say(re.sub(r" \(mqtt password [^)]*\)", "", line))
        broker = choose_broker(sup, args.broker_port)
        mqtt_env = {"MQTT_URL": broker.url}
        bridge_env = {**base, **mqtt_env}
        web_env = {**base, **mqtt_env}
        if not broker.anonymous:
            bridge_env.update(MQTT_USERNAME=PLATFORM_USER, MQTT_PASSWORD=broker.platform_password)
            web_env.update(MQTT_USERNAME=WEB_USER, MQTT_PASSWORD=broker.web_password)
        web_url = f"http://127.0.0.1:{args.web_port}"
        web = sup.run("web", [sys.executable, "-m", "flask", "--app", "wsgi", "run", "--host",
                              "127.0.0.1", "--port", str(args.web_port), "--no-reload"],
                      env=web_env)
        sup.run("bridge", [sys.executable, "-m", "flask", "--app", "wsgi", "bridge", "run",
                           "--worker", "1"], env=bridge_env)
        sup.run("jobs", [sys.executable, "-m", "flask", "--app", "wsgi", "jobs", "run"],
                env={**base, **mqtt_env})
        accounts = INSTANCE / "demo-accounts.txt"
        accounts.write_text("".join(f"{a},{DEMO_PIN}\n" for a in DEMO_ACCOUNTS),
                            encoding="utf-8")
        sim = [sys.executable, "-m", "simulator", "--broker", broker.url, "--piles",
               str(len(DEMO_PILES)), "--ports", "10", "--prefix", "P", "--speed",
               str(args.speed), "--meter-interval", "60", "--keepalive", "60",
               "--arrival-rate", "1.5", "--alarm-rate", "0.2", "--accounts", str(accounts),
               "--seed", "1"]
        if broker.pile_passwords:
            pw_file = BROKER_DIR / "pile-passwords"
            pw_file.write_text("".join(f"{s}:{p}\n" for s, p in broker.pile_passwords.items()),
                               encoding="utf-8")
            pw_file.chmod(0o600)
            sim += ["--password-file", str(pw_file)]
        wait_http(f"{web_url}/api/openapi.json", web)
        time.sleep(1.0)  # let the bridge subscribe before the piles say "online"
        sup.run("simulator", sim)
        if sup.dead() is None:
            banner(web_url, broker)
        started = time.monotonic()
        while not stop.is_set():
            dead = sup.dead()
            if dead is not None:
                say(f"{dead.name} exited with code {dead.proc.returncode}; stopping the rest")
                code = 1
                break
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
            stop.wait(0.5)
    finally:
        say("stopping ...")
        sup.stop_all()
        if broker is not None and broker.anonymous:
            host, port = broker.url.rsplit("/", 1)[1].split(":")
            forget_session(host, int(port), "evc-platform-bridge-1")
        say("stopped")
    return code


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)

"""``python -m simulator``: run N simulated piles x M ports against a broker.

Example (demo against the local broker, 1 simulated minute per second)::

    python -m simulator --broker mqtt://127.0.0.1:1883 --piles 10 --ports 10 \\
        --prefix P --meter-interval 60 --speed 60 --faults dup=0.05,reorder=0.05 \\
        --alarm-rate 0.05 --seed 1 --duration 300
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from simulator.fleet import Behaviour, Fleet
from simulator.pile import Faults


def _read_passwords(path: str) -> dict[str, str]:
    """``pile_id:password`` per line; ``*:password`` is used for every pile not listed."""
    passwords: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pile_id, sep, password = line.partition(":")
        if not sep:
            raise SystemExit(f"{path}: expected 'pile_id:password', got {line!r}")
        passwords[pile_id] = password
    return passwords


def _read_pairs(path: str) -> list[tuple[str, str]]:
    """``account_no,pin`` per line (accounts the platform knows)."""
    pairs = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            account, _, pin = line.strip().partition(",")
            pairs.append((account, pin or "123456"))
    return pairs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883",
                   help="mqtt://host:port or mqtts://host:port")
    p.add_argument("--piles", type=int, default=10)
    p.add_argument("--ports", type=int, default=10)
    p.add_argument("--prefix", default="P", help="pile ids are PREFIX0001, PREFIX0002, ...")
    p.add_argument("--start", type=int, default=1, help="number of the first pile")
    p.add_argument("--meter-interval", type=int, default=60, help="seconds (simulated)")
    p.add_argument("--keepalive", type=int, default=60, help="seconds")
    p.add_argument("--speed", type=float, default=1.0,
                   help="simulated seconds per real second (60 = a minute per second)")
    p.add_argument("--username", default=None,
                   help="one username for every pile (dev brokers only; default: the pile id)")
    p.add_argument("--password-file", default=None,
                   help="lines 'pile_id:password'; '*:password' for all")
    p.add_argument("--tls-ca", default=None, help="CA file for mqtts://")
    p.add_argument("--faults", default="", help="e.g. dup=0.05,reorder=0.05,delay=0.1")
    p.add_argument("--arrival-rate", type=float, default=0.3,
                   help="bikes arriving per port per simulated hour")
    p.add_argument("--alarm-rate", type=float, default=0.0, help="alarms per pile-hour")
    p.add_argument("--link-drop-rate", type=float, default=0.0, help="outages per pile-hour")
    p.add_argument("--reboot-rate", type=float, default=0.0, help="reboots per pile-hour")
    p.add_argument("--accounts", default=None, help="file of 'account_no,pin' lines")
    p.add_argument("--cards", default=None, help="file of card UIDs (hex), one per line")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--duration", type=float, default=None, help="real seconds, default forever")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    behaviour = Behaviour(
        arrivals_per_port_hour=args.arrival_rate, alarm_rate=args.alarm_rate,
        link_drop_rate=args.link_drop_rate, reboot_rate=args.reboot_rate,
        accounts=_read_pairs(args.accounts) if args.accounts else [],
        cards=[c.strip().upper() for c in Path(args.cards).read_text().split()]
        if args.cards else [])
    fleet = Fleet(
        args.broker, args.piles, args.ports, args.prefix, start=args.start,
        meter_interval_s=args.meter_interval, keepalive_s=args.keepalive, speed=args.speed,
        faults=Faults.parse(args.faults), seed=args.seed, behaviour=behaviour,
        passwords=_read_passwords(args.password_file) if args.password_file else None,
        username=args.username, tls_ca=args.tls_ca)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        fleet.connect_all()
    except ConnectionError as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.info("%d piles x %d ports connected to %s", args.piles, args.ports, args.broker)
    try:
        fleet.run(args.duration, stop=stop)
    finally:
        for pile in fleet.piles:
            pile.flush()
        fleet.stop()
        logging.info("final: %s", fleet.stats())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

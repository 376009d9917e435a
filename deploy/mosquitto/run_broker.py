"""Run Mosquitto with the project's config on a port and directory of your choice.

The shipped ``mosquitto.conf`` carries production paths. This launcher keeps
every line of it and rewrites only the tagged ones (``# @path NAME`` and
``# @listener plain``), so the broker a developer or a test starts is the
production config on another port. Standard library only.

    python deploy/mosquitto/run_broker.py --port 18830 --dir var/mosquitto \\
        --user evc-platform:secret --pile P0001:pw1 --pile P0002:pw2

Passwords: ``mosquitto_passwd -b`` when it is installed, otherwise the same
PBKDF2-SHA512 line Mosquitto 2 writes (``$7$iterations$salt$hash``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import getpass
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONF_TEMPLATE = HERE / "mosquitto.conf"
ACL_TEMPLATE = HERE / "acl"
PLATFORM_USER = "evc-platform"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def hash_password(password: str, *, iterations: int = 101, salt: bytes | None = None) -> str:
    """Mosquitto 2 password hash: ``$7$<iterations>$<b64 salt>$<b64 pbkdf2-sha512>``."""
    salt = os.urandom(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def write_password_file(path: Path, users: Mapping[str, str], *, use_tool: bool = True) -> None:
    """One ``user:hash`` line per user (usernames must not contain ':')."""
    tool = shutil.which("mosquitto_passwd") if use_tool else None
    path.write_text("", encoding="utf-8")
    path.chmod(0o600)
    if tool is None:
        path.write_text("".join(f"{u}:{hash_password(p)}\n" for u, p in users.items()),
                        encoding="utf-8")
        return
    for user, password in users.items():
        subprocess.run([tool, "-b", str(path), user, password], check=True,
                       capture_output=True, timeout=30)


def write_acl(path: Path, platform_users: tuple[str, ...] = (PLATFORM_USER,)) -> None:
    """The ACL template, with a block for each extra platform account."""
    text = ACL_TEMPLATE.read_text(encoding="utf-8")
    for user in platform_users:
        if user != PLATFORM_USER:
            block = f"user {PLATFORM_USER}\ntopic readwrite piles/#\ntopic readwrite evc/#\n"
            text = text.replace(block, block + "\n" + block.replace(PLATFORM_USER, user), 1)
    path.write_text(text, encoding="utf-8")


def render_config(
    *, port: int, data_dir: Path, password_file: Path, acl_file: Path,
    bind: str = "127.0.0.1", log_file: Path | None = None, run_as: str | None = None,
    template: str | None = None,
) -> str:
    """The shipped config with only paths, listener and process user replaced."""
    paths = {
        "persistence_location": f"{data_dir}/",
        "password_file": str(password_file),
        "acl_file": str(acl_file),
        "log_dest": f"file {log_file}" if log_file else "stderr",
    }
    out: list[str] = []
    pending: str | None = None
    for line in (template or CONF_TEMPLATE.read_text(encoding="utf-8")).splitlines():
        stripped = line.strip()
        if stripped.startswith("# @path "):
            pending = stripped.split()[2]
        elif stripped == "# @listener plain":
            pending = "listener"
        elif pending == "listener":
            line, pending = f"listener {port} {bind}", None
        elif pending is not None:
            key = pending
            if not stripped.startswith(key + " "):
                raise ValueError(f"tag @path {key} is not followed by a '{key}' line")
            line, pending = f"{key} {paths[key]}", None
        elif stripped.startswith("user "):
            line = f"user {run_as or getpass.getuser()}"
        elif stripped.startswith("pid_file "):
            line = f"pid_file {data_dir}/mosquitto.pid"
        out.append(line)
    return "\n".join(out) + "\n"


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"mosquitto not listening on {host}:{port} after {timeout}s")


@contextlib.contextmanager
def run_broker(
    directory: Path, users: Mapping[str, str], *, port: int | None = None,
    host: str = "127.0.0.1", platform_users: tuple[str, ...] = (PLATFORM_USER,),
    timeout: float = 10.0, use_tool: bool = True,
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Start Mosquitto in ``directory``; yields (port, process); stops it on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "data"
    data.mkdir(exist_ok=True)
    passwd, acl, conf = directory / "passwd", directory / "acl", directory / "mosquitto.conf"
    log_file = directory / "mosquitto.log"
    write_password_file(passwd, users, use_tool=use_tool)
    write_acl(acl, platform_users)
    for attempt in range(5):
        chosen = port or free_port(host)
        conf.write_text(render_config(port=chosen, bind=host, data_dir=data,
                                      password_file=passwd, acl_file=acl, log_file=log_file),
                        encoding="utf-8")
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        try:
            wait_listening(host, chosen, proc, timeout)
            break
        except RuntimeError:
            if port is not None or attempt == 4:  # a fixed port, or out of luck: report
                log = log_file.read_text(errors="replace") if log_file.exists() else ""
                raise RuntimeError(f"mosquitto failed to start:\n{log[-2000:]}") from None
        except BaseException:
            _stop(proc)
            raise
    try:
        yield chosen, proc
    finally:
        _stop(proc)


def _die_with_parent() -> None:
    """Linux: the broker gets SIGTERM if the launching process dies (killed test run)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=18830)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--dir", default="var/mosquitto", help="config, passwords, data and log")
    p.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD",
                   help="platform service account (gets piles/# and evc/#)")
    p.add_argument("--pile", action="append", default=[], metavar="PILE_ID:PASSWORD")
    args = p.parse_args(argv)
    users = dict(item.split(":", 1) for item in args.user + args.pile)
    platform = tuple(item.split(":", 1)[0] for item in args.user) or (PLATFORM_USER,)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the cleanup below
    with run_broker(Path(args.dir).resolve(), users, port=args.port, host=args.host,
                    platform_users=platform) as (port, proc):
        print(f"mosquitto listening on mqtt://{args.host}:{port} (dir {args.dir})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

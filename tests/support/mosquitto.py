"""A private Mosquitto with the project's config (deploy/mosquitto), for tests.

Tests that check authentication and ACLs must not touch the shared anonymous
broker on :1883; this starts ``mosquitto -c <rendered deploy config>`` on a
free loopback port in a temp dir, with a password file and the ACL template,
and stops it afterwards.

    with project_broker({"P1": "pw1"}) as broker:
        client.username_pw_set(broker.platform_user, broker.platform_password)
        client.connect(broker.host, broker.port)
"""

from __future__ import annotations

import contextlib
import importlib.util
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
RUN_BROKER = ROOT / "deploy" / "mosquitto" / "run_broker.py"


def _launcher() -> ModuleType:
    # deploy/ is not a package: load the launcher from its file.
    spec = importlib.util.spec_from_file_location("evc_run_broker", RUN_BROKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


launcher = _launcher()


def mosquitto_available() -> bool:
    """Whether a mosquitto binary exists (tests skip otherwise)."""
    return Path(launcher.MOSQUITTO).exists() or shutil.which("mosquitto") is not None


@dataclass
class ProjectBroker:
    """Where the private broker listens and who may log in."""

    host: str
    port: int
    directory: Path
    platform_user: str
    platform_password: str
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def project_broker(
    piles: Mapping[str, str], *, platform_user: str = "evc-platform",
    platform_password: str | None = None, use_tool: bool = True, timeout: float = 10.0,
) -> Iterator[ProjectBroker]:
    """Start the project-config broker with these pile accounts (pile_id -> password).

    ``use_tool=False`` writes the password hashes in Python instead of with
    mosquitto_passwd (proves the fallback format authenticates).
    """
    platform_password = platform_password or secrets.token_urlsafe(12)
    users = {platform_user: platform_password, **piles}
    with tempfile.TemporaryDirectory(prefix="evc-mosquitto-") as tmp:
        directory = Path(tmp)
        with launcher.run_broker(directory, users, platform_users=(platform_user,),
                                 use_tool=use_tool, timeout=timeout) as (port, _proc):
            yield ProjectBroker("127.0.0.1", port, directory, platform_user,
                                platform_password, dict(piles))

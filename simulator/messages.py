"""Build valid protocol messages without any connection.

``MessageFactory`` is what a pile's firmware does before it touches the
network: it stamps the uplink envelope (v, pile_id, boot_id, seq, ts) and
fills the body. The SimulatedPile uses it, and benchmarks use it directly to
produce millions of valid payloads for 10,000 piles without 10,000 clients.
``command`` builds downlinks the way the platform must (cmd_id, expires_at),
for tests that play the platform.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from app.protocol import PROTOCOL_VERSION, downlink_topic, encode, uplink_topic

__all__ = ["MessageFactory", "Uplink", "command", "new_boot_id", "now_ms", "reading"]


class Uplink(dict):  # type: ignore[type-arg]
    """An uplink payload (a plain dict on the wire) that remembers its message type."""

    __slots__ = ("type",)

    def __init__(self, msg_type: str, payload: dict[str, Any]) -> None:
        super().__init__(payload)
        self.type = msg_type

    @property
    def topic(self) -> str:
        return uplink_topic(self["pile_id"], self.type)


def now_ms() -> int:
    """Wall clock in unix milliseconds."""
    return time.time_ns() // 1_000_000


def new_boot_id(rng: random.Random | None = None) -> str:
    """A fresh boot id (uuid4-like hex); seeded for reproducible runs."""
    if rng is None:
        return uuid.uuid4().hex
    return f"{rng.getrandbits(128):032x}"


def reading(
    port: int, energy_wh: int, *, delta_wh: int = 0, power_w: int = 0, voltage_dv: int = 2200,
    current_ma: int = 0, temp_dc: int | None = 250, session_id: str | None = None,
    local_id: str | None = None,
) -> dict[str, Any]:
    """One entry of a meter message's ``readings``."""
    return {
        "port": port, "energy_wh": energy_wh, "delta_wh": delta_wh, "power_w": power_w,
        "voltage_dv": voltage_dv, "current_ma": current_ma, "temp_dc": temp_dc,
        "session_id": session_id, "local_id": local_id,
    }


class MessageFactory:
    """Uplink messages of one pile: envelope stamping plus one builder per type.

    ``seq`` is per boot and strictly increasing; ``new_boot()`` starts a new
    boot (new boot_id, seq back to 1), as a pile reboot does. ``clock`` gives the
    pile's time in unix ms (the simulator passes its simulated clock).
    """

    def __init__(
        self, pile_id: str, *, boot_id: str | None = None,
        clock: Callable[[], int] = now_ms, rng: random.Random | None = None,
    ) -> None:
        self.pile_id = pile_id
        self.clock = clock
        self._rng = rng
        self.boot_id = boot_id or new_boot_id(rng)
        self._seq = itertools.count(1)  # next() is atomic under the GIL
        self.last_seq = 0

    def new_boot(self, boot_id: str | None = None) -> None:
        """Reboot: a new boot_id and seq restarting at 1."""
        self.boot_id = boot_id or new_boot_id(self._rng)
        self._seq = itertools.count(1)
        self.last_seq = 0

    def topic(self, msg_type: str) -> str:
        return uplink_topic(self.pile_id, msg_type)

    def build(self, msg_type: str, body: dict[str, Any]) -> Uplink:
        """Envelope + body. Consumes one seq."""
        seq = next(self._seq)
        self.last_seq = seq
        return Uplink(msg_type, {"v": PROTOCOL_VERSION, "pile_id": self.pile_id,
                                 "boot_id": self.boot_id, "seq": seq, "ts": self.clock(),
                                 **body})

    @staticmethod
    def encode(message: dict[str, Any]) -> bytes:
        return encode(message)

    # ------------------------------------------------------------- builders
    def online(
        self, *, conn: int, ports: list[dict[str, Any]], firmware: str = "sim-1.0",
        model: str = "SIM-EB10", keepalive_s: int = 60, meter_interval_s: int = 60,
        config_id: str | None = None, iccid: str | None = None,
    ) -> Uplink:
        """``ports``: [{port, status, energy_wh, session_id, local_id}] for every port."""
        return self.build("online", {
            "conn": conn, "firmware": firmware, "model": model, "port_count": len(ports),
            "keepalive_s": keepalive_s, "meter_interval_s": meter_interval_s,
            "config_id": config_id, "iccid": iccid, "ports": ports,
        })

    def offline(self, *, conn: int, reason: str = "link_lost") -> Uplink:
        return self.build("offline", {"conn": conn, "reason": reason})

    def heartbeat(
        self, *, port_statuses: list[str], uptime_s: int, rssi_dbm: int | None = -75,
    ) -> Uplink:
        return self.build("heartbeat", {"rssi_dbm": rssi_dbm, "uptime_s": uptime_s,
                                        "port_statuses": port_statuses})

    def port_status(
        self, *, port: int, status: str, prev_status: str, session_id: str | None = None,
        local_id: str | None = None, fault_code: str | None = None,
    ) -> Uplink:
        return self.build("port_status", {
            "port": port, "status": status, "prev_status": prev_status,
            "session_id": session_id, "local_id": local_id, "fault_code": fault_code,
        })

    def meter(self, readings: Iterable[dict[str, Any]]) -> Uplink:
        return self.build("meter", {"readings": list(readings)})

    def alarm(
        self, *, port: int | None, kind: str, severity: str, cut_off: bool,
        state: str = "raised", value: int | None = None, threshold: int | None = None,
        session_id: str | None = None,
    ) -> Uplink:
        return self.build("alarm", {
            "port": port, "kind": kind, "severity": severity, "state": state, "value": value,
            "threshold": threshold, "cut_off": cut_off, "session_id": session_id,
        })

    def auth_request(
        self, *, req_id: str, port: int, account_no: str | None = None, pin: str | None = None,
        card_uid: str | None = None,
    ) -> Uplink:
        """Keypad login (account_no + pin) or card swipe (card_uid)."""
        if card_uid is not None:
            return self.build("auth_request", {"req_id": req_id, "port": port,
                                               "method": "card", "card_uid": card_uid})
        return self.build("auth_request", {"req_id": req_id, "port": port, "method": "keypad",
                                           "account_no": account_no, "pin": pin})

    def cmd_ack(
        self, *, cmd_id: str, cmd: str, ok: bool, reason: str | None = None,
        port: int | None = None, session_id: str | None = None, energy_wh: int | None = None,
    ) -> Uplink:
        return self.build("cmd_ack", {
            "cmd_id": cmd_id, "cmd": cmd, "ok": ok, "reason": reason, "port": port,
            "session_id": session_id, "energy_wh": energy_wh,
        })

    def session_end(
        self, *, session_id: str, port: int, reason: str, energy_start_wh: int,
        energy_end_wh: int, started_at: int, ended_at: int, peak_power_w: int,
    ) -> Uplink:
        return self.build("session_end", {
            "session_id": session_id, "port": port, "reason": reason,
            "energy_start_wh": energy_start_wh, "energy_end_wh": energy_end_wh,
            "started_at": started_at, "ended_at": ended_at, "peak_power_w": peak_power_w,
        })

    def offline_sessions(self, sessions: list[dict[str, Any]]) -> Uplink:
        """``sessions`` already in time order, at most 16."""
        return self.build("offline_sessions", {"sessions": sessions})

    def coin_insert(self, *, req_id: str, port: int, coin_fen: int) -> Uplink:
        return self.build("coin_insert", {"req_id": req_id, "port": port, "coin_fen": coin_fen})

    def config_ack(
        self, *, cmd_id: str, config_id: str | None, ok: bool, reason: str | None = None,
    ) -> Uplink:
        return self.build("config_ack", {"cmd_id": cmd_id, "config_id": config_id, "ok": ok,
                                         "reason": reason})

    def master_meter(self, *, meter_id: str, energy_wh: int, read_at: int) -> Uplink:
        return self.build("master_meter", {"meter_id": meter_id, "energy_wh": energy_wh,
                                           "read_at": read_at})


def command(
    msg_type: str, *, ttl_s: float = 60, ts: int | None = None, cmd_id: str | None = None,
    **body: Any,
) -> dict[str, Any]:
    """A downlink as the platform sends it: envelope (v, cmd_id, ts, expires_at) + body."""
    created = now_ms() if ts is None else ts
    return {"v": PROTOCOL_VERSION, "cmd_id": cmd_id or str(uuid.uuid4()), "ts": created,
            "expires_at": created + int(ttl_s * 1000), **body}


def command_topic(pile_id: str, msg_type: str) -> str:
    """Alias of app.protocol.downlink_topic, for symmetry in tests."""
    return downlink_topic(pile_id, msg_type)

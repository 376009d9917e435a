"""What every notification channel shares: the message, the interface, the error.

A channel turns one queued notification (``IncidentNotification.payload``, built by
``app.services.incidents``, or ``UserNotification.payload``, e.g. by
``app.services.charge_notices``) into one request to the outside world. It never touches the
database, never retries (the delivery loop does, from the row's state) and raises
:class:`DeliveryError` for anything that did not arrive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

KIND_LABELS = {
    "smoke": "烟雾报警",
    "short_circuit": "短路",
    "leakage": "漏电",
    "over_temperature": "过温",
    "overcurrent": "过流",
    "overload": "过载",
    "plug_fault": "插头故障",
    "pile_offline": "充电桩离线",
    "meter_backwards": "电表倒走",
    "abnormal_power": "功率异常",
    "temperature_rising_fast": "温升过快",
    "energy_without_session": "无订单用电",
    "energy_loss": "电量损耗异常",
}
SEVERITY_LABELS = {"critical": "紧急", "major": "重要", "minor": "一般"}
# Why a charge ended (app.domain.charging.StopReason), at most 5 characters (a "phrase").
STOP_REASON_LABELS = {
    "full": "充满",
    "unplugged": "拔枪",
    "user": "用户停止",
    "limit_reached": "达到上限",
    "balance": "余额不足",
    "operator": "管理员停止",
    "alarm": "告警停止",
    "power_loss": "断电停止",
    "pile_offline": "设备离线",
    "start_failed": "启动失败",
}


def yuan(fen: int) -> str:
    """Integer fen as "¥12.30" (no floats anywhere near money)."""
    sign = "-" if fen < 0 else ""
    return f"{sign}¥{abs(fen) // 100}.{abs(fen) % 100:02d}"


def kwh(wh: int) -> str:
    """Integer watt-hours as kWh with two decimals, rounded half up: 1234 -> "1.23"."""
    centi = (max(wh, 0) + 5) // 10
    return f"{centi // 100}.{centi % 100:02d}"


class DeliveryError(Exception):
    """The message did not arrive. ``permanent``: retrying cannot help (e.g. the user
    refused WeChat subscribe messages, or the gateway says the number is invalid)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Message:
    """One notification as queued. ``delivery_id`` is the row id: stable across retries,
    so receivers can de-duplicate (the webhook sends it as ``X-EVC-Delivery``).
    ``template_id``: the row's own template (user messages), else the channel's."""

    delivery_id: int
    payload: Mapping[str, Any]
    template_id: str | None = None

    def get(self, key: str, default: Any = None) -> Any:
        return self.payload.get(key, default)

    @property
    def kind_label(self) -> str:
        kind = str(self.get("kind", ""))
        return KIND_LABELS.get(kind, kind)

    @property
    def severity_label(self) -> str:
        severity = str(self.get("severity", ""))
        return SEVERITY_LABELS.get(severity, severity)

    @property
    def place(self) -> str:
        """Community, pile and port, as short as possible."""
        parts = [str(self.get("community_name") or "")]
        if self.get("pile_serial"):
            parts.append(f"桩{self.get('pile_serial')}")
        if self.get("port_no"):
            parts.append(f"{self.get('port_no')}号口")
        return " ".join(p for p in parts if p)

    def short_place(self, limit: int = 20) -> str:
        """:attr:`place` within ``limit`` characters, keeping pile and port whole (a
        template variable is capped; the community name is what gets cut)."""
        core = " ".join(p for p in (f"桩{self.get('pile_serial')}" if self.get("pile_serial")
                                    else "", f"{self.get('port_no')}号口"
                                    if self.get("port_no") else "") if p)
        community = str(self.get("community_name") or "")
        if not core:
            return community[:limit]
        room = limit - len(core) - 1
        return f"{community[:room]} {core}" if room > 0 and community else core[:limit]

    def local_time(self, fmt: str = "%Y-%m-%d %H:%M", key: str = "opened_at") -> str:
        raw = self.get(key)
        if not raw:
            return ""
        at = datetime.fromisoformat(str(raw))
        zone = ZoneInfo(str(self.get("timezone") or "Asia/Shanghai"))
        return at.astimezone(zone).strftime(fmt)

    @property
    def title(self) -> str:
        prefix = "升级" if self.get("reason") == "escalated" else "告警"
        return f"【充电{prefix}】{self.kind_label}（{self.severity_label}）"

    @property
    def text(self) -> str:
        """The human text (SMS body for gateways that take free text, webhook ``text``)."""
        lines = [self.title, self.place, f"时间 {self.local_time()}"]
        if self.get("stop_scope") in ("port", "pile"):
            lines.append("平台已下发断电指令")
        lines.append(f"事件编号 {self.get('incident_id')}，请尽快处理并在后台确认")
        return "；".join(line for line in lines if line)


class Channel(Protocol):
    name: str

    def send(self, recipient: str, message: Message) -> None:
        """Deliver or raise :class:`DeliveryError`."""

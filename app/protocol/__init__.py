"""The pile <-> platform MQTT protocol: schemas, topic helpers and validation.

Shared by the platform bridge and by the pile simulator, so it imports only the
standard library, jsonschema and orjson (never Flask, SQLAlchemy, paho or ``app``).
The normative description is docs/protocol.md; the JSON Schemas in
``schemas/`` are the machine-readable part of it.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any, Literal

import orjson
from jsonschema import Draft202012Validator

from app.protocol._fastcheck import (
    Check,
    Predicate,
    compile_predicate,
    compile_schema,
    format_error,
)

__all__ = [
    "ACK_TIMEOUT_S",
    "DOWNLINK_TYPES",
    "MAX_PAYLOAD_BYTES",
    "MESSAGE_TYPES",
    "PILE_ID_RE",
    "PROTOCOL_MAJOR",
    "PROTOCOL_VERSION",
    "UPLINK_TYPES",
    "ProtocolError",
    "decode",
    "direction_of",
    "downlink_topic",
    "encode",
    "load_schema",
    "parse_topic",
    "reference_validator",
    "uplink_topic",
    "validate_downlink",
    "validate_uplink",
]

PROTOCOL_VERSION = "1.0"
PROTOCOL_MAJOR = 1
#: Largest accepted payload (UTF-8 JSON bytes). Larger messages are rejected
#: before parsing so a broken pile cannot make the bridge parse megabytes.
MAX_PAYLOAD_BYTES = 8 * 1024
#: The platform waits this long for a cmd_ack/config_ack before re-sending.
ACK_TIMEOUT_S = 10

UPLINK_TYPES: frozenset[str] = frozenset({
    "online", "offline", "heartbeat", "port_status", "meter", "alarm",
    "auth_request", "cmd_ack", "session_end", "offline_sessions",
    "coin_insert", "config_ack", "master_meter",
})
DOWNLINK_TYPES: frozenset[str] = frozenset({
    "auth_reply", "start", "stop", "config", "time_sync", "balance",
})
MESSAGE_TYPES: frozenset[str] = UPLINK_TYPES | DOWNLINK_TYPES

PILE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_TOPIC_ROOT = "piles"
_SCHEMA_DIR = Path(__file__).with_name("schemas")

Direction = Literal["up", "down"]


class ProtocolError(ValueError):
    """A message that does not follow the protocol.

    ``code`` is short and stable so the bridge can count rejects by cause:
    ``malformed`` (not a JSON object / bad topic), ``schema`` (fails the JSON
    Schema), ``version`` (unknown major version), ``oversized`` (payload over
    MAX_PAYLOAD_BYTES), ``unknown_type`` (no such message type for that
    direction), ``pile_mismatch`` (payload pile_id differs from the topic's).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# ----------------------------------------------------------------- topics

def uplink_topic(pile_id: str, msg_type: str) -> str:
    """Topic a pile publishes ``msg_type`` on: ``piles/{pile_id}/up/{type}``."""
    return f"{_TOPIC_ROOT}/{pile_id}/up/{msg_type}"


def downlink_topic(pile_id: str, msg_type: str) -> str:
    """Topic the platform sends ``msg_type`` to: ``piles/{pile_id}/down/{type}``."""
    return f"{_TOPIC_ROOT}/{pile_id}/down/{msg_type}"


def parse_topic(topic: str) -> tuple[str, Direction, str]:
    """Split a protocol topic into ``(pile_id, direction, type)``.

    Raises ProtocolError(``malformed``) for anything that is not
    ``piles/{pile_id}/{up|down}/{type}`` and (``unknown_type``) for a type the
    protocol does not define in that direction.
    """
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != _TOPIC_ROOT or parts[2] not in ("up", "down"):
        raise ProtocolError("malformed", f"not a protocol topic: {topic[:100]!r}")
    pile_id, direction, msg_type = parts[1], parts[2], parts[3]
    if not PILE_ID_RE.fullmatch(pile_id):
        raise ProtocolError("malformed", f"bad pile_id in topic: {pile_id[:40]!r}")
    known = UPLINK_TYPES if direction == "up" else DOWNLINK_TYPES
    if msg_type not in known:
        raise ProtocolError("unknown_type", f"no {direction}link type {msg_type[:40]!r}")
    return pile_id, direction, msg_type  # type: ignore[return-value]


def direction_of(msg_type: str) -> Direction:
    """Whether ``msg_type`` travels up (pile -> platform) or down."""
    if msg_type in UPLINK_TYPES:
        return "up"
    if msg_type in DOWNLINK_TYPES:
        return "down"
    raise ProtocolError("unknown_type", f"no message type {msg_type[:40]!r}")


# ----------------------------------------------------------------- schemas

@cache
def _raw_schema(msg_type: str) -> dict[str, Any]:
    if msg_type not in MESSAGE_TYPES:
        raise ProtocolError("unknown_type", f"no message type {msg_type[:40]!r}")
    with (_SCHEMA_DIR / f"{msg_type}.schema.json").open(encoding="utf-8") as f:
        schema = json.load(f)
    Draft202012Validator.check_schema(schema)
    return schema


def load_schema(msg_type: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one message type, as a fresh dict."""
    return copy.deepcopy(_raw_schema(msg_type))


def reference_validator(msg_type: str) -> Draft202012Validator:
    """The plain jsonschema validator: the reference the fast checks are tested against."""
    return Draft202012Validator(_raw_schema(msg_type))


@cache
def _check(msg_type: str) -> Check:
    # Compiled once per type: validation is on the bridge's hot path.
    return compile_schema(_raw_schema(msg_type))


@cache
def _is_valid(msg_type: str) -> Predicate:
    # The verdict alone, as one generated function: every message pays for it, only a
    # reject pays for _check's reason.
    return compile_predicate(_raw_schema(msg_type))


def encode(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the wire form of every message."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode(raw: bytes | bytearray | str) -> dict[str, Any]:
    """Parse a payload, enforcing MAX_PAYLOAD_BYTES and "must be a JSON object"."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise ProtocolError("oversized", f"{len(raw)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        # orjson: strict JSON (no NaN/Infinity, no lone surrogates), 3-5x the stdlib's speed
        payload = orjson.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("malformed", f"not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ProtocolError("malformed", "payload is not a JSON object")
    return payload


def _resolve_type(topic_or_type: str, want: Direction) -> tuple[str, str | None]:
    """Accept ``meter``, ``up/meter`` or ``piles/P1/up/meter``; return (type, pile_id)."""
    if topic_or_type.startswith(_TOPIC_ROOT + "/"):
        pile_id, direction, msg_type = parse_topic(topic_or_type)
        if direction != want:
            raise ProtocolError(
                "unknown_type", f"{topic_or_type[:100]!r} is not a {want}link topic")
        return msg_type, pile_id
    msg_type = topic_or_type.rsplit("/", 1)[-1]
    known = UPLINK_TYPES if want == "up" else DOWNLINK_TYPES
    if msg_type not in known:
        raise ProtocolError("unknown_type", f"no {want}link type {msg_type[:40]!r}")
    return msg_type, None


def _check_version(payload: dict[str, Any]) -> None:
    v = payload.get("v")
    if not isinstance(v, str):
        raise ProtocolError("version", "missing protocol version 'v'")
    major, _, minor = v.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        raise ProtocolError("version", f"bad version {v[:16]!r}")
    if int(major) != PROTOCOL_MAJOR:
        raise ProtocolError("version", f"unsupported major version {v[:16]!r}")


def _validate(
    msg_type: str, payload: Any, want: Direction, topic_pile: str | None
) -> dict[str, Any]:
    if not isinstance(payload, dict):
        payload = decode(payload)
    _check_version(payload)
    if not _is_valid(msg_type)(payload):
        # the two are tested to agree; if they ever did not, the message is still refused
        error = _check(msg_type)(payload) or ((), "refused by the compiled predicate")
        raise ProtocolError("schema", f"{msg_type} {format_error(error)[:200]}")
    if topic_pile is not None and want == "up" and payload["pile_id"] != topic_pile:
        raise ProtocolError(
            "pile_mismatch", f"payload pile_id {payload['pile_id']!r} on topic of {topic_pile!r}")
    return payload


def validate_uplink(topic_or_type: str, payload: dict[str, Any] | bytes | str) -> dict[str, Any]:
    """Check one pile -> platform message; return it as a dict.

    ``topic_or_type`` is the full topic (then the payload's pile_id must match
    the topic's), ``up/{type}`` or the bare type. ``payload`` may be raw bytes
    (size and JSON are checked too) or an already parsed dict.
    Raises ProtocolError with a machine code; see the class docstring.
    """
    msg_type, topic_pile = _resolve_type(topic_or_type, "up")
    return _validate(msg_type, payload, "up", topic_pile)


def validate_downlink(topic_or_type: str, payload: dict[str, Any] | bytes | str) -> dict[str, Any]:
    """Check one platform -> pile command; the pile (simulator) side of validate_uplink."""
    msg_type, _ = _resolve_type(topic_or_type, "down")
    return _validate(msg_type, payload, "down", None)

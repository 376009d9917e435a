"""The written protocol, its JSON Schemas and the validator agree."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from app.protocol import (
    DOWNLINK_TYPES,
    MAX_PAYLOAD_BYTES,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    UPLINK_TYPES,
    ProtocolError,
    direction_of,
    downlink_topic,
    encode,
    load_schema,
    parse_topic,
    reference_validator,
    uplink_topic,
    validate_downlink,
    validate_uplink,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
EXAMPLE = re.compile(r"<!-- example: (\w+) -->\s*```json\n(.*?)```", re.S)
UP_ENVELOPE = ("v", "pile_id", "boot_id", "seq", "ts")
DOWN_ENVELOPE = ("v", "cmd_id", "ts", "expires_at")


def doc_examples() -> list[tuple[str, dict[str, Any]]]:
    return [(t, json.loads(body)) for t, body in EXAMPLE.findall(DOC.read_text("utf-8"))]


EXAMPLES = doc_examples()


def validate(msg_type: str, payload: Any) -> dict[str, Any]:
    if direction_of(msg_type) == "up":
        return validate_uplink(msg_type, payload)
    return validate_downlink(msg_type, payload)


def test_the_doc_has_an_example_for_every_message_type() -> None:
    assert {t for t, _ in EXAMPLES} == set(MESSAGE_TYPES)


@pytest.mark.parametrize(("msg_type", "example"), EXAMPLES,
                         ids=[f"{t}-{i}" for i, (t, _) in enumerate(EXAMPLES)])
def test_doc_example_is_valid(msg_type: str, example: dict[str, Any]) -> None:
    assert example["v"] == PROTOCOL_VERSION
    assert validate(msg_type, example) == example
    assert validate(msg_type, encode(example)) == example
    assert reference_validator(msg_type).is_valid(example)
    assert len(encode(example)) <= MAX_PAYLOAD_BYTES


@pytest.mark.parametrize("msg_type", sorted(MESSAGE_TYPES))
def test_schema_is_closed_and_carries_the_envelope(msg_type: str) -> None:
    schema = load_schema(msg_type)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    envelope = UP_ENVELOPE if msg_type in UPLINK_TYPES else DOWN_ENVELOPE
    assert set(envelope) <= set(schema["required"])

    def objects(node: Any) -> list[dict[str, Any]]:
        found = []
        if isinstance(node, dict):
            if node.get("type") == "object":
                found.append(node)
            for value in node.values():
                found += objects(value)
        elif isinstance(node, list):
            for value in node:
                found += objects(value)
        return found

    for obj in objects(schema):
        assert obj.get("additionalProperties") is False, obj.get("required")


def test_envelope_definitions_are_identical_across_schemas() -> None:
    for envelope, types in ((UP_ENVELOPE, UPLINK_TYPES), (DOWN_ENVELOPE, DOWNLINK_TYPES)):
        for field in envelope:
            defs = {json.dumps(load_schema(t)["properties"][field], sort_keys=True)
                    for t in types}
            assert len(defs) == 1, (field, defs)


# ------------------------------------------------------------------ rejections

def example(msg_type: str) -> dict[str, Any]:
    return copy.deepcopy(next(e for t, e in EXAMPLES if t == msg_type))


def code_of(msg_type_or_topic: str, payload: Any, *, up: bool = True) -> str:
    with pytest.raises(ProtocolError) as info:
        if up:
            validate_uplink(msg_type_or_topic, payload)
        else:
            validate_downlink(msg_type_or_topic, payload)
    assert str(info.value).startswith(info.value.code + ": ")
    return info.value.code


def test_oversized_payload_is_rejected_before_parsing() -> None:
    assert code_of("meter", b"{" + b" " * MAX_PAYLOAD_BYTES + b"}") == "oversized"


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"\xff\xfe", b"", b'"text"', b"null"])
def test_malformed_payload(raw: bytes) -> None:
    assert code_of("meter", raw) == "malformed"


@pytest.mark.parametrize("target", ["nonsense", "up/start", "piles/P1/up/start",
                                    "piles/P1/down/meter"])
def test_unknown_uplink_type(target: str) -> None:
    assert code_of(target, example("meter")) == "unknown_type"


def test_unknown_downlink_type() -> None:
    assert code_of("meter", example("start"), up=False) == "unknown_type"


@pytest.mark.parametrize("version", ["2.0", "0.9", "1", "one", None, 1.0])
def test_unknown_major_version_is_refused(version: Any) -> None:
    msg = example("heartbeat")
    if version is None:
        del msg["v"]
    else:
        msg["v"] = version
    assert code_of("heartbeat", msg) == "version"


def test_a_newer_minor_version_is_accepted() -> None:
    msg = example("heartbeat")
    msg["v"] = "1.7"
    assert validate_uplink("heartbeat", msg)["v"] == "1.7"


def test_pile_id_must_match_the_topic() -> None:
    assert code_of(uplink_topic("P0002", "meter"), example("meter")) == "pile_mismatch"
    assert validate_uplink(uplink_topic("P0001", "meter"), example("meter"))


def _set(msg: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node: Any = msg
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return msg


_DELETE = object()

SCHEMA_BREAKS = [
    ("meter", "seq", 0),
    ("meter", "seq", 1.0),
    ("meter", "seq", "7"),
    ("meter", "ts", -1),
    ("meter", "boot_id", "short"),
    ("meter", "pile_id", "P0001\n"),
    ("meter", "readings", []),
    ("meter", "readings.0.port", 0),
    ("meter", "readings.0.energy_wh", 1.5),
    ("meter", "readings.0.energy_wh", -3),
    ("meter", "readings.0.voltage_dv", True),
    ("meter", "readings.0.session_id", _DELETE),
    ("meter", "readings.0.extra", 1),
    ("meter", "extra", 1),
    ("port_status", "status", "broken"),
    ("alarm", "kind", "fire"),
    ("alarm", "cut_off", 1),
    ("auth_request", "account_no", "12812345678"),
    ("auth_request", "account_no", "1381234567"),
    ("auth_request", "pin", "12345"),
    ("auth_request", "card_uid", "04A2B3C4"),  # card uid on a keypad login
    ("cmd_ack", "reason", "port_busy"),  # ok: true with a reason
    ("cmd_ack", "ok", None),
    ("session_end", "reason", "whatever"),
    ("offline_sessions", "sessions.0.card_uid", None),  # card session without card
    ("offline_sessions", "sessions.1.coin_fen", 0),
    ("coin_insert", "coin_fen", 0),
    ("online", "ports", []),
    ("online", "conn", 0),
    ("offline", "reason", "bored"),
    ("master_meter", "energy_wh", -1),
]


@pytest.mark.parametrize(("msg_type", "path", "value"), SCHEMA_BREAKS,
                         ids=[f"{t}.{p}={v!r}" for t, p, v in SCHEMA_BREAKS])
def test_broken_uplink_is_a_schema_error(msg_type: str, path: str, value: Any) -> None:
    msg = _set(example(msg_type), path, value)
    assert code_of(msg_type, msg) == "schema"


DOWN_BREAKS = [
    ("start", "limits.max_minutes", 0),
    ("start", "limits.max_amount_fen", _DELETE),
    ("start", "tariff.energy_fen_per_kwh", 0.8),
    ("start", "method", "wechat"),
    ("start", "expires_at", _DELETE),
    ("stop", "reason", "because"),
    ("auth_reply", "session_id", None),  # allowed without a session
    ("auth_reply", "reason", "wrong_pin"),  # allowed with a deny reason
    ("config", "full_power_w", 0),
    ("time_sync", "utc_offset_min", 900),
    ("balance", "balance_fen", "6.42"),
]


@pytest.mark.parametrize(("msg_type", "path", "value"), DOWN_BREAKS,
                         ids=[f"{t}.{p}={v!r}" for t, p, v in DOWN_BREAKS])
def test_broken_downlink_is_a_schema_error(msg_type: str, path: str, value: Any) -> None:
    msg = _set(example(msg_type), path, value)
    assert code_of(msg_type, msg, up=False) == "schema"


def test_a_denied_auth_reply_is_valid() -> None:
    msg = example("auth_reply")
    msg.update(allow=False, reason="insufficient_balance", session_id=None, limits=None)
    assert validate_downlink("auth_reply", msg)


# ------------------------------------------------ fast checker vs jsonschema

MUTATIONS: list[Any] = [None, True, False, 0, -1, 1, 2**40, 1.5, "", "x", "P0001", [], {},
                        ["idle"], {"port": 1}, _DELETE]


def _paths(node: Any, prefix: str = "") -> list[str]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            out.append(path)
            out += _paths(value, path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            path = f"{prefix}.{i}"
            out += _paths(value, path)
    return out


@pytest.mark.parametrize("index", range(len(EXAMPLES)),
                         ids=[f"{t}-{i}" for i, (t, _) in enumerate(EXAMPLES)])
def test_fast_checker_agrees_with_jsonschema(index: int) -> None:
    """Every single-field mutation of every example gets the same verdict from both."""
    msg_type, base = EXAMPLES[index]
    reference = reference_validator(msg_type)
    checked = 0
    for path in _paths(base):
        if path == "v":
            continue  # the version check runs before the schema
        for value in MUTATIONS:
            msg = _set(copy.deepcopy(base), path, value)
            expected = reference.is_valid(msg)
            try:
                validate(msg_type, msg)
                fast = True
            except ProtocolError as exc:
                assert exc.code == "schema", exc
                fast = False
            if expected and not fast and isinstance(value, float):
                continue  # deliberate: 1.0 is not a JSON integer for us
            assert fast == expected, (path, value)
            checked += 1
    assert checked > 10


@pytest.mark.parametrize("index", range(len(EXAMPLES)),
                         ids=[f"{t}-{i}" for i, (t, _) in enumerate(EXAMPLES)])
def test_generated_predicate_agrees_with_the_compiled_check(index: int) -> None:
    """The bridge decides with the generated predicate and asks the compiled check only
    for the reason: both give the same verdict on every mutation (floats included)."""
    from app.protocol._fastcheck import compile_predicate, compile_schema

    msg_type, base = EXAMPLES[index]
    schema = load_schema(msg_type)
    predicate, check = compile_predicate(schema), compile_schema(schema)
    rejected = 0
    for path in _paths(base):
        for value in [*MUTATIONS, 1.0, "x\n", {"port": 1, "extra": 2}, [None]]:
            msg = _set(copy.deepcopy(base), path, value)
            assert predicate(msg) == (check(msg) is None), (path, value)
            rejected += not predicate(msg)
    assert predicate(base) and rejected > 10


def test_fast_checker_is_stricter_on_trailing_newline_and_integral_floats() -> None:
    msg = example("heartbeat")
    msg["uptime_s"] = 5.0
    assert reference_validator("heartbeat").is_valid(msg)
    assert code_of("heartbeat", msg) == "schema"
    msg = example("heartbeat")
    msg["boot_id"] += "\n"  # Python's '$' matches before a final newline; ECMA's does not
    assert reference_validator("heartbeat").is_valid(msg)
    assert code_of("heartbeat", msg) == "schema"


# ------------------------------------------------------------------- topics

def test_topic_helpers_round_trip() -> None:
    assert uplink_topic("P0001", "meter") == "piles/P0001/up/meter"
    assert downlink_topic("P0001", "start") == "piles/P0001/down/start"
    assert parse_topic("piles/P0001/up/meter") == ("P0001", "up", "meter")
    assert parse_topic("piles/P-1_a/down/stop") == ("P-1_a", "down", "stop")


@pytest.mark.parametrize("topic", ["piles/P0001/up", "pile/P0001/up/meter",
                                   "piles/P 1/up/meter", "piles/P0001/sideways/meter",
                                   "piles/P0001/up/meter/extra", "piles//up/meter",
                                   "piles/" + "x" * 33 + "/up/meter"])
def test_parse_topic_rejects_foreign_topics(topic: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_topic(topic)
    assert info.value.code == "malformed"


def test_parse_topic_rejects_unknown_types() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_topic("piles/P0001/up/start")
    assert info.value.code == "unknown_type"


def test_protocol_package_imports_nothing_of_the_platform() -> None:
    """app.protocol is shared with the simulator: stdlib, jsonschema and orjson only."""
    source = "\n".join(p.read_text("utf-8") for p in
                       (DOC.parents[1] / "app" / "protocol").glob("*.py"))
    imports = set(re.findall(r"^\s*(?:from|import) ([\w.]+)", source, re.M))
    allowed = {"__future__", "copy", "json", "re", "functools", "pathlib", "typing",
               "jsonschema", "orjson", "collections.abc", "app.protocol._fastcheck"}
    assert imports <= allowed, imports - allowed

"""Compile the protocol's JSON Schemas into plain Python checks.

Why: jsonschema's generic validator manages ~1,500 ten-port meter messages per
second here; the bridge must ingest >= 10,000/s. The schemas use a small,
fixed subset of draft 2020-12, so each one is compiled once into nested
closures. The subset is closed: an unknown keyword raises at compile time, so a
schema edit can never be silently half-checked. tests/protocol compares the
result with jsonschema on valid and broken payloads.

Deliberate differences from jsonschema, both stricter: an "integer" must be a
JSON integer (``1.0`` is refused), and ``$`` in a pattern means end of string
(ECMA-262) rather than Python's "end or before a final newline".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

#: A compiled check returns None when ``x`` is valid, else (path, message);
#: the path is built only on failure, which keeps the valid case cheap.
Error = tuple[tuple[str, ...], str]
Check = Callable[[Any], "Error | None"]

_ANNOTATIONS = frozenset({
    "$schema", "$id", "title", "description", "x-direction", "examples", "$comment",
})
_SUPPORTED = _ANNOTATIONS | {
    "type", "enum", "const", "pattern", "minimum", "maximum", "minLength", "maxLength",
    "required", "properties", "additionalProperties", "items", "minItems", "maxItems",
    "anyOf", "allOf", "if", "then", "not",
}


def _is_type(x: Any, name: str) -> bool:
    if name == "integer":
        return type(x) is int
    if name == "string":
        return type(x) is str
    if name == "null":
        return x is None
    if name == "boolean":
        return type(x) is bool
    if name == "object":
        return type(x) is dict
    if name == "array":
        return type(x) is list
    raise ValueError(f"unsupported type {name!r}")


def format_error(error: Error) -> str:
    """``readings/3/power_w: above maximum 20000``."""
    path, message = error
    return f"{'/'.join(path) or '(root)'}: {message}"


def compile_schema(schema: dict[str, Any] | bool) -> Check:
    """Turn one (sub)schema into a check function."""
    if schema is True:
        return lambda x: None
    if schema is False:
        return lambda x: ((), "not allowed")
    unknown = set(schema) - _SUPPORTED
    if unknown:
        raise ValueError(f"schema keyword(s) not supported by the fast checker: {sorted(unknown)}")
    if "then" in schema and "if" not in schema:
        raise ValueError("'then' without 'if'")
    checks: list[Check] = []

    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        for t in types:
            _is_type(None, t)  # rejects unknown type names at compile time
        wanted = tuple(types)

        def check_type(x: Any) -> Error | None:
            for t in wanted:
                if _is_type(x, t):
                    return None
            return ((), f"expected {'/'.join(wanted)}")
        checks.append(check_type)

    if "enum" in schema:
        values = list(schema["enum"])
        if all(type(v) is str for v in values):
            allowed = frozenset(values)

            def check_enum(x: Any) -> Error | None:
                if type(x) is str and x in allowed:
                    return None
                return ((), f"not one of {sorted(allowed)}")
        else:
            def check_enum(x: Any) -> Error | None:
                if any(type(x) is type(v) and x == v for v in values):
                    return None
                return ((), f"not one of {values}")
        checks.append(check_enum)

    if "const" in schema:
        const = schema["const"]

        def check_const(x: Any) -> Error | None:
            return None if type(x) is type(const) and x == const else ((), f"must be {const!r}")
        checks.append(check_const)

    if "pattern" in schema:
        source = schema["pattern"]
        # ECMA-262 '$' (no multiline) is end-of-input; Python's also matches before a final '\n'.
        anchored = source.endswith("$") and not source.endswith("\\$")
        regex = re.compile(source[:-1] + r"\Z" if anchored else source)

        def check_pattern(x: Any) -> Error | None:
            if type(x) is str and regex.search(x) is None:
                return ((), f"does not match {source}")
            return None
        checks.append(check_pattern)

    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None or hi is not None:
        def check_range(x: Any) -> Error | None:
            if type(x) is int or type(x) is float:
                if lo is not None and x < lo:
                    return ((), f"below minimum {lo}")
                if hi is not None and x > hi:
                    return ((), f"above maximum {hi}")
            return None
        checks.append(check_range)

    min_len, max_len = schema.get("minLength"), schema.get("maxLength")
    if min_len is not None or max_len is not None:
        def check_len(x: Any) -> Error | None:
            if type(x) is str:
                if min_len is not None and len(x) < min_len:
                    return ((), f"shorter than {min_len}")
                if max_len is not None and len(x) > max_len:
                    return ((), f"longer than {max_len}")
            return None
        checks.append(check_len)

    if "required" in schema or "properties" in schema or "additionalProperties" in schema:
        required = tuple(schema.get("required", ()))
        props = {k: compile_schema(v) for k, v in schema.get("properties", {}).items()}
        extra = schema.get("additionalProperties", True)
        if extra not in (True, False):
            raise ValueError("additionalProperties must be a boolean here")
        closed = extra is False

        def check_object(x: Any) -> Error | None:
            if type(x) is not dict:
                return None
            for key in required:
                if key not in x:
                    return ((), f"missing required {key!r}")
            for key, value in x.items():
                sub = props.get(key)
                if sub is None:
                    if closed:
                        return ((), f"unexpected property {str(key)[:40]!r}")
                    continue
                err = sub(value)
                if err is not None:
                    return ((str(key), *err[0]), err[1])
            return None
        checks.append(check_object)

    if "items" in schema or "minItems" in schema or "maxItems" in schema:
        item = compile_schema(schema.get("items", True))
        min_items, max_items = schema.get("minItems"), schema.get("maxItems")

        def check_array(x: Any) -> Error | None:
            if type(x) is not list:
                return None
            if min_items is not None and len(x) < min_items:
                return ((), f"fewer than {min_items} items")
            if max_items is not None and len(x) > max_items:
                return ((), f"more than {max_items} items")
            for i, value in enumerate(x):
                err = item(value)
                if err is not None:
                    return ((str(i), *err[0]), err[1])
            return None
        checks.append(check_array)

    if "anyOf" in schema:
        options = [compile_schema(s) for s in schema["anyOf"]]

        def check_any(x: Any) -> Error | None:
            errors = []
            for option in options:
                err = option(x)
                if err is None:
                    return None
                errors.append(err)
            return errors[0]
        checks.append(check_any)

    for sub in schema.get("allOf", ()):
        checks.append(compile_schema(sub))

    if "if" in schema:
        cond = compile_schema(schema["if"])
        then = compile_schema(schema.get("then", True))

        def check_if(x: Any) -> Error | None:
            return then(x) if cond(x) is None else None
        checks.append(check_if)

    if "not" in schema:
        negated = compile_schema(schema["not"])

        def check_not(x: Any) -> Error | None:
            return ((), "matches a forbidden form") if negated(x) is None else None
        checks.append(check_not)

    if len(checks) == 1:
        return checks[0]
    frozen = tuple(checks)

    def check_all(x: Any) -> Error | None:
        for c in frozen:
            err = c(x)
            if err is not None:
                return err
        return None
    return check_all


# ----------------------------------------------------------------- generated predicates
#
# The closures above say *why* a message is invalid; walking them costs a call per
# keyword per value. The bridge asks "valid or not?" of every message and wants the
# reason only for the rare reject, so each schema is also compiled into the source of
# ONE flat Python function (inline checks, a loop per array) that answers just that.
# It accepts exactly what the closures accept: tests/protocol checks both against
# jsonschema and against each other on every single-field mutation of every example.

Predicate = Callable[[Any], bool]

_TYPE_TESTS = {
    "integer": "type({v}) is int", "string": "type({v}) is str", "null": "{v} is None",
    "boolean": "type({v}) is bool", "object": "type({v}) is dict",
    "array": "type({v}) is list",
}


class _Source:
    """Python source of predicate functions, and the constants they refer to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def constant(self, value: Any) -> str:
        name = self.name("_k")
        self.constants[name] = value
        return name

    def function(self, schema: dict[str, Any] | bool) -> str:
        """A top-level ``def`` for ``schema``; returns its name."""
        name = self.name("_p")
        body: list[str] = []
        self.emit(schema, "x", body, 1)
        self.lines += [f"def {name}(x):", *body, "    return True", ""]
        return name

    def emit(self, schema: dict[str, Any] | bool, v: str, out: list[str], depth: int
             ) -> None:
        """Statements that ``return False`` when the value named ``v`` fails ``schema``."""
        ind = "    " * depth
        if schema is True:
            return
        if schema is False:
            out.append(f"{ind}return False")
            return
        unknown = set(schema) - _SUPPORTED
        if unknown:
            raise ValueError(f"schema keyword(s) not supported: {sorted(unknown)}")
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if any(t not in _TYPE_TESTS for t in types):
                raise ValueError(f"unsupported type in {types!r}")
            tests = " or ".join(_TYPE_TESTS[t].format(v=v) for t in types)
            out.append(f"{ind}if not ({tests}): return False")
        if "enum" in schema:
            values = list(schema["enum"])
            if all(type(e) is str for e in values):
                k = self.constant(frozenset(values))
                out.append(f"{ind}if not (type({v}) is str and {v} in {k}): return False")
            else:
                k = self.constant(tuple(values))
                out.append(f"{ind}if not any(type({v}) is type(e) and {v} == e for e in {k}):"
                           " return False")
        if "const" in schema:
            k = self.constant(schema["const"])
            out.append(f"{ind}if not (type({v}) is type({k}) and {v} == {k}): return False")
        if "pattern" in schema:
            source = schema["pattern"]
            anchored = source.endswith("$") and not source.endswith("\\$")
            k = self.constant(re.compile(source[:-1] + r"\Z" if anchored else source).search)
            out.append(f"{ind}if type({v}) is str and {k}({v}) is None: return False")
        bounds = []
        if schema.get("minimum") is not None:
            bounds.append(f"{v} < {self.constant(schema['minimum'])}")
        if schema.get("maximum") is not None:
            bounds.append(f"{v} > {self.constant(schema['maximum'])}")
        if bounds:
            out.append(f"{ind}if (type({v}) is int or type({v}) is float) and "
                       f"({' or '.join(bounds)}): return False")
        lengths = []
        if schema.get("minLength") is not None:
            lengths.append(f"len({v}) < {int(schema['minLength'])}")
        if schema.get("maxLength") is not None:
            lengths.append(f"len({v}) > {int(schema['maxLength'])}")
        if lengths:
            out.append(f"{ind}if type({v}) is str and ({' or '.join(lengths)}): return False")
        if "required" in schema or "properties" in schema or "additionalProperties" in schema:
            self._object(schema, v, out, depth)
        if "items" in schema or "minItems" in schema or "maxItems" in schema:
            self._array(schema, v, out, depth)
        if "anyOf" in schema:
            names = [self.function(s) for s in schema["anyOf"]]
            out.append(f"{ind}if not ({' or '.join(f'{n}({v})' for n in names)}): "
                       "return False")
        for sub in schema.get("allOf", ()):
            self.emit(sub, v, out, depth)
        if "then" in schema and "if" not in schema:
            raise ValueError("'then' without 'if'")
        if "if" in schema:
            cond, then = self.function(schema["if"]), self.function(schema.get("then", True))
            out.append(f"{ind}if {cond}({v}) and not {then}({v}): return False")
        if "not" in schema:
            out.append(f"{ind}if {self.function(schema['not'])}({v}): return False")

    def _object(self, schema: dict[str, Any], v: str, out: list[str], depth: int) -> None:
        ind, inner = "    " * depth, "    " * (depth + 1)
        required = list(schema.get("required", ()))
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        if extra not in (True, False):
            raise ValueError("additionalProperties must be a boolean here")
        body: list[str] = []
        if required:
            body.append(f"{inner}if {' or '.join(f'{k!r} not in {v}' for k in required)}: "
                        "return False")
        if extra is False:
            body.append(f"{inner}if not {self.constant(frozenset(props))}.issuperset({v}): "
                        "return False")
        for key, sub in props.items():
            var = self.name("_v")
            checks: list[str] = []
            if key in required:
                self.emit(sub, var, checks, depth + 1)
                if checks:
                    body += [f"{inner}{var} = {v}[{key!r}]", *checks]
            else:
                self.emit(sub, var, checks, depth + 2)
                if checks:
                    body += [f"{inner}if {key!r} in {v}:", f"{inner}    {var} = {v}[{key!r}]",
                             *checks]
        if body:
            out += [f"{ind}if type({v}) is dict:", *body]

    def _array(self, schema: dict[str, Any], v: str, out: list[str], depth: int) -> None:
        ind, inner = "    " * depth, "    " * (depth + 1)
        body: list[str] = []
        if schema.get("minItems") is not None:
            body.append(f"{inner}if len({v}) < {int(schema['minItems'])}: return False")
        if schema.get("maxItems") is not None:
            body.append(f"{inner}if len({v}) > {int(schema['maxItems'])}: return False")
        var = self.name("_i")
        checks: list[str] = []
        self.emit(schema.get("items", True), var, checks, depth + 2)
        if checks:
            body += [f"{inner}for {var} in {v}:", *checks]
        if body:
            out += [f"{ind}if type({v}) is list:", *body]


def compile_predicate(schema: dict[str, Any] | bool) -> Predicate:
    """``x -> bool``: the verdict of ``compile_schema(schema)(x) is None``, several times
    faster, without the reason (ask the compiled check for that)."""
    source = _Source()
    name = source.function(schema)
    namespace: dict[str, Any] = dict(source.constants)
    exec(compile("\n".join(source.lines), "<protocol predicate>", "exec"), namespace)
    predicate: Predicate = namespace[name]
    return predicate

"""The one way the connector reads JSON it is given (API bodies, queued records, `content_variables`,
connection bodies, the front door's JSON): bounded in size and depth, numbers finite, and every refusal a
ValidationError naming the field it is in, so bad input is a 400 or an error on the record, never a 500.

Depth is checked before parsing (a 100,000-deep list would otherwise exhaust Python's recursion), by a
scan of the tokens that keeps the path it is at; DynamoDB stores no more than 32 levels anyway.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from chalicelib.domain.errors import ValidationError
from chalicelib.domain.rules import ConnectorCode

MAX_DEPTH = 32  # DynamoDB: "Nested attribute depth: 32 levels" (item limits); no stored value is deeper
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},:]')


class _NonFinite(float):
    """NaN, Infinity and numbers too big for a float, kept apart so the walk can name where they are."""


def _constant(name: str) -> float:
    return _NonFinite("nan")


def _number(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(value)


def _path(base: str, parts: list[str | int]) -> str:
    path = base
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else (f"{path}.{part}" if path else part)
    return path


def _too_deep(text: str, limit: int) -> list[str | int] | None:
    """Where the text first nests deeper than `limit` (keys and indexes), or None."""
    stack: list[list[Any]] = []  # per open container: [is_object, key or index]
    last_string: str | None = None
    for token in _TOKENS.finditer(text):
        t = token.group()
        if t in "[{":
            if len(stack) >= limit:
                return [part for _, part in stack if part is not None]
            stack.append([t == "{", None if t == "{" else 0])
        elif t in "]}":
            if stack:
                stack.pop()
        elif t == ",":
            if stack and not stack[-1][0]:
                stack[-1][1] += 1
        elif t == ":":
            if stack and stack[-1][0] and last_string is not None:
                stack[-1][1] = last_string
        else:
            try:
                last_string = json.loads(t)
            except ValueError:
                last_string = t.strip('"')
    return None


def _non_finite(value: Any, parts: list[str | int]) -> list[str | int] | None:
    pending: list[tuple[Any, list[str | int]]] = [(value, parts)]
    while pending:
        current, at = pending.pop()
        if isinstance(current, _NonFinite):
            return at
        if isinstance(current, dict):
            pending += [(v, [*at, str(k)]) for k, v in current.items()]
        elif isinstance(current, list):
            pending += [(v, [*at, i]) for i, v in enumerate(current)]
    return None


def read_json(
    raw: bytes | str, field: str = "", max_bytes: int | None = None, code: int = ConnectorCode.INVALID_REQUEST
) -> Any:
    """`raw` parsed, or a ValidationError naming `field` (or the path inside it) and the rule it broke."""
    what = f"`{field}`" if field else "the request body"
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if max_bytes is not None and size > max_bytes:
        raise ValidationError(field, f"{what} is {size} bytes; at most {max_bytes}", code)
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise ValidationError(field, f"{what} is not UTF-8 text", code) from exc
    deep = _too_deep(text, MAX_DEPTH)
    if deep is not None:  # named by its keys (lists inside lists name nothing new), the first few of them
        while deep and isinstance(deep[-1], int):
            deep.pop()
        where = _path(field, deep[:4])
        raise ValidationError(
            where, f"`{where or 'the body'}` nests objects or lists deeper than {MAX_DEPTH} levels", code
        )
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_number)
    except ValueError as exc:
        raise ValidationError(field, f"{what} is not valid JSON: {exc}", code) from exc
    bad = _non_finite(value, [])
    if bad is not None:
        where = _path(field, bad)
        raise ValidationError(
            where, f"`{where or 'the body'}` must be a finite number (NaN and Infinity are not JSON)", code
        )
    return value

"""The bounded JSON reader: what it refuses, and the field each refusal names."""

from __future__ import annotations

import json

import pytest

from chalicelib.domain.errors import ValidationError
from chalicelib.domain.json_reader import MAX_DEPTH, read_json


def refusal(raw: str, field: str = "", **kw: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        read_json(raw, field, **kw)  # type: ignore[arg-type]
    return info.value


def test_it_reads_what_json_reads_within_its_bounds() -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": "[{not a bracket}]", 'd"e': "\\"}}
    assert read_json(json.dumps(value)) == value
    nested: object = 1
    for _ in range(MAX_DEPTH):
        nested = [nested]
    assert read_json(json.dumps(nested)) == nested  # 32 levels: DynamoDB's own limit, allowed


def test_too_deep_names_the_keys_it_is_under_not_a_stack_trace() -> None:
    assert refusal("[" * 100_000 + "]" * 100_000).field == ""
    deep = '{"messages": [{"to": "x"}, {"metadata": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}]}"
    error = refusal(deep)
    assert error.field == "messages[1].metadata.a" and "deeper than 32 levels" in error.message
    assert refusal('{"s": "[[[[", "v": ' + "[" * 40 + "]" * 40 + "}", "body").field == "body.v"  # brackets in strings
    assert refusal("[" * 100_000, "content_variables", code=21656).code == 21656


def test_non_finite_numbers_are_named_where_they_are() -> None:
    assert refusal('{"metadata": {"score": NaN}}').field == "metadata.score"
    assert refusal('{"a": [1, 2, -Infinity]}').field == "a[2]"
    assert refusal('{"a": {"b": 1e999}}', "x").field == "x.a.b"
    assert "finite" in refusal("[NaN]").message


def test_size_text_and_syntax_are_refused_with_the_rule() -> None:
    assert "at most 10" in refusal('{"a": "0123456789"}', "f", max_bytes=10).message
    with pytest.raises(ValidationError, match="UTF-8"):
        read_json(b'{"a": "\xff"}', "f")
    assert "not valid JSON" in refusal("{'a': 1}", "f").message

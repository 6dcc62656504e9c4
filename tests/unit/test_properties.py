"""Property tests (Hypothesis): validation never crashes and always names a field,
templates fill or refuse, segment counts agree with a brute-force split, and our
webhook signatures round-trip with Twilio's own RequestValidator.

`make test` runs them at a small size; `make fuzz` sets HYPOTHESIS_PROFILE=fuzz.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from chalicelib.domain import rules
from chalicelib.domain.models import _SCHEMA, ValidationError, parse_send_request
from chalicelib.domain.outbound import validate_outbound
from chalicelib.domain.templates import render
from chalicelib.domain.twilio_signature import compute_signature, is_valid

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
FIELD_NAMES = sorted([*_SCHEMA, "To", "From", "Body", "MediaUrl", "MessagingServiceSid", "extra", ""])
# What a hostile caller sends (found by hand once, generated from now on): digits that are not ASCII,
# signs doubled, a final newline or space, years at datetime's edges, numbers DynamoDB refuses.
HOSTILE_TEXT = st.sampled_from(
    ["²", "--5", "٣", "+15550009998\n", " +15551234567", "+15551234567 ", "0001-01-01T00:00:00+05:00",
     "9999-12-31T23:00:00-05:00", "MG" + "a" * 32 + "\n", "welcome\n", "<x>" * 50, "{{$y}}", "\x00"]
)  # fmt: skip
EXTREME_NUMBERS = st.sampled_from([1e200, 1e-200, 10**40, -(10**40), float("nan"), float("inf"), 0.1, 10**38 - 1])
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats() | EXTREME_NUMBERS | st.text(max_size=40) | HOSTILE_TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": [value]}
    return value


@given(st.dictionaries(st.sampled_from(FIELD_NAMES), JSON | st.builds(nested, st.integers(0, 40)), max_size=8) | JSON)
def test_any_json_is_either_a_message_or_an_error_naming_a_field(data: Any) -> None:
    try:
        message = validate_outbound(parse_send_request(data), "default", ("+15005550006",), None, NOW)
    except ValidationError as exc:
        assert exc.message and isinstance(exc.field, str) and isinstance(exc.code, int)
        assert exc.to_dict()["field"] == exc.field
    else:
        # nothing accepted breaks a documented rule: whole strings, storable metadata
        assert rules.is_valid_recipient(message.to) and message.to == message.to.strip()
        assert message.body or message.media_urls or message.content_sid
        assert message.num_segments >= 1
        from chalicelib.domain.models import check_storable

        check_storable("metadata", dict(message.metadata))
        from boto3.dynamodb.types import TypeSerializer

        TypeSerializer().serialize(json_safe(dict(message.metadata)))


def json_safe(value: Any) -> Any:
    """Metadata as the ledger writes it (floats as Decimals, through their text)."""
    from decimal import Decimal

    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


PLACEHOLDER_NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,10}", fullmatch=True)


@given(st.lists(PLACEHOLDER_NAME, min_size=1, max_size=4, unique=True), st.data())
def test_templates_fill_every_placeholder_or_name_the_missing_one(names: list[str], data: st.DataObject) -> None:
    text = " ".join(f"<{n}>" if i % 2 else f"{{{{${n}}}}}" for i, n in enumerate(names))
    present = data.draw(st.sets(st.sampled_from(names)))
    values = {n: data.draw(st.text(alphabet="abc xyz", min_size=1, max_size=5).filter(str.strip)) for n in present}
    missing = [n for n in names if n not in present]
    try:
        rendered = render(text, values)
    except ValidationError as exc:
        assert missing and f"<{missing[0]}>" in exc.message
    else:
        assert not missing and "<" not in rendered and "{{" not in rendered


GSM = sorted(rules.GSM7_BASIC | rules.GSM7_EXTENDED)


def brute_force_segments(body: str) -> int:
    gsm = all(c in rules.GSM7_BASIC or c in rules.GSM7_EXTENDED for c in body)
    cost = [(2 if c in rules.GSM7_EXTENDED else 1) if gsm else (2 if ord(c) > 0xFFFF else 1) for c in body]
    single, multi = (160, 153) if gsm else (70, 67)
    if sum(cost) <= single:
        return 1
    segments, room = 1, multi
    for c in cost:
        if c > room:
            segments, room = segments + 1, multi
        room -= c
    return segments


@given(st.text(alphabet=st.sampled_from(GSM), max_size=700) | st.text(max_size=400))
def test_segment_counts_match_a_brute_force_split(body: str) -> None:
    info = rules.segment_info(body)
    assert info.num_segments == brute_force_segments(body)
    assert info.encoding == (
        "GSM-7" if all(c in rules.GSM7_BASIC or c in rules.GSM7_EXTENDED for c in body) else "UCS-2"
    )


PARAMS = st.lists(
    st.tuples(st.from_regex(r"[A-Za-z]{1,12}", fullmatch=True), st.text(max_size=30)),
    max_size=6,
    unique_by=lambda p: p[0],
)


@given(
    st.from_regex(r"https://[a-z]{1,10}\.example\.com(/[a-z]{1,8}){0,3}(\?mid=[a-z0-9]{1,8})?", fullmatch=True),
    PARAMS,
    st.text(min_size=1, max_size=32),
)
def test_signatures_round_trip_with_twilios_validator(url: str, params: list[tuple[str, str]], token: str) -> None:
    ours = compute_signature(url, params, token)
    validator = RequestValidator(token)
    assert validator.validate(url, dict(params), ours)
    assert is_valid(url, params, validator.compute_signature(url, dict(params)), [token])
    assert not is_valid(url + "x", params, ours, [token])
    if params:
        changed = [(params[0][0], params[0][1] + "!"), *params[1:]]
        assert not is_valid(url, changed, ours, [token])

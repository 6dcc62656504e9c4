import pytest

from chalicelib.domain.models import ValidationError, parse_send_request
from chalicelib.domain.rules import ConnectorCode
from chalicelib.domain.templates import Template, apply_template, placeholders, render


def test_both_placeholder_styles_are_filled():
    text = render("Hello <First Name>, your code is {{$code}}.", {"First Name": "Ann", "code": 1234})
    assert text == "Hello Ann, your code is 1234."


def test_placeholders_are_listed_once_in_order():
    assert placeholders("<B> {{$a}} <B> {{ $c }}") == ["B", "a", "c"]


def test_text_that_only_looks_like_brackets_is_left_alone():
    assert render("1 < 2 and 3 > 2, <3", {}) == "1 < 2 and 3 > 2, <3"


def test_a_missing_value_is_an_error_naming_the_placeholder():
    with pytest.raises(ValidationError) as info:
        render("Hello <First Name>, {{$city}} awaits", {"city": "Oslo"})
    err = info.value
    assert err.code == ConnectorCode.TEMPLATE_MISSING_VALUE and err.field == "fields"
    assert "<First Name>" in err.message and "city" not in err.message


def test_blank_values_count_as_missing():
    with pytest.raises(ValidationError):
        render("Hi <Name>", {"Name": "   "})


WELCOME = Template(
    name="welcome",
    body="Welcome <First Name>! Shop at {{$store}}.",
    from_="+15005550006",
    field_map={"to": "mobile", "First Name": "fname"},
)


def test_a_raw_event_becomes_a_message_through_the_field_map():
    req = parse_send_request(
        {"template": "welcome", "fields": {"mobile": "+15551234567", "fname": "Ann", "store": "Oslo"}}
    )
    out = apply_template(req, WELCOME)
    assert (out.to, out.from_, out.body) == ("+15551234567", "+15005550006", "Welcome Ann! Shop at Oslo.")


def test_the_field_map_names_the_callers_field_when_a_value_is_missing():
    req = parse_send_request({"template": "welcome", "fields": {"mobile": "+15551234567", "store": "Oslo"}})
    with pytest.raises(ValidationError) as info:
        apply_template(req, WELCOME)
    assert "<First Name> (field `fname`)" in info.value.message


def test_a_missing_recipient_field_names_the_mapped_field():
    req = parse_send_request({"template": "welcome", "fields": {"fname": "Ann", "store": "Oslo"}})
    with pytest.raises(ValidationError) as info:
        apply_template(req, WELCOME)
    assert info.value.field == "to" and "`mobile`" in info.value.message


def test_the_requests_own_values_win_over_the_template():
    req = parse_send_request(
        {
            "template": "welcome",
            "to": "+15550001111",
            "body": "Just <First Name>",
            "messaging_service_sid": "MG" + "a" * 32,
            "fields": {"fname": "Bo"},
        }
    )
    out = apply_template(req, WELCOME)
    assert (out.to, out.body, out.from_) == ("+15550001111", "Just Bo", None)


def test_templates_round_trip_through_their_stored_form():
    assert Template.from_dict(WELCOME.to_dict()) == WELCOME


def test_forty_thousand_placeholders_are_refused_by_size_before_any_scan():
    body = "".join(f"<p{i}>" for i in range(40_000))
    with pytest.raises(ValidationError) as info:
        apply_template(parse_send_request({"to": "+15551234567", "body": body}), None)
    assert info.value.field == "body" and info.value.code == 21617
    # and the scan itself is linear: the same placeholders, found in order, once each
    names = placeholders(body + body)
    assert names[:3] == ["p0", "p1", "p2"] and len(names) == 40_000

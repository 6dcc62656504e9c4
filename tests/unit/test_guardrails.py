"""Guardrails' rules (README, "Guardrails"): quiet hours in the recipient's zones, the strictest where a number
spans several; what a connection may set and the errors that name the field; the spend guard's refusal; the
error policy; and the claim rule that keeps a held message from being sent by a stray copy of its request."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from chalicelib.domain import rules
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.guardrails import (
    NONE,
    ErrorPolicy,
    QuietHours,
    describe_guardrails,
    parse_guardrails,
    segments_refusal,
    smart_encode,
)
from chalicelib.domain.rules import ClaimOutcome, ClaimState
from chalicelib.domain.timezones import zones_for

LA, PHOENIX, NY = ZoneInfo("America/Los_Angeles"), ZoneInfo("America/Phoenix"), ZoneInfo("America/New_York")
DAYTIME = QuietHours(time(8), time(21))


def test_the_zones_come_from_the_number_area_code_in_north_america_country_elsewhere() -> None:
    # libphonenumber's timezone data (phonenumbers/tzdata): 310 is Los Angeles, 602 Phoenix, 212 New York
    assert zones_for("+13105550100") == ("America/Los_Angeles",)
    assert zones_for("+16025550100") == ("America/Phoenix",)
    assert zones_for("+12125550100") == ("America/New_York",)
    assert zones_for("+447700900123") and all(z.startswith("Europe/") for z in zones_for("+447700900123"))
    assert zones_for("not a number") == ()


@pytest.mark.parametrize(
    ("local", "zone", "opens"),
    [
        (datetime(2026, 7, 1, 22, 30), LA, datetime(2026, 7, 2, 8, 0)),  # after the window: tomorrow's start
        (datetime(2026, 7, 1, 6, 15), LA, datetime(2026, 7, 1, 8, 0)),  # before it: today's
        (datetime(2026, 1, 15, 22, 30), PHOENIX, datetime(2026, 1, 16, 8, 0)),
        (datetime(2026, 3, 8, 1, 30), LA, datetime(2026, 3, 8, 8, 0)),  # the night the clocks go forward
    ],
)
def test_a_message_outside_the_window_waits_for_its_next_start_in_the_recipients_time(
    local: datetime, zone: ZoneInfo, opens: datetime
) -> None:
    now = local.replace(tzinfo=zone).astimezone(UTC)
    found = DAYTIME.next_allowed(now, [zone.key])
    assert found is not None and found.astimezone(zone).replace(tzinfo=None) == opens


def test_inside_the_window_it_goes_now() -> None:
    assert DAYTIME.next_allowed(datetime(2026, 7, 1, 12, 0, tzinfo=LA).astimezone(UTC), ["America/Los_Angeles"]) is None


def test_arizona_keeps_standard_time_while_los_angeles_changes() -> None:
    # 15:00 UTC is 08:00 in both in July; in January Los Angeles opens an hour later (16:00 UTC)
    for month, la_opens in ((7, 15), (1, 16)):
        night = datetime(2026, month, 15, 5, 30, tzinfo=UTC)
        assert DAYTIME.next_allowed(night, ["America/Phoenix"]) == datetime(2026, month, 15, 15, 0, tzinfo=UTC)
        la = DAYTIME.next_allowed(night, ["America/Los_Angeles"])
        assert la == datetime(2026, month, 15, la_opens, 0, tzinfo=UTC)


def test_a_number_spanning_zones_waits_until_the_window_is_open_in_all_of_them() -> None:
    at = datetime(2026, 7, 1, 12, 30, tzinfo=UTC)  # 08:30 in New York, 05:30 in Los Angeles
    found = DAYTIME.next_allowed(at, ["America/New_York", "America/Los_Angeles"])
    assert found == datetime(2026, 7, 1, 15, 0, tzinfo=UTC)  # 08:00 in Los Angeles, the stricter
    assert all(DAYTIME.allows(found, z) for z in ("America/New_York", "America/Los_Angeles"))


def test_a_window_across_midnight() -> None:
    nights = QuietHours(time(22), time(6))
    assert nights.allows(datetime(2026, 7, 1, 23, 0, tzinfo=NY), "America/New_York")
    assert not nights.allows(datetime(2026, 7, 1, 12, 0, tzinfo=NY), "America/New_York")


def test_zones_that_never_share_the_window_fall_back_to_the_connections_zone() -> None:
    narrow = QuietHours(time(9), time(10), fallback_zone="America/New_York")
    at = datetime(2026, 7, 1, 0, 0, tzinfo=UTC)
    found = narrow.next_allowed(at, ["Pacific/Kiritimati", "Pacific/Pago_Pago"])  # 25 hours apart
    assert found is not None and found.astimezone(NY).time() == time(9)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"quiet_hours": {"start": "8am", "end": "21:00"}}, "guardrails.quiet_hours.start"),
        ({"quiet_hours": {"start": "08:00", "end": "08:00"}}, "guardrails.quiet_hours.end"),
        ({"quiet_hours": {"start": "08:00", "end": "21:00", "fallback_zone": "Mars/Base"}},
         "guardrails.quiet_hours.fallback_zone"),
        ({"frequency": {}}, "guardrails.frequency"),
        ({"frequency": {"per_day": 0}}, "guardrails.frequency.per_day"),
        ({"frequency": {"per_day": 2, "over": "drop"}}, "guardrails.frequency.over"),
        ({"max_segments": 11}, "guardrails.max_segments"),
        ({"daily_segments": "lots"}, "guardrails.daily_segments"),
        ({"smart_encoded": "yes"}, "guardrails.smart_encoded"),
        ({"error_policy": {"retry": [30001], "permanent": [30001]}}, "guardrails.error_policy.retry"),
        ({"error_policy": {"opt_out": ["21610"]}}, "guardrails.error_policy.opt_out"),
        ({"quiet": {}}, "guardrails.quiet"),
    ],
)  # fmt: skip
def test_every_bad_setting_is_refused_naming_its_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_guardrails(spec)
    assert refused.value.field == field


def test_what_a_connection_sets_reads_back_as_it_was_given() -> None:
    spec = {
        "quiet_hours": {"start": "08:00", "end": "21:00", "fallback_zone": "UTC"},
        "frequency": {"per_day": 2, "per_week": 5, "over": "hold"},
        "max_segments": 3,
        "smart_encoded": True,
        "daily_segments": 1000,
        "error_policy": {"permanent": [30007], "retry": [30001], "retry_attempts": 2,
                         "retry_interval_seconds": 60, "opt_out": [21610, 30007]},
    }  # fmt: skip
    assert describe_guardrails(parse_guardrails(spec)) == spec
    assert parse_guardrails(None) is None and parse_guardrails({}) is None  # none set: nothing to load or check
    assert describe_guardrails(None) is None and not NONE.holds


def test_a_body_over_its_segments_names_the_count_the_encoding_and_the_character() -> None:
    body = "Don’t miss it " + "x" * 60
    refusal = segments_refusal(body, 1)
    assert refusal is not None
    assert "2 segments in UCS-2" in refusal and "U+2019" in refusal and "position 4" in refusal
    assert "smart_encoded" in refusal  # a character Twilio's Smart Encoding replaces
    assert "smart_encoded" not in (segments_refusal("😀 " + "x" * 80, 1) or "")  # an emoji stays UCS-2
    assert segments_refusal(smart_encode(body), 1) is None
    assert segments_refusal("x" * 161, 1) == "the body is 2 segments in GSM-7; this connection allows at most 1"


def test_smart_encoding_follows_twilios_list() -> None:
    # twilio.com/docs/messaging/services/smart-encoding-char-list
    assert smart_encode("“Hi” – it’s…\u00a0here") == '"Hi" - it\'s... here'
    assert rules.segment_info(smart_encode("“" * 150)).encoding == "GSM-7"


def test_the_error_policy_overrides_the_default_for_the_codes_it_names() -> None:
    default = ErrorPolicy()
    assert default.is_retryable(400, 20429) and not default.is_retryable(400, 21211)
    assert default.opts_out(21610) and not default.opts_out(30007)
    policy = ErrorPolicy(permanent=frozenset({20429}), retry=frozenset({21211}), opt_out=frozenset({30007}))
    assert not policy.is_retryable(429, 20429) and policy.is_retryable(400, 21211)
    assert policy.opts_out(30007) and not policy.opts_out(21610)  # the list replaces the default


def test_a_held_message_is_not_sent_by_another_copy_of_its_request() -> None:
    now = datetime(2026, 7, 1, tzinfo=UTC)
    held = ClaimState("scheduled", None, None, "released", None, held_until=now + timedelta(hours=9))
    assert rules.decide_claim(held, now, timedelta(seconds=60)) is ClaimOutcome.DONE  # not yet: nothing to do
    due = ClaimState("held", None, None, "released", None, held_until=now)
    assert rules.decide_claim(due, now, timedelta(seconds=60)) is ClaimOutcome.BUSY  # its release is under way
    sent = ClaimState("sent", "SM" + "1" * 32, None, "finished", None, held_until=now)
    assert rules.decide_claim(sent, now, timedelta(seconds=60)) is ClaimOutcome.DONE


# --- the error policy at the send ------------------------------------------------------------------


class _Twilio:
    """Answers every create with one error."""

    def __init__(self, error: Exception) -> None:
        self.error, self.creates = error, 0

    def create_message(self, *args: object, **kwargs: object) -> object:
        self.creates += 1
        raise self.error


class _Retries:
    def __init__(self) -> None:
        self.counted: dict[str, int] = {}

    def note_retry(self, message_id: str) -> int:
        self.counted[message_id] = self.counted.get(message_id, 0) + 1
        return self.counted[message_id]


def _service(policy: dict[str, object], error: Exception) -> tuple[object, _Twilio, object]:
    import json

    from chalicelib.domain.twilio import TwilioCredentials
    from chalicelib.settings import load_settings
    from chalicelib.usecases.send import SendService
    from tests.fakes import InMemoryLedger, InMemoryOptOuts, InMemoryTemplates, StaticCredentials

    env = {"TWILIO_SECRET_ID": "s", "TWILIO_DEFAULT_FROM": "+15005550006"}
    settings = load_settings({**env, "TWILIO_GUARDRAILS": json.dumps({"error_policy": policy})})
    twilio, ledger = _Twilio(error), InMemoryLedger()
    creds = StaticCredentials(TwilioCredentials("AC" + "0" * 32, "t"))
    service = SendService(settings, ledger, InMemoryOptOuts(), InMemoryTemplates(), twilio, creds,  # type: ignore[arg-type]
                          clock=lambda: datetime(2026, 7, 1, tzinfo=UTC), guards=_Retries())  # type: ignore[arg-type]  # fmt: skip
    return service, twilio, ledger


def test_a_code_the_policy_retries_is_put_back_as_often_as_it_says_then_recorded() -> None:
    from chalicelib.domain.twilio import TwilioRejected
    from chalicelib.usecases.send import Deferred

    policy = {"retry": [21612], "retry_attempts": 2, "retry_interval_seconds": 600}
    service, twilio, ledger = _service(policy, TwilioRejected("not reachable", 21612, 400))
    for _ in range(2):
        with pytest.raises(Deferred) as deferred:
            service.send("m1", {"to": "+13105550100", "body": "hi"})  # type: ignore[attr-defined]
        assert (deferred.value.delay_seconds, deferred.value.kind) == (600, "ErrorPolicy")
        assert ledger.get("m1").claim.claim_token is None  # type: ignore[attr-defined]  # released: sent afresh
    outcome = service.send("m1", {"to": "+13105550100", "body": "hi"})  # type: ignore[attr-defined]
    assert (outcome.status, outcome.error_code, twilio.creates) == ("error", 21612, 3)


def test_a_code_the_policy_makes_permanent_is_not_retried() -> None:
    # through the real Twilio adapter: it retries a 429 in the call, unless the connection's policy says final
    import responses

    from chalicelib.adapters.twilio_api import TwilioApi

    service, _, _ = _service({"permanent": [20429]}, RuntimeError("unused"))
    api = TwilioApi("https://api.twilio.test/2010-04-01", max_attempts=4)
    service.twilio = api  # type: ignore[attr-defined]
    with responses.RequestsMock() as twilio:
        url = "https://api.twilio.test/2010-04-01/Accounts/AC" + "0" * 32 + "/Messages.json"
        twilio.add(responses.POST, url, status=429, json={"code": 20429, "message": "Too Many Requests"})
        outcome = service.send("m2", {"to": "+13105550100", "body": "hi"})  # type: ignore[attr-defined]
        assert (outcome.status, outcome.error_code, len(twilio.calls)) == ("error", 20429, 1)


def test_a_code_the_policy_opts_out_stores_the_opt_out() -> None:
    from chalicelib.domain.twilio import TwilioRejected

    service, _, _ = _service({"opt_out": [21612]}, TwilioRejected("carrier says no", 21612, 400))
    service.send("m3", {"to": "+13105550100", "body": "hi"})  # type: ignore[attr-defined]
    assert service.opt_outs.is_opted_out("+13105550100", ["+15005550006"])  # type: ignore[attr-defined]


def test_platforms_that_read_twilios_statuses_see_every_connector_status_as_one_of_twilios() -> None:
    import json
    from pathlib import Path

    # Twilio's Message status enum, from its OpenAPI spec (tests/data/twilio/README.md): no `held`, no `error`
    spec = json.loads((Path(__file__).resolve().parents[1] / "data/twilio/message_subset.json").read_text())
    twilios = set(spec["MessageResource"]["properties"]["status"]["enum"])
    assert {rules.as_twilio_status(s) for s in rules.STATUS_RANK if s != "pending"} <= twilios
    assert rules.as_twilio_status("held") == "accepted" and rules.as_twilio_status("scheduled") == "scheduled"

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import pytest
import requests
import responses

from chalicelib.adapters.twilio_api import TwilioApi, message_form
from chalicelib.domain.models import parse_send_request
from chalicelib.domain.outbound import validate_outbound
from chalicelib.domain.twilio import TwilioCredentials, TwilioOutcomeUnknown, TwilioRejected, TwilioRetryable
from tests import TWILIO_DATA
from tests.twilio_stub import ACCOUNT_SID, AUTH_TOKEN, BASE_URL, TwilioStub

CREDS = TwilioCredentials(ACCOUNT_SID, AUTH_TOKEN)
SPEC = TWILIO_DATA / "message_subset.json"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
MESSAGES = f"{BASE_URL}/Accounts/{ACCOUNT_SID}/Messages.json"


def outbound(**extra):
    data = {"to": "+15551234567", "from": "+15005550006", "body": "Hi", **extra}
    return validate_outbound(parse_send_request(data), "default", (), None, NOW)


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def api(sleeps):
    return TwilioApi(BASE_URL, sleep=sleeps.append, jitter=lambda: 1.0, max_attempts=4)


@pytest.fixture
def stub():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield TwilioStub(mock)


class TestFormEncoding:
    def test_repeated_media_urls_and_lowercase_booleans(self):
        msg = outbound(
            media_urls=["https://x.test/1.png", "https://x.test/2.png"],
            smart_encoded=True,
            shorten_urls=False,
            validity_period=600,
        )
        pairs = message_form(msg, "https://hooks.test/twilio/status")
        assert [v for k, v in pairs if k == "MediaUrl"] == ["https://x.test/1.png", "https://x.test/2.png"]
        assert ("SmartEncoded", "true") in pairs and ("ShortenUrls", "false") in pairs
        assert ("ValidityPeriod", "600") in pairs and ("StatusCallback", "https://hooks.test/twilio/status") in pairs

    def test_send_at_is_iso_utc(self):
        send_at = (NOW + timedelta(hours=2)).isoformat()
        msg = validate_outbound(
            parse_send_request(
                {
                    "to": "+15551234567",
                    "messaging_service_sid": "MG" + "a" * 32,
                    "body": "x",
                    "send_at": send_at,
                    "schedule_type": "fixed",
                }
            ),
            "default",
            (),
            None,
            NOW,
        )
        assert ("SendAt", "2026-11-22T14:00:00Z") in message_form(msg, None)

    def test_the_form_uses_only_parameters_from_twilios_spec(self):
        spec = json.loads(SPEC.read_text())
        allowed = set(spec["CreateMessage"]["requestSchema"]["properties"])
        msg = outbound(
            media_urls=["https://x.test/1.png"],
            smart_encoded=True,
            shorten_urls=True,
            validity_period=5,
            provide_feedback=True,
            force_delivery=True,
            attempt=2,
            max_price="0.1",
            risk_check="disable",
            application_sid="AP" + "c" * 32,
        )
        assert {k for k, _ in message_form(msg, "https://h.test/s")} <= allowed


class TestCreate:
    def test_create_sends_basic_auth_and_parses_the_answer(self, api, stub):
        sent = api.create_message(CREDS, outbound(media_urls=["https://x.test/1.png"]))
        assert sent.sid.startswith("SM") and sent.status == "queued" and sent.num_media == 1
        assert sent.date_created == stub.clock
        assert ("MediaUrl", "https://x.test/1.png") in stub.messages[0].form

    def test_twilio_error_bodies_become_rejections_with_code_and_more_info(self, api, stub):
        stub.fail_next("reject:21211")
        with pytest.raises(TwilioRejected) as info:
            api.create_message(CREDS, outbound())
        assert info.value.code == 21211 and info.value.http_status == 400
        assert info.value.more_info == "https://www.twilio.com/docs/errors/21211"

    def test_429_is_retried_with_backoff_and_creates_once(self, api, stub, sleeps):
        stub.fail_next("429", "429")
        api.create_message(CREDS, outbound())
        assert stub.create_attempts == 3 and len(stub.messages) == 1
        assert sleeps == [0.25, 0.5]  # exponential, with jitter pinned at 1.0

    def test_429_gives_up_after_max_attempts(self, api, stub, sleeps):
        stub.fail_next(*["429"] * 4)
        with pytest.raises(TwilioRetryable) as info:
            api.create_message(CREDS, outbound())
        assert info.value.code == 20429 and len(sleeps) == 3 and not stub.messages

    def test_no_retry_starts_that_could_outlive_the_invocation(self, api, stub, sleeps):
        """Near the end of the send Lambda's time, a 429 hands the record back instead of sleeping past it."""
        import time

        stub.fail_next("429")
        with pytest.raises(TwilioRetryable):
            api.create_message(CREDS, outbound(), finish_by=time.monotonic() + 5)  # less than one more try
        assert stub.create_attempts == 1 and sleeps == []
        stub.fail_next("429")
        api.create_message(CREDS, outbound(), finish_by=time.monotonic() + 60)
        assert stub.create_attempts == 3 and len(stub.messages) == 1

    def test_each_429_is_counted_for_the_throttling_alarm(self, api, stub, monkeypatch):
        from chalicelib.observability import metrics

        counted = []
        monkeypatch.setattr(metrics, "add_metric", lambda name, **kw: counted.append(name))
        stub.fail_next("429", "429")
        api.create_message(CREDS, outbound())
        assert counted == ["TwilioThrottled", "TwilioThrottled"]

    def test_refused_connections_are_retried(self, api, stub):
        stub.fail_next("refused")
        api.create_message(CREDS, outbound())
        assert stub.create_attempts == 2 and len(stub.messages) == 1

    def test_a_5xx_on_create_is_an_unknown_outcome_and_not_blindly_retried(self, api, stub):
        stub.fail_next("500")
        with pytest.raises(TwilioOutcomeUnknown):
            api.create_message(CREDS, outbound())
        assert stub.create_attempts == 1

    @pytest.mark.parametrize("fault", ["lost", "timeout_created", "timeout_not_created"])
    def test_a_missing_answer_after_sending_is_an_unknown_outcome(self, api, stub, fault):
        stub.fail_next(fault)
        with pytest.raises(TwilioOutcomeUnknown):
            api.create_message(CREDS, outbound())
        assert stub.create_attempts == 1

    def test_wrong_credentials_are_retryable_and_not_hammered(self, api, stub, sleeps):
        with pytest.raises(TwilioRetryable) as info:
            api.create_message(TwilioCredentials(ACCOUNT_SID, "wrong"), outbound())
        assert info.value.code == 20003 and stub.create_attempts == 1 and sleeps == []


def throttle_account_fetch(mock: responses.RequestsMock, retry_after: str) -> None:
    """Twilio's 429 on the Account fetch, asking to wait `retry_after` seconds."""
    mock.add(
        responses.GET,
        f"{BASE_URL}/Accounts/{ACCOUNT_SID}.json",
        status=429,
        json={"code": 20429, "message": "Too Many Requests"},
        headers={"Retry-After": retry_after},
    )


class TestRetryAfter:
    def test_retry_after_is_honoured(self, api, sleeps):
        with responses.RequestsMock() as mock:
            throttle_account_fetch(mock, retry_after="3")
            mock.add(responses.GET, f"{BASE_URL}/Accounts/{ACCOUNT_SID}.json", json={"sid": ACCOUNT_SID})
            assert api.fetch_account(CREDS)["sid"] == ACCOUNT_SID
        assert sleeps == [3.0]

    def test_a_long_retry_after_hands_the_work_back_instead_of_sleeping(self, api, sleeps):
        with responses.RequestsMock() as mock:
            throttle_account_fetch(mock, retry_after="120")
            with pytest.raises(TwilioRetryable):
                api.fetch_account(CREDS)
        assert sleeps == []


class TestReads:
    def test_a_5xx_on_a_read_is_retried(self, api, sleeps):
        with responses.RequestsMock() as mock:
            url = f"{BASE_URL}/Accounts/{ACCOUNT_SID}/Messages/SM1.json"
            mock.add(responses.GET, url, status=503, body="<html>busy</html>")
            mock.add(
                responses.GET,
                url,
                json={
                    "sid": "SM1",
                    "status": "delivered",
                    "num_segments": "2",
                    "error_code": None,
                    "date_created": "Sun, 22 Nov 2026 12:00:00 +0000",
                },
            )
            message = api.fetch_message(CREDS, "SM1")
        assert (message.status, message.num_segments, message.date_created) == ("delivered", 2, NOW)
        assert len(sleeps) == 1

    def test_non_json_errors_still_become_domain_errors(self, api):
        with responses.RequestsMock() as mock:
            mock.add(
                responses.GET, f"{BASE_URL}/Accounts/{ACCOUNT_SID}/Messages/SM1.json", status=404, body="not found"
            )
            with pytest.raises(TwilioRejected) as info:
                api.fetch_message(CREDS, "SM1")
        assert info.value.http_status == 404 and info.value.code is None

    def test_list_follows_pages_and_sends_filters(self, api, stub):
        for i in range(5):
            stub.add_existing("+15551234567", "+15005550006", f"m{i}", timedelta(minutes=5 - i))
        stub.add_existing("+15550000000", "+15005550006", "other", timedelta(minutes=1))
        found = list(api.list_messages(CREDS, to="+15551234567", from_="+15005550006", page_size=2))
        assert [m.body for m in found] == ["m4", "m3", "m2", "m1", "m0"]  # newest first, across 3 pages

    def test_list_passes_date_filters_as_twilio_names_them(self, api):
        with responses.RequestsMock() as mock:
            mock.add(responses.GET, MESSAGES, json={"messages": [], "next_page_uri": None})
            list(api.list_messages(CREDS, to="+15551234567", date_sent_after=NOW.date(), date_sent_before=NOW.date()))
            query = dict(parse_qsl(mock.calls[0].request.url.split("?", 1)[1]))
        assert query == {"PageSize": "50", "To": "+15551234567", "DateSent>": "2026-11-22", "DateSent<": "2026-11-22"}


def test_one_session_is_pooled_for_concurrent_use():
    api = TwilioApi(BASE_URL)
    adapter = api.session.get_adapter("https://api.twilio.com")
    assert isinstance(api.session, requests.Session) and adapter._pool_maxsize >= 10

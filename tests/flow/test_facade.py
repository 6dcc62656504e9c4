"""The Twilio-compatible front door, driven by the official `twilio` Python package as a platform
would drive Twilio: only the base URL changes. Everything runs on the local stack, with the
simulator as Twilio behind the connector."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import jsonschema
import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from local.stack import LocalStack, StackConfig
from local.twilio_sim import Simulator
from tests import MESSAGE_SCHEMA, MESSAGE_SID
from tests.receiver import Receiver

KEY = "facade-test-key"
FROM = "+15005550006"
MG = "MG" + "3" * 32
FINAL = ("delivered", "undelivered", "failed", "canceled")


class Platform:
    """A platform with a Twilio connection whose Base URL points at the connector."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        assert stack.simulator is not None
        self.sim: Simulator = stack.simulator.sim
        self.account = stack.config.facade_account_sid
        self.token = stack.config.facade_token
        self.client = self.client_for(self.account, self.token)
        self.messages_url = f"{stack.facade_url}/Accounts/{self.account}/Messages.json"

    def client_for(self, account: str, token: str) -> Client:
        client = Client(account, token)
        client.api.base_url = self.stack.api_url
        return client

    def wait(self, sid: str, *statuses: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.client.messages(sid).fetch()  # as Unica polls: from the ledger, not Twilio
            if message.status in statuses:
                return message
            time.sleep(0.1)
        raise AssertionError(f"{sid} never reached {statuses}")

    def post_raw(self, body: bytes | str, content_type: str, **headers: str) -> requests.Response:
        return requests.post(
            self.messages_url,
            data=body,
            auth=(self.account, self.token),
            headers={"Content-Type": content_type, **headers},
            timeout=10,
        )

    def our_record(self, message_id: str) -> dict[str, Any]:
        answer = requests.get(f"{self.stack.api_url}/messages/{message_id}", headers={"x-api-key": KEY}, timeout=10)
        result: dict[str, Any] = answer.json()
        return result


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    config = StackConfig(stage="facade", api_key=KEY, time_scale=20, retry_interval_ms=1000, retry_attempts=3)
    with LocalStack(config) as stack:
        yield Platform(stack)


@pytest.fixture(autouse=True)
def _keep_the_stack_wiring(platform: Platform) -> None:
    platform.stack.rewire()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def test_an_sms_is_created_then_fetched_until_delivered_in_twilios_own_shape(platform: Platform) -> None:
    created = platform.client.messages.create(to="+15550300001", from_=FROM, body="Your order has shipped")
    assert created.sid.startswith("SM") and len(created.sid) == 34
    assert created.status == "queued" and created.body == "Your order has shipped" and created.num_segments == "1"
    delivered = platform.wait(created.sid, "delivered")
    assert delivered.date_sent is not None and delivered.error_code is None and delivered.to == "+15550300001"
    raw = requests.get(
        f"{platform.stack.facade_url}/Accounts/{platform.account}/Messages/{created.sid}.json",
        auth=(platform.account, platform.token),
        timeout=10,
    ).json()
    jsonschema.validate(raw, MESSAGE_SCHEMA)  # Twilio's own MessageResource schema
    assert set(raw) == set(MESSAGE_SCHEMA["properties"])
    assert raw["body"] is None  # only the body's hash is kept
    assert platform.sim.truth(platform.our_record(created.sid)["twilio_sid"])["final_status"] == "delivered"


def test_an_mms_gets_an_mm_sid_and_its_media_count(platform: Platform) -> None:
    created = platform.client.messages.create(
        to="+15550300002", from_=FROM, body="Look", media_url=["https://example.com/a.jpg", "https://example.com/b.png"]
    )
    assert created.sid.startswith("MM") and created.num_media == "2"
    assert platform.wait(created.sid, "delivered").num_media == "2"
    at_twilio = platform.sim.messages[platform.our_record(created.sid)["twilio_sid"]]
    assert at_twilio.media == ["https://example.com/a.jpg", "https://example.com/b.png"]


def test_wrong_credentials_or_another_accounts_path_are_401_20003(platform: Platform) -> None:
    for client in (
        platform.client_for(platform.account, "not-the-token"),
        platform.client_for("AC" + "9" * 32, platform.token),
    ):
        with pytest.raises(TwilioRestException) as refused:
            client.messages.create(to="+15550300003", from_=FROM, body="x")
        assert (refused.value.status, refused.value.code) == (401, 20003)
    bare = requests.get(f"{platform.stack.facade_url}/Accounts/{platform.account}.json", timeout=10)
    assert bare.status_code == 401 and bare.json()["code"] == 20003 and "Basic" in bare.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"to": "+1555", "from_": FROM, "body": "x"}, 21211),
        ({"to": "+15550300004", "from_": FROM}, 21602),
        ({"to": "+15550300004", "from_": FROM, "body": "x" * 1601}, 21617),
        ({"to": "+15550300004", "from_": FROM, "body": "x", "media_url": ["ftp://x"]}, 21620),
        ({"to": "+15550300004", "from_": FROM, "body": "x", "status_callback": "not a url"}, 21609),
    ],
    ids=["invalid-number", "no-body", "too-long", "bad-media", "bad-callback"],
)
def test_a_request_twilio_would_refuse_is_a_400_with_twilios_code(
    platform: Platform, kwargs: dict[str, Any], code: int
) -> None:
    with pytest.raises(TwilioRestException) as refused:
        platform.client.messages.create(**kwargs)
    assert (refused.value.status, refused.value.code) == (400, code)
    assert refused.value.uri.endswith("/Messages.json")


def test_an_opted_out_recipient_is_refused_at_create_with_21610(platform: Platform) -> None:
    platform.sim.inbound("+15550300005", FROM, "STOP")  # the simulator posts the reply to our webhook at once
    with pytest.raises(TwilioRestException) as refused:
        platform.client.messages.create(to="+15550300005", from_=FROM, body="Sale!")
    assert (refused.value.status, refused.value.code) == (400, 21610)
    assert not any(c["to"] == "+15550300005" for c in platform.sim.creates())


def test_a_ci360_body_with_an_unescaped_plus_reaches_the_number(platform: Platform) -> None:
    # SAS CI360 inserts raw values: `+1555…` arrives as ` 1555…` after form decoding.
    answer = platform.post_raw(
        "To=+15550300006&From=+15005550006&Body=Hello+there", "application/x-www-form-urlencoded"
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["to"] == "+15550300006" and answer.json()["from"] == FROM
    platform.wait(answer.json()["sid"], "delivered")


def test_multipart_and_json_bodies_are_read_by_content(platform: Platform) -> None:
    boundary = "XyZ"
    parts = [("To", "+15550300007"), ("From", FROM), ("Body", "multipart hello")]
    body = (
        "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in parts)
        + f"--{boundary}--\r\n"
    )
    multipart = platform.post_raw(body, f"multipart/form-data; boundary={boundary}")
    assert multipart.status_code == 201 and multipart.json()["to"] == "+15550300007"
    as_json = platform.post_raw('{"To": "+15550300008", "From": "+15005550006", "Body": "json"}', "text/plain")
    assert as_json.status_code == 201 and as_json.json()["body"] == "json"


def test_an_idempotency_key_makes_a_retry_the_same_message_sent_once(platform: Platform) -> None:
    form = "To=%2B15550300009&From=%2B15005550006&Body=once"
    first = platform.post_raw(form, "application/x-www-form-urlencoded", **{"Idempotency-Key": "order-77"})
    again = platform.post_raw(form, "application/x-www-form-urlencoded", **{"Idempotency-Key": "order-77"})
    as_field = platform.post_raw(form + "&IdempotencyKey=order-78", "application/x-www-form-urlencoded")
    assert first.status_code == again.status_code == as_field.status_code == 201
    assert first.json()["sid"] == again.json()["sid"] != as_field.json()["sid"]
    platform.wait(first.json()["sid"], "delivered")
    platform.wait(as_field.json()["sid"], "delivered")
    assert sum(1 for c in platform.sim.creates() if c["to"] == "+15550300009") == 2


def test_a_retry_without_a_key_inside_the_content_window_returns_the_first_message(platform: Platform) -> None:
    form = "To=%2B15550300010&From=%2B15005550006&Body=Your+code+is+5531"
    first = platform.post_raw(form, "application/x-www-form-urlencoded")
    retried = platform.post_raw(form, "application/x-www-form-urlencoded")  # CI360 after a timeout
    other = platform.post_raw(form.replace("5531", "5532"), "application/x-www-form-urlencoded")
    assert first.json()["sid"] == retried.json()["sid"] != other.json()["sid"]
    platform.wait(first.json()["sid"], "delivered")
    platform.wait(other.json()["sid"], "delivered")
    assert sum(1 for c in platform.sim.creates() if c["to"] == "+15550300010") == 2
    # the window's own item shares the messages table; it is no message to the API
    scan = platform.stack.dynamodb.scan(TableName=platform.stack.tables["MessagesTable"])["Items"]
    window_id = next(i["id"]["S"] for i in scan if i["id"]["S"].startswith("content#"))
    from chalicelib import wiring_http

    assert wiring_http.messages_api().get(window_id).status == 404  # as API Gateway hands it over, decoded


def test_meta_fields_become_metadata_and_unknown_parameters_are_ignored(platform: Platform) -> None:
    form = "To=%2B15550300011&From=%2B15005550006&Body=hi&Meta.datahub_id=dh-1&Meta.rtc=r-9&Unrelated=1"
    created = platform.post_raw(form, "application/x-www-form-urlencoded")
    assert created.status_code == 201
    assert platform.our_record(created.json()["sid"])["metadata"] == {"datahub_id": "dh-1", "rtc": "r-9"}


def test_messages_are_listed_newest_first_page_by_page_with_filters(platform: Platform) -> None:
    to = "+15550300012"
    sids = [platform.client.messages.create(to=to, from_=FROM, body=f"n{n}").sid for n in range(5)]
    listed = platform.client.messages.list(to=to, page_size=2)  # follows next_page_uri across 3 pages
    assert [m.sid for m in listed] == list(reversed(sids))
    today = datetime.now(UTC).date()
    assert len(platform.client.messages.list(to=to, date_sent_after=today - timedelta(days=1))) == 5
    assert platform.client.messages.list(to=to, date_sent_before=today - timedelta(days=1)) == []
    page = requests.get(
        platform.messages_url, params={"To": to, "PageSize": "2"}, auth=(platform.account, platform.token), timeout=10
    ).json()
    assert page["page_size"] == 2 and "PageToken=PA" in page["next_page_uri"] and page["first_page_uri"]


def test_an_unknown_or_foreign_sid_is_404_20404(platform: Platform) -> None:
    for sid in ("SM" + "0" * 32, "not-a-sid"):
        with pytest.raises(TwilioRestException) as missing:
            platform.client.messages(sid).fetch()
        assert (missing.value.status, missing.value.code) == (404, 20404)


def test_the_account_and_its_numbers_answer_a_test_connection_without_a_token(platform: Platform) -> None:
    account = platform.client.api.accounts(platform.account).fetch()
    assert account.status == "active" and account.sid == platform.account
    raw = requests.get(
        f"{platform.stack.facade_url}/Accounts/{platform.account}.json",
        auth=(platform.account, platform.token),
        timeout=10,
    ).json()
    assert "auth_token" not in raw and platform.token not in str(raw)
    assert [n.phone_number for n in platform.client.incoming_phone_numbers.list()] == [FROM]


def test_a_scheduled_message_can_be_canceled(platform: Platform) -> None:
    send_at = datetime.now(UTC) + timedelta(hours=1)
    created = platform.client.messages.create(
        to="+15550300013", messaging_service_sid=MG, body="Tomorrow", send_at=send_at, schedule_type="fixed"
    )
    assert created.status == "scheduled"
    deadline = time.monotonic() + 10
    while platform.our_record(created.sid).get("twilio_sid") is None:  # at Twilio, scheduled there
        assert time.monotonic() < deadline
        time.sleep(0.1)
    canceled = platform.client.messages(created.sid).update(status="canceled")
    assert canceled.status == "canceled"
    assert platform.sim.truth(platform.our_record(created.sid)["twilio_sid"])["final_status"] == "canceled"
    assert platform.our_record(created.sid)["status"] == "canceled"
    sent = platform.client.messages.create(to="+15550300014", from_=FROM, body="not scheduled")
    platform.wait(sent.sid, "delivered")
    with pytest.raises(TwilioRestException) as refused:
        platform.client.messages(sent.sid).update(status="canceled")
    assert (refused.value.status, refused.value.code) == (400, 30409)


def test_status_callbacks_arrive_in_twilios_format_signed_with_the_facade_token(
    platform: Platform, receiver: Receiver
) -> None:
    url = f"{receiver.url}/status"
    created = platform.client.messages.create(to="+15550300015", from_=FROM, body="tracked", status_callback=url)
    platform.wait(created.sid, "delivered")
    deadline = time.monotonic() + 10
    while "MessageStatus=delivered" not in "".join(r["body"] for r in receiver.requests):
        assert time.monotonic() < deadline, receiver.requests
        time.sleep(0.05)
    time.sleep(0.3)  # a `sent` posted at the same moment
    received = list(receiver.requests)
    validator = RequestValidator(platform.token)
    statuses = []
    for request in received:
        params = dict(parse_qsl(request["body"], keep_blank_values=True))
        assert validator.validate(url, params, request["headers"]["X-Twilio-Signature"])
        assert params["MessageSid"] == params["SmsSid"] == created.sid and params["AccountSid"] == platform.account
        assert re.match(MESSAGE_SID, params["MessageSid"])  # twilio-oai's MessageResource.sid pattern
        assert params["To"] == "+15550300015" and params["ApiVersion"] == "2010-04-01"
        statuses.append(params["MessageStatus"])
    # one per change after the first (queued); `sent` is skipped only when `delivered` overtook it
    assert statuses.count("delivered") == 1 and set(statuses) <= {"sent", "delivered"}


def test_unknown_routes_and_methods_answer_in_twilios_error_shape(platform: Platform) -> None:
    auth = (platform.account, platform.token)
    missing = requests.get(f"{platform.stack.facade_url}/Accounts/{platform.account}/Calls.json", auth=auth, timeout=10)
    assert missing.status_code == 404 and missing.json()["code"] == 20404
    sid = platform.client.messages.create(to="+15550300016", from_=FROM, body="x").sid
    deleted = requests.delete(
        f"{platform.stack.facade_url}/Accounts/{platform.account}/Messages/{sid}.json", auth=auth, timeout=10
    )
    assert deleted.status_code == 405 and deleted.json()["code"] == 20004
    assert deleted.json()["more_info"] == "https://www.twilio.com/docs/errors/20004"


def test_a_final_message_is_redacted_at_twilio_and_a_pending_one_cannot_be(platform: Platform) -> None:
    created = platform.client.messages.create(to="+15550300017", from_=FROM, body="Your PIN is 4821")
    platform.wait(created.sid, "delivered")
    redacted = platform.client.messages(created.sid).update(body="")
    assert redacted.status == "delivered" and redacted.body is None
    assert platform.sim.messages[platform.our_record(created.sid)["twilio_sid"]].body == ""
    later = platform.client.messages.create(
        to="+15550300018", messaging_service_sid=MG, body="x", send_at=datetime.now(UTC) + timedelta(hours=1),
        schedule_type="fixed",
    )  # fmt: skip
    with pytest.raises(TwilioRestException) as refused:
        platform.client.messages(later.sid).update(body="")
    assert (refused.value.status, refused.value.code) == (400, 20001)

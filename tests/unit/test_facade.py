"""The Twilio-compatible front door with its ports in memory: what a caller gets for each kind of
request, and what reaches the queue (the local stack and the official clients test the whole path)."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from chalicelib.adapters.facade_accounts import FacadeAccounts, secret_hash
from chalicelib.adapters.twilio_api import TwilioApi
from chalicelib.domain.ledger import PageQuery
from chalicelib.domain.ports import StoreError
from chalicelib.domain.rules import ClaimOutcome
from chalicelib.domain.twilio import TwilioCredentials
from chalicelib.entrypoints.facade import TwilioFacade
from chalicelib.settings import load_settings
from chalicelib.usecases.send import SendService
from tests.fakes import InMemoryLedger, InMemoryOptOuts, InMemoryTemplates, StaticCredentials
from tests.unit.test_accept import Queue

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ACCOUNT = "AC" + "a" * 32
TOKEN = "facade-token"
KEY_SID, KEY_SECRET = "SK" + "b" * 32, "key-secret"
QUIET = "AC" + "c" * 32  # an account with its content window off
TO, FROM = "+15551234567", "+15005550006"


class Provider:
    def __init__(self, value: Any) -> None:
        self.value = value

    def get(self, name: str, max_age: int = 0, transform: str | None = None) -> Any:
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


SECRET = {
    "accounts": [
        {"account_sid": ACCOUNT, "auth_token": TOKEN},
        {"account_sid": QUIET, "auth_token": TOKEN, "dedup_seconds": 0},
    ],
    "keys": [{"sid": KEY_SID, "secret_sha256": secret_hash(KEY_SECRET), "account_sid": ACCOUNT}],
}


class World:
    def __init__(self, secret: Any = SECRET) -> None:
        self.now = NOW
        settings = load_settings({"TWILIO_SECRET_ID": "s", "TWILIO_DEFAULT_FROM": FROM, "FACADE_SECRET_ID": "f"})
        self.ledger, self.queue = InMemoryLedger(), Queue()
        twilio = TwilioApi("https://api.twilio.test")  # never called here
        creds = StaticCredentials(TwilioCredentials("AC" + "0" * 32, "t"))
        self.service = SendService(
            settings, self.ledger, InMemoryOptOuts(), InMemoryTemplates(), twilio, creds, lambda: self.now
        )
        from chalicelib.usecases.accept import AcceptMessages

        accept = AcceptMessages(self.service.validation, self.ledger, self.queue, lambda: self.now)
        accounts = FacadeAccounts(Provider(secret), "f")
        self.facade = TwilioFacade(settings, accounts, accept, self.ledger, twilio, creds, lambda: self.now)

    def call(
        self, method: str, path: str, form: Mapping[str, str] | None = None, user: str = ACCOUNT, secret: str = TOKEN
    ) -> tuple[int, dict[str, Any]]:
        auth = base64.b64encode(f"{user}:{secret}".encode()).decode()
        path, _, query = path.partition("?")
        event = {
            "rawPath": f"/2010-04-01/Accounts/{ACCOUNT if user != QUIET else QUIET}{path}",
            "rawQueryString": query,
            "headers": {"Authorization": f"Basic {auth}", "Content-Type": "application/x-www-form-urlencoded"},
            "requestContext": {"http": {"method": method}},
            "body": urlencode(form or {}),
        }
        answer = self.facade.handle(event)
        return answer["statusCode"], json.loads(answer["body"])


def test_a_message_canceled_before_its_send_is_never_sent() -> None:
    world = World()
    status, created = world.call("POST", "/Messages.json", {"To": TO, "From": FROM, "Body": "hi"})
    assert status == 201 and created["status"] == "queued"
    status, canceled = world.call("POST", f"/Messages/{created['sid']}.json", {"Status": "canceled"})
    assert status == 200 and canceled["status"] == "canceled"
    ((message_id, raw),) = world.queue.sent  # the record still reaches the send function...
    claim = world.ledger.claim(message_id, {}, "t", NOW, timedelta(seconds=60))
    assert claim.outcome is ClaimOutcome.DONE  # ...which finds nothing to send
    world.service.send(message_id, raw)  # (a call to Twilio here would fail: api.twilio.test does not resolve)
    assert world.ledger.items[message_id]["status"] == "canceled" and "twilio_sid" not in world.ledger.items[message_id]


def test_an_api_key_sid_authenticates_for_its_own_account_only() -> None:
    world = World()
    assert world.call("GET", ".json", user=KEY_SID, secret=KEY_SECRET)[0] == 200
    assert world.call("GET", ".json", user=KEY_SID, secret="wrong")[0] == 401
    status, body = world.call("GET", ".json", user="AC" + "d" * 32, secret=TOKEN)
    assert (status, body["code"], body["message"]) == (401, 20003, "Authenticate")


def test_the_content_window_can_be_turned_off_per_account() -> None:
    world = World()
    form = {"To": TO, "From": FROM, "Body": "same"}
    first = world.call("POST", "/Messages.json", form)[1]["sid"]
    assert world.call("POST", "/Messages.json", form)[1]["sid"] == first
    world.now = NOW + timedelta(seconds=301)  # the window is over: the same content is a new message
    assert world.call("POST", "/Messages.json", form)[1]["sid"] != first
    quiet = [world.call("POST", "/Messages.json", form, user=QUIET)[1]["sid"] for _ in range(2)]
    assert quiet[0] != quiet[1] and len(world.queue.sent) == 4


def test_a_store_outage_is_a_429_with_retry_after_never_a_500() -> None:
    world = World()

    def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("throttled")

    world.ledger.claim_content = down  # type: ignore[method-assign]
    world.ledger.create_pending = down  # type: ignore[method-assign]
    answer = world.facade.handle(
        {
            "rawPath": f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json",
            "headers": {"authorization": "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()},
            "requestContext": {"http": {"method": "POST"}},
            "body": urlencode({"To": TO, "From": FROM, "Body": "hi"}),
        }
    )
    assert answer["statusCode"] == 429 and answer["headers"]["Retry-After"] == "1"
    assert json.loads(answer["body"])["code"] == 20429


def test_the_account_store_unreadable_is_a_503_not_a_way_in() -> None:
    world = World(secret=RuntimeError("secrets manager down"))
    status, body = world.call("GET", ".json")
    assert (status, body["code"]) == (503, 20503)


def test_bad_bodies_and_paging_are_400s_that_say_what_is_wrong() -> None:
    world = World()
    event = {
        "rawPath": f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json",
        "headers": {"authorization": "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()},
        "requestContext": {"http": {"method": "POST"}},
        "body": '{"To": ',
    }
    answer = world.facade.handle(event)
    assert answer["statusCode"] == 400 and "JSON" in json.loads(answer["body"])["message"]
    for query in ("PageSize=0", "PageSize=x", "PageToken=PAforged", "DateSent=yesterday"):
        status, body = world.call("GET", f"/Messages.json?{query}")
        assert status == 400 and body["code"] == 20001, query


def test_a_list_holds_only_the_accounts_own_messages() -> None:
    world = World()
    mine = world.call("POST", "/Messages.json", {"To": TO, "From": FROM, "Body": "mine"})[1]["sid"]
    world.call("POST", "/Messages.json", {"To": TO, "From": FROM, "Body": "theirs"}, user=QUIET)
    status, page = world.call("GET", "/Messages.json")
    assert status == 200 and [m["sid"] for m in page["messages"]] == [mine]
    assert world.ledger.account_page(ACCOUNT, PageQuery())[0][0].id == mine


def test_every_create_parameter_in_twilios_spec_is_accepted_and_reaches_twilio() -> None:
    """Each of CreateMessage's parameters is read by the front door and passed on in the form sent to Twilio."""
    from chalicelib.adapters.twilio_api import message_form
    from chalicelib.domain.models import parse_send_request
    from chalicelib.domain.outbound import validate_outbound
    from tests import TWILIO_DATA

    spec = json.loads((TWILIO_DATA / "message_subset.json").read_text())["CreateMessage"]["requestSchema"]
    names = set(spec["properties"])
    values = {
        "To": TO, "From": FROM, "MessagingServiceSid": "MG" + "1" * 32, "Body": "hi",
        "MediaUrl": "https://example.com/a.jpg", "ContentSid": "HX" + "1" * 32, "ContentVariables": '{"1": "x"}',
        "StatusCallback": "https://cdp.example/status", "ValidityPeriod": "600", "MaxPrice": "0.5",
        "ProvideFeedback": "true", "ApplicationSid": "AP" + "1" * 32, "SmartEncoded": "true", "ShortenUrls": "false",
        "RiskCheck": "disable", "Attempt": "2", "ForceDelivery": "false", "AddressRetention": "retain",
        "ContentRetention": "discard", "FallbackFrom": FROM, "PersistentAction": "geo:37.7,-122.4", "SendAsMms": "true",
        "TrafficType": "free", "SendAt": (NOW + timedelta(days=1)).isoformat(), "ScheduleType": "fixed",
    }  # fmt: skip
    assert set(values) == names, "a parameter of Twilio's spec has no example here"
    from chalicelib.entrypoints.facade_requests import create_params

    params = create_params(list(values.items()), None)
    assert params.ignored == ()
    message = validate_outbound(parse_send_request(params.request), "default", (), None, NOW)
    sent = {name for name, _ in message_form(message, "https://our.webhook/twilio/status")}
    assert names <= sent


def test_hostile_forms_get_a_201_or_a_twilio_error_never_a_500() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from chalicelib.domain.models import TWILIO_ALIASES

    world = World()
    names = st.sampled_from([*TWILIO_ALIASES, "Meta.x", "IdempotencyKey", "Unknown", ""])
    text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
    values = st.one_of(text, st.sampled_from([TO, FROM, " 15551234567", "+1555", "true", "-1", "9" * 30, "\n"]))

    @settings(max_examples=3000 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 300, deadline=None)
    @given(st.lists(st.tuples(names, values), max_size=12))
    def check(pairs: list[tuple[str, str]]) -> None:
        status, body = world.call("POST", "/Messages.json", dict(pairs))
        assert status in (201, 400), body
        if status == 400:
            assert isinstance(body["code"], int) and body["message"] and body["more_info"].endswith(str(body["code"]))

    check()


def test_a_new_message_is_answered_from_what_was_written_without_reading_it_back() -> None:
    world = World()
    reads: list[str] = []
    original = world.ledger.get

    def counted(message_id: str) -> Any:
        reads.append(message_id)
        return original(message_id)

    world.ledger.get = counted  # type: ignore[method-assign]
    status, created = world.call("POST", "/Messages.json", {"To": TO, "From": FROM, "Body": "one write, no read"})
    assert status == 201 and created["status"] == "queued" and created["to"] == TO and reads == []


def test_one_account_cannot_reach_anothers_messages() -> None:
    """Two front-door accounts: fetching, cancelling or redacting the other's message answers as for a message
    that does not exist (404 20404, Twilio's), and changes nothing; the list holds only its own. (Removing the
    account check in TwilioFacade._record turns each of these into a 200.)"""
    world = World()
    status, created = world.call("POST", "/Messages.json", {"To": TO, "From": FROM, "Body": "mine"})
    assert status == 201
    sid = created["sid"]
    before = dict(world.ledger.items[sid])
    for method, form_ in (("GET", None), ("POST", {"Status": "canceled"}), ("POST", {"Body": ""})):
        status, body = world.call(method, f"/Messages/{sid}.json", form_, user=QUIET)
        assert (status, body["code"]) == (404, 20404), (method, form_, body)
    assert world.ledger.items[sid] == before  # nothing changed
    status, page = world.call("GET", "/Messages.json", user=QUIET)
    assert status == 200 and page["messages"] == []
    assert world.call("GET", f"/Messages/{sid}.json")[0] == 200  # its own account still reads it

"""The local Twilio simulator, checked against things no one here wrote: the official
`twilio` package (its REST client and its RequestValidator) and Twilio's OpenAPI spec."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jsonschema
import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from local.twilio_sim import CallbackFaults, Fault, SimConfig, TwilioSimulator
from local.twilio_sim.core import ERROR_MESSAGES
from tests import MESSAGE_SCHEMA, TWILIO_DATA
from tests.receiver import Receiver

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "sim-auth-token"
FROM = "+15005550006"
TO = "+15551234567"
MG = "MG" + "2" * 32


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def simulator(receiver: Receiver) -> Iterator[TwilioSimulator]:
    config = SimConfig(ACCOUNT_SID, AUTH_TOKEN, time_scale=20, inbound_url=f"{receiver.url}/twilio/inbound", seed=7)
    with TwilioSimulator(config) as sim:
        yield sim


@pytest.fixture
def client(simulator: TwilioSimulator) -> Client:
    twilio = Client(ACCOUNT_SID, AUTH_TOKEN)
    twilio.api.base_url = simulator.origin
    return twilio


def drained(simulator: TwilioSimulator, timeout: float = 10) -> None:
    """Until nothing is scheduled or being posted: a callback or retry still to come would be (the signal a
    negative check waits on, not a sleep)."""
    eventually(lambda: simulator.sim.pending_jobs() == 0, timeout)


def eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


class TestTheOfficialClient:
    def test_an_account_holds_at_most_its_limit_of_scheduled_messages(
        self, client: Client, simulator: TwilioSimulator
    ) -> None:
        # twilio.com/docs/api/errors/35125: 500,000 scheduled messages an account at a time (here 1)
        simulator.sim.config.max_scheduled = 1
        send_at = simulator.sim.clock.now() + timedelta(hours=2)
        first = client.messages.create(
            to=TO, messaging_service_sid=MG, body="a", send_at=send_at, schedule_type="fixed"
        )
        assert first.status == "scheduled"
        with pytest.raises(TwilioRestException) as refused:
            client.messages.create(to=TO, messaging_service_sid=MG, body="b", send_at=send_at, schedule_type="fixed")
        assert (refused.value.status, refused.value.code) == (400, 35125)
        client.messages(first.sid).update(status="canceled")  # a canceled one frees its place
        assert client.messages.create(to=TO, messaging_service_sid=MG, body="c", send_at=send_at,
                                      schedule_type="fixed").status == "scheduled"  # fmt: skip

    def test_creates_fetches_and_lists(self, client: Client) -> None:
        created = client.messages.create(to=TO, from_=FROM, body="Hello from the simulator")
        assert created.sid.startswith("SM") and created.status == "queued" and created.num_segments == "1"
        assert client.messages(created.sid).fetch().body == "Hello from the simulator"
        assert [m.sid for m in client.messages.list(to=TO)] == [created.sid]

    def test_mms_gets_an_mm_sid_and_a_service_send_is_accepted(self, client: Client) -> None:
        mms = client.messages.create(to=TO, from_=FROM, media_url=["https://x.test/a.png"])
        assert mms.sid.startswith("MM") and mms.num_media == "1"
        service = client.messages.create(to=TO, messaging_service_sid=MG, body="hi")
        assert service.status == "accepted" and service.messaging_service_sid == MG

    @pytest.mark.parametrize(
        ("kwargs", "code"),
        [
            ({"to": "+15005550001", "from_": FROM, "body": "x"}, 21211),
            ({"to": "+15005550002", "from_": FROM, "body": "x"}, 21612),
            ({"to": "+15005550003", "from_": FROM, "body": "x"}, 21408),
            ({"to": "+15005550004", "from_": FROM, "body": "x"}, 21610),
            ({"to": "+15005550009", "from_": FROM, "body": "x"}, 21614),
            ({"to": TO, "from_": "+15005550001", "body": "x"}, 21212),
            ({"to": TO, "from_": "+15005550007", "body": "x"}, 21606),
            ({"to": TO, "from_": "+15005550008", "body": "x"}, 21611),
            ({"to": "not-a-number", "from_": FROM, "body": "x"}, 21211),
            ({"to": TO, "body": "x"}, 21603),
            ({"to": TO, "from_": FROM}, 21602),
            ({"to": TO, "from_": FROM, "body": "x" * 1601}, 21617),
            ({"to": TO, "from_": FROM, "media_url": ["https://x.test/a"] * 11}, 21623),
            ({"to": TO, "from_": FROM, "media_url": ["ftp://x.test/a"]}, 21620),
            ({"to": TO, "from_": FROM, "body": "x", "status_callback": "not a url"}, 21609),
            ({"to": TO, "from_": FROM, "body": "x", "validity_period": 0}, 21624),
            ({"to": TO, "messaging_service_sid": MG, "body": "x", "schedule_type": "fixed"}, 35111),
        ],
    )
    def test_twilio_error_codes_reach_the_client(self, client: Client, kwargs: dict[str, Any], code: int) -> None:
        with pytest.raises(TwilioRestException) as info:
            client.messages.create(**kwargs)
        assert info.value.code == code and info.value.status == 400

    def test_wrong_credentials_are_401_with_20003(self, simulator: TwilioSimulator) -> None:
        wrong = Client(ACCOUNT_SID, "not-the-token")
        wrong.api.base_url = simulator.origin
        with pytest.raises(TwilioRestException) as info:
            wrong.messages.create(to=TO, from_=FROM, body="x")
        assert (info.value.status, info.value.code) == (401, 20003)

    def test_an_unknown_sid_is_404_with_20404(self, client: Client) -> None:
        with pytest.raises(TwilioRestException) as info:
            client.messages("SM" + "0" * 32).fetch()
        assert (info.value.status, info.value.code) == (404, 20404)

    def test_the_account_can_be_fetched(self, client: Client) -> None:
        assert client.api.accounts(ACCOUNT_SID).fetch().status == "active"


class TestSpecConformance:
    def test_every_message_response_matches_twilios_schema(self, simulator: TwilioSimulator) -> None:
        session = requests.Session()
        session.auth = (ACCOUNT_SID, AUTH_TOKEN)
        url = f"{simulator.base_url}/Accounts/{ACCOUNT_SID}/Messages.json"
        created = session.post(url, data={"To": TO, "From": FROM, "Body": "schema"})
        assert created.status_code == 201
        jsonschema.validate(created.json(), MESSAGE_SCHEMA)
        simulator.sim.clock.advance(10)
        fetched = session.get(f"{simulator.base_url}/Accounts/{ACCOUNT_SID}/Messages/{created.json()['sid']}.json")
        jsonschema.validate(fetched.json(), MESSAGE_SCHEMA)
        assert fetched.json()["status"] == "delivered" and fetched.json()["date_sent"].endswith("GMT")
        for message in session.get(url).json()["messages"]:
            jsonschema.validate(message, MESSAGE_SCHEMA)

    def test_error_messages_are_twilios_own(self) -> None:
        dictionary = {
            e["code"]: e["message"].strip()
            for e in json.loads((TWILIO_DATA / "twilio-error-codes.2023-05.json").read_text())
        }
        differing = {
            code: (text, dictionary.get(code))
            for code, text in ERROR_MESSAGES.items()
            if code not in (20003, 20404) and dictionary.get(code) != text.strip()
        }
        assert differing == {}


class TestStatusOverTime:
    def test_a_message_moves_to_delivered(self, client: Client, simulator: TwilioSimulator) -> None:
        sid = client.messages.create(to=TO, from_=FROM, body="x").sid
        simulator.sim.clock.advance(1.5)
        assert client.messages(sid).fetch().status == "sending"
        simulator.sim.clock.advance(1)
        assert client.messages(sid).fetch().status == "sent"
        simulator.sim.clock.advance(5)
        assert client.messages(sid).fetch().status == "delivered"

    @pytest.mark.parametrize(
        ("scenario", "code", "status", "expected_code"),
        [
            ("undelivered", 30007, "undelivered", 30007),
            ("undelivered", None, "undelivered", 30003),
            ("failed", 30001, "failed", 30001),
            ("stuck_sent", None, "sent", None),
        ],
    )
    def test_scenarios_per_recipient(
        self,
        client: Client,
        simulator: TwilioSimulator,
        scenario: str,
        code: int | None,
        status: str,
        expected_code: int | None,
    ) -> None:
        simulator.sim.set_scenario(TO, scenario, code)
        sid = client.messages.create(to=TO, from_=FROM, body="x").sid
        simulator.sim.clock.advance(3600)
        fetched = client.messages(sid).fetch()
        assert (fetched.status, fetched.error_code) == (status, expected_code)

    def test_a_slow_receipt_is_sent_long_before_it_is_delivered(
        self, client: Client, simulator: TwilioSimulator
    ) -> None:
        simulator.sim.set_scenario(TO, "slow_receipt")
        sid = client.messages.create(to=TO, from_=FROM, body="x").sid
        simulator.sim.clock.advance(60)
        assert client.messages(sid).fetch().status == "sent"
        simulator.sim.clock.advance(120)
        assert client.messages(sid).fetch().status == "delivered"

    def test_the_time_scale_moves_messages_without_manual_advances(self, client: Client) -> None:
        sid = client.messages.create(to=TO, from_=FROM, body="x").sid  # 4 simulated seconds at 20x: 0.2 s
        eventually(lambda: client.messages(sid).fetch().status == "delivered")


class TestStatusCallbacks:
    def test_callbacks_are_signed_as_twilio_signs_them(self, client: Client, receiver: Receiver) -> None:
        url = f"{receiver.url}/twilio/status?tenant=a"
        sid = client.messages.create(to=TO, from_=FROM, body="x", status_callback=url).sid
        calls = receiver.wait_for(3)
        assert [dict(parse_qsl(c["body"]))["MessageStatus"] for c in calls] == ["sending", "sent", "delivered"]
        validator = RequestValidator(AUTH_TOKEN)
        for call in calls:
            params = dict(parse_qsl(call["body"]))
            signature = call["headers"]["X-Twilio-Signature"]
            assert params["MessageSid"] == sid
            assert call["headers"]["Content-Type"] == "application/x-www-form-urlencoded; charset=utf-8"
            assert validator.validate(url, params, signature)
            assert not validator.validate(url, {**params, "MessageStatus": "failed"}, signature)
            assert not validator.validate(url.replace("tenant=a", "tenant=b"), params, signature)
            assert not RequestValidator("another-token").validate(url, params, signature)
        assert "RawDlrDoneDate" in dict(parse_qsl(calls[-1]["body"]))

    def test_failed_messages_carry_their_error_code(
        self, client: Client, simulator: TwilioSimulator, receiver: Receiver
    ) -> None:
        simulator.sim.set_scenario(TO, "undelivered", 30005)
        client.messages.create(to=TO, from_=FROM, body="x", status_callback=f"{receiver.url}/s")
        last = dict(parse_qsl(receiver.wait_for(3)[-1]["body"]))
        assert (last["MessageStatus"], last["ErrorCode"]) == ("undelivered", "30005")

    def test_callbacks_can_be_duplicated_dropped_and_reordered(
        self, client: Client, simulator: TwilioSimulator, receiver: Receiver
    ) -> None:
        simulator.sim.callback_faults = CallbackFaults(duplicate=1.0)
        client.messages.create(to=TO, from_=FROM, body="x", status_callback=f"{receiver.url}/dup")
        assert len(receiver.wait_for(6)) == 6
        receiver.requests.clear()
        simulator.sim.callback_faults = CallbackFaults(reorder=1.0)
        client.messages.create(to=TO, from_=FROM, body="y", status_callback=f"{receiver.url}/reorder")
        order = [dict(parse_qsl(c["body"]))["MessageStatus"] for c in receiver.wait_for(3)]
        assert order == ["sending", "delivered", "sent"]
        receiver.requests.clear()
        simulator.sim.callback_faults = CallbackFaults(drop=1.0)
        sid = client.messages.create(to=TO, from_=FROM, body="z", status_callback=f"{receiver.url}/drop").sid
        eventually(lambda: simulator.sim.truth(sid)["final_status"] == "delivered")
        drained(simulator)  # every callback would have been posted by now
        assert receiver.requests == []


class TestConnectionOverrides:
    """twilio.com/docs/usage/webhooks/webhooks-connection-overrides: a callback answered 429 or 5xx is tried
    again only if its URL's fragment says so (`rc` retries, `rp` which failures, `tt` all tries' time)."""

    def _statuses(self, receiver: Receiver, path: str) -> list[str]:
        return [dict(parse_qsl(c["body"]))["MessageStatus"] for c in receiver.requests if c["path"] == path]

    def test_a_refused_callback_is_not_tried_again_without_overrides(
        self, client: Client, simulator: TwilioSimulator, receiver: Receiver
    ) -> None:
        receiver.status_for["/plain"] = 429
        client.messages.create(to=TO, from_=FROM, body="x", status_callback=f"{receiver.url}/plain")
        receiver.wait_for(3)
        drained(simulator)  # a retry would be scheduled
        assert self._statuses(receiver, "/plain") == ["sending", "sent", "delivered"]

    def test_the_fragment_asks_for_retries_within_the_total_time(
        self, client: Client, simulator: TwilioSimulator, receiver: Receiver
    ) -> None:
        receiver.status_for["/hook"] = 429
        url = f"{receiver.url}/hook#rc=3&rp=4xx&tt=15000"
        client.messages.create(to=TO, from_=FROM, body="x", status_callback=url)
        receiver.wait_for(12)
        drained(simulator)
        assert sorted(self._statuses(receiver, "/hook")) == sorted(["sending", "sent", "delivered"] * 4)
        tries = [c for c in simulator.sim.callbacks if c.url.endswith("/hook")]
        assert sorted(c.attempt for c in tries) == sorted([0, 1, 2, 3] * 3)
        # the fragment is never sent, and the signature is over the URL the request arrived on
        validator = RequestValidator(AUTH_TOKEN)
        assert all(validator.validate(f"{receiver.url}/hook", dict(parse_qsl(c["body"])),
                                      c["headers"]["X-Twilio-Signature"]) for c in receiver.requests)  # fmt: skip

        receiver.requests.clear()
        receiver.status_for["/short"] = 503
        # 1 + 2 simulated seconds of pauses would pass a 2.5 s total time: one retry only
        client.messages.create(to=TO, from_=FROM, body="y", status_callback=f"{receiver.url}/short#rc=5&rp=5xx&tt=2500")
        receiver.wait_for(6)
        drained(simulator)
        assert sorted(self._statuses(receiver, "/short")) == sorted(["sending", "sent", "delivered"] * 2)

        receiver.requests.clear()
        receiver.status_for["/policy"] = 503
        client.messages.create(to=TO, from_=FROM, body="z", status_callback=f"{receiver.url}/policy#rc=5&rp=4xx")
        receiver.wait_for(3)
        drained(simulator)  # rp=4xx: a 503 is not tried again
        assert self._statuses(receiver, "/policy") == ["sending", "sent", "delivered"]

    def test_a_retry_that_is_taken_ends_the_tries(
        self, client: Client, simulator: TwilioSimulator, receiver: Receiver
    ) -> None:
        answers = iter([429, 429])
        receiver.responders["/once"] = lambda request: (next(answers, 200), None)
        sid = client.messages.create(
            to=TO, from_=FROM, body="x", status_callback=f"{receiver.url}/once#rc=5&rp=all"
        ).sid
        receiver.wait_for(5)
        drained(simulator)
        assert len(receiver.requests) == 5  # two refused, each taken at its next try, and the third as it came
        assert [dict(parse_qsl(c["body"]))["MessageSid"] for c in receiver.requests] == [sid] * 5


class TestInbound:
    def test_a_stop_reply_is_posted_signed_and_blocks_later_sends(
        self, client: Client, simulator: TwilioSimulator, receiver: Receiver
    ) -> None:
        result = simulator.sim.inbound(TO, FROM, "stop")
        assert result["opt_out_type"] == "STOP" and result["webhook_status"] == 200
        call = receiver.requests[-1]
        params = dict(parse_qsl(call["body"], keep_blank_values=True))  # Twilio signs its empty fields too
        assert (params["From"], params["To"], params["Body"], params["OptOutType"]) == (TO, FROM, "stop", "STOP")
        # twilio.com/docs/messaging/guides/webhook-request: the geographic fields come, empty when unknown
        geographic = ("FromCity", "FromState", "FromZip", "FromCountry", "ToCity", "ToState", "ToZip", "ToCountry")
        assert all(name in params for name in geographic) and params["FromCity"] == ""
        assert RequestValidator(AUTH_TOKEN).validate(
            f"{receiver.url}/twilio/inbound", params, call["headers"]["X-Twilio-Signature"]
        )
        with pytest.raises(TwilioRestException) as info:
            client.messages.create(to=TO, from_=FROM, body="after stop")
        assert info.value.code == 21610
        simulator.sim.inbound(TO, FROM, "START")
        assert client.messages.create(to=TO, from_=FROM, body="after start").status == "queued"

    def test_free_text_replies_have_no_opt_out_type(self, simulator: TwilioSimulator, receiver: Receiver) -> None:
        simulator.sim.inbound(TO, FROM, "What time do you open?")
        assert "OptOutType" not in dict(parse_qsl(receiver.requests[-1]["body"]))


class TestFaults:
    @pytest.fixture
    def http(self, simulator: TwilioSimulator) -> tuple[requests.Session, str]:
        session = requests.Session()
        session.auth = (ACCOUNT_SID, AUTH_TOKEN)
        return session, f"{simulator.base_url}/Accounts/{ACCOUNT_SID}/Messages.json"

    def test_429_with_retry_after(self, simulator: TwilioSimulator, http: tuple[requests.Session, str]) -> None:
        session, url = http
        simulator.sim.add_fault(Fault("429", retry_after=3))
        answer = session.post(url, data={"To": TO, "From": FROM, "Body": "x"})
        assert answer.status_code == 429 and answer.json()["code"] == 20429 and answer.headers["Retry-After"] == "3"
        assert session.post(url, data={"To": TO, "From": FROM, "Body": "x"}).status_code == 201

    @pytest.mark.parametrize(("kind", "status", "code"), [("500", 500, 20500), ("503", 503, 20503)])
    def test_server_errors(
        self, simulator: TwilioSimulator, http: tuple[requests.Session, str], kind: str, status: int, code: int
    ) -> None:
        session, url = http
        simulator.sim.add_fault(Fault(kind))
        answer = session.post(url, data={"To": TO, "From": FROM, "Body": "x"})
        assert (answer.status_code, answer.json()["code"]) == (status, code)
        assert simulator.sim.creates() == []

    def test_a_reset_creates_nothing_and_a_lost_response_creates_the_message(
        self, simulator: TwilioSimulator, http: tuple[requests.Session, str]
    ) -> None:
        session, url = http
        simulator.sim.add_fault(Fault("reset"))
        with pytest.raises(requests.ConnectionError):
            session.post(url, data={"To": TO, "From": FROM, "Body": "reset"})
        simulator.sim.add_fault(Fault("lost"))
        with pytest.raises(requests.ConnectionError):
            session.post(url, data={"To": TO, "From": FROM, "Body": "lost"})
        assert [c["body"] for c in simulator.sim.creates()] == ["lost"]

    def test_faults_can_target_one_recipient_and_fire_at_a_rate(
        self, simulator: TwilioSimulator, http: tuple[requests.Session, str]
    ) -> None:
        session, url = http
        simulator.sim.add_fault(Fault("500", to="+15550000001", count=None, rate=1.0))
        assert session.post(url, data={"To": "+15550000001", "From": FROM, "Body": "x"}).status_code == 500
        assert session.post(url, data={"To": "+15550000002", "From": FROM, "Body": "x"}).status_code == 201
        assert session.post(url, data={"To": "+15550000001", "From": FROM, "Body": "x"}).status_code == 500

    def test_added_latency(self, simulator: TwilioSimulator, http: tuple[requests.Session, str]) -> None:
        session, url = http
        simulator.sim.add_fault(Fault("latency", latency_ms=150))
        started = time.monotonic()
        assert session.post(url, data={"To": TO, "From": FROM, "Body": "x"}).status_code == 201
        assert time.monotonic() - started >= 0.15

    def test_a_concurrency_limit_answers_429_past_n_in_flight(
        self, simulator: TwilioSimulator, http: tuple[requests.Session, str]
    ) -> None:
        _, url = http
        simulator.sim.config.max_in_flight = 2
        simulator.sim.config.latency_ms = 300
        codes: list[int] = []

        def post() -> None:
            codes.append(
                requests.post(
                    url, data={"To": TO, "From": FROM, "Body": "x"}, auth=(ACCOUNT_SID, AUTH_TOKEN)
                ).status_code
            )

        threads = [threading.Thread(target=post) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(codes) == [201, 201, 429, 429, 429]
        stats = requests.get(f"{simulator.origin}/_sim/stats").json()
        assert stats["peak_in_flight"] == 5 and stats["throttled"] == 3  # what the account saw, refused included
        assert requests.post(f"{simulator.origin}/_sim/config", json={"max_in_flight": None}).ok


class TestSenderThroughput:
    """Each sender drains Twilio's queue at its rate; a message that would wait longer than its
    ValidityPeriod fails with 30001 (queue overflow), as at Twilio."""

    LONG_CODE = "+15551230000"

    def create(self, client: Client, body: str = "x", **kw: Any) -> Any:
        return client.messages.create(to=TO, from_=kw.pop("from_", self.LONG_CODE), body=body, **kw)

    def sent_at(self, simulator: TwilioSimulator, sid: str) -> datetime:
        message = simulator.sim.messages[sid]
        return next(when for when, status, _ in message.timeline if status == "sending")

    def test_a_long_code_sends_one_segment_a_second(self, client: Client, simulator: TwilioSimulator) -> None:
        first, second, third = (self.create(client) for _ in range(3))
        starts = [self.sent_at(simulator, m.sid) for m in (first, second, third)]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
        assert all(0.9 <= gap <= 1.2 for gap in gaps), gaps
        two_segments = self.create(client, body="x" * 200)  # 2 segments: takes the sender 2 s
        after = self.create(client)
        gap = (self.sent_at(simulator, after.sid) - self.sent_at(simulator, two_segments.sid)).total_seconds()
        assert 1.9 <= gap <= 2.3
        backlog = requests.get(f"{simulator.origin}/_sim/senders").json()["senders"][self.LONG_CODE]
        assert backlog["rate"] == 1.0 and backlog["backlog_seconds"] > 4

    def test_a_message_that_would_outwait_its_validity_fails_30001(
        self, client: Client, simulator: TwilioSimulator
    ) -> None:
        requests.post(
            f"{simulator.origin}/_sim/senders", json={"sender": self.LONG_CODE, "rate": 0.1}
        ).raise_for_status()
        kept = self.create(client)  # takes the sender 10 s
        overflowing = self.create(client, validity_period=5)
        assert overflowing.status == "queued"  # accepted; it fails when its validity runs out
        simulator.sim.clock.advance(6)
        assert client.messages(overflowing.sid).fetch().error_code == 30001
        assert client.messages(overflowing.sid).fetch().status == "failed"
        assert client.messages(kept.sid).fetch().status != "failed"
        assert requests.get(f"{simulator.origin}/_sim/senders").json()["senders"][self.LONG_CODE]["overflows"] == 1

    def test_default_rates_by_sender_type(self) -> None:
        from local.twilio_sim.core import default_sender_rate

        assert default_sender_rate("+15551230000") == 1.0  # long code
        assert default_sender_rate("+18885550100") == 3.0  # toll-free
        assert default_sender_rate("24680") == 100.0  # short code
        assert default_sender_rate("MG" + "0" * 32, pool_size=4) == 4.0  # a service pools its numbers
        assert default_sender_rate("+15005550006") is None  # Twilio's test numbers queue nothing


def test_a_multipart_create_is_taken_as_twilio_takes_it(simulator: TwilioSimulator) -> None:
    """SAS CI360's published Lambda posts multipart/form-data."""
    url = f"{simulator.base_url}/Accounts/{ACCOUNT_SID}/Messages.json"
    fields = {"To": (None, TO), "From": (None, FROM), "Body": (None, "Hello from CI360 & co")}
    answer = requests.post(url, files=fields, auth=(ACCOUNT_SID, AUTH_TOKEN))
    assert answer.status_code == 201, answer.text
    assert (answer.json()["to"], answer.json()["body"]) == (TO, "Hello from CI360 & co")


class TestListing:
    def test_filters_and_pages(self, client: Client, simulator: TwilioSimulator) -> None:
        for i in range(5):
            client.messages.create(to=TO, from_=FROM, body=f"m{i}")
        client.messages.create(to="+15550000000", from_=FROM, body="other")
        page = client.messages.page(to=TO, page_size=2)
        assert [m.body for m in page] == ["m4", "m3"]
        assert [m.body for m in client.messages.list(to=TO, page_size=2)] == ["m4", "m3", "m2", "m1", "m0"]

    def test_date_sent_filters_only_sent_messages(self, client: Client, simulator: TwilioSimulator) -> None:
        client.messages.create(to=TO, from_=FROM, body="x")
        today = simulator.sim.clock.now().date()
        assert client.messages.list(to=TO, date_sent=today) == []  # still queued: no date_sent yet
        simulator.sim.clock.advance(10)
        assert len(client.messages.list(to=TO, date_sent=today)) == 1
        assert len(client.messages.list(to=TO, date_sent_after=today - timedelta(days=1))) == 1
        assert client.messages.list(to=TO, date_sent_before=today - timedelta(days=1)) == []


class TestControlApi:
    def test_scenarios_creates_and_counts_over_http(self, simulator: TwilioSimulator, client: Client) -> None:
        control = simulator.origin + "/_sim"
        assert requests.post(f"{control}/scenarios", json={"to": TO, "scenario": "failed", "error_code": 30001}).ok
        sid = client.messages.create(to=TO, from_=FROM, body="dup").sid
        client.messages.create(to=TO, from_=FROM, body="dup")
        counts = requests.get(f"{control}/creates").json()["counts"]
        assert counts == [{"to": TO, "body": "dup", "count": 2}]
        assert requests.get(f"{control}/messages/{sid}").json()["final_status"] == "failed"
        assert requests.post(f"{control}/faults", json={"kind": "429"}).ok
        assert requests.delete(f"{control}/faults").ok
        assert requests.post(f"{control}/clock/advance", json={"seconds": 5}).ok
        assert (
            requests.post(f"{control}/inbound", json={"from": TO, "to": FROM, "body": "HELP"}).json()["opt_out_type"]
            == "HELP"
        )

    def test_fetches_are_counted_per_message(self, simulator: TwilioSimulator, client: Client) -> None:
        sid = client.messages.create(to=TO, from_=FROM, body="x").sid
        client.messages(sid).fetch()
        client.messages(sid).fetch()
        assert simulator.sim.truth(sid)["fetches"] == 2


def test_runs_on_its_own_and_accepts_only_its_credentials() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local.twilio_sim",
            "--port",
            "0",
            "--account-sid",
            ACCOUNT_SID,
            "--auth-token",
            AUTH_TOKEN,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        base_url = first.rsplit(" ", 1)[1].strip()
        url = f"{base_url}/Accounts/{ACCOUNT_SID}/Messages.json"
        assert (
            requests.post(
                url, data={"To": TO, "From": FROM, "Body": "x"}, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5
            ).status_code
            == 201
        )
        assert (
            requests.post(
                url, data={"To": TO, "From": FROM, "Body": "x"}, auth=(ACCOUNT_SID, "other"), timeout=5
            ).status_code
            == 401
        )
    finally:
        process.terminate()
        process.wait(timeout=10)

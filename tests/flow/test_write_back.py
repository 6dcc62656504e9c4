"""What became of a message reaches each platform in its own language, checked as the platform would check
it: Twilio's form with RequestValidator and the front-door token (CleverTap), Swrve's event names and
fields, Tealium's collect JSON, CI360's event with its JWT verified by PyJWT with the client secret."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import jwt
import pytest
import requests
from twilio.request_validator import RequestValidator

from local.stack import LocalStack, StackConfig
from tests.receiver import Receiver

KEY = "write-back-test-key"
FROM = "+15005550006"
CI360_SECRET = base64.b64encode(b"the ci360 client secret: 32 bytes").decode()


class Platforms:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        assert stack.simulator is not None
        self.sim = stack.simulator.sim
        self.receiver = Receiver()
        self.headers = {"x-api-key": KEY, "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        data = None if body is None else json.dumps(body)
        return requests.request(method, f"{self.stack.api_url}{path}", data=data, headers=self.headers, timeout=10)

    def connect(self, name: str, write_back: dict[str, Any], **extra: Any) -> requests.Response:
        body = {"account_sid": self.stack.config.account_sid, "auth_token": self.stack.config.auth_token}
        answer = self.call(
            "PUT", f"/connections/{name}", {**body, "from_numbers": [FROM], "write_back": write_back, **extra}
        )
        assert answer.status_code in (200, 201), answer.text
        return answer

    def until(self, path: str, text: str, timeout: float = 20) -> list[dict[str, Any]]:
        """What reached `path` once one of its requests holds `text` (the last event awaited)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [r for r in self.receiver.requests if r["path"] == path]
            if any(text in r["body"] for r in got):
                return got
            time.sleep(0.1)
        raise AssertionError(f"{path}: nothing with {text!r} in {[r['body'] for r in self.receiver.requests]}")

    def arrived(self, path: str, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [r for r in self.receiver.requests if r["path"] == path]
            if len(got) >= count:
                return got
            time.sleep(0.1)
        raise AssertionError(f"{path}: {len([r for r in self.receiver.requests if r['path'] == path])} of {count}")


@pytest.fixture(scope="module")
def platforms() -> Iterator[Platforms]:
    config = StackConfig(stage="wb", api_key=KEY, time_scale=20, retry_interval_ms=1000, retry_attempts=3)
    with LocalStack(config) as stack:
        p = Platforms(stack)
        yield p
        p.receiver.server.shutdown()


@pytest.fixture(autouse=True)
def _keep_the_stack_wiring(platforms: Platforms) -> None:
    platforms.stack.rewire()


def test_clevertap_gets_twilios_own_callbacks_and_the_reply_signed_with_the_facade_token(platforms: Platforms) -> None:
    url = f"{platforms.receiver.url}/clevertap/status"
    inbound = f"{platforms.receiver.url}/clevertap/inbound"
    made = platforms.connect(
        "clevertap", {"format": "twilio", "url": url, "options": {"inbound_url": inbound}}, facade=True
    )
    token = made.json()["facade"]["auth_token"]
    sent = platforms.call("POST", "/messages", {"to": "+15550600001", "body": "hi", "connection": "clevertap"}).json()
    callbacks = platforms.arrived("/clevertap/status", 1)
    deadline = time.monotonic() + 10
    while "MessageStatus=delivered" not in "".join(c["body"] for c in callbacks) and time.monotonic() < deadline:
        time.sleep(0.1)
        callbacks = platforms.arrived("/clevertap/status", 1)
    validator = RequestValidator(token)
    forms = [dict(parse_qsl(c["body"], keep_blank_values=True)) for c in callbacks]
    assert all(
        validator.validate(url, f, c["headers"]["X-Twilio-Signature"]) for f, c in zip(forms, callbacks, strict=True)
    )
    # one per change after the first (queued); `sent` is skipped only if `delivered` overtook it
    assert [f["MessageStatus"] for f in forms if f["MessageStatus"] == "delivered"] == ["delivered"]
    assert {f["MessageStatus"] for f in forms} <= {"sent", "delivered"}
    assert {f["MessageSid"] for f in forms} == {sent["id"]} and forms[0]["To"] == "+15550600001"
    platforms.sim.inbound("+15550600001", FROM, "Thanks!")
    (reply,) = platforms.arrived("/clevertap/inbound", 1)
    form = dict(parse_qsl(reply["body"], keep_blank_values=True))
    assert validator.validate(inbound, form, reply["headers"]["X-Twilio-Signature"])
    assert (form["Body"], form["From"], form["SmsStatus"]) == ("Thanks!", "+15550600001", "received")


def test_swrve_gets_its_integrations_event_names_and_black_listed_error_on_stop(platforms: Platforms) -> None:
    url = f"{platforms.receiver.url}/swrve/1/event"
    platforms.connect("swrve", {"format": "swrve", "url": url, "options": {"app_id": "321"}, "secret": "swrve-api-key"})
    platforms.sim.set_scenario("+15550600003", "undelivered", 30003)
    for to, user in (("+15550600002", "u-2"), ("+15550600003", "u-3")):
        body = {"to": to, "body": "hi", "connection": "swrve", "metadata": {"swrve_user_id": user}}
        assert platforms.call("POST", "/messages", body).status_code == 202
    platforms.until("/swrve/1/event", "Undelivered")
    events = [dict(parse_qsl(r["body"])) for r in platforms.until("/swrve/1/event", "user=u-2&name=Delivered")]
    assert all(e["api_key"] == "swrve-api-key" and e["app_version"] for e in events)
    by_user = {u: sorted(e["name"] for e in events if e["user"] == u) for u in ("u-2", "u-3")}
    assert {"Queued", "Delivered"} <= set(by_user["u-2"]) <= {"Queued", "Sent", "Delivered"}
    assert set(by_user["u-3"]) >= {"Queued", "Undelivered"}
    platforms.sim.inbound("+15550600002", FROM, "STOP")
    deadline = time.monotonic() + 10
    stops: list[dict[str, str]] = []
    while not stops and time.monotonic() < deadline:
        time.sleep(0.1)
        latest = [dict(parse_qsl(r["body"])) for r in platforms.arrived("/swrve/1/event", 1)]
        stops = [e for e in latest if e["name"] == "black_listed_error"]
    assert [e["user"] for e in stops] == ["u-2"]


def test_tealium_gets_one_collect_event_per_change_with_the_visitor_id(platforms: Platforms) -> None:
    url = f"{platforms.receiver.url}/tealium/event"
    options = {"account": "acme", "profile": "main", "datasource": "ds1"}
    platforms.connect("tealium", {"format": "tealium", "url": url, "options": options})
    body = {"to": "+15550600004", "body": "hi", "connection": "tealium", "metadata": {"tealium_visitor_id": "v-9"}}
    sent = platforms.call("POST", "/messages", body).json()
    events = [json.loads(r["body"]) for r in platforms.until("/tealium/event", "sms_delivered")]
    assert (
        {"sms_queued", "sms_delivered"}
        <= {e["tealium_event"] for e in events}
        <= {"sms_queued", "sms_sent", "sms_delivered"}
    )
    assert all(e["tealium_account"] == "acme" and e["tealium_profile"] == "main" for e in events)
    assert {(e["tealium_visitor_id"], e["message_id"]) for e in events} == {("v-9", sent["id"])}


def test_ci360_gets_its_events_with_a_jwt_signed_by_the_client_secret(platforms: Platforms) -> None:
    gateway = f"{platforms.receiver.url}/ci360"
    platforms.connect(
        "ci360", {"format": "ci360", "url": gateway, "options": {"tenant": "t-42"}, "secret": CI360_SECRET}
    )
    metadata = {"datahub_id": "dh-7", "response_tracking_code": "rtc-1"}
    body = {"to": "+15550600005", "body": "hi", "connection": "ci360", "metadata": metadata}
    assert platforms.call("POST", "/messages", body).status_code == 202
    events = platforms.until("/ci360/marketingGateway/events", '"delivered"')
    for event in events:
        token = event["headers"]["Authorization"].removeprefix("Bearer ")
        claims = jwt.decode(token, base64.b64decode(CI360_SECRET), algorithms=["HS256"])  # as CI360 checks it
        assert claims == {"clientID": "t-42"}
    bodies = [json.loads(e["body"]) for e in events]
    assert {(b["datahub_id"], b["response_tracking_code"]) for b in bodies} == {("dh-7", "rtc-1")}
    assert {"queued", "delivered"} <= {b["status"] for b in bodies if b["eventName"] == "sms_status"}
    platforms.sim.inbound("+15550600005", FROM, "Call me")
    deadline = time.monotonic() + 10
    replies: list[dict[str, Any]] = []
    while not replies and time.monotonic() < deadline:
        time.sleep(0.1)
        latest = [json.loads(e["body"]) for e in platforms.arrived("/ci360/marketingGateway/events", 1)]
        replies = [b for b in latest if b["eventName"] == "sms_reply"]
    assert [(r["reply"], r["datahub_id"], r["response_tracking_code"]) for r in replies] == [
        ("Call me", "dh-7", "rtc-1")
    ]


def test_a_platform_refusing_with_a_4xx_is_noted_on_the_message_not_retried(platforms: Platforms) -> None:
    platforms.receiver.status_for["/refuses/event"] = 400
    url = f"{platforms.receiver.url}/refuses/event"
    platforms.connect("refuses", {"format": "tealium", "url": url, "options": {"account": "a", "profile": "p"}})
    body = {"to": "+15550600006", "body": "hi", "connection": "refuses", "metadata": {"tealium_visitor_id": "v"}}
    sent = platforms.call("POST", "/messages", body).json()
    platforms.call("GET", f"/messages/{sent['id']}")
    deadline = time.monotonic() + 10
    while platforms.call("GET", f"/messages/{sent['id']}").json()["status"] != "delivered":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1)
    seen = len(platforms.arrived("/refuses/event", 2))
    time.sleep(2)  # Lambda's retries (0.5 s and 1 s apart here) would have come by now
    assert len(platforms.arrived("/refuses/event", 2)) == seen  # each event once: a 400 is not retried
    record = platforms.call("GET", f"/messages/{sent['id']}").json()
    assert record["status"] == "delivered"
    stored = platforms.stack.dynamodb.get_item(
        TableName=platforms.stack.tables["MessagesTable"], Key={"id": {"S": sent["id"]}}
    )["Item"]
    assert stored["write_back_error"]["S"] == "tealium write-back answered 400"


def test_a_request_may_choose_another_format_than_its_connections(platforms: Platforms) -> None:
    hook = f"{platforms.receiver.url}/own/hook"
    body = {"to": "+15550600007", "body": "hi", "connection": "tealium", "write_back": "json", "status_callback": hook,
            "metadata": {"tealium_visitor_id": "v-0"}}  # fmt: skip
    sent = platforms.call("POST", "/messages", body).json()
    forwarded = [json.loads(r["body"]) for r in platforms.arrived("/own/hook", 3)]
    assert {f["id"] for f in forwarded} == {sent["id"]}
    assert not [r for r in platforms.receiver.requests if sent["id"] in r["body"] and r["path"] == "/tealium/event"]


def test_make_run_demo_shows_what_each_platform_receives(
    platforms: Platforms, capsys: pytest.CaptureFixture[str]
) -> None:
    from local import run

    run._demo_write_back(platforms.stack)
    shown = capsys.readouterr().out
    for expected in ("clevertap <- SmsSid=", "swrve     <- api_key=", "tealium   <- {\"tealium_account\"",
                     "ci360     <- {\"eventName\"", "json      <- {\"id\""):  # fmt: skip
        assert expected in shown, shown


def test_a_requests_own_status_callback_wins_over_its_connections_write_back(platforms: Platforms) -> None:
    """Asked at the request, heard at the request's URL: the connector's JSON (or Twilio's form for a
    front-door create), not the connection's platform format."""
    options = {"account": "acme", "profile": "main"}
    platforms.connect(
        "tealium2", {"format": "tealium", "url": f"{platforms.receiver.url}/t2/event", "options": options}
    )
    hook = f"{platforms.receiver.url}/mine/hook"
    body = {"to": "+15550600008", "body": "hi", "connection": "tealium2", "status_callback": hook}
    sent = platforms.call("POST", "/messages", body).json()
    forwarded = [json.loads(r["body"]) for r in platforms.until("/mine/hook", '"delivered"')]
    assert {f["id"] for f in forwarded} == {sent["id"]}
    assert not [r for r in platforms.receiver.requests if r["path"] == "/t2/event"]

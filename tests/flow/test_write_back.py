"""What became of a message reaches each platform in its own language, checked as the platform would check
it: Twilio's form with RequestValidator and the front-door token, its SIDs against Twilio's spec (CleverTap),
Swrve's event names and fields, Tealium's collect JSON with a known visitor attribute and v3's bearer token,
CI360's events with the JWT verified as SAS's own send_event.py signs it, and what a refusal shows."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import jwt
import pytest
import requests
from twilio.request_validator import RequestValidator

from local.stack import LocalStack, StackConfig
from tests import MESSAGE_SID
from tests.receiver import Receiver

KEY = "write-back-test-key"
FROM = "+15005550006"
CI360_SECRET = "Zm9yIHRlc3Rpbmcgb25seTogbm90IGEgcmVhbCBzZWNy"  # as CI360 shows a client secret: 44 characters


def ci360_gateway(secret: str) -> Any:
    """CI360's gateway as far as the connector meets it: the bearer JWT must verify with the key SAS's own
    clients sign with (sassoftware/ci360-extensions, code/ci360-connector-templates/java/code/scripts/
    send_event.py: `b64encode(bytes(CI360_CLIENT_SECRET, encoding='utf8'))`), else 401."""

    def check(request: dict[str, Any]) -> tuple[int, Any]:
        token = request["headers"].get("Authorization", "").removeprefix("Bearer ")
        try:
            jwt.decode(token, base64.b64encode(bytes(secret, encoding="utf8")), algorithms=["HS256"])
        except jwt.InvalidTokenError:
            return 401, {"message": "Unauthorized"}
        return 200, ({"agentName": "connector", "type": "general"} if request["method"] == "GET" else None)

    return check


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

    def until(self, path: str, text: str, timeout: float = 60) -> list[dict[str, Any]]:
        """What reached `path` once one of its requests holds `text` (the last event awaited)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [r for r in self.receiver.requests if r["path"] == path]
            if any(text in r["body"] for r in got):
                return got
            time.sleep(0.1)
        raise AssertionError(f"{path}: nothing with {text!r} in {[r['body'] for r in self.receiver.requests]}")

    def arrived(self, path: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
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
    # a message sent through our own API too is named as Twilio names messages, the same in every callback
    (sid,) = {f["MessageSid"] for f in forms} | {f["SmsSid"] for f in forms}
    assert re.match(MESSAGE_SID, sid) and forms[0]["To"] == "+15550600001"
    assert platforms.call("GET", f"/messages/{sent['id']}").json()["sid"] == sid
    delivered = next(f for f in forms if f["MessageStatus"] == "delivered")
    assert re.fullmatch(r"\d{10}", delivered["RawDlrDoneDate"])  # Twilio's, forwarded (YYMMDDhhmm)
    platforms.sim.inbound("+15550600001", FROM, "Thanks!")
    (reply,) = platforms.arrived("/clevertap/inbound", 1)
    form = dict(parse_qsl(reply["body"], keep_blank_values=True))
    assert validator.validate(inbound, form, reply["headers"]["X-Twilio-Signature"])
    assert (form["Body"], form["From"], form["SmsStatus"]) == ("Thanks!", "+15550600001", "received")
    # Twilio's whole incoming-message form (twilio.com/docs/messaging/guides/webhook-request), empty ones too
    geographic = ("FromCity", "FromState", "FromZip", "FromCountry", "ToCity", "ToState", "ToZip", "ToCountry")
    assert {name: form[name] for name in geographic} == {
        "FromCity": "", "FromState": "NY", "FromZip": "", "FromCountry": "US",
        "ToCity": "", "ToState": "CA", "ToZip": "", "ToCountry": "US",
    }  # fmt: skip
    assert re.match(MESSAGE_SID, form["MessageSid"]) and form["NumMedia"] == "0" and form["NumSegments"] == "1"


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


def test_tealium_v3_gets_the_known_visitor_attribute_with_a_bearer_token_from_its_key(platforms: Platforms) -> None:
    """AudienceStream knows a visitor by a known visitor ID attribute such as email_address_hash
    (docs.tealium.com/platforms/http-api/endpoint, "Visitor identifiers"); the authenticated Collect API v3
    takes `Authorization: Bearer` with a token exchanged for the username and API key
    (docs.tealium.com/api/v3/getting-started/authentication, .../api/v3/http-api/endpoints)."""
    issued = "tealium-jwt-1"

    def auth(request: dict[str, Any]) -> tuple[int, Any]:
        form = dict(parse_qsl(request["body"]))
        if request["headers"].get("Content-Type") != "application/x-www-form-urlencoded":
            return 400, None
        ok = form == {"username": "ops@acme.example", "key": "tealium-api-key"}
        return (200, {"token": issued, "host": "us-east-1-platform.tealiumapis.com"}) if ok else (401, None)

    def collect(request: dict[str, Any]) -> tuple[int, Any]:
        return (200, None) if request["headers"].get("Authorization") == f"Bearer {issued}" else (401, None)

    platforms.receiver.responders["/tealium3/auth"] = auth
    platforms.receiver.responders["/tealium3/v3/collect/event"] = collect
    write_back = {
        "format": "tealium",
        "url": f"{platforms.receiver.url}/tealium3/v3/collect/event",
        "options": {"account": "acme", "profile": "main", "api": "v3", "username": "ops@acme.example",
                    "auth_url": f"{platforms.receiver.url}/tealium3/auth"},
        "attributes": {"email_address_hash": "email_sha256"},
        "secret": "tealium-api-key",
    }  # fmt: skip
    platforms.connect("tealium3", write_back)
    metadata = {"email_sha256": "9f86d081884c7d65"}
    body = {"to": "+15550600009", "body": "hi", "connection": "tealium3", "metadata": metadata}
    sent = platforms.call("POST", "/messages", body).json()
    got = platforms.until("/tealium3/v3/collect/event", "sms_delivered")
    events = [json.loads(r["body"]) for r in got]
    assert {e["email_address_hash"] for e in events} == {"9f86d081884c7d65"}
    assert all("tealium_visitor_id" not in e and e["message_id"] == sent["id"] for e in events)
    assert len([r for r in platforms.receiver.requests if r["path"] == "/tealium3/auth"]) == 1  # reused
    assert platforms.call("GET", f"/messages/{sent['id']}").json().get("write_back_error") is None
    assert platforms.call("POST", "/connection/test", {"connection": "tealium3"}).json()["checks"][-1] == {
        "check": "write_back", "ok": True, "detail": "Tealium accepted the connector's credentials"
    }  # fmt: skip


def test_ci360_gets_one_event_per_outcome_with_a_jwt_its_gateway_accepts(platforms: Platforms) -> None:
    platforms.receiver.responders["/ci360/marketingGateway/events"] = ci360_gateway(CI360_SECRET)
    platforms.receiver.responders["/ci360/marketingGateway/configuration"] = ci360_gateway(CI360_SECRET)
    options = {"tenant": "t-42", "identity": "customer_id", "event_delivered": "SMS_Delivered"}
    gateway = f"{platforms.receiver.url}/ci360"
    platforms.connect("ci360", {"format": "ci360", "url": gateway, "options": options, "secret": CI360_SECRET})
    metadata = {"customer_id": "C-7", "response_tracking_code": "rtc-1", "external_code": "TSK_9"}
    body = {"to": "+15550600005", "body": "hi", "connection": "ci360", "metadata": metadata}
    sent = platforms.call("POST", "/messages", body).json()
    events = platforms.until("/ci360/marketingGateway/events", "SMS_Delivered")
    assert all(e["headers"]["Authorization"].startswith("Bearer ") for e in events)
    bodies = [json.loads(e["body"]) for e in events]
    assert {(b["customer_id"], b["externalCode"], b["response_tracking_code"]) for b in bodies} == {
        ("C-7", "TSK_9", "rtc-1")
    }
    assert (
        {"sms_queued", "SMS_Delivered"}
        <= {b["eventName"] for b in bodies}
        <= {"sms_queued", "sms_sent", "SMS_Delivered"}
    )
    assert platforms.call("GET", f"/messages/{sent['id']}").json().get("write_back_error") is None  # all accepted
    platforms.sim.inbound("+15550600005", FROM, "Call me")
    deadline = time.monotonic() + 10
    replies: list[dict[str, Any]] = []
    while not replies and time.monotonic() < deadline:
        time.sleep(0.1)
        latest = [json.loads(e["body"]) for e in platforms.arrived("/ci360/marketingGateway/events", 1)]
        replies = [b for b in latest if b["eventName"] == "sms_reply"]
    assert [(r["reply"], r["customer_id"], r["response_tracking_code"]) for r in replies] == [
        ("Call me", "C-7", "rtc-1")
    ]
    test = platforms.call("POST", "/connection/test", {"connection": "ci360"}).json()
    assert test["checks"][-1] == {
        "check": "write_back",
        "ok": True,
        "detail": "CI360 accepted the connector's credentials",
    }


def test_a_ci360_gateway_refusing_the_token_shows_on_the_message_the_status_page_and_the_connection_test(
    platforms: Platforms,
) -> None:
    platforms.receiver.responders["/ci360b/marketingGateway/events"] = ci360_gateway("the tenant's real secret")
    platforms.receiver.responders["/ci360b/marketingGateway/configuration"] = ci360_gateway("the tenant's real secret")
    gateway = f"{platforms.receiver.url}/ci360b"
    write_back = {"format": "ci360", "url": gateway, "options": {"tenant": "t-1"}, "secret": CI360_SECRET}
    platforms.connect("ci360b", write_back)
    body = {"to": "+15550600010", "body": "hi", "connection": "ci360b", "metadata": {"datahub_id": "dh-1"}}
    sent = platforms.call("POST", "/messages", body).json()
    deadline = time.monotonic() + 20
    while (record := platforms.call("GET", f"/messages/{sent['id']}").json()).get("write_back_status") is None:
        assert time.monotonic() < deadline, record
        time.sleep(0.1)
    assert record["write_back_status"] == "credentials_refused"
    assert record["write_back_error"].startswith("ci360 refused the connector's credentials (401)")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    stats = platforms.call("GET", f"/stats?from={today}&to={today}").json()
    assert stats["write_back_refused"].get("ci360b:credentials_refused", 0) >= 1
    answer = platforms.call("POST", "/connection/test", {"connection": "ci360b"})
    assert answer.status_code == 502
    check = answer.json()["checks"][-1]
    assert check["check"] == "write_back" and not check["ok"]
    assert check["detail"].startswith("CI360 refused the credentials (401): check the connection's options.tenant")


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
    # A retry could only come from the forward queue (what the outbox parks) or the stream (a batch handed
    # back): wait until the refusal is noted, the stream is read and the queue holds nothing, then count.
    stack, sqs = platforms.stack, platforms.stack.sqs
    deadline = time.monotonic() + 20
    while True:
        noted = platforms.call("GET", f"/messages/{sent['id']}").json().get("write_back_status") == "refused"
        queue = sqs.get_queue_attributes(QueueUrl=stack.queues["ForwardQueue"], AttributeNames=["All"])["Attributes"]
        waiting = int(queue["ApproximateNumberOfMessages"]) + int(queue["ApproximateNumberOfMessagesNotVisible"])
        if noted and not stack.outbox.pending and waiting == 0:
            break
        assert time.monotonic() < deadline, (noted, stack.outbox.pending, waiting)
        time.sleep(0.1)
    bodies = [r["body"] for r in platforms.receiver.requests if r["path"] == "/refuses/event"]
    assert bodies and len(bodies) == len(set(bodies)), bodies  # each event once: a 400 is not retried
    record = platforms.call("GET", f"/messages/{sent['id']}").json()
    assert record["status"] == "delivered"
    assert (record["write_back_error"], record["write_back_status"]) == ("tealium write-back answered 400", "refused")


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
    for expected in ("clevertap <- SmsSid=SM", "swrve     <- api_key=", "tealium   <- {\"customer_id\": \"C-1001\"",
                     "tealium3  <- (token exchange)", "tealium3  <- [Bearer demo-token] {\"email_address_hash\"",
                     "ci360     <- {\"eventName\": \"sms_queued\", \"customer_id\": \"C-1001\", \"externalCode\"",
                     "json      <- {\"id\""):  # fmt: skip
        assert expected in shown, shown
    assert "JWT refused" not in shown  # the stand-in gateway verifies it as SAS signs it


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

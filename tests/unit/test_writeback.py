"""The write-back builders and the forwarder's rules, without a network: names, identities, JWTs, pacing."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import jwt
import pytest
import requests

from chalicelib.adapters.writeback import ci360, swrve, tealium, twilio_form
from chalicelib.domain import events, outbox, rules
from chalicelib.domain.connection import ConnectionSettings, WriteBack
from chalicelib.domain.pacing import Reservation
from chalicelib.domain.writeback import ForwardFailed, NotDeliverable
from chalicelib.usecases.forward import Forwarder
from tests import MESSAGE_SID
from tests.fakes import InMemoryLedger, OpenLine, make_forwarder

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SWRVE = WriteBack("swrve", None, {"app_id": "123", "region": "eu"})


@pytest.mark.parametrize(
    ("detail_type", "detail", "name"),
    [
        (events.STATUS_CHANGED, {"status": "queued"}, "Queued"),
        (events.STATUS_CHANGED, {"status": "delivered"}, "Delivered"),
        (events.STATUS_CHANGED, {"status": "error", "error_code": 21211}, "Failed"),
        (events.STATUS_CHANGED, {"status": "error", "error_code": 21610}, "black_listed_error"),
        (events.OPTED_OUT, {"phone": "+15551234567"}, "black_listed_error"),
        (events.STATUS_CHANGED, {"status": "accepted"}, None),  # Swrve's integration has no such event
        (events.REPLY_RECEIVED, {"body": "hi"}, None),
    ],
)
def test_swrve_events_are_named_as_swrves_twilio_integration_names_them(
    detail_type: str, detail: dict[str, Any], name: str | None
) -> None:
    request = swrve.swrve(detail_type, {**detail, "metadata": {"swrve_user_id": "u1"}}, SWRVE, "k")
    if name is None:
        assert request is None
        return
    assert request is not None and request.url == "https://123.eu-api.swrve.com/1/event"
    form = dict(parse_qsl(request.body))
    assert (form["name"], form["user"], form["api_key"]) == (name, "u1", "k")


def test_without_the_platforms_id_for_the_recipient_nothing_is_sent_and_it_says_which_field() -> None:
    with pytest.raises(NotDeliverable, match=r"metadata\.swrve_user_id"):
        swrve.swrve(events.STATUS_CHANGED, {"status": "sent"}, SWRVE, "k")


# What CI360 shows as a tenant's client secret: 44 characters (SAS's API helper refuses shorter ones).
CI360_SECRET = "Zm9yIHRlc3Rpbmcgb25seTogbm90IGEgcmVhbCBzZWNy"
CI360 = WriteBack("ci360", "https://extapigwservice-eu-prod.ci360.sas.com/", {"tenant": "tenant-1"})


def test_the_ci360_token_is_the_one_sass_own_send_event_py_makes() -> None:
    """sassoftware/ci360-extensions, code/ci360-connector-templates/java/code/scripts/send_event.py:
    b64_secret = b64encode(bytes(CI360_CLIENT_SECRET, encoding='utf8'))
    token = jwt.encode({'clientID': CI360_TENANT_ID}, b64_secret, algorithm='HS256')"""
    b64_secret = base64.b64encode(bytes(CI360_SECRET, encoding="utf8"))
    sas_token = jwt.encode({"clientID": "tenant-1"}, b64_secret, algorithm="HS256")
    detail = {"id": "m1", "status": "delivered", "metadata": {"datahub_id": "d1", "rtc": "r1"}}
    request = ci360.ci360(events.STATUS_CHANGED, detail, CI360, CI360_SECRET)
    assert request is not None
    assert request.url == "https://extapigwservice-eu-prod.ci360.sas.com/marketingGateway/events"
    assert request.headers["Authorization"] == f"Bearer {sas_token}"  # byte for byte
    token = request.headers["Authorization"].removeprefix("Bearer ")
    assert jwt.decode(token, b64_secret, algorithms=["HS256"]) == {"clientID": "tenant-1"}  # as the gateway checks
    with pytest.raises(jwt.InvalidSignatureError):  # the key the issue first described, and this code used
        jwt.decode(token, base64.b64decode(CI360_SECRET), algorithms=["HS256"])


def test_ci360_events_name_the_customer_by_the_identity_the_tenant_uses() -> None:
    """SAS's SMS connector makes the identity field configurable (ci360-scg-connector, `identity_field`);
    the API helper offers datahub_id, subject_id, customer_id and login_id."""
    config = WriteBack(CI360.format, CI360.url, {"tenant": "t", "identity": "customer_id"}, {"customer_id": "crm_id"})
    detail = {"id": "m1", "status": "sent", "metadata": {"crm_id": "C-9", "datahub_id": "d1"}}
    request = ci360.ci360(events.STATUS_CHANGED, detail, config, CI360_SECRET)
    body = json.loads(request.body) if request else {}
    assert body["customer_id"] == "C-9" and "datahub_id" not in body
    with pytest.raises(NotDeliverable, match=r"customer_id \(options.identity\) in metadata\.crm_id"):
        ci360.ci360(events.STATUS_CHANGED, {"id": "m2", "status": "sent", "metadata": {}}, config, "s")
    plain = WriteBack(CI360.format, CI360.url, {"tenant": "t", "identity": "subject_id"})
    request = ci360.ci360(events.STATUS_CHANGED, {"status": "sent", "metadata": {"subject_id": 7}}, plain, "s")
    assert request is not None and json.loads(request.body)["subject_id"] == "7"


def test_ci360_gets_one_named_event_per_outcome_with_the_external_code_and_twilios_error_code() -> None:
    """As SAS's SMS connector sends them (ci360-scg-connector webhook: `scg_response_event_<STATE>` names the
    event, `externalCode` carries the outbound task's code)."""
    metadata = {"datahub_id": "d1", "external_code": "TSK_1", "response_tracking_code": "rtc-1"}
    named = WriteBack(CI360.format, CI360.url, {"tenant": "t", "event_delivered": "SMS_DELIVERED", "event_sent": ""})

    def sent(config: WriteBack, detail_type: str, **detail: Any) -> dict[str, Any] | None:
        request = ci360.ci360(detail_type, {"id": "m1", "metadata": metadata, **detail}, config, "s")
        return json.loads(request.body) if request else None

    failed = sent(CI360, events.STATUS_CHANGED, status="undelivered", error_code=30007)
    assert failed is not None and failed["eventName"] == "sms_undelivered"  # the default: one per status
    assert (failed["error_code"], failed["externalCode"], failed["response_tracking_code"]) == (30007, "TSK_1", "rtc-1")
    assert (sent(CI360, events.STATUS_CHANGED, status="error") or {})["eventName"] == "sms_failed"
    assert (sent(named, events.STATUS_CHANGED, status="delivered") or {})["eventName"] == "SMS_DELIVERED"
    assert sent(named, events.STATUS_CHANGED, status="sent") is None  # the connection turned it off
    assert (sent(CI360, events.REPLY_RECEIVED, body="Yes") or {})["eventName"] == "sms_reply"
    assert (sent(CI360, events.OPTED_OUT) or {})["eventName"] == "sms_opt_out"
    before = WriteBack(CI360.format, CI360.url, {"tenant": "t", "event_sms_status": "sms_status"})  # as set before
    assert (sent(before, events.STATUS_CHANGED, status="queued") or {})["eventName"] == "sms_status"


def test_tealium_carries_the_known_visitor_attributes_the_connection_maps() -> None:
    """AudienceStream stitches a visitor by a known visitor ID attribute (docs.tealium.com/platforms/http-api/
    endpoint, "Visitor identifiers"; server-side/visitor-stitching): e.g. email_address_hash or customer_id."""
    config = WriteBack("tealium", None, {"account": "acme", "profile": "main"}, {"customer_id": "crm_id"})
    detail = {"id": "m1", "status": "delivered", "metadata": {"crm_id": "C-9"}}
    body = json.loads(tealium.tealium(events.STATUS_CHANGED, detail, config).body)
    assert (body["customer_id"], body["tealium_event"], body["tealium_account"]) == ("C-9", "sms_delivered", "acme")
    assert "tealium_visitor_id" not in body
    with pytest.raises(NotDeliverable, match=r"metadata\.crm_id"):
        tealium.tealium(events.STATUS_CHANGED, {"id": "m2", "status": "sent", "metadata": {}}, config)
    v3 = WriteBack("tealium", None, {"account": "acme", "profile": "main", "api": "v3", "username": "u@x"})
    request = tealium.tealium(events.STATUS_CHANGED, {**detail, "metadata": {"tealium_visitor_id": "v"}}, v3)
    assert request.url == "https://collect.tealiumiq.com/v3/collect/event"
    exchange = tealium.token_request(v3, "the-api-key")
    assert exchange.url == "https://platform.tealiumapis.com/v3/auth/accounts/acme/profiles/main"
    assert dict(parse_qsl(exchange.body)) == {"username": "u@x", "key": "the-api-key"}


def test_twilios_form_names_every_message_by_a_sid_of_twilios_shape_the_same_in_every_callback() -> None:
    """twilio-oai spec/json/twilio_api_v2010.json: a Message's sid matches ^(SM|MM)[0-9a-fA-F]{32}$."""
    detail = {"id": "msg_0123", "to": "+15551234567", "from": "+15005550006", "account_sid": "AC1"}
    sids = {
        dict(twilio_form.status_callback_form({**detail, "status": s}) or [])["MessageSid"]
        for s in ("sent", "delivered")
    }
    (sid,) = sids
    assert re.match(MESSAGE_SID, sid) and sid.startswith("SM")
    front_door = "SM" + "ab" * 16  # a front-door message's own id is already its sid
    assert (
        dict(twilio_form.status_callback_form({**detail, "id": front_door, "status": "sent"}) or [])["SmsSid"]
        == front_door
    )
    with_media = rules.message_sid("msg_0123", num_media=1)
    assert re.match(MESSAGE_SID, with_media) and with_media.startswith("MM")


def test_twilios_form_skips_the_status_the_create_answered_and_forwards_rawdlrdonedate() -> None:
    detail = {"id": "SM1", "to": "+15551234567", "from": "+15005550006", "account_sid": "AC1", "created_as": "queued"}
    assert twilio_form.status_callback_form({**detail, "status": "queued"}) is None
    assert twilio_form.status_callback_form({**detail, "status": "sending"}) is None
    form = dict(twilio_form.status_callback_form({**detail, "status": "error", "error_code": 30007}) or [])
    assert (form["MessageStatus"], form["SmsStatus"], form["ErrorCode"]) == ("failed", "failed", "30007")
    assert "RawDlrDoneDate" not in form
    delivered = {**detail, "status": "delivered", "raw_dlr_done_date": "2611261200"}
    assert dict(twilio_form.status_callback_form(delivered) or [])["RawDlrDoneDate"] == "2611261200"


def test_a_relayed_reply_carries_twilios_whole_incoming_message_form_even_the_empty_fields() -> None:
    """twilio.com/docs/messaging/guides/webhook-request: FromCity, FromState, FromZip, FromCountry, ToCity,
    ToState, ToZip, ToCountry (when Twilio knows them), NumMedia, NumSegments, MediaUrl<N>."""
    given = {"FromState": "CA", "FromCountry": "US", "NumMedia": "1", "MediaUrl0": "https://m/0"}
    detail = {"twilio_sid": "SM" + "1" * 32, "body": "Yes", "from": "+15551234567", "received_by": "+15005550006",
              "twilio_fields": given}  # fmt: skip
    form = dict(twilio_form.incoming_message_form(detail))
    for name in (*twilio_form.GEOGRAPHIC, "NumMedia", "NumSegments", "SmsMessageSid", "ApiVersion"):
        assert name in form, name
    assert (form["FromState"], form["FromCity"], form["NumMedia"], form["MediaUrl0"]) == ("CA", "", "1", "https://m/0")


class Session:
    def __init__(self) -> None:
        self.posted: list[str] = []

    def post(self, url: str, **kwargs: Any) -> Any:
        self.posted.append(url)
        response = requests.Response()
        response.status_code = 200
        return response


def test_tealium_events_wait_their_turn_at_100_per_second_and_are_retried_when_the_line_is_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr("chalicelib.usecases.forward.time.sleep", slept.append)
    config = WriteBack("tealium", "https://collect.tealiumiq.com/event", {"account": "acme", "profile": "main"})
    connection = ConnectionSettings("t", "s", write_back=config)
    pace = OpenLine(Reservation(0.25, NOW), Reservation(0, None, 3.0))
    session = Session()
    forwarder = make_forwarder(
        session, "k", connections={"t": connection}, pace=pace, resolver=lambda host: ["93.184.216.34"]
    )
    detail = {"id": "m1", "status": "sent", "connection": "t", "write_back": "tealium", "metadata": {"visitor_id": "v"}}
    assert forwarder.forward(detail) == 200 and slept == [0.25]
    with pytest.raises(ForwardFailed, match="100 requests/s"):
        forwarder.forward(detail)
    assert pace.keys == ["tealium:acme@100/s", "tealium:acme@100/s"] and len(session.posted) == 1


class Platform:
    """A session standing in for a platform: answers each URL with the statuses (and JSON) queued for it."""

    def __init__(self, answers: dict[str, list[tuple[int, Any]]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def post(self, url: str, **kwargs: Any) -> Any:
        self.calls.append((url, kwargs))
        assert kwargs.get("allow_redirects") is False  # a 3xx to a private address would skip the address check
        status, body = self.answers[url].pop(0) if len(self.answers[url]) > 1 else self.answers[url][0]
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(body).encode() if body is not None else b""
        return response


def _forwarder(session: Any, write_back: WriteBack, secret: str) -> tuple[Forwarder, Any]:
    ledger = InMemoryLedger()
    ledger.create_pending("m1", {"to": "+15551234567", "connection": "c"}, NOW)
    forwarder = make_forwarder(
        session,
        "k",
        connections={"c": ConnectionSettings("c", "s", write_back=write_back)},
        secrets=lambda connection: secret,
        ledger=ledger,
        resolver=lambda host: ["93.184.216.34"],
    )
    return forwarder, ledger


def test_a_gateway_refusing_the_ci360_token_is_counted_and_shown_on_the_message_not_retried_quietly() -> None:
    platform = Platform({CI360.url.rstrip("/") + "/marketingGateway/events": [(401, None)]})  # type: ignore[union-attr]
    forwarder, ledger = _forwarder(platform, CI360, CI360_SECRET)
    detail = {"id": "m1", "status": "sent", "connection": "c", "write_back": "ci360", "metadata": {"datahub_id": "d"}}
    before = dict(ledger.items["m1"])
    assert forwarder.forward(detail) == 401  # answered, not raised: a retry would be refused alike
    record = ledger.get("m1").public()
    assert record["write_back_status"] == "credentials_refused"
    assert "ci360 refused the connector's credentials (401)" in record["write_back_error"]
    assert "options.tenant" in record["write_back_error"] and "POST /connection/test" in record["write_back_error"]
    change = outbox.derive(before, ledger.items["m1"], NOW)  # the note is what the status page counts
    assert change is not None and change.counters == ("writeback#c:credentials_refused",) and not change.events


def test_tealium_v3_exchanges_its_key_once_and_sends_each_event_with_the_bearer_token() -> None:
    """docs.tealium.com/api/v3/getting-started/authentication: POST username and key for a JWT valid 30
    minutes, to be reused ("Do not generate a new bearer token for every call")."""
    v3 = WriteBack("tealium", None, {"account": "acme", "profile": "main", "api": "v3", "username": "u@x"})
    auth = "https://platform.tealiumapis.com/v3/auth/accounts/acme/profiles/main"
    platform = Platform({auth: [(200, {"token": "tok-1", "host": "us-east-1-platform.tealiumapis.com"})],
                         tealium.V3_URL: [(200, None)]})  # fmt: skip
    forwarder, _ = _forwarder(platform, v3, "api-key")
    detail = {"id": "m1", "status": "sent", "connection": "c", "write_back": "tealium", "metadata": {"visitor_id": "v"}}
    assert forwarder.forward(detail) == 200 and forwarder.forward(detail) == 200
    assert [url for url, _ in platform.calls] == [auth, tealium.V3_URL, tealium.V3_URL]
    assert all(kw["headers"]["Authorization"] == "Bearer tok-1" for url, kw in platform.calls[1:])
    # a token revoked before its time: one new exchange and one more try, then it is the credentials
    platform.answers[tealium.V3_URL] = [(401, None)]
    forwarder.forward(detail)
    assert [url for url, _ in platform.calls[3:]] == [tealium.V3_URL, auth, tealium.V3_URL]


def test_the_json_write_back_is_as_it_was_whatever_the_events_now_carry() -> None:
    """The connector's own JSON is its receivers' contract: the fields added to events for the platforms
    (the Twilio-shaped sid, RawDlrDoneDate, Twilio's inbound fields, an opt-out's message) stay out of it."""
    from chalicelib.domain.events import status_detail
    from chalicelib.domain.ledger import MessageRecord

    item = {"id": "m1", "status": "delivered", "to": "+15551234567", "from": "+15005550006", "twilio_sid": "SM1",
            "raw_dlr_done_date": "2612031200", "status_callback": "https://hooks.example.com/x", "metadata": {"k": "v"},
            "events": [{"status": "delivered", "at": "2026-12-03T12:00:00.000Z", "source": "callback"}]}  # fmt: skip
    detail = status_detail(MessageRecord(item))
    assert detail["sid"].startswith("SM") and detail["raw_dlr_done_date"] == "2612031200"
    platform = Platform({"https://hooks.example.com/x": [(200, None)]})
    forwarder, _ = _forwarder(platform, WriteBack("json"), "")
    assert forwarder.forward(detail, now=0) == 200
    sent = json.loads(platform.calls[0][1]["data"])
    assert set(sent) == {"id", "status", "error_code", "error_message", "twilio_sid", "to", "from",
                         "messaging_service_sid", "source", "at", "metadata"}  # fmt: skip
    opt_out = {"phone": "+15551234567", "senders": ["+15005550006"], "at": "t", "in_reply_to": "m1",
               "write_back": "json", "status_callback": "https://hooks.example.com/x", "metadata": {}}  # fmt: skip
    forwarder.forward(opt_out, now=0, detail_type=events.OPTED_OUT)
    assert set(json.loads(platform.calls[1][1]["data"])) == {"phone", "senders", "at", "metadata"}

"""The write-back builders and the forwarder's rules, without a network: names, identities, JWTs, pacing."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import jwt
import pytest
import requests

from chalicelib import writeback
from chalicelib.events import CallbackForwarder, ForwardFailed
from chalicelib.pacing import Reservation
from chalicelib.settings import ConnectionSettings, WriteBack

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SWRVE = WriteBack("swrve", None, {"app_id": "123", "region": "eu"})


@pytest.mark.parametrize(
    ("detail_type", "detail", "name"),
    [
        (writeback.STATUS_CHANGED, {"status": "queued"}, "Queued"),
        (writeback.STATUS_CHANGED, {"status": "delivered"}, "Delivered"),
        (writeback.STATUS_CHANGED, {"status": "error", "error_code": 21211}, "Failed"),
        (writeback.STATUS_CHANGED, {"status": "error", "error_code": 21610}, "black_listed_error"),
        (writeback.OPTED_OUT, {"phone": "+15551234567"}, "black_listed_error"),
        (writeback.STATUS_CHANGED, {"status": "accepted"}, None),  # Swrve's integration has no such event
        (writeback.REPLY_RECEIVED, {"body": "hi"}, None),
    ],
)
def test_swrve_events_are_named_as_swrves_twilio_integration_names_them(
    detail_type: str, detail: dict[str, Any], name: str | None
) -> None:
    request = writeback.swrve(detail_type, {**detail, "metadata": {"swrve_user_id": "u1"}}, SWRVE, "k")
    if name is None:
        assert request is None
        return
    assert request is not None and request.url == "https://123.eu-api.swrve.com/1/event"
    form = dict(parse_qsl(request.body))
    assert (form["name"], form["user"], form["api_key"]) == (name, "u1", "k")


def test_without_the_platforms_id_for_the_recipient_nothing_is_sent_and_it_says_which_field() -> None:
    with pytest.raises(writeback.NotDeliverable, match=r"metadata\.swrve_user_id"):
        writeback.swrve(writeback.STATUS_CHANGED, {"status": "sent"}, SWRVE, "k")


def test_the_ci360_jwt_is_hs256_over_the_tenant_with_the_decoded_secret() -> None:
    secret = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    config = WriteBack("ci360", "https://extapigwservice-eu-prod.ci360.sas.com/", {"tenant": "tenant-1"})
    detail = {"id": "m1", "status": "delivered", "metadata": {"datahub_id": "d1", "rtc": "r1"}}
    request = writeback.ci360(writeback.STATUS_CHANGED, detail, config, secret)
    assert request.url == "https://extapigwservice-eu-prod.ci360.sas.com/marketingGateway/events"
    token = request.headers["Authorization"].removeprefix("Bearer ")
    assert jwt.decode(token, base64.b64decode(secret), algorithms=["HS256"]) == {"clientID": "tenant-1"}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    body = json.loads(request.body)
    assert (body["eventName"], body["datahub_id"], body["response_tracking_code"]) == ("sms_status", "d1", "r1")


def test_twilios_form_skips_the_status_the_create_answered() -> None:
    detail = {"id": "SM1", "to": "+15551234567", "from": "+15005550006", "account_sid": "AC1", "created_as": "queued"}
    assert writeback.status_callback_form({**detail, "status": "queued"}) is None
    assert writeback.status_callback_form({**detail, "status": "sending"}) is None
    form = dict(writeback.status_callback_form({**detail, "status": "error", "error_code": 30007}) or [])
    assert (form["MessageStatus"], form["SmsStatus"], form["ErrorCode"]) == ("failed", "failed", "30007")


class Pace:
    def __init__(self, *places: Reservation) -> None:
        self.places = list(places)
        self.keys: list[str] = []

    def reserve(self, sender: str, segments: int, rate: float, validity_seconds: float, now: datetime) -> Reservation:
        self.keys.append(f"{sender}@{rate:.0f}/s")
        return self.places.pop(0)


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
    monkeypatch.setattr("chalicelib.events.time.sleep", slept.append)
    config = WriteBack("tealium", "https://collect.tealiumiq.com/event", {"account": "acme", "profile": "main"})
    connection = ConnectionSettings("t", "s", write_back=config)
    pace = Pace(Reservation(0.25, NOW), Reservation(0, None, 3.0))
    session = Session()
    forwarder = CallbackForwarder(
        session,  # type: ignore[arg-type]
        "k",
        connections={"t": connection},
        clock=lambda: NOW,
        pace=pace,
        resolver=lambda host: ["93.184.216.34"],
    )
    detail = {"id": "m1", "status": "sent", "connection": "t", "write_back": "tealium", "metadata": {"visitor_id": "v"}}
    assert forwarder.forward(detail) == 200 and slept == [0.25]
    with pytest.raises(ForwardFailed, match="100 requests/s"):
        forwarder.forward(detail)
    assert pace.keys == ["tealium:acme@100/s", "tealium:acme@100/s"] and len(session.posted) == 1

"""The connector's Twilio adapter against the simulator: the same contract the HTTP stub
in tests/twilio_stub.py promises, checked against a real server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from chalicelib.models import OutboundMessage, parse_send_request, validate_outbound
from chalicelib.twilio_api import TwilioApi, TwilioCredentials, TwilioOutcomeUnknown, TwilioRejected, TwilioRetryable
from local.twilio_sim import Fault, SimConfig, TwilioSimulator

ACCOUNT_SID = "AC" + "3" * 32
CREDS = TwilioCredentials(ACCOUNT_SID, "token")
TO = "+15551234567"


def outbound(to: str = TO, body: str = "hi") -> OutboundMessage:
    request = parse_send_request({"to": to, "from": "+15005550006", "body": body})
    return validate_outbound(request, "default", (), None, datetime.now(UTC))


@pytest.fixture
def sim() -> Iterator[TwilioSimulator]:
    with TwilioSimulator(SimConfig(ACCOUNT_SID, "token", time_scale=1000)) as simulator:
        yield simulator


@pytest.fixture
def api(sim: TwilioSimulator) -> TwilioApi:
    return TwilioApi(sim.base_url, sleep=lambda _: None)


def test_create_fetch_and_list(api: TwilioApi, sim: TwilioSimulator) -> None:
    sent = api.create_message(CREDS, outbound())
    assert sent.status == "queued" and sent.num_segments == 1 and sent.date_created is not None
    assert api.fetch_message(CREDS, sent.sid).sid == sent.sid
    assert [m.sid for m in api.list_messages(CREDS, to=TO)] == [sent.sid]
    assert api.fetch_account(CREDS)["sid"] == ACCOUNT_SID


def test_list_follows_the_simulators_next_page_uri(api: TwilioApi) -> None:
    for i in range(7):
        api.create_message(CREDS, outbound(body=f"m{i}"))
    assert [m.body for m in api.list_messages(CREDS, to=TO, page_size=3)] == [f"m{i}" for i in range(6, -1, -1)]


@pytest.mark.parametrize("kind", ["lost", "reset", "500"])
def test_ambiguous_failures_are_unknown_outcomes(api: TwilioApi, sim: TwilioSimulator, kind: str) -> None:
    sim.sim.add_fault(Fault(kind))
    with pytest.raises(TwilioOutcomeUnknown):
        api.create_message(CREDS, outbound())
    assert len(sim.sim.creates()) == (1 if kind == "lost" else 0)


def test_throttling_is_retried_to_success(api: TwilioApi, sim: TwilioSimulator) -> None:
    sim.sim.add_fault(Fault("429", count=2, retry_after=0))
    api.create_message(CREDS, outbound())
    assert sim.sim.requests["create"] == 3 and len(sim.sim.creates()) == 1


def test_server_errors_on_reads_are_retried(api: TwilioApi, sim: TwilioSimulator) -> None:
    sid = api.create_message(CREDS, outbound()).sid
    sim.sim.add_fault(Fault("503", op="fetch"))
    assert api.fetch_message(CREDS, sid).sid == sid


def test_rejections_and_bad_credentials(api: TwilioApi) -> None:
    with pytest.raises(TwilioRejected) as info:
        api.create_message(CREDS, outbound(to="+15005550003"))
    assert info.value.code == 21408
    with pytest.raises(TwilioRetryable) as auth:
        api.create_message(TwilioCredentials(ACCOUNT_SID, "wrong"), outbound())
    assert auth.value.code == 20003

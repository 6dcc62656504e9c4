"""The connector's Twilio adapter against both Twilio doubles: one contract that the HTTP stub
(tests/twilio_stub.py, used by the fast flow tests) and the simulator (a real server on loopback,
used by the local stack) must both keep, so neither drifts from the other; then what only the
simulator models."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.adapters.twilio_api import TwilioApi
from chalicelib.domain.models import OutboundMessage, parse_send_request
from chalicelib.domain.outbound import validate_outbound
from chalicelib.domain.twilio import TwilioCredentials, TwilioOutcomeUnknown, TwilioRejected, TwilioRetryable
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


class Double:
    """One Twilio double, as the contract sees it: an adapter pointed at it, valid credentials,
    a way to script the next create's fault, and how many messages it really created."""

    def __init__(self, api: TwilioApi, creds: TwilioCredentials, fault: Any, created: Any) -> None:
        self.api, self.creds, self.fault, self.created = api, creds, fault, created


@pytest.fixture(params=["stub", "simulator"])
def double(request: pytest.FixtureRequest) -> Iterator[Double]:
    if request.param == "stub":
        import responses

        from tests.twilio_stub import ACCOUNT_SID as STUB_SID
        from tests.twilio_stub import AUTH_TOKEN, BASE_URL, TwilioStub

        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            stub = TwilioStub(mock)
            yield Double(
                TwilioApi(BASE_URL, sleep=lambda _: None),
                TwilioCredentials(STUB_SID, AUTH_TOKEN),
                lambda kind, count=1: stub.fail_next(*[kind] * count),
                lambda: len(stub.messages),
            )
        return
    with TwilioSimulator(SimConfig(ACCOUNT_SID, "token", time_scale=1000)) as simulator:
        yield Double(
            TwilioApi(simulator.base_url, sleep=lambda _: None),
            CREDS,
            lambda kind, count=1: simulator.sim.add_fault(Fault(kind, count=count, retry_after=0)),
            lambda: len(simulator.sim.creates()),
        )


def test_contract_create_fetch_and_list(double: Double) -> None:
    sent = double.api.create_message(double.creds, outbound())
    assert sent.status == "queued" and sent.num_segments == 1 and sent.date_created is not None
    assert double.api.fetch_message(double.creds, sent.sid).sid == sent.sid
    assert [m.sid for m in double.api.list_messages(double.creds, to=TO)] == [sent.sid]


def test_contract_throttling_is_retried_to_one_create(double: Double) -> None:
    double.fault("429", 2)
    double.api.create_message(double.creds, outbound())
    assert double.created() == 1


@pytest.mark.parametrize(("kind", "created"), [("lost", 1), ("500", 0)])
def test_contract_ambiguous_failures_are_unknown_outcomes(double: Double, kind: str, created: int) -> None:
    double.fault(kind)
    with pytest.raises(TwilioOutcomeUnknown):
        double.api.create_message(double.creds, outbound())
    assert double.created() == created


def test_contract_wrong_credentials_are_20003_and_retryable(double: Double) -> None:
    with pytest.raises(TwilioRetryable) as auth:
        double.api.create_message(TwilioCredentials(double.creds.account_sid, "wrong"), outbound())
    assert auth.value.code == 20003 and double.created() == 0


def test_the_simulator_also_answers_the_account(api: TwilioApi) -> None:
    assert api.fetch_account(CREDS)["sid"] == ACCOUNT_SID


def test_list_follows_the_simulators_next_page_uri(api: TwilioApi) -> None:
    for i in range(7):
        api.create_message(CREDS, outbound(body=f"m{i}"))
    assert [m.body for m in api.list_messages(CREDS, to=TO, page_size=3)] == [f"m{i}" for i in range(6, -1, -1)]


def test_a_reset_connection_is_an_unknown_outcome(api: TwilioApi, sim: TwilioSimulator) -> None:
    sim.sim.add_fault(Fault("reset"))
    with pytest.raises(TwilioOutcomeUnknown):
        api.create_message(CREDS, outbound())
    assert len(sim.sim.creates()) == 0


def test_server_errors_on_reads_are_retried(api: TwilioApi, sim: TwilioSimulator) -> None:
    sid = api.create_message(CREDS, outbound()).sid
    sim.sim.add_fault(Fault("503", op="fetch"))
    assert api.fetch_message(CREDS, sid).sid == sid


def test_rejections_by_twilios_magic_numbers(api: TwilioApi) -> None:
    with pytest.raises(TwilioRejected) as info:
        api.create_message(CREDS, outbound(to="+15005550003"))
    assert info.value.code == 21408

"""Every entry point publishes what it counted: Powertools' metrics reach CloudWatch only when flushed
(one EMF line on stdout), and before, only the send consumer flushed: webhook, poll, finalize, forward
and API metrics were dropped with their invocation. The outbox function is one more."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from chalicelib import wiring
from chalicelib.observability import metrics
from tests.events import Delivery, LambdaContext, sqs_event


def published(out: str) -> set[str]:
    names: set[str] = set()
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            document = json.loads(line)
            for directive in document["_aws"]["CloudWatchMetrics"]:
                names |= {m["Name"] for m in directive["Metrics"]}
    return names


class Counting:
    """Stands in for a use case: counts a metric named after the handler, then answers or fails."""

    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail

    def __getattr__(self, method: str) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            metrics.add_metric(name=self.name, unit="Count", value=1)
            if self.fail:
                raise RuntimeError("the handler failed")
            if method == "poll":
                return args[0]  # the poll state, unchanged
            if method == "handle":
                return [] if self.name == "ProbeOutbox" else {"batchItemFailures": []}
            return {}

        return run


def run_poll() -> None:
    import app

    app.poll({"window": 0}, LambdaContext())


def run_finalize() -> None:
    import app

    app.finalize({"window": 0}, LambdaContext())


def run_forward() -> None:
    import app

    parked = {"detail_type": "Message Status Changed", "detail": {"status_callback": "https://cdp.example/h"}}
    app.forward(sqs_event(Delivery(parked)), LambdaContext())


def run_outbox() -> None:
    import app

    change = {"SequenceNumber": "1", "ApproximateCreationDateTime": 1796300000, "NewImage": {"id": {"S": "m1"}}}
    app.outbox({"Records": [{"eventName": "INSERT", "dynamodb": change}]}, LambdaContext())


def run_send() -> None:
    import app

    app.send(sqs_event(Delivery({"to": "+15551234567", "body": "x"})), LambdaContext())


def run_facade() -> None:
    import app

    app.facade({"rawPath": "/2010-04-01/Accounts/AC1.json", "requestContext": {"http": {"method": "GET"}}}, None)


HANDLERS = {
    "facade": ("twilio_facade", run_facade),
    "poll": ("tracking", run_poll),
    "finalize": ("tracking", run_finalize),
    "forward": ("forwarder", run_forward),
    "outbox": ("outbox", run_outbox),
    "send": ("send_consumer", run_send),
}


@pytest.mark.parametrize("fail", [False, True], ids=["answered", "raised"])
@pytest.mark.parametrize("handler", sorted(HANDLERS))
def test_a_lambda_handler_publishes_its_metrics(handler: str, fail: bool, capsys: pytest.CaptureFixture[str]) -> None:
    piece, run = HANDLERS[handler]
    name = f"Probe{handler.capitalize()}"
    wiring.override(**{piece: cast(Any, Counting(name, fail))})
    if fail and handler != "forward":  # the forward function answers a failure as a record SQS hands back
        with pytest.raises(RuntimeError):
            run()
    else:
        run()
    assert name in published(capsys.readouterr().out)


def test_the_webhook_function_publishes_a_refused_signature(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import app
    from chalicelib.settings import load_settings

    monkeypatch.setenv("TWILIO_SECRET_ID", "twilio")
    wiring.override(settings=load_settings(), credentials=cast(Any, Counting("Unused")))  # never reached: no signature
    context = {"domainName": "abc.lambda-url.us-east-1.on.aws", "http": {"method": "POST"}}
    event = {"rawPath": "/twilio/status", "rawQueryString": "", "headers": {}, "body": "a=b", "requestContext": context}
    assert app.webhooks(event, LambdaContext())["statusCode"] == 403
    assert "WebhookSignatureRejected" in published(capsys.readouterr().out)


def test_an_api_route_publishes_a_refused_key(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    from chalice.test import Client

    import app

    class Keys:
        def check(self, headers: Any, *route: Any) -> Any:
            from chalicelib.entrypoints.api_keys import ApiKeys

            return ApiKeys(provider=self, secret_id="keys").check(headers, *route)

        def get(self, *args: Any, **kwargs: Any) -> Any:
            return {"keys": []}

    wiring.override(api_keys=cast(Any, Keys()))
    with Client(app.app, project_dir=str(tmp_path)) as client:
        assert client.http.get("/messages/msg_1", headers={"x-api-key": "wrong"}).status_code == 403
    assert "ApiKeyRejected" in published(capsys.readouterr().out)


@pytest.mark.parametrize("failed", [True, False], ids=["a poll run failed", "attempts exhausted"])
def test_a_window_finalized_because_a_poll_run_failed_is_counted(
    failed: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """The PollWindowsAbandoned alarm's metric: only a Catch (the state machine's `error`) raises it."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime

    import app
    from chalicelib.adapters.twilio_api import TwilioApi
    from chalicelib.domain.twilio import TwilioCredentials
    from chalicelib.settings import load_settings
    from chalicelib.usecases.tracking import TrackingService
    from tests.fakes import InMemoryLedger, InMemoryOptOuts, StaticCredentials

    tracking = TrackingService(
        load_settings({"TWILIO_SECRET_ID": "x"}),
        InMemoryLedger(),
        InMemoryOptOuts(),
        TwilioApi("https://api.twilio.test"),  # never called: finalize reads the ledger only
        StaticCredentials(TwilioCredentials("AC" + "0" * 32, "t")),
        lambda: datetime(2026, 12, 3, tzinfo=UTC),
        ThreadPoolExecutor(max_workers=1),
    )
    wiring.override(tracking=tracking)
    state: dict[str, Any] = {"window": 0, "attempt": 2}
    if failed:
        state["error"] = {"Error": "States.Timeout", "Cause": "the poll run took longer than its timeout"}
    app.finalize(state, LambdaContext())
    assert ("PollWindowsAbandoned" in published(capsys.readouterr().out)) is failed

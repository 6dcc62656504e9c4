"""Phone numbers never reach a log line in full, not even inside text the connector did not write:
Twilio's real error messages quote the number, and the simulator words them as Twilio does."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from chalicelib import wiring
from chalicelib.observability import mask_numbers
from local.twilio_sim import SimConfig, TwilioSimulator
from tests.aws import AtomicClient, provision
from tests.events import Delivery, LambdaContext, sqs_event

ACCOUNT_SID, AUTH_TOKEN = "AC" + "7" * 32, "sim-token"
FROM = "+15005550006"


class Collect(logging.Handler):
    """Every log record, message and extra fields, as text."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.dumps({**record.__dict__, "message": record.getMessage()}, default=str))


@pytest.fixture
def simulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[TwilioSimulator]:
    with mock_aws(), TwilioSimulator(SimConfig(ACCOUNT_SID, AUTH_TOKEN)) as sim:
        provision(monkeypatch, sim.base_url, ACCOUNT_SID, AUTH_TOKEN)
        wiring.override(dynamodb=AtomicClient(boto3.client("dynamodb")))
        from chalicelib.observability import logger

        level = logger.log_level
        logger.setLevel("DEBUG")  # every line the connector writes
        collected = Collect()  # sees each record as every handler would: after the logger's filters
        logger._logger.addHandler(collected)
        sim.written = collected  # type: ignore[attr-defined]
        yield sim
        logger._logger.removeHandler(collected)
        logger.setLevel(level)


@pytest.mark.parametrize("to", ["+15005550001", "+15005550002", "+15005550003", "+15005550009"])
def test_twilios_words_about_a_number_are_logged_masked(simulator: TwilioSimulator, to: str) -> None:
    import app

    assert app.send(sqs_event(Delivery({"to": to, "from": FROM, "body": "x"})), LambdaContext()) == {
        "batchItemFailures": []
    }
    logged = "\n".join(simulator.written.lines)  # type: ignore[attr-defined]
    assert "message refused" in logged  # Twilio's refusal, with its words, was logged …
    assert to not in logged, logged  # … but not the number
    assert "***" + to[-4:] in logged  # what the logs may show: the last four digits


def test_masking_keeps_ids_and_times_readable() -> None:
    text = "msg_ab12cd34 at 2026-11-26T09:57:34.542Z for SM0123456789abcdef0123456789abcdef, To +33612345678"
    assert (
        mask_numbers(text)
        == "msg_ab12cd34 at 2026-11-26T09:57:34.542Z for SM0123456789abcdef0123456789abcdef, To +***5678"
    )


def test_the_front_door_logs_no_number_not_even_of_a_refused_or_canceled_message(simulator: TwilioSimulator) -> None:
    import base64
    from urllib.parse import urlencode

    import app
    from tests.aws import FACADE_ACCOUNT, FACADE_TOKEN

    auth = "Basic " + base64.b64encode(f"{FACADE_ACCOUNT}:{FACADE_TOKEN}".encode()).decode()
    numbers = ["+15550990001", "+15550990002", " 15550990003"]  # the last as CI360 sends it

    def post(path: str, form: dict[str, str]) -> dict:
        event = {
            "rawPath": f"/2010-04-01/Accounts/{FACADE_ACCOUNT}{path}",
            "headers": {"authorization": auth, "content-type": "application/x-www-form-urlencoded"},
            "requestContext": {"http": {"method": "POST"}},
            "body": urlencode(form),
        }
        return json.loads(app.facade(event, LambdaContext())["body"])

    created = post("/Messages.json", {"To": numbers[0], "From": FROM, "Body": "x", "Unknown": numbers[1]})
    post(f"/Messages/{created['sid']}.json", {"Status": "canceled"})
    post("/Messages.json", {"To": numbers[2], "From": FROM, "Body": "x" * 2000})
    post("/Messages.json", {"To": "+1555099", "From": numbers[1], "Body": "x"})
    logged = "\n".join(simulator.written.lines)  # type: ignore[attr-defined]
    assert "front door" in logged  # it did log (the ignored parameter) …
    assert not any(n.strip().lstrip("+") in logged for n in numbers), logged  # … but no number

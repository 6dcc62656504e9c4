"""The ledger is the outbox, through the local stack (moto's DynamoDB stream read by the local stream trigger,
as Lambda's would): a function that dies right after its ledger write loses nothing; events go to the bus only
for a deployment that subscribes, one per change, in order; a platform that is down hears every change later,
in order, once; the status page counts each change once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import requests

from chalicelib.adapters.dynamo_ledger import DynamoMessageLedger
from local.stack import LocalStack, StackConfig
from local.twilio_sim import CallbackFaults
from tests.flow.test_tracking import Harness, make_stack, wait_until
from tests.receiver import Receiver


@pytest.fixture
def stack() -> Iterator[Harness]:
    yield from make_stack()


def statuses_heard(receiver: Receiver, path: str) -> list[str]:
    return [json.loads(r["body"])["status"] for r in receiver.requests if r["path"] == path]


def test_a_webhook_that_dies_right_after_its_ledger_write_still_tells_the_platform_once(
    stack: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the callback's handler wrote the ledger, then published the event: dying between the two lost
    the event. Now the event follows from the write itself, and Twilio's retry of the refused callback (the URL's
    connection overrides ask for it) finds the status written and tells no one again."""
    real = DynamoMessageLedger.apply_status
    killed: list[str] = []

    def dies_after_writing(self: Any, message_id: str, update: Any, now: datetime) -> Any:
        written = real(self, message_id, update, now)
        if update.status == "delivered" and update.source == "callback" and not killed:
            killed.append(message_id)
            raise RuntimeError("the function was killed")  # its timeout, an OOM, a lost container
        return written

    monkeypatch.setattr(DynamoMessageLedger, "apply_status", dies_after_writing)
    receiver = Receiver()
    message_id = stack.send("+15550100021", status_callback=f"{receiver.url}/hook")
    stack.wait_status(message_id, "delivered")
    wait_until(lambda: "delivered" in statuses_heard(receiver, "/hook"), what="the platform to hear `delivered`")
    time.sleep(1.0)  # anything sent twice would have arrived by now
    assert killed == [message_id]
    heard = statuses_heard(receiver, "/hook")
    assert heard.count("delivered") == 1 and heard == [s for s in ("queued", "sent", "delivered") if s in heard]


@pytest.fixture
def final_events() -> Iterator[Harness]:
    yield from make_stack(extra_env={"STATUS_EVENTS": "final"})


def test_events_reach_the_bus_only_when_subscribed_and_final_means_the_last_status(final_events: Harness) -> None:
    events_client, sqs = boto3.client("events"), boto3.client("sqs")
    queue = sqs.create_queue(QueueName="captured-final")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events_client.put_rule(Name="capture", EventPattern=json.dumps({"source": ["twilio.connector"]}))
    events_client.put_targets(Rule="capture", Targets=[{"Id": "q", "Arn": arn}])
    message_id = final_events.send("+15550100022")
    final_events.wait_status(message_id, "delivered")
    received: list[dict[str, Any]] = []

    def collect() -> bool:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        received.extend(json.loads(m["Body"]) for m in got)
        return bool(received)

    wait_until(collect, what="the final event")
    time.sleep(1.0)
    collect()
    assert [(e["detail-type"], e["detail"]["status"]) for e in received] == [("Message Status Changed", "delivered")]


def test_a_platform_that_is_down_hears_every_change_later_in_order_once(stack: Harness) -> None:
    receiver = Receiver()
    receiver.status_for["/down"] = 503
    message_id = stack.send("+15550100023", status_callback=f"{receiver.url}/down")
    stack.wait_status(message_id, "delivered")
    # the first write-back refused, the later ones wait behind it (never tried before it: none overtakes it)
    wait_until(lambda: "queued" in statuses_heard(receiver, "/down"), what="`queued`, refused")
    others = stack.send("+15550100024")  # the stream is not held up by the platform that is down
    stack.wait_status(others, "delivered")
    receiver.status_for["/down"] = 200
    refused = len(receiver.requests)

    def taken() -> list[str]:
        return [json.loads(r["body"])["status"] for r in receiver.requests[refused:]]

    wait_until(lambda: "delivered" in taken(), 30, "the parked events to be taken")
    time.sleep(1.0)  # anything told twice would have arrived by now
    heard = taken()
    assert heard == ["queued", "sent", "delivered"], heard  # every change, in order, once


def test_the_status_page_counts_each_change_once_however_the_stream_is_retried() -> None:
    config = StackConfig(stage="test", time_scale=20, retry_interval_ms=1000, retry_attempts=3, outbox_batch_size=3)
    with LocalStack(config) as stack:
        assert stack.simulator is not None
        stack.simulator.sim.callback_faults = CallbackFaults(duplicate=1.0)  # every callback twice
        failing = {"left": 3}
        real = stack.outbox.handler

        def flaky(event: Any, context: Any) -> Any:
            answer = real(event, context)  # done, counted...
            if failing["left"]:
                failing["left"] -= 1
                raise RuntimeError("timed out before answering")  # ...then the batch comes back whole, halved
            return answer

        stack.outbox.handler = flaky
        headers = {"x-api-key": stack.config.api_key, "Content-Type": "application/json"}
        ids = []
        for n in range(4):
            body = {"to": f"+1555010003{n}", "body": "hi"}
            answer = requests.post(f"{stack.api_url}/messages", data=json.dumps(body), headers=headers, timeout=10)
            ids.append(answer.json()["id"])
        day = datetime.now(UTC).strftime("%Y-%m-%d")

        def counted() -> dict[str, int] | None:
            stats = requests.get(f"{stack.api_url}/stats?from={day}&to={day}", headers=headers, timeout=10).json()
            return stats["by_status"] if stats["by_status"].get("delivered") == 4 else None

        by_status = wait_until(counted, 30, "four deliveries counted")
        time.sleep(1.0)
        assert counted() == by_status and by_status["pending"] == 4 and failing["left"] == 0
        assert stack.outbox.given_up == []

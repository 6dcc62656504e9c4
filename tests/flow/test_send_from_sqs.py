"""The SQS send trigger end to end through app.py: DynamoDB and Secrets Manager in moto,
the real Twilio adapter over an HTTP stub of Twilio, and SQS events as Lambda sends them.

Every at-least-once hazard has a test here: redelivery, a worker that dies between
claim and send (or between send and record), an answer lost after Twilio created
the message, throttling, server errors, and a mixed batch.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
import responses
from moto import mock_aws

from chalicelib import wiring
from chalicelib.adapters.twilio_api import TwilioApi
from chalicelib.domain import rules
from chalicelib.domain.ledger import MessageRecord
from chalicelib.domain.rules import ConnectorCode
from chalicelib.domain.templates import Template
from tests import must
from tests.aws import SECRET_ID, AtomicClient, provision
from tests.events import Delivery, LambdaContext, sqs_event
from tests.twilio_stub import ACCOUNT_SID, AUTH_TOKEN, BASE_URL, TwilioStub

FROM = "+15005550006"
TO = "+15551234567"


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@dataclass
class Stack:
    stub: TwilioStub
    clock: Clock
    tables: dict[str, str]
    dynamodb: object

    def deliver(self, *deliveries: Delivery, context: Any = None) -> list[str]:
        """Run the send Lambda on one batch; return the messageIds it hands back to SQS."""
        import app

        result = app.send(sqs_event(*deliveries), context or LambdaContext())
        return [failure["itemIdentifier"] for failure in result["batchItemFailures"]]

    def sqs_depth(self) -> dict[str, int]:
        """The send queue's messages waiting, by kind, leaving out kinds with none."""
        sqs = boto3.client("sqs")
        url = sqs.get_queue_url(QueueName="twilio-connector-test-send")["QueueUrl"]
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"]
        found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        return {name: int(value) for name, value in found.items() if int(value)}

    def record(self, delivery: Delivery) -> MessageRecord:
        key = delivery.body.get("idempotency_key") if isinstance(delivery.body, dict) else None
        found = wiring.ledger().get(rules.message_id(key, delivery.message_id))
        assert found is not None, "no ledger record for this delivery"
        return found


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    with mock_aws(), responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        client = boto3.client("dynamodb")
        tables = provision(monkeypatch, BASE_URL, ACCOUNT_SID, AUTH_TOKEN)
        stub = TwilioStub(mock)
        clock = Clock(stub.clock)
        wiring.override(dynamodb=AtomicClient(client), twilio=TwilioApi(BASE_URL, sleep=lambda _: None), clock=clock)
        yield Stack(stub, clock, tables, client)


def send(to: str = TO, body: str = "Your order shipped", **extra: object) -> Delivery:
    return Delivery({"to": to, "from": FROM, "body": body, **extra})


def test_a_record_is_sent_and_its_record_kept(stack: Stack) -> None:
    delivery = send(body="Your order shipped €", metadata={"campaign": "fall"})
    assert stack.deliver(delivery) == []
    record = stack.record(delivery)
    assert record.status == "queued" and record.twilio_sid == stack.stub.messages[0].sid
    assert (record.num_segments, record.encoding, record.metadata) == (1, "GSM-7", {"campaign": "fall"})
    assert [e["source"] for e in record.events] == ["send"]


def test_a_redelivered_record_sends_nothing_twice(stack: Stack) -> None:
    delivery = send()
    assert stack.deliver(delivery) == []
    assert stack.deliver(delivery.redelivered()) == []
    assert stack.stub.create_attempts == 1 and len(stack.stub.messages) == 1


def test_records_without_an_idempotency_key_are_counted_for_an_alarm(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.observability import metrics

    counted: list[str] = []
    original = metrics.add_metric

    def count(name: str, **kw: Any) -> None:
        counted.append(name)
        original(name=name, **kw)

    monkeypatch.setattr(metrics, "add_metric", count)
    assert stack.deliver(send(), send(idempotency_key="order-7", to="+15551234568")) == []
    assert counted.count("RecordsWithoutIdempotencyKey") == 1


def test_the_same_idempotency_key_on_two_sqs_messages_is_one_message(stack: Stack) -> None:
    first, second = send(idempotency_key="order-42"), send(idempotency_key="order-42")
    # In one batch, one copy claims the message; the other finds it in flight (and comes back
    # later) or already sent (and is done), depending on which thread runs first.
    failures = stack.deliver(first, second)
    assert len(failures) <= 1
    for waiting in (d for d in (first, second) if d.message_id in failures):
        assert stack.deliver(waiting.redelivered()) == []
    assert stack.stub.creates_per_message() == {(TO, "Your order shipped"): 1}


def claim_as_a_worker_that_then_dies(stack: Stack, delivery: Delivery) -> None:
    """What a Lambda leaves behind when it is killed right after claiming: a live claim, no SID."""
    wiring.ledger().claim(
        rules.message_id(None, delivery.message_id),
        {"to": delivery.body["to"], "from": FROM, "body_sha256": rules.body_digest(delivery.body["body"])},
        "dead-worker",
        stack.clock(),
        timedelta(seconds=120),
    )


def test_a_worker_that_died_between_claim_and_send_is_finished_once(stack: Stack) -> None:
    delivery = send()
    claim_as_a_worker_that_then_dies(stack, delivery)
    stack.clock.advance(seconds=361)  # SQS redelivers after the visibility timeout
    assert stack.deliver(delivery.redelivered()) == []
    assert stack.stub.create_attempts == 1
    assert stack.record(delivery).twilio_sid == stack.stub.messages[0].sid


def test_a_worker_that_died_after_twilio_created_the_message_adopts_it(stack: Stack) -> None:
    delivery = send()
    claim_as_a_worker_that_then_dies(stack, delivery)
    created = stack.stub.add_existing(TO, FROM, "Your order shipped", timedelta(0))
    stack.stub.add_existing(TO, FROM, "Your order shipped", timedelta(days=2))  # an older, unrelated twin
    stack.clock.advance(seconds=361)
    assert stack.deliver(delivery.redelivered()) == []
    assert stack.stub.create_attempts == 0
    assert stack.record(delivery).twilio_sid == created.sid


def test_an_answer_lost_after_twilio_created_the_message_is_not_sent_again(stack: Stack) -> None:
    delivery = send()
    stack.stub.fail_next("lost")
    assert stack.deliver(delivery) == [delivery.message_id]
    assert stack.record(delivery).status == "pending"
    assert stack.deliver(delivery.redelivered()) == []
    assert stack.stub.create_attempts == 1 and len(stack.stub.messages) == 1
    assert stack.record(delivery).twilio_sid == stack.stub.messages[0].sid


def test_a_timeout_where_twilio_created_nothing_sends_exactly_once(stack: Stack) -> None:
    delivery = send()
    stack.stub.fail_next("timeout_not_created")
    assert stack.deliver(delivery) == [delivery.message_id]
    assert stack.deliver(delivery.redelivered()) == []
    assert stack.stub.create_attempts == 2 and len(stack.stub.messages) == 1
    assert stack.record(delivery).status == "queued"


def test_429_then_success_within_one_delivery(stack: Stack) -> None:
    delivery = send()
    stack.stub.fail_next("429")
    assert stack.deliver(delivery) == []
    assert stack.stub.create_attempts == 2 and len(stack.stub.messages) == 1


def test_500_then_success_after_redelivery_and_reconciliation(stack: Stack) -> None:
    delivery = send()
    stack.stub.fail_next("500")
    assert stack.deliver(delivery) == [delivery.message_id]
    assert stack.deliver(delivery.redelivered()) == []
    assert len(stack.stub.messages) == 1 and stack.record(delivery).status == "queued"


def test_a_twilio_rejection_is_recorded_and_consumed(stack: Stack) -> None:
    delivery = send()
    stack.stub.fail_next("reject:21211")
    assert stack.deliver(delivery) == []
    record = stack.record(delivery)
    assert (record.status, record.error_code) == ("error", 21211)
    assert record.error_message == "rejected with 21211"
    assert stack.deliver(delivery.redelivered()) == [] and stack.stub.create_attempts == 1


def test_a_mixed_batch_hands_back_only_the_retryable_records(stack: Stack) -> None:
    """Lost answers go back to SQS (and are reconciled); throttled ones are put back as new messages."""
    ok = send(to="+15550000001")
    invalid = Delivery({"to": "12345", "from": FROM, "body": "x"})
    throttled = send(to="+15550000003")
    rejected = send(to="+15550000004")
    lost = send(to="+15550000005")
    stack.stub.fail_for("+15550000003", "429", "429", "429", "429")
    stack.stub.fail_for("+15550000004", "reject:21614")
    stack.stub.fail_for("+15550000005", "lost")
    failures = stack.deliver(ok, invalid, throttled, rejected, lost)
    assert failures == [lost.message_id]
    assert stack.sqs_depth() == {"ApproximateNumberOfMessagesDelayed": 1}  # the throttled one, after a backoff
    assert stack.record(ok).status == "queued"
    assert (stack.record(invalid).status, stack.record(invalid).error_code) == ("error", 21211)
    assert stack.record(rejected).error_code == 21614
    assert stack.record(throttled).claim.claim_token is None  # released: free to send on redelivery


def test_a_batch_of_ten_is_sent_concurrently(stack: Stack) -> None:
    # Every create waits until ten are in flight at once; sequential sends would break the barrier.
    stack.stub.barrier = threading.Barrier(10)
    batch = [send(to=f"+1555000{i:04d}") for i in range(10)]
    assert stack.deliver(*batch) == []
    assert not stack.stub.barrier.broken and len(stack.stub.messages) == 10


def test_an_opted_out_recipient_gets_21610_without_a_call_to_twilio(stack: Stack) -> None:
    wiring.opt_outs().opt_out(TO, FROM, stack.clock())
    delivery = send()
    assert stack.deliver(delivery) == []
    record = stack.record(delivery)
    assert (record.status, record.error_code) == ("error", 21610)
    assert stack.stub.create_attempts == 0


def test_a_stale_request_is_dropped_without_sending(stack: Stack) -> None:
    delivery = send(not_after=rules.iso(stack.clock() - timedelta(minutes=1)))
    assert stack.deliver(delivery) == []
    assert stack.record(delivery).error_code == ConnectorCode.STALE_REQUEST
    assert stack.stub.create_attempts == 0


def test_a_body_that_is_not_json_becomes_a_clear_error(stack: Stack) -> None:
    delivery = Delivery("to=+15551234567&body=hi")
    assert stack.deliver(delivery) == []
    record = stack.record(delivery)
    assert record.status == "error" and "not valid JSON" in (record.error_message or "")


def test_an_invalid_request_names_its_field_on_the_record(stack: Stack) -> None:
    delivery = Delivery({"to": TO, "from": FROM, "body": "x" * 1601})
    assert stack.deliver(delivery) == []
    record = stack.record(delivery)
    assert record.error_code == 21617 and "`body`" in (record.error_message or "")


class TestTemplates:
    @pytest.fixture(autouse=True)
    def welcome(self, stack: Stack) -> None:
        wiring.templates().put(
            Template(
                name="welcome",
                body="Hi <First Name>, welcome to {{$store}}!",
                from_=FROM,
                field_map={"to": "mobile", "First Name": "fname"},
            )
        )

    def test_a_raw_event_is_rendered_through_the_stored_template(self, stack: Stack) -> None:
        delivery = Delivery({"template": "welcome", "fields": {"mobile": TO, "fname": "Ann", "store": "Oslo"}})
        assert stack.deliver(delivery) == []
        assert stack.stub.messages[0].body == "Hi Ann, welcome to Oslo!"
        assert stack.stub.messages[0].to == TO

    def test_a_missing_placeholder_value_is_an_error_not_a_broken_message(self, stack: Stack) -> None:
        delivery = Delivery({"template": "welcome", "fields": {"mobile": TO, "store": "Oslo"}})
        assert stack.deliver(delivery) == []
        record = stack.record(delivery)
        assert record.error_code == ConnectorCode.TEMPLATE_MISSING_VALUE and "<First Name>" in (
            record.error_message or ""
        )
        assert stack.stub.create_attempts == 0

    def test_an_unknown_template_is_an_error_naming_it(self, stack: Stack) -> None:
        delivery = Delivery({"template": "nope", "fields": {}})
        assert stack.deliver(delivery) == []
        assert stack.record(delivery).error_code == ConnectorCode.TEMPLATE_NOT_FOUND


def test_wrong_credentials_keep_the_message_for_retry_instead_of_failing_it(stack: Stack) -> None:
    boto3.client("secretsmanager").put_secret_value(
        SecretId=SECRET_ID, SecretString=json.dumps({"account_sid": ACCOUNT_SID, "auth_token": "rotated-away"})
    )
    delivery = send()
    assert stack.deliver(delivery) == [delivery.message_id]
    record = stack.record(delivery)
    assert record.status == "pending" and record.claim.claim_token is None


def test_an_adopted_message_that_already_failed_keeps_twilios_error_code(stack: Stack) -> None:
    delivery = send()
    claim_as_a_worker_that_then_dies(stack, delivery)
    created = stack.stub.add_existing(TO, FROM, "Your order shipped", timedelta(0))
    created.status = "undelivered"
    created.error_code = 30007
    stack.clock.advance(seconds=361)
    assert stack.deliver(delivery.redelivered()) == []
    record = stack.record(delivery)
    assert (record.status, record.error_code, record.twilio_sid) == ("undelivered", 30007, created.sid)


class ShortOfTime(LambdaContext):
    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def requeued(stack: Stack) -> list[dict[str, Any]]:
    """What the send function put back on the queue, as SQS will hand it out (delays ignored)."""
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName="twilio-connector-test-send")["QueueUrl"]
    found = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["All"]
    )
    return found.get("Messages", [])


def as_delivery(message: dict[str, Any]) -> Delivery:
    attributes = {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()}
    return Delivery(json.loads(message["Body"]), message["MessageId"], attributes=attributes)


def test_records_the_invocation_has_no_time_for_go_back_untouched(stack: Stack) -> None:
    """A send started now could outlive the Lambda (one Twilio try: 3.05 s connect + 10 s read): it is
    put back on the queue as a new message, nothing claimed and nothing sent, and no receive burnt."""
    batch = [send(to=f"+1555123456{i}") for i in range(3)]
    failures = stack.deliver(*batch, context=ShortOfTime(remaining_ms=12_000))
    assert failures == [] and stack.stub.create_attempts == 0
    assert all(wiring.ledger().get(rules.message_id(None, d.message_id)) is None for d in batch)
    copies = requeued(stack)
    assert {m["MessageAttributes"]["connector_message_id"]["StringValue"] for m in copies} == {
        rules.message_id(None, d.message_id) for d in batch
    }
    # the next invocation, with time to spare, sends each once, as the message the original would have been
    assert stack.deliver(*(as_delivery(m) for m in copies)) == []
    assert stack.stub.create_attempts == 3
    assert all(must(wiring.ledger().get(rules.message_id(None, d.message_id))).twilio_sid for d in batch)


def test_a_throttling_storm_puts_the_record_back_without_burning_a_receive(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twilio answers 429 to every try: the record is not handed back to SQS (each receive walks it
    toward the DLQ) but put back as a new message after a backoff, naming the same ledger record."""
    monkeypatch.setattr("chalicelib.usecases.consumer.THROTTLE_BACKOFF_S", 0.0)  # to see the copy now (backoff: below)
    delivery = send()
    stack.stub.fail_next(*["429"] * 4)  # every try of this invocation
    assert stack.deliver(delivery) == []  # consumed, not failed: no receive counted against it
    (copy,) = requeued(stack)
    assert copy["MessageAttributes"]["connector_deferrals"]["StringValue"] == "1"
    assert copy["Attributes"]["ApproximateReceiveCount"] == "1"
    message_id = rules.message_id(None, delivery.message_id)
    assert copy["MessageAttributes"]["connector_message_id"]["StringValue"] == message_id
    assert stack.record(delivery).claim.claim_token is None  # released: nothing was sent
    stack.stub.fail_next("429")  # the storm is passing
    assert stack.deliver(as_delivery(copy)) == []
    assert stack.stub.creates_per_message() == {(TO, "Your order shipped"): 1}
    assert stack.deliver(delivery.redelivered()) == []  # a late duplicate of the original sends nothing
    assert len(stack.stub.messages) == 1


def test_throttled_records_back_off_longer_each_time_up_to_sqs_limit() -> None:
    from chalicelib.domain.queued import QueuedRequest
    from chalicelib.usecases.consumer import SendConsumer
    from chalicelib.usecases.send import Deferred

    class Queue:
        def __init__(self) -> None:
            self.delays: list[float] = []

        def defer(self, message_id: str, body: str, delay_seconds: float, deferrals: int) -> None:
            self.delays.append(delay_seconds)

    queue = Queue()
    consumer = SendConsumer.__new__(SendConsumer)  # putting back needs only the queue
    consumer.queue = queue

    def record(deferrals: int) -> QueuedRequest:
        attributes = {"connector_deferrals": {"stringValue": str(deferrals)}}
        return QueuedRequest.from_record({"messageId": "x", "body": "{}", "messageAttributes": attributes})

    for deferrals in range(12):
        assert consumer._put_back(record(deferrals), Deferred("429", 0, "Throttling"))
    # Jittered by 0.5-1.5x around 5 s doubling, capped at 5 x 2^8: each delay sits in its own band.
    for deferrals, delay in enumerate(queue.delays):
        centre = 5 * 2 ** min(deferrals, 8)
        assert 0.5 * centre <= delay <= 1.5 * centre, (deferrals, delay)
    assert queue.delays[3] > queue.delays[0] and queue.delays[-1] >= 640  # SQS's own cap is 900 s
    assert not consumer._put_back(record(100), Deferred("429", 0, "Throttling"))  # then the usual way: the DLQ


def test_a_senders_queue_at_twilio_never_outlasts_a_messages_validity(stack: Stack) -> None:
    """A long code sends 1 segment/s. With a validity of 10 s, ten messages fit (they wait 0-9 s at
    Twilio, within 10 s less a 1 s margin); more would fail there with 30001. They wait in our queue."""
    long_code = "+15551230000"
    batch = [
        Delivery({"to": f"+1555987{i:04d}", "from": long_code, "body": "x", "validity_period": 10}) for i in range(12)
    ]
    assert stack.deliver(*batch) == []
    assert len(stack.stub.messages) == 10  # the other two were put back, not sent to overflow
    assert stack.sqs_depth() == {"ApproximateNumberOfMessagesDelayed": 2}
    place = wiring.sender_queues().reserve(long_code, 1, 1.0, 10, stack.clock())
    assert place.next_free is None and place.over_by >= 1  # still full: a later copy waits again
    stack.clock.advance(seconds=11)  # Twilio drained it meanwhile
    assert wiring.sender_queues().reserve(long_code, 1, 1.0, 10, stack.clock()).wait_seconds == 0


def test_a_message_waiting_in_its_senders_queue_is_polled_when_twilio_will_send_it(stack: Stack) -> None:
    """A long code drains 1 segment/s: the 300th message of a burst waits ~5 min at Twilio. It is polled in
    the window Twilio sends it in, not fetched as `queued` attempt after attempt from the moment it was sent."""
    from chalicelib.domain.polling import poll_input

    long_code = "+15551230001"
    wiring.sender_queues().reserve(long_code, 299, 1.0, 36_000, stack.clock())  # 299 already ahead of it
    late = Delivery({"to": "+15559870001", "from": long_code, "body": "x"})
    assert stack.deliver(late) == []
    settings, now = wiring.settings(), stack.clock()
    window = int(stack.record(late).item["poll_window"])
    assert window == settings.poll_window(now + timedelta(seconds=299)) > settings.poll_window(now)
    first_wait = poll_input(window, settings.poll_window_seconds, now, settings.retry_interval_ms, 3)["wait_seconds"]
    assert first_wait >= 299  # its execution's first poll comes after Twilio has sent it


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"to": TO, "from": FROM, "body": "x", "validity_period": "²"}),
        json.dumps({"to": TO, "from": FROM, "body": "x", "attempt": "--5"}),
        json.dumps({"to": TO, "from": FROM, "body": "x", "not_after": "9999-12-31T23:00:00-05:00"}),
        '{"to": "' + TO + '", "from": "' + FROM + '", "body": "x", "metadata": {"score": NaN}}',
        json.dumps({"to": TO, "from": FROM, "body": "x", "metadata": {"big": 10**40}}),
        json.dumps({"to": TO, "from": FROM, "body": "x", "metadata": {"tiny": 1e-200}}),
        json.dumps({"to": TO + "\n", "from": FROM, "body": "x"}),
        json.dumps({"to": TO, "from": FROM, "template": "welcome\n"}),
        "[" * 5000 + "]" * 5000,
        '{"to": "' + TO + '", "from": "' + FROM + '", "body": "x", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}",
        json.dumps({"to": TO, "from": FROM, "content_sid": "HX" + "0" * 32, "content_variables": "[" * 100_000}),
    ],
    ids=[
        "superscript",
        "double-minus",
        "year-9999",
        "nan",
        "40-digits",
        "1e-200",
        "newline",
        "template",
        "deep",
        "deep-metadata",
        "deep-content-variables",
    ],
)
def test_a_poison_record_is_an_error_record_and_consumed(stack: Stack, body: str) -> None:
    """The same inputs the API refuses, written straight to the queue: never five receives to the DLQ
    with no trace, but an `error` record naming the problem, and the record consumed."""
    delivery = Delivery(body)
    assert stack.deliver(delivery) == []
    record = stack.record(delivery)
    assert record.status == "error" and record.error_code and record.error_message
    assert stack.stub.create_attempts == 0

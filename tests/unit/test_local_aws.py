"""The local stack's speed-up of moto's SQS keeps moto's answers."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.aws import linear_sqs_receive


def _receive(patched: bool) -> list[str]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        for body in ("fresh-1", "fresh-2"):
            sqs.send_message(QueueUrl=url, MessageBody=body)
        from moto.sqs.models import sqs_backends

        queue: Any = sqs_backends["123456789012"]["us-east-1"].queues["q"]
        expired = queue._messages[1]
        expired.sent_timestamp = int((time.time() - 61) * 1000)  # older than the retention period
        if patched:
            with linear_sqs_receive():
                got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        else:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        return [m["Body"] for m in got.get("Messages", [])]


@pytest.mark.parametrize("patched", [False, True])
def test_a_message_past_its_retention_period_is_not_handed_out(patched: bool) -> None:
    assert _receive(patched) == ["fresh-1"]


def _attributes(patched: bool) -> dict[str, Any]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = f'{{"deadLetterTargetArn": "{dlq_arn}", "maxReceiveCount": 5}}'
        url = sqs.create_queue(QueueName="q", Attributes={"RedrivePolicy": redrive, "DelaySeconds": "0"})["QueueUrl"]
        context = linear_sqs_receive() if patched else contextlib.nullcontext()
        with context:
            sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "x"} for i in range(7)])
            sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
            found: dict[str, Any] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        found.pop("CreatedTimestamp"), found.pop("LastModifiedTimestamp")
        return found


def test_the_send_speed_up_keeps_every_attribute_moto_reports() -> None:
    patched = _attributes(True)
    assert patched == _attributes(False)
    assert (patched["ApproximateNumberOfMessages"], patched["ApproximateNumberOfMessagesDelayed"]) == ("7", "1")


def test_the_local_dynamodb_refuses_an_empty_map_key_as_dynamodb_does() -> None:
    """moto stores it and then cannot read the item back; DynamoDB refuses the write."""
    import boto3
    import pytest
    from botocore.exceptions import ClientError
    from moto import mock_aws

    from local.aws import AtomicClient

    with mock_aws():
        raw = boto3.client("dynamodb", region_name="us-east-1")
        raw.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        strict = AtomicClient(raw)
        item = {"k": {"S": "a"}, "rates": {"M": {"": {"N": "1"}}}}
        with pytest.raises(ClientError, match="empty map key"):
            strict.put_item(TableName="t", Item=item)
        with pytest.raises(ClientError, match="empty map key"):
            strict.update_item(
                TableName="t",
                Key={"k": {"S": "a"}},
                UpdateExpression="SET r = :r",
                ExpressionAttributeValues={":r": {"M": {"x": {"M": {"": {"S": "y"}}}}}},
            )
        strict.put_item(TableName="t", Item={"k": {"S": "a"}, "rates": {"M": {"x": {"N": "1"}}}})


def test_the_local_event_bus_retries_as_lambda_does_but_never_after_it_is_closed() -> None:
    """A retry after teardown would run the forward function against reset wiring (and real AWS endpoints)."""
    from chalicelib.domain.events import STATUS_CHANGED
    from local.aws import LocalEventBus

    class Bus:
        def publish(self, detail_type: str, details: Any) -> None:
            pass

    calls: list[float] = []

    def failing(event: Any, context: Any) -> None:
        calls.append(time.monotonic())
        raise RuntimeError("the platform is down")

    bus = LocalEventBus(Bus(), failing, retry_delay=0.2)
    bus.publish(STATUS_CHANGED, [{"id": "m1", "write_back": "json"}])
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    bus.close()  # during the first retry's wait
    time.sleep(0.8)
    assert len(calls) == 1 and bus.failed == []
    kept = LocalEventBus(Bus(), failing, retry_delay=0.01)
    kept.publish(STATUS_CHANGED, [{"id": "m2", "write_back": "json"}])
    deadline = time.monotonic() + 5
    while not kept.failed and time.monotonic() < deadline:
        time.sleep(0.01)
    kept.close()
    assert len(calls) == 4 and [e["detail"]["id"] for e in kept.failed] == ["m2"]  # three tries, then the DLQ

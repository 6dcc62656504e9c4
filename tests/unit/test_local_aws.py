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


def _streamed_table(ddb: Any) -> str:
    """A table `t` keyed by `id` whose stream carries both images; its stream's ARN."""
    created = ddb.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return str(created["TableDescription"]["LatestStreamArn"])


def test_the_local_stream_trigger_retries_as_lambda_does() -> None:
    """docs.aws.amazon.com/lambda/latest/dg/with-ddb.html ("Error handling", "Reporting batch item failures"):
    a reported record comes back with all after it; a function error halves the batch; a record that keeps
    failing goes to the on-failure destination after MaximumRetryAttempts."""
    import threading

    from local.aws import STREAMS_ENDPOINT, LocalStreamTrigger

    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        arn = _streamed_table(ddb)
        for n in range(6):
            ddb.put_item(TableName="t", Item={"id": {"S": f"r{n}"}, "n": {"N": str(n)}})
        seen: list[list[str]] = []
        script = {"r2": "report", "r4": "raise"}  # r2 reported once; r4 raises every time

        def handler(event: Any, context: Any) -> Any:
            ids = [r["dynamodb"]["Keys"]["id"]["S"] for r in event["Records"]]
            seen.append(ids)
            if "r4" in ids and script["r4"] == "raise":
                raise RuntimeError("poison")
            if ids[0] != "r2" and "r2" in ids and script["r2"] == "report":
                script["r2"] = "done"
                sequence = event["Records"][ids.index("r2")]["dynamodb"]["SequenceNumber"]
                return {"batchItemFailures": [{"itemIdentifier": sequence}]}
            return {"batchItemFailures": []}

        streams = boto3.client("dynamodbstreams", region_name="us-east-1", endpoint_url=STREAMS_ENDPOINT)
        trigger = LocalStreamTrigger(streams, arn, handler, batch_size=6, max_retries=2)
        trigger.retry_delay = 0.0
        stopping = threading.Event()
        thread = threading.Thread(target=trigger.run, args=(stopping,), daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not (trigger.given_up and not trigger.pending) and time.monotonic() < deadline:
            time.sleep(0.02)
        stopping.set()
        thread.join(timeout=5)
    assert seen == [
        ["r0", "r1", "r2", "r3", "r4", "r5"],  # r4 raises: the batch is halved
        ["r0", "r1", "r2"],  # r2 reported: r0 and r1 are done
        ["r2", "r3", "r4", "r5"],  # from r2 on, as a new batch: r4 raises again
        ["r2", "r3"],
        ["r4", "r5"],
        ["r4"], ["r4"], ["r4"],  # three tries (MaximumRetryAttempts 2)...
        ["r5"],
    ]  # fmt: skip
    assert [r["dynamodb"]["Keys"]["id"]["S"] for r in trigger.given_up] == ["r4"]  # ...then the on-failure destination


def test_the_local_stream_reports_an_item_created_by_update_item_once_as_dynamodb_does() -> None:
    """moto reports such an UpdateItem as two INSERTs (the key alone, then the item); DynamoDB as one."""
    import threading

    from local.aws import STREAMS_ENDPOINT, LocalStreamTrigger

    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        arn = _streamed_table(ddb)
        ddb.update_item(
            TableName="t",
            Key={"id": {"S": "m1"}},
            UpdateExpression="SET #s = :s",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": "pending"}},
        )
        ddb.put_item(TableName="t", Item={"id": {"S": "k1"}})  # a real key-only item is reported
        seen: list[Any] = []
        streams = boto3.client("dynamodbstreams", region_name="us-east-1", endpoint_url=STREAMS_ENDPOINT)
        trigger = LocalStreamTrigger(streams, arn, lambda event, context: seen.extend(event["Records"]))
        stopping = threading.Event()
        thread = threading.Thread(target=trigger.run, args=(stopping,), daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        stopping.set()
        thread.join(timeout=5)
    images = [(r["eventName"], r["dynamodb"]["NewImage"]) for r in seen]
    assert images == [
        ("INSERT", {"id": {"S": "m1"}, "status": {"S": "pending"}}),
        ("INSERT", {"id": {"S": "k1"}}),
    ]

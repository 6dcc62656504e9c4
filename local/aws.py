"""AWS resources for the local stack and the tests, made from the deployment's own merge
template (infra/resources.json), and Lambda invocations routed to the Chalice handlers.

moto's Step Functions runs the real ASL, but its Lambda would need Docker to run a
function; `LambdaRouter` answers moto's Invoke with the handler in this process.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "resources.json"
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
# moto serves DynamoDB Streams by its classic name; botocore now asks an account-based one moto does not know.
STREAMS_ENDPOINT = f"https://streams.dynamodb.{REGION}.amazonaws.com"

Handler = Callable[[dict[str, Any], Any], Any]


def template() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(TEMPLATE.read_text())
    return result


def physical_name(stage: str, logical: str) -> str:
    """The template leaves physical names to CloudFormation; locally, a readable one per stage."""
    short = {"SendDeadLetterQueue": "send-dlq", "PollStateMachine": "poll"}.get(logical)
    return f"twilio-connector-{stage}-{short or logical.removesuffix('Table').removesuffix('Queue').lower()}"


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in template()["Resources"].items() if r.get("Type") == kind}


def function_arn(stage: str, name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:twilio-connector-{stage}-{name}"


def state_machine_definition(stage: str) -> str:
    """The poll loop's ASL with its Lambda ARNs filled in, as CloudFormation would."""
    (props,) = resources("AWS::StepFunctions::StateMachine").values()
    text = json.dumps(props["Definition"])
    for placeholder, ref in props["DefinitionSubstitutions"].items():
        logical = ref["Fn::GetAtt"][0]
        text = text.replace("${" + placeholder + "}", function_arn(stage, logical.lower()))
    return text


def gateway_response(response_type: str, message: str) -> tuple[int, bytes]:
    """What the deployed API Gateway answers for one of its own errors (the template's GatewayResponses)."""
    response = template()["Resources"]["RestAPI"]["Properties"]["GatewayResponses"][response_type]
    body = response["ResponseTemplates"]["application/json"].replace(
        "$context.error.messageString", json.dumps(message)
    )
    return int(response.get("StatusCode", 403)), body.encode()


def create_tables(client: Any, stage: str) -> dict[str, str]:
    names: dict[str, str] = {}
    for logical, props in resources("AWS::DynamoDB::Table").items():
        names[logical] = physical_name(stage, logical)
        extra = {k: props[k] for k in ("GlobalSecondaryIndexes", "StreamSpecification") if k in props}
        if "StreamSpecification" in extra:
            extra["StreamSpecification"] = {"StreamEnabled": True, **extra["StreamSpecification"]}
        client.create_table(
            TableName=names[logical],
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
            BillingMode=props["BillingMode"],
            **extra,
        )
    return names


def create_state_machine(client: Any, stage: str) -> str:
    result = client.create_state_machine(
        name=physical_name(stage, "PollStateMachine"),
        definition=state_machine_definition(stage),
        roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/twilio-connector-{stage}-poll",
    )
    return str(result["stateMachineArn"])


def create_queues(client: Any, stage: str) -> dict[str, str]:
    """The send and forward queues and their DLQs, with the template's redrive policies and visibility timeouts."""
    queues = resources("AWS::SQS::Queue")
    fifo = {"FifoQueue": "true"}
    dlq_name = physical_name(stage, "ForwardDeadLetterQueue") + ".fifo"
    forward_dlq = client.create_queue(QueueName=dlq_name, Attributes=fifo)["QueueUrl"]
    forward_arn = client.get_queue_attributes(QueueUrl=forward_dlq, AttributeNames=["QueueArn"])["Attributes"]
    forward = queues["ForwardQueue"]
    forward_redrive = {
        "deadLetterTargetArn": forward_arn["QueueArn"],
        "maxReceiveCount": forward["RedrivePolicy"]["maxReceiveCount"],
    }
    forward_url = client.create_queue(
        QueueName=physical_name(stage, "ForwardQueue") + ".fifo",
        # tried again within seconds locally (deployed: the template's delay and visibility timeout)
        Attributes={
            **fifo,
            "VisibilityTimeout": "2",
            "DelaySeconds": "1",
            "RedrivePolicy": json.dumps(forward_redrive),
        },
    )["QueueUrl"]
    dlq_url = client.create_queue(QueueName=physical_name(stage, "SendDeadLetterQueue"))["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    send = queues["SendQueue"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": send["RedrivePolicy"]["maxReceiveCount"]}
    send_url = client.create_queue(
        QueueName=physical_name(stage, "SendQueue"),
        Attributes={"VisibilityTimeout": str(send["VisibilityTimeout"]), "RedrivePolicy": json.dumps(redrive)},
    )["QueueUrl"]
    return {
        "SendQueue": send_url,
        "SendDeadLetterQueue": dlq_url,
        "ForwardQueue": forward_url,
        "ForwardDeadLetterQueue": forward_dlq,
    }


class PartitionModel:
    """DynamoDB's partition limit, which moto does not have: one partition key takes about 1,000 writes/s
    (DynamoDB developer guide, "Best practices for designing and using partition keys effectively": "a single
    partition ... up to 1,000 write capacity units"), and a global secondary index short of capacity throttles
    writes to its base table ("... throttling on the base table"). Every write counts against its item's key
    and against each index key it adds or removes; past `writes_per_second` on one key in a second, the write
    is refused with ProvisionedThroughputExceededException, as DynamoDB does once the SDK's retries are spent.
    Tables and indexes come from infra/resources.json, by the stage's physical names."""

    def __init__(self, stage: str, writes_per_second: float = 1000.0, second: float = 1.0) -> None:
        self.limit = writes_per_second
        self.second = second
        self.keys: dict[str, tuple[str, dict[str, str]]] = {}  # table -> (hash key, index -> its hash key)
        for logical, props in resources("AWS::DynamoDB::Table").items():
            hash_key = next(k["AttributeName"] for k in props["KeySchema"] if k["KeyType"] == "HASH")
            indexes = {
                i["IndexName"]: next(k["AttributeName"] for k in i["KeySchema"] if k["KeyType"] == "HASH")
                for i in props.get("GlobalSecondaryIndexes", [])
            }
            self.keys[physical_name(stage, logical)] = (hash_key, indexes)
        self.throttled: Counter[tuple[str, str, str]] = Counter()  # (table, index or "", key) -> writes refused
        self.peak: Counter[tuple[str, str, str]] = Counter()  # most writes one key took in a second
        self._recent: dict[tuple[str, str, str], deque[float]] = {}

    def admit(self, client: Any, operation: str, request: Mapping[str, Any]) -> None:
        """Count one write against the keys it touches, or raise as DynamoDB would."""
        touched = [key for write in _writes(operation, request) for key in self._touched(client, *write)]
        now = time.monotonic()
        for key in touched:
            recent = self._recent.setdefault(key, deque())
            while recent and now - recent[0] >= self.second:
                recent.popleft()
            if len(recent) >= self.limit:
                self.throttled[key] += 1
                from botocore.exceptions import ClientError

                message = f"Throughput exceeds the current capacity for one partition key ({key[1] or 'table'})"
                raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": message}},
                                  operation)  # fmt: skip
        for key in touched:
            self._recent[key].append(now)
            self.peak[key] = max(self.peak[key], len(self._recent[key]))

    def _touched(
        self, client: Any, table: str, key: Mapping[str, Any], new: Mapping[str, Any] | None, names: set[str]
    ) -> list[tuple[str, str, str]]:
        if table not in self.keys:
            return []
        hash_key, indexes = self.keys[table]
        found = [(table, "", json.dumps(key.get(hash_key), sort_keys=True, default=str))]
        for index, attribute in indexes.items():
            if attribute not in names and "*" not in names:
                continue
            read = {"ProjectionExpression": "#a", "ExpressionAttributeNames": {"#a": attribute}}
            old = client.get_item(TableName=table, Key=dict(key), **read).get("Item", {}).get(attribute)
            after = (new or {}).get(attribute) if new is not None and attribute in new else None
            if after == old:
                continue  # the index entry does not change: DynamoDB writes nothing to it
            found += [(table, index, json.dumps(v, sort_keys=True, default=str)) for v in (old, after) if v is not None]
        return found


def _writes(
    operation: str, request: Mapping[str, Any]
) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any] | None, set[str]]]:
    """Each item a write request changes: (table, key, the new attribute values it sets if known, the
    attribute names it may change)."""
    if operation == "transact_write_items":
        found = []
        for entry in request.get("TransactItems", []):
            for kind in ("Put", "Update", "Delete"):
                if kind in entry:
                    found += _writes(kind.lower() + "_item", entry[kind])
        return found
    if operation == "batch_write_item":
        found = []
        for table, entries in request.get("RequestItems", {}).items():
            for entry in entries:
                if "PutRequest" in entry:
                    found += _writes("put_item", {"TableName": table, **entry["PutRequest"]})
                if "DeleteRequest" in entry:
                    found += _writes("delete_item", {"TableName": table, **entry["DeleteRequest"]})
        return found
    table = request.get("TableName", "")
    if operation == "put_item":
        item = request.get("Item", {})
        return [(table, item, item, set(item))]
    if operation == "delete_item":
        return [(table, request.get("Key", {}), None, {"*"})]
    if operation == "update_item":
        expression = request.get("UpdateExpression", "")
        aliases = request.get("ExpressionAttributeNames", {})
        names = {aliases.get(word, word) for word in re.findall(r"#?[A-Za-z_][\w]*", expression)}
        values = request.get("ExpressionAttributeValues", {})
        new = {}
        for name, placeholder in re.findall(r"(#?[A-Za-z_]\w*)\s*=\s*(:\w+)", expression):
            if placeholder in values:
                new[aliases.get(name, name)] = values[placeholder]
        return [(table, request.get("Key", {}), new, names)]
    return []


class AtomicClient:
    """A boto3 client whose calls run one at a time, and as strict as DynamoDB where moto is kinder.

    moto checks a ConditionExpression and writes without a lock, so two threads can
    both pass the same condition; DynamoDB does both atomically per item. Serialising
    the calls restores the guarantee the ledger relies on, for tests that run sends
    concurrently. moto also stores a map with an empty key (and then cannot read the item
    back); DynamoDB refuses the write: so does this client.
    """

    _lock = threading.Lock()
    WRITES = ("put_item", "update_item", "delete_item", "batch_write_item", "transact_write_items")

    def __init__(self, client: Any, partitions: PartitionModel | None = None) -> None:
        self._client = client
        self.partitions = partitions

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if name in ("put_item", "update_item", "batch_write_item"):
                _refuse_empty_map_keys(name, kwargs)
            with self._lock:
                if self.partitions is not None and name in self.WRITES:
                    self.partitions.admit(self._client, name, kwargs)
                return attr(*args, **kwargs)

        return call


def _refuse_empty_map_keys(operation: str, request: Any) -> None:
    def empty_key(value: Any) -> bool:
        if isinstance(value, dict):
            if "M" in value and isinstance(value["M"], dict) and "" in value["M"]:
                return True
            return any(empty_key(v) for v in value.values())
        if isinstance(value, list):
            return any(empty_key(v) for v in value)
        return False

    if empty_key(request.get("Item")) or empty_key(request.get("ExpressionAttributeValues")):
        from botocore.exceptions import ClientError

        error = {"Code": "ValidationException", "Message": "One or more parameter values were invalid: empty map key"}
        raise ClientError({"Error": error}, operation)


class FunctionUrlGate:
    """What AWS does in front of a function URL: at most 10 requests/s per unit of the function's reserved
    concurrency (Lambda developer guide, function URLs: "Your function's maximum request rate per second
    (RPS) is equivalent to 10 times the configured reserved concurrency"), and at most its reserved
    concurrency running at once; above either, 429. `reserved=None` lets everything through. `second` is how
    long a second lasts here: the local world runs Twilio's time `time_scale` times faster, callbacks too."""

    RPS_PER_UNIT = 10

    def __init__(self, reserved: int | None, second: float = 1.0) -> None:
        self.reserved = reserved
        self.second = second
        self.admitted = 0
        self.refused = 0
        self.peak = 0  # most requests running at once
        self._in_flight = 0
        self._recent: deque[float] = deque()
        self._lock = threading.Lock()

    def enter(self) -> bool:
        """True if the request runs (then `leave` when it is done), False if AWS would answer 429."""
        with self._lock:
            now = time.monotonic()
            while self._recent and now - self._recent[0] >= self.second:
                self._recent.popleft()
            limited = self.reserved is not None and (
                len(self._recent) >= self.RPS_PER_UNIT * self.reserved or self._in_flight >= self.reserved
            )
            if limited:
                self.refused += 1
                return False
            self._recent.append(now)
            self._in_flight += 1
            self.admitted += 1
            self.peak = max(self.peak, self._in_flight)
            return True

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    # what a function URL answers when it throttles (Lambda: TooManyRequestsException, 429)
    THROTTLED = (429, {"Content-Type": "application/json", "x-amzn-ErrorType": "TooManyRequestsException"},
                 b'{"Message":"Rate Exceeded."}')  # fmt: skip


class LambdaRouter:
    """Routes moto's Lambda Invoke (as Step Functions makes it) to handlers in this process.

    An exception becomes an Unhandled function error whose errorType is the exception's
    class name, which is what the ASL's Retry and Catch match, as on AWS.
    """

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.timeouts: dict[str, float] = {}
        self.reserved: dict[str, int] = {}
        self.running: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def register(
        self, function_name: str, handler: Handler, timeout_s: float = 60.0, reserved: int | None = None
    ) -> None:
        """A handler for a function; `reserved`: its reserved concurrency, past which Lambda throttles an
        invoke, which Step Functions sees as Lambda.TooManyRequestsException (and its Retry may catch)."""
        self.routes[function_name] = handler
        self.timeouts[function_name] = timeout_s
        if reserved is not None:
            self.reserved[function_name] = reserved

    def _invoke(self, response: Any) -> tuple[int, dict[str, str], bytes]:
        from urllib.parse import unquote

        name = unquote(response.path.rsplit("/", 2)[-2]).rsplit(":", 1)[-1]
        handler = self.routes.get(name)
        if handler is None:
            body = {"errorType": "ResourceNotFoundException", "errorMessage": f"no local handler for {name}"}
            return 404, {"content-type": "application/json"}, json.dumps(body).encode()
        event = json.loads(response.body or "{}")
        headers = {"content-type": "application/json"}
        with self._lock:
            self.calls.append((name, event))
            if self.running[name] >= self.reserved.get(name, 1 << 30):
                self.throttled[name] += 1
                headers["x-amz-function-error"] = "Unhandled"  # moto hands Step Functions the payload's errorType
                throttled = {"errorType": "Lambda.TooManyRequestsException", "errorMessage": "Rate Exceeded."}
                return 200, headers, json.dumps(throttled).encode()
            self.running[name] += 1
        try:
            payload: Any = handler(event, _Context(name, self.timeouts.get(name, 60.0)))
        except Exception as exc:
            headers["x-amz-function-error"] = "Unhandled"
            payload = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
        finally:
            with self._lock:
                self.running[name] -= 1
        return 200, headers, json.dumps(payload).encode()

    @contextmanager
    def installed(self) -> Iterator[LambdaRouter]:
        from moto.awslambda.responses import LambdaResponse

        router = self

        def invoke(response: Any) -> tuple[int, dict[str, str], bytes]:
            return router._invoke(response)

        with mock.patch.object(LambdaResponse, "invoke", invoke):
            yield self


@contextmanager
def linear_sqs_receive() -> Iterator[None]:
    """Make moto's ReceiveMessage cost O(backlog), not O(backlog²), and SendMessage O(1), not O(backlog); and
    keep a FIFO group's order when its messages come back after their visibility timeout, as SQS does.

    For every message it hands out, moto 5.x computes *all* of the queue's attributes
    (three passes over every message, for the approximate counts) to read one of them,
    the retention period. With thousands queued that dominated a local run's CPU.
    """
    from moto.core.utils import camelcase_to_underscores, unix_time
    from moto.sqs.models import Queue, SQSBackend

    def still_retained(backend: Any, queue_name: str, message: Any) -> bool:
        retention = int(backend.get_queue(queue_name).message_retention_period)
        return bool(retention + message.sent_timestamp / 1000 > unix_time())

    class LazyAttributes(Mapping[str, Any]):
        """The queue's attributes, each computed when read: SendMessage reads one of them
        (ContentBasedDeduplication) per message, which made putting n messages O(n²)."""

        def __init__(self, queue: Any) -> None:
            self.queue = queue
            names = list(queue.BASE_ATTRIBUTES)
            names += list(queue.FIFO_ATTRIBUTES) if queue.fifo_queue else []
            names += list(queue.KMS_ATTRIBUTES) if queue.kms_master_key_id else []
            names += ["Policy"] if queue.policy else []
            names += ["RedrivePolicy"] if queue.redrive_policy else []
            self.names = names

        def __getitem__(self, key: str) -> Any:
            if key not in self.names:
                raise KeyError(key)
            if key == "Policy":
                return self.queue.policy
            if key == "RedrivePolicy":
                return json.dumps(self.queue.redrive_policy)
            value = getattr(self.queue, camelcase_to_underscores(key))
            return str(value).lower() if isinstance(value, bool) else value

        def __iter__(self) -> Iterator[str]:
            return iter(self.names)

        def __len__(self) -> int:
            return len(self.names)

    lazy = property(lambda queue: LazyAttributes(queue))
    receive = SQSBackend.receive_message

    def in_group_order(backend: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        """moto releases a FIFO group's messages whose visibility ran out one at a time as it walks the queue,
        and hands out the group's *last* first (the others still count as pending when it meets them). SQS
        keeps a group's order: release them all first."""
        queue = backend.get_queue(queue_name)
        if queue.fifo_queue:
            for message in [m for m in queue.pending_messages if m.visible]:
                queue.pending_messages.discard(message)
        return receive(backend, queue_name, *args, **kwargs)

    with (
        mock.patch.object(SQSBackend, "is_message_valid_based_on_retention_period", still_retained),
        mock.patch.object(Queue, "attributes", lazy),
        mock.patch.object(SQSBackend, "receive_message", in_group_order),
    ):
        yield


class _Context:
    """Lambda's context object: the time left counts down from the function's timeout."""

    def __init__(self, name: str, timeout_s: float = 60.0) -> None:
        self.function_name = name
        self.aws_request_id = "local"
        self.memory_limit_in_mb = 256
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
        self._ends = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._ends - time.monotonic()) * 1000))


def function_url_event(method: str, path: str, headers: dict[str, str], body: bytes, domain: str) -> dict[str, Any]:
    """An HTTP request as a Lambda function URL hands it to its function (payload format 2.0)."""
    import base64

    raw_path, _, query = path.partition("?")
    return {
        "version": "2.0",
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": {k.lower(): v for k, v in headers.items()},
        "body": base64.b64encode(body).decode(),
        "isBase64Encoded": True,
        "requestContext": {"domainName": domain, "http": {"method": method, "path": raw_path}},
    }


class LocalStreamTrigger:
    """Lambda's DynamoDB stream trigger as the template configures the outbox's (infra/resources.json): batches
    in the stream's order; a reported record and everything after it come back; a function error bisects the
    batch; a record still failing after `max_retries` goes to the on-failure destination (`given_up`)."""

    def __init__(
        self,
        streams: Any,
        stream_arn: str,
        handler: Handler,
        batch_size: int = 100,
        max_retries: int = 5,
        batch_window: float = 0.0,
    ) -> None:
        self.streams = streams
        self.stream_arn = stream_arn
        self.handler = handler
        self.batch_size = batch_size
        self.batch_window = batch_window  # MaximumBatchingWindowInSeconds: gather for this long, unless full
        self.max_retries = max_retries
        self.retry_delay = 0.1
        self.pending: list[dict[str, Any]] = []
        self.iterators: dict[str, str] = {}
        self._held: dict[str, list[dict[str, Any]]] = {}  # per shard, a key-only INSERT awaiting the next read
        self.invocations = 0
        self.given_up: list[dict[str, Any]] = []
        self.last_error: str | None = None

    def run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                if not self.pending:
                    self._read()
                if not self.pending:
                    stopping.wait(0.05)
                    continue
                gathering_ends = time.monotonic() + self.batch_window
                while len(self.pending) < self.batch_size and time.monotonic() < gathering_ends:
                    stopping.wait(min(0.05, self.batch_window))
                    self._read()
                done = self.deliver(self.pending[: self.batch_size], stopping)
                del self.pending[:done]
            except Exception as exc:
                self.last_error = repr(exc)
                stopping.wait(0.1)

    def _read(self) -> None:
        shards = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id not in self.iterators:
                self.iterators[shard_id] = self.streams.get_shard_iterator(
                    StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            answer = self.streams.get_records(ShardIterator=self.iterators[shard_id], Limit=1000)
            self.iterators[shard_id] = answer.get("NextShardIterator") or self.iterators[shard_id]
            fresh = list(answer.get("Records", []))
            records = self._held.pop(shard_id, []) + fresh
            if fresh and _key_only_insert(records[-1]):  # its second half may come with the next read
                self._held[shard_id] = [records.pop()]
            records = [r for i, r in enumerate(records) if not _moto_first_half(r, records[i + 1 : i + 2])]
            self.pending += [lambda_stream_record(r, self.stream_arn) for r in records]

    def deliver(self, batch: list[dict[str, Any]], stopping: threading.Event) -> int:
        """How many records from the front of `batch` are done (handled, or given up on)."""
        for _attempt in range(self.max_retries + 1):
            if stopping.is_set():
                return 0
            self.invocations += 1
            try:
                result = self.handler({"Records": batch}, _Context("twilio-connector-outbox"))
            except Exception as exc:  # a function error: Lambda bisects the batch (BisectBatchOnFunctionError)
                self.last_error = repr(exc)
                if len(batch) > 1:
                    half = len(batch) // 2
                    done = self.deliver(batch[:half], stopping)
                    return done if done < half else half + self.deliver(batch[half:], stopping)
                stopping.wait(self.retry_delay)
                continue
            failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
            sequences = [r["dynamodb"]["SequenceNumber"] for r in batch]
            first = min((sequences.index(f) for f in failed if f in sequences), default=None)
            if first is None:
                return len(batch)
            if first > 0:
                return first  # done up to it: the rest comes back as the next batch
            stopping.wait(self.retry_delay)
        self.given_up.append(batch[0])
        return 1


def _key_only_insert(record: Mapping[str, Any]) -> bool:
    change = record["dynamodb"]
    return record.get("eventName") == "INSERT" and set(change.get("NewImage") or {}) == set(change.get("Keys") or {})


def _moto_first_half(record: Mapping[str, Any], following: Sequence[Mapping[str, Any]]) -> bool:
    """moto reports an UpdateItem that creates an item as two INSERTs, the first of the key alone; DynamoDB
    reports one (the item as written). The first is dropped, so the stream reads as DynamoDB's does."""
    return (
        _key_only_insert(record)
        and bool(following)
        and following[0].get("eventName") == "INSERT"
        and following[0]["dynamodb"].get("Keys") == record["dynamodb"].get("Keys")
    )


def scheduled_event(rule: str) -> dict[str, Any]:
    """EventBridge's event for a scheduled rule (docs.aws.amazon.com/eventbridge/latest/ref/events-ref-scheduled.html),
    as Lambda hands it to a Chalice `@app.schedule` function."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{rule}"],
        "detail": {},
    }


def lambda_stream_record(record: Mapping[str, Any], stream_arn: str) -> dict[str, Any]:
    """A DynamoDB Streams record (boto3's shape) as Lambda hands it to a function: the time in epoch seconds."""
    change = dict(record["dynamodb"])
    when = change.get("ApproximateCreationDateTime")
    if when is not None and hasattr(when, "timestamp"):
        change["ApproximateCreationDateTime"] = when.timestamp()
    return {
        "eventID": record.get("eventID"),
        "eventName": record.get("eventName"),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": change,
        "eventSourceARN": stream_arn,
    }

"""AWS resources for the local stack and the tests, made from the deployment's own merge
template (infra/resources.json), and Lambda invocations routed to the Chalice handlers.

moto's Step Functions runs the real ASL, but its Lambda would need Docker to run a
function; `LambdaRouter` answers moto's Invoke with the handler in this process.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "resources.json"
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"

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
        extra = {"GlobalSecondaryIndexes": props["GlobalSecondaryIndexes"]} if "GlobalSecondaryIndexes" in props else {}
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
    """The send queue and its DLQ, with the template's redrive policy and visibility timeout."""
    queues = resources("AWS::SQS::Queue")
    dlq_url = client.create_queue(QueueName=physical_name(stage, "SendDeadLetterQueue"))["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    send = queues["SendQueue"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": send["RedrivePolicy"]["maxReceiveCount"]}
    send_url = client.create_queue(
        QueueName=physical_name(stage, "SendQueue"),
        Attributes={"VisibilityTimeout": str(send["VisibilityTimeout"]), "RedrivePolicy": json.dumps(redrive)},
    )["QueueUrl"]
    return {"SendQueue": send_url, "SendDeadLetterQueue": dlq_url}


class AtomicClient:
    """A boto3 client whose calls run one at a time, and as strict as DynamoDB where moto is kinder.

    moto checks a ConditionExpression and writes without a lock, so two threads can
    both pass the same condition; DynamoDB does both atomically per item. Serialising
    the calls restores the guarantee the ledger relies on, for tests that run sends
    concurrently. moto also stores a map with an empty key (and then cannot read the item
    back); DynamoDB refuses the write: so does this client.
    """

    _lock = threading.Lock()

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if name in ("put_item", "update_item", "batch_write_item"):
                _refuse_empty_map_keys(name, kwargs)
            with self._lock:
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


class LambdaRouter:
    """Routes moto's Lambda Invoke (as Step Functions makes it) to handlers in this process.

    An exception becomes an Unhandled function error whose errorType is the exception's
    class name, which is what the ASL's Retry and Catch match, as on AWS.
    """

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def register(self, function_name: str, handler: Handler) -> None:
        self.routes[function_name] = handler

    def _invoke(self, response: Any) -> tuple[int, dict[str, str], bytes]:
        from urllib.parse import unquote

        name = unquote(response.path.rsplit("/", 2)[-2]).rsplit(":", 1)[-1]
        handler = self.routes.get(name)
        if handler is None:
            body = {"errorType": "ResourceNotFoundException", "errorMessage": f"no local handler for {name}"}
            return 404, {"content-type": "application/json"}, json.dumps(body).encode()
        event = json.loads(response.body or "{}")
        with self._lock:
            self.calls.append((name, event))
        headers = {"content-type": "application/json"}
        try:
            payload: Any = handler(event, _Context(name))
        except Exception as exc:
            headers["x-amz-function-error"] = "Unhandled"
            payload = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
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
    """Make moto's ReceiveMessage cost O(backlog), not O(backlog²), and SendMessage O(1), not O(backlog).

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
    with (
        mock.patch.object(SQSBackend, "is_message_valid_based_on_retention_period", still_retained),
        mock.patch.object(Queue, "attributes", lazy),
    ):
        yield


class _Context:
    def __init__(self, name: str) -> None:
        self.function_name = name
        self.aws_request_id = "local"
        self.memory_limit_in_mb = 256
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"

    def get_remaining_time_in_millis(self) -> int:
        return 60000


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


class LocalEventBus:
    """EventBridge with the template's rule: every event goes to the bus (moto), and a status change that
    carries a `status_callback` invokes the forward function asynchronously, with Lambda's two retries."""

    def __init__(self, inner: Any, forward: Handler, workers: int = 4, retry_delay: float = 0.5) -> None:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self._closed = threading.Event()
        self.inner = inner
        self.forward = forward
        self.retry_delay = retry_delay
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eventbridge")
        self.delivered = 0
        self.failed: list[dict[str, Any]] = []  # what the forward DLQ would hold
        self.last_error: str | None = None

    def publish(self, detail_type: str, details: Any) -> None:
        from chalicelib.domain.events import OPTED_OUT, REPLY_RECEIVED, SOURCE, STATUS_CHANGED

        self.inner.publish(detail_type, details)
        if detail_type not in (STATUS_CHANGED, REPLY_RECEIVED, OPTED_OUT):
            return
        for detail in details:
            if detail.get("write_back"):  # the template's rule
                event: dict[str, Any] = {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type}
                event["source"] = SOURCE
                event["account"] = ACCOUNT_ID
                event.update({"region": REGION, "resources": [], "time": detail.get("at"), "detail": dict(detail)})
                self.executor.submit(self._invoke, event)

    def _invoke(self, event: dict[str, Any]) -> None:
        for attempt in range(3):
            if self._closed.is_set():
                return  # the stack is stopping: a retry now would run against torn-down wiring
            try:
                self.forward(event, _Context("twilio-connector-forward"))
                self.delivered += 1
                return
            except Exception as exc:  # Lambda retries an async invoke twice
                self.last_error = repr(exc)
                self._closed.wait(self.retry_delay * (attempt + 1))
        self.failed.append(event)

    def close(self) -> None:
        """No retry after this; invocations under way finish before the wiring they use is reset."""
        self._closed.set()
        self.executor.shutdown(wait=True, cancel_futures=True)

"""The embedded local stack (README, "Quick start"): everything in one process, no AWS account, no Docker.

- moto (in-process) for SQS, DynamoDB, Secrets Manager, EventBridge and Step Functions,
  the latter executing the real ASL from infra/resources.json;
- every resource created from that same merge template;
- Lambda invocations from Step Functions routed to the Chalice handlers (LambdaRouter);
- an SQS poller that runs the send Lambda with partial-batch semantics;
- Chalice's local server for the HTTP routes and Twilio's webhooks;
- the local Twilio simulator, its callbacks and inbound messages wired to those webhooks.

Tests start it with small intervals; `python -m local.run` starts it for people.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from local import aws as local_aws
from local.aws import AtomicClient, LambdaRouter
from local.twilio_sim import SimConfig, TwilioSimulator

# What Chalice's local gateway says for an unknown route → the API Gateway response type it stands for.
GATEWAY_REFUSALS = {
    "Missing Authentication Token": "MISSING_AUTHENTICATION_TOKEN",
    "Authorization header requires": "INCOMPLETE_SIGNATURE",  # the same, sent with `Authorization: Bearer`
}
FACADE_PREFIX = "/2010-04-01/"
WEBHOOKS_PREFIX = "/twilio/"
SECRET_KEYS = ("account_sid", "auth_token", "secondary_auth_token", "callback_signing_key")


@dataclass
class StackConfig:
    stage: str = "local"
    host: str = "127.0.0.1"
    api_port: int = 0
    retry_interval_ms: int = 1000
    poll_window_seconds: int = 1  # one poll execution per window of sends (deployed: 60 s)
    retry_attempts: int = 5
    time_scale: float = 10.0
    visibility_timeout: int = 2  # seconds before a record handed back is retried locally
    account_sid: str = "AC" + "5" * 32
    auth_token: str = "local-auth-token"  # noqa: S105 - the simulator's, not a real secret
    default_from: str = "+15005550006"
    api_key: str = "local-dev-key"
    use_simulator: bool = True
    verbose: bool = False  # log every HTTP request to the API
    pollers: int = 1  # concurrent send "Lambdas" reading the queue
    batch_size: int = 10  # records per send invocation (SQS hands out 10 per receive; more are gathered)
    batch_window: float = 0.0  # seconds to gather a batch, as Lambda's MaximumBatchingWindowInSeconds
    extra_env: dict[str, str] = field(default_factory=dict)
    # The Twilio-compatible front door's account (docs/user-guide.md, "The Twilio-compatible front door"),
    # served under /2010-04-01 on the API's port.
    facade_account_sid: str = "AC" + "0" * 31 + "1"
    facade_token: str = "local-facade-token"  # noqa: S105 - local only, printed by make run
    facade_dedup_seconds: int = 300
    outbox_batch_size: int = 100  # stream records per outbox invocation (deployed: OUTBOX_BATCH_SIZE)
    poll_timeout_seconds: float = 60.0  # the poll function's timeout (.chalice/config.json): its time budget
    outbox_batch_window: float = 0.0  # seconds to gather them (deployed: OUTBOX_BATCH_WINDOW_SECONDS)
    # The function URLs' reserved concurrency, as `make package` plans it from SEND_RATE (infra/deploy.py):
    # the webhooks and the front door take 10 requests/s per unit and refuse the rest with 429, as on AWS.
    # None: the plan for this send rate; 0: no cap.
    send_rate: float = 10.0
    # DynamoDB's ~1,000 writes/s on one partition key (local.aws.PartitionModel); None: no limit.
    partition_writes_per_second: float | None = 1000.0
    webhooks_reserved: int | None = None
    facade_reserved: int | None = None
    poll_reserved: int | None = None  # the poll function's, past which Lambda throttles the state machine's invoke
    release_every: float | None = 60.0  # seconds between runs of the release function (deployed: each minute)


class LocalStack:
    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.router = LambdaRouter()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._exits: list[Any] = []
        # What sends traffic into the stack (Twilio's callbacks, the API's handlers): stopped first, so no
        # late callback runs a handler after the wiring is reset and moto stopped (it would build a client
        # for the real AWS endpoint).
        self._sources: list[Any] = []
        self._saved_env: dict[str, str | None] = {}
        self.simulator: TwilioSimulator | None = None
        self.send_invocations = 0
        rate = self.config.partition_writes_per_second
        self.partitions = None if rate is None else local_aws.PartitionModel(self.config.stage, rate)
        from infra.deploy import capacity_plan

        plan = capacity_plan({"SEND_RATE": str(self.config.send_rate)})
        self.poll_reserved = plan["Poll"] if self.config.poll_reserved is None else (self.config.poll_reserved or None)
        self.url_gates = {
            name: local_aws.FunctionUrlGate(
                plan[name] if reserved is None else (reserved or None), 1.0 / self.config.time_scale
            )
            for name, reserved in (("Webhooks", self.config.webhooks_reserved), ("Facade", self.config.facade_reserved))
        }

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> LocalStack:
        import boto3
        from moto import mock_aws

        cfg = self.config
        self._set_env(
            {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": local_aws.REGION}
        )
        aws = mock_aws(config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}})
        aws.start()
        self._exits.append(aws.stop)
        quick = local_aws.linear_sqs_receive()
        quick.__enter__()
        self._exits.append(lambda: quick.__exit__(None, None, None))

        self.dynamodb = boto3.client("dynamodb")
        self.sqs = boto3.client("sqs")
        self.tables = local_aws.create_tables(self.dynamodb, cfg.stage)
        self.queues = local_aws.create_queues(self.sqs, cfg.stage)
        self.sqs.set_queue_attributes(
            QueueUrl=self.queues["SendQueue"], Attributes={"VisibilityTimeout": str(cfg.visibility_timeout)}
        )
        self.secret_id = f"twilio-connector-{cfg.stage}/twilio"
        self.put_secret({"account_sid": cfg.account_sid, "auth_token": cfg.auth_token, "callback_signing_key": "local"})
        self.state_machine_arn = local_aws.create_state_machine(boto3.client("stepfunctions"), cfg.stage)
        self.api_keys_secret_id = f"twilio-connector-{cfg.stage}/api-keys"
        from chalicelib.entrypoints.api_keys import key_hash

        boto3.client("secretsmanager").create_secret(
            Name=self.api_keys_secret_id,
            SecretString=json.dumps({"keys": [{"name": "local", "sha256": key_hash(cfg.api_key)}]}),
        )

        self.facade_secret_id = f"twilio-connector-{cfg.stage}/facade"
        account = {"account_sid": cfg.facade_account_sid, "auth_token": cfg.facade_token, "friendly_name": "make run"}
        boto3.client("secretsmanager").create_secret(
            Name=self.facade_secret_id, SecretString=json.dumps({"accounts": [account], "keys": []})
        )

        self._start_api()
        if cfg.use_simulator:
            sim_config = SimConfig(cfg.account_sid, cfg.auth_token, time_scale=cfg.time_scale)
            self.simulator = TwilioSimulator(sim_config).start()
            self._sources.append(self.simulator.stop)
            self.simulator.sim.config.inbound_url = f"{self.api_url}/twilio/inbound"
            twilio_env = {"TWILIO_BASE_URL": self.simulator.base_url, "PUBLIC_BASE_URL": self.api_url}
        else:  # real Twilio cannot call back to this machine unless PUBLIC_BASE_URL reaches it
            twilio_env = {"TWILIO_BASE_URL": "", "PUBLIC_BASE_URL": os.environ.get("PUBLIC_BASE_URL", "")}

        self._set_env(
            {
                "MESSAGES_TABLE": self.tables["MessagesTable"],
                "OPTOUTS_TABLE": self.tables["OptOutsTable"],
                "TEMPLATES_TABLE": self.tables["TemplatesTable"],
                "CONNECTIONS_TABLE": self.tables["ConnectionsTable"],
                "SEND_DLQ_URL": self.queues["SendDeadLetterQueue"],
                "FORWARD_QUEUE_URL": self.queues["ForwardQueue"],
                "FORWARD_DLQ_URL": self.queues["ForwardDeadLetterQueue"],
                "COUNTERS_TABLE": self.tables["CountersTable"],
                "SENDERS_TABLE": self.tables["SendersTable"],
                "SEND_QUEUE_NAME": f"twilio-connector-{cfg.stage}-send",
                "TWILIO_SECRET_ID": self.secret_id,
                "API_KEYS_SECRET_ID": self.api_keys_secret_id,
                "TWILIO_DEFAULT_FROM": cfg.default_from,
                **twilio_env,
                "POLL_STATE_MACHINE_ARN": self.state_machine_arn,
                "RETRY_INTERVAL_MS": str(cfg.retry_interval_ms),
                "POLL_WINDOW_SECONDS": str(cfg.poll_window_seconds),
                "RETRY_ATTEMPTS": str(cfg.retry_attempts),
                "SECRET_MAX_AGE_SECONDS": "0",
                "ALLOW_LOCAL_CALLBACKS": "true",  # local receivers: http and loopback
                "FACADE_SECRET_ID": self.facade_secret_id,
                "FACADE_DEDUP_SECONDS": str(cfg.facade_dedup_seconds),
                **cfg.extra_env,
            }
        )
        from chalicelib import wiring

        wiring.reset()
        self._exits.append(wiring.reset)

        import app

        self.app = app
        self.rewire()
        self.router.register(
            f"twilio-connector-{cfg.stage}-poll", app.poll, cfg.poll_timeout_seconds, self.poll_reserved
        )
        self.router.register(f"twilio-connector-{cfg.stage}-finalize", app.finalize)
        patch = self.router.installed()
        patch.__enter__()
        self._exits.append(lambda: patch.__exit__(None, None, None))

        for _ in range(cfg.pollers):
            poller = threading.Thread(target=self._poll_queue, name="sqs-poller", daemon=True)
            poller.start()
            self._threads.append(poller)
        streams = boto3.client("dynamodbstreams", endpoint_url=local_aws.STREAMS_ENDPOINT)  # moto's, by name
        arn = self.dynamodb.describe_table(TableName=self.tables["MessagesTable"])["Table"]["LatestStreamArn"]
        self.outbox = local_aws.LocalStreamTrigger(
            streams, arn, app.outbox, batch_size=cfg.outbox_batch_size, batch_window=cfg.outbox_batch_window
        )
        if cfg.release_every:
            self._threads.append(threading.Thread(target=self._release_each, name="release", daemon=True))
            self._threads[-1].start()
        for target, name in ((self.outbox.run, "stream-poller"), (self._poll_forward_queue, "forward-poller")):
            thread = threading.Thread(target=target, args=(self._stopping,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def release(self) -> dict[str, Any]:
        """One run of the release function, as its schedule starts it."""
        name = f"twilio-connector-{self.config.stage}-release"
        result: dict[str, Any] = self.app.release(local_aws.scheduled_event(name), _context(name))
        return result

    def _release_each(self) -> None:
        interval = float(self.config.release_every or 60)
        while not self._stopping.wait(interval):
            try:
                self.release()
            except Exception as exc:
                print(f"release run failed: {type(exc).__name__}")

    def rewire(self) -> None:
        """Put the stack's own pieces back in the wiring (tests reset it between tests)."""
        from chalicelib import wiring

        wiring.override(dynamodb=AtomicClient(self.dynamodb, self.partitions))

    def stop(self) -> None:
        self._stopping.set()
        joined_by = time.monotonic() + 5  # one deadline for every poller (daemon threads: none holds the exit)
        for thread in self._threads:
            thread.join(timeout=max(0.0, joined_by - time.monotonic()))
        for undo in [*reversed(self._sources), *reversed(self._exits)]:
            try:
                undo()
            except Exception:  # noqa: S112 - best effort: keep tearing the rest down
                continue
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _set_env(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def put_secret(self, value: dict[str, str]) -> None:
        import boto3

        client = boto3.client("secretsmanager")
        body = json.dumps({k: v for k, v in value.items() if k in SECRET_KEYS})
        try:
            client.put_secret_value(SecretId=self.secret_id, SecretString=body)
        except client.exceptions.ResourceNotFoundException:
            client.create_secret(Name=self.secret_id, SecretString=body)

    # --- the API -----------------------------------------------------------------

    def _start_api(self) -> None:
        from chalice.config import Config
        from chalice.local import ChaliceRequestHandler, CustomLocalChalice, LocalChalice, LocalDevServer

        import app

        class Handler(ChaliceRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                if verbose:
                    super().log_message(format, *args)

            def _dispatch(self) -> None:
                """The webhooks and the front door are function URLs when deployed, each behind its cap:
                here they share the API's port."""
                front_door = self.path.startswith(FACADE_PREFIX)
                gate = gates["Facade" if front_door else "Webhooks"]
                if not (front_door or self.path.startswith(WEBHOOKS_PREFIX)):
                    return self._generic_handle()
                if not gate.enter():
                    self.rfile.read(int(self.headers.get("content-length") or 0))
                    status, headers, body = local_aws.FunctionUrlGate.THROTTLED
                    return self._send_http_response(status, dict(headers), body)
                try:
                    return self._generic_handle() if not front_door else self._front_door()
                finally:
                    gate.leave()

            def _front_door(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                event = local_aws.function_url_event(self.command, self.path, dict(self.headers), body, host)
                response = app.facade(event, _context(f"twilio-connector-{stage}-facade"))
                self._send_http_response(response["statusCode"], dict(response.get("headers") or {}), response["body"])

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

            def _send_error_response(self, error: Any) -> None:
                # Chalice's local gateway mimics API Gateway's defaults for an unknown route;
                # the deployed API answers with the template's GatewayResponses instead.
                text = (error.body or b"").decode()
                kind = next((kind for marker, kind in GATEWAY_REFUSALS.items() if marker in text), None)
                if kind is None:
                    return super()._send_error_response(error)
                status, body = local_aws.gateway_response(kind, "Missing Authentication Token")
                self._send_http_response(status, {"Content-Type": "application/json"}, body)

        verbose, stage, host, gates = self.config.verbose, self.config.stage, self.config.host, self.url_gates
        if not isinstance(app.app, CustomLocalChalice):  # what chalice.local.create_local_server does, once
            CustomLocalChalice.__bases__ = (LocalChalice, app.app.__class__)
            app.app.__class__ = CustomLocalChalice
        config = Config.create(chalice_stage=self.config.stage, app_name="twilio-connector", lambda_timeout=60)
        server = LocalDevServer(app.app, config, self.config.host, self.config.api_port, handler_cls=Handler)
        server.server.timeout = 0.2
        thread = threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self._sources.append(server.server.server_close)
        self._sources.append(server.shutdown)
        host, port = server.server.server_address[:2]
        self.api_url = f"http://{host}:{port}"
        self.facade_url = f"{self.api_url}{FACADE_PREFIX.rstrip('/')}"

    # --- SQS -> the send Lambda ----------------------------------------------------

    def enqueue(self, body: dict[str, Any] | str, attributes: dict[str, str] | None = None) -> str:
        message: dict[str, Any] = {
            "QueueUrl": self.queues["SendQueue"],
            "MessageBody": body if isinstance(body, str) else json.dumps(body),
        }
        if attributes:
            message["MessageAttributes"] = {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()}
        return str(self.sqs.send_message(**message)["MessageId"])

    def backlog(self) -> int:
        """Messages in the send queue, waiting or being worked on."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queues["SendQueue"],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(v) for v in attributes.values())

    def wait_for_room(self, limit: int = 500, timeout: float = 30.0) -> None:
        """Hold a producer while the queue holds `limit` or more, as a paced event stream would.

        moto's SendMessage costs O(backlog) (it computes every queue attribute), so a
        producer that dumps thousands at once measures moto, not the connector.
        """
        give_up = time.monotonic() + timeout
        while self.backlog() >= limit and time.monotonic() < give_up:
            self._stopping.wait(0.2)

    def _poll_queue(self) -> None:
        url = self.queues["SendQueue"]
        while not self._stopping.is_set():
            received: list[dict[str, Any]] = []
            window_ends = time.monotonic() + self.config.batch_window
            try:
                while len(received) < self.config.batch_size:
                    got = self.sqs.receive_message(
                        QueueUrl=url,
                        MaxNumberOfMessages=min(10, self.config.batch_size - len(received)),
                        WaitTimeSeconds=0,
                        MessageAttributeNames=["All"],
                        AttributeNames=["All"],
                    ).get("Messages", [])
                    received += got
                    if not got and (not received or time.monotonic() >= window_ends):
                        break
                    if not got:
                        self._stopping.wait(0.1)
            except Exception:  # noqa: S112 - moto is shutting down
                continue
            if not received:
                self._stopping.wait(0.25)  # moto's receive is CPU work under our GIL: don't spin
                continue
            self.run_send_batch(received)

    def run_send_batch(self, received: list[dict[str, Any]]) -> list[str]:
        """Invoke the send Lambda as Lambda's SQS poller does; delete what it did not hand back."""
        self.send_invocations += 1
        return self._run_sqs_batch("SendQueue", self.app.send, "send", received)

    def _run_sqs_batch(self, queue: str, handler: Any, function: str, received: list[dict[str, Any]]) -> list[str]:
        event = {"Records": [_lambda_record(m, self.queues[queue]) for m in received]}
        try:
            result = handler(event, _context(f"twilio-connector-{self.config.stage}-{function}"))
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        except Exception:
            failed = {m["MessageId"] for m in received}  # the whole batch comes back
        done = [m for m in received if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            self.sqs.delete_message_batch(
                QueueUrl=self.queues[queue],
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        return sorted(failed)

    def _poll_forward_queue(self, stopping: threading.Event) -> None:
        """Lambda's SQS poller for the forward function: the write-backs the outbox parked."""
        while not stopping.is_set():
            try:
                received = self.sqs.receive_message(
                    QueueUrl=self.queues["ForwardQueue"],
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=0,
                    AttributeNames=["All"],  # Lambda's event carries MessageGroupId
                ).get("Messages", [])
            except Exception:
                received = []
            if received:
                self._run_sqs_batch("ForwardQueue", self.app.forward, "forward", received)
            else:
                stopping.wait(0.25)


def _lambda_record(message: dict[str, Any], queue_url: str) -> dict[str, Any]:
    name = queue_url.rsplit("/", 1)[-1]
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {
            k: {"stringValue": v.get("StringValue"), "dataType": v.get("DataType", "String")}
            for k, v in (message.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{local_aws.REGION}:{local_aws.ACCOUNT_ID}:{name}",
        "awsRegion": local_aws.REGION,
    }


def _context(name: str) -> Any:
    from local.aws import _Context

    context = _Context(name)
    context.aws_request_id = str(uuid.uuid4())
    return context

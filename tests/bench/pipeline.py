"""Pipeline throughput through the local stack (SQS → send → simulator → DynamoDB → callback),
and the AWS bill those messages would run up, from the calls actually counted.

Prices: published us-east-1 list prices (x86 Lambda, Step Functions Standard, DynamoDB
on-demand, SQS standard, EventBridge custom events, Secrets Manager, API Gateway REST).
The outbox function's reads of the table's stream cost nothing: "Read requests made by AWS Lambda-based
consumers of DynamoDB Streams are free" (docs.aws.amazon.com/amazondynamodb/latest/developerguide/
CostOptimization_StreamsUsage.html); a transactional write costs two write units per item up to 1 KB.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PRICES = {
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second": 0.0000166667,
    "sfn_transition": 25.0 / 1e6,
    "dynamodb_wru": 0.625 / 1e6,
    "dynamodb_rru": 0.125 / 1e6,
    "sqs_request": 0.40 / 1e6,
    "eventbridge_event": 1.00 / 1e6,
    "secrets_call": 0.05 / 1e4,
    "apigw_request": 3.50 / 1e6,
}
MEMORY_GB = {"send": 0.25, "poll": 0.25, "finalize": 0.125, "api": 0.125, "outbox": 0.25}
# Assumed waits per invocation on top of measured CPU: DynamoDB/EventBridge round trips of
# ~10 ms, and for a send batch a round of 200 ms Twilio creates per SEND_CONCURRENCY records.
NETWORK_WAIT = {"send": 0.1, "poll": 0.3, "finalize": 0.05, "api": 0.05, "outbox": 0.03}
TWILIO_ROUND_S, SEND_CONCURRENCY = 0.2, 10
WRITES = {"UpdateItem", "PutItem", "DeleteItem"}


@dataclass
class Meter:
    """AWS calls and Lambda time, counted while the pipeline runs."""

    calls: Counter[str] = field(default_factory=Counter)
    wru: float = 0.0
    rru: float = 0.0
    events: int = 0
    invocations: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def api_call(self, service: str, operation: str, params: dict[str, Any]) -> None:
        if threading.current_thread().name in ("sqs-poller", "forward-poller") and service == "sqs":
            return  # the local pollers stand in for Lambda's; their SQS calls are modelled below
        with self.lock:
            self.calls[f"{service}.{operation}"] += 1
            if service == "dynamodb":
                if operation in WRITES:
                    expression = params.get("UpdateExpression", "")
                    indexed = ("#to", "#created_at", "#poll_window", "REMOVE poll_window")
                    gsi = any(k in expression for k in indexed) or operation == "PutItem"
                    self.wru += 2 if gsi else 1  # items stay under 1 KB; a write of the index keys also writes the GSI
                elif operation == "TransactWriteItems":
                    self.wru += 2 * len(params["TransactItems"])  # counters: a marker and a day's item
                elif operation == "GetItem":
                    self.rru += 1
                elif operation == "BatchGetItem":
                    self.rru += sum(len(v["Keys"]) for v in params["RequestItems"].values())
                elif operation == "Query":
                    self.rru += 1 if params.get("ConsistentRead") else 0.5
            elif service == "events" and operation == "PutEvents":
                self.events += len(params["Entries"])

    def timed(self, name: str, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Count an invocation and bill it as Lambda would, from a duration estimated here.

        Wall time in this process is inflated by every other thread holding the GIL, so the
        estimate is the handler thread's own CPU time (moto's emulation of its AWS calls
        included) plus NETWORK_WAIT for the waits on AWS and Twilio that a real run has.
        """

        def run(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            records = len(args[0]) if name == "send" and args else 0
            try:
                return handler(*args, **kwargs)
            finally:
                rounds = -(-records // SEND_CONCURRENCY)
                spent = time.thread_time() - started + NETWORK_WAIT[name] + rounds * TWILIO_ROUND_S
                with self.lock:
                    self.invocations[name] += 1
                    self.seconds[name] = self.seconds.get(name, 0.0) + spent

        return run


def install_meter(meter: Meter) -> Callable[[], None]:
    from botocore.client import BaseClient

    original = BaseClient._make_api_call

    def counted(client: Any, operation: str, params: dict[str, Any]) -> Any:
        meter.api_call(client.meta.service_model.endpoint_prefix, operation, params)
        return original(client, operation, params)

    BaseClient._make_api_call = counted

    def undo() -> None:
        BaseClient._make_api_call = original

    return undo


def run(
    messages: int,
    time_scale: float = 20.0,
    arrivals_per_second: float | None = None,
    poll_window: int = 120,
    batch_window: float = 2.0,
    outbox_window: float = 15.0,
    status_events: str = "none",
) -> dict[str, Any]:
    """Messages through the local stack. A burst (the default) is posted as fast as the stack takes it;
    with `arrivals_per_second`, one message at a time at that rate (a trickle)."""
    import boto3

    from chalicelib import wiring, wiring_http
    from local.stack import LocalStack, StackConfig
    from tests.bench.progress import Progress

    meter = Meter()
    config = StackConfig(
        # the local partition model reads an item before each index write to know its keys: those reads are
        # the model's, not the connector's, and would be billed here (its limits are tested elsewhere)
        partition_writes_per_second=None,
        stage="bench",
        time_scale=time_scale,
        retry_interval_ms=1000,
        retry_attempts=10,
        poll_window_seconds=poll_window,
        pollers=2,
        visibility_timeout=60,
        batch_size=50,
        batch_window=batch_window,
        outbox_batch_size=1000,
        outbox_batch_window=outbox_window,
    )
    config.extra_env = {"SECRET_MAX_AGE_SECONDS": "300", "STATUS_EVENTS": status_events}
    with LocalStack(config) as stack:
        undo = install_meter(meter)
        stack.run_send_batch = meter.timed("send", stack.run_send_batch)  # type: ignore[method-assign]
        stack.outbox.handler = meter.timed("outbox", stack.outbox.handler)
        for name, handler in list(stack.router.routes.items()):
            stack.router.routes[name] = meter.timed("poll" if name.endswith("-poll") else "finalize", handler)
        hooks = wiring_http.webhooks()
        hooks.status = meter.timed("api", hooks.status)  # type: ignore[method-assign]
        sqs = boto3.client("sqs")
        started = time.perf_counter()
        bodies = [
            {"to": f"+1555{i:07d}", "body": f"Order {i} shipped", "idempotency_key": f"bench-{i}"}
            for i in range(messages)
        ]
        progress = Progress()
        if arrivals_per_second:
            for i, body in enumerate(bodies):
                due = started + i / arrivals_per_second
                time.sleep(max(0.0, due - time.perf_counter()))
                sqs.send_message(QueueUrl=stack.queues["SendQueue"], MessageBody=json.dumps(body))
                progress(f"{messages}-message trickle: {i} posted")
        for start in range(0, messages, 10) if not arrivals_per_second else ():
            if start % 50 == 0:
                stack.wait_for_room()  # posted as an event stream does, never far ahead
                progress(f"{messages}-message run: {start} posted")
            entries = [{"Id": str(j), "MessageBody": json.dumps(b)} for j, b in enumerate(bodies[start : start + 10])]
            sqs.send_message_batch(QueueUrl=stack.queues["SendQueue"], Entries=entries)
        stats = wiring.stats()
        day = time.strftime("%Y-%m-%d", time.gmtime())
        deadline = time.monotonic() + 120 + messages / 2  # the local stack moves ~8/s
        while time.monotonic() < deadline:
            done = stats.totals([day])["by_status"].get("delivered", 0)
            if done >= messages:
                break
            progress(f"{messages}-message run: {done} delivered")
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        assert stack.simulator is not None
        sim = stack.simulator.sim
        settle = time.monotonic() + 60
        while sim.pending_jobs() and time.monotonic() < settle:  # every callback Twilio would send is counted
            time.sleep(0.2)
        sfn = boto3.client("stepfunctions")
        finished = time.monotonic() + poll_window + 60  # the last window's execution polls after it closes
        while time.monotonic() < finished:
            running = sfn.list_executions(stateMachineArn=stack.state_machine_arn, statusFilter="RUNNING")
            if not running["executions"]:
                break
            progress(f"{messages}-message run: waiting for {len(running['executions'])} poll executions")
            time.sleep(0.5)
        transitions = executions = 0
        listed = sfn.get_paginator("list_executions").paginate(stateMachineArn=stack.state_machine_arn)
        for execution in (e for page in listed for e in page["executions"]):
            executions += 1
            history = sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)["events"]
            transitions += sum(1 for e in history if e["type"].endswith("StateEntered"))
        undo()
        # a callback the webhooks' URL refused (429, the local stack's cap) never ran a function: not billed
        callbacks = sum(1 for c in sim.callbacks if c.status_code != 429)
        refused_tries = len(sim.callbacks) - callbacks
        doubles = [k for k, n in stack.simulator.sim.create_counts().items() if n > 1]
    return {
        "messages": messages,
        "delivered": done,
        "seconds": elapsed,
        "per_second": done / elapsed,
        "meter": meter,
        "executions": executions,
        "transitions": transitions,
        "callbacks": callbacks,
        "refused_tries": refused_tries,
        "sent_twice": len(doubles),
    }


def cost_per_million(
    result: dict[str, Any], callbacks_via_api_gateway: bool, naive: bool = False, events: bool = False
) -> dict[str, float]:
    """`events`: priced with the status events the run published (STATUS_EVENTS); else without them."""
    meter: Meter = result["meter"]
    n = result["messages"]
    scale = 1e6 / n
    batches = meter.invocations["send"]
    lambda_requests = sum(meter.invocations.values())
    gb_seconds = sum(meter.seconds[name] * MEMORY_GB[name] for name in meter.seconds)
    transitions = result["transitions"]
    if naive:  # one execution per message: every message pays a whole execution's transitions
        per_execution = transitions / max(result["executions"], 1)
        transitions = per_execution * n
        lambda_requests += (meter.invocations["poll"] + meter.invocations["finalize"]) * (
            n / max(result["executions"], 1) - 1
        )
    sqs_requests = meter.calls["sqs.SendMessageBatch"] + meter.calls["sqs.SendMessage"] + 2 * batches
    costs = {
        "Lambda": (lambda_requests * PRICES["lambda_request"] + gb_seconds * PRICES["lambda_gb_second"]) * scale,
        "Step Functions": transitions * PRICES["sfn_transition"] * scale,
        "DynamoDB": (meter.wru * PRICES["dynamodb_wru"] + meter.rru * PRICES["dynamodb_rru"]) * scale,
        "SQS": sqs_requests * PRICES["sqs_request"] * scale,
        "EventBridge": meter.events * PRICES["eventbridge_event"] * scale if events else 0.0,
        "Secrets Manager": meter.calls["secretsmanager.GetSecretValue"] * PRICES["secrets_call"] * scale,
        "API Gateway (callbacks)": (result["callbacks"] * PRICES["apigw_request"] * scale)
        if callbacks_via_api_gateway
        else 0.0,
    }
    # Lambda's SQS pollers long-poll a queue even when it is empty: 5 pollers, a receive each 20 s,
    # ~648,000 requests a month per queue (the send queue and the forward queue), charged to a month of 1M messages.
    costs["SQS"] += 2 * 5 * 30 * 86_400 / 20 * PRICES["sqs_request"]
    costs["total"] = sum(costs.values())
    return costs

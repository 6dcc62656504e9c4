"""Status tracking through the local stack: moto executing the real ASL, the Lambda router,
Chalice's local server for the webhooks, and the Twilio simulator with its callbacks."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest
import requests
from twilio.request_validator import RequestValidator

from chalicelib import wiring
from chalicelib.domain import rules
from chalicelib.domain.ledger import MessageRecord
from local import aws as local_aws
from local.stack import LocalStack, StackConfig
from local.twilio_sim import CallbackFaults

FROM = "+15005550006"


def wait_until(check: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Harness:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        assert stack.simulator is not None
        self.sim = stack.simulator.sim
        self.sfn = boto3.client("stepfunctions")
        self.validator = RequestValidator(stack.config.auth_token)

    def send(self, to: str, body: str = "Your order shipped", key: str | None = None, **extra: Any) -> str:
        key = key or f"{to}-{body}-{time.monotonic_ns()}"
        self.stack.enqueue({"to": to, "from": FROM, "body": body, "idempotency_key": key, **extra})
        return rules.message_id(key, "")

    def record(self, message_id: str) -> Any:
        return wiring.ledger().get(message_id)

    def wait_status(self, message_id: str, *statuses: str, timeout: float = 20) -> MessageRecord:
        def reached() -> MessageRecord | None:
            record = self.record(message_id)
            return record if record is not None and record.status in statuses else None

        result: MessageRecord = wait_until(reached, timeout, f"{message_id} to reach {statuses}")
        return result

    def executions_done(self) -> list[dict[str, Any]]:
        arn = self.stack.state_machine_arn

        def finished() -> list[dict[str, Any]] | None:
            runs = self.sfn.list_executions(stateMachineArn=arn)["executions"]
            described = [self.sfn.describe_execution(executionArn=r["executionArn"]) for r in runs]
            return described if described and all(d["status"] != "RUNNING" for d in described) else None

        result: list[dict[str, Any]] = wait_until(finished, 30, "poll executions to finish")
        return result

    def post_webhook(
        self, path: str, params: dict[str, str], signature: str | None, query: str = ""
    ) -> requests.Response:
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        return requests.post(f"{self.stack.api_url}{path}{query}", data=params, headers=headers, timeout=10)

    def sign(self, url: str, params: dict[str, str], token: str | None = None) -> str:
        validator = RequestValidator(token) if token else self.validator
        return str(validator.compute_signature(url, params))


def make_stack(**overrides: Any) -> Iterator[Harness]:
    config = StackConfig(stage="test", time_scale=20, retry_interval_ms=1000, retry_attempts=3)
    for key, value in overrides.items():
        setattr(config, key, value)
    with LocalStack(config) as stack:
        yield Harness(stack)


@pytest.fixture
def stack() -> Iterator[Harness]:
    yield from make_stack()


@pytest.fixture
def polling_only() -> Iterator[Harness]:
    """No public URL: Twilio gets no StatusCallback, so only the poll loop can learn the status."""
    yield from make_stack(extra_env={"PUBLIC_BASE_URL": ""})


def test_a_window_too_big_for_one_poll_run_is_polled_a_page_at_a_time_and_finishes() -> None:
    """A poll run with too little time left for another page hands back a cursor; the state machine
    (the real ASL, run by moto) loops straight back to Poll; every message is polled once per attempt."""
    env = {"PUBLIC_BASE_URL": "", "POLL_PAGE_SIZE": "2"}
    for harness in make_stack(extra_env=env, poll_timeout_seconds=20, poll_window_seconds=30):
        ids = [harness.send(f"+1555010004{n}") for n in range(5)]
        for message_id in ids:
            harness.wait_status(message_id, "delivered", timeout=40)
        executions = harness.executions_done()  # one, unless the sends straddled a window's boundary
        entered: list[str] = []
        for execution in executions:
            history = harness.sfn.get_execution_history(executionArn=execution["executionArn"])["events"]
            entered += [e["stateEnteredEventDetails"]["name"] for e in history if e["type"].endswith("StateEntered")]
        assert entered.count("Poll") >= 3 and entered.count("Wait") < entered.count("Poll")  # runs went on at once
        assert all(e["status"] == "SUCCEEDED" for e in executions)
        assert all(harness.record(i).poll_attempts == 1 for i in ids)


@pytest.mark.parametrize("overrides", [True, False], ids=["overrides", "no-overrides"])
def test_callbacks_past_the_webhooks_url_cap_are_refused_and_nothing_is_lost(
    overrides: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS answers 429 past 10 requests/s per reserved unit of a function URL and past its reserved
    concurrency; the local stack does too (here one unit: 10 callbacks a second, one at a time). With
    the callback URL's connection overrides Twilio tries a refused callback again; without them it never
    does, and the poll loop learns what the callback would have said. Either way every message ends
    delivered."""
    if not overrides:
        monkeypatch.setattr("chalicelib.settings.CALLBACK_OVERRIDES", "")
    for harness in make_stack(webhooks_reserved=1, retry_attempts=5):
        ids = [harness.send(f"+155501001{n:02d}") for n in range(30)]
        records = [harness.wait_status(message_id, "delivered", timeout=40) for message_id in ids]
        gate = harness.stack.url_gates["Webhooks"]
        status_calls = [c for c in harness.sim.callbacks if c.kind == "status"]
        refused = [c for c in status_calls if c.status_code == 429]
        retried = [c for c in status_calls if c.attempt > 0]
        assert gate.refused == len(refused) > 0 and gate.peak == 1
        if overrides:
            assert any(c.status_code == 200 for c in retried)  # a refused callback came again and was taken
            assert all("#" not in c.url for c in status_calls)  # the fragment is Twilio's, never sent
        else:
            assert retried == []
            learned = {e["source"] for r in records for e in r.events if e.get("status") == "delivered"}
            assert "poll" in learned  # what a refused `delivered` would have said, the poll loop found
        harness.executions_done()


def test_a_throttled_poll_run_is_tried_again_and_no_window_ends_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the poll function's reserved concurrency Lambda throttles the state machine's invoke
    (Lambda.TooManyRequestsException; the local router does too). The ASL retries it for minutes with
    jittered backoff, apart from the 3 tries other faults get, so a busy hour never finalizes a window early."""
    import app

    real = app.poll

    def slow(event: Any, context: Any) -> Any:
        time.sleep(1.5)  # two windows' runs overlap
        return real(event, context)

    for harness in make_stack(extra_env={"PUBLIC_BASE_URL": ""}, poll_reserved=1, retry_attempts=2):
        harness.stack.router.routes["twilio-connector-test-poll"] = slow
        first = harness.send("+15550100071")
        sent = harness.wait_status(first, "queued")  # handed to Twilio: its window is its send's
        window = int(sent.item["poll_window"])
        while int(time.time()) < window + 1:  # the next poll window (1 s here) before the second is sent
            time.sleep(0.05)
        second = harness.send("+15550100072")
        harness.wait_status(second, "queued", "sent", "delivered")  # sent: its window's execution started
        executions = harness.executions_done()
        assert len(executions) == 2 and all(e["status"] == "SUCCEEDED" for e in executions)
        assert harness.stack.router.throttled["twilio-connector-test-poll"] > 0
        for execution in executions:
            output = json.loads(harness.sfn.describe_execution(executionArn=execution["executionArn"])["output"])
            assert output.get("error") is None  # finalized by its attempts, not by a failed run
        assert {harness.record(i).status for i in (first, second)} == {"delivered"}
    # and for minutes: the retrier that catches a throttle waits ~8 min in all (its jitter halves ~16)
    definition = json.loads(local_aws.state_machine_definition("test"))
    for state in ("Poll", "Finalize"):
        retrier = next(
            r for r in definition["States"][state]["Retry"] if "Lambda.TooManyRequestsException" in r["ErrorEquals"]
        )
        waits = [min(retrier["MaxDelaySeconds"], retrier["IntervalSeconds"] * retrier["BackoffRate"] ** k)
                 for k in range(retrier["MaxAttempts"])]  # fmt: skip
        assert retrier["JitterStrategy"] == "FULL" and sum(waits) / 2 >= 300, state


def test_delivered_through_polling_alone(polling_only: Harness) -> None:
    message_id = polling_only.send("+15550100001")
    record = polling_only.wait_status(message_id, "delivered")
    assert [e["source"] for e in record.events] == ["send", "poll"]
    assert polling_only.sim.callbacks == []
    (execution,) = polling_only.executions_done()
    assert execution["status"] == "SUCCEEDED"
    assert polling_only.record(message_id).poll_attempts >= 1


def test_delivered_by_callback_the_poll_makes_no_fetch_after_it() -> None:
    # The first poll comes 3 s after the send; the callback reports delivery after about 0.2 s.
    for stack in make_stack(retry_interval_ms=3000):
        check_callback_wins(stack)


def check_callback_wins(stack: Harness) -> None:
    message_id = stack.send("+15550100002")
    record = stack.wait_status(message_id, "delivered")
    assert record.events[-1]["source"] == "callback"
    stack.executions_done()
    assert record.twilio_sid and stack.sim.truth(record.twilio_sid)["fetches"] == 0
    assert "twilio-connector-test-poll" in [name for name, _ in stack.stack.router.calls]


def test_stuck_at_sent_is_finalized_after_the_retry_attempts(polling_only: Harness) -> None:
    polling_only.sim.set_scenario("+15550100003", "stuck_sent")
    message_id = polling_only.send("+15550100003")
    (execution,) = polling_only.executions_done()
    record = polling_only.record(message_id)
    assert execution["status"] == "SUCCEEDED"
    assert (record.status, record.poll_attempts, record.item.get("polling")) == ("sent", 3, "exhausted")


def test_undelivered_keeps_twilios_error_code(stack: Harness) -> None:
    stack.sim.set_scenario("+15550100004", "undelivered", 30007)
    record = stack.wait_status(stack.send("+15550100004"), "undelivered")
    assert record.error_code == 30007
    assert record.item.get("raw_dlr_done_date")


def test_duplicate_and_reordered_callbacks_never_move_a_status_back(stack: Harness) -> None:
    stack.sim.callback_faults = CallbackFaults(duplicate=1.0, reorder=1.0)
    message_id = stack.send("+15550100005")
    stack.wait_status(message_id, "delivered")
    wait_until(lambda: len(stack.sim.callbacks) >= 6, what="all duplicated callbacks")
    record = stack.record(message_id)
    statuses = [e["status"] for e in record.events]
    assert record.status == "delivered"
    assert statuses == sorted(statuses, key=lambda s: rules.STATUS_RANK[s]) and len(statuses) == len(set(statuses))


class TestWebhookSignatures:
    @pytest.fixture
    def stack(self) -> Iterator[Harness]:
        """Only this test's own callbacks may change a status: the simulator's are dropped, polls are far off."""
        for harness in make_stack(retry_interval_ms=600_000):
            harness.sim.callback_faults = CallbackFaults(drop=1.0)
            yield harness

    def callback(
        self, stack: Harness, message_id: str, sid: str, status: str = "delivered"
    ) -> tuple[str, dict[str, str]]:
        url = f"{stack.stack.api_url}/twilio/status?{urlencode({'mid': message_id})}"
        params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": stack.stack.config.account_sid}
        return url, params

    def sent_message(self, stack: Harness) -> tuple[str, str]:
        stack.sim.set_scenario("+15550100006", "stuck_sent")
        message_id = stack.send("+15550100006")
        record = stack.wait_status(message_id, "queued", "sent")
        assert record.twilio_sid
        return message_id, record.twilio_sid

    def test_a_callback_signed_with_the_right_token_is_applied(self, stack: Harness) -> None:
        message_id, sid = self.sent_message(stack)
        url, params = self.callback(stack, message_id, sid)
        answer = stack.post_webhook("/twilio/status", params, stack.sign(url, params), f"?mid={message_id}")
        assert answer.status_code == 200
        assert stack.record(message_id).status == "delivered"

    @pytest.mark.parametrize("tamper", ["wrong token", "changed parameter", "changed url", "no signature"])
    def test_a_tampered_callback_is_refused_and_changes_nothing(self, stack: Harness, tamper: str) -> None:
        message_id, sid = self.sent_message(stack)
        url, params = self.callback(stack, message_id, sid)
        signature: str | None = stack.sign(url, params)
        sent_params = dict(params)
        if tamper == "wrong token":
            signature = stack.sign(url, params, token="not-the-token")
        elif tamper == "changed parameter":
            sent_params["MessageStatus"] = "failed"
        elif tamper == "changed url":
            signature = stack.sign(url.replace("/twilio/status", "/twilio/other"), params)
        else:
            signature = None
        before = stack.record(message_id).status
        answer = stack.post_webhook("/twilio/status", sent_params, signature, f"?mid={message_id}")
        assert answer.status_code == 403
        assert stack.record(message_id).status == before

    def test_the_secondary_token_is_accepted_during_rotation(self, stack: Harness) -> None:
        message_id, sid = self.sent_message(stack)
        cfg = stack.stack.config
        stack.stack.put_secret(
            {"account_sid": cfg.account_sid, "auth_token": "new-primary", "secondary_auth_token": cfg.auth_token}
        )
        url, params = self.callback(stack, message_id, sid)
        assert stack.post_webhook("/twilio/status", params, stack.sign(url, params), f"?mid={message_id}").ok
        assert stack.record(message_id).status == "delivered"

    def test_an_unknown_message_gets_200_not_a_retry_storm(self, stack: Harness) -> None:
        url, params = self.callback(stack, "msg_unknown", "SM" + "0" * 32)
        answer = stack.post_webhook("/twilio/status", params, stack.sign(url, params), "?mid=msg_unknown")
        assert answer.status_code == 200


class TestStop:
    def test_stop_blocks_the_next_send_without_a_twilio_call_and_start_allows_it_again(self, stack: Harness) -> None:
        phone = "+15550100007"
        stack.wait_status(stack.send(phone, "first"), "delivered")
        result = stack.sim.inbound(phone, FROM, "Stop")
        assert result["webhook_status"] == 200
        creates_before = len(stack.sim.creates())
        blocked = stack.wait_status(stack.send(phone, "second"), "error")
        assert blocked.error_code == 21610 and len(stack.sim.creates()) == creates_before
        assert stack.sim.inbound(phone, FROM, "START")["webhook_status"] == 200
        stack.wait_status(stack.send(phone, "third"), "delivered")

    def test_a_free_text_reply_is_stored_and_linked_to_the_last_message(self, stack: Harness) -> None:
        phone = "+15550100008"
        message_id = stack.send(phone, "Want 10% off?")
        stack.wait_status(message_id, "delivered")
        sid = stack.sim.inbound(phone, FROM, "Yes please, what's the code?")["sid"]
        reply = stack.record(f"in_{sid}")
        assert reply is not None and reply.item["in_reply_to"] == message_id
        assert reply.item["body"] == "Yes please, what's the code?"

    def test_twilio_refusing_an_unsubscribed_number_marks_it_opted_out(self, stack: Harness) -> None:
        first = stack.wait_status(stack.send("+15005550004", "one"), "error")
        assert first.error_code == 21610
        creates = stack.sim.requests["create"]
        stack.wait_status(stack.send("+15005550004", "two"), "error")
        assert stack.sim.requests["create"] == creates  # the second was refused without a call


@pytest.fixture
def all_events() -> Iterator[Harness]:
    yield from make_stack(extra_env={"STATUS_EVENTS": "all"})


def test_every_status_change_is_published_to_eventbridge(all_events: Harness) -> None:
    stack = all_events
    events_client, sqs = boto3.client("events"), boto3.client("sqs")
    queue = sqs.create_queue(QueueName="captured-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events_client.put_rule(Name="capture", EventPattern=json.dumps({"source": ["twilio.connector"]}))
    events_client.put_targets(Rule="capture", Targets=[{"Id": "q", "Arn": arn}])
    message_id = stack.send("+15550100009", metadata={"campaign": "fall"})
    record = stack.wait_status(message_id, "delivered")
    # Every change the record went through; a poll may see `delivered` before the `sent` callback lands.
    changes = [e["status"] for e in record.events]
    received: list[dict[str, Any]] = []

    def collect() -> bool:
        for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
            received.append(json.loads(m["Body"]))
        return len(received) >= len(changes)

    wait_until(collect, what="an event for every status change")
    details = [e["detail"] for e in received if e["detail-type"] == "Message Status Changed"]
    assert [d["status"] for d in details] == changes
    # `sent` is skipped when `delivered` overtakes it (the ledger only moves forward): not an event lost
    assert changes[0] == "queued" and changes[-1] == "delivered" and set(changes) <= {"queued", "sent", "delivered"}
    assert all(d["id"] == message_id and d["metadata"] == {"campaign": "fall"} for d in details)


def test_every_next_in_the_asl_names_a_state() -> None:
    definition = json.loads(local_aws.state_machine_definition("test"))
    states = definition["States"]
    targets = [definition["StartAt"]]
    for state in states.values():
        targets += [state[k] for k in ("Next", "Default") if k in state]
        targets += [c["Next"] for c in state.get("Choices", []) + state.get("Catch", [])]
    assert set(targets) <= set(states)
    assert any(s.get("End") for s in states.values())
    wait = states[definition["StartAt"]]
    assert wait["Type"] == "Wait" and wait["SecondsPath"] == "$.wait_seconds"

"""The operator's command line against the local stack, as an on-call engineer would run it."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from infra import cli
from local.stack import LocalStack, StackConfig

KEY = "cli-test-key"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    config = StackConfig(stage="cli", api_key=KEY, time_scale=20, retry_interval_ms=1000, retry_attempts=3)
    with LocalStack(config) as running:
        yield running


@pytest.fixture(autouse=True)
def _keep_the_stack_wiring(stack: LocalStack) -> None:
    stack.rewire()


def run(stack: LocalStack, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.run(["--url", stack.api_url, "--key", KEY, *argv], out, sleep=lambda _: None)
    return code, out.getvalue()


def test_send_prints_the_id_and_follows_the_status_until_it_is_final(stack: LocalStack) -> None:
    code, shown = run(stack, "send", "--to", "+15550800001", "--body", "from the CLI")
    lines = shown.splitlines()
    assert code == 0 and lines[0].startswith("msg_")
    assert any("pending via api" in line for line in lines) and "delivered via" in lines[-1]
    code, shown = run(stack, "status", lines[0])
    assert code == 0 and json.loads(shown)["status"] == "delivered"


def test_a_failed_message_or_a_bad_request_exits_non_zero_with_what_to_do(stack: LocalStack, capsys) -> None:
    code, shown = run(stack, "send", "--to", "+15005550001", "--body", "to Twilio's invalid test number")
    assert code == 1 and "error: 21211" in shown.splitlines()[-1]
    assert run(stack, "send", "--to", "+1555", "--body", "x")[0] == 2
    assert "field `to`" in capsys.readouterr().err
    wrong = cli.run(["--url", stack.api_url, "--key", "wrong", "stats"], io.StringIO())
    assert wrong == 2 and "refused the key" in capsys.readouterr().err
    assert cli.run(["--url", "http://127.0.0.1:9", "--key", KEY, "stats"], io.StringIO()) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_stats_connections_and_test_connection(stack: LocalStack) -> None:
    run(stack, "send", "--to", "+15550800002", "--body", "counted")
    code, shown = run(stack, "stats")
    assert code == 0 and json.loads(shown)["by_status"]["delivered"] >= 1
    code, shown = run(stack, "connections", "list")
    assert code == 0 and "default" in shown and "deploy" in shown
    code, shown = run(stack, "test-connection")
    # the local stack fixes the outcome: the simulator's account, its number, and a webhook it can call back
    checks = [line.split()[:2] for line in shown.splitlines() if line.strip()]
    assert code == 0 and checks == [["ok", "credentials:"], ["ok", "sender:"], ["ok", "webhook:"]], shown


def test_the_dlq_is_shown_and_redriven_with_a_dry_run_first(stack: LocalStack) -> None:
    dlq = stack.queues["SendDeadLetterQueue"]
    for n in range(3):
        body = {"to": f"+1555080010{n}", "body": "from the DLQ", "idempotency_key": f"dlq-{n}"}
        stack.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(body))
    code, shown = run(stack, "dlq", "show")
    assert code == 0 and json.loads(shown)["depth"] == 3 and json.loads(shown)["oldest_age_seconds"] is not None
    code, shown = run(stack, "dlq", "redrive", "--dry-run")
    assert json.loads(shown) == {"dry_run": True, "would_move": 3, "depth": 3}
    code, shown = run(stack, "dlq", "redrive")
    assert code == 0 and shown.splitlines()[-1] == "redriven: 3" and "moved 3 so far" in shown
    assert json.loads(run(stack, "dlq", "show")[1])["depth"] == 0
    code, shown = run(stack, "send", "--to", "+15550800100", "--body", "x", "--no-follow")  # the queue still works
    assert code == 0


def test_write_backs_no_platform_took_are_shown_and_redriven_to_their_platform_in_order(stack: LocalStack) -> None:
    """The forward queue's DLQ (FIFO): after about an hour of refusals a write-back waits there; once the
    platform is back, a redrive puts each into its message's group again and the forward function tells them,
    in the order they were refused."""
    from tests.receiver import Receiver

    receiver = Receiver()
    dlq = stack.queues["ForwardDeadLetterQueue"]
    for n, status in enumerate(("queued", "sent", "delivered")):
        detail = {"id": "msg_dlq", "status": status, "status_callback": f"{receiver.url}/back"}
        body = json.dumps({"detail_type": "Message Status Changed", "detail": detail})
        stack.sqs.send_message(QueueUrl=dlq, MessageBody=body, MessageGroupId="msg_dlq", MessageDeduplicationId=str(n))
    code, shown = run(stack, "dlq", "show", "--queue", "forward")
    assert code == 0 and json.loads(shown)["depth"] == 3
    code, shown = run(stack, "dlq", "redrive", "--queue", "forward")
    assert code == 0 and shown.splitlines()[-1] == "redriven: 3"
    told = receiver.wait_for(3, timeout=20)
    assert [json.loads(r["body"])["status"] for r in told] == ["queued", "sent", "delivered"]
    assert json.loads(run(stack, "dlq", "show", "--queue", "forward")[1])["depth"] == 0


def test_an_api_key_made_by_the_cli_opens_the_api(stack: LocalStack) -> None:
    code, shown = run(stack, "api-key", "create", "on-call")
    new_key = shown.splitlines()[-1]
    assert code == 0 and len(new_key) >= 40
    assert cli.run(["--url", stack.api_url, "--key", new_key, "stats"], io.StringIO()) == 0


def test_help_lists_every_command_and_no_url_is_a_clear_refusal() -> None:
    shown = subprocess.run([sys.executable, "-m", "infra.cli", "--help"], capture_output=True, text=True).stdout
    for command in ("send", "status", "stats", "test-connection", "dlq", "api-key", "connections"):
        assert command in shown
    refused = subprocess.run(
        [sys.executable, "-m", "infra.cli", "stats"], capture_output=True, text=True, env={"PATH": "/usr/bin"}
    )
    assert refused.returncode == 2 and "CONNECTOR_URL" in refused.stderr

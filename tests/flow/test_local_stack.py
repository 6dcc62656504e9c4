"""The whole local stack over HTTP, as a CDP sees it: the API, the queue, the simulator as
Twilio, its callbacks and a recipient replying STOP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from local.stack import LocalStack, StackConfig
from local.twilio_sim import Simulator

KEY = "flow-test-key"
FROM = "+15005550006"


class Cdp:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        assert stack.simulator is not None
        self.sim: Simulator = stack.simulator.sim
        self.headers = {"x-api-key": KEY, "Content-Type": "application/json"}

    def post(self, path: str, body: Any, **headers: str) -> requests.Response:
        return requests.post(f"{self.stack.api_url}{path}", json=body, headers={**self.headers, **headers}, timeout=10)

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.stack.api_url}{path}", headers=self.headers, timeout=10)

    def wait_for(self, message_id: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.get(f"/messages/{message_id}")
            if answer.status_code == 200 and answer.json()["status"] in statuses:
                result: dict[str, Any] = answer.json()
                return result
            time.sleep(0.1)
        raise AssertionError(f"{message_id} never reached {statuses}: {self.get(f'/messages/{message_id}').json()}")


@pytest.fixture(scope="module")
def cdp() -> Iterator[Cdp]:
    config = StackConfig(stage="flow", api_key=KEY, time_scale=20, retry_interval_ms=1000, retry_attempts=3)
    with LocalStack(config) as stack:
        yield Cdp(stack)


@pytest.fixture(autouse=True)
def _keep_the_stack_wiring(cdp: Cdp) -> None:
    """The module's stack outlives tests/conftest.py's per-test wiring reset: restore its pieces."""
    cdp.stack.rewire()


def test_messages_sent_through_the_api_reach_their_true_status(cdp: Cdp) -> None:
    cdp.sim.set_scenario("+15550200002", "undelivered", 30006)
    delivered = cdp.post("/messages", {"to": "+15550200001", "body": "Your code is 1234"})
    undelivered = cdp.post("/messages", {"to": "+15550200002", "body": "Your code is 1234"})
    invalid = cdp.post("/messages", {"to": "+15005550001", "body": "magic invalid number"})
    assert [r.status_code for r in (delivered, undelivered, invalid)] == [202, 202, 202]
    assert cdp.wait_for(delivered.json()["id"], "delivered")["events"][0]["source"] == "api"
    assert cdp.wait_for(undelivered.json()["id"], "undelivered")["error_code"] == 30006
    assert cdp.wait_for(invalid.json()["id"], "error")["error_code"] == 21211


def test_an_event_stream_record_on_the_queue_is_sent_too(cdp: Cdp) -> None:
    cdp.stack.enqueue({"to": "+15550200003", "from": FROM, "body": "from the stream", "idempotency_key": "stream-1"})
    from chalicelib.domain import rules

    assert cdp.wait_for(rules.message_id("stream-1", ""), "delivered")["to"] == "+15550200003"


def test_a_replayed_idempotency_key_answers_200_and_sends_once(cdp: Cdp) -> None:
    first = cdp.post("/messages", {"to": "+15550200004", "body": "once"}, **{"Idempotency-Key": "replay-1"})
    cdp.wait_for(first.json()["id"], "delivered")
    again = cdp.post("/messages", {"to": "+15550200004", "body": "once"}, **{"Idempotency-Key": "replay-1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["status"] == "delivered"
    assert cdp.sim.create_counts()[("+15550200004", "once")] == 1


def test_a_stop_reply_blocks_the_next_send(cdp: Cdp) -> None:
    cdp.wait_for(cdp.post("/messages", {"to": "+15550200005", "body": "hello"}).json()["id"], "delivered")
    assert cdp.sim.inbound("+15550200005", FROM, "STOP")["webhook_status"] == 200
    creates = len(cdp.sim.creates())
    blocked = cdp.wait_for(cdp.post("/messages", {"to": "+15550200005", "body": "again"}).json()["id"], "error")
    assert blocked["error_code"] == 21610 and len(cdp.sim.creates()) == creates


def test_the_connection_test_checks_credentials_sender_and_webhook(cdp: Cdp) -> None:
    answer = cdp.post("/connection/test", {})
    assert answer.status_code == 200, answer.json()
    assert [c["check"] for c in answer.json()["checks"]] == ["credentials", "sender", "webhook"]


def test_the_connection_test_names_what_failed(cdp: Cdp) -> None:
    cfg = cdp.stack.config
    cdp.stack.put_secret({"account_sid": cfg.account_sid, "auth_token": "wrong-token"})
    try:
        answer = cdp.post("/connection/test", {})
    finally:
        cdp.stack.put_secret({"account_sid": cfg.account_sid, "auth_token": cfg.auth_token})
    checks = {c["check"]: c for c in answer.json()["checks"]}
    assert answer.status_code == 502 and not answer.json()["ok"]
    assert not checks["credentials"]["ok"] and "20003" in checks["credentials"]["detail"]


def test_stats_count_what_happened(cdp: Cdp) -> None:
    answer = cdp.get("/stats")
    assert answer.status_code == 200
    assert answer.json()["by_status"].get("delivered", 0) >= 1


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "", "Authorization": f"Bearer {KEY}"}])
def test_an_unknown_route_is_404_in_our_error_body_as_on_api_gateway(cdp: Cdp, headers: dict[str, str]) -> None:
    answer = requests.get(f"{cdp.stack.api_url}/mesages/msg_1", headers={**cdp.headers, **headers}, timeout=10)
    error = answer.json()["error"]
    assert answer.status_code == 404 and error["code"] == "not_found" and "GET /messages/{id}" in error["message"]

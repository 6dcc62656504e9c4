"""Guardrails on the local stack (README, "Guardrails"), with a clock the tests set: quiet hours in the
recipient's zone (held by the connector, or scheduled at Twilio where the connection has a messaging service),
a frequency cap, and a daily segment budget an admin raises — nothing sent twice along the way."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from chalicelib import wiring
from local.stack import LocalStack, StackConfig

KEY = "guardrails-test-key"
FROM = "+15005550006"
SERVICE = "MG" + "a" * 32
LA, PHOENIX = ZoneInfo("America/Los_Angeles"), ZoneInfo("America/Phoenix")


class Clock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.at


class World:
    def __init__(self, stack: LocalStack) -> None:
        self.stack, self.clock = stack, Clock()
        self.headers = {"x-api-key": KEY, "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        data = None if body is None else json.dumps(body)
        return requests.request(method, f"{self.stack.api_url}{path}", data=data, headers=self.headers, timeout=10)

    def connection(self, name: str, guardrails: dict[str, Any], **extra: Any) -> None:
        cfg = self.stack.config
        body = {"account_sid": cfg.account_sid, "auth_token": cfg.auth_token, "from_numbers": [FROM], **extra}
        made = self.call("PUT", f"/connections/{name}", {**body, "guardrails": guardrails})
        assert made.status_code in (200, 201), made.text

    def send(self, connection: str, to: str, **fields: Any) -> str:
        body = {"to": to, "body": "Sale starts now", "connection": connection, **fields}
        accepted = self.call("POST", "/messages", body)
        assert accepted.status_code == 202, accepted.text
        return str(accepted.json()["id"])

    def record(self, message_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/messages/{message_id}").json())

    def wait_for(self, message_id: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.record(message_id)
            if record.get("status") in statuses:
                return record
            time.sleep(0.1)
        raise AssertionError(f"{message_id} never reached {statuses}: {self.record(message_id)}")

    def at_twilio(self, to: str) -> list[Any]:
        assert self.stack.simulator is not None
        return [m for m in list(self.stack.simulator.sim.messages.values()) if m.to == to]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    config = StackConfig(stage="guard", api_key=KEY, time_scale=20, release_every=None)
    with LocalStack(config) as stack:
        yield World(stack)


@pytest.fixture(autouse=True)
def _the_tests_clock(world: World) -> None:
    world.stack.rewire()
    world.clock.at = datetime.now(UTC)
    wiring.override(clock=world.clock)


def test_a_los_angeles_number_at_22_30_pacific_is_sent_at_08_00_pacific(world: World) -> None:
    world.connection("night", {"quiet_hours": {"start": "08:00", "end": "21:00"}})
    world.clock.at = datetime(2026, 7, 1, 22, 30, tzinfo=LA).astimezone(UTC)
    la, urgent = "+13105550101", "+13105550102"
    held = world.wait_for(world.send("night", la, category="marketing"), "scheduled")
    opens = datetime(2026, 7, 2, 8, 0, tzinfo=LA).astimezone(UTC)
    assert held["scheduled_for"] == "2026-07-02T15:00:00.000Z" and held["held_reason"] == "quiet_hours"
    # transactional traffic is not held; unmarked traffic counts as marketing
    world.wait_for(world.send("night", urgent, category="transactional"), "delivered", "sent")

    world.clock.at = opens - timedelta(minutes=1)
    world.stack.release()
    time.sleep(1.5)
    assert world.record(held["id"])["status"] == "scheduled" and world.at_twilio(la) == []

    world.clock.at = opens
    assert world.stack.release()["released"] >= 1
    sent = world.wait_for(held["id"], "delivered", "sent")
    assert sent["created_at"] < sent["updated_at"] and [m.to for m in world.at_twilio(la)] == [la]
    statuses = [e["status"] for e in sent["events"]]
    assert statuses[:2] == ["pending", "scheduled"] and statuses[-1] in ("sent", "delivered")
    world.stack.release()  # a second run, and the original request delivered again: still one message
    assert len(world.at_twilio(la)) == 1


def test_a_phoenix_number_keeps_arizonas_time_in_winter(world: World) -> None:
    world.connection("winter", {"quiet_hours": {"start": "08:00", "end": "21:00"}})
    world.clock.at = datetime(2026, 1, 15, 5, 30, tzinfo=UTC)  # 22:30 in Phoenix (no DST), 21:30 in LA
    phoenix = world.wait_for(world.send("winter", "+16025550103"), "scheduled")
    la = world.wait_for(world.send("winter", "+13105550104"), "scheduled")
    assert phoenix["scheduled_for"] == "2026-01-15T15:00:00.000Z"  # 08:00 MST
    assert la["scheduled_for"] == "2026-01-15T16:00:00.000Z"  # 08:00 PST: an hour later


def test_with_a_messaging_service_twilio_schedules_it(world: World) -> None:
    # Twilio's SendAt must be 15 minutes to 35 days ahead of Twilio's own clock: the window opens in 2 hours
    now_la = datetime.now(UTC).astimezone(LA)
    start = (now_la + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    end = start + timedelta(hours=2)
    quiet = {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}
    world.connection("service", {"quiet_hours": quiet}, messaging_service_sid=SERVICE, from_numbers=[])
    record = world.wait_for(world.send("service", "+13105550105"), "scheduled")
    assert record["twilio_sid"], record  # at Twilio, scheduled there: the connector holds nothing
    (message,) = world.at_twilio("+13105550105")
    assert message.timeline[0][1] == "scheduled" and message.timeline[1][0] >= start.astimezone(UTC)
    # Twilio keeps 500,000 scheduled messages an account (35125): past that, the connector holds the message
    assert world.stack.simulator is not None
    config = world.stack.simulator.sim.config
    config.max_scheduled = 1
    try:
        held = world.wait_for(world.send("service", "+13105550108"), "scheduled")
    finally:
        config.max_scheduled = 500_000
    assert held["twilio_sid"] is None and held["held_reason"] == "quiet_hours" and held["scheduled_for"]
    assert world.at_twilio("+13105550108") == []


def test_a_cap_of_two_a_day_refuses_the_third(world: World) -> None:
    world.connection("capped", {"frequency": {"per_day": 2}})
    to = "+13105550106"
    first, second = world.send("capped", to), world.send("capped", to)
    for message_id in (first, second):
        world.wait_for(message_id, "delivered", "sent")
    third = world.wait_for(world.send("capped", to), "error")
    assert third["error_code"] == 900007 and "cap of 2 messages per day" in third["error_message"]
    world.wait_for(world.send("capped", to, category="transactional"), "delivered", "sent")  # not marketing
    world.clock.at += timedelta(days=1)
    world.wait_for(world.send("capped", to), "delivered", "sent")  # a new day
    assert len(world.at_twilio(to)) == 4


def test_a_cap_that_holds_sends_the_message_the_next_day(world: World) -> None:
    world.connection("patient", {"frequency": {"per_day": 1, "over": "hold"}})
    to = "+13105550107"
    world.wait_for(world.send("patient", to), "delivered", "sent")
    held = world.wait_for(world.send("patient", to), "held")
    assert held["held_reason"] == "frequency" and held["scheduled_for"] is None
    world.stack.release()
    time.sleep(1.5)
    assert world.record(held["id"])["status"] == "held" and len(world.at_twilio(to)) == 1
    world.clock.at += timedelta(days=1)
    world.stack.release()
    world.wait_for(held["id"], "delivered", "sent")
    assert len(world.at_twilio(to)) == 2


def test_a_budget_stops_the_days_sends_and_raising_it_resumes_them_once(world: World) -> None:
    world.connection("budget", {"daily_segments": 2})
    ids = [world.send("budget", f"+1310555020{n}") for n in range(4)]

    def states() -> dict[str, str]:
        found = {i: str(world.record(i)["status"]) for i in ids}
        return {i: "sent" if s in ("sent", "delivered") else s for i, s in found.items()}

    def settle(sent: int, held: int) -> dict[str, str]:
        deadline, now = time.monotonic() + 20, states()
        while time.monotonic() < deadline and sorted(now.values()) != ["held"] * held + ["sent"] * sent:
            time.sleep(0.1)
            now = states()
        assert sorted(now.values()) == ["held"] * held + ["sent"] * sent, now
        return now

    first = settle(2, 2)  # the four are sent at once: any two take the budget, the other two wait
    held = [world.record(i) for i, s in first.items() if s == "held"]
    assert {h["held_reason"] for h in held} == {"budget"}
    spend = world.call("GET", "/connections/budget/budget").json()
    assert (spend["spent"], spend["remaining"], spend["exhausted"]) == (2, 0, True)
    world.stack.release()  # nothing of this connection's until an admin says so, or the next day
    time.sleep(1.5)
    assert states() == first

    raised = world.call("POST", "/connections/budget/budget", {"add_segments": 1})
    assert raised.status_code == 200 and raised.json()["remaining"] == 1, raised.text
    world.stack.release()
    settle(3, 1)

    world.clock.at += timedelta(days=1)  # the next day's budget takes the last one
    world.stack.release()
    settle(4, 0)
    world.stack.release()
    time.sleep(1.5)
    at_twilio = [m.to for n in range(4) for m in world.at_twilio(f"+1310555020{n}")]
    assert sorted(at_twilio) == sorted(f"+1310555020{n}" for n in range(4))  # each once


def test_a_body_over_max_segments_is_refused_naming_the_encoding_and_the_character(world: World) -> None:
    world.connection("short", {"max_segments": 1})
    body = "Don’t miss our sale: " + "x" * 60  # one curly apostrophe: UCS-2, two segments
    refused = world.call("POST", "/messages", {"to": "+13105550301", "body": body, "connection": "short"})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["field"] == "body" and error["code"] == 900006
    assert "2 segments in UCS-2" in error["message"] and "U+2019" in error["message"]
    assert "smart_encoded" in error["message"]
    world.connection("smart", {"max_segments": 1, "smart_encoded": True})
    accepted = world.send("smart", "+13105550302", body=body)
    record = world.wait_for(accepted, "delivered", "sent")
    assert (record["encoding"], record["num_segments"]) == ("GSM-7", 1)

"""The release function: what is due goes back on the queue once, a budget's room is kept, a run stops short of
its time, and each minute's run starts at the next connection, so one connection's backlog cannot hold another's
messages back for long."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from chalicelib.domain.guard_ports import Held
from chalicelib.domain.guardrails import parse_guardrails
from chalicelib.usecases.release import ReleaseHeld

NOW = datetime(2026, 7, 2, 15, 0, tzinfo=UTC)
QUIET = {"quiet_hours": {"start": "08:00", "end": "21:00"}}


class Store:
    shards = 1

    def __init__(self, held: dict[str, list[Held]], spent: int = 0) -> None:
        self.held, self.spent = held, spent
        self.asked: list[str] = []

    def spend(self, connection: str, now: datetime) -> tuple[int, int]:
        return self.spent, 0

    def due(self, key: str, until: datetime, limit: int = 100) -> list[Held]:
        self.asked.append(key)
        return [h for h in self.held.get(key, []) if h.release_at <= until.isoformat()][:limit]

    def bring_forward(self, held: Held, now: datetime) -> bool:
        return True

    def unhold(self, held: Held, now: datetime) -> bool:
        self.held[held.held_key].remove(held)
        return True


class Queue:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, items: Sequence[tuple[str, Mapping[str, Any]]], delay_seconds: int = 0) -> set[str]:
        self.sent += [message_id for message_id, _ in items]
        return set()


def _held(key: str, n: int, at: datetime = NOW, segments: int = 1) -> list[Held]:
    request = json.dumps({"to": "+13105550100", "body": "hi"})
    return [Held(f"{key}-{i}", key, at.isoformat(), "quiet_hours", request, segments) for i in range(n)]


def _connections(**specs: dict[str, Any]) -> dict[str, Any]:
    return {name: SimpleNamespace(name=name, guardrails=parse_guardrails(spec)) for name, spec in specs.items()}


def test_what_is_due_goes_back_once_and_what_is_not_stays() -> None:
    later = Held("later", "a#time#0", (NOW + timedelta(hours=1)).isoformat(), "quiet_hours", "{}", 1)
    store = Store({"a#time#0": [*_held("a#time#0", 2), later, *_held("a#time#0", 3)[2:]]})
    queue = Queue()
    release = ReleaseHeld(store, queue, _connections(a=QUIET, b={"max_segments": 2}), lambda: NOW)  # type: ignore[arg-type]
    assert release.run() == {"released": 3, "finished": 1}
    assert sorted(queue.sent) == ["a#time#0-0", "a#time#0-1", "a#time#0-2"]
    assert release.run()["released"] == 0 and len(queue.sent) == 3
    assert not any(key.startswith("b#") for key in store.asked)  # a connection that cannot hold is not read


def test_a_budget_releases_only_what_its_room_takes() -> None:
    store = Store({"a#budget#0": _held("a#budget#0", 5, NOW + timedelta(hours=9), segments=2)}, spent=6)
    queue = Queue()
    ReleaseHeld(store, queue, _connections(a={"daily_segments": 10}), lambda: NOW).run()  # type: ignore[arg-type]
    assert len(queue.sent) == 2  # 4 segments of room: two 2-segment messages


def test_each_minutes_run_starts_at_the_next_connection_and_stops_short_of_its_time() -> None:
    held = {f"{c}#time#0": _held(f"{c}#time#0", 300) for c in ("a", "b")}
    served = []
    for minute in (0, 1):
        store, queue = Store({k: list(v) for k, v in held.items()}), Queue()
        at = NOW + timedelta(minutes=minute)
        release = ReleaseHeld(store, queue, _connections(a=QUIET, b=QUIET), lambda at=at: at)  # type: ignore[arg-type,misc]
        left = iter([60.0, 60.0, 1.0])  # time for two pages, then the run is out of time
        result = release.run(lambda left=left: next(left, 1.0))  # type: ignore[misc]
        assert result == {"released": 200, "finished": 0}  # the next run goes on
        (connection,) = {message_id.split("#")[0] for message_id in queue.sent}
        served.append(connection)
    assert sorted(served) == ["a", "b"]  # each minute's run began with the other connection


def test_a_budgets_room_reaches_every_shard_and_is_shared_by_them() -> None:
    later = NOW + timedelta(hours=9)
    held = {"a#budget#0": _held("a#budget#0", 1, later, 2), "a#budget#1": _held("a#budget#1", 3, later, 2)}
    store = Store(held, spent=6)
    store.shards = 2
    queue = Queue()
    ReleaseHeld(store, queue, _connections(a={"daily_segments": 10}), lambda: NOW).run()  # type: ignore[arg-type]
    assert sorted(queue.sent) == ["a#budget#0-0", "a#budget#1-0"]  # 4 segments of room: one from each shard

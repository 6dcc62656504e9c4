"""How fast the release function puts a quiet-hours campaign back on the queue when its window opens: the
project's own ReleaseHeld over a store and a queue that answer with AWS-like latencies (assumed, not measured:
DynamoDB Query 10 ms, UpdateItem 8 ms; SQS SendMessageBatch 15 ms)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from chalicelib.domain.guard_ports import Held
from chalicelib.domain.guardrails import parse_guardrails
from chalicelib.usecases.release import ReleaseHeld

QUERY_S, UPDATE_S, BATCH_S = 0.010, 0.008, 0.015


class _Store:
    def __init__(self, held: int, shards: int) -> None:
        self.shards = shards
        request = json.dumps({"to": "+13105550100", "body": "Sale"})
        self.waiting = {
            f"c#time#{s}": [Held(f"m{s}-{n}", f"c#time#{s}", "2026-07-02T15:00:00.000Z", "quiet_hours", request, 1)
                            for n in range(held // shards)]
            for s in range(shards)
        }  # fmt: skip
        self.lock = threading.Lock()

    def spend(self, connection: str, now: datetime) -> tuple[int, int]:
        return 0, 0

    def due(self, key: str, until: datetime, limit: int = 100) -> list[Held]:
        time.sleep(QUERY_S)
        with self.lock:
            return list(self.waiting.get(key, [])[:limit])

    def unhold(self, held: Held, now: datetime) -> bool:
        time.sleep(UPDATE_S)
        with self.lock:
            self.waiting[held.held_key].remove(held)
        return True

    def bring_forward(self, held: Held, now: datetime) -> bool:
        return True


class _Queue:
    def __init__(self) -> None:
        self.sent = 0
        self.lock = threading.Lock()

    def send(self, items: Sequence[tuple[str, Mapping[str, Any]]], delay_seconds: int = 0) -> set[str]:
        time.sleep(BATCH_S)
        with self.lock:
            self.sent += len(items)
        return set()


def run(held: int = 20_000, shards: int = 4) -> dict[str, float]:
    connection = SimpleNamespace(
        name="c", guardrails=parse_guardrails({"quiet_hours": {"start": "08:00", "end": "21:00"}})
    )
    store, queue = _Store(held, shards), _Queue()
    release = ReleaseHeld(store, queue, {"c": connection}, lambda: datetime(2026, 7, 2, 15, tzinfo=UTC))  # type: ignore[arg-type,dict-item]
    started = time.perf_counter()
    result = release.run(lambda: 60.0)
    seconds = time.perf_counter() - started
    return {"held": held, "released": result["released"], "sent": queue.sent, "seconds": seconds,
            "per_second": result["released"] / seconds}  # fmt: skip

"""The release function (app.release, each minute): held messages whose time has come go back on the send
queue, and budget-held ones as far as today's budget (with what an admin added) has room. Only connections
with a guardrail that can hold are read; without any, a run reads nothing.

A quiet-hours campaign opens all at once (08:00 in a zone): each page of 100 goes to SQS in ten batches at once
and its records are released by a pool of threads (`make bench` models the rate with AWS's latencies)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Protocol

from chalicelib.domain.connection import ConnectionSettings
from chalicelib.domain.guard_ports import GuardStore, Held
from chalicelib.observability import logger, metrics

PAGE = 100
BUDGET_LOOKAHEAD = timedelta(days=2)  # a budget hold waits for the next day: all of them, when there is room
RELEASE_DELAY_S = 1  # the copy finds its record released, not still held (else it waits for a redelivery)
STOP_WITH_S = 5.0  # what a run keeps of its time: the next run goes on where it stopped


class SendQueue(Protocol):
    """The send queue as the release puts records on it (adapters/queue.py): the ids SQS did not take."""

    def send(self, items: Sequence[tuple[str, Mapping[str, Any]]], delay_seconds: int = 0) -> set[str]: ...


class ReleaseHeld:
    def __init__(
        self,
        store: GuardStore,
        queue: SendQueue,
        connections: Mapping[str, ConnectionSettings],
        clock: Callable[[], datetime],
        workers: int = 16,
    ) -> None:
        self.store, self.queue, self.connections, self.clock = store, queue, connections, clock
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="release")

    def run(self, seconds_left: Callable[[], float] = lambda: 60.0) -> dict[str, int]:
        now = self.clock()
        released, finished = 0, 1
        holding = [c for c in list(self.connections.values()) if c.guardrails is not None and c.guardrails.holds]
        # each minute's run starts at the next connection: one with a campaign's backlog (a run may end before it
        # is through) cannot keep another's held messages waiting for more than a run per connection
        start = int(now.timestamp() // 60) % len(holding) if holding else 0
        for connection in holding[start:] + holding[:start]:
            guard = connection.guardrails
            assert guard is not None
            room = None
            if guard.daily_segments is not None:
                spent, extra = self.store.spend(connection.name, now)
                room = guard.daily_segments + extra - spent
            for shard in range(self.store.shards):
                budget_key = f"{connection.name}#budget#{shard}"
                for key, until, limit in (
                    (f"{connection.name}#time#{shard}", now, None),
                    (budget_key, now, None),  # a new day: yesterday's holds
                    *([(budget_key, now + BUDGET_LOOKAHEAD, room)] if room is not None and room > 0 else []),
                ):
                    count, used, done = self._due(key, now, until, limit, seconds_left)
                    released += count
                    if limit is not None:
                        room = limit - used  # what this shard's releases left for the next shards
                    if not done:
                        finished = 0
                        break
        if released:
            metrics.add_metric(name="MessagesReleased", unit="Count", value=released)
            logger.info("held messages released", extra={"released": released, "finished": finished})
        return {"released": released, "finished": finished}

    def _due(
        self, key: str, now: datetime, until: datetime, room: int | None, seconds_left: Callable[[], float]
    ) -> tuple[int, int, bool]:
        """Release what is due under one index key; `room`: at most this many segments (the budget's).
        (messages released, their segments, whether all that was due went)."""
        count, used = 0, 0
        while seconds_left() > STOP_WITH_S:
            page = self.store.due(key, until, PAGE)
            chosen: list[Held] = []
            for held in page:
                if room is not None:
                    if used + held.segments > room:
                        break
                    if not self.store.bring_forward(held, now):
                        continue  # another run released it
                    used += held.segments
                chosen.append(held)
            items = [(h.message_id, json.loads(h.request)) for h in chosen]
            chunks = [items[i : i + 10] for i in range(0, len(items), 10)]  # SQS's batch: ten calls at once
            refused = set().union(*self.pool.map(lambda chunk: self.queue.send(chunk, RELEASE_DELAY_S), chunks))
            went = [h for h in chosen if h.message_id not in refused]
            list(self.pool.map(lambda h: self.store.unhold(h, now), went))
            count += len(went)
            if refused:
                logger.warning("held messages not put back; the next run tries again", extra={"refused": len(refused)})
                return count, used, False
            if len(page) < PAGE or len(chosen) < len(page):
                return count, used, True
        return count, used, False

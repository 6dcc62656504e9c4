"""The release function (app.release, each minute): held messages whose time has come go back on the send
queue, and budget-held ones as far as today's budget (with what an admin added) has room. Only connections
with a guardrail that can hold are read; without any, a run reads nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from chalicelib.domain.connection import ConnectionSettings
from chalicelib.domain.ports import GuardStore, Held
from chalicelib.domain.queued import QueueError, Requeue
from chalicelib.observability import logger, metrics

PAGE = 100
BUDGET_LOOKAHEAD = timedelta(days=2)  # a budget hold waits for the next day: all of them, when there is room


class ReleaseHeld:
    def __init__(
        self,
        store: GuardStore,
        queue: Requeue,
        connections: Mapping[str, ConnectionSettings],
        clock: Callable[[], datetime],
    ) -> None:
        self.store, self.queue, self.connections, self.clock = store, queue, connections, clock

    def run(self, seconds_left: Callable[[], float] = lambda: 60.0) -> dict[str, int]:
        now = self.clock()
        released = 0
        for connection in list(self.connections.values()):
            guard = connection.guardrails
            if not guard.holds:
                continue
            room = None
            if guard.daily_segments is not None:
                spent, extra = self.store.spend(connection.name, now)
                room = guard.daily_segments + extra - spent
            for shard in range(self.store.shards):
                if seconds_left() < 5:
                    return {"released": released, "finished": 0}
                released += self._due(f"{connection.name}#time#{shard}", now, None)[0]
                budget_key = f"{connection.name}#budget#{shard}"
                released += self._due(budget_key, now, None)[0]  # a new day: yesterday's holds
                if room is not None and room > 0:
                    count, used = self._due(budget_key, now + BUDGET_LOOKAHEAD, room)
                    released, room = released + count, room - used
        if released:
            metrics.add_metric(name="MessagesReleased", unit="Count", value=released)
            logger.info("held messages released", extra={"released": released})
        return {"released": released, "finished": 1}

    def _due(self, key: str, until: datetime, room: int | None) -> tuple[int, int]:
        """Release what is due under one index key; `room`: at most this many segments (the budget's).
        (messages released, their segments)."""
        now, count, used = self.clock(), 0, 0
        while True:
            page = self.store.due(key, until, PAGE)
            for held in page:
                if room is not None:
                    if used + held.segments > room:
                        return count, used
                    if not self.store.bring_forward(held, now):
                        continue  # another run released it
                if not self._requeue(held, now):
                    return count, used  # SQS refused: the next run goes on
                count, used = count + 1, used + held.segments
            if len(page) < PAGE:
                return count, used

    def _requeue(self, held: Held, now: datetime) -> bool:
        try:
            # a second's delay: the copy finds the record released, not still held (else it waits its turn)
            self.queue.defer(held.message_id, held.request, 1, 0)
        except QueueError as exc:
            logger.warning("held message not put back; the next run tries again", extra={"error": str(exc)})
            return False
        self.store.unhold(held, now)
        time.sleep(0)  # let the send queue's pollers in between (one process locally)
        return True

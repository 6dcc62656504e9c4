"""The outbox consumer: each batch of the messages table's stream becomes what follows from it (domain/outbox.py
derives it) — the day's counters, the events the deployment subscribes to, opt-outs an error code implies, and
each platform's write-back. Runs in the outbox function (a DynamoDB stream trigger with ReportBatchItemFailures).

Retries and exactness (docs/architecture.md, "The ledger is the outbox"):
- Counters are summed per batch and written once, first, with a marker under the batch's first sequence number
  that holds what this batch counted; the write adds only the difference from what the marker held before. A
  batch retried whole (a timeout, a crash) or a bisected first half starts at the same record: it replaces its
  counts instead of adding them again. A retry from a failed record starts at a record this invocation no longer
  counts: before it reports the failure, it cuts its marker back to the records before it.
- A failure (an event the bus keeps refusing, an opt-out not stored) reports that record: the stream hands it and
  everything after it back, in order. Records before it are done and never redelivered.
- A write-back a platform does not take now (5xx, 429, unreachable, at its rate) waits in the forward queue (FIFO,
  grouped by message) with the rest of its message's events in this batch, in order; it never holds up the
  stream or other messages.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chalicelib.domain import outbox, rules
from chalicelib.domain.connection import ConnectionSettings, pick
from chalicelib.domain.events import STATUS_CHANGED, Events
from chalicelib.domain.outbox import Change
from chalicelib.domain.ports import OptOutStore, StatsStore, StoreError
from chalicelib.domain.writeback import ForwardFailed
from chalicelib.observability import logger, metrics

TELL_RESERVE_S = 15.0  # a write-back at worst: a token exchange and a post (5 s timeouts), then the counters


@dataclass(frozen=True)
class StreamRecord:
    """One change of the messages table, as its stream reports it (items already plain Python)."""

    sequence: str
    old: Mapping[str, Any] | None
    new: Mapping[str, Any] | None
    at: datetime  # when the ledger changed


class WriteBack(Protocol):
    def forward(self, detail: Mapping[str, Any], now: float | None = None, detail_type: str = STATUS_CHANGED) -> int:
        """The platform's answer; raises ForwardFailed when it should be tried again later."""
        ...


class ForwardQueue(Protocol):
    def park(self, group: str, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Keep one message's events, in order, for the forward function; raises StoreError if it cannot."""
        ...

    def token(self, group: str, kind: str, detail: Mapping[str, Any]) -> str:
        """The id a parked event has in the queue."""
        ...


class WriteBackMarks(Protocol):
    """Which messages have a write-back waiting in the forward queue (adapters/tables.DynamoWriteBackMarks)."""

    def pending(self, message_id: str) -> bool: ...

    def mark(self, message_id: str, token: str) -> None: ...

    def clear(self, message_id: str, token: str) -> None: ...


class OutboxConsumer:
    def __init__(
        self,
        counts: StatsStore,
        write_back: WriteBack,
        parked: ForwardQueue,
        opt_outs: OptOutStore,
        publisher: Events | None,
        subscription: str,
        clock: Callable[[], datetime],
        executor: ThreadPoolExecutor | None = None,
        marks: WriteBackMarks | None = None,
        connections: Mapping[str, ConnectionSettings] | None = None,
    ) -> None:
        self.marks = marks
        # not asked for its length here: the live store reads the table, under the wiring's lock at build
        self.connections: Mapping[str, ConnectionSettings] = {} if connections is None else connections
        self.counts = counts
        self.write_back = write_back
        self.parked = parked
        self.opt_outs = opt_outs
        self.publisher = publisher
        self.subscription = subscription
        self.clock = clock
        self.executor = executor

    def _opts_out(self, connection: str | None, code: int) -> bool:
        """Twilio said so (21610, 30004), or the connection's error policy names the code (guardrails)."""
        found = pick(self.connections, connection)
        guard = found.guardrails if found else None
        return guard.error_policy.opts_out(code) if guard else code in rules.OPT_OUT_CODES

    def handle(self, records: Sequence[StreamRecord], seconds_left: Callable[[], float] | None = None) -> list[str]:
        """The batch's first record not done (as a one-item list), or [] when all are. With `seconds_left`
        (the invocation's time), write-backs not started before TELL_RESERVE_S remain wait in the forward
        queue: a slow platform never makes the invocation time out and tell the batch's platforms twice."""
        if not records:
            return []
        changes: list[Change | None] = []
        cut = len(records)
        for index, record in enumerate(records):
            try:
                changes.append(outbox.derive(record.old, record.new, record.at, self._opts_out))
            except Exception as exc:  # a record this code cannot read: it and what follows come back
                logger.error("stream record not understood", extra={"sequence": record.sequence, "error": str(exc)})
                cut = index
                break
        batch = records[0].sequence
        self.counts.count_batch(batch, outbox.summed(changes[:cut]))  # first: a retry replaces, never adds
        cut = min(cut, self._publish(changes[:cut]), self._opt_outs(changes[:cut]))
        cut = min(cut, self._write_backs(changes[:cut], seconds_left))
        if cut == len(records):
            return []
        self.counts.count_batch(batch, outbox.summed(changes[:cut]))
        metrics.add_metric(name="OutboxRecordsRetried", unit="Count", value=len(records) - cut)
        return [records[cut].sequence]

    def _publish(self, changes: Sequence[Change | None]) -> int:
        """Index of the first change whose event the bus refused (after its retries), else len(changes)."""
        entries: list[tuple[str, Mapping[str, Any]]] = []
        owners: list[int] = []
        for index, change in enumerate(changes):
            for kind, detail in change.events if change else ():
                if outbox.subscribed(self.subscription, kind, detail):
                    entries.append((kind, detail))
                    owners.append(index)
        if not entries or self.publisher is None:
            return len(changes)
        refused = self.publisher.publish(entries)
        return len(changes) if refused is None else owners[refused]

    def _opt_outs(self, changes: Sequence[Change | None]) -> int:
        now = self.clock()
        for index, change in enumerate(changes):
            if change is None or change.opt_out is None:
                continue
            try:
                for sender in change.opt_out.senders:
                    self.opt_outs.opt_out(change.opt_out.phone, sender, now)
            except StoreError as exc:
                logger.warning("opt-out not stored; retried from here", extra={"error": str(exc)})
                return index
        return len(changes)

    def _write_backs(self, changes: Sequence[Change | None], seconds_left: Callable[[], float] | None) -> int:
        """Each message's write-backs in order; messages side by side. Index of the first change whose
        write-back could not even be parked, else len(changes)."""
        per_message: dict[str, list[tuple[int, str, Mapping[str, Any]]]] = {}
        for index, change in enumerate(changes):
            if change is None:
                continue
            for kind, detail in change.write_backs:
                per_message.setdefault(change.message_id, []).append((index, kind, detail))
        if not per_message:
            return len(changes)
        run = self.executor.map if self.executor is not None and len(per_message) > 1 else map
        tell = functools.partial(self._tell, seconds_left=seconds_left)
        told = run(tell, list(per_message), list(per_message.values()))
        return min([len(changes), *(i for i in told if i is not None)])

    def _tell(
        self,
        message_id: str,
        line: Sequence[tuple[int, str, Mapping[str, Any]]],
        seconds_left: Callable[[], float] | None = None,
    ) -> int | None:
        """A message's write-backs in order; from the first not taken, all wait in the forward queue. While
        one of its earlier ones waits there, these wait behind it: none overtakes another."""
        try:
            waiting = self.marks is not None and self.marks.pending(message_id)
        except StoreError:
            waiting = True  # not known: the queue keeps the order either way
        for position, (_, kind, detail) in enumerate(line):
            try:
                if waiting:
                    raise ForwardFailed("an earlier write-back of this message waits in the forward queue")
                if seconds_left is not None and seconds_left() < TELL_RESERVE_S:
                    raise ForwardFailed("the outbox invocation is short of time: told by the forward function")
                self.write_back.forward(detail, detail_type=kind)
            except Exception as exc:  # ForwardFailed, or a fault of its own: never one that holds up the stream
                if not isinstance(exc, ForwardFailed):
                    logger.error("write-back failed", extra={"kind": type(exc).__name__, "error": str(exc)})
                rest = [(k, d) for _, k, d in line[position:]]
                try:
                    self._mark(message_id, rest[-1])
                    self.parked.park(message_id, rest)
                except StoreError as err:
                    logger.error("write-back not parked; retried from here", extra={"error": str(err)})
                    return line[position][0]
                metrics.add_metric(name="WriteBacksParked", unit="Count", value=len(rest))
                logger.info("write-back waits in the forward queue", extra={"reason": str(exc)})
                return None
        return None

    def _mark(self, message_id: str, last: tuple[str, Mapping[str, Any]]) -> None:
        """Before parking: a mark that a later write-back finds (a mark with nothing behind it only sends the
        message's later write-backs through the queue too)."""
        if self.marks is not None:
            self.marks.mark(message_id, self.parked.token(message_id, *last))


def forward_parked(
    write_back: WriteBack,
    entries: Sequence[tuple[str, Mapping[str, Any]]],
    parked_as: Sequence[tuple[str, str]] = (),
    marks: WriteBackMarks | None = None,
) -> int:
    """The forward function: parked events in their queue's order. How many were told before the first still
    refused; that one and the rest of its group come back, so each is told once and in order. `parked_as`:
    each entry's message and queue id; a message whose last parked write-back was told is marked clear."""
    told = len(entries)
    for position, (kind, detail) in enumerate(entries):
        try:
            write_back.forward(detail, detail_type=kind)
        except Exception as exc:  # ForwardFailed, or a fault of its own: those told already stay told
            logger.info("parked write-back not taken", extra={"kind": type(exc).__name__, "reason": str(exc)})
            told = position
            break
    if marks is not None:
        last = {message_id: token for message_id, token in parked_as[:told]}
        for message_id, token in last.items():
            try:
                marks.clear(message_id, token)
            except StoreError as exc:  # the mark stays: later write-backs go through the queue, still in order
                logger.warning("write-back mark not cleared", extra={"error": str(exc)})
    return told

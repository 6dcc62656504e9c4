"""DynamoDB adapters for the small tables: opt-outs, templates and the daily counters.

Like the ledger (store.py), botocore's errors never leave this module: they become StoreError.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from chalicelib.adapters.dynamo import ConditionFailed, DynamoTable, deserialize, serialize
from chalicelib.domain import rules
from chalicelib.domain.pacing import Lease, Reservation, from_lease, lease_size, reserve, split_block
from chalicelib.domain.ports import StoreError
from chalicelib.domain.templates import Template
from chalicelib.observability import metrics

ANY_SENDER = "*"
CONTENDED_TRIES = 50  # each lost race means another send took its place: all of a batch's sends get through
# One DynamoDB partition key takes about 1,000 writes/s. The outbox writes a day's counters once per stream
# batch, from as many invocations at once as the stream has shards; each write goes to one of this many items
# (keys `<day>#<shard>`), read back together by `totals`, so no counter item is hot.
COUNTER_SHARDS = 16
BATCH_PREFIX = "batch#"  # an outbox batch's marker: what it counted (DynamoStats.count_batch)
MARKER_SECONDS = 3 * 86_400  # outlives the stream's 24 h of retries


KINDS = {
    "status": "by_status",
    "code": "by_error_code",
    "conn": "by_connection",
    "latency": "delivered_within",
    "writeback": "write_back_refused",  # `<connection>:<why>`, why one of domain/writeback.py's kinds
    "now": "current",  # messages made that day, by the status they are in now (or ended in)
}


def summarize(items: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Counter items (day, attributes) as totals over them all, and per day."""
    totals: dict[str, dict[str, int]] = {kind: {} for kind in (*KINDS.values(), "events")}
    per_day: dict[str, dict[str, dict[str, int]]] = {}
    for day, item in items:
        for name, value in item.items():
            kind, _, key = name.partition("#")
            target = KINDS.get(kind) or ("events" if kind == "event" else None)
            if target is None:
                continue
            totals[target][key] = totals[target].get(key, 0) + int(value)
            if target in ("by_status", "events", "current"):
                bucket = per_day.setdefault(day, {"by_status": {}, "events": {}, "current": {}})[target]
                bucket[key] = bucket.get(key, 0) + int(value)
    # A retried outbox batch can take back what it counted: a counter may hold 0, which is not shown. A current
    # count below 0 is a message made before the upgrade that added them, moving on: not shown either.
    totals = {kind: {k: n for k, n in counts.items() if n > 0} for kind, counts in totals.items()}
    days = {
        day: {kind: {k: n for k, n in c.items() if n > 0} for kind, c in kinds.items()}
        for day, kinds in per_day.items()
    }
    return {**totals, "days": dict(sorted((d, k) for d, k in days.items() if any(k.values())))}


def _difference(
    wanted: Mapping[str, Mapping[str, int]], before: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    """Per day, what to add to the counters so they hold `wanted` instead of `before`."""
    days: dict[str, dict[str, int]] = {}
    for day in {*wanted, *before}:
        now, was = wanted.get(day, {}), before.get(day, {})
        delta = {c: now.get(c, 0) - was.get(c, 0) for c in {*now, *was}}
        delta = {c: n for c, n in sorted(delta.items()) if n}
        if delta:
            days[day] = delta
    return days


class DynamoOptOuts(DynamoTable):
    """Opt-outs keyed by phone number, one item per sender (From number or messaging service)."""

    def is_opted_out(self, phone: str, senders: Sequence[str]) -> bool:
        result = self._call(
            "query",
            KeyConditionExpression="#p = :p",
            ExpressionAttributeNames={"#p": "phone"},
            ExpressionAttributeValues={":p": {"S": phone}},
            ProjectionExpression="sender",
            ConsistentRead=True,
        )
        blocked = {item["sender"]["S"] for item in result.get("Items", [])}
        return bool(blocked & {ANY_SENDER, *senders})

    def opt_out(self, phone: str, sender: str, now: datetime) -> None:
        item = {"phone": phone, "sender": sender, "opted_out_at": rules.iso(now)}
        self._call("put_item", Item=serialize(item))

    def opt_in(self, phone: str, sender: str) -> None:
        self._call("delete_item", Key=serialize({"phone": phone, "sender": sender}))


class DynamoTemplates(DynamoTable):
    def get(self, name: str) -> Template | None:
        item = self._call("get_item", Key={"name": {"S": name}}).get("Item")
        return Template.from_dict(deserialize(item)) if item else None

    def put(self, template: Template) -> None:
        self._call("put_item", Item=serialize(template.to_dict()))


def counter_keys(day: str) -> list[str]:
    """Every item that may hold a day's counts (the bare day: items written before sharding)."""
    return [day, *(f"{day}#{shard:02d}" for shard in range(COUNTER_SHARDS))]


class DynamoStats(DynamoTable):
    """Counters per UTC day, bumped once per outbox batch: `GET /stats` never scans the messages."""

    def count_batch(self, batch: str, counts: Mapping[str, Mapping[str, int]]) -> None:
        """The marker `batch#<first sequence number>` holds what the batch counted; the day's counters and the
        marker change in one transaction, conditioned on the marker as read, so two runs of a batch never both
        add (usecases/outbox.py says why a retry always starts at a record that names its batch)."""
        marker = {"day": {"S": f"{BATCH_PREFIX}{batch}"}}
        wanted = {day: dict(c) for day, c in counts.items() if c}
        for _ in range(CONTENDED_TRIES):
            found = self._call("get_item", Key=marker, ConsistentRead=True).get("Item")
            before: dict[str, dict[str, int]] = json.loads(found["counted"]["S"]) if found else {}
            if before == wanted:
                return  # counted already, exactly so (a replayed batch)
            condition = (
                {"ConditionExpression": "counted = :before", "ExpressionAttributeValues": {":before": found["counted"]}}
                if found
                else {"ConditionExpression": "attribute_not_exists(#d)", "ExpressionAttributeNames": {"#d": "day"}}
            )
            expires = int(time.time()) + MARKER_SECONDS
            item = {**marker, "counted": {"S": json.dumps(wanted, sort_keys=True)}, "expires_at": {"N": str(expires)}}
            writes: list[Any] = [{"Put": {"TableName": self.table, "Item": item, **condition}}]
            writes += [self._add(day, delta) for day, delta in _difference(wanted, before).items()]
            try:
                with self._errors("transact_write_items"):
                    self.client.transact_write_items(TransactItems=writes)
                return
            except ConditionFailed:  # another run of this batch wrote the marker since it was read
                metrics.add_metric(name="CountersContended", unit="Count", value=1)
        raise StoreError(f"batch {batch}'s counters are too contended to write; retried")

    def _add(self, day: str, delta: Mapping[str, int]) -> dict[str, Any]:
        shard = random.randrange(COUNTER_SHARDS)  # noqa: S311 - spreads writes, nothing secret
        names = {f"#n{i}": counter for i, counter in enumerate(delta)}
        values = {f":v{i}": {"N": str(n)} for i, n in enumerate(delta.values())}
        expression = "ADD " + ", ".join(f"#n{i} :v{i}" for i in range(len(delta)))
        update = {
            "TableName": self.table,
            "Key": {"day": {"S": f"{day}#{shard:02d}"}},
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        return {"Update": update}

    def totals(self, days: Sequence[str]) -> dict[str, Any]:
        items = self._batch_get([{"day": {"S": key}} for d in days for key in counter_keys(d)])
        return summarize((str(item["day"]).split("#")[0], item) for item in items)


class DynamoSenderQueues(DynamoTable):
    """Per sender, when Twilio's queue for it will be empty (`next_free`): read, then a conditional write
    that fails if another send moved it meanwhile (then read again). One item per sender takes ~1,000
    writes/s (one partition), so a write reserves a lease (domain/pacing.py) and the invocation's next
    sends from that sender take their places from it without a write."""

    def __init__(self, client: Any, table: str) -> None:
        super().__init__(client, table)
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()

    def reserve(self, sender: str, segments: int, rate: float, validity_seconds: float, now: datetime) -> Reservation:
        with self._lock:
            last = self._leases.get(sender)
            leased = from_lease(last, now, segments, rate)
            if leased is not None:
                place, self._leases[sender] = leased
                return place
        block = lease_size(rate, segments, last, now)
        place = self._reserve(sender, block, rate, validity_seconds, now)
        if place.next_free is None and block > segments:  # a lease does not fit: the message alone may
            return self._reserve(sender, segments, rate, validity_seconds, now)
        if place.next_free is None:
            return place
        lease = split_block(place, block, segments, rate, now)
        with self._lock:
            self._leases[sender] = lease
        return Reservation(place.wait_seconds, lease.next_slot)

    def _reserve(self, sender: str, segments: int, rate: float, validity_seconds: float, now: datetime) -> Reservation:
        for _ in range(CONTENDED_TRIES):
            item = self._call("get_item", Key={"sender": {"S": sender}}, ConsistentRead=True).get("Item")
            current = item["next_free"]["S"] if item else None
            place = reserve(rules.from_iso(current), now, segments, rate, validity_seconds)
            if place.next_free is None:
                return place
            condition = "attribute_not_exists(sender)" if current is None else "next_free = :seen"
            values = {":seen": {"S": current}} if current is not None else {}
            try:
                self._call(
                    "put_item",
                    Item={"sender": {"S": sender}, "next_free": {"S": rules.iso(place.next_free)}},
                    ConditionExpression=condition,
                    **({"ExpressionAttributeValues": values} if values else {}),
                )
                return place
            except ConditionFailed:
                continue
        raise StoreError(f"sender {sender}'s queue is too contended to reserve a place; try again")


class DynamoWriteBackMarks(DynamoTable):
    """On the messages table: the id of the last write-back a message has waiting in the forward queue
    (`writeback_parked`). While it is there the outbox parks the message's later write-backs behind it instead
    of telling them at once, so no later change overtakes an earlier one; the forward function clears it when
    it has told that write-back. Changes to it alone derive nothing (domain/outbox.py)."""

    ATTRIBUTE = "writeback_parked"

    def pending(self, message_id: str) -> bool:
        read = {"ProjectionExpression": "#p", "ExpressionAttributeNames": {"#p": self.ATTRIBUTE}}
        item = self._call("get_item", Key={"id": {"S": message_id}}, ConsistentRead=True, **read).get("Item")
        return bool(item and self.ATTRIBUTE in item)

    def mark(self, message_id: str, token: str) -> None:
        self._set(message_id, token, "SET #p = :t", "attribute_exists(id)")  # a record gone: nothing to order

    def clear(self, message_id: str, token: str) -> None:
        """Only if the mark is still this write-back's: one parked after it keeps the message's line."""
        self._set(message_id, token, "REMOVE #p", "#p = :t")

    def _set(self, message_id: str, token: str, update: str, condition: str) -> None:
        with contextlib.suppress(ConditionFailed):
            self._call(
                "update_item",
                Key={"id": {"S": message_id}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#p": self.ATTRIBUTE},
                ExpressionAttributeValues={":t": {"S": token}},
            )


class DynamoKeyUse(DynamoTable):
    """The last day each API key was used, on the counters table (`apikey#<name>`): written at most once a day
    per key by each warm function (ApiKeys remembers the day it wrote), read when the keys are listed."""

    def used(self, name: str, day: str) -> None:
        with contextlib.suppress(ConditionFailed):  # already this day: nothing to write
            self._call(
                "update_item",
                Key={"day": {"S": f"apikey#{name}"}},
                UpdateExpression="SET last_used = :d",
                ConditionExpression="attribute_not_exists(last_used) OR last_used < :d",
                ExpressionAttributeValues={":d": {"S": day}},
            )

    def last_used(self, names: Sequence[str]) -> dict[str, str]:
        items = self._batch_get([{"day": {"S": f"apikey#{n}"}} for n in dict.fromkeys(names)])
        return {str(i["day"]).removeprefix("apikey#"): str(i["last_used"]) for i in items if "last_used" in i}

"""DynamoDB adapters for the small tables: opt-outs, templates and the daily counters.

Like the ledger (store.py), botocore's errors never leave this module: they become StoreError.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters.dynamo import ConditionFailed, DynamoTable, deserialize, serialize
from chalicelib.domain import rules
from chalicelib.domain.pacing import Reservation, reserve
from chalicelib.domain.ports import StoreError
from chalicelib.domain.templates import Template
from chalicelib.observability import logger, metrics

ANY_SENDER = "*"
CONTENDED_TRIES = 50  # each lost race means another send took its place: all of a batch's sends get through
# One DynamoDB partition key takes about 1,000 writes/s and a message bumps its day's counters about
# three times: one item per day would throttle above ~330 messages/s. Each day is spread over this many
# items (keys `<day>#<shard>`), read back together by `totals`: ~5,000 messages/s before a shard is hot.
COUNTER_SHARDS = 16


KINDS = {
    "status": "by_status",
    "code": "by_error_code",
    "conn": "by_connection",
    "latency": "delivered_within",
    "writeback": "write_back_refused",  # `<connection>:<why>`, why one of domain/writeback.py's kinds
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
            if target in ("by_status", "events"):
                bucket = per_day.setdefault(day, {"by_status": {}, "events": {}})[target]
                bucket[key] = bucket.get(key, 0) + int(value)
    return {**totals, "days": dict(sorted(per_day.items()))}


def stats_day(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


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
    """Counters per UTC day, bumped as messages change: `GET /stats` never scans the messages."""

    def count(self, status: str | None, error_code: int | None, now: datetime, extra: Sequence[str] = ()) -> None:
        shard = random.randrange(COUNTER_SHARDS)  # noqa: S311 - spreads writes, nothing secret
        counters = [*([f"status#{status}"] if status else []), *([f"code#{error_code}"] if error_code else []), *extra]
        if not counters:
            return
        names = {f"#n{i}": counter for i, counter in enumerate(counters)}
        expression = "ADD " + ", ".join(f"{name} :one" for name in names)
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"day": {"S": f"{stats_day(now)}#{shard:02d}"}},
                UpdateExpression=expression,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
        except (ClientError, BotoCoreError) as exc:
            # Best effort: a counter must never fail or repeat a send. The records stay the truth.
            metrics.add_metric(name="StatsNotCounted", unit="Count", value=1)
            logger.warning("stats counter not updated", extra={"error": str(exc)})

    def totals(self, days: Sequence[str]) -> dict[str, Any]:
        items = self._batch_get([{"day": {"S": key}} for d in days for key in counter_keys(d)])
        return summarize((str(item["day"]).split("#")[0], item) for item in items)


class DynamoSenderQueues(DynamoTable):
    """Per sender, when Twilio's queue for it will be empty (`next_free`): read, then a conditional write
    that fails if another send moved it meanwhile (then read again). One item per sender: a short code at
    100 segments/s is 100 writes/s, well under a partition key's ~1,000."""

    def reserve(self, sender: str, segments: int, rate: float, validity_seconds: float, now: datetime) -> Reservation:
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

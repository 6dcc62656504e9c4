"""DynamoDB adapters for the small tables: opt-outs, templates and the daily counters.

Like the ledger (store.py), botocore's errors never leave this module: they become StoreError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import rules
from chalicelib.observability import logger, metrics
from chalicelib.store import StoreError, deserialize, serialize
from chalicelib.templates import Template

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ANY_SENDER = "*"
T = TypeVar("T")


class OptOutStore(Protocol):
    def is_opted_out(self, phone: str, senders: Sequence[str]) -> bool: ...

    def opt_out(self, phone: str, sender: str, now: datetime) -> None: ...

    def opt_in(self, phone: str, sender: str) -> None: ...


class TemplateStore(Protocol):
    def get(self, name: str) -> Template | None: ...

    def put(self, template: Template) -> None: ...


class StatsStore(Protocol):
    def count(self, status: str, error_code: int | None, now: datetime) -> None: ...

    def totals(self, days: Sequence[str]) -> dict[str, Any]: ...


def stats_day(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


class _Table:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self.client = client
        self.table = table

    def _call(self, what: str, call: Callable[..., T], **params: Any) -> T:
        try:
            return call(**params)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"DynamoDB {what} on {self.table} failed: {exc}") from exc


class DynamoOptOuts(_Table):
    """Opt-outs keyed by phone number, one item per sender (From number or messaging service)."""

    def is_opted_out(self, phone: str, senders: Sequence[str]) -> bool:
        result = self._call(
            "query",
            self.client.query,
            TableName=self.table,
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
        self._call("put", self.client.put_item, TableName=self.table, Item=serialize(item))

    def opt_in(self, phone: str, sender: str) -> None:
        self._call(
            "delete", self.client.delete_item, TableName=self.table, Key=serialize({"phone": phone, "sender": sender})
        )


class DynamoTemplates(_Table):
    def get(self, name: str) -> Template | None:
        result = self._call("get", self.client.get_item, TableName=self.table, Key={"name": {"S": name}})
        item = result.get("Item")
        return Template.from_dict(deserialize(item)) if item else None

    def put(self, template: Template) -> None:
        self._call("put", self.client.put_item, TableName=self.table, Item=serialize(template.to_dict()))


class DynamoStats(_Table):
    """Counters per UTC day, bumped as messages change: `GET /stats` never scans the messages."""

    def count(self, status: str, error_code: int | None, now: datetime) -> None:
        names = {"#s": f"status#{status}"}
        expression = "ADD #s :one"
        if error_code is not None:
            names["#c"] = f"code#{error_code}"
            expression += ", #c :one"
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"day": {"S": stats_day(now)}},
                UpdateExpression=expression,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
        except (ClientError, BotoCoreError) as exc:
            # Best effort: a counter must never fail or repeat a send. The records stay the truth.
            metrics.add_metric(name="StatsNotCounted", unit="Count", value=1)
            logger.warning("stats counter not updated", extra={"error": str(exc)})

    def totals(self, days: Sequence[str]) -> dict[str, Any]:
        by_status: dict[str, int] = {}
        by_code: dict[str, int] = {}
        for start in range(0, len(days), 100):
            keys = [{"day": {"S": d}} for d in days[start : start + 100]]
            while keys:
                request = {self.table: {"Keys": keys}}
                result: Any = self._call("batch_get_item", self.client.batch_get_item, RequestItems=request)
                for item in result.get("Responses", {}).get(self.table, []):
                    for name, value in deserialize(item).items():
                        kind, _, key = name.partition("#")
                        target = by_status if kind == "status" else by_code if kind == "code" else None
                        if target is not None:
                            target[key] = target.get(key, 0) + int(value)
                keys = result.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
        return {"by_status": by_status, "by_error_code": by_code}

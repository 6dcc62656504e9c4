"""A small DynamoDB toolkit the adapters share (the ledger in store.py, the small tables in tables.py):
items to and from DynamoDB's types, an UpdateItem builder, and one table's calls with botocore's
errors translated. botocore's ClientError never leaves here: it becomes StoreError or ConditionFailed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain.ports import StoreError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _to_dynamo(value: Any) -> Any:
    # boto3 refuses floats; JSON-shaped values (metadata) go through Decimal.
    return json.loads(json.dumps(value), parse_float=Decimal)


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, (list, set)):
        return [_from_dynamo(v) for v in value]
    return value


def serialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(_to_dynamo(v)) for k, v in item.items() if v is not None}


def deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _from_dynamo(_deserializer.deserialize(v)) for k, v in item.items()}


def _conditional_failed(exc: ClientError) -> bool:
    """A condition did not hold: a single write's, or a transaction's (cancelled as a whole; tried again)."""
    code = exc.response.get("Error", {}).get("Code")
    return code in ("ConditionalCheckFailedException", "TransactionCanceledException")


class Update:
    """Builds one UpdateItem call: SET/REMOVE clauses, a condition, names and values."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self.sets: list[str] = []
        self.removes: list[str] = []

    def n(self, attr: str) -> str:
        key = f"#{attr}"
        self.names[key] = attr
        return key

    def v(self, value: Any) -> str:
        key = f":v{len(self.values)}"
        self.values[key] = value
        return key

    def set(self, attrs: Mapping[str, Any]) -> Update:
        for attr, value in attrs.items():
            if value is not None:
                self.sets.append(f"{self.n(attr)} = {self.v(value)}")
        return self

    def set_if_absent(self, attr: str, value: Any) -> Update:
        self.sets.append(f"{self.n(attr)} = if_not_exists({self.n(attr)}, {self.v(value)})")
        return self

    def append(self, attr: str, items: list[Any]) -> Update:
        name = self.n(attr)
        self.sets.append(f"{name} = list_append(if_not_exists({name}, {self.v([])}), {self.v(items)})")
        return self

    def remove(self, *attrs: str) -> Update:
        self.removes += [self.n(a) for a in attrs]
        return self

    def request(self, key: Mapping[str, Any], condition: str) -> dict[str, Any]:
        expression = "SET " + ", ".join(self.sets)
        if self.removes:
            expression += " REMOVE " + ", ".join(self.removes)
        return {
            "Key": serialize(key),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": self.names,
            "ExpressionAttributeValues": serialize(self.values),
        }


class ConditionFailed(Exception):
    """A conditional write found the item changed."""


class DynamoTable:
    """One table's calls, with botocore's errors translated (the ledger and tables.py share it)."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self.client = client
        self.table = table

    @contextlib.contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except ClientError as exc:
            if _conditional_failed(exc):
                raise ConditionFailed from exc
            raise StoreError(f"DynamoDB {operation} on {self.table} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB {operation} on {self.table} failed: {exc}") from exc

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        with self._errors(operation):
            result: dict[str, Any] = getattr(self.client, operation)(TableName=self.table, **kwargs)
        return result

    def _batch_get(self, keys: Sequence[dict[str, Any]], consistent: bool = False) -> Iterator[dict[str, Any]]:
        """Every item found for `keys`, deserialized: 100 keys a request, unprocessed keys asked again."""
        for start in range(0, len(keys), 100):
            pending = list(keys[start : start + 100])
            while pending:
                request: Any = {self.table: {"Keys": pending, **({"ConsistentRead": True} if consistent else {})}}
                with self._errors("batch_get_item"):
                    result: Any = self.client.batch_get_item(RequestItems=request)
                yield from (deserialize(item) for item in result.get("Responses", {}).get(self.table, []))
                pending = result.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])

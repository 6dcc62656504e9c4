"""The daily counters behind GET /stats: exact totals, and writes spread so no DynamoDB partition key
takes more than its ~1,000 writes/s (one item per day would throttle above ~330 messages/s)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import boto3
from moto import mock_aws

from chalicelib.adapters.tables import COUNTER_SHARDS, DynamoStats
from chalicelib.domain.ports import latency_bucket
from tests.aws import create_tables

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_a_days_counts_spread_over_shards_and_add_up_exactly() -> None:
    with mock_aws():
        client = boto3.client("dynamodb")
        table = create_tables(client)["CountersTable"]
        stats = DynamoStats(client, table)
        writes: Counter[str] = Counter()
        original = client.update_item

        def counted(**kwargs: object) -> object:
            writes[kwargs["Key"]["day"]["S"]] += 1  # type: ignore[index]
            return original(**kwargs)

        client.update_item = counted
        for i in range(1_600):
            stats.count("delivered" if i % 4 else "undelivered", 30007 if i % 4 == 0 else None, NOW)
        # an item written before counters were sharded still counts
        original(
            TableName=table,
            Key={"day": {"S": "2026-11-26"}},
            UpdateExpression="ADD #s :n",
            ExpressionAttributeNames={"#s": "status#delivered"},
            ExpressionAttributeValues={":n": {"N": "5"}},
        )
        totals = stats.totals(["2026-11-26"])
        assert (totals["by_status"], totals["by_error_code"]) == (
            {"delivered": 1_205, "undelivered": 400},
            {"30007": 400},
        )
        assert totals["days"]["2026-11-26"]["by_status"] == {"delivered": 1_205, "undelivered": 400}  # the bare day too
        assert len(writes) == COUNTER_SHARDS and max(writes.values()) < 1_600 / COUNTER_SHARDS * 2
        empty = stats.totals(["2026-11-25"])
        assert (empty["by_status"], empty["by_error_code"], empty["days"]) == ({}, {}, {})


def test_one_write_counts_a_status_its_code_its_connection_and_its_time_to_delivery() -> None:
    with mock_aws():
        client = boto3.client("dynamodb")
        stats = DynamoStats(client, create_tables(client)["CountersTable"])
        stats.count("delivered", None, NOW, ["conn#eu", latency_bucket(7.5)])
        stats.count("undelivered", 30007, NOW, ["conn#eu"])
        stats.count(None, None, NOW, ["event#opt_out"])
        totals = stats.totals(["2026-11-26"])
        assert totals["by_connection"] == {"eu": 2} and totals["delivered_within"] == {"10": 1}
        assert totals["events"] == {"opt_out": 1} and totals["days"]["2026-11-26"]["events"] == {"opt_out": 1}
        assert latency_bucket(90_000) == "latency#more"


def test_a_92_day_window_is_read_in_batches() -> None:
    with mock_aws():
        client = boto3.client("dynamodb")
        stats = DynamoStats(client, create_tables(client)["CountersTable"])
        stats.count("sent", None, NOW)
        days = [f"2026-{m:02d}-{d:02d}" for m in (9, 10, 11) for d in range(1, 31)][:92]
        assert stats.totals(days)["by_status"] == {"sent": 1}  # 92 × 17 keys: 16 BatchGetItem calls

"""The daily counters behind GET /stats: exact totals however often the outbox retries a batch, and writes
spread so no DynamoDB partition key takes more than its ~1,000 writes/s."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import boto3
from moto import mock_aws

from chalicelib.adapters.tables import COUNTER_SHARDS, DynamoStats
from chalicelib.domain.ports import latency_bucket
from tests.aws import create_tables

DAY = "2026-11-26"


def _stats() -> tuple[Any, DynamoStats, str]:
    client = boto3.client("dynamodb")
    table = create_tables(client)["CountersTable"]
    return client, DynamoStats(client, table), table


def test_batches_spread_over_shards_and_add_up_exactly() -> None:
    with mock_aws():
        client, stats, table = _stats()
        writes: Counter[str] = Counter()
        original = client.transact_write_items

        def counted(**kwargs: Any) -> Any:
            for write in kwargs["TransactItems"]:
                if "Update" in write:
                    writes[write["Update"]["Key"]["day"]["S"]] += 1
            return original(**kwargs)

        client.transact_write_items = counted
        for batch in range(400):  # one write per batch, whatever its size
            stats.count_batch(f"{batch:021d}", {DAY: {"status#delivered": 3, "status#undelivered": 1, "code#30007": 1}})
        # an item written before counters were sharded still counts
        client.update_item(
            TableName=table,
            Key={"day": {"S": DAY}},
            UpdateExpression="ADD #s :n",
            ExpressionAttributeNames={"#s": "status#delivered"},
            ExpressionAttributeValues={":n": {"N": "5"}},
        )
        totals = stats.totals([DAY])
        assert (totals["by_status"], totals["by_error_code"]) == (
            {"delivered": 1_205, "undelivered": 400},
            {"30007": 400},
        )
        assert totals["days"][DAY]["by_status"] == {"delivered": 1_205, "undelivered": 400}
        assert len(writes) == COUNTER_SHARDS and max(writes.values()) < 400 / COUNTER_SHARDS * 2
        empty = stats.totals(["2026-11-25"])
        assert (empty["by_status"], empty["by_error_code"], empty["days"]) == ({}, {}, {})


def test_a_replayed_batch_counts_nothing_twice_and_a_bisected_one_counts_each_record_once() -> None:
    """How Lambda retries a stream batch (docs.aws.amazon.com/lambda/latest/dg/with-ddb.html, "Error handling"):
    whole, after a timeout; halved (BisectBatchOnFunctionError); from the record a function reported."""
    with mock_aws():
        _, stats, _ = _stats()
        whole = {DAY: {"status#sent": 6, "status#delivered": 4}}
        stats.count_batch("100", whole)
        stats.count_batch("100", whole)  # the same batch again: it timed out after counting
        assert stats.totals([DAY])["by_status"] == {"sent": 6, "delivered": 4}
        stats.count_batch("100", {DAY: {"status#sent": 3, "status#delivered": 2}})  # bisected: the first half...
        stats.count_batch("105", {DAY: {"status#sent": 3, "status#delivered": 2}})  # ...and the second
        assert stats.totals([DAY])["by_status"] == {"sent": 6, "delivered": 4}
        stats.count_batch("100", {DAY: {"status#sent": 1}})  # its first half failed at its second record...
        stats.count_batch("101", {DAY: {"status#sent": 2, "status#delivered": 2}})  # ...retried from there
        assert stats.totals([DAY])["by_status"] == {"sent": 6, "delivered": 4}


def test_two_runs_of_one_batch_at_once_add_once() -> None:
    from local.aws import AtomicClient  # DynamoDB's atomic conditions, which moto alone lacks across threads

    with mock_aws():
        client, _, table = _stats()
        stats = DynamoStats(AtomicClient(client), table)  # type: ignore[arg-type]
        barrier = threading.Barrier(4)

        def run() -> None:
            barrier.wait()
            stats.count_batch("200", {DAY: {"status#sent": 10}})

        threads = [threading.Thread(target=run) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert stats.totals([DAY])["by_status"] == {"sent": 10}


def test_one_write_counts_a_status_its_code_its_connection_and_its_time_to_delivery() -> None:
    with mock_aws():
        _, stats, _ = _stats()
        counts = {"status#delivered": 1, "status#undelivered": 1, "code#30007": 1, "conn#eu": 2, "event#opt_out": 1}
        stats.count_batch("300", {DAY: {**counts, latency_bucket(7.5): 1}})
        totals = stats.totals([DAY])
        assert totals["by_connection"] == {"eu": 2} and totals["delivered_within"] == {"10": 1}
        assert totals["events"] == {"opt_out": 1} and totals["days"][DAY]["events"] == {"opt_out": 1}
        assert latency_bucket(90_000) == "latency#more"


def test_a_92_day_window_is_read_in_batches() -> None:
    with mock_aws():
        _, stats, _ = _stats()
        stats.count_batch("400", {DAY: {"status#sent": 1}})
        days = [f"2026-{m:02d}-{d:02d}" for m in (9, 10, 11) for d in range(1, 31)][:92]
        assert stats.totals(days)["by_status"] == {"sent": 1}  # 92 × 17 keys: 16 BatchGetItem calls

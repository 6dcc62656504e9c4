"""The guardrails' counts on DynamoDB (moto) count each message once however often SQS delivers it or a held
message comes back: a cap counts message ids, the budget is charged with a mark on the message itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from moto import mock_aws

from chalicelib.adapters.guard_store import DynamoGuardStore
from chalicelib.domain.guardrails import FrequencyCap
from tests.aws import create_tables

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
TO = "+13105550100"


def _store() -> tuple[Any, DynamoGuardStore, str]:
    client = boto3.client("dynamodb")
    tables = create_tables(client)
    return (
        client,
        DynamoGuardStore(client, tables["CountersTable"], tables["MessagesTable"], 2),
        tables["MessagesTable"],
    )


def _claimed(client: Any, table: str, message_id: str) -> None:
    client.put_item(TableName=table, Item={"id": {"S": message_id}, "claim_token": {"S": "t"}})


def test_a_cap_counts_each_message_once_and_refuses_past_it() -> None:
    with mock_aws():
        _, store, _ = _store()
        cap = FrequencyCap(per_day=2, per_week=3)
        assert store.count_recipient("c", TO, "m1", cap, NOW) == ""
        assert store.count_recipient("c", TO, "m1", cap, NOW) == ""  # delivered again: not counted again
        assert store.count_recipient("c", TO, "m2", cap, NOW) == ""
        assert store.count_recipient("c", TO, "m3", cap, NOW) == "per_day"
        assert store.count_recipient("c", TO, "m2", cap, NOW) == ""  # one already counted still goes
        assert store.count_recipient("other", TO, "m4", cap, NOW) == ""  # per connection
        assert store.count_recipient("c", "+13105550199", "m5", cap, NOW) == ""  # per recipient
        tomorrow = NOW + timedelta(days=1)
        assert store.count_recipient("c", TO, "m6", cap, tomorrow) == ""
        assert store.count_recipient("c", TO, "m7", cap, tomorrow) == "per_week"  # 3 this week already


def test_the_budget_is_charged_once_per_message_and_an_admin_adds_to_today() -> None:
    with mock_aws():
        client, store, messages = _store()
        for n in range(3):
            _claimed(client, messages, f"m{n}")
        assert store.charge("c", "m0", "t", 2, 3, NOW)
        assert store.charge("c", "m0", "t", 2, 3, NOW)  # again (a redelivery, a release): charged before
        assert store.spend("c", NOW) == (2, 0)
        assert not store.charge("c", "m1", "t", 2, 3, NOW)  # 4 > 3
        assert store.charge("c", "m2", "t", 1, 3, NOW) and store.spend("c", NOW) == (3, 0)
        assert store.charge("c", "m0", "t", 2, 3, NOW)  # charged before: the full budget does not hold it
        assert store.add_segments("c", 2, NOW, 3) == (3, 2)
        assert store.charge("c", "m1", "t", 2, 3, NOW) and store.spend("c", NOW) == (5, 2)
        assert store.spend("c", NOW + timedelta(days=1)) == (0, 0)  # a new UTC day


def test_a_held_message_is_found_when_due_and_released_once() -> None:
    with mock_aws():
        client, store, messages = _store()
        _claimed(client, messages, "m1")
        hold = {"status": "scheduled", "until": NOW + timedelta(hours=9), "reason": "quiet_hours", "connection": "c"}
        item = store.hold("m1", "t", hold, {"to": TO, "body": "hi"}, NOW)
        assert item is not None and item["status"] == "scheduled" and "claim_token" not in item
        assert store.hold("m1", "t", hold, {}, NOW) is None  # the claim is gone: a second hold does nothing
        key = store.held_key("c", "quiet_hours", "m1")
        assert store.due(key, NOW) == []
        (due,) = store.due(key, NOW + timedelta(hours=9))
        assert due.message_id == "m1" and due.reason == "quiet_hours" and '"body":"hi"' in due.request
        assert store.unhold(due, NOW) and not store.unhold(due, NOW)  # the second run finds it released
        assert store.due(key, NOW + timedelta(days=1)) == []
        record = client.get_item(TableName=messages, Key={"id": {"S": "m1"}})["Item"]
        assert record["status"]["S"] == "pending" and "held_key" not in record and "release_at" not in record


def test_a_campaigns_budget_is_spread_over_items_and_still_adds_up_exactly() -> None:
    # one item a day would take every send's write (~1,000 writes/s a partition key): the day is split in shares
    with mock_aws():
        client, store, messages = _store()  # 2 shards
        writes: dict[str, int] = {}
        original = client.transact_write_items

        def counted(**kwargs: Any) -> Any:
            key = kwargs["TransactItems"][0]["Update"]["Key"]["day"]["S"]
            writes[key] = writes.get(key, 0) + 1
            return original(**kwargs)

        client.transact_write_items = counted
        charged = 0
        for n in range(60):
            _claimed(client, messages, f"m{n}")
            charged += store.charge("c", f"m{n}", "t", 5, 250, NOW)  # 50 fit: 250 segments in shares of 125
        assert charged == 50 and store.spend("c", NOW) == (250, 0)
        assert len(writes) == 2 and all(n >= 25 for n in writes.values()), writes  # both shards took writes
        assert store.add_segments("c", 10, NOW, 250) == (250, 10)  # shared over the shards too
        _claimed(client, messages, "late")
        assert store.charge("c", "late", "t", 5, 250, NOW) and store.spend("c", NOW) == (255, 10)


def test_a_small_budget_is_one_item_so_any_message_fits_its_share() -> None:
    with mock_aws():
        client, store, messages = _store()
        _claimed(client, messages, "m1")
        assert store.charge("c", "m1", "t", 24, 30, NOW)  # a 24-segment message against a 30-segment budget

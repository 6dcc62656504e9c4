"""The messages table's stream as Lambda hands it to the outbox function (docs.aws.amazon.com/lambda/latest/dg/
with-ddb.html, "Example event"): DynamoDB-typed images become plain items, in the stream's order."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from chalicelib.adapters.dynamo import deserialize
from chalicelib.usecases.outbox import StreamRecord


def stream_records(event: Mapping[str, Any]) -> list[StreamRecord]:
    records = []
    for record in event.get("Records") or []:
        change = record["dynamodb"]
        when = change.get("ApproximateCreationDateTime")  # epoch seconds
        at = datetime.fromtimestamp(float(when), UTC) if when is not None else datetime.now(UTC)
        old, new = change.get("OldImage"), change.get("NewImage")
        records.append(
            StreamRecord(
                sequence=str(change["SequenceNumber"]),
                old=deserialize(old) if old else None,
                new=deserialize(new) if new else None,
                at=at,
            )
        )
    return records

"""The guardrails' state on DynamoDB (README, "Guardrails"): per-recipient caps and the daily segment budget in
the counters table, held messages on their ledger item (sparse index `by_release`).

Every count is idempotent per message, so SQS's redeliveries and the release of a held message never count
one message twice: a cap item keeps the ids it counted (a string set), and the budget is charged in one
transaction with a mark on the message's own item.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.dynamo import ConditionFailed, DynamoTable, Update, deserialize, serialize
from chalicelib.domain import rules
from chalicelib.domain.guard_ports import Held
from chalicelib.domain.guardrails import FrequencyCap, week_of
from chalicelib.domain.ledger import RELEASE_INDEX, event
from chalicelib.domain.polling import shard_of
from chalicelib.domain.ports import StoreError

KEEP = timedelta(days=9)  # a cap or budget item outlives its day and its week


def _recipient(phone: str) -> str:
    return hashlib.sha256(phone.encode()).hexdigest()[:24]  # a key, not a number someone can read


class DynamoGuardStore(DynamoTable):
    """The counters table's calls; `self.items` makes the messages table's (the held messages, the budget mark)."""

    def __init__(self, client: Any, counters_table: str, messages_table: str, shards: int = 1) -> None:
        super().__init__(client, counters_table)
        self.items = DynamoTable(client, messages_table)
        self.shards = max(1, shards)

    def _transact(self, items: list[dict[str, Any]]) -> list[str]:
        """Run the writes together; the cancellation reason of each ([] when they all applied)."""
        try:
            client: Any = self.client
            with self._errors("transact_write_items"):
                client.transact_write_items(TransactItems=items)
        except (StoreError, ConditionFailed) as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and cause.response["Error"]["Code"] == "TransactionCanceledException":
                reasons = cause.response.get("CancellationReasons") or []
                return [str(r.get("Code") or "None") for r in reasons]
            raise
        return []

    # --- frequency caps ------------------------------------------------------------------

    def count_recipient(self, connection: str, to: str, message_id: str, cap: FrequencyCap, now: datetime) -> str:
        """Count the message for its recipient: '' if under every cap, else the cap it is over."""
        expires = int((now + KEEP).timestamp())
        periods = [(n, f"per_day={rules.day_of(now)}", limit) for n, limit in (("per_day", cap.per_day),) if limit]
        periods += [(n, f"per_week={week_of(now)}", limit) for n, limit in (("per_week", cap.per_week),) if limit]
        items = []
        for _, period, limit in periods:
            condition = "attribute_not_exists(ids) OR size(ids) < :limit OR contains(ids, :id)"
            items.append(
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": serialize({"day": f"cap#{connection}#{_recipient(to)}#{period}"}),
                        "UpdateExpression": "ADD ids :ids SET expires_at = :exp",
                        "ConditionExpression": condition,
                        "ExpressionAttributeValues": {
                            ":ids": {"SS": [message_id]},  # a string set: serialize() writes JSON's types
                            **serialize({":limit": limit, ":id": message_id, ":exp": expires}),
                        },
                    }
                }
            )
        reasons = self._transact(items)
        failed = [
            name for (name, _, _), code in zip(periods, reasons, strict=False) if code == "ConditionalCheckFailed"
        ]
        if reasons and not failed:
            raise StoreError(f"frequency cap not counted: {reasons}")
        return failed[0] if failed else ""

    # --- the daily segment budget ---------------------------------------------------------
    # One item a day would take every send's write: past ~1,000 writes/s one partition key throttles (a campaign's
    # rate). The day's budget is split over up to `shards` items (as POLL_WINDOW_SHARDS, planned from SEND_RATE),
    # each with its share; a send charges its own shard and tries the others when that one is spent.

    def _budget_key(self, connection: str, now: datetime, shard: int) -> dict[str, Any]:
        return serialize({"day": f"budget#{connection}#{rules.day_of(now)}#{shard}"})

    def _split(self, limit: int) -> int:
        """Shards for a budget: each share at least 100 segments (more than any one message)."""
        return max(1, min(self.shards, limit // 100))

    @staticmethod
    def _share(total: int, shards: int, shard: int) -> int:
        return total // shards + (1 if shard < total % shards else 0)

    def _shard(self, connection: str, now: datetime, shard: int) -> tuple[int, int]:
        result = self._call("get_item", Key=self._budget_key(connection, now, shard), ConsistentRead=True)
        item = deserialize(result.get("Item") or {})
        return int(item.get("spent") or 0), int(item.get("extra") or 0)

    def spend(self, connection: str, now: datetime) -> tuple[int, int]:
        """(segments charged today, segments an admin added today)."""
        shards = [self._shard(connection, now, k) for k in range(self.shards)]
        return sum(spent for spent, _ in shards), sum(extra for _, extra in shards)

    def charge(self, connection: str, message_id: str, token: str, segments: int, limit: int, now: datetime) -> bool:
        """Charge a message's segments to today's budget, once per message: False when it would go over."""
        shards = self._split(limit)
        first = shard_of(message_id, shards)
        for shard in ((first + k) % shards for k in range(shards)):
            share = self._share(limit, shards, shard)
            for _ in range(3):
                spent, extra = self._shard(connection, now, shard)
                if spent + segments > share + extra:
                    break  # this shard is spent: the next one
                reasons = self._transact([self._charge(connection, now, shard, segments, share, extra),
                                          self._mark(message_id, token, now)])  # fmt: skip
                if not reasons or reasons[1] == "ConditionalCheckFailed":
                    return True  # charged now, or before (a redelivery, or a release): never twice
                # another send took the shard's last segments, or an admin added some: read it again
        return self._charged_before(message_id)  # a redelivered copy of one charged, then put back

    def _charge(self, connection: str, now: datetime, shard: int, segments: int, share: int, extra: int) -> Any:
        values = {":n": segments, ":before": share + extra - segments, ":extra": extra, ":zero": 0}
        return {
            "Update": {
                "TableName": self.table,
                "Key": self._budget_key(connection, now, shard),
                "UpdateExpression": "ADD spent :n SET expires_at = :exp",
                "ConditionExpression": "(attribute_not_exists(spent) OR spent <= :before) AND "
                "(attribute_not_exists(extra) AND :extra = :zero OR extra = :extra)",
                "ExpressionAttributeValues": serialize({**values, ":exp": int((now + KEEP).timestamp())}),
            }
        }

    def _mark(self, message_id: str, token: str, now: datetime) -> Any:
        return {
            "Update": {
                "TableName": self.items.table,
                "Key": serialize({"id": message_id}),
                "UpdateExpression": "SET budget_day = :day",
                "ConditionExpression": "claim_token = :token AND attribute_not_exists(budget_day)",
                "ExpressionAttributeValues": serialize({":day": rules.day_of(now), ":token": token}),
            }
        }

    def _charged_before(self, message_id: str) -> bool:
        found = self.items._call("get_item", Key=serialize({"id": message_id}), ProjectionExpression="budget_day")
        return "budget_day" in (found.get("Item") or {})

    def add_segments(self, connection: str, segments: int, now: datetime, limit: int) -> tuple[int, int]:
        """An admin's release: today's budget grows by `segments`, shared over its shards. (spent, extra) after."""
        shards = self._split(limit)
        for shard in range(shards):
            share = self._share(segments, shards, shard)
            if share:
                values = serialize({":n": share, ":exp": int((now + KEEP).timestamp())})
                self._call(
                    "update_item",
                    Key=self._budget_key(connection, now, shard),
                    UpdateExpression="ADD extra :n SET expires_at = :exp",
                    ExpressionAttributeValues=values,
                )
        return self.spend(connection, now)

    # --- held messages ---------------------------------------------------------------------

    def held_key(self, connection: str, reason: str, message_id: str) -> str:
        kind = "budget" if reason == "budget" else "time"
        return f"{connection}#{kind}#{shard_of(message_id, self.shards)}"

    def hold(
        self,
        message_id: str,
        token: str,
        hold: Mapping[str, Any],
        request: Any,
        now: datetime,
    ) -> Mapping[str, Any] | None:
        """Park a claimed message until `hold['until']`: the record says `scheduled` (quiet hours) or `held`."""
        status, until, reason = str(hold["status"]), hold["until"], str(hold["reason"])
        key = self.held_key(str(hold["connection"]), reason, message_id)
        u = Update().set(
            {
                "status": status,
                "held_key": key,
                "release_at": rules.iso(until),
                "held_reason": reason,
                "held_request": json.dumps(request, separators=(",", ":")),
                "scheduled_for": rules.iso(until) if status == "scheduled" else None,
                "claim_state": "released",
                "updated_at": rules.iso(now),
            }
        )
        u.append("events", [event(status, now, reason)]).remove("claim_token", "claimed_at")
        condition = f"{u.n('claim_token')} = {u.v(token)}"
        try:
            result = self.items._call("update_item", ReturnValues="ALL_NEW", **u.request({"id": message_id}, condition))
        except ConditionFailed:
            return None
        return deserialize(result["Attributes"])

    def due(self, held_key: str, until: datetime, limit: int = 100) -> list[Held]:
        """Held messages under one key whose release time has come, oldest first."""
        result = self.items._call(
            "query",
            IndexName=RELEASE_INDEX,
            KeyConditionExpression="held_key = :k AND release_at <= :t",
            ExpressionAttributeValues=serialize({":k": held_key, ":t": rules.iso(until)}),
            Limit=limit,
        )
        items = [deserialize(i) for i in result.get("Items", [])]
        return [
            Held(
                str(i["id"]),
                str(i["held_key"]),
                str(i["release_at"]),
                str(i.get("held_reason") or ""),
                str(i.get("held_request") or "{}"),
                int(i.get("num_segments") or 1),
            )
            for i in items
        ]

    def bring_forward(self, held: Held, now: datetime) -> bool:
        """Make a budget-held message due now (an admin added segments): the claim then waits for its release."""
        u = Update().set({"release_at": rules.iso(now)})
        return self._held_update(held, u)

    def unhold(self, held: Held, now: datetime) -> bool:
        """The message is on the send queue again: it is `pending`, and its copy claims it."""
        u = Update().set({"status": "pending", "updated_at": rules.iso(now)})
        u.remove("held_key", "release_at", "held_request", "held_reason", "scheduled_for")
        return self._held_update(held, u)

    def _held_update(self, held: Held, u: Update) -> bool:
        try:
            self.items._call("update_item", **u.request({"id": held.message_id}, f"held_key = {u.v(held.held_key)}"))
        except ConditionFailed:
            return False
        return True

    def note_retry(self, message_id: str) -> int:
        """Count a create the connection's error policy retries: how many so far."""
        result = self.items._call(
            "update_item",
            Key=serialize({"id": message_id}),
            UpdateExpression="ADD policy_retries :one",
            ExpressionAttributeValues=serialize({":one": 1}),
            ReturnValues="UPDATED_NEW",
        )
        return int(deserialize(result["Attributes"]).get("policy_retries") or 0)

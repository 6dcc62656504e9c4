"""The message ledger on DynamoDB (opt-outs, templates, counters and senders are in tables.py; the
shared DynamoDB toolkit in dynamo.py).

The ledger is the messages table. A conditional write claims a message before
it is sent; the Twilio SID, status, segments and price are written after. The
decision of who may send is `rules.decide_claim`; this module only makes it
atomic. botocore's ClientError never leaves this module: it becomes StoreError.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from chalicelib.adapters.dynamo import ConditionFailed, DynamoTable, Update, deserialize, serialize
from chalicelib.domain import rules
from chalicelib.domain.ledger import (
    ACCOUNT_INDEX,
    CLAIM_FINISHED,
    CLAIM_RELEASED,
    CONTENT_PREFIX,
    POLL_WINDOW_INDEX,
    RECIPIENT_INDEX,
    BadPageToken,
    ClaimResult,
    MessageRecord,
    PageQuery,
    SentMessage,
    StatusUpdate,
    event,
    lower_statuses,
    sent_values,
)
from chalicelib.domain.polling import SHARD_SEPARATOR, poll_key, shard_key
from chalicelib.domain.rules import CLAIM_IN_FLIGHT, CLAIM_OUTCOME_UNKNOWN, ClaimOutcome

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DynamoMessageLedger(DynamoTable):
    def __init__(self, client: DynamoDBClient, table: str, ttl_days: int = 90, poll_shards: int = 1) -> None:
        super().__init__(client, table)
        self.ttl = timedelta(days=ttl_days)
        self.poll_shards = poll_shards

    def get(self, message_id: str) -> MessageRecord | None:
        result = self._call("get_item", Key=serialize({"id": message_id}), ConsistentRead=True)
        item = result.get("Item")
        return MessageRecord(deserialize(item)) if item else None

    def _fresh_condition(self, u: Update) -> str:
        return (
            f"attribute_not_exists({u.n('id')}) OR ({u.n('status')} = {u.v('pending')} "
            f"AND attribute_not_exists({u.n('claim_token')}) AND attribute_not_exists({u.n('twilio_sid')}))"
        )

    def _lifetime(self, u: Update, now: datetime) -> Update:
        u.set({"updated_at": rules.iso(now), "expires_at": int((now + self.ttl).timestamp())})
        return u.set_if_absent("created_at", rules.iso(now))

    def claim(
        self, message_id: str, attrs: Mapping[str, Any], token: str, now: datetime, lease: timedelta
    ) -> ClaimResult:
        for _ in range(3):
            u = self._lifetime(Update(), now).set(attrs)
            u.set({"claim_token": token, "claimed_at": rules.iso(now), "claim_state": CLAIM_IN_FLIGHT})
            u.set_if_absent("status", "pending").set_if_absent("first_claimed_at", rules.iso(now))
            try:
                self._call("update_item", **u.request({"id": message_id}, self._fresh_condition(u)))
                return ClaimResult(ClaimOutcome.FRESH)
            except ConditionFailed:
                existing = self.get(message_id)
            outcome = rules.decide_claim(existing.claim if existing else None, now, lease)
            if outcome is ClaimOutcome.FRESH:
                continue  # the claim was released between our write and read
            if outcome is ClaimOutcome.TAKEOVER and existing is not None:
                t = Update().set({"claim_token": token, "claimed_at": rules.iso(now), "claim_state": CLAIM_IN_FLIGHT})
                t.set({"updated_at": rules.iso(now)})
                condition = f"{t.n('claim_token')} = {t.v(existing.claim_token)}"
                try:
                    self._call("update_item", **t.request({"id": message_id}, condition))
                except ConditionFailed:
                    continue
            return ClaimResult(outcome, existing)
        return ClaimResult(ClaimOutcome.BUSY)

    def record_sent(self, message_id: str, sent: SentMessage, now: datetime) -> MessageRecord | None:
        values = sent_values(sent, now)
        if sent.poll_window is not None:
            values["poll_window"] = poll_key(sent.poll_window, message_id, self.poll_shards)
        u = Update().set(values)
        u.append("events", [event(sent.status, now, sent.source, sent.error_code)]).remove("claim_token")
        return self._update_returning(message_id, u, f"attribute_not_exists({u.n('twilio_sid')})")

    def _update_returning(self, message_id: str, u: Update, condition: str) -> MessageRecord | None:
        """Apply a conditional update: the record as it now is, or None if the condition failed."""
        try:
            result = self._call("update_item", **u.request({"id": message_id}, condition), ReturnValues="ALL_NEW")
        except ConditionFailed:
            return None
        return MessageRecord(deserialize(result["Attributes"]))

    def record_error(
        self,
        message_id: str,
        code: int,
        message: str,
        now: datetime,
        attrs: Mapping[str, Any] | None = None,
        token: str | None = None,
    ) -> MessageRecord | None:
        u = self._lifetime(Update(), now).set(dict(attrs or {}))
        u.set({"status": "error", "error_code": code, "error_message": message, "claim_state": CLAIM_FINISHED})
        u.append("events", [event("error", now, "send", code)]).remove("claim_token")
        condition = self._fresh_condition(u) if token is None else f"{u.n('claim_token')} = {u.v(token)}"
        return self._update_returning(message_id, u, condition)

    def _finish_claim(self, message_id: str, token: str, u: Update) -> None:
        # If the condition fails, someone took the claim over and owns the outcome now.
        with contextlib.suppress(ConditionFailed):
            self._call("update_item", **u.request({"id": message_id}, f"{u.n('claim_token')} = {u.v(token)}"))

    def mark_outcome_unknown(self, message_id: str, token: str, now: datetime) -> None:
        u = Update().set({"claim_state": CLAIM_OUTCOME_UNKNOWN, "updated_at": rules.iso(now)})
        self._finish_claim(message_id, token, u)

    def release(self, message_id: str, token: str, now: datetime) -> None:
        u = Update().set({"claim_state": CLAIM_RELEASED, "updated_at": rules.iso(now)})
        self._finish_claim(message_id, token, u.remove("claim_token", "claimed_at"))

    # --- accepted through the API ----------------------------------------------

    def create_pending(self, message_id: str, attrs: Mapping[str, Any], now: datetime) -> MessageRecord | None:
        """Write a new `pending` record; None if the id exists (a repeated idempotency key)."""
        u = self._lifetime(Update(), now).set({**attrs, "status": "pending"})
        u.append("events", [event("pending", now, "api")])
        return self._update_returning(message_id, u, f"attribute_not_exists({u.n('id')})")

    def mark_enqueued(self, message_id: str, now: datetime) -> None:
        self._call(
            "update_item",
            Key=serialize({"id": message_id}),
            UpdateExpression="SET enqueued_at = :now",
            ExpressionAttributeValues=serialize({":now": rules.iso(now)}),
        )

    # --- status tracking -------------------------------------------------------

    def get_many(self, message_ids: Sequence[str]) -> dict[str, MessageRecord]:
        keys = [serialize({"id": i}) for i in dict.fromkeys(message_ids)]
        records = (MessageRecord(item) for item in self._batch_get(keys, consistent=True))
        return {record.id: record for record in records}

    def apply_status(self, message_id: str, update: StatusUpdate, now: datetime) -> MessageRecord | None:
        lower = lower_statuses(update.status)
        if not lower:
            return None
        u = Update().set(update.values(now))
        u.append("events", [event(update.status, now, update.source, update.error_code)])
        if update.status in rules.TERMINAL_STATUSES:
            u.remove("poll_window")  # no poll execution needs it any more
        condition = f"{u.n('status')} IN ({', '.join(u.v(s) for s in lower)})"
        if update.twilio_sid:
            condition += f" AND {u.n('twilio_sid')} = {u.v(update.twilio_sid)}"
        return self._update_returning(message_id, u, condition)

    def mark_poll_exhausted(self, message_id: str, attempts: int, now: datetime) -> None:
        with contextlib.suppress(ConditionFailed):
            self._call(
                "update_item",
                Key=serialize({"id": message_id}),
                UpdateExpression=(
                    "SET polling = :exhausted, poll_attempts = :attempts, updated_at = :now REMOVE poll_window"
                ),
                ConditionExpression="attribute_exists(id)",
                ExpressionAttributeValues=serialize(
                    {":exhausted": "exhausted", ":attempts": attempts, ":now": rules.iso(now)}
                ),
            )

    def record_reply(self, item: Mapping[str, Any], now: datetime) -> MessageRecord | None:
        try:
            self._call(
                "put_item",
                Item=serialize({**item, "expires_at": int((now + self.ttl).timestamp())}),
                ConditionExpression="attribute_not_exists(id)",
            )
            return None
        except ConditionFailed:
            return self.get(str(item["id"]))

    def mark_reply_handled(self, reply_id: str) -> None:
        self._call(
            "update_item",
            Key=serialize({"id": reply_id}),
            UpdateExpression="SET handled = :yes",
            ExpressionAttributeValues=serialize({":yes": True}),
        )

    def last_message_to(self, phone: str) -> str | None:
        result = self._call(
            "query",
            IndexName=RECIPIENT_INDEX,
            KeyConditionExpression="#to = :to",
            ExpressionAttributeNames={"#to": "to"},
            ExpressionAttributeValues=serialize({":to": phone}),
            ScanIndexForward=False,
            Limit=1,
        )
        items = result.get("Items") or []
        return str(deserialize(items[0])["id"]) if items else None

    def open_in_window(self, window: int) -> list[str]:
        """The messages a poll window still follows (terminal ones have left the sparse index)."""
        ids, cursor = self.open_page(window, None, 1000)
        while cursor is not None:
            page, cursor = self.open_page(window, cursor, 1000)
            ids += page
        return ids

    def open_page(self, window: int, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        """Up to `limit` ids, one shard at a time, and where to go on (None: the window is read)."""
        shard, position = 0, cursor
        if cursor is not None and SHARD_SEPARATOR in cursor:
            number, _, rest = cursor.partition(SHARD_SEPARATOR)
            shard, position = int(number), rest or None
        while shard < self.poll_shards:
            key = {"N": str(shard_key(window, shard))}
            request: dict[str, Any] = {
                "IndexName": POLL_WINDOW_INDEX,
                "KeyConditionExpression": "poll_window = :w",
                "ExpressionAttributeValues": {":w": key},
                "Limit": limit,
            }
            if position is not None:  # a position, not an item: it holds even if that message has left the index
                request["ExclusiveStartKey"] = {"id": {"S": position}, "poll_window": key}
            result = self._call("query", **request)
            ids = [item["id"]["S"] for item in result.get("Items", [])]
            last = result.get("LastEvaluatedKey")
            if last:
                return ids, last["id"]["S"] if self.poll_shards == 1 else f"{shard}{SHARD_SEPARATOR}{last['id']['S']}"
            shard, position = shard + 1, None
            if ids:
                return ids, f"{shard}{SHARD_SEPARATOR}" if shard < self.poll_shards else None
        return [], None

    # --- the Twilio-compatible front door --------------------------------------

    def claim_content(self, key: str, message_id: str, now: datetime, window: timedelta) -> str:
        until = int((now + window).timestamp())
        u = Update().set({"message_id": message_id, "until": until, "expires_at": until + 60})
        condition = f"attribute_not_exists({u.n('id')}) OR {u.n('until')} < {u.v(int(now.timestamp()))}"
        try:
            self._call("update_item", **u.request({"id": CONTENT_PREFIX + key}, condition))
            return message_id
        except ConditionFailed:
            result = self._call("get_item", Key=serialize({"id": CONTENT_PREFIX + key}), ConsistentRead=True)
        return str(deserialize(result["Item"])["message_id"]) if result.get("Item") else message_id

    def account_page(self, account_sid: str, query: PageQuery) -> tuple[list[MessageRecord], str | None]:
        names = {"#a": "account_sid"}
        values: dict[str, Any] = {":a": account_sid}
        key = "#a = :a"
        lo, hi = query.created_range()
        if lo is not None or hi is not None:
            names["#c"] = "created_at"
        if lo is not None:
            key += " AND #c >= :lo" if hi is None else " AND #c BETWEEN :lo AND :hi"
            values[":lo"] = lo
        elif hi is not None:
            key += " AND #c <= :hi"
        if hi is not None:
            values[":hi"] = hi
        filters = []
        for placeholder, (name, value) in {"t": ("to", query.to), "f": ("from", query.sender)}.items():
            if value is not None:
                names[f"#{placeholder}"], values[f":{placeholder}"] = name, value
                filters.append(f"#{placeholder} = :{placeholder}")
        request: dict[str, Any] = {
            "IndexName": ACCOUNT_INDEX,
            "KeyConditionExpression": key,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": serialize(values),
            "ScanIndexForward": False,
        }
        if filters:
            request["FilterExpression"] = " AND ".join(filters)
        start = decode_page_token(query.token, account_sid)
        ids: list[str] = []
        while len(ids) < query.size:
            if start:
                request["ExclusiveStartKey"] = start
            request["Limit"] = query.size - len(ids)
            result = self._call("query", **request)
            ids += [item["id"]["S"] for item in result.get("Items", [])]
            start = result.get("LastEvaluatedKey")
            if not start:
                break
        found = self.get_many(ids)
        return [found[i] for i in ids if i in found], encode_page_token(start) if start else None

    def cancel_pending(self, message_id: str, now: datetime) -> MessageRecord | None:
        u = Update().set({"status": "canceled", "updated_at": rules.iso(now), "claim_state": CLAIM_FINISHED})
        u.append("events", [event("canceled", now, "api")])
        condition = (
            f"{u.n('status')} = {u.v('pending')} AND attribute_not_exists({u.n('claim_token')}) "
            f"AND attribute_not_exists({u.n('twilio_sid')})"
        )
        return self._update_returning(message_id, u, condition)

    def note_write_back_failure(self, message_id: str, reason: str, now: datetime, status: str = "refused") -> None:
        noted = {"write_back_error": reason[:500], "write_back_status": status, "write_back_failed_at": rules.iso(now)}
        u = Update().set(noted)
        with contextlib.suppress(ConditionFailed):  # a message that expired meanwhile: nothing to note
            self._call("update_item", **u.request({"id": message_id}, f"attribute_exists({u.n('id')})"))


def encode_page_token(key: Mapping[str, Any]) -> str:
    """DynamoDB's LastEvaluatedKey as Twilio's opaque `PA...` PageToken."""
    return "PA" + base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_page_token(token: str | None, account_sid: str) -> dict[str, Any] | None:
    if not token:
        return None
    try:
        raw = token.removeprefix("PA")
        key = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError as exc:
        raise BadPageToken("`PageToken` is not one this API handed out") from exc
    fields = ("id", "account_sid", "created_at")
    if (
        not isinstance(key, dict)
        or set(key) != set(fields)
        or not all(isinstance(key[f], dict) and isinstance(key[f].get("S"), str) for f in fields)
        or key["account_sid"]["S"] != account_sid
    ):
        raise BadPageToken("`PageToken` is not one this API handed out")
    return key

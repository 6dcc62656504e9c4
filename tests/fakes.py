"""In-memory fakes of the ports, kept honest by tests/unit/test_ledger_contract.py,
which runs the same tests against them and against DynamoDB in moto."""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.adapters.dynamo_ledger import decode_page_token, encode_page_token
from chalicelib.adapters.tables import ANY_SENDER
from chalicelib.domain import rules
from chalicelib.domain.connection import ConnectionSettings
from chalicelib.domain.ledger import (
    CLAIM_FINISHED,
    CLAIM_RELEASED,
    CONTENT_PREFIX,
    ClaimResult,
    MessageRecord,
    PageQuery,
    SentMessage,
    StatusUpdate,
    event,
    lower_statuses,
    sent_values,
)
from chalicelib.domain.rules import CLAIM_IN_FLIGHT, CLAIM_OUTCOME_UNKNOWN, ClaimOutcome
from chalicelib.domain.templates import Template
from chalicelib.domain.twilio import TwilioCredentials


class InMemoryLedger:
    def __init__(self, ttl_days: int = 90) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.ttl = timedelta(days=ttl_days)

    def get(self, message_id: str) -> MessageRecord | None:
        with self.lock:
            item = self.items.get(message_id)
            return MessageRecord(copy.deepcopy(item)) if item else None

    @staticmethod
    def _fresh_ok(item: dict[str, Any] | None) -> bool:
        return item is None or (
            item.get("status") == "pending" and "claim_token" not in item and "twilio_sid" not in item
        )

    def _touch(self, item: dict[str, Any], attrs: Mapping[str, Any], now: datetime) -> None:
        item.update({k: copy.deepcopy(v) for k, v in attrs.items() if v is not None})
        item["updated_at"] = rules.iso(now)
        item["expires_at"] = int((now + self.ttl).timestamp())
        item.setdefault("created_at", rules.iso(now))

    def claim(
        self, message_id: str, attrs: Mapping[str, Any], token: str, now: datetime, lease: timedelta
    ) -> ClaimResult:
        with self.lock:
            item = self.items.get(message_id)
            if self._fresh_ok(item):
                item = self.items.setdefault(message_id, {"id": message_id})
                self._touch(item, attrs, now)
                item.update(claim_token=token, claimed_at=rules.iso(now), claim_state=CLAIM_IN_FLIGHT)
                item.setdefault("status", "pending")
                item.setdefault("first_claimed_at", rules.iso(now))
                return ClaimResult(ClaimOutcome.FRESH)
            assert item is not None
            existing = MessageRecord(copy.deepcopy(item))
            outcome = rules.decide_claim(existing.claim, now, lease)
            if outcome is ClaimOutcome.TAKEOVER:
                item.update(
                    claim_token=token, claimed_at=rules.iso(now), claim_state=CLAIM_IN_FLIGHT, updated_at=rules.iso(now)
                )
            return ClaimResult(outcome, existing)

    def record_sent(self, message_id: str, sent: SentMessage, now: datetime) -> MessageRecord | None:
        with self.lock:
            item = self.items.setdefault(message_id, {"id": message_id})
            if "twilio_sid" in item:
                return None
            item.update(sent_values(sent, now))
            item.setdefault("events", []).append(event(sent.status, now, sent.source, sent.error_code))
            item.pop("claim_token", None)
            return MessageRecord(copy.deepcopy(item))

    def record_error(
        self,
        message_id: str,
        code: int,
        message: str,
        now: datetime,
        attrs: Mapping[str, Any] | None = None,
        token: str | None = None,
    ) -> MessageRecord | None:
        with self.lock:
            item = self.items.get(message_id)
            allowed = self._fresh_ok(item) if token is None else (item is not None and item.get("claim_token") == token)
            if not allowed:
                return None
            item = self.items.setdefault(message_id, {"id": message_id})
            self._touch(item, attrs or {}, now)
            item.update(status="error", error_code=code, error_message=message, claim_state=CLAIM_FINISHED)
            item.setdefault("events", []).append(event("error", now, "send", code))
            item.pop("claim_token", None)
            return MessageRecord(copy.deepcopy(item))

    def mark_outcome_unknown(self, message_id: str, token: str, now: datetime) -> None:
        with self.lock:
            item = self.items.get(message_id)
            if item is not None and item.get("claim_token") == token:
                item.update(claim_state=CLAIM_OUTCOME_UNKNOWN, updated_at=rules.iso(now))

    def release(self, message_id: str, token: str, now: datetime) -> None:
        with self.lock:
            item = self.items.get(message_id)
            if item is not None and item.get("claim_token") == token:
                item.update(claim_state=CLAIM_RELEASED, updated_at=rules.iso(now))
                item.pop("claim_token", None)
                item.pop("claimed_at", None)

    def create_pending(self, message_id: str, attrs: Mapping[str, Any], now: datetime) -> MessageRecord | None:
        with self.lock:
            if message_id in self.items:
                return None
            item = self.items[message_id] = {"id": message_id}
            self._touch(item, {**attrs, "status": "pending"}, now)
            item["events"] = [event("pending", now, "api")]
            return MessageRecord(copy.deepcopy(item))

    def mark_enqueued(self, message_id: str, now: datetime) -> None:
        with self.lock:
            self.items[message_id]["enqueued_at"] = rules.iso(now)

    def get_many(self, message_ids: Sequence[str]) -> dict[str, MessageRecord]:
        return {i: r for i in message_ids if (r := self.get(i)) is not None}

    def apply_status(self, message_id: str, update: StatusUpdate, now: datetime) -> MessageRecord | None:
        with self.lock:
            item = self.items.get(message_id)
            if item is None or item.get("status") not in lower_statuses(update.status):
                return None
            if update.twilio_sid and item.get("twilio_sid") != update.twilio_sid:
                return None
            item.update({k: v for k, v in update.values(now).items() if v is not None})
            item.setdefault("events", []).append(event(update.status, now, update.source, update.error_code))
            if update.status in rules.TERMINAL_STATUSES:
                item.pop("poll_window", None)
            return MessageRecord(copy.deepcopy(item))

    def mark_poll_exhausted(self, message_id: str, attempts: int, now: datetime) -> None:
        with self.lock:
            if message_id in self.items:
                self.items[message_id].update(polling="exhausted", poll_attempts=attempts, updated_at=rules.iso(now))
                self.items[message_id].pop("poll_window", None)

    def record_reply(self, item: Mapping[str, Any], now: datetime) -> MessageRecord | None:
        with self.lock:
            if item["id"] in self.items:
                return MessageRecord(copy.deepcopy(self.items[item["id"]]))
            self.items[item["id"]] = {**copy.deepcopy(dict(item)), "expires_at": int((now + self.ttl).timestamp())}
            return None

    def mark_reply_handled(self, reply_id: str) -> None:
        with self.lock:
            self.items[reply_id]["handled"] = True

    def open_in_window(self, window: int) -> list[str]:
        with self.lock:
            return [i for i, item in self.items.items() if item.get("poll_window") == window]

    def open_page(self, window: int, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        after = sorted(i for i in self.open_in_window(window) if cursor is None or i > cursor)
        page = after[:limit]
        return page, (page[-1] if len(after) > limit else None)

    def last_message_to(self, phone: str) -> str | None:
        with self.lock:
            mine = [i for i in self.items.values() if i.get("to") == phone and "created_at" in i]
        return max(mine, key=lambda i: i["created_at"])["id"] if mine else None

    def claim_content(self, key: str, message_id: str, now: datetime, window: timedelta) -> str:
        with self.lock:
            held = self.items.get(CONTENT_PREFIX + key)
            if held is not None and held["until"] >= int(now.timestamp()):
                return str(held["message_id"])
            self.items[CONTENT_PREFIX + key] = {"message_id": message_id, "until": int((now + window).timestamp())}
            return message_id

    def account_page(self, account_sid: str, query: PageQuery) -> tuple[list[MessageRecord], str | None]:
        lo, hi = query.created_range()
        with self.lock:
            mine = [
                i
                for i in self.items.values()
                if i.get("account_sid") == account_sid
                and (lo is None or i["created_at"] >= lo)
                and (hi is None or i["created_at"] <= hi)
            ]
        mine.sort(key=lambda i: (i["created_at"], i["id"]), reverse=True)
        start = decode_page_token(query.token, account_sid)
        if start is not None:
            after = (start["created_at"]["S"], start["id"]["S"])
            mine = [i for i in mine if (i["created_at"], i["id"]) < after]
        page = [i for i in mine if query.matches(i)][: query.size]
        last = page[-1] if len(page) == query.size else None
        token = None
        if last is not None:
            key = {f: {"S": last[f]} for f in ("id", "account_sid", "created_at")}
            token = encode_page_token(key)
        return [MessageRecord(copy.deepcopy(i)) for i in page], token

    def note_write_back_failure(self, message_id: str, reason: str, now: datetime, status: str = "refused") -> None:
        with self.lock:
            if message_id in self.items:
                self.items[message_id].update(
                    write_back_error=reason[:500], write_back_status=status, write_back_failed_at=rules.iso(now)
                )

    def cancel_pending(self, message_id: str, now: datetime) -> MessageRecord | None:
        with self.lock:
            item = self.items.get(message_id)
            if item is None or not self._fresh_ok(item) or "created_at" not in item:
                return None
            item.update(status="canceled", updated_at=rules.iso(now), claim_state=CLAIM_FINISHED)
            item.setdefault("events", []).append(event("canceled", now, "api"))
            return MessageRecord(copy.deepcopy(item))


class InMemoryOptOuts:
    def __init__(self) -> None:
        self.entries: set[tuple[str, str]] = set()

    def opt_out(self, phone: str, sender: str, now: datetime) -> None:
        self.entries.add((phone, sender))

    def opt_in(self, phone: str, sender: str) -> None:
        self.entries.discard((phone, sender))

    def is_opted_out(self, phone: str, senders: Sequence[str]) -> bool:
        return any((phone, s) in self.entries for s in (ANY_SENDER, *senders))


class InMemoryTemplates:
    def __init__(self) -> None:
        self.items: dict[str, Template] = {}

    def get(self, name: str) -> Template | None:
        return self.items.get(name)

    def put(self, template: Template) -> None:
        self.items[template.name] = template


class StaticCredentials:
    """Stands in for SecretsCredentials; counts reads so tests can see caching or its absence."""

    def __init__(self, creds: TwilioCredentials, write_back: str | None = None) -> None:
        self.creds = creds
        self.reads = 0
        self.write_back = write_back

    def for_connection(self, connection: ConnectionSettings) -> TwilioCredentials:
        self.reads += 1
        return self.creds

    def signing_key(self, connection: ConnectionSettings) -> str | None:
        return None

    def write_back_secret(self, connection: ConnectionSettings) -> str | None:
        return self.write_back


class InMemoryStats:
    def __init__(self) -> None:
        self.days: dict[str, dict[str, int]] = {}
        self.batches: dict[str, dict[str, dict[str, int]]] = {}

    def count_batch(self, batch: str, counts: Mapping[str, Mapping[str, int]]) -> None:
        """As DynamoStats does: a batch counted again replaces what it counted before."""
        before = self.batches.get(batch, {})
        for day in {*counts, *before}:
            target = self.days.setdefault(day, {})
            for counter in {*counts.get(day, {}), *before.get(day, {})}:
                delta = counts.get(day, {}).get(counter, 0) - before.get(day, {}).get(counter, 0)
                target[counter] = target.get(counter, 0) + delta
        self.batches[batch] = {day: dict(c) for day, c in counts.items()}

    def totals(self, days: Sequence[str]) -> dict[str, Any]:
        from chalicelib.adapters.tables import summarize

        return summarize((day, self.days[day]) for day in days if day in self.days)


class OpenLine:
    """A platform's line with no one in it: every forward goes at once (stands in for DynamoSenderQueues)."""

    def __init__(self, *places: Any) -> None:
        self.places = list(places)  # queued answers, else "go now"
        self.keys: list[str] = []

    def reserve(self, sender: str, segments: int, rate: float, validity_seconds: float, now: datetime) -> Any:
        from chalicelib.domain.pacing import Reservation

        self.keys.append(f"{sender}@{rate:.0f}/s")
        return self.places.pop(0) if self.places else Reservation(0.0, now)


def make_forwarder(session: Any, signing_key: str = "k", **pieces: Any) -> Any:
    """The forward use case with every format, over in-memory stores; `pieces` replace any of its parts."""
    from chalicelib.adapters.writeback.registry import formats
    from chalicelib.usecases.forward import Forwarder

    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    parts: dict[str, Any] = {
        "connections": {},
        "secrets": lambda connection: None,
        "accounts": None,
        "ledger": InMemoryLedger(),
        "pace": OpenLine(),
        "clock": lambda: now,
        **pieces,
    }
    return Forwarder(formats(), session, signing_key, **parts)

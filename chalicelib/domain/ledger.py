"""The message ledger's model and contract (docs/user-guide.md, "What became of each message"): the record, what a send
and a status report write, and the MessageLedger Protocol the use cases depend on. The DynamoDB adapter is
store.py; tests/fakes.py holds the in-memory one, and tests/unit/test_ledger_contract.py holds both to one
contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from chalicelib.domain import rules
from chalicelib.domain.rules import ClaimOutcome, ClaimState

CLAIM_RELEASED = "released"
RECIPIENT_INDEX = "by_recipient"
ACCOUNT_INDEX = "by_account"  # sparse: only messages that came through the Twilio-compatible front door
CONTENT_PREFIX = "content#"  # items that hold a content window (FACADE_DEDUP_SECONDS), not messages
POLL_WINDOW_INDEX = "by_poll_window"  # sparse: only messages a poll execution still follows carry `poll_window`
CLAIM_FINISHED = "finished"
RELEASE_INDEX = "by_release"  # sparse: only messages a guardrail holds carry `held_key` (adapters/guard_store.py)

PUBLIC_ATTRS = (
    "id",
    "status",
    "to",
    "from",
    "messaging_service_sid",
    "connection",
    "twilio_sid",
    "error_code",
    "error_message",
    "num_segments",
    "encoding",
    "price",
    "price_unit",
    "poll_attempts",
    "created_at",
    "updated_at",
    "metadata",
    "events",
    "write_back_error",  # what the platform's write-back last refused (docs/platforms.md, "Connections and write-back")
    "write_back_status",
    "write_back_failed_at",
    "scheduled_for",  # held by quiet hours until then (guardrails)
    "held_reason",  # quiet_hours | frequency | budget, while a guardrail holds it
)


@dataclass(frozen=True)
class MessageRecord:
    """One message as the ledger holds it (docs/user-guide.md, "What became of each message") and its claim."""

    item: Mapping[str, Any]  # the stored attributes; the typed fields below read it

    def _text(self, name: str) -> str | None:
        value = self.item.get(name)
        return None if value is None else str(value)

    def _number(self, name: str) -> int | None:
        value = self.item.get(name)
        return None if value is None else int(value)

    @property
    def id(self) -> str:
        return str(self.item["id"])

    @property
    def status(self) -> str:
        return str(self.item.get("status") or "pending")

    @property
    def to(self) -> str | None:
        return self._text("to")

    @property
    def from_(self) -> str | None:
        return self._text("from")

    @property
    def messaging_service_sid(self) -> str | None:
        return self._text("messaging_service_sid")

    @property
    def connection(self) -> str | None:
        return self._text("connection")

    @property
    def twilio_sid(self) -> str | None:
        return self._text("twilio_sid")

    @property
    def error_code(self) -> int | None:
        return self._number("error_code")

    @property
    def error_message(self) -> str | None:
        return self._text("error_message")

    @property
    def num_segments(self) -> int | None:
        return self._number("num_segments")

    @property
    def encoding(self) -> str | None:
        return self._text("encoding")

    @property
    def price_unit(self) -> str | None:
        return self._text("price_unit")

    @property
    def poll_attempts(self) -> int:
        return self._number("poll_attempts") or 0

    @property
    def updated_at(self) -> str | None:
        return self._text("updated_at")

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.item.get("metadata") or {})

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.item.get("events") or [])

    @property
    def status_callback(self) -> str | None:
        return self._text("status_callback")

    @property
    def body_sha256(self) -> str | None:
        return self._text("body_sha256")

    @property
    def claim_token(self) -> str | None:
        return self._text("claim_token")

    @property
    def claim(self) -> ClaimState:
        return ClaimState(
            status=self.item.get("status", "pending"),
            twilio_sid=self.item.get("twilio_sid"),
            claim_token=self.item.get("claim_token"),
            claim_state=self.item.get("claim_state"),
            claimed_at=rules.from_iso(self.item.get("claimed_at")),
            held_until=rules.from_iso(self.item.get("release_at")) if self.item.get("held_key") else None,
        )

    @property
    def first_claimed_at(self) -> datetime | None:
        return rules.from_iso(self.item.get("first_claimed_at"))

    def public(self) -> dict[str, Any]:
        """The record as the API shows it: no claim bookkeeping, no body hash."""
        data = {key: self.item.get(key) for key in PUBLIC_ATTRS}
        data["events"] = list(self.item.get("events") or [])
        data["metadata"] = dict(self.item.get("metadata") or {})
        data["poll_attempts"] = int(self.item.get("poll_attempts") or 0)
        data["sid"] = self.sid
        return data

    @property
    def sid(self) -> str:
        """The Twilio-shaped SID its Twilio-format callbacks carry (rules.message_sid)."""
        return rules.message_sid(self.id, self._number("num_media") or 0)


@dataclass(frozen=True)
class ClaimResult:
    outcome: ClaimOutcome
    record: MessageRecord | None = None


@dataclass(frozen=True)
class SentMessage:
    """What the ledger keeps of Twilio's answer to a create."""

    twilio_sid: str
    status: str
    price: str | None = None
    price_unit: str | None = None
    source: str = "send"
    # A message adopted by reconciliation may already have failed at Twilio.
    error_code: int | None = None
    error_message: str | None = None
    poll_window: int | None = None  # the poll execution that follows it (None: terminal already)
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusUpdate:
    """A status report from a poll or a callback; applied only if it moves the status forward."""

    status: str
    source: str  # poll | callback
    twilio_sid: str | None = None  # when given, must match the record's SID
    error_code: int | None = None
    error_message: str | None = None
    price: str | None = None
    price_unit: str | None = None
    raw_dlr_done_date: str | None = None
    poll_attempts: int | None = None  # the poll attempt that learned this status

    def values(self, now: datetime) -> dict[str, Any]:
        return {
            "poll_attempts": self.poll_attempts,
            "status": self.status,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "price": self.price,
            "price_unit": self.price_unit,
            "raw_dlr_done_date": self.raw_dlr_done_date,
            "updated_at": rules.iso(now),
        }


def lower_statuses(status: str) -> list[str]:
    """Every status a record may be in for `status` to be an advance."""
    rank = rules.STATUS_RANK.get(status, -1)
    return [s for s, r in rules.STATUS_RANK.items() if r < rank]


class MessageLedger(Protocol):
    def get(self, message_id: str) -> MessageRecord | None: ...

    def claim(
        self, message_id: str, attrs: Mapping[str, Any], token: str, now: datetime, lease: timedelta
    ) -> ClaimResult: ...

    def record_sent(self, message_id: str, sent: SentMessage, now: datetime) -> MessageRecord | None: ...

    def record_error(
        self,
        message_id: str,
        code: int,
        message: str,
        now: datetime,
        attrs: Mapping[str, Any] | None = None,
        token: str | None = None,
    ) -> MessageRecord | None: ...

    def mark_outcome_unknown(self, message_id: str, token: str, now: datetime) -> None: ...

    def release(self, message_id: str, token: str, now: datetime) -> None: ...

    def create_pending(self, message_id: str, attrs: Mapping[str, Any], now: datetime) -> MessageRecord | None: ...

    def mark_enqueued(self, message_id: str, now: datetime) -> None: ...

    def get_many(self, message_ids: Sequence[str]) -> dict[str, MessageRecord]: ...

    def apply_status(self, message_id: str, update: StatusUpdate, now: datetime) -> MessageRecord | None: ...

    def mark_poll_exhausted(self, message_id: str, attempts: int, now: datetime) -> None: ...

    def record_reply(self, item: Mapping[str, Any], now: datetime) -> MessageRecord | None:
        """Store an inbound message once; the one already stored (a replay) or None if it is new."""
        ...

    def mark_reply_handled(self, reply_id: str) -> None: ...

    def last_message_to(self, phone: str) -> str | None: ...

    def open_in_window(self, window: int) -> list[str]: ...

    def open_page(self, window: int, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        """Up to `limit` of the window's open messages after `cursor` (in id order), and the next cursor."""
        ...

    def claim_content(self, key: str, message_id: str, now: datetime, window: timedelta) -> str:
        """The message that owns this content for `window`: `message_id` if none did, else the earlier one."""
        ...

    def account_page(self, account_sid: str, query: PageQuery) -> tuple[list[MessageRecord], str | None]:
        """One page of an account's messages, newest first, from an index; and the next page's token."""
        ...

    def cancel_pending(self, message_id: str, now: datetime) -> MessageRecord | None:
        """`pending` -> `canceled` before any send claimed it; None if it is no longer pending."""
        ...

    def note_write_back_failure(self, message_id: str, reason: str, now: datetime, status: str = "refused") -> None:
        """The platform refused what became of this message (a 4xx, refused credentials, no identity for the
        recipient): kept on the record with `status`, one of domain/writeback.py's kinds, and not retried."""
        ...


@dataclass(frozen=True)
class PageQuery:
    """Twilio's list filters: To, From, DateSent (a day), DateSent< and DateSent> (on or before / after)."""

    size: int = 50
    token: str | None = None
    to: str | None = None
    sender: str | None = None
    sent_on: str | None = None  # YYYY-MM-DD
    sent_before: str | None = None
    sent_after: str | None = None

    def created_range(self) -> tuple[str | None, str | None]:
        """Bounds on `created_at` (ISO strings sort as time; "U" sorts after a day's "T..." times)."""
        lo = max((d for d in (self.sent_on, self.sent_after) if d), default=None)
        hi = min((d for d in (self.sent_on, self.sent_before) if d), default=None)
        return lo, (hi + "U" if hi else None)

    def matches(self, item: Mapping[str, Any]) -> bool:
        """The filters a key condition cannot express."""
        return (self.to is None or item.get("to") == self.to) and (
            self.sender is None or item.get("from") == self.sender
        )


def sent_values(sent: SentMessage, now: datetime) -> dict[str, Any]:
    """The attributes a successful send writes (None values are not written)."""
    values = {
        "status": sent.status,
        "twilio_sid": sent.twilio_sid,
        "price": sent.price,
        "price_unit": sent.price_unit,
        "error_code": sent.error_code,
        "error_message": sent.error_message,
        "claim_state": CLAIM_FINISHED,
        "updated_at": rules.iso(now),
        "sent_at": rules.iso(now),
        "poll_window": sent.poll_window,
        **sent.extra,
    }
    return {k: v for k, v in values.items() if v is not None}


def event(status: str, now: datetime, source: str, error_code: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"status": status, "at": rules.iso(now), "source": source}
    if error_code is not None:
        entry["error_code"] = error_code
    return entry


class BadPageToken(ValueError):
    """A PageToken this connector did not hand out (or for another account)."""

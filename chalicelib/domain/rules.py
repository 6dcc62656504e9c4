"""Pure business rules: statuses, error-code policy, addresses, segments, claims.

Nothing here touches the network, the clock or the environment; every function
is tested directly (tests/unit/test_rules.py).
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

# --- statuses -------------------------------------------------------------

STATUS_RANK: dict[str, int] = {
    "pending": 0,
    "accepted": 1,
    "scheduled": 1,
    "held": 1,  # by a guardrail: a frequency cap or the daily budget
    "queued": 2,
    "sending": 3,
    "sent": 4,
    "delivered": 5,
    "undelivered": 5,
    "failed": 5,
    "canceled": 5,
    "error": 5,
    "read": 6,
}
TERMINAL_STATUSES = frozenset({"delivered", "undelivered", "failed", "canceled", "error", "read"})
# `sending` is a moment between `queued` and `sent`, not a milestone: a callback or poll reporting it
# writes nothing and publishes nothing (a write and an event per message, ~$1.6 per million).
TRANSIENT_STATUSES = frozenset({"sending"})
# Statuses the daily counters keep.
COUNTED_STATUSES = frozenset(STATUS_RANK) - TRANSIENT_STATUSES


def as_twilio_status(status: str) -> str:
    """A status as Twilio names it: the connector's own `error` (refused before Twilio) is Twilio's `failed`,
    and a message a guardrail holds (`held`) is Twilio's `accepted`: taken, not yet queued."""
    return {"error": "failed", "held": "accepted"}.get(status, status)


def advances(current: str | None, new: str) -> bool:
    """True when moving from `current` to `new` is forward; late or duplicate events are not."""
    if new in TRANSIENT_STATUSES:
        return False
    if current is None:
        return True
    return STATUS_RANK.get(new, -1) > STATUS_RANK.get(current, -1)


# --- error codes -------------------------------------------------------------


class ConnectorCode(enum.IntEnum):
    """The connector's own error codes for conditions Twilio has no code for.

    Six digits so they can never collide with Twilio's five-digit codes.
    """

    INVALID_REQUEST = 900001
    TEMPLATE_NOT_FOUND = 900002
    TEMPLATE_MISSING_VALUE = 900003
    STALE_REQUEST = 900004
    UNKNOWN_CONNECTION = 900005
    TOO_MANY_SEGMENTS = 900006  # over the connection's max_segments (guardrails)
    FREQUENCY_CAPPED = 900007  # over the connection's per-recipient cap (guardrails)


def is_stale(not_after: datetime | None, now: datetime) -> bool:
    """A request whose `not_after` has passed is dropped, never sent late (the API refuses it at once)."""
    return not_after is not None and now > not_after


OPTED_OUT_CODE = 21610
# Twilio answers these when the account or sender is momentarily unable to take the
# message, or when our own credentials are wrong: retrying (and finally the DLQ, from
# which an operator redrives) keeps the message instead of burning it as `error`.
RETRYABLE_TWILIO_CODES = frozenset({20003, 20429, 20500, 20503, 21611, 14107})
# Codes that mean the recipient has opted out at the carrier or Twilio level.
OPT_OUT_CODES = frozenset({21610, 30004})


def is_retryable(http_status: int, code: int | None) -> bool:
    """Twilio error policy: retry throttling, server trouble and our own misconfiguration."""
    if code in RETRYABLE_TWILIO_CODES:
        return True
    return http_status in (401, 429) or http_status >= 500


# --- addresses ---------------------------------------------------------------

# Anchored with \Z, never $: `$` also matches before a final newline, so "+15550009998\n" would pass
# and then miss the opt-out lookup of "+15550009998".
E164 = re.compile(r"^\+[1-9][0-9]{7,14}\Z")
SHORT_CODE = re.compile(r"^[0-9]{5,6}\Z")
ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}\Z")
MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}\Z")
# A Message's SID in Twilio's spec (twilio-oai spec/json/twilio_api_v2010.json, api.v2010.account.message.sid);
# platforms that read Twilio's callbacks (CleverTap) may check it.
MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}\Z")
ASCII_INTEGER = re.compile(r"^-?[0-9]{1,18}\Z")
WHATSAPP_PREFIX = "whatsapp:"


def is_e164(value: str) -> bool:
    return bool(E164.match(value))


def is_valid_recipient(value: str) -> bool:
    if value.startswith(WHATSAPP_PREFIX):
        return is_e164(value[len(WHATSAPP_PREFIX) :])
    return is_e164(value)


def is_valid_sender(value: str) -> bool:
    if value.startswith(WHATSAPP_PREFIX):
        return is_e164(value[len(WHATSAPP_PREFIX) :])
    return bool(E164.match(value) or SHORT_CODE.match(value) or ALPHANUMERIC_SENDER.match(value))


def callback_target_refusal(url: str, allow_local: bool) -> str | None:
    """Why the connector must not call `url` for a caller (None: it may). Deployed, only https to a public
    host: never loopback, private, link-local (169.254.169.254 is the instance metadata) or reserved ones.
    `allow_local` (local development) also takes http and loopback, so local receivers work."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" and not (allow_local and parts.scheme == "http"):
        return "must use https"
    if host == "localhost" or host.endswith((".localhost", ".internal", ".local")):
        return None if allow_local else "must not name a local or internal host"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None  # a name: checked again on what it resolves to, when the forward is made
    return address_refusal(address, allow_local)


def address_refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_local: bool) -> str | None:
    if address.is_loopback and allow_local:
        return None
    if not address.is_global or address.is_multicast:
        return f"must not reach a loopback, private, link-local or reserved address ({address})"
    return None


def mask_phone(value: str | None) -> str:
    """What a log line may show of a phone number: its channel and last four digits."""
    if not value:
        return ""
    prefix = WHATSAPP_PREFIX if value.startswith(WHATSAPP_PREFIX) else ""
    digits = value[len(prefix) :]
    if len(digits) <= 4:
        return prefix + "*" * len(digits)
    return f"{prefix}{digits[0] if digits[0] == '+' else ''}***{digits[-4:]}"


# --- segments ----------------------------------------------------------------

# GSM 03.38 default alphabet and its extension table (extension chars cost two septets).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True)
class SegmentInfo:
    encoding: str  # "GSM-7" or "UCS-2"
    num_segments: int
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)


def _pack(weights: list[int], single: int, multi: int) -> int:
    """Segments needed when no character may be split across a segment boundary."""
    total = sum(weights)
    if total <= single:
        return 1
    segments, used = 1, 0
    for w in weights:
        if used + w > multi:
            segments += 1
            used = 0
        used += w
    return segments


def segment_info(body: str) -> SegmentInfo:
    """Encoding and segment count of an SMS body, as carriers split it."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in body):
        weights = [2 if ch in GSM7_EXTENDED else 1 for ch in body]
        return SegmentInfo("GSM-7", _pack(weights, 160, 153), sum(weights))
    weights = [2 if ord(ch) > 0xFFFF else 1 for ch in body]
    return SegmentInfo("UCS-2", _pack(weights, 70, 67), sum(weights))


# --- the send ledger's claim decision ----------------------------------------


class ClaimOutcome(enum.Enum):
    FRESH = "fresh"  # nobody tried this message before: send it
    TAKEOVER = "takeover"  # an earlier attempt never finished: reconcile, then send at most once
    DONE = "done"  # already sent or already failed for good: do nothing
    BUSY = "busy"  # another worker holds a live claim: try again later


CLAIM_IN_FLIGHT = "in_flight"
CLAIM_OUTCOME_UNKNOWN = "outcome_unknown"


@dataclass(frozen=True)
class ClaimState:
    """What the ledger knows about a message's send attempts."""

    status: str
    twilio_sid: str | None
    claim_token: str | None
    claim_state: str | None
    claimed_at: datetime | None
    held_until: datetime | None = None  # a guardrail holds it (quiet hours, a cap, the budget) until then


def decide_claim(existing: ClaimState | None, now: datetime, lease: timedelta) -> ClaimOutcome:
    """Who may send: the single rule shared by every ledger implementation."""
    if existing is None:
        return ClaimOutcome.FRESH
    if existing.held_until is not None and not existing.twilio_sid:
        # held: a copy of its request is nothing to do until its time, then waits for the release to finish
        return ClaimOutcome.BUSY if existing.held_until <= now else ClaimOutcome.DONE
    if existing.twilio_sid or existing.status != "pending":
        return ClaimOutcome.DONE
    if existing.claim_token is None:
        return ClaimOutcome.FRESH
    if existing.claim_state == CLAIM_OUTCOME_UNKNOWN:
        return ClaimOutcome.TAKEOVER
    if existing.claimed_at is None or existing.claimed_at + lease <= now:
        return ClaimOutcome.TAKEOVER
    return ClaimOutcome.BUSY


# --- timestamps as stored and shown ------------------------------------------


def iso(moment: datetime) -> str:
    """UTC, millisecond precision, `Z` suffix: sortable as a string."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def day_of(moment: datetime) -> str:
    """The UTC day a moment falls on: what the daily counters, caps and budgets are keyed by."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def from_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- message identity --------------------------------------------------------


def message_id(idempotency_key: str | None, delivery_id: str) -> str:
    """The ledger key: the caller's idempotency key when given, else the SQS message id.

    SQS redelivers a record with its original messageId, so a redelivery lands on
    the same ledger item; the same idempotency key always names the same message.
    """
    seed = f"key:{idempotency_key}" if idempotency_key else f"sqs:{delivery_id}"
    return "msg_" + hashlib.sha256(seed.encode()).hexdigest()[:32]


def message_sid(message_id: str, num_media: int = 0) -> str:
    """The Twilio-shaped SID a message is known by in Twilio's forms: a front-door message's own id, else
    SM (MM with media) + 32 hex derived from its id, so every callback of one message carries the same."""
    if MESSAGE_SID.match(message_id):
        return message_id
    prefix = "MM" if num_media else "SM"
    return prefix + hashlib.sha256(f"sid:{message_id}".encode()).hexdigest()[:32]


def body_digest(body: str | None) -> str:
    """What the ledger keeps of a body: enough to recognise it at Twilio, not to read it."""
    return hashlib.sha256((body or "").encode()).hexdigest()

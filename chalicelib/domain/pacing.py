"""Pacing each sender: never hand Twilio more than a sender can drain within a message's validity.

Twilio queues what a sender cannot send at once and drains it at the sender's rate (long code about
1 segment/s, toll-free 3, short code 100; a messaging service its pool's sum); a message that waits
longer than its ValidityPeriod fails with 30001. The connector keeps, per sender, when Twilio's queue
for it will be empty (`next_free`), reserves each message's segments before the create, and defers a
message that would wait too long: it waits in our queue (a delayed SQS message) instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

TOLL_FREE_PREFIXES = ("+1800", "+1833", "+1844", "+1855", "+1866", "+1877", "+1888")
DEFAULT_VALIDITY_SECONDS = 36_000  # Twilio's, when a request gives none
MAX_MARGIN_SECONDS = 60.0  # kept free of a message's validity, for clock skew and Twilio's own overhead


def default_rate(sender: str) -> float | None:
    """Segments/s Twilio drains for a sender by its type; None for Twilio's test numbers (they queue nothing)."""
    if sender.startswith("+1500555"):
        return None
    if sender.isdigit() and 5 <= len(sender) <= 6:
        return 100.0  # short code
    if sender.startswith(TOLL_FREE_PREFIXES):
        return 3.0
    return 1.0  # a long code, an alphanumeric ID, or a messaging service of one number (configure bigger pools)


@dataclass(frozen=True)
class Reservation:
    """Where one message stands in its sender's queue at Twilio."""

    wait_seconds: float  # how long it will wait at Twilio before it is sent
    next_free: datetime | None  # the sender's queue end after it; None when the message does not fit
    over_by: float = 0.0  # when it does not fit: how much sooner it would have to be


def reserve(
    next_free: datetime | None, now: datetime, segments: int, rate: float, validity_seconds: float
) -> Reservation:
    """Pure: take the message's place in the sender's queue if it would be sent within its validity."""
    start = max(next_free or now, now)
    wait = (start - now).total_seconds()
    allowed = validity_seconds - min(MAX_MARGIN_SECONDS, 0.1 * validity_seconds)
    if wait > allowed:
        return Reservation(wait, None, wait - allowed)
    return Reservation(wait, start + timedelta(seconds=max(segments, 1) / rate))


def sender_rate(sender: str, overrides: Mapping[str, float]) -> float | None:
    """SENDER_RATES' rate for a sender, else its type's default."""
    return overrides.get(sender, default_rate(sender))

"""Pacing each sender: never hand Twilio more than a sender can drain within a message's validity.

Twilio queues what a sender cannot send at once and drains it at the sender's rate (long code about
1 segment/s, toll-free 3, short code 100; a messaging service its pool's sum); a message that waits
longer than its ValidityPeriod fails with 30001. The connector keeps, per sender, when Twilio's queue
for it will be empty (`next_free`), reserves each message's segments before the create, and defers a
message that would wait too long: it waits in our queue (a delayed SQS message) instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

TOLL_FREE_PREFIXES = ("+1800", "+1833", "+1844", "+1855", "+1866", "+1877", "+1888")
DEFAULT_VALIDITY_SECONDS = 36_000  # Twilio's, when a request gives none
MAX_MARGIN_SECONDS = 60.0  # kept free of a message's validity, for clock skew and Twilio's own overhead
# A send reserves places in its sender's queue for the invocation's next sends too, in one write: a short
# code at 100 segments/s from one invocation is a few writes a second, not 100 on one item. A lease lives
# LEASE_SECONDS; its size doubles when one is used up in under half that, and halves when one expires
# with places left, up to a LEASE_SECONDS of the sender's rate: many invocations sharing a sender each
# lease about their own share, so places leased and never used (they only slow the sender) stay few.
LEASE_SECONDS = 1.0


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


@dataclass(frozen=True)
class Lease:
    """Places in a sender's queue reserved in one write and not yet handed to a message."""

    next_slot: datetime  # where the next message's place starts
    segments_left: int
    taken_at: datetime
    size: int = 1  # segments the lease was taken with


def lease_size(rate: float, segments: int, last: Lease | None = None, now: datetime | None = None) -> int:
    """Segments to reserve in one write: twice the last lease if it was used up in under half its life,
    half if it expired with places left, within a message's own and a LEASE_SECONDS of the sender's rate."""
    ceiling = max(1, math.ceil(rate * LEASE_SECONDS))
    if last is None:
        size = 1
    elif last.segments_left >= segments:
        size = last.size // 2
    elif now is not None and (now - last.taken_at).total_seconds() < LEASE_SECONDS / 2:
        size = last.size * 2
    else:
        size = last.size
    return max(segments, min(ceiling, size))


def from_lease(lease: Lease | None, now: datetime, segments: int, rate: float) -> tuple[Reservation, Lease] | None:
    """Pure: the next place of a lease still fresh and big enough (None: reserve anew). A place whose time
    has passed is still the message's: the sender's queue was recorded as holding it, so it drains in time."""
    if lease is None or lease.segments_left < segments or (now - lease.taken_at).total_seconds() >= LEASE_SECONDS:
        return None
    end = lease.next_slot + timedelta(seconds=segments / rate)
    wait = max(0.0, (lease.next_slot - now).total_seconds())
    return Reservation(wait, end), Lease(end, lease.segments_left - segments, lease.taken_at, lease.size)


def split_block(block: Reservation, block_segments: int, segments: int, rate: float, now: datetime) -> Lease:
    """After a block of places was reserved and its first given to a message: the rest, as a lease."""
    assert block.next_free is not None
    start = block.next_free - timedelta(seconds=block_segments / rate)
    return Lease(start + timedelta(seconds=segments / rate), block_segments - segments, now, block_segments)

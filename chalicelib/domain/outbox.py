"""The ledger is the outbox (docs/architecture.md, "The ledger is the outbox"): what a change to a message means,
derived in this one place from the item before and after it, as the table's stream reports it. Nothing else
publishes an event or bumps a counter: a function that dies right after its ledger write loses nothing.

A change yields the day's counters it bumps, the events it publishes (and that its platform hears through its
write-back), and the opt-out an error code implies. A STOP, START or reply is acted on by the webhook, which
marks the reply item `handled` once done: that mark is the change its event follows from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.domain import events, rules
from chalicelib.domain.ledger import CONTENT_PREFIX, MessageRecord
from chalicelib.domain.ports import latency_bucket

OPT_OUT, OPT_IN = "STOP", "START"  # the keywords a reply item records (usecases/tracking.py reads them)
# What a reply event shows of the reply item (with the replied-to message's write-back context and Twilio's fields).
REPLY_SHOWN = ("id", "from", "body", "in_reply_to", "received_by", "twilio_sid", "messaging_service_sid")


@dataclass(frozen=True)
class OptOut:
    phone: str
    senders: tuple[str, ...]


@dataclass(frozen=True)
class Change:
    """What one ledger change means: counters for its UTC day, events in order, an opt-out to store."""

    message_id: str
    day: str
    counters: tuple[str, ...] = ()
    events: tuple[tuple[str, dict[str, Any]], ...] = ()
    opt_out: OptOut | None = None
    # (day, counter, +1/-1): each message counted once, under its current status, on the day it was made
    moves: tuple[tuple[str, str, int], ...] = ()

    @property
    def write_backs(self) -> tuple[tuple[str, dict[str, Any]], ...]:
        """The events its platform hears, in order: those that name a write-back."""
        return tuple((kind, detail) for kind, detail in self.events if detail.get("write_back"))


def derive(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    at: datetime,
    opts_out: Callable[[str | None, int], bool] | None = None,
) -> Change | None:
    """What changed between two images of one ledger item; None when nothing follows from it. `opts_out`:
    whether an error code opts the recipient out, by the message's connection's error policy."""
    if new is None or str(new.get("id", "")).startswith(CONTENT_PREFIX):
        return None  # expired or deleted; a content window is not a message
    if new.get("direction") == "inbound":
        return _reply(old or {}, new, at)
    return _message(old or {}, new, at, opts_out or (lambda _, code: code in rules.OPT_OUT_CODES))


def _message(
    old: Mapping[str, Any], new: Mapping[str, Any], at: datetime, opts_out: Callable[[str | None, int], bool]
) -> Change | None:
    record, earlier = MessageRecord(new), MessageRecord(old)
    counters: list[str] = []
    found: list[tuple[str, dict[str, Any]]] = []
    opt_out = None
    before, after = earlier.status, record.status  # a record without a status is `pending`
    made = rules.day_of(rules.from_iso(new.get("created_at")) or at)
    moves: list[tuple[str, str, int]] = []
    if not old:
        moves.append((made, f"now#{after}", 1))
    elif after != before:
        moves += [(made, f"now#{before}", -1), (made, f"now#{after}", 1)]
    if not old and after == "pending":
        if not new.get("claim_token"):  # accepted by the API (an SQS record is claimed at once: counted as sent)
            counters.append("status#pending")
    elif after == "pending":
        pass  # released by a guardrail, to be sent again: its place among the day's messages moves, nothing else
    elif after != before:
        if after in rules.COUNTED_STATUSES:
            counters.append(f"status#{after}")
        code = record.error_code
        if code and code != earlier.error_code:
            counters.append(f"code#{code}")
        if before == "pending" and after != "canceled":  # the send's outcome, per connection
            counters.append(f"conn#{record.connection or 'default'}")
        created = rules.from_iso(new.get("created_at"))
        if after == "delivered" and created is not None:
            counters.append(latency_bucket((at - created).total_seconds()))
        found.append((events.STATUS_CHANGED, events.status_detail(record)))
        if code and opts_out(record.connection, code) and record.to and new.get("refused_by") != "connector":
            senders = tuple(s for s in (record.from_, record.messaging_service_sid) if s)
            opt_out = OptOut(record.to, senders)
            counters.append("event#opt_out")
            detail = {"phone": record.to, "senders": list(senders), "at": rules.iso(at)}
            found.append((events.OPTED_OUT, detail))
    if new.get("write_back_failed_at") and new.get("write_back_failed_at") != old.get("write_back_failed_at"):
        counters.append(f"writeback#{record.connection or '-'}:{new.get('write_back_status') or 'refused'}")
    return _change(record.id, at, counters, found, opt_out, tuple(moves))


def _reply(old: Mapping[str, Any], new: Mapping[str, Any], at: datetime) -> Change | None:
    if not new.get("handled") or old.get("handled"):
        return None  # stored, not yet acted on (or a later touch): its event follows the `handled` mark
    context = dict(new.get("context") or {})
    senders = [s for s in (new.get("received_by"), new.get("messaging_service_sid")) if s]
    phone, keyword = str(new.get("from") or ""), new.get("keyword")
    if keyword == OPT_OUT:
        detail = {**context, "phone": phone, "senders": senders, "at": new.get("created_at") or rules.iso(at)}
        return _change(str(new["id"]), at, ["event#opt_out"], [(events.OPTED_OUT, detail)], None)
    if keyword == OPT_IN:
        return _change(str(new["id"]), at, [], [(events.OPTED_IN, {"phone": phone, "senders": senders})], None)
    if keyword is not None:
        return None  # HELP: Twilio answers it; nothing to tell
    shown = {name: new.get(name) for name in REPLY_SHOWN}
    detail = {**context, **shown, "twilio_fields": dict(new.get("twilio_fields") or {})}
    return _change(str(new["id"]), at, ["event#reply"], [(events.REPLY_RECEIVED, detail)], None)


def _change(
    message_id: str,
    at: datetime,
    counters: Sequence[str],
    found: Sequence[tuple[str, dict[str, Any]]],
    opt_out: OptOut | None,
    moves: tuple[tuple[str, str, int], ...] = (),
) -> Change | None:
    if not counters and not found and opt_out is None and not moves:
        return None
    return Change(message_id, rules.day_of(at), tuple(counters), tuple(found), opt_out, moves)


def subscribed(subscription: str, detail_type: str, detail: Mapping[str, Any]) -> bool:
    """Whether the event bus gets this event: nothing is published unless the deployment asks for it."""
    if subscription == "all":
        return True
    if subscription == "final":
        return detail_type != events.STATUS_CHANGED or detail.get("status") in rules.TERMINAL_STATUSES
    return False


def summed(changes: Sequence[Change | None]) -> dict[str, dict[str, int]]:
    """A batch's counters, per day: one write per day's counter item, not one per change."""
    days: dict[str, dict[str, int]] = {}
    for change in changes:
        if change is None:
            continue
        counts = days.setdefault(change.day, {})
        for counter in change.counters:
            counts[counter] = counts.get(counter, 0) + 1
        for day, counter, delta in change.moves:
            made = days.setdefault(day, {})
            made[counter] = made.get(counter, 0) + delta
    days = {day: {c: n for c, n in counts.items() if n} for day, counts in days.items()}
    return {day: counts for day, counts in days.items() if counts}

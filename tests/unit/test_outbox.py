"""The ledger is the outbox: what each change means is derived once, from the item before and after it; a
batch of the stream is counted once however Lambda retries it; a refused event comes back; a write-back its
platform refuses waits in order, holding up nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.domain import events, outbox
from chalicelib.domain.ports import StoreError
from chalicelib.domain.writeback import ForwardFailed
from chalicelib.usecases.outbox import OutboxConsumer, StreamRecord, forward_parked
from tests.fakes import InMemoryOptOuts, InMemoryStats

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
DAY = "2026-12-03"
TO = "+15551234567"


def message(status: str, **more: Any) -> dict[str, Any]:
    item = {"id": "m1", "to": TO, "from": "+15005550006", "status": status, "created_at": "2026-12-03T11:59:50.000Z"}
    return {**item, **more}


def changes_of(*statuses: str, message_id: str = "m1", **more: Any) -> list[StreamRecord]:
    """A message's stream: its creation, then each status in turn."""
    records, before = [], None
    for n, status in enumerate(statuses):
        after = {**message(status, **more), "id": message_id}
        records.append(StreamRecord(f"{message_id}-{n:03d}", before, after, NOW))
        before = after
    return records


class Bus:
    def __init__(self, refuse: set[str] | None = None) -> None:
        self.refuse = refuse or set()  # the statuses whose events it refuses
        self.published: list[tuple[str, Mapping[str, Any]]] = []

    def publish(self, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> int | None:
        for index, (kind, detail) in enumerate(entries):
            if detail.get("status") in self.refuse:
                return index
            self.published.append((kind, detail))
        return None


class Platform:
    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.heard: list[tuple[str, str | None]] = []

    def forward(self, detail: Mapping[str, Any], now: float | None = None, detail_type: str = "") -> int:
        if self.down:
            raise ForwardFailed("json write-back answered 503")
        self.heard.append((detail_type, detail.get("status")))
        return 200


class Parked:
    def __init__(self, works: bool = True) -> None:
        self.works = works
        self.lines: list[tuple[str, list[tuple[str, Mapping[str, Any]]]]] = []

    def park(self, group: str, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        if not self.works:
            raise StoreError("SQS is down")
        self.lines.append((group, list(entries)))

    def token(self, group: str, kind: str, detail: Mapping[str, Any]) -> str:
        return f"{group}:{detail['status']}"


def consumer(bus: Bus | None = None, platform: Platform | None = None, parked: Parked | None = None) -> Any:
    stats, opt_outs = InMemoryStats(), InMemoryOptOuts()
    use_case = OutboxConsumer(
        stats, platform or Platform(), parked or Parked(), opt_outs, bus, "all" if bus else "none", lambda: NOW
    )
    return use_case, stats, opt_outs


def test_a_status_change_is_one_event_in_the_shape_consumers_read_and_its_counters() -> None:
    sent = message("sent", twilio_sid="SM" + "1" * 32, connection="eu")
    change = outbox.derive(message("pending", claim_token="t"), sent, NOW)
    assert change is not None
    ((kind, detail),) = change.events
    assert kind == events.STATUS_CHANGED and detail == events.status_detail(outbox.MessageRecord(sent))
    assert change.counters == ("status#sent", "conn#eu")
    delivered = outbox.derive(sent, {**sent, "status": "delivered"}, NOW)
    assert delivered is not None and delivered.counters == ("status#delivered", "latency#10")
    assert outbox.derive(sent, {**sent, "poll_attempts": 2}, NOW) is None  # no status change: nothing follows


def test_an_accepted_message_counts_as_pending_and_a_claimed_one_does_not() -> None:
    accepted = outbox.derive(None, message("pending"), NOW)
    assert accepted is not None and accepted.counters == ("status#pending",) and accepted.events == ()
    claimed = outbox.derive(None, message("pending", claim_token="t"), NOW)
    assert claimed is not None and (claimed.counters, claimed.events) == ((), ())
    assert claimed.moves == ((DAY, "now#pending", 1),)  # only its place among the day's messages


def test_each_message_is_counted_once_per_day_in_its_current_status_not_in_every_status_it_passed() -> None:
    # four messages through pending, queued, sent and on to delivered (three) or undelivered (one): the
    # "statuses reached" counters hold 12 changes past pending; the day's current counters hold 4 messages
    records = [r for n in range(3) for r in changes_of("pending", "queued", "sent", "delivered", message_id=f"d{n}")]
    records += changes_of("pending", "queued", "sent", "undelivered", message_id="u1")
    use_case, stats, _ = consumer()
    assert use_case.handle(records) == []
    totals = stats.totals([DAY])
    assert sum(totals["by_status"].values()) - totals["by_status"]["pending"] == 12
    assert totals["days"][DAY]["current"] == {"delivered": 3, "undelivered": 1}
    assert sum(totals["current"].values()) == 4
    # a change on a later day moves the message within the day it was made, not into the later one
    later = StreamRecord(
        "late", records[-1].new, {**dict(records[-1].new or {}), "status": "read"}, NOW + timedelta(days=1)
    )
    assert use_case.handle([later]) == []
    assert stats.totals([DAY])["days"][DAY]["current"] == {"delivered": 3, "read": 1}


def test_an_opt_out_error_code_stores_the_opt_out_and_says_so() -> None:
    sent = message("sent", messaging_service_sid="MG" + "1" * 32)
    use_case, stats, opt_outs = consumer()
    assert use_case.handle([StreamRecord("1", sent, {**sent, "status": "failed", "error_code": 21610}, NOW)]) == []
    assert opt_outs.is_opted_out(TO, ["+15005550006"]) and opt_outs.is_opted_out(TO, ["MG" + "1" * 32])
    assert stats.totals([DAY])["events"] == {"opt_out": 1} and stats.totals([DAY])["by_error_code"] == {"21610": 1}


def test_a_connections_error_policy_decides_which_codes_opt_out() -> None:
    # 30007 (carrier filtering) opts out only where the connection's error policy says so (README, "Guardrails")
    failed = {**message("sent"), "status": "undelivered", "error_code": 30007, "connection": "strict"}
    assert outbox.derive(message("sent"), failed, NOW).opt_out is None  # type: ignore[union-attr]
    strict = outbox.derive(message("sent"), failed, NOW, lambda name, code: name == "strict" and code == 30007)
    assert strict is not None and strict.opt_out is not None and "event#opt_out" in strict.counters


def test_a_number_the_connector_refused_as_opted_out_is_not_opted_out_again() -> None:
    refused = message("error", error_code=21610, refused_by="connector")
    change = outbox.derive(message("pending", claim_token="t"), refused, NOW)
    assert change is not None and change.opt_out is None and "event#opt_out" not in change.counters
    assert [kind for kind, _ in change.events] == [events.STATUS_CHANGED]


def test_a_reply_is_told_once_it_is_handled_with_the_context_of_the_message_it_answers() -> None:
    reply: dict[str, Any] = {
        "id": "in_SM1",
        "direction": "inbound",
        "status": "received",
        "from": TO,
        "body": "thanks",
        "received_by": "+15005550006",
    }
    reply |= {"in_reply_to": "m1", "context": {"write_back": "json", "status_callback": "https://cdp.example/h"}}
    assert outbox.derive(None, reply, NOW) is None  # stored, not yet acted on
    change = outbox.derive(reply, {**reply, "handled": True}, NOW)
    assert change is not None and change.counters == ("event#reply",)
    ((kind, detail),) = change.write_backs
    assert kind == events.REPLY_RECEIVED and detail["body"] == "thanks" and detail["in_reply_to"] == "m1"
    stop = {**reply, "keyword": "STOP", "handled": True}
    change = outbox.derive(reply | {"keyword": "STOP"}, stop, NOW)
    assert change is not None and change.events[0][0] == events.OPTED_OUT and change.events[0][1]["phone"] == TO


def test_a_replayed_batch_counts_nothing_twice() -> None:
    records = changes_of("pending", "queued", "sent", "delivered")
    use_case, stats, _ = consumer()
    assert use_case.handle(records) == [] and use_case.handle(records) == []  # the invocation timed out: again
    assert use_case.handle(records[:2]) == [] and use_case.handle(records[2:]) == []  # bisected
    totals = stats.totals([DAY])
    assert totals["by_status"] == {"pending": 1, "queued": 1, "sent": 1, "delivered": 1}


def test_a_refused_event_comes_back_with_what_follows_and_is_counted_once() -> None:
    bus = Bus(refuse={"sent"})
    use_case, stats, _ = consumer(bus)
    records = changes_of("pending", "queued", "sent", "delivered")
    assert use_case.handle(records) == ["m1-002"]  # the stream hands back `sent` and all after it
    assert [d["status"] for _, d in bus.published] == ["queued"]
    assert stats.totals([DAY])["by_status"] == {"pending": 1, "queued": 1}  # only what is done
    bus.refuse.clear()
    assert use_case.handle(records[2:]) == []
    assert [d["status"] for _, d in bus.published] == ["queued", "sent", "delivered"]
    assert stats.totals([DAY])["by_status"] == {"pending": 1, "queued": 1, "sent": 1, "delivered": 1}


def test_nothing_is_published_unless_the_deployment_subscribes() -> None:
    detail = {"status": "sent"}
    assert not outbox.subscribed("none", events.STATUS_CHANGED, detail)
    assert outbox.subscribed("final", events.STATUS_CHANGED, {"status": "delivered"})
    assert not outbox.subscribed("final", events.STATUS_CHANGED, detail)
    assert outbox.subscribed("final", events.OPTED_OUT, {})


def test_a_platform_that_is_down_gets_its_events_later_in_order_and_holds_up_nothing() -> None:
    platform, parked = Platform(down=True), Parked()
    use_case, stats, _ = consumer(platform=platform, parked=parked)
    hook = {"status_callback": "https://cdp.example/hook"}
    records = changes_of("pending", "queued", "sent", **hook) + changes_of("pending", "sent", message_id="m2")
    assert use_case.handle(records) == []  # the stream moves on
    ((group, line),) = parked.lines  # m1's events in order, in its own group (m2 has no write-back)
    assert group == "m1" and [detail["status"] for _, detail in line] == ["queued", "sent"]
    assert stats.totals([DAY])["by_status"] == {"pending": 2, "queued": 1, "sent": 2}
    platform.down = False
    assert forward_parked(platform, line) == 2
    assert platform.heard == [(events.STATUS_CHANGED, "queued"), (events.STATUS_CHANGED, "sent")]


def test_a_parked_event_still_refused_comes_back_with_all_behind_it() -> None:
    """A FIFO queue's rule for a partial batch: the first failure and every message after it are returned
    (docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html), so none is told twice or early."""

    class Flaky(Platform):
        def forward(self, detail: Mapping[str, Any], now: float | None = None, detail_type: str = "") -> int:
            if detail.get("status") == "delivered":
                raise ForwardFailed("503")
            return super().forward(detail, now, detail_type)

    platform = Flaky()
    line = [(events.STATUS_CHANGED, {"status": s}) for s in ("sent", "delivered", "read")]
    assert forward_parked(platform, line) == 1
    assert platform.heard == [(events.STATUS_CHANGED, "sent")]


def test_a_write_back_that_cannot_even_be_parked_comes_back_from_its_record() -> None:
    use_case, stats, _ = consumer(platform=Platform(down=True), parked=Parked(works=False))
    records = changes_of("pending", "queued", "sent", status_callback="https://cdp.example/hook")
    assert use_case.handle(records) == ["m1-001"]
    assert stats.totals([DAY])["by_status"] == {"pending": 1}


def test_a_day_boundary_counts_each_change_on_its_own_day() -> None:
    late = NOW.replace(hour=23, minute=59, second=59)
    first = StreamRecord("1", None, message("pending"), late)
    second = StreamRecord("2", message("pending"), message("error", error_code=21211), late + timedelta(seconds=2))
    use_case, stats, _ = consumer()
    assert use_case.handle([first, second]) == []
    assert stats.totals([DAY])["by_status"] == {"pending": 1}
    assert stats.totals(["2026-12-04"])["by_status"] == {"error": 1}


def test_no_code_but_the_outbox_publishes_counts_or_tells_a_platform() -> None:
    """The outbox's promise holds only if nothing else publishes beside a ledger write: checked on the code."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    outside = []
    for path in [root / "app.py", *(root / "chalicelib").rglob("*.py")]:
        if path.relative_to(root).as_posix() == "chalicelib/usecases/outbox.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            called = node.func.attr if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else None
            if called in ("publish", "count_batch", "forward", "put_events"):
                outside.append(f"{path.relative_to(root)} {called}")
    assert outside == ["chalicelib/adapters/eventbridge.py put_events"]  # the adapter the outbox publishes through


def test_write_backs_not_started_before_the_invocation_runs_short_wait_in_order_for_the_forward_function() -> None:
    """A slow platform must not make the outbox time out: its batch would come back and every platform
    already told would hear it twice. What is left when the time runs short is parked, in order."""
    clock = {"left": 30.0}

    class Slow(Platform):
        def forward(self, detail: Mapping[str, Any], now: float | None = None, detail_type: str = "") -> int:
            clock["left"] -= 10.0  # each write-back takes 10 s of the invocation
            return super().forward(detail, now, detail_type)

    platform, parked = Slow(), Parked()
    use_case, stats, _ = consumer(platform=platform, parked=parked)
    records = changes_of("pending", "queued", "sent", "delivered", status_callback="https://cdp.example/hook")
    assert use_case.handle(records, seconds_left=lambda: clock["left"]) == []
    assert platform.heard == [(events.STATUS_CHANGED, "queued"), (events.STATUS_CHANGED, "sent")]
    ((group, line),) = parked.lines
    assert group == "m1" and [detail["status"] for _, detail in line] == ["delivered"]
    assert stats.totals([DAY])["by_status"] == {"pending": 1, "queued": 1, "sent": 1, "delivered": 1}


def test_a_later_write_back_never_overtakes_one_waiting_in_the_forward_queue() -> None:
    """The platform refuses `queued`, which is parked (the forward queue delays it); it is back up when
    `sent` comes in the next batch. Told at once, `sent` would reach it before `queued`: it waits behind it
    (the message is marked while a write-back of it waits). The forward function tells both in order and
    clears the mark, and `delivered` is told at once again. A mark that cannot be read parks too."""

    class Marks:
        def __init__(self) -> None:
            self.marked: dict[str, str] = {}
            self.readable = True

        def pending(self, message_id: str) -> bool:
            if not self.readable:
                raise StoreError("DynamoDB is slow")
            return message_id in self.marked

        def mark(self, message_id: str, token: str) -> None:
            self.marked[message_id] = token

        def clear(self, message_id: str, token: str) -> None:
            if self.marked.get(message_id) == token:
                del self.marked[message_id]

    platform, parked, marks = Platform(down=True), Parked(), Marks()
    use_case = OutboxConsumer(
        InMemoryStats(), platform, parked, InMemoryOptOuts(), None, "none", lambda: NOW, marks=marks
    )
    records = changes_of("pending", "queued", "sent", "delivered", status_callback="https://cdp.example/hook")
    assert use_case.handle(records[:2]) == []  # queued: refused, parked, marked
    assert marks.marked == {"m1": "m1:queued"}
    platform.down = False
    assert use_case.handle(records[2:3]) == []  # sent: waits behind queued, not told
    assert platform.heard == [] and marks.marked == {"m1": "m1:sent"}
    entries = [entry for _, line in parked.lines for entry in line]
    parked_as = [("m1", f"m1:{detail['status']}") for _, detail in entries]
    assert forward_parked(platform, entries, parked_as, marks) == 2
    assert [status for _, status in platform.heard] == ["queued", "sent"] and marks.marked == {}
    assert use_case.handle(records[3:]) == []  # nothing waits: told at once
    assert [status for _, status in platform.heard] == ["queued", "sent", "delivered"]
    marks.readable = False
    heard = len(platform.heard)
    other = changes_of("pending", "queued", message_id="m2", status_callback="https://cdp.example/hook")
    assert use_case.handle(other) == []
    assert len(platform.heard) == heard and [g for g, _ in parked.lines][-1] == "m2"  # not known: parked


def test_a_held_message_is_told_as_scheduled_and_its_release_tells_nothing() -> None:
    held = message("scheduled", scheduled_for="2026-12-04T16:00:00.000Z", held_reason="quiet_hours")
    change = outbox.derive(message("pending", claim_token="t"), held, NOW)
    assert change is not None and [d["status"] for _, d in change.events] == ["scheduled"]
    released = outbox.derive(held, message("pending"), NOW)  # back on the queue: bookkeeping, no milestone
    assert released is not None and (released.events, released.counters) == ((), ())
    assert released.moves == ((DAY, "now#scheduled", -1), (DAY, "now#pending", 1))


def test_a_message_made_before_the_current_counts_existed_shows_only_where_it_is_now() -> None:
    # its `sent` was never counted as current: moving on takes one away from 0, which the totals do not show
    use_case, stats, _ = consumer()
    sent = message("sent")
    assert use_case.handle([StreamRecord("old-1", sent, {**sent, "status": "delivered"}, NOW)]) == []
    assert stats.totals([DAY])["days"][DAY]["current"] == {"delivered": 1}
    assert stats.totals([DAY])["current"] == {"delivered": 1}

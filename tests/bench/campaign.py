"""`make campaign`: the deployed connector at a scale this machine cannot run, as a model driven by the
project's own code, not copies of it:

- the capacity plan `make package` applies (infra.deploy.capacity_plan) for every function's concurrency;
- the senders' pacing (chalicelib.adapters.tables.DynamoSenderQueues, leases and all, over an in-memory
  table that counts each sender item's writes a second), so the drain time is the connector's own;
- the poll windows a send writes (chalicelib.domain.polling.poll_key, the pacing's wait included) and the
  poll loop's paging budget (usecases.tracking.POLL_RESERVE_S, POLL_PAGE_SIZE);
- the status callbacks' timeline and retries as the simulator has them (local.twilio_sim: SCENARIOS, and
  Overrides read from the connector's own CALLBACK_OVERRIDES).

Each limit it applies is cited where it is defined. Time runs in one-second steps; per-message work
(pacing, window keys) is exact, per-second work (callbacks, URL cap, partitions) is counted.

    python -m tests.bench.campaign [--messages 1000000] [--rate 1000] [--send-rate 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
# DynamoDB: one partition key takes ~1,000 writes/s (developer guide, partition key best practices)
PARTITION_WRITES = 1000
# EventBridge: PutEvents, 10,000 requests/s in us-east-1 (EventBridge quotas; 10 entries a request)
PUT_EVENTS_PER_SECOND = 10_000
WEBHOOK_SECONDS = 0.03  # a callback's work: verify, one conditional write (local handler timing, make bench)
# The senders of a campaign as Twilio documents their throughput: a short code ~100 segments/s, toll-free
# ~3, a US long code ~1 (twilio.com/docs/messaging/guides/scaling-queueing-latency). 1,000 segments/s in all.
DEFAULT_MIX = {
    "short code": (5, "2468{n}"),
    "toll-free": (100, "+1888555{n:04d}"),
    "long code": (200, "+1555123{n:04d}"),
}


class _SenderTable:
    """The senders table in memory, for DynamoSenderQueues: conditional puts, and each item's writes a second."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.writes: Counter[tuple[str, int]] = Counter()
        self.second = 0

    def get_item(self, TableName: str, Key: Mapping[str, Any], **_: Any) -> dict[str, Any]:
        item = self.items.get(Key["sender"]["S"])
        return {"Item": item} if item else {}

    def put_item(self, TableName: str, Item: dict[str, Any], ConditionExpression: str, **kw: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        sender = Item["sender"]["S"]
        current = self.items.get(sender)
        seen = kw.get("ExpressionAttributeValues", {}).get(":seen")
        if (current is None) != (seen is None) or (current and current["next_free"] != seen):
            raise ClientError({"Error": {"Code": "ConditionalCheckFailedException", "Message": "moved"}}, "PutItem")
        self.items[sender] = Item
        self.writes[(sender, self.second)] += 1
        return {}


@dataclass
class Report:
    messages: int
    physical_seconds: float
    drain_seconds: float  # when Twilio has sent the last message
    recorded_seconds: float = 0.0  # when the pacing expected it: above the drain by what leases left unused
    callbacks: int = 0
    callbacks_refused: int = 0
    callbacks_retried_taken: int = 0
    callbacks_to_polling: int = 0
    callbacks_lost: int = 0
    poll_runs: int = 0
    poll_runs_over_budget: int = 0
    fetches: int = 0
    throttled_writes: dict[str, int] = field(default_factory=dict)
    peak_writes: dict[str, int] = field(default_factory=dict)
    events_refused: int = 0
    peak: dict[str, float] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    cost_per_million: dict[str, float] = field(default_factory=dict)

    def throttles(self) -> dict[str, bool]:
        """Where something was refused: what a local-stack run must agree with."""
        return {
            "webhooks": self.callbacks_refused > 0,
            "poll windows": self.throttled_writes.get("poll window", 0) > 0,
            "senders": self.throttled_writes.get("sender", 0) > 0,
        }


def senders_of(mix: Mapping[str, tuple[int, str]]) -> dict[str, float]:
    from chalicelib.domain.pacing import default_rate

    found = {}
    for count, pattern in mix.values():
        for n in range(count):
            sender = pattern.format(n=n)
            found[sender] = default_rate(sender) or 1.0
    return found


def cycle_of(senders: Mapping[str, float]) -> list[tuple[str, float]]:
    """One round of the campaign's senders, each as often as its throughput, evenly interleaved (a pool's
    smooth weighted round robin): message i goes to round[i % len(round)]."""
    order = sorted(senders.items())
    total = sum(senders.values())
    credit = [0.0] * len(order)
    found = []
    for _ in range(max(1, round(total))):
        for k, (_, r) in enumerate(order):
            credit[k] += r / total
        best = max(range(len(order)), key=credit.__getitem__)
        credit[best] -= 1
        found.append(order[best])
    return found


def run(
    messages: int = 1_000_000,
    rate: float = 1000.0,
    send_rate: float = 1000.0,
    mix: Mapping[str, tuple[int, str]] = DEFAULT_MIX,
    plan: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Report:
    from chalicelib.adapters.tables import DynamoSenderQueues
    from chalicelib.domain.polling import poll_key
    from chalicelib.settings import CALLBACK_OVERRIDES, load_settings
    from chalicelib.usecases.tracking import POLL_RESERVE_S
    from infra.deploy import TWILIO_REQUEST_SECONDS, URL_RPS_PER_RESERVED, capacity_plan, stage_environment
    from local.twilio_sim.core import SCENARIOS, Overrides

    stage_env = {**stage_environment("prod"), "SEND_RATE": str(send_rate), **(env or {})}
    the_plan = dict(plan or capacity_plan(stage_env))
    settings = load_settings({**stage_env, "POLL_WINDOW_SHARDS": str(the_plan["poll_window_shards"])})
    senders = senders_of(mix)
    rounds = cycle_of(senders)
    table = _SenderTable()
    # each send invocation paces with its own leases, against the one table
    invocations = [DynamoSenderQueues(table, "senders") for _ in range(the_plan["Send"])]
    steps = SCENARIOS["delivered"][0]  # the simulator's timeline: offsets from when Twilio sends it
    creates_per_second = the_plan["Send"] * settings.send_concurrency / TWILIO_REQUEST_SECONDS
    callbacks_at: Counter[int] = Counter()
    index_writes: Counter[tuple[float, int]] = Counter()
    finals: dict[int, list[float]] = defaultdict(list)  # poll window -> when each of its messages is final
    sent_at: Counter[int] = Counter()
    recorded_end, second = 0.0, 0
    twilio_free: dict[str, float] = {}
    rng = random.Random(7)
    for i in range(messages):
        second = max(second, int(i / rate))
        while sent_at[second] >= creates_per_second:  # the Twilio budget's creates a second
            second += 1
        sent_at[second] += 1
        t = max(i / rate, float(second))
        sender, sender_rate = rounds[i % len(rounds)]
        table.second = int(t)
        pacer = invocations[rng.randrange(len(invocations))]  # SQS hands a record to any invocation
        place = pacer.reserve(sender, 1, sender_rate, 36_000, START + timedelta(seconds=t))
        assert place.next_free is not None, "the campaign outlasts a message's validity"
        recorded_end = max(recorded_end, (place.next_free - START).total_seconds())
        # Twilio's own queue for the sender: first in, first out, at its rate, whatever we recorded
        starts = max(t, twilio_free.get(sender, 0.0))
        twilio_free[sender] = starts + 1 / sender_rate
        # polled in the window the pacing expects Twilio to send it in (usecases/send.py)
        window = settings.poll_window(START + timedelta(seconds=t + place.wait_seconds))
        key = poll_key(window, f"msg_{i:08x}", settings.poll_window_shards)
        final = starts + steps[-1][0]
        index_writes[(key, int(t))] += 1  # entering its window's index key
        index_writes[(key, int(final))] += 1  # and leaving it, final
        for offset, _status in steps:
            callbacks_at[int(starts + offset)] += 1
        finals[window].append(final)

    report = Report(messages, messages / sum(senders.values()), max(twilio_free.values()), plan=the_plan)
    report.recorded_seconds = recorded_end
    _callbacks(report, callbacks_at, URL_RPS_PER_RESERVED * the_plan["Webhooks"], Overrides.of(CALLBACK_OVERRIDES))
    _polls(report, finals, settings, float(stage_env.get("POLL_TIMEOUT_SECONDS", 60)) - POLL_RESERVE_S)
    per_key: Counter[tuple[str, Any, int]] = Counter()
    for (key, at), n in index_writes.items():
        per_key[("poll window", key, at)] += n
    for (sender, at), n in table.writes.items():
        per_key[("sender", sender, at)] += n
    report.throttled_writes = {"poll window": 0, "sender": 0}
    for (kind, _, _), n in per_key.items():
        report.peak_writes[kind] = max(report.peak_writes.get(kind, 0), n)
        report.throttled_writes[kind] += max(0, n - PARTITION_WRITES)
    if settings.status_events != "none":  # every change an event, 10 entries a PutEvents request
        report.events_refused = max(0, math.ceil(max(callbacks_at.values()) / 10 - PUT_EVENTS_PER_SECOND))
    report.peak["Send"] = max(sent_at.values()) * TWILIO_REQUEST_SECONDS / settings.send_concurrency
    report.peak["Webhooks"] = report.peak["Webhooks requests/s"] * WEBHOOK_SECONDS
    report.cost_per_million = cost(report, settings)
    return report


def _callbacks(report: Report, arriving_at: Counter[int], cap: int, overrides: Any) -> None:
    """Each second the webhooks' URL takes `cap` tries and answers 429 to the rest; Twilio tries a refused
    one again as the connection overrides say (the simulator's pause: a second a try)."""
    report.callbacks = sum(arriving_at.values())
    pending: Counter[tuple[int, int]] = Counter({(s, 0): n for s, n in arriving_at.items()})
    peak = 0
    for second in range(max(arriving_at) + 2 * overrides.retries + 2):
        room = cap
        for attempt in range(overrides.retries + 1):
            count = pending.pop((second, attempt), 0)
            taken = min(room, count)
            room -= taken
            report.callbacks_retried_taken += taken if attempt else 0
            refused = count - taken
            report.callbacks_refused += refused
            pause = attempt + 1
            if refused and attempt < overrides.retries and pause * 1000 <= overrides.total_ms:
                pending[(second + pause, attempt + 1)] += refused
            else:
                report.callbacks_to_polling += refused
        peak = max(peak, cap - room)
    report.peak["Webhooks requests/s"] = peak


def _polls(report: Report, finals: Mapping[int, list[float]], settings: Any, budget: float) -> None:
    """A window's first attempt comes one interval after it closes; it fetches what is not final by then
    (and what a callback left to polling would have told), a page at a time, a run handing on a cursor
    when its budget is spent. A callback left to polling is lost only if its window stopped polling first."""
    from infra.deploy import TWILIO_REQUEST_SECONDS

    interval = settings.retry_interval_ms / 1000
    page_seconds = settings.poll_page_size / settings.poll_concurrency * TWILIO_REQUEST_SECONDS
    unfinished = report.callbacks_to_polling / max(1, report.callbacks)
    last_attempt = settings.poll_window_seconds + interval * settings.retry_attempts
    running: Counter[int] = Counter()
    for window, ends in finals.items():
        first = window + settings.poll_window_seconds + interval
        to_fetch = sum(1 for f in ends if f > first) + math.ceil(len(ends) * unfinished)
        pages = max(1, math.ceil(to_fetch / settings.poll_page_size))
        report.poll_runs += max(1, math.ceil(pages * page_seconds / budget))
        report.poll_runs_over_budget += int(page_seconds > budget)
        report.fetches += to_fetch
        for s in range(int(first), int(first + max(1.0, pages * page_seconds))):
            running[s] += 1
        if unfinished and max(ends) > window + last_attempt:
            report.callbacks_lost += math.ceil(len(ends) * unfinished)
    report.peak["Poll"] = max(running.values()) if running else 0


WRU_PER_MESSAGE = 7.0  # DynamoDB writes a message makes, counted by make bench (docs/figures.md)
SEND_BATCH = 50  # SEND_BATCH_SIZE


def cost(report: Report, settings: Any) -> dict[str, float]:
    """us-east-1 list prices (tests/bench/pipeline.PRICES) times what the model counted, a million messages."""
    from infra.deploy import TWILIO_REQUEST_SECONDS
    from tests.bench.pipeline import PRICES

    n = report.messages
    per = 1e6 / n
    gb_s = PRICES["lambda_gb_second"]
    sends = math.ceil(n / SEND_BATCH)
    send_seconds = n / settings.send_concurrency * TWILIO_REQUEST_SECONDS
    poll_seconds = report.fetches / settings.poll_concurrency * TWILIO_REQUEST_SECONDS + report.poll_runs * 0.1
    outbox = math.ceil(n * 6 / 1000)  # stream records (claim, sent, callbacks, final), batches of 1,000
    requests = sends + report.callbacks + report.poll_runs + outbox
    seconds = send_seconds * 0.25 + report.callbacks * WEBHOOK_SECONDS * 0.125 + poll_seconds * 0.25 + outbox * 0.125
    return {
        "Lambda": (requests * PRICES["lambda_request"] + seconds * gb_s) * per,
        "Step Functions": report.poll_runs * 4 * PRICES["sfn_transition"] * per,  # Wait, Poll, Done?, Finish
        "DynamoDB": (n * WRU_PER_MESSAGE * PRICES["dynamodb_wru"] + report.fetches * PRICES["dynamodb_rru"]) * per,
        "SQS": n * 0.3 * PRICES["sqs_request"] * per,  # send, receive and delete, 10 a request
    }


# A new account's senders: two toll-free numbers and four long codes, 10 segments/s in all.
NEW_ACCOUNT_MIX = {"toll-free": (2, "+1888555{n:04d}"), "long code": (4, "+1555123{n:04d}")}
SCENARIOS = {
    "the default plan (SEND_RATE=10), a campaign at 10 msg/s": (36_000, 10.0, 10.0, NEW_ACCOUNT_MIX),
    "SEND_RATE=1000, a campaign at 1,000 msg/s": (1_000_000, 1000.0, 1000.0, DEFAULT_MIX),
    "over the plan: 1,000 msg/s against the default plan": (100_000, 1000.0, 10.0, DEFAULT_MIX),
}


def holds(report: Report) -> bool:
    return (
        report.callbacks_lost == 0
        and report.poll_runs_over_budget == 0
        and not any(report.throttled_writes.values())
        and report.events_refused == 0
        and report.drain_seconds <= 1.1 * report.physical_seconds
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make campaign", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, help="one campaign of this size instead of the three")
    parser.add_argument("--rate", type=float, default=1000.0, help="messages/s the platform puts on the queue")
    parser.add_argument("--send-rate", type=float, default=1000.0, help="SEND_RATE the stack was planned for")
    args = parser.parse_args(argv)
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "CRITICAL")  # here, not at import: the tests import this module
    scenarios = (
        {"one campaign": (args.messages, args.rate, args.send_rate, DEFAULT_MIX)} if args.messages else SCENARIOS
    )
    from tests.bench.report import recorded

    failed = []
    with contextlib.ExitStack() as stack:
        if not args.messages:  # the three campaigns are the figures docs/figures.md keeps
            stack.enter_context(recorded("campaign", "make campaign"))
        print("A model of the deployed connector, driven by its own plan, pacing and polling code (not a run)\n")
        for n, (name, (messages, rate, send_rate, mix)) in enumerate(scenarios.items(), 1):
            report = run(messages, rate, send_rate, mix)
            planned = send_rate >= rate
            verdict = ("holds" if holds(report) else "DOES NOT HOLD") if planned else "(expected not to hold)"
            print(f"{n}. {name}: {verdict}\n{describe(report)}\n")
            if planned and not holds(report):
                failed.append(name)
    return 1 if failed else 0


def describe(r: Report) -> str:
    from infra.deploy import describe_plan

    lines = [
        f"campaign: {r.messages:,} messages; {describe_plan(r.plan)}",
        f"drain: {r.drain_seconds:,.0f} s against the senders' physical limit {r.physical_seconds:,.0f} s "
        f"= {r.drain_seconds / r.physical_seconds:.2f} (target <= 1.10); the pacing expected "
        f"{r.recorded_seconds:,.0f} s (places leased and not used only slow a sender down)",
        f"callbacks: {r.callbacks:,}; refused {r.callbacks_refused:,}, taken on Twilio's retry "
        f"{r.callbacks_retried_taken:,}, left to polling {r.callbacks_to_polling:,}, lost {r.callbacks_lost:,}",
        f"polls: {r.poll_runs:,} runs, {r.fetches:,} fetches, over budget {r.poll_runs_over_budget}",
        "writes a second on one key (limit ~1,000): "
        + ", ".join(f"{k} peak {r.peak_writes.get(k, 0):,}, throttled {v:,}" for k, v in r.throttled_writes.items()),
        f"events refused: {r.events_refused}",
        "peak concurrency against the plan: "
        + ", ".join(
            f"{k} {v:,.1f}/{r.plan[k]}" if k in r.plan else f"{k} {v:,.0f} (cap {10 * r.plan['Webhooks']:,})"
            for k, v in r.peak.items()
        ),
        "AWS cost per million: "
        + ", ".join(f"{k} ${v:.2f}" for k, v in r.cost_per_million.items())
        + f" = ${sum(r.cost_per_million.values()):.2f}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""`make soak`: messages through the local stack with faults, bounded and loopback-only.

Faults at 10-20%: 429s, 5xx and lost responses on create, duplicate SQS deliveries, a
send worker killed mid-batch (its batch comes back whole after the visibility timeout),
duplicated and reordered callbacks, a burst of STOP replies, and an outbox invocation that dies after
its work (its stream batch comes back whole, then halved). It passes only if no message is lost, the
simulator saw no second create for any message, every message's final status matches the simulator's
truth, and the counters hold each final status exactly as often as the records do. SOAK_MESSAGES sets the size (5000). A fifth
of the paced soak's messages enter through the Twilio-compatible front door instead of the queue.

SOAK_SHAPE=burst puts every message on the queue at once (no producer pacing) against a simulator
as strict as Twilio: 20 requests in flight per account, two senders draining 1 and 10 segments/s.
It passes only if, besides the above, no record reached the DLQ, no message failed with 30001, and
the requests in flight never exceeded the connector's budget (TWILIO_MAX_CONCURRENCY=20).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import sys
import threading
import time
from typing import Any

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "CRITICAL")

FROM = "+15005550006"
TERMINAL = {"delivered", "undelivered", "failed", "error"}
# as in production, where Twilio answers in ~150 ms and requests in flight pile up to the budget
BURST_SENDERS = {"+15551110001": 1.0, "+15551110002": 10.0}  # segments/s at Twilio, simulated time
BURST_BUDGET = 20  # the simulator's account limit, and the connector's TWILIO_MAX_CONCURRENCY
TIME_SCALE = 20


def soak(messages: int, seed: int = 7, burst: bool = False) -> dict[str, Any]:
    from chalicelib import wiring
    from chalicelib.domain import rules
    from local.stack import LocalStack, StackConfig
    from local.twilio_sim import CallbackFaults, Fault
    from tests.bench.progress import Progress

    rng = random.Random(seed)
    config = StackConfig(
        stage="soak",
        time_scale=TIME_SCALE,
        retry_interval_ms=1000,
        retry_attempts=10,
        poll_window_seconds=10 if burst else 1,
        pollers=2,
        visibility_timeout=12,
        batch_size=50,
        batch_window=1.0,
    )
    # A claim outlives any one send (429 retries included); a killed batch comes back after 12 s.
    config.extra_env = {"CLAIM_LEASE_SECONDS": "10", "SECRET_MAX_AGE_SECONDS": "300"}
    if burst:  # the budget as `make deploy` would plan it: 2 send invocations × 5 + 2 polls × 5 = 20
        config.extra_env |= {
            "TWILIO_MAX_CONCURRENCY": str(BURST_BUDGET),
            "SEND_CONCURRENCY": "5",
            "POLL_CONCURRENCY": "5",
        }
        # the connector's clock is real time; the simulator's runs TIME_SCALE times faster
        rates = {sender: rate * TIME_SCALE for sender, rate in BURST_SENDERS.items()}
        config.extra_env["SENDER_RATES"] = json.dumps(rates)
    counts: dict[str, Any] = {"duplicate_deliveries": 0, "killed_batches": 0, "stop_replies": 0, "redriven": 0}
    counts["killed_outbox_batches"] = 0
    first_day = time.strftime("%Y-%m-%d", time.gmtime())
    with LocalStack(config) as stack:
        assert stack.simulator is not None
        sim = stack.simulator.sim
        sim.add_fault(Fault("429", count=None, rate=0.08, retry_after=0))
        sim.add_fault(Fault("500", count=None, rate=0.04))
        sim.add_fault(Fault("lost", count=None, rate=0.04))
        sim.callback_faults = CallbackFaults(duplicate=0.15, reorder=0.15)
        if burst:
            sim.config.max_in_flight = BURST_BUDGET
            sim.config.sender_rates.update(BURST_SENDERS)
            sim.config.latency_ms = 150  # Twilio's answers take time: requests overlap, as they would
        for i in range(0, messages, 7):
            sim.set_scenario(_phone(i), "undelivered", 30007)

        original = stack.run_send_batch
        lock = threading.Lock()

        def faulty_batch(received: list[dict[str, Any]]) -> list[str]:
            roll = rng.random()
            if roll < 0.05:  # the worker dies after sending: nothing deleted, the whole batch returns
                with lock:
                    counts["killed_batches"] += 1
                event = {"Records": [_lambda_record(stack, m) for m in received]}
                with contextlib.suppress(Exception):
                    stack.app.send(event, None)
                return [m["MessageId"] for m in received]
            if roll < 0.15:  # SQS hands the same messages out twice
                with lock:
                    counts["duplicate_deliveries"] += len(received)
                event = {"Records": [_lambda_record(stack, m) for m in received]}
                with contextlib.suppress(Exception):
                    stack.app.send(event, None)
            return original(received)

        stack.run_send_batch = faulty_batch  # type: ignore[method-assign]
        outbox = stack.outbox.handler

        def dying_outbox(event: dict[str, Any], context: Any) -> Any:
            answer = outbox(event, context)
            if rng.random() < 0.05:  # done and counted, then timed out: Lambda retries the batch whole, halved
                with lock:
                    counts["killed_outbox_batches"] += 1
                raise RuntimeError("the outbox function timed out")
            return answer

        stack.outbox.handler = dying_outbox
        started = time.perf_counter()
        stop_at = {i for i in range(3, messages, 40)}  # a burst of STOP replies, for about 2.5%
        progress = Progress()
        senders = sorted(BURST_SENDERS) if burst else [FROM]
        bodies = [
            {"to": _phone(i), "from": senders[i % len(senders)], "body": f"soak {i}", "idempotency_key": f"soak-{i}"}
            for i in range(messages)
        ]
        if burst:  # the whole campaign at once, as a CDP drops it
            for start in range(0, messages, 10):
                entries = [
                    {"Id": str(j), "MessageBody": json.dumps(b)} for j, b in enumerate(bodies[start : start + 10])
                ]
                stack.sqs.send_message_batch(QueueUrl=stack.queues["SendQueue"], Entries=entries)
            progress(f"{messages} put on the queue at once")
        facade_ids: dict[int, str] = {}
        for i in range(messages):
            if not burst:
                if i % 50 == 0:
                    stack.wait_for_room()  # posted as an event stream does, never far ahead
                    progress(f"{i}/{messages} posted")
                if i % 5 == 2:  # a fifth come through the Twilio-compatible front door, as a platform posts
                    facade_ids[i] = _via_front_door(stack, bodies[i], with_key=i % 10 == 2)
                else:
                    stack.enqueue(bodies[i])
            if i in stop_at:
                sim.inbound(_phone(i), bodies[i]["from"], "STOP")
                counts["stop_replies"] += 1
        ids = {i: facade_ids.get(i) or rules.message_id(f"soak-{i}", "") for i in range(messages)}
        counts["via_front_door"] = len(facade_ids)
        deadline = time.monotonic() + 120 + messages / 2
        ledger = wiring.ledger()
        pending = set(ids)
        while pending and time.monotonic() < deadline:
            counts["redriven"] += _redrive(stack)  # as an operator would: the DLQ holds, it does not lose
            if burst:
                counts["peak_in_flight"] = sim.peak_in_flight
            records = ledger.get_many([ids[i] for i in pending])
            pending = {i for i in pending if (r := records.get(ids[i])) is None or r.status not in TERMINAL}
            progress(f"{messages - len(pending)}/{messages} finished")
            if pending:
                time.sleep(5)  # reading thousands of records is moto CPU the pipeline needs: not too often
        elapsed = time.perf_counter() - started
        counts["peak_in_flight"] = sim.peak_in_flight
        counts["account_429s"] = sim.throttled
        # the strict local world: the function URLs' caps and one partition key's writes (local/aws.py)
        counts["url_refused"] = {name: gate.refused for name, gate in stack.url_gates.items()}
        counts["url_reserved"] = {name: gate.reserved for name, gate in stack.url_gates.items()}
        counts["retried_taken"] = sum(1 for c in sim.callbacks if c.attempt and c.status_code == 200)
        counts["hot_key_refused"] = sum(stack.partitions.throttled.values()) if stack.partitions else 0
        counts["overflows"] = sum(sim.overflows.values())
        segments = sum(rules.segment_info(b["body"]).num_segments for b in bodies)
        counts["physical_drain_s"] = segments / sum(BURST_SENDERS.values()) / TIME_SCALE if burst else 0
        sim.clear_faults()
        while sim.pending_jobs():
            time.sleep(0.2)
        time.sleep(1)
        records = ledger.get_many(list(ids.values()))
        quiet = time.monotonic() + 60
        while stack.outbox.pending and time.monotonic() < quiet:  # the stream's last changes, counted
            time.sleep(0.5)
        time.sleep(2)
        days = sorted({first_day, time.strftime("%Y-%m-%d", time.gmtime())})
        counted = wiring.stats().totals(days)["by_status"]
        finals = [r.status for r in records.values()]
        miscounted = {s: (counted.get(s, 0), finals.count(s)) for s in TERMINAL if counted.get(s, 0) != finals.count(s)}
        counts["outbox_given_up"] = len(stack.outbox.given_up)
        creates = sim.create_counts()
        by_body = {c["body"]: c for c in sim.creates()}
        lost = [i for i in ids.values() if records.get(i) is None or records[i].status not in TERMINAL]
        twice = [k for k, n in creates.items() if n > 1]
        wrong = []
        for i, message_id in ids.items():
            record = records.get(message_id)
            if record is None:
                continue
            created = by_body.get(f"soak {i}")
            if created is None:
                truth: tuple[Any, ...] = ("error",)  # refused before Twilio: opted out
                ok = record.status == "error" and record.error_code == 21610
            else:
                final = sim.truth(created["sid"])
                truth = (final["final_status"], final["error_code"])
                ok = (record.status, record.error_code) == truth and record.twilio_sid == created["sid"]
            if not ok:
                wrong.append((i, record.status, record.error_code, truth))
    failed_30001 = sum(1 for r in records.values() if r.error_code == 30001)
    return {
        "messages": messages,
        "seconds": elapsed,
        "failed_30001": failed_30001,
        "lost": len(lost),
        "sent_twice": len(twice),
        "wrong_status": len(wrong),
        "miscounted": miscounted,
        "examples": wrong[:5],
        **counts,
    }


def _redrive(stack: Any) -> int:
    """Move whatever reached the dead-letter queue back to the send queue."""
    moved = 0
    while True:
        got = stack.sqs.receive_message(QueueUrl=stack.queues["SendDeadLetterQueue"], MaxNumberOfMessages=10).get(
            "Messages", []
        )
        if not got:
            return moved
        for message in got:
            stack.sqs.send_message(QueueUrl=stack.queues["SendQueue"], MessageBody=message["Body"])
            stack.sqs.delete_message(
                QueueUrl=stack.queues["SendDeadLetterQueue"], ReceiptHandle=message["ReceiptHandle"]
            )
            moved += 1


def _via_front_door(stack: Any, body: dict[str, str], with_key: bool) -> str:
    """Post as a platform would: Twilio's form with Basic auth. Half send an Idempotency-Key; the other
    half cannot, and post everything twice, as CI360 does after a timeout: the content window makes the
    retry the same message. A 429 (a store that could not take it) is retried, as Twilio's clients do."""
    import requests

    account, token = stack.config.facade_account_sid, stack.config.facade_token
    url = f"{stack.facade_url}/Accounts/{account}/Messages.json"
    form = {"To": body["to"], "From": body["from"], "Body": body["body"]}
    headers = {"Idempotency-Key": body["idempotency_key"]} if with_key else {}
    sids = set()
    for _ in range(1 if with_key else 2):
        for _ in range(30):
            answer = requests.post(url, data=form, headers=headers, auth=(account, token), timeout=30)
            if answer.status_code != 429:
                break
            time.sleep(1)
        if answer.status_code != 201:
            raise AssertionError(f"the front door answered {answer.status_code}: {answer.text}")
        sids.add(answer.json()["sid"])
    if len(sids) != 1:
        raise AssertionError(f"a retry inside the content window became a second message: {sids}")
    return sids.pop()


def _phone(i: int) -> str:
    return f"+1555{i:07d}"


def _lambda_record(stack: Any, message: dict[str, Any]) -> dict[str, Any]:
    from local.stack import _lambda_record as record

    result: dict[str, Any] = record(message, stack.queues["SendQueue"])
    return result


def main() -> int:
    from tests.bench import report

    burst = os.environ.get("SOAK_SHAPE", "paced") == "burst"
    name = "soak-burst" if burst else "soak-paced"
    with report.recorded(name, "make soak SOAK_SHAPE=burst" if burst else "make soak"):
        return run_soak(burst)


def run_soak(burst: bool) -> int:
    messages = int(os.environ.get("SOAK_MESSAGES", "5000"))
    shape = "all at once, 20 requests in flight, senders at 1 and 10 segments/s" if burst else "paced"
    print(f"soak: {messages} messages through the local stack with faults ({shape}; loopback only)…", flush=True)
    with contextlib.redirect_stdout(io.StringIO()):
        result = soak(messages, burst=burst)
    print(
        f"  {result['messages']} messages in {result['seconds']:.0f} s; faults: 8% 429, 4% 500, 4% lost responses, "
        f"{result['duplicate_deliveries']} duplicate deliveries, {result['killed_batches']} killed batches, "
        f"15% duplicated / 15% reordered callbacks, {result['stop_replies']} STOP replies; "
        f"{result['redriven']} redriven from the DLQ; {result['via_front_door']} through the Twilio-compatible "
        f"front door (half of them posted twice without a key)"
    )
    print(
        f"  lost: {result['lost']}   sent twice: {result['sent_twice']}   status differs from Twilio's truth: {result['wrong_status']}"
    )
    print(
        f"  outbox: {result['killed_outbox_batches']} invocations died after their work; final statuses counted "
        f"otherwise than recorded: {len(result['miscounted'])} {result['miscounted'] or ''}; "
        f"batches given up: {result['outbox_given_up']}"
    )
    print(
        "  strict local world: "
        + ", ".join(
            f"{n} URL (reserved {result['url_reserved'][n]}) refused {r}" for n, r in result["url_refused"].items()
        )
        + f"; refused callbacks taken on Twilio's retry: {result['retried_taken']}; "
        f"writes refused on a hot key: {result['hot_key_refused']}"
    )
    for example in result["examples"]:
        print(f"    e.g. message {example[0]}: {example[1]} ({example[2]}), truth {example[3]}")
    ok = result["lost"] == 0 and result["sent_twice"] == 0 and result["wrong_status"] == 0
    ok = ok and not result["miscounted"] and result["outbox_given_up"] == 0
    if burst:
        print(
            f"  in the DLQ: {result['redriven']}   failed 30001: {result['failed_30001']}   "
            f"peak requests in flight: {result['peak_in_flight']} (budget {BURST_BUDGET}; {result['account_429s']} refused)"
        )
        print(
            f"  drain: {result['seconds']:.0f} s here vs the senders' physical limit {result['physical_drain_s']:.0f} s "
            f"(segments ÷ 11 segments/s, at the simulator's {TIME_SCALE}× time)"
        )
        ok = ok and result["redriven"] == 0 and result["failed_30001"] == 0
        ok = ok and result["peak_in_flight"] <= BURST_BUDGET
    print("  PASS" if ok else "  FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

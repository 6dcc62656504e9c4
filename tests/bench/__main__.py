"""`make bench`: every figure side by side from one run. Figures, not assertions.

BENCH_MESSAGES (default 1000) and BENCH_LARGE (default 0: skipped) set the pipeline sizes;
`make bench BENCH_LARGE=10000` adds the growth run (about half an hour on 2 cores: the
local stack's DynamoDB, SQS and Step Functions are moto, emulated in-process).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "CRITICAL")


def quietly(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


TRICKLE_MESSAGES = 480


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSES TARGET"


def main() -> int:
    from tests.bench import report

    with report.recorded("bench", "make bench"):
        return figures()


def figures() -> int:
    from tests.bench import connector, facade, pipeline, release, simulator

    print("Benchmarks (one run, this machine)\n")
    memory = quietly(connector.batch_latency_in_memory, 200)
    moto = quietly(connector.batch_latency, 200)
    print("1. Batch of 10 vs one create, simulator +200 ms latency (target <= 1.3; sequential ~10)")
    print(
        f"   stores in memory : batch {memory['batch_s'] * 1000:6.0f} ms / create {memory['single_s'] * 1000:4.0f} ms = {memory['ratio']:.2f}  [{verdict(memory['ratio'] <= 1.3)}]"
    )
    print(
        f"   stores in moto   : batch {moto['batch_s'] * 1000:6.0f} ms / create {moto['single_s'] * 1000:4.0f} ms = {moto['ratio']:.2f}  (moto's emulation is CPU under our GIL)"
    )
    cold = connector.cold_start()
    size = connector.zip_size()
    print("2. Cold start in a fresh interpreter, vs `import boto3, requests` (target <= 1.6)")
    print(
        f"   baseline {cold['baseline'] * 1000:.0f} ms; `import app` {cold['entry'] * 1000:.0f} ms = {cold['entry_ratio']:.2f}  [{verdict(cold['entry_ratio'] <= 1.6)}]"
    )
    print(
        f"   send function ready (imports + the clients its first send needs) {cold['send_path'] * 1000:.0f} ms = {cold['send_path_ratio']:.2f}  [{verdict(cold['send_path_ratio'] <= 1.6)}]"
    )
    print(
        f"   the same without the zip's .pyc (compiled at every cold start) {cold['send_path_source_only'] * 1000:.0f} ms = {cold['send_path_source_only_ratio']:.2f}"
    )
    print(
        f"   with quiet hours set, to its first recipient's zone (phonenumbers, tzdata) {cold['send_path_quiet_hours'] * 1000:.0f} ms = {cold['send_path_quiet_hours_ratio']:.2f}"
    )
    print(
        f"   floor: boto3 + requests + one client {cold['floor'] * 1000:.0f} ms = {cold['floor_ratio']:.2f} (no boto3 function starts faster)"
    )
    print(f"   deployment.zip: {size / 1e6:.1f} MB" if size else "   deployment.zip: not built (make package failed)")
    freed = quietly(release.run)
    print(
        f"   release at a quiet-hours window's opening: {freed['released']:,} held messages back on the queue in "
        f"{freed['seconds']:.1f} s = {freed['per_second']:,.0f}/s (ReleaseHeld, AWS latencies assumed: tests/bench/release.py)"
    )
    sizes = [int(os.environ.get("BENCH_MESSAGES", "1000"))]
    if int(os.environ.get("BENCH_LARGE", "0")):
        sizes.append(int(os.environ["BENCH_LARGE"]))
    runs = [quietly(pipeline.run, n, status_events="all") for n in sizes]
    print("3. Pipeline through the local stack (SQS -> send -> simulator -> DynamoDB -> callbacks)")
    for r in runs:
        print(
            f"   {r['messages']:6d} messages: {r['delivered']} delivered in {r['seconds']:.1f} s = {r['per_second']:.1f}/s; sent twice: {r['sent_twice']}"
        )
    if len(runs) > 1:
        growth = runs[1]["seconds"] / runs[0]["seconds"]
        print(f"   time grows x{growth:.1f} for x{runs[1]['messages'] / runs[0]['messages']:.0f} messages")
    base = runs[0]
    # A trickle of 0.4 messages/s with 120 s poll windows and Lambda's 2 s batching window, run 20× faster:
    # the same messages per window and per batch, so the same calls per message.
    trickle = quietly(
        pipeline.run, TRICKLE_MESSAGES, arrivals_per_second=8.0, poll_window=6, batch_window=0.1, outbox_window=0.75
    )
    print(
        f"   trickle: {trickle['messages']} messages at 0.4/s (20x time-compressed): {trickle['delivered']} delivered, "
        f"{trickle['executions']} poll executions, {trickle['meter'].invocations['send']} send invocations; sent twice: {trickle['sent_twice']}"
    )
    print("4. AWS cost per million messages, from the calls counted in run 3 (us-east-1 list prices; target <= $8)")
    designs = [
        ("burst, callbacks to a Lambda function URL", pipeline.cost_per_million(base, False)),
        ("trickle (0.4/s), callbacks to the function URL", pipeline.cost_per_million(trickle, False)),
        ("burst, STATUS_EVENTS=all (every change on the bus)", pipeline.cost_per_million(base, False, events=True)),
        ("burst, callbacks through API Gateway REST", pipeline.cost_per_million(base, True)),
        ("naive: one execution per message", pipeline.cost_per_million(base, False, naive=True)),
    ]
    services = [k for k in designs[0][1] if k != "total"]
    print("   " + f"{'':<50}" + "".join(f"{s[:14]:>15}" for s in services) + f"{'total':>10}")
    for name, costs in designs:
        print("   " + f"{name:<50}" + "".join(f"{costs[s]:>15.2f}" for s in services) + f"{costs['total']:>10.2f}")
    print(
        f"   per message: {base['executions'] and base['transitions'] / base['executions']:.1f} transitions per execution, "
        f"{base['meter'].wru / base['messages']:.1f} DynamoDB writes, {base['meter'].events / base['messages']:.1f} events, "
        f"{base['callbacks'] / base['messages']:.1f} callbacks taken "
        f"(and {base.get('refused_tries', 0) / base['messages']:.1f} tries the webhooks' URL refused, retried by Twilio)"
    )
    rate = quietly(simulator.creates_per_second)
    print(f"5. Simulator: {rate:,.0f} creates/s with keep-alive (target >= 500)  [{verdict(rate >= 500)}]")
    door = quietly(facade.measure)
    print("6. Twilio-compatible front door, a platform polling each message every 10 s (stores in memory)")
    print(f"   handler CPU: create {door['create_ms']:.2f} ms, fetch {door['fetch_ms']:.2f} ms")
    print(
        f"   per million polls: function URL ${door['per_million_polls_url']:.2f}, through API Gateway REST "
        f"${door['per_million_polls_gateway']:.2f} = {door['per_million_polls_gateway'] / door['per_million_polls_url']:.1f}x"
    )
    print(
        f"   per million messages at {facade.POLLS_PER_MESSAGE} polls each: ${door['per_million_messages_url']:.2f} "
        f"on the function URL vs ${door['per_million_messages_gateway']:.2f} through API Gateway"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

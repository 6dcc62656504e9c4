"""`make campaign`'s model (tests/bench/campaign.py) against a real local-stack run at the largest scale a
test here affords, with the same plan and rates: the two must agree on what throttles and where.

The local stack runs in real time here (time_scale 1), so the webhooks' function URL, reserved at one unit,
takes 10 callbacks a second as AWS would; a burst of messages from a short code brings ~3 a message.
"""

from __future__ import annotations

import time

from chalicelib import wiring
from chalicelib.domain import rules
from local.stack import LocalStack, StackConfig
from tests.bench import campaign

SHORT_CODE = "24680"
MESSAGES = 60


def test_the_campaign_model_and_the_local_stack_agree_on_what_throttles() -> None:
    config = StackConfig(
        stage="model", time_scale=1.0, retry_interval_ms=1000, retry_attempts=5, webhooks_reserved=1, pollers=1
    )
    with LocalStack(config) as stack:
        assert stack.simulator is not None
        sim = stack.simulator.sim
        keys = [f"model-{n}" for n in range(MESSAGES)]
        for n, key in enumerate(keys):
            stack.enqueue({"to": f"+1555010{n:04d}", "from": SHORT_CODE, "body": "hi", "idempotency_key": key})
        ids = [rules.message_id(key, "") for key in keys]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            records = [wiring.ledger().get(i) for i in ids]
            if all(r is not None and r.status == "delivered" for r in records):
                break
            time.sleep(0.5)
        assert all(r is not None and r.status == "delivered" for r in records), "every message delivered"
        created = sorted(m.date_created for m in sim.messages.values())
        seconds = max(0.5, (created[-1] - created[0]).total_seconds())
        local = {
            "webhooks": stack.url_gates["Webhooks"].refused > 0,
            "poll windows": any(
                k[1] == "by_poll_window" for k in (stack.partitions.throttled if stack.partitions else {})
            ),
            "senders": any(k[0].endswith("senders") for k in (stack.partitions.throttled if stack.partitions else {})),
        }
    plan = {"Webhooks": 1, "Send": 1, "Poll": 2, "poll_window_shards": 1}
    env = {"POLL_WINDOW_SECONDS": "1", "RETRY_INTERVAL_MS": "1000", "RETRY_ATTEMPTS": "5"}
    model = campaign.run(MESSAGES, MESSAGES / seconds, 10.0, {"short code": (1, SHORT_CODE)}, plan, env)
    assert local == model.throttles() == {"webhooks": True, "poll windows": False, "senders": False}, (
        local,
        model,
    )
    assert model.callbacks_lost == 0  # and locally, every message ended delivered

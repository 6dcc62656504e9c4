"""The Twilio-compatible front door under a polling platform: HCL Unica fetches each message every
10 s until it is final. Measures the facade handler's own CPU per create and per fetch (stores in
memory, so the figure is our code, not moto's emulation), and prices a million polls on the
function URL beside the same polls through API Gateway REST."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from tests.bench.pipeline import PRICES

MEMORY_GB = 0.25  # the facade function's memory (.chalice/config.json)
NETWORK_WAIT_S = 0.01  # one DynamoDB GetItem round trip, added to the measured CPU
POLLS_PER_MESSAGE = 3  # a message is usually final within ~30 s: three 10 s polls


def _world() -> Any:
    from tests.unit.test_facade import World

    return World()


def measure(requests: int = 2000) -> dict[str, Any]:
    from tests.unit.test_facade import ACCOUNT, TOKEN

    world = _world()
    auth = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()

    def event(method: str, path: str, body: str = "") -> dict[str, Any]:
        return {
            "rawPath": f"/2010-04-01/Accounts/{ACCOUNT}{path}",
            "headers": {"authorization": auth, "content-type": "application/x-www-form-urlencoded"},
            "requestContext": {"http": {"method": method}},
            "body": body,
        }

    started = time.process_time()
    sids = []
    for n in range(requests):
        answer = world.facade.handle(event("POST", "/Messages.json", f"To=%2B1555{n:07d}&From=%2B15005550006&Body=hi"))
        sids.append(json.loads(answer["body"])["sid"])
    create_s = (time.process_time() - started) / requests
    started = time.process_time()
    for sid in sids:
        assert world.facade.handle(event("GET", f"/Messages/{sid}.json"))["statusCode"] == 200
    fetch_s = (time.process_time() - started) / requests

    def per_million_polls(api_gateway: bool) -> float:
        lambda_cost = PRICES["lambda_request"] + (fetch_s + NETWORK_WAIT_S) * MEMORY_GB * PRICES["lambda_gb_second"]
        dynamodb = PRICES["dynamodb_rru"]  # one strongly consistent GetItem of a record under 4 KB
        return (lambda_cost + dynamodb + (PRICES["apigw_request"] if api_gateway else 0.0)) * 1e6

    url, gateway = per_million_polls(False), per_million_polls(True)
    return {
        "create_ms": create_s * 1000,
        "fetch_ms": fetch_s * 1000,
        "per_million_polls_url": url,
        "per_million_polls_gateway": gateway,
        "per_million_messages_url": url * POLLS_PER_MESSAGE,
        "per_million_messages_gateway": gateway * POLLS_PER_MESSAGE,
    }

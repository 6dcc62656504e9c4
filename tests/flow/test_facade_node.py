"""The official `twilio` Node.js package (tests/node, installed by `make test`) against the front door
on the local stack: platforms built on Node reach the connector by changing the base URL only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from twilio.request_validator import RequestValidator

from local.stack import LocalStack, StackConfig
from tests.receiver import Receiver

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
TO, FROM, MG = "+15550400001", "+15005550006", "MG" + "4" * 32


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(StackConfig(stage="node", time_scale=20, retry_interval_ms=1000, retry_attempts=3)) as running:
        yield running


def test_the_node_client_creates_fetches_lists_cancels_and_is_refused_as_by_twilio(stack: LocalStack) -> None:
    node = shutil.which("node")
    assert node, "Node.js is needed for this test (Debian: apt install nodejs npm)"
    assert (NODE_DIR / "node_modules" / "twilio").is_dir(), "run `make test` (it runs npm ci in tests/node)"
    stack.rewire()
    receiver = Receiver()
    callback = f"{receiver.url}/node-status"
    env = {
        **os.environ,
        "BASE": stack.api_url,
        "ACCOUNT": stack.config.facade_account_sid,
        "TOKEN": stack.config.facade_token,
        "TO": TO,
        "FROM": FROM,
        "MG": MG,
        "CALLBACK": callback,
    }
    ran = subprocess.run(
        [node, str(NODE_DIR / "front_door.js")], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert seen["created"]["sid"].startswith("SM") and seen["created"]["status"] == "queued"
    assert seen["mms"]["sid"].startswith("MM") and seen["mms"]["numMedia"] == "1"
    assert seen["fetched"] == {"status": "delivered", "dateSent": True, "errorCode": None}
    assert seen["listed"][:2] == [seen["mms"]["sid"], seen["created"]["sid"]]  # newest first, across pages
    assert seen["invalid"] == {"status": 400, "code": 21211}
    assert seen["wrongToken"] == {"status": 401, "code": 20003}
    assert seen["missing"] == {"status": 404, "code": 20404}
    assert (seen["scheduled"], seen["canceled"]) == ("scheduled", "canceled")
    assert seen["account"] == {"sid": stack.config.facade_account_sid, "status": "active", "authToken": None}
    validator = RequestValidator(stack.config.facade_token)

    def heard() -> list[str]:
        return [dict(parse_qsl(c["body"])).get("MessageStatus", "") for c in receiver.requests]

    deadline = time.monotonic() + 20
    while not {"sent", "delivered"} <= set(heard()) and time.monotonic() < deadline:
        time.sleep(0.1)
    callbacks = list(receiver.requests)
    receiver.server.shutdown()
    # every change after the create's `queued`, each once, in order, each signed as Twilio signs
    assert heard() == ["sent", "delivered"], heard()
    assert all(
        validator.validate(callback, dict(parse_qsl(c["body"])), c["headers"]["X-Twilio-Signature"]) for c in callbacks
    )

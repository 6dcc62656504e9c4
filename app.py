"""The Chalice switchboard: every entry point is one line into chalicelib."""

from __future__ import annotations

import os
from typing import Any

from chalice import Chalice
from chalice.app import SQSEvent

from chalicelib import wiring

app = Chalice(app_name="twilio-connector")

# Chalice needs the queue name when it reads this module (deploy and package time).
SEND_QUEUE = os.environ.get("SEND_QUEUE_NAME", "twilio-connector-send")


@app.on_sqs_message(queue=SEND_QUEUE, batch_size=10, name="send")
def send(event: SQSEvent) -> dict[str, Any]:
    result: dict[str, Any] = wiring.send_consumer().handle(event.to_dict(), event.context)
    return result

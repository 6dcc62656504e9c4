"""The Chalice switchboard: every entry point is one line into chalicelib."""

from __future__ import annotations

import os
from typing import Any

from chalice import Chalice, Response
from chalice.app import CloudWatchEvent, SQSEvent

from chalicelib import wiring
from chalicelib.settings import INBOUND_PATH, STATUS_PATH

app = Chalice(app_name="twilio-connector")

# Chalice needs the queue name when it reads this module (deploy and package time).
SEND_QUEUE = os.environ.get("SEND_QUEUE_NAME", "twilio-connector-send")
# Twilio posts `application/x-www-form-urlencoded; charset=utf-8`; Chalice answers 415 unless listed.
FORM = ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8"]


def _webhook(handle: Any) -> Response:
    request = app.current_request
    assert request is not None  # always set inside a route
    result = handle(request.query_params, request.raw_body, request.headers.get("x-twilio-signature"))
    return Response(body=result.body, status_code=result.status, headers=result.headers)


@app.on_sqs_message(queue=SEND_QUEUE, batch_size=10, name="send")
def send(event: SQSEvent) -> dict[str, Any]:
    result: dict[str, Any] = wiring.send_consumer().handle(event.to_dict(), event.context)
    return result


@app.lambda_function(name="poll")
def poll(event: dict[str, Any], context: Any) -> dict[str, Any]:
    result: dict[str, Any] = wiring.tracking().poll(event)
    return result


@app.lambda_function(name="finalize")
def finalize(event: dict[str, Any], context: Any) -> dict[str, Any]:
    result: dict[str, Any] = wiring.tracking().finalize(event)
    return result


@app.route(STATUS_PATH, methods=["POST"], content_types=FORM)
def twilio_status() -> Response:
    return _webhook(wiring.webhooks().status)


@app.route(INBOUND_PATH, methods=["POST"], content_types=FORM)
def twilio_inbound() -> Response:
    return _webhook(wiring.webhooks().inbound)


@app.on_cw_event(
    {
        "source": ["twilio.connector"],
        "detail-type": ["Message Status Changed"],
        "detail": {"status_callback": [{"exists": True}]},
    },
    name="forward",
)
def forward(event: CloudWatchEvent) -> None:
    wiring.forwarder().forward(event.detail)

"""What operators look at and do, behind the status page and the command line: the send DLQ (depth, the
oldest record's age, redrive with a dry run) and Twilio's words for an error code."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from chalicelib.domain.queued import MESSAGE_ID_ATTRIBUTE, QueuedRequest
from chalicelib.domain.rules import ConnectorCode

ERRORS_FILE = Path(__file__).resolve().parents[1] / "data" / "twilio_errors.json"
CONNECTOR_ERRORS = {
    ConnectorCode.INVALID_REQUEST: "The request breaks a rule of the connector's (the message names the field)",
    ConnectorCode.TEMPLATE_NOT_FOUND: "No template with that name",
    ConnectorCode.TEMPLATE_MISSING_VALUE: "A template placeholder had no value",
    ConnectorCode.STALE_REQUEST: "The request's not_after passed before it could be sent",
    ConnectorCode.UNKNOWN_CONNECTION: "No connection with that name",
}


@functools.cache
def _dictionary() -> dict[str, str]:
    """Twilio's error dictionary (code -> message), shipped with the app; read on first use only."""
    loaded: dict[str, str] = json.loads(ERRORS_FILE.read_text())
    return loaded


def describe_errors(codes: Iterable[str]) -> dict[str, str]:
    described = {}
    for code in codes:
        if code.isdigit() and int(code) in CONNECTOR_ERRORS:
            described[code] = CONNECTOR_ERRORS[ConnectorCode(int(code))]
        elif code in _dictionary():
            described[code] = _dictionary()[code]
    return described


class DeadLetters:
    """The send queue's DLQ: records that failed five receives wait here until an operator redrives them."""

    def __init__(self, client: Any, dlq_url: str, send_queue_url: str, clock: Any = time.time) -> None:
        self.client = client
        self.dlq_url = dlq_url
        self.send_queue_url = send_queue_url
        self.clock = clock

    def depth(self) -> int:
        attributes = self.client.get_queue_attributes(
            QueueUrl=self.dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes.get("ApproximateNumberOfMessages", 0))

    def show(self) -> dict[str, Any]:
        """Depth, and the oldest of up to ten records looked at (left where they are: visibility 0)."""
        got = self.client.receive_message(
            QueueUrl=self.dlq_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
            AttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
        ).get("Messages", [])
        sent = [int(m["Attributes"]["SentTimestamp"]) / 1000 for m in got if "SentTimestamp" in m.get("Attributes", {})]
        oldest = round(self.clock() - min(sent), 1) if sent else None
        return {"depth": max(self.depth(), len(got)), "oldest_age_seconds": oldest}

    def redrive(self, limit: int = 100, dry_run: bool = False) -> dict[str, Any]:
        """Move up to `limit` records back to the send queue, as they are (their ledger ids go with them:
        the ledger still decides who may send, so a redrive never sends twice)."""
        if dry_run:
            depth = self.depth()
            return {"dry_run": True, "would_move": min(depth, limit), "depth": depth}
        moved = 0
        while moved < limit:
            got = self.client.receive_message(
                QueueUrl=self.dlq_url,
                MaxNumberOfMessages=min(10, limit - moved),
                VisibilityTimeout=30,
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not got:
                break
            for message in got:
                attributes = {
                    k: {"DataType": v.get("DataType", "String"), "StringValue": v["StringValue"]}
                    for k, v in (message.get("MessageAttributes") or {}).items()
                    if "StringValue" in v
                }
                # A record keyed only by its SQS messageId would get a new one, so a new ledger id, and could be
                # sent again: it goes back naming the ledger id it had.
                named = {k: {"stringValue": v["StringValue"]} for k, v in attributes.items()}
                as_lambda_saw_it = {
                    "messageId": message["MessageId"],
                    "body": message["Body"],
                    "messageAttributes": named,
                }
                ledger_id = QueuedRequest.from_record(as_lambda_saw_it).message_id
                attributes[MESSAGE_ID_ATTRIBUTE] = {"DataType": "String", "StringValue": ledger_id}
                extra = {"MessageAttributes": attributes}
                self.client.send_message(QueueUrl=self.send_queue_url, MessageBody=message["Body"], **extra)
                self.client.delete_message(QueueUrl=self.dlq_url, ReceiptHandle=message["ReceiptHandle"])
                moved += 1
        return {"dry_run": False, "moved": moved, "depth": self.depth()}


@functools.cache
def dashboard_html() -> str:
    return (Path(__file__).resolve().parents[1] / "data" / "dashboard.html").read_text()


class OperationsApi:
    """`GET /dlq`, `POST /dlq/redrive`, `POST /api-keys/{name}`: thin, each answer in the API's shape."""

    def __init__(self, dead_letters: DeadLetters | None, issue_key: Any) -> None:
        self.dead_letters = dead_letters
        self.issue_key = issue_key

    def dlq_show(self) -> Any:
        from chalicelib.entrypoints.responses import ApiResult, error

        if self.dead_letters is None:
            return error(404, "not_found", "no dead-letter queue is configured (SEND_DLQ_URL)")
        return ApiResult(200, self.dead_letters.show())

    def dlq_redrive(self, query: Any) -> Any:
        from chalicelib.entrypoints.responses import ApiResult, error

        if self.dead_letters is None:
            return error(404, "not_found", "no dead-letter queue is configured (SEND_DLQ_URL)")
        limit_text = str(query.get("limit") or "100")
        if not limit_text.isascii() or not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
            return error(400, ConnectorCode.INVALID_REQUEST, "`limit` must be an integer from 1 to 1000", "limit")
        dry_run = str(query.get("dry_run") or "false").lower() in ("true", "1", "yes")
        return ApiResult(200, self.dead_letters.redrive(int(limit_text), dry_run))

    def create_api_key(self, name: str) -> Any:
        from chalicelib.entrypoints.api_keys import KeySetupError
        from chalicelib.entrypoints.responses import ApiResult, error

        try:
            key = self.issue_key(name)
        except KeySetupError as exc:
            return error(400, ConnectorCode.INVALID_REQUEST, str(exc), "name")
        return ApiResult(201, {"name": name, "api_key": key, "note": "shown once; only its hash is stored"})

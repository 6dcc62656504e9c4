"""What operators look at and do, behind the status page and the command line: the send DLQ (depth, the
oldest record's age, redrive with a dry run) and Twilio's words for an error code."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

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

    RECEIVE: ClassVar[dict[str, Any]] = {}  # what a redrive asks SQS for besides the body

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
                **self.RECEIVE,
            ).get("Messages", [])
            if not got:
                break
            for message in got:
                self._put_back(message)
                self.client.delete_message(QueueUrl=self.dlq_url, ReceiptHandle=message["ReceiptHandle"])
                moved += 1
        return {"dry_run": False, "moved": moved, "depth": self.depth()}

    def _put_back(self, message: dict[str, Any]) -> None:
        attributes = {
            k: {"DataType": v.get("DataType", "String"), "StringValue": v["StringValue"]}
            for k, v in (message.get("MessageAttributes") or {}).items()
            if "StringValue" in v
        }
        # A record keyed only by its SQS messageId would get a new one, so a new ledger id, and could be
        # sent again: it goes back naming the ledger id it had.
        named = {k: {"stringValue": v["StringValue"]} for k, v in attributes.items()}
        as_lambda_saw_it = {"messageId": message["MessageId"], "body": message["Body"], "messageAttributes": named}
        ledger_id = QueuedRequest.from_record(as_lambda_saw_it).message_id
        attributes[MESSAGE_ID_ATTRIBUTE] = {"DataType": "String", "StringValue": ledger_id}
        extra = {"MessageAttributes": attributes}
        self.client.send_message(QueueUrl=self.send_queue_url, MessageBody=message["Body"], **extra)


class ForwardDeadLetters(DeadLetters):
    """The forward queue's DLQ (FIFO): write-backs their platform did not take in about an hour. A redrive
    puts each back in its message's group, in the order the DLQ holds them, to be told in order again."""

    RECEIVE: ClassVar[dict[str, Any]] = {"AttributeNames": ["MessageGroupId", "SentTimestamp"]}

    def show(self) -> dict[str, Any]:
        """Depth only: a FIFO queue is not peeked, since a look would hold its message groups."""
        return {"depth": self.depth(), "oldest_age_seconds": None}

    def _put_back(self, message: dict[str, Any]) -> None:
        group = message["Attributes"]["MessageGroupId"]
        self.client.send_message(
            QueueUrl=self.send_queue_url,  # the forward queue
            MessageBody=message["Body"],
            MessageGroupId=group,
            MessageDeduplicationId=hashlib.sha256(f"redrive|{message['MessageId']}".encode()).hexdigest(),
        )


@functools.cache
def dashboard_html() -> str:
    return (Path(__file__).resolve().parents[1] / "data" / "dashboard.html").read_text()


@functools.cache  # the page is read once (dashboard_html): so is its script's hash
def dashboard_policy(html: str) -> str:
    """The page's Content-Security-Policy: its one script by hash (no 'unsafe-inline' for scripts), the API as
    the only place it talks to, and never inside another site's frame."""
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts)
    return (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


class OperationsApi:
    """`GET /dlq`, `POST /dlq/redrive` (`?queue=send`, the default, or `forward`), `POST /api-keys/{name}`:
    thin, each answer in the API's shape."""

    def __init__(self, dead_letters: DeadLetters | None, issue_key: Any, forward: DeadLetters | None = None) -> None:
        self.queues = {"send": (dead_letters, "SEND_DLQ_URL"), "forward": (forward, "FORWARD_DLQ_URL")}
        self.issue_key = issue_key

    def _queue(self, query: Any) -> Any:
        from chalicelib.entrypoints.responses import error

        name = str((query or {}).get("queue") or "send")
        if name not in self.queues:
            return error(400, ConnectorCode.INVALID_REQUEST, "`queue` must be `send` or `forward`", "queue")
        queue, setting = self.queues[name]
        if queue is None:
            return error(404, "not_found", f"no {name} dead-letter queue is configured ({setting})")
        return queue

    def dlq_show(self, query: Any = None) -> Any:
        from chalicelib.entrypoints.responses import ApiResult

        queue = self._queue(query)
        return ApiResult(200, queue.show()) if isinstance(queue, DeadLetters) else queue

    def dlq_redrive(self, query: Any) -> Any:
        from chalicelib.entrypoints.responses import ApiResult, error

        queue = self._queue(query)
        if not isinstance(queue, DeadLetters):
            return queue
        limit_text = str(query.get("limit") or "100")
        if not limit_text.isascii() or not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
            return error(400, ConnectorCode.INVALID_REQUEST, "`limit` must be an integer from 1 to 1000", "limit")
        dry_run = str(query.get("dry_run") or "false").lower() in ("true", "1", "yes")
        return ApiResult(200, queue.redrive(int(limit_text), dry_run))

    def create_api_key(self, name: str, role: str = "admin", connections: Sequence[str] = ()) -> Any:
        """`?role=send|read|admin` (admin when not given: who calls this is an admin), `?connections=a,b`."""
        from chalicelib.entrypoints.api_keys import KeySetupError
        from chalicelib.entrypoints.responses import ApiResult, error

        try:
            key = self.issue_key(name, role, connections)
        except KeySetupError as exc:
            return error(400, ConnectorCode.INVALID_REQUEST, str(exc), "role" if "role" in str(exc) else "name")
        note = "shown once; only its hash is stored"
        return ApiResult(201, {"name": name, "role": role, "api_key": key, "note": note})

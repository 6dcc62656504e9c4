"""SQS events as Lambda delivers them. Chalice's own generator gives every record the
same messageId, which would hide redelivery bugs; this one does not."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:twilio-connector-test-send"


@dataclass
class Delivery:
    body: Any
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    receive_count: int = 1
    attributes: dict[str, str] = field(default_factory=dict)

    def redelivered(self) -> Delivery:
        """The same SQS message again, as SQS hands it out after a visibility timeout."""
        return Delivery(self.body, self.message_id, self.receive_count + 1, dict(self.attributes))

    def record(self) -> dict[str, Any]:
        body = self.body if isinstance(self.body, str) else json.dumps(self.body)
        return {
            "messageId": self.message_id,
            "receiptHandle": f"rh-{self.message_id}-{self.receive_count}",
            "body": body,
            "attributes": {
                "ApproximateReceiveCount": str(self.receive_count),
                "SentTimestamp": "1795000000000",
                "SenderId": "AIDAEXAMPLE",
                "ApproximateFirstReceiveTimestamp": "1795000000001",
            },
            "messageAttributes": {
                k: {"stringValue": v, "dataType": "String", "stringListValues": [], "binaryListValues": []}
                for k, v in self.attributes.items()
            },
            "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": QUEUE_ARN,
            "awsRegion": "us-east-1",
        }


def sqs_event(*deliveries: Delivery) -> dict[str, Any]:
    return {"Records": [d.record() for d in deliveries]}


class LambdaContext:
    function_name = "twilio-connector-test-send"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:twilio-connector-test-send"
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 60000

"""Step Functions adapter: one poll execution per send batch, with a deterministic name."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError


class WorkflowError(Exception):
    """Step Functions did not take the execution."""


@dataclass(frozen=True)
class PollTarget:
    id: str
    sid: str


def poll_input(targets: Sequence[PollTarget], retry_interval_ms: int, retry_attempts: int) -> dict[str, Any]:
    ordered = sorted(targets, key=lambda t: t.id)
    return {
        "messages": [{"id": t.id, "sid": t.sid} for t in ordered],
        "retry_interval_seconds": math.ceil(retry_interval_ms / 1000),
        "retry_attempts": retry_attempts,
        "attempt": 0,
        "remaining": len(ordered),
    }


def execution_name(targets: Sequence[PollTarget]) -> str:
    """The same batch always gets the same name, so a redelivered batch cannot start a second loop."""
    digest = hashlib.sha256(",".join(sorted(t.id for t in targets)).encode()).hexdigest()
    return f"poll-{digest[:40]}"


class PollWorkflow:
    def __init__(self, client: Any, state_machine_arn: str, retry_interval_ms: int, retry_attempts: int) -> None:
        self.client = client
        self.state_machine_arn = state_machine_arn
        self.retry_interval_ms = retry_interval_ms
        self.retry_attempts = retry_attempts

    def start(self, targets: Sequence[PollTarget]) -> str | None:
        if not targets:
            return None
        name = execution_name(targets)
        payload = json.dumps(poll_input(targets, self.retry_interval_ms, self.retry_attempts))
        try:
            result = self.client.start_execution(stateMachineArn=self.state_machine_arn, name=name, input=payload)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
                return None  # this batch is already being followed
            raise WorkflowError(f"could not start poll execution {name}: {exc}") from exc
        except BotoCoreError as exc:
            raise WorkflowError(f"could not start poll execution {name}: {exc}") from exc
        return str(result["executionArn"])

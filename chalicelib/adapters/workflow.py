"""Step Functions adapter: one poll execution per time window, named after it.

Every message sent in a window (POLL_WINDOW_SECONDS) is followed by the window's one execution, which
finds them through the messages table's sparse `by_poll_window` index. So polling costs the same per
message whether messages came a million at once or one every few seconds.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain.polling import PollPlan, WorkflowError, execution_name, poll_input


class PollWorkflow:
    def __init__(
        self, client: Any, state_machine_arn: str, retry_interval_ms: int, retry_attempts: int, window_seconds: int = 60
    ) -> None:
        self.client = client
        self.state_machine_arn = state_machine_arn
        self.retry_interval_ms = retry_interval_ms
        self.retry_attempts = retry_attempts
        self.window_seconds = window_seconds

    def start(
        self, window: int, now: datetime, connection: str | None = None, plan: PollPlan | None = None
    ) -> str | None:
        """Follow `connection`'s messages sent in `window`, as its plan says."""
        name = execution_name(window, connection)
        interval, attempts = (
            (plan.interval_ms, plan.attempts) if plan else (self.retry_interval_ms, self.retry_attempts)
        )
        state = poll_input(window, self.window_seconds, now, interval, attempts, connection)
        try:
            result = self.client.start_execution(
                stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(state)
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
                return None  # this window is already being followed
            raise WorkflowError(f"could not start poll execution {name}: {exc}") from exc
        except BotoCoreError as exc:
            raise WorkflowError(f"could not start poll execution {name}: {exc}") from exc
        return str(result["executionArn"])

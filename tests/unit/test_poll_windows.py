"""One poll execution per time window: its name, when it first polls, and who starts it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.workflow import PollWorkflow
from chalicelib.domain.polling import execution_name, poll_input
from chalicelib.settings import Settings

WINDOW = 1_795_000_080  # a multiple of 120


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def test_a_message_belongs_to_the_window_it_was_sent_in() -> None:
    settings = Settings(poll_window_seconds=120)
    assert settings.poll_window(at(WINDOW)) == WINDOW
    assert settings.poll_window(at(WINDOW + 119.9)) == WINDOW
    assert settings.poll_window(at(WINDOW + 120)) == WINDOW + 120


def test_the_first_poll_comes_one_interval_after_the_window_closes() -> None:
    early = poll_input(WINDOW, 120, at(WINDOW + 5), retry_interval_ms=10_000, retry_attempts=10)
    late = poll_input(WINDOW, 120, at(WINDOW + 119), retry_interval_ms=10_000, retry_attempts=10)
    assert (early["wait_seconds"], late["wait_seconds"]) == (125, 11)
    assert early["retry_interval_seconds"] == 10 and early["retry_attempts"] == 10 and early["attempt"] == 0


class Sfn:
    def __init__(self) -> None:
        self.names: list[str] = []

    def start_execution(self, **kw: Any) -> dict[str, str]:
        if kw["name"] in self.names:
            raise ClientError({"Error": {"Code": "ExecutionAlreadyExists", "Message": "exists"}}, "StartExecution")
        self.names.append(kw["name"])
        return {"executionArn": f"arn:exec:{kw['name']}"}


def test_every_batch_in_a_window_names_the_same_execution_and_only_the_first_starts_it() -> None:
    sfn = Sfn()
    workflow = PollWorkflow(sfn, "arn:sm", 10_000, 10, window_seconds=120)
    assert workflow.start(WINDOW, at(WINDOW + 1)) == f"arn:exec:{execution_name(WINDOW)}"
    assert workflow.start(WINDOW, at(WINDOW + 50)) is None  # a later batch of the same window
    assert workflow.start(WINDOW + 120, at(WINDOW + 121)) is not None
    assert sfn.names == ["poll-window-1795000080", "poll-window-1795000200"]

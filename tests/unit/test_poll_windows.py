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


def test_the_first_poll_comes_one_interval_after_the_window_closes_staggered_within_another() -> None:
    early = poll_input(WINDOW, 120, at(WINDOW + 5), retry_interval_ms=10_000, retry_attempts=10)
    late = poll_input(WINDOW, 120, at(WINDOW + 119), retry_interval_ms=10_000, retry_attempts=10)
    stagger = early["wait_seconds"] - 125
    assert 0 <= stagger < 10 and late["wait_seconds"] == 11 + stagger  # one execution: one stagger
    assert early["retry_interval_seconds"] == 10 and early["retry_attempts"] == 10 and early["attempt"] == 0
    # each connection's execution of a window wakes at its own second, not all on one boundary
    connections = [f"c{n}" for n in range(20)]
    wakes = {poll_input(WINDOW, 120, at(WINDOW + 5), 10_000, 10, connection=c)["wait_seconds"] for c in connections}
    assert len(wakes) >= 5 and all(125 <= w < 135 for w in wakes)


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


def test_a_poll_short_of_time_hands_back_a_cursor_and_the_attempt_goes_on_from_there() -> None:
    """A window bigger than one run can poll is never cut short by the Lambda timeout (its Catch would
    finalize the window): the run returns a cursor, the state machine loops straight back, the attempt
    counts once."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import timedelta

    from chalicelib.domain.ledger import SentMessage
    from chalicelib.domain.polling import PollState
    from chalicelib.domain.twilio import TwilioCredentials, TwilioMessage
    from chalicelib.settings import load_settings
    from chalicelib.usecases.tracking import TrackingService
    from tests.fakes import InMemoryLedger, InMemoryOptOuts, StaticCredentials

    ledger, now = InMemoryLedger(), at(WINDOW + 5)
    for n in range(7):
        ledger.claim(f"m{n}", {"to": "+15551234567"}, "t", now, timedelta(seconds=60))
        ledger.record_sent(f"m{n}", SentMessage(f"SM{n:032d}", "sent", poll_window=WINDOW), now)

    class Twilio:
        def __init__(self) -> None:
            self.fetched: list[str] = []

        def fetch_message(self, credentials: Any, sid: str) -> TwilioMessage:
            self.fetched.append(sid)
            status = "delivered" if sid.endswith(("1", "3")) else "sent"
            return TwilioMessage(
                sid, status, "+15551234567", None, "hi", 1, 0, None, None, None, None, None, None, None
            )

    twilio = Twilio()
    settings = load_settings({"TWILIO_SECRET_ID": "x", "POLL_PAGE_SIZE": "3"})
    creds = StaticCredentials(TwilioCredentials("AC" + "0" * 32, "t"))
    tracking = TrackingService(settings, ledger, InMemoryOptOuts(), twilio, creds, lambda: now, ThreadPoolExecutor(2))  # type: ignore[arg-type]
    start = PollState(WINDOW, 1, 10, 3)
    first = tracking.poll(start, seconds_left=lambda: 5.0)  # short of time after its first page
    assert first.cursor is not None and first.attempt == 0 and len(twilio.fetched) == 3
    assert PollState.from_state(first.to_state()) == first  # as the state machine carries it
    second = tracking.poll(first, seconds_left=lambda: 50.0)
    assert second.cursor is None and second.attempt == 1 and len(twilio.fetched) == 7  # each message once
    assert second.remaining == 5 and second.wait_seconds == 10 and second.open_so_far == 0
    assert ledger.get("m1").status == "delivered" and ledger.get("m1").poll_attempts == 1  # type: ignore[union-attr]

"""The poll loop as the use cases know it: one execution per time window and connection, its state as the
state machine carries it, and the plan it follows (a connection's Retry Interval and Retry Attempts)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


class WorkflowError(Exception):
    """Step Functions did not take the execution."""


@dataclass(frozen=True)
class PollState:
    """The poll loop's state as the state machine carries it from step to step (the ASL reads
    `wait_seconds`, `remaining`, `attempt` and `retry_attempts`; a Catch adds `error`)."""

    window: int
    wait_seconds: int
    retry_interval_seconds: int
    retry_attempts: int
    attempt: int = 0
    remaining: int = -1  # not polled yet
    error: Any = None
    connection: str | None = None  # the connection whose messages it follows (None: every one, as before)
    cursor: str | None = None  # where an attempt cut short by its time budget goes on (the ASL loops on it)
    open_so_far: int = 0  # what the attempt's earlier runs found still open

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PollState:
        return cls(
            window=int(state["window"]),
            wait_seconds=int(state.get("wait_seconds") or 1),
            retry_interval_seconds=int(state.get("retry_interval_seconds") or 1),
            retry_attempts=int(state.get("retry_attempts") or 0),
            attempt=int(state.get("attempt") or 0),
            remaining=int(state.get("remaining", -1)),
            error=state.get("error"),
            connection=state.get("connection") or None,
            cursor=state.get("cursor") or None,
            open_so_far=int(state.get("open_so_far") or 0),
        )

    def follows(self, connection: str | None) -> bool:
        return self.connection is None or self.connection == (connection or "")

    def to_state(self) -> dict[str, Any]:
        state = dataclasses.asdict(self)
        for optional in ("error", "connection", "cursor"):
            if state[optional] is None:
                del state[optional]
        return state


def poll_input(
    window: int,
    window_seconds: int,
    now: datetime,
    retry_interval_ms: int,
    retry_attempts: int,
    connection: str | None = None,
) -> dict[str, Any]:
    """The first poll comes one retry interval after the window closes: every message sent in it is in."""
    interval = max(1, math.ceil(retry_interval_ms / 1000))
    closes_in = window + window_seconds - now.timestamp()
    # staggered within one interval, so every connection's execution does not wake on the same boundary
    stagger = int(hashlib.sha256(execution_name(window, connection).encode()).hexdigest(), 16) % interval
    wait = max(1, math.ceil(closes_in) + interval + stagger)
    return PollState(window, wait, interval, retry_attempts, connection=connection).to_state()


def execution_name(window: int, connection: str | None = None) -> str:
    """One execution per window and connection: every batch sent in it names the same one, so only the
    first starts it. Each connection polls at its own Retry Interval, as Unica's connector does."""
    if connection is None:
        return f"poll-window-{window}"
    return f"poll-window-{window}-{hashlib.sha256(connection.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class PollPlan:
    """How a connection's messages are followed: a poll every `interval_ms`, at most `attempts` polls."""

    interval_ms: int
    attempts: int


class PollStarter(Protocol):
    """Starts the execution that follows a window's messages of one connection (Step Functions when deployed)."""

    def start(
        self, window: int, now: datetime, connection: str | None = None, plan: PollPlan | None = None
    ) -> str | None: ...


SHARD_SEPARATOR = "/"  # a cursor across shards: "<shard>/<last id or nothing>"; message ids have no "/"


def shard_key(window: int, shard: int) -> int | float:
    """A window's shard s is keyed window + s/100: still a Number, so the index's schema is unchanged (a
    GSI's key cannot change in one deploy), and shard 0 is the window itself, as before shards."""
    return window if shard == 0 else window + shard / 100


def shard_of(message_id: str, shards: int) -> int:
    """Which of `shards` index keys or counter items a message's writes go to: the same every time."""
    return zlib.crc32(message_id.encode()) % shards


def poll_key(window: int, message_id: str, shards: int) -> int | float:
    """The `by_poll_window` key a message is written under. One key per window is one DynamoDB partition
    (~1,000 writes/s; each message writes its key twice): POLL_WINDOW_SHARDS spreads a window's messages."""
    return shard_key(window, shard_of(message_id, shards))

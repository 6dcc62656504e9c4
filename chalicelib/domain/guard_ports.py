"""What the guardrails need of storage (adapters/guard_store.py): counts and held messages. Apart from
ports.py so a deployment without guardrails does not import it on the send path's cold start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class Held:
    """A held message as the release function reads it from the index."""

    message_id: str
    held_key: str
    release_at: str
    reason: str
    request: str  # the send request as it was queued
    segments: int


class GuardStore(Protocol):
    """The guardrails' counts and held messages (adapters/guard_store.py)."""

    shards: int

    def count_recipient(self, connection: str, to: str, message_id: str, cap: Any, now: datetime) -> str: ...

    def charge(
        self, connection: str, message_id: str, token: str, segments: int, limit: int, now: datetime
    ) -> bool: ...

    def spend(self, connection: str, now: datetime) -> tuple[int, int]: ...

    def add_segments(self, connection: str, segments: int, now: datetime, limit: int) -> tuple[int, int]: ...

    def hold(
        self, message_id: str, token: str, hold: Mapping[str, Any], request: Any, now: datetime
    ) -> Mapping[str, Any] | None: ...

    def note_retry(self, message_id: str) -> int: ...

    def due(self, held_key: str, until: datetime, limit: int = 100) -> list[Held]: ...

    def bring_forward(self, held: Held, now: datetime) -> bool: ...

    def unhold(self, held: Held, now: datetime) -> bool: ...

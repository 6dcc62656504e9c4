"""The ports the use cases speak through, and what crosses them: the stores (opt-outs, templates, senders'
queues, daily counters), credentials, and the errors an adapter may raise instead of its library's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from chalicelib.domain.connection import ConnectionSettings
from chalicelib.domain.pacing import Reservation
from chalicelib.domain.templates import Template
from chalicelib.domain.twilio import TwilioCredentials


class OptOutStore(Protocol):
    def is_opted_out(self, phone: str, senders: Sequence[str]) -> bool: ...

    def opt_out(self, phone: str, sender: str, now: datetime) -> None: ...

    def opt_in(self, phone: str, sender: str) -> None: ...


class TemplateStore(Protocol):
    def get(self, name: str) -> Template | None: ...

    def put(self, template: Template) -> None: ...


class SenderQueues(Protocol):
    def reserve(self, sender: str, segments: int, rate: float, validity_seconds: float, now: datetime) -> Reservation:
        """Take a message's place in the sender's queue at Twilio if it fits within its validity."""
        ...


class StatsStore(Protocol):
    def count_batch(self, batch: str, counts: Mapping[str, Mapping[str, int]]) -> None:
        """Set what one outbox batch (named by its first stream record) counted, per day and counter
        (`status#<s>`, `code#<n>`, `conn#<name>`, `latency#<s>`, `event#<name>`, `writeback#<connection>:<why>`):
        the day's counters change by the difference from what this batch counted before, so a retried batch
        never counts twice. Raises StoreError when it cannot."""
        ...

    def totals(self, days: Sequence[str]) -> dict[str, Any]: ...


# Seconds from accepted to delivered, counted in these buckets (`latency#<upper bound>`): the median comes from them.
LATENCY_BUCKETS = (5, 10, 30, 60, 120, 300, 600, 1800, 3600, 86400)


def latency_bucket(seconds: float) -> str:
    return f"latency#{next((b for b in LATENCY_BUCKETS if seconds <= b), 'more')}"


class StoreError(Exception):
    """DynamoDB could not answer (throttling, outage, misconfiguration); try again later."""


class CredentialsUnavailable(Exception):
    """Secrets Manager could not give us the credentials; try again later."""


class Credentials(Protocol):
    """Where a connection's Twilio credentials and signing key come from."""

    def for_connection(self, connection: ConnectionSettings) -> TwilioCredentials: ...

    def signing_key(self, connection: ConnectionSettings) -> str | None: ...

    def write_back_secret(self, connection: ConnectionSettings) -> str | None: ...

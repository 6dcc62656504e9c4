"""What a connection is: a Twilio account as the platforms configure "a Twilio connection", with where its
platform hears what became of each message (its write-back). Deploy-time ones come from the environment
(settings.py), managed ones from the connections table (adapters/connections.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported only where a connection sets guardrails: off the send path's cold start
    from chalicelib.domain.guardrails import Guardrails

DEFAULT_CONNECTION = "default"


@dataclass(frozen=True)
class WriteBack:
    """Where and how a connection tells its platform what became of a message (adapters/writeback/).
    Its secret (a Swrve API key, a CI360 client secret) is in the connection's secret, never here."""

    format: str  # json | twilio | swrve | tealium | ci360
    url: str | None = None  # the platform's endpoint (json / twilio: the request's status_callback)
    options: Mapping[str, str] = field(default_factory=dict)  # e.g. Tealium's account, profile, datasource
    # the platform's attribute -> the request's metadata key it is read from (Tealium's known visitor
    # attributes such as email_address_hash, CI360's identity such as customer_id)
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ConnectionSettings:
    """One Twilio account the connector can send through, as the platforms configure "a Twilio connection"."""

    name: str
    secret_id: str
    account_sid: str | None = None
    from_numbers: tuple[str, ...] = ()
    messaging_service_sid: str | None = None
    retry_interval_ms: int | None = None  # None: RETRY_INTERVAL_MS
    retry_attempts: int | None = None  # None: RETRY_ATTEMPTS
    sender_rates: Mapping[str, float] = field(default_factory=dict)  # on top of SENDER_RATES
    write_back: WriteBack | None = None
    dedup_seconds: int | None = None  # the front door's content window for it; None: FACADE_DEDUP_SECONDS
    is_default: bool = False
    managed: bool = False  # made with PUT /connections (a table item), else deploy-time configuration
    guardrails: Guardrails | None = None  # quiet hours, caps, spend guard, error policy (README, "Guardrails")


def pick(connections: Mapping[str, ConnectionSettings], name: str | None) -> ConnectionSettings | None:
    """The named connection; without a name, the one marked default, else the one named `default`."""
    if name:
        return connections.get(name)
    marked = next((c for c in connections.values() if c.is_default), None)
    return marked or connections.get(DEFAULT_CONNECTION)


def require_connection(connections: Mapping[str, ConnectionSettings], name: str | None) -> ConnectionSettings:
    """The named Twilio connection (the default one when no name is given), or the 400 that names it."""
    connection = pick(connections, name)
    if connection is None:
        # here, not at the top: settings.py imports this module and every handler imports settings
        from chalicelib.domain.models import ValidationError
        from chalicelib.domain.rules import ConnectorCode

        known = ", ".join(sorted(connections)) or "none configured"
        raise ValidationError(
            "connection", f"unknown connection `{name}` (known: {known})", ConnectorCode.UNKNOWN_CONNECTION
        )
    return connection

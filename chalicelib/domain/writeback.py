"""Write-back as the forward use case and the platforms' formats agree on it: the request a format builds,
what it may ask of the forward (a secret, a front-door account, its turn at a rate-limited platform, a token
exchange), and how a write-back fails. One module per platform implements `WriteBackFormat`
(adapters/writeback/); the registry there names them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from chalicelib.domain.connection import ConnectionSettings, WriteBack

# Why a write-back was not delivered, as the record's `write_back_status` and the status page count it.
CREDENTIALS_REFUSED, REFUSED, NOT_DELIVERABLE = "credentials_refused", "refused", "not_deliverable"


@dataclass(frozen=True)
class Request:
    url: str
    body: str
    headers: dict[str, str] = field(default_factory=dict)


class NotDeliverable(Exception):
    """The event cannot be told to this platform (no identity for the recipient, say): never retried."""


class CredentialsRefused(NotDeliverable):
    """The platform refused the connector's credentials: never retried, counted and shown as such."""


class ForwardFailed(Exception):
    """Not delivered now, maybe later: EventBridge's Lambda retries re-deliver the event."""


class FrontDoorAccount(Protocol):
    """A front-door account as a Twilio-format write-back signs with it."""

    @property
    def account_sid(self) -> str: ...

    @property
    def auth_token(self) -> str: ...


@dataclass(frozen=True)
class Context:
    """What a format may ask of the forward for one event. `configured` is the connection's write-back when
    it is this format's (a request that chose another format has none)."""

    connection: ConnectionSettings | None
    configured: WriteBack | None
    signing_key: str
    now: float | None
    secret: Callable[[], str]  # the connection's write-back secret; ForwardFailed when it has none
    account: Callable[[], FrontDoorAccount]  # the front-door account that signs Twilio's forms
    wait_for_turn: Callable[[str, float], None]  # across every forward, at most `rate` requests/s to `key`
    exchange: Callable[[Request], tuple[int, Any]]  # POST through the forward's checks: (status, JSON)


@dataclass(frozen=True)
class Check:
    """How a platform's credentials are checked without an event: the request `POST /connection/test` makes."""

    method: str  # GET | POST
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None


class WriteBackFormat(Protocol):
    """One platform's language. `request` builds what its platform expects for one event (None: nothing to
    tell it); the rest let the forward, the connection check and the connections API treat it alike."""

    name: str
    credentials_hint: str  # what to check when the platform answers 401/403

    def request(self, detail_type: str, detail: Mapping[str, Any], context: Context) -> Request | None: ...

    def forget_credentials(self, connection: ConnectionSettings | None) -> bool:
        """Drop any credentials it holds for this connection (a token revoked early); True if it held one."""
        ...

    def check(self, config: WriteBack, secret: str) -> Check | None: ...

    def needs_secret(self, options: Mapping[str, str]) -> bool: ...

    def validate(self, options: Mapping[str, str], attributes: Mapping[str, str], allow_local: bool) -> None:
        """Refuse (ValidationError naming the field) what the platform would not accept."""
        ...

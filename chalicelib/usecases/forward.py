"""Telling each event's platform what became of its message, in the platform's own format (one per module,
adapters/writeback/; the registry names them). Runs in the outbox function as each change arrives; a write-back
the platform does not take now waits in the forward queue, which the forward function reads (usecases/outbox.py).

Nothing a platform refuses is retried or quiet: a refusal is counted (metrics, the status page) and noted on
the message. Before any request leaves, its target is checked where it goes (a public name may resolve to a
private address), and no redirect is followed (a 3xx to a private address would skip that check)."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from chalicelib.domain import rules
from chalicelib.domain.connection import ConnectionSettings
from chalicelib.domain.events import STATUS_CHANGED, write_back_of
from chalicelib.domain.ledger import MessageLedger
from chalicelib.domain.ports import SenderQueues
from chalicelib.domain.writeback import (
    CREDENTIALS_REFUSED,
    NOT_DELIVERABLE,
    REFUSED,
    Context,
    CredentialsRefused,
    ForwardFailed,
    FrontDoorAccount,
    NotDeliverable,
    Request,
    WriteBackFormat,
)
from chalicelib.observability import logger, metrics

PACING_MAX_WAIT_S = 5.0  # a forward waits this long at most for its turn at a rate-limited platform
CHECKED = ("ci360", "tealium")  # the formats POST /connection/test checks the credentials of


class FrontDoorAccounts(Protocol):
    """The front door's accounts: their tokens sign Twilio-format write-backs."""

    def get(self, account_sid: str) -> FrontDoorAccount | None: ...

    def for_connection(self, connection: str) -> FrontDoorAccount | None: ...


def resolve(host: str) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)]


class Forwarder:
    def __init__(
        self,
        formats: Mapping[str, WriteBackFormat],
        session: requests.Session,
        signing_key: str,
        connections: Mapping[str, ConnectionSettings],
        secrets: Callable[[ConnectionSettings], str | None],
        accounts: FrontDoorAccounts | None,
        ledger: MessageLedger,
        pace: SenderQueues,
        clock: Callable[[], datetime],
        allow_local: bool = False,
        resolver: Callable[[str], list[str]] = resolve,
        timeout: float = 5.0,
    ) -> None:
        self.formats = formats
        self.session = session
        self.signing_key = signing_key  # signs the connector's JSON (callback_signing_key)
        self.connections = connections
        self.secrets = secrets  # a connection's write-back secret (Swrve API key, CI360 client secret)
        self.accounts = accounts
        self.ledger = ledger  # where a refusal is noted on the message
        self.pace = pace  # across every forward invocation, a rate-limited platform's line
        self.clock = clock
        self.allow_local = allow_local
        self.resolver = resolver
        self.timeout = timeout

    def forward(self, detail: Mapping[str, Any], now: float | None = None, detail_type: str = STATUS_CHANGED) -> int:
        """Tell the event's platform; the platform's answer (0: nothing was sent)."""
        name = write_back_of(detail) or "json"  # events published before `write_back` was set: the JSON
        found = self.formats.get(name)
        if found is None:
            self._not_delivered(detail, name, f"no write-back format `{name}`", NOT_DELIVERABLE)
            return 0
        fmt: WriteBackFormat = found
        connection = self.connections.get(str(detail["connection"])) if detail.get("connection") else None
        try:
            status = self._send(fmt, detail_type, detail, connection, now)
            if status in (401, 403) and fmt.forget_credentials(connection):  # revoked early: one try anew
                status = self._send(fmt, detail_type, detail, connection, now)
        except NotDeliverable as exc:
            why = CREDENTIALS_REFUSED if isinstance(exc, CredentialsRefused) else NOT_DELIVERABLE
            self._not_delivered(detail, name, str(exc), why)
            return 0
        if status in (401, 403):
            checked = " (POST /connection/test checks them)" if name in CHECKED else ""
            reason = f"{name} refused the connector's credentials ({status}): {fmt.credentials_hint}{checked}"
            self._not_delivered(detail, name, reason, CREDENTIALS_REFUSED)
            return status  # retrying would be refused alike: said loudly instead
        if 300 <= status < 400 or (400 <= status < 500 and status != 429):
            why = " (redirects are not followed: configure the final URL)" if status < 400 else ""
            self._not_delivered(detail, name, f"{name} write-back answered {status}{why}", REFUSED)
            return status  # its answer will not change: not retried
        if status >= 500 or status == 429:
            raise ForwardFailed(f"{name} write-back answered {status}")
        if status:
            metrics.add_metric(name="WriteBacksDelivered", unit="Count", value=1)
        return status

    def _send(
        self,
        fmt: WriteBackFormat,
        detail_type: str,
        detail: Mapping[str, Any],
        connection: ConnectionSettings | None,
        now: float | None,
    ) -> int:
        request = fmt.request(detail_type, detail, self._context(fmt, detail, connection, now))
        return self._post(fmt.name, request) if request is not None else 0

    def _context(
        self, fmt: WriteBackFormat, detail: Mapping[str, Any], connection: ConnectionSettings | None, now: float | None
    ) -> Context:
        configured = connection.write_back if connection and connection.write_back else None
        if configured is not None and configured.format != fmt.name:
            configured = None  # the request chose another format: its own status_callback only

        def secret() -> str:
            value = self.secrets(connection) if connection else None
            if not value:
                where = connection.name if connection else "the message's connection"
                raise ForwardFailed(f"{where} has no write-back secret: the {fmt.name} write-back waits")
            return value

        return Context(
            connection=connection,
            configured=configured,
            signing_key=self.signing_key,
            now=now,
            secret=secret,
            account=lambda: self._account(detail, connection),
            wait_for_turn=self._wait_for_turn,
            exchange=lambda request: self._exchange(fmt.name, request),
        )

    def _post(self, name: str, request: Request) -> int:
        """The platform's answer; 0 when the target is refused (never retried: it will not become allowed)."""
        refusal = self._refusal(request.url)
        if refusal is not None:
            metrics.add_metric(name="ForwardRefused", unit="Count", value=1)
            logger.warning("write-back target refused", extra={"format": name, "reason": refusal})
            return 0
        try:
            return int(self._send_request(request).status_code)
        except requests.RequestException as exc:
            raise ForwardFailed(f"{name} write-back unreachable: {type(exc).__name__}") from exc

    def _exchange(self, name: str, request: Request) -> tuple[int, Any]:
        """A format's own call before its event (Tealium's token exchange), through the same checks."""
        refusal = self._refusal(request.url)
        if refusal is not None:
            raise ForwardFailed(f"{name}'s exchange URL {refusal}")
        try:
            response = self._send_request(request)
            return int(response.status_code), response.json() if response.status_code == 200 else None
        except (requests.RequestException, ValueError) as exc:
            raise ForwardFailed(f"{name}'s exchange failed: {type(exc).__name__}") from exc

    def _send_request(self, request: Request) -> requests.Response:
        """No redirect is followed: a 3xx to a private address would skip the address check."""
        return self.session.post(
            request.url, data=request.body, headers=request.headers, timeout=self.timeout, allow_redirects=False
        )

    def _refusal(self, url: str) -> str | None:
        """Checked again where the request goes: a public name may resolve to a private address."""
        refusal = rules.callback_target_refusal(url, self.allow_local)
        host = urlsplit(url).hostname or ""
        if refusal is not None or not host:
            return refusal or "has no host"
        try:
            addresses = self.resolver(host)
        except OSError:
            return None  # unresolvable now: the POST fails and EventBridge retries
        for address in addresses:
            refused = rules.address_refusal(ipaddress.ip_address(address.split("%")[0]), self.allow_local)
            if refused:
                return refused
        return None

    def _wait_for_turn(self, key: str, rate: float) -> None:
        """Across every forward invocation, no more than `rate` requests a second to one platform account."""
        place = self.pace.reserve(key, 1, rate, PACING_MAX_WAIT_S, self.clock())
        if place.next_free is None:  # more than a few seconds of events ahead: Lambda's retry comes later
            raise ForwardFailed(f"{key} is at its rate of {rate:.0f} requests/s; retried later")
        if place.wait_seconds > 0:
            time.sleep(place.wait_seconds)

    def _account(self, detail: Mapping[str, Any], connection: ConnectionSettings | None) -> FrontDoorAccount:
        account = None
        if self.accounts is not None:
            if detail.get("account_sid"):
                account = self.accounts.get(str(detail["account_sid"]))
            elif connection is not None:
                account = self.accounts.for_connection(connection.name)
        if account is None:
            raise ForwardFailed("no front-door account to sign with: issue one (PUT /connections/{name} facade)")
        return account

    def _not_delivered(self, detail: Mapping[str, Any], name: str, reason: str, why: str) -> None:
        """Never retried, never quiet: counted (metrics and the status page) and noted on the message."""
        metrics.add_metric(name="WriteBackRefused", unit="Count", value=1)
        if why == CREDENTIALS_REFUSED:
            metrics.add_metric(name="WriteBackCredentialsRefused", unit="Count", value=1)
        logger.warning(
            "write-back not delivered", extra={"message_id": detail.get("id"), "format": name, "reason": reason}
        )
        now = self.clock()  # the note is what the status page counts (domain/outbox.py), per connection and why
        message_id = detail.get("in_reply_to") or detail.get("id")
        if message_id:
            self.ledger.note_write_back_failure(str(message_id), reason, now, why)

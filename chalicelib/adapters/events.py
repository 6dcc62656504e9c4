"""Status events to EventBridge, so a CDP can trigger on "undelivered" or "opted out",
and their forwarding to a request's own `status_callback`, signed with the connector's HMAC.

Publishing never fails the caller: a lost event is logged and counted, while the
message record (the source of truth) is already written.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import requests
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain import rules
from chalicelib.domain.connection import ConnectionSettings, WriteBack
from chalicelib.domain.ledger import MessageRecord
from chalicelib.observability import logger, metrics

if TYPE_CHECKING:
    from datetime import datetime

    from chalicelib.adapters import writeback
    from chalicelib.adapters.facade_accounts import FacadeAccount, FacadeAccounts
    from chalicelib.domain.ledger import MessageLedger
    from chalicelib.domain.ports import SenderQueues, StatsStore

SOURCE = "twilio.connector"
STATUS_CHANGED = "Message Status Changed"
OPTED_OUT = "Recipient Opted Out"
OPTED_IN = "Recipient Opted In"
REPLY_RECEIVED = "Reply Received"
SIGNATURE_HEADER = "X-Connector-Signature"
PACING_MAX_WAIT_S = 5.0  # a forward waits this long at most for its turn at a rate-limited platform
TIMESTAMP_HEADER = "X-Connector-Timestamp"
# What of Twilio's incoming-message webhook a reply event keeps, so a `twilio` write-back relays it as Twilio
# sent it (twilio.com/docs/messaging/guides/webhook-request; media also as MediaUrl<N>, MediaContentType<N>).
INBOUND_FIELDS = (
    "FromCity", "FromState", "FromZip", "FromCountry", "ToCity", "ToState", "ToZip", "ToCountry",
    "NumMedia", "NumSegments",
)  # fmt: skip
# Added to events after the `json` write-back's body was fixed: kept out of it, so it stays as it was.
NOT_IN_JSON = ("sid", "raw_dlr_done_date", "twilio_fields")


def status_detail(record: MessageRecord) -> dict[str, Any]:
    latest = (record.events or [{}])[-1]
    detail = {
        "id": record.id,
        "status": record.status,
        "error_code": record.error_code,
        "error_message": record.error_message,
        "twilio_sid": record.twilio_sid,
        "to": record.to,
        "from": record.item.get("from"),
        "messaging_service_sid": record.messaging_service_sid,
        "source": latest.get("source"),
        "at": latest.get("at") or record.updated_at,
        "metadata": dict(record.metadata or {}),
        "sid": record.sid,  # the Twilio-shaped SID every Twilio-format callback of this message carries
    }
    if record.item.get("raw_dlr_done_date"):
        detail["raw_dlr_done_date"] = record.item["raw_dlr_done_date"]
    if record.status_callback:
        detail["status_callback"] = record.status_callback
    for name in ("account_sid", "created_as", "connection"):
        if record.item.get(name):
            detail[name] = record.item[name]
    write_back = write_back_of(record.item)
    if write_back:
        detail["write_back"] = write_back  # what the forward rule matches on
    return detail


def write_back_of(item: Mapping[str, Any]) -> str | None:
    """The format a message's events go out in: its own (or its connection's, set at accept), Twilio's for
    a front-door message with a StatusCallback, else the connector's JSON to a request's status_callback."""
    if item.get("write_back"):
        return str(item["write_back"])
    if item.get("callback_format") == "twilio":
        return "twilio"
    return "json" if item.get("status_callback") else None


class Events(Protocol):
    """Where status events go (EventBridge when deployed)."""

    def publish(self, detail_type: str, details: Sequence[Mapping[str, Any]]) -> None: ...


class EventPublisher:
    def __init__(self, client: Any, bus_name: str) -> None:
        self.client = client
        self.bus_name = bus_name

    def publish(self, detail_type: str, details: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(details), 10):  # PutEvents takes at most 10 entries
            chunk = details[start : start + 10]
            entries = [
                {"Source": SOURCE, "DetailType": detail_type, "Detail": json.dumps(d), "EventBusName": self.bus_name}
                for d in chunk
            ]
            try:
                result = self.client.put_events(Entries=entries)
                failed = int(result.get("FailedEntryCount") or 0)
            except (ClientError, BotoCoreError) as exc:
                failed = len(entries)
                logger.warning("status events not published", extra={"error": str(exc)})
            if failed:
                metrics.add_metric(name="EventsNotPublished", unit="Count", value=failed)
            metrics.add_metric(name="EventsPublished", unit="Count", value=len(entries) - failed)


def sign(key: str, timestamp: str, body: str) -> str:
    """`v1=` + hex HMAC-SHA256 of "<timestamp>.<body>": what a receiver recomputes to trust a forward."""
    return "v1=" + hmac.new(key.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()


class ForwardFailed(Exception):
    """The caller's status_callback did not take the event; EventBridge's Lambda retries re-deliver it."""


def resolve(host: str) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)]


class CallbackForwarder:
    """Tells each event's platform what became of its message, in the platform's format (writeback.py)."""

    def __init__(
        self,
        session: requests.Session,
        signing_key: str,
        timeout: float = 5.0,
        allow_local: bool = False,
        resolver: Callable[[str], list[str]] = resolve,
        accounts: FacadeAccounts | None = None,
        connections: Mapping[str, ConnectionSettings] | None = None,
        secrets: Callable[[ConnectionSettings], str | None] | None = None,
        ledger: MessageLedger | None = None,
        clock: Callable[[], datetime] | None = None,
        pace: SenderQueues | None = None,
        stats: StatsStore | None = None,
    ) -> None:
        self.pace = pace  # Tealium's collect API takes 100 requests/s: every forward takes its place in line
        self.session = session
        self.signing_key = signing_key
        self.timeout = timeout
        self.allow_local = allow_local
        self.resolver = resolver
        self.accounts = accounts  # the front door's accounts: their tokens sign Twilio-format callbacks
        self.connections = connections if connections is not None else {}
        self.secrets = secrets  # a connection's write-back secret (Swrve API key, CI360 client secret)
        self.ledger = ledger  # where a platform's refusal is noted on the message
        self.clock = clock
        self.stats = stats  # the status page counts refusals per connection and kind
        self._tokens: writeback.BearerTokens | None = None  # Tealium v3's bearer tokens, reused

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

    def forward(self, detail: Mapping[str, Any], now: float | None = None, detail_type: str = STATUS_CHANGED) -> int:
        from chalicelib.adapters import writeback  # the forward function's only: kept off the send path's cold start

        fmt = write_back_of(detail) or "json"  # events published before `write_back` was set: the JSON
        name = detail.get("connection")
        connection = self.connections.get(str(name)) if name else None
        try:
            request = self._request(fmt, detail_type, detail, connection, now)
            status = self._post(fmt, request) if request is not None else 0
            if status in (401, 403) and self._forget_token(connection):  # revoked early: one try with a new one
                request = self._request(fmt, detail_type, detail, connection, now)
                status = self._post(fmt, request) if request is not None else 0
        except writeback.NotDeliverable as exc:
            refused = isinstance(exc, writeback.CredentialsRefused)
            self._not_delivered(detail, fmt, str(exc), "credentials_refused" if refused else "not_deliverable")
            return 0
        if status in (401, 403):
            hint = CREDENTIALS_HINT.get(fmt, "check the receiver's credentials")
            checked = " (POST /connection/test checks them)" if fmt in ("ci360", "tealium") else ""
            reason = f"{fmt} refused the connector's credentials ({status}): {hint}{checked}"
            self._not_delivered(detail, fmt, reason, "credentials_refused")
            return status  # retrying would be refused alike: said loudly instead
        if 300 <= status < 400 or (400 <= status < 500 and status != 429):
            why = " (redirects are not followed: configure the final URL)" if status < 400 else ""
            self._not_delivered(detail, fmt, f"{fmt} write-back answered {status}{why}", "refused")
            return status  # its answer will not change: not retried
        if status >= 500 or status == 429:
            raise ForwardFailed(f"{fmt} write-back answered {status}")
        if status:
            metrics.add_metric(name="WriteBacksDelivered", unit="Count", value=1)
        return status

    def _post(self, fmt: str, request: writeback.Request) -> int:
        """The platform's answer; 0 when the target is refused (never retried: it will not become allowed)."""
        refusal = self._refusal(request.url)
        if refusal is not None:
            metrics.add_metric(name="ForwardRefused", unit="Count", value=1)
            logger.warning("write-back target refused", extra={"format": fmt, "reason": refusal})
            return 0
        try:  # no redirects: a 3xx to a private address would skip the address check above
            response = self.session.post(
                request.url, data=request.body, headers=request.headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            raise ForwardFailed(f"{fmt} write-back unreachable: {type(exc).__name__}") from exc
        return int(response.status_code)

    def _request(
        self,
        fmt: str,
        detail_type: str,
        detail: Mapping[str, Any],
        connection: ConnectionSettings | None,
        now: float | None,
    ) -> writeback.Request | None:
        from chalicelib.adapters import writeback

        configured = connection.write_back if connection and connection.write_back else None
        if configured is not None and configured.format != fmt:
            configured = None  # the request chose another format: its own status_callback only
        if fmt == "json":
            url = detail.get("status_callback") or (configured.url if configured else None)
            return self._json(detail_type, detail, str(url), now) if url else None
        if fmt == "twilio":
            url = detail.get("status_callback") if detail_type == STATUS_CHANGED else None
            if configured is not None:
                inbound = configured.options.get("inbound_url") if detail_type != STATUS_CHANGED else None
                url = url or inbound or configured.url
            if not url:
                return None
            account = self._facade_account(detail, connection)
            # the account the platform knows: a message sent through our own API names it too
            return writeback.twilio(
                detail_type, {**detail, "account_sid": account.account_sid}, str(url), account.auth_token
            )
        if configured is None or connection is None:
            raise writeback.NotDeliverable(f"the message's connection has no `{fmt}` write-back configured")
        if fmt == "tealium":
            request = writeback.tealium(detail_type, detail, configured)  # no identity: said before waiting
            self._wait_for_turn(f"tealium:{configured.options['account']}", writeback.TEALIUM_RATE)
            if not writeback.tealium_v3(configured):
                return request
            token = self._tealium_token(connection, configured)
            return writeback.Request(request.url, request.body, {**request.headers, "Authorization": f"Bearer {token}"})
        secret = self._secret(connection, fmt)
        if fmt == "swrve":
            return writeback.swrve(detail_type, detail, configured, secret)
        return writeback.ci360(detail_type, detail, configured, secret)

    def _secret(self, connection: ConnectionSettings, fmt: str) -> str:
        secret = self.secrets(connection) if self.secrets else None
        if not secret:
            raise ForwardFailed(f"connection {connection.name} has no write-back secret: the {fmt} write-back waits")
        return secret

    def _tealium_token(self, connection: ConnectionSettings, configured: WriteBack) -> str:
        """Tealium v3's bearer token: the API key exchanged once per ~25 minutes, not per event."""
        from chalicelib.adapters import writeback

        if self._tokens is None:
            self._tokens = writeback.BearerTokens()
        exchange = writeback.tealium_token_request(configured, self._secret(connection, "tealium"))

        def fetch() -> str:
            status, answer = self._exchange(exchange)
            if status in (400, 401, 403):
                raise writeback.CredentialsRefused(
                    f"tealium refused the connector's credentials ({status}): {CREDENTIALS_HINT['tealium']}"
                )
            token = answer.get("token") if isinstance(answer, dict) else None
            if status != 200 or not isinstance(token, str) or not token:
                raise ForwardFailed(f"tealium's token exchange answered {status}; retried later")
            return token

        return self._tokens.get((exchange.url, configured.options["username"]), fetch)

    def _exchange(self, request: writeback.Request) -> tuple[int, Any]:
        refusal = self._refusal(request.url)
        if refusal is not None:
            raise ForwardFailed(f"tealium's token exchange URL {refusal}")
        try:
            response = self.session.post(
                request.url, data=request.body, headers=request.headers, timeout=self.timeout, allow_redirects=False
            )
            return int(response.status_code), response.json() if response.status_code == 200 else None
        except (requests.RequestException, ValueError) as exc:
            raise ForwardFailed(f"tealium's token exchange failed: {type(exc).__name__}") from exc

    def _forget_token(self, connection: ConnectionSettings | None) -> bool:
        """Forget the bearer token this connection's write-back used, if it used one."""
        from chalicelib.adapters import writeback

        configured = connection.write_back if connection else None
        if self._tokens is None or configured is None or configured.format != "tealium":
            return False
        if not writeback.tealium_v3(configured):
            return False
        url = writeback.tealium_token_request(configured, "").url
        return self._tokens.forget((url, configured.options["username"]))

    def _wait_for_turn(self, key: str, rate: float) -> None:
        """Across every forward invocation, no more than `rate` requests a second to one platform account."""
        if self.pace is None or self.clock is None:
            return
        place = self.pace.reserve(key, 1, rate, PACING_MAX_WAIT_S, self.clock())
        if place.next_free is None:  # more than a few seconds of events ahead: Lambda's retry comes later
            raise ForwardFailed(f"{key} is at its rate of {rate:.0f} requests/s; retried later")
        if place.wait_seconds > 0:
            time.sleep(place.wait_seconds)

    def _json(self, detail_type: str, detail: Mapping[str, Any], url: str, now: float | None) -> writeback.Request:
        from chalicelib.adapters import writeback

        if not self.signing_key:
            raise ForwardFailed("no `callback_signing_key` in the Twilio secret: status_callback forwarding is off")
        hidden: tuple[str, ...] = (
            "status_callback",
            "write_back",
            "connection",
            "account_sid",
            "created_as",
            *NOT_IN_JSON,
        )
        if detail_type == OPTED_OUT:
            hidden += ("in_reply_to",)
        body = json.dumps({k: v for k, v in detail.items() if k not in hidden}, separators=(",", ":"))
        timestamp = str(int(now if now is not None else time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.signing_key, timestamp, body),
        }
        if detail_type != STATUS_CHANGED:
            headers["X-Connector-Event"] = detail_type
        return writeback.Request(url, body, headers)

    def _facade_account(self, detail: Mapping[str, Any], connection: ConnectionSettings | None) -> FacadeAccount:
        account = None
        if self.accounts is not None:
            if detail.get("account_sid"):
                account = self.accounts.get(str(detail["account_sid"]))
            elif connection is not None:
                account = self.accounts.for_connection(connection.name)
        if account is None:
            raise ForwardFailed("no front-door account to sign with: issue one (PUT /connections/{name} facade)")
        return account

    def _not_delivered(self, detail: Mapping[str, Any], fmt: str, reason: str, status: str) -> None:
        """Never retried, never quiet: counted (metrics and the status page) and noted on the message."""
        metrics.add_metric(name="WriteBackRefused", unit="Count", value=1)
        if status == "credentials_refused":
            metrics.add_metric(name="WriteBackCredentialsRefused", unit="Count", value=1)
        logger.warning(
            "write-back not delivered", extra={"message_id": detail.get("id"), "format": fmt, "reason": reason}
        )
        message_id = detail.get("in_reply_to") or detail.get("id")
        if self.clock is None:
            return
        now = self.clock()
        if self.stats is not None:
            self.stats.count(None, None, now, [f"writeback#{detail.get('connection') or '-'}:{status}"])
        if self.ledger is not None and message_id:
            self.ledger.note_write_back_failure(str(message_id), reason, now, status)


# What to do when a platform refuses the connector's credentials (401/403), per format.
CREDENTIALS_HINT = {
    "ci360": "check the connection's options.tenant and its client secret, as CI360 shows it",
    "tealium": "check the connection's options.username and its API key",
    "swrve": "check the connection's secret, the Swrve app's API key",
    "twilio": "the receiver refused X-Twilio-Signature: give it the front-door account's token",
    "json": "the receiver refused X-Connector-Signature: give it the callback_signing_key",
}

"""Twilio REST adapter: the only module that speaks HTTP to Twilio.

One pooled requests.Session serves every thread. Failures become three domain
errors that say what the caller may do next:

- TwilioRejected: Twilio refused the request for good (bad number, opted out, ...).
- TwilioRetryable: nothing was created; try again later.
- TwilioOutcomeUnknown: a create may have happened (read timeout, dropped reply,
  5xx after the request went out); the caller must reconcile before resending.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError

from chalicelib.domain import rules
from chalicelib.domain.models import OutboundMessage
from chalicelib.domain.twilio import (
    TwilioCredentials,
    TwilioError,
    TwilioMessage,
    TwilioOutcomeUnknown,
    TwilioRejected,
    TwilioRetryable,
    _int_or_none,
)
from chalicelib.observability import metrics

API_VERSION_PATH = "/2010-04-01"
USER_AGENT = "twilio-sms-connector/0.1"
MAX_RETRY_AFTER_SECONDS = 10.0


def _bool(value: bool) -> str:
    return "true" if value else "false"


def message_form(msg: OutboundMessage, status_callback: str | None) -> list[tuple[str, str]]:
    """Form pairs exactly as Twilio expects: repeated MediaUrl keys, lowercase booleans."""
    pairs: list[tuple[str, str]] = [("To", msg.to)]
    optional: list[tuple[str, Any]] = [
        ("From", msg.from_),
        ("MessagingServiceSid", msg.messaging_service_sid),
        ("Body", msg.body),
        ("ContentSid", msg.content_sid),
        ("ContentVariables", msg.content_variables),
        ("StatusCallback", status_callback),
        ("ValidityPeriod", msg.validity_period),
        ("ScheduleType", msg.schedule_type),
        ("MaxPrice", msg.max_price),
        ("ApplicationSid", msg.application_sid),
        ("RiskCheck", msg.risk_check),
        ("Attempt", msg.attempt),
        ("AddressRetention", msg.address_retention),
        ("ContentRetention", msg.content_retention),
        ("FallbackFrom", msg.fallback_from),
        ("TrafficType", msg.traffic_type),
    ]
    pairs += [(key, str(value)) for key, value in optional if value is not None]
    if msg.send_at is not None:
        pairs.append(("SendAt", msg.send_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")))
    flags = [
        ("ProvideFeedback", msg.provide_feedback),
        ("SmartEncoded", msg.smart_encoded),
        ("ShortenUrls", msg.shorten_urls),
        ("ForceDelivery", msg.force_delivery),
        ("SendAsMms", msg.send_as_mms),
    ]
    pairs += [(key, _bool(value)) for key, value in flags if value is not None]
    pairs += [("MediaUrl", url) for url in msg.media_urls]
    pairs += [("PersistentAction", action) for action in msg.persistent_action]
    return pairs


def _sent_nothing(exc: requests.RequestException) -> bool:
    """True when the failure happened while connecting, before any byte of the request left."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = exc.args[0] if exc.args else None
        inner = getattr(reason, "reason", reason)
        return isinstance(inner, ConnectTimeoutError)  # NewConnectionError is a subclass
    return False


def _error_from(response: requests.Response) -> tuple[str, int | None, str | None]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return (
            str(body.get("message") or f"HTTP {response.status_code}"),
            _int_or_none(body.get("code")),
            body.get("more_info"),
        )
    return f"HTTP {response.status_code} from Twilio", None, None


def _retry_after(response: requests.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


class TwilioApi:
    """Messages create/fetch/list and Account fetch, with bounded, jittered retries."""

    def __init__(
        self,
        base_url: str,
        session: requests.Session | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        max_attempts: int = 4,
        backoff_base: float = 0.25,
        backoff_cap: float = 4.0,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self.session = session or self._new_session()
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep
        self._jitter = jitter

    @staticmethod
    def _new_session() -> requests.Session:
        session = requests.Session()
        # Enough pooled connections for a batch of 10 plus concurrent polls.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers["User-Agent"] = USER_AGENT
        session.headers["Accept"] = "application/json"
        return session

    # --- operations ----------------------------------------------------------

    def create_message(
        self,
        creds: TwilioCredentials,
        msg: OutboundMessage,
        status_callback: str | None = None,
        finish_by: float | None = None,
        final: frozenset[int] = frozenset(),
    ) -> TwilioMessage:
        """`finish_by` (time.monotonic()): no retry starts that could run past it. `final`: error codes the
        connection's error policy makes permanent: refused at once, never tried again."""
        url = f"{self.base_url}/Accounts/{creds.account_sid}/Messages.json"
        form = message_form(msg, status_callback)
        data = self._request("POST", url, creds, data=form, idempotent=False, finish_by=finish_by, final=final)
        return TwilioMessage.from_json(data)

    def fetch_message(self, creds: TwilioCredentials, sid: str) -> TwilioMessage:
        url = f"{self.base_url}/Accounts/{creds.account_sid}/Messages/{sid}.json"
        return TwilioMessage.from_json(self._request("GET", url, creds))

    def update_message(self, creds: TwilioCredentials, sid: str, form: list[tuple[str, str]]) -> TwilioMessage:
        """`Status=canceled` (a scheduled message) or `Body=` (redact): both the same when repeated."""
        url = f"{self.base_url}/Accounts/{creds.account_sid}/Messages/{sid}.json"
        return TwilioMessage.from_json(self._request("POST", url, creds, data=form))

    def fetch_account(self, creds: TwilioCredentials) -> dict[str, Any]:
        return self._request("GET", f"{self.base_url}/Accounts/{creds.account_sid}.json", creds)

    def list_messages(
        self,
        creds: TwilioCredentials,
        to: str | None = None,
        from_: str | None = None,
        date_sent: date | None = None,
        date_sent_after: date | None = None,
        date_sent_before: date | None = None,
        page_size: int = 50,
    ) -> Iterator[TwilioMessage]:
        """Every matching message, newest first, fetching pages as the caller iterates."""
        params: list[tuple[str, str]] = [("PageSize", str(page_size))]
        for key, value in (("To", to), ("From", from_)):
            if value:
                params.append((key, value))
        for key, day in (("DateSent", date_sent), ("DateSent>", date_sent_after), ("DateSent<", date_sent_before)):
            if day is not None:
                params.append((key, day.isoformat()))
        url: str | None = f"{self.base_url}/Accounts/{creds.account_sid}/Messages.json"
        query: list[tuple[str, str]] | None = params
        while url:
            page = self._request("GET", url, creds, params=query)
            for item in page.get("messages") or []:
                yield TwilioMessage.from_json(item)
            next_uri = page.get("next_page_uri")
            url = f"{self._origin}{next_uri}" if next_uri else None
            query = None  # next_page_uri carries the query

    # --- transport -----------------------------------------------------------

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)) * self._jitter()
        return max(delay, retry_after or 0.0)

    def _request(
        self,
        method: str,
        url: str,
        creds: TwilioCredentials,
        data: list[tuple[str, str]] | None = None,
        params: list[tuple[str, str]] | None = None,
        idempotent: bool = True,
        finish_by: float | None = None,
        final: frozenset[int] = frozenset(),
    ) -> dict[str, Any]:
        auth = (creds.account_sid, creds.auth_token)
        last: TwilioError | None = None
        for attempt in range(1, self.max_attempts + 1):
            retry_after: float | None = None
            try:
                response = self.session.request(method, url, auth=auth, data=data, params=params, timeout=self.timeout)
            except requests.RequestException as exc:
                if not idempotent and not _sent_nothing(exc):
                    raise TwilioOutcomeUnknown(f"no answer from Twilio after sending: {type(exc).__name__}") from exc
                last = TwilioRetryable(f"could not reach Twilio: {type(exc).__name__}")
            else:
                if response.status_code < 400:
                    result: dict[str, Any] = response.json()
                    return result
                message, code, more_info = _error_from(response)
                status = response.status_code
                if code in final or not rules.is_retryable(status, code):
                    raise TwilioRejected(message, code, status, more_info)
                if status >= 500 and not idempotent:
                    raise TwilioOutcomeUnknown(message, code, status, more_info)
                last = TwilioRetryable(message, code, status, more_info)
                last.retry_after = _retry_after(response)
                if status == 429:
                    metrics.add_metric(name="TwilioThrottled", unit="Count", value=1)
                if status in (401, 403):
                    break  # wrong credentials will not fix themselves within this call
                retry_after = _retry_after(response)
                if retry_after is not None and retry_after > MAX_RETRY_AFTER_SECONDS:
                    break  # give the record back to the queue rather than sleep the Lambda away
            if attempt < self.max_attempts:
                delay = self._backoff(attempt, retry_after)
                if finish_by is not None and time.monotonic() + delay + sum(self.timeout) > finish_by:
                    break  # another try could outlive the invocation: the record goes back to the queue
                self._sleep(delay)
        assert last is not None
        raise last

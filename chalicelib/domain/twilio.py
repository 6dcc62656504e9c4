"""Twilio as the use cases know it: the credentials, a Message as Twilio answers it, the three ways a call
fails (rejected, retryable, outcome unknown), and the Protocol the REST adapter (adapters/twilio_api.py) fills."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from chalicelib.domain.models import OutboundMessage


@dataclass(frozen=True)
class TwilioCredentials:
    account_sid: str
    auth_token: str
    secondary_auth_token: str | None = None


@dataclass(frozen=True)
class TwilioMessage:
    sid: str
    status: str
    to: str
    from_: str | None
    body: str
    num_segments: int | None
    num_media: int | None
    error_code: int | None
    error_message: str | None
    price: str | None
    price_unit: str | None
    date_created: datetime | None
    date_sent: datetime | None
    messaging_service_sid: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TwilioMessage:
        return cls(
            sid=data["sid"],
            status=data.get("status") or "queued",
            to=data.get("to") or "",
            from_=data.get("from"),
            body=data.get("body") or "",
            num_segments=_int_or_none(data.get("num_segments")),
            num_media=_int_or_none(data.get("num_media")),
            error_code=_int_or_none(data.get("error_code")),
            error_message=data.get("error_message"),
            price=None if data.get("price") is None else str(data["price"]),
            price_unit=data.get("price_unit"),
            date_created=_rfc2822(data.get("date_created")),
            date_sent=_rfc2822(data.get("date_sent")),
            messaging_service_sid=data.get("messaging_service_sid"),
        )


class TwilioError(Exception):
    def __init__(self, message: str, code: int | None = None, http_status: int = 0, more_info: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.more_info = more_info


class TwilioRejected(TwilioError):
    """Twilio refused the request; sending it again cannot succeed."""


class TwilioRetryable(TwilioError):
    """Nothing was created; the same request may be sent again later."""

    retry_after: float | None = None  # what Twilio asked for with its last 429


class TwilioOutcomeUnknown(TwilioError):
    """The request went out and no answer came back: a message may exist."""


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _rfc2822(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(str(value)).astimezone(UTC)
    except (TypeError, ValueError):
        return None


class Twilio(Protocol):
    """What the use cases need of Twilio; TwilioApi speaks HTTP, tests and benches may stand in."""

    def create_message(
        self,
        creds: TwilioCredentials,
        msg: OutboundMessage,
        status_callback: str | None = None,
        finish_by: float | None = None,
        final: frozenset[int] = frozenset(),
    ) -> TwilioMessage: ...

    def fetch_message(self, creds: TwilioCredentials, sid: str) -> TwilioMessage: ...

    def update_message(self, creds: TwilioCredentials, sid: str, form: list[tuple[str, str]]) -> TwilioMessage: ...

    def fetch_account(self, creds: TwilioCredentials) -> dict[str, Any]: ...

    def list_messages(
        self, creds: TwilioCredentials, to: str | None = None, from_: str | None = None
    ) -> Iterator[TwilioMessage]: ...

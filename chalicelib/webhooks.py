"""Twilio's two webhooks: status callbacks and inbound messages.

Both are form-encoded and signed. The signature is checked against the configured
public URL (stage path included), with every connection's primary and secondary
auth token so tokens can be rotated without downtime; anything unsigned or
wrongly signed is refused with 403 before any state changes.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from chalicelib.observability import logger, metrics
from chalicelib.secrets import CredentialsUnavailable, SecretsCredentials
from chalicelib.settings import INBOUND_PATH, MESSAGE_ID_PARAM, STATUS_PATH, ConfigurationError, Settings
from chalicelib.store import StoreError
from chalicelib.tracking import TrackingService
from chalicelib.twilio_signature import is_valid

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
FORM_CONTENT_TYPES = ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8"]


@dataclass(frozen=True)
class HttpResult:
    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/plain"})


class Webhooks:
    def __init__(self, settings: Settings, credentials: SecretsCredentials, tracking: TrackingService) -> None:
        self.settings = settings
        self.credentials = credentials
        self.tracking = tracking

    def _tokens(self) -> list[str | None]:
        tokens: list[str | None] = []
        for connection in self.settings.connections.values():
            creds = self.credentials.for_connection(connection)
            tokens += [creds.auth_token, creds.secondary_auth_token]
        return tokens

    def _verified(
        self, path: str, query: Mapping[str, str] | None, raw_body: bytes, signature: str | None
    ) -> list[tuple[str, str]] | HttpResult:
        base = self.settings.webhooks_url
        if not base:
            logger.error("webhook refused: neither WEBHOOK_BASE_URL nor PUBLIC_BASE_URL is set to check signatures")
            return HttpResult(403, "WEBHOOK_BASE_URL / PUBLIC_BASE_URL is not configured; webhooks are refused")
        url = base + path + (f"?{urlencode(dict(query))}" if query else "")
        params = parse_qsl(raw_body.decode("utf-8", errors="replace"), keep_blank_values=True)
        try:
            valid = is_valid(url, params, signature, self._tokens())
        except (CredentialsUnavailable, ConfigurationError) as exc:
            logger.error("webhook signature could not be checked", extra={"error": str(exc)})
            return HttpResult(503, "credentials unavailable; try again")
        if not valid:
            metrics.add_metric(name="WebhookSignatureRejected", unit="Count", value=1)
            logger.warning("webhook with a missing or wrong signature refused", extra={"path": path})
            return HttpResult(403, "invalid X-Twilio-Signature")
        return params

    def status(self, query: Mapping[str, str] | None, raw_body: bytes, signature: str | None) -> HttpResult:
        verified = self._verified(STATUS_PATH, query, raw_body, signature)
        if isinstance(verified, HttpResult):
            return verified
        try:
            self.tracking.status_callback((query or {}).get(MESSAGE_ID_PARAM), dict(verified))
        except StoreError as exc:
            logger.error("status callback not stored", extra={"error": str(exc)})
            return HttpResult(503, "storage unavailable; try again")
        return HttpResult(200)

    def inbound(self, query: Mapping[str, str] | None, raw_body: bytes, signature: str | None) -> HttpResult:
        verified = self._verified(INBOUND_PATH, query, raw_body, signature)
        if isinstance(verified, HttpResult):
            return verified
        try:
            self.tracking.inbound(dict(verified))
        except StoreError as exc:
            logger.error("inbound message not stored", extra={"error": str(exc)})
            return HttpResult(503, "storage unavailable; try again")
        return HttpResult(200, EMPTY_TWIML, {"Content-Type": "text/xml"})


def function_url_event(event: Mapping[str, Any]) -> tuple[str, dict[str, str], bytes, str | None]:
    """A Lambda function URL request (payload 2.0): path, query, raw body, X-Twilio-Signature."""
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
    query = dict(parse_qsl(event.get("rawQueryString") or "", keep_blank_values=True))
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    return str(event.get("rawPath") or "/"), query, raw, headers.get("x-twilio-signature")


def handle_function_url(hooks: Webhooks, event: Mapping[str, Any]) -> dict[str, Any]:
    """Twilio's webhooks on a function URL: no API Gateway request fee for every callback."""
    method = ((event.get("requestContext") or {}).get("http") or {}).get("method", "POST")
    path, query, raw, signature = function_url_event(event)
    if method != "POST":
        result = HttpResult(405, "POST only")
    elif path.endswith(STATUS_PATH):
        result = hooks.status(query, raw, signature)
    elif path.endswith(INBOUND_PATH):
        result = hooks.inbound(query, raw, signature)
    else:
        result = HttpResult(404, f"no webhook at {path}; use {STATUS_PATH} or {INBOUND_PATH}")
    return {"statusCode": result.status, "headers": result.headers, "body": result.body}

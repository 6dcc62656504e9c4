"""Twilio's two webhooks: status callbacks and inbound messages.

Both are form-encoded and signed. Twilio signs the URL it called, so each request is
checked against the URL it arrived on: on API Gateway, PUBLIC_BASE_URL (stage path
included) or the domain and path in the request context; on the function URL,
WEBHOOK_BASE_URL or the function URL's own domain. Every connection's primary and
secondary auth token is tried, so tokens can be rotated without downtime; anything
unsigned or wrongly signed is refused with 403 before any state changes.

A status callback's URL ends in connection overrides (`#rc=…`), a fragment no HTTP request carries (and
the inbound URL may: docs/deploy.md).
Twilio does not say whether its signature covers it, so both the URL as it arrived and the URL with
the connector's own fragment are accepted: each is a URL the connector itself gave Twilio.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from chalicelib.domain.connection import ConnectionSettings
from chalicelib.domain.ports import Credentials, CredentialsUnavailable, StoreError
from chalicelib.domain.twilio_signature import is_valid
from chalicelib.observability import logger, metrics
from chalicelib.settings import (
    CALLBACK_OVERRIDES,
    CONNECTION_PARAM,
    INBOUND_PATH,
    MESSAGE_ID_PARAM,
    STATUS_PATH,
    ConfigurationError,
    Settings,
)
from chalicelib.usecases.tracking import InboundMessage, StatusReport, TrackingService

# Twilio's webhooks are small (a few dozen fields, a few KB): anything far bigger is refused unread.
MAX_BODY_BYTES = 64 * 1024
MAX_FIELDS = 200
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
FORM_CONTENT_TYPES = ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8"]


@dataclass(frozen=True)
class HttpResult:
    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/plain"})


def well_formed(signature: str | None) -> bool:
    """Twilio's signature is base64 of an HMAC-SHA1: 28 characters, 20 bytes."""
    if not signature or len(signature) != 28:
        return False
    try:
        return len(base64.b64decode(signature, validate=True)) == 20
    except ValueError:
        return False


@dataclass(frozen=True)
class WebhookRequest:
    """One webhook call as it arrived: the public URLs it may have been signed for, and its content."""

    urls: tuple[str, ...]
    query: Mapping[str, str]
    raw_body: bytes
    signature: str | None


class Webhooks:
    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        tracking: TrackingService,
        connections: Mapping[str, ConnectionSettings] | None = None,
    ) -> None:
        self.settings = settings
        # deploy-time and managed connections (wiring gives the live store); else the deploy-time ones
        self.connections = settings.connections if connections is None else connections
        self.credentials = credentials
        self.tracking = tracking

    def _signers(self, named: str | None, unreadable: list[str]) -> Iterator[tuple[str, list[str | None]]]:
        """Each connection's tokens, the one the callback's URL names first; a connection whose secret cannot
        be read is skipped (counted, logged, added to `unreadable`) and fails only what no other token signs."""
        names = sorted(self.connections, key=lambda n: n != named)
        for name in names:
            try:
                creds = self.credentials.for_connection(self.connections[name])
            except (CredentialsUnavailable, ConfigurationError) as exc:
                metrics.add_metric(name="ConnectionSecretUnreadable", unit="Count", value=1)
                logger.error(
                    "a connection's credentials could not be read", extra={"connection": name, "error": str(exc)}
                )
                unreadable.append(name)
                continue
            yield name, [creds.auth_token, creds.secondary_auth_token]

    def _verified(
        self, request: WebhookRequest, fragments: tuple[str, ...] = ("",)
    ) -> list[tuple[str, str]] | HttpResult:
        if not request.urls:
            logger.error("webhook refused: no public URL is known to check its signature against")
            return HttpResult(403, "PUBLIC_BASE_URL is not configured; webhooks are refused")
        if not well_formed(request.signature):
            return self._refused(request)  # before reading a secret or parsing the body
        if len(request.raw_body) > MAX_BODY_BYTES:
            return HttpResult(413, f"a webhook body is at most {MAX_BODY_BYTES // 1024} KB")
        query = f"?{urlencode(dict(request.query))}" if request.query else ""
        try:
            params = parse_qsl(
                request.raw_body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=MAX_FIELDS
            )
        except ValueError:
            return HttpResult(400, f"a webhook has at most {MAX_FIELDS} fields")
        unreadable: list[str] = []  # per request: one Webhooks serves concurrent requests (threads locally)
        for _name, tokens in self._signers(request.query.get(CONNECTION_PARAM), unreadable):
            if any(
                is_valid(url + query + fragment, params, request.signature, tokens)
                for url in request.urls
                for fragment in fragments
            ):
                return params
        if unreadable:  # it may be theirs: Twilio tries again, and the poll loop learns the status
            return HttpResult(503, "a connection's credentials could not be read; try again")
        return self._refused(request)

    @staticmethod
    def _refused(request: WebhookRequest) -> HttpResult:
        metrics.add_metric(name="WebhookSignatureRejected", unit="Count", value=1)
        logger.warning("webhook with a missing or wrong signature refused", extra={"urls": list(request.urls)})
        return HttpResult(403, "invalid X-Twilio-Signature")

    def status(self, request: WebhookRequest) -> HttpResult:
        verified = self._verified(request, ("", CALLBACK_OVERRIDES))
        if isinstance(verified, HttpResult):
            return verified
        try:
            self.tracking.status_callback(StatusReport.from_form(request.query.get(MESSAGE_ID_PARAM), dict(verified)))
        except StoreError as exc:
            logger.error("status callback not stored", extra={"error": str(exc)})
            return HttpResult(503, "storage unavailable; try again")
        return HttpResult(200)

    def inbound(self, request: WebhookRequest) -> HttpResult:
        verified = self._verified(request, ("", CALLBACK_OVERRIDES))  # docs/deploy.md: the URL to set
        if isinstance(verified, HttpResult):
            return verified
        try:
            self.tracking.inbound(InboundMessage.from_form(dict(verified)))
        except StoreError as exc:
            logger.error("inbound message not stored", extra={"error": str(exc)})
            return HttpResult(503, "storage unavailable; try again")
        return HttpResult(200, EMPTY_TWIML, {"Content-Type": "text/xml"})


def _arrival_urls(configured_base: str | None, webhook_path: str, domain: Any, full_path: Any) -> tuple[str, ...]:
    """The public URLs a request may have been signed for: the configured base (a custom domain,
    or `make run`'s address) and the https URL AWS says it arrived on."""
    urls = [configured_base + webhook_path] if configured_base else []
    if domain and full_path:
        urls.append(f"https://{domain}{full_path}")
    return tuple(dict.fromkeys(urls))


def api_gateway_request(
    settings: Settings,
    webhook_path: str,
    context: Mapping[str, Any] | None,
    query: Mapping[str, str] | None,
    raw_body: bytes | str,
    signature: str | None,
) -> WebhookRequest:
    """A webhook through API Gateway: its context carries the domain and the path with the stage."""
    ctx = context or {}
    urls = _arrival_urls(settings.public_base_url, webhook_path, ctx.get("domainName"), ctx.get("path"))
    raw = raw_body.encode() if isinstance(raw_body, str) else raw_body
    return WebhookRequest(urls, dict(query or {}), raw, signature)


def function_url_request(settings: Settings, event: Mapping[str, Any]) -> WebhookRequest:
    """A Lambda function URL request (payload 2.0)."""
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
    query = dict(parse_qsl(event.get("rawQueryString") or "", keep_blank_values=True))
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    path = str(event.get("rawPath") or "/")
    webhook_path = STATUS_PATH if path.endswith(STATUS_PATH) else INBOUND_PATH
    domain = (event.get("requestContext") or {}).get("domainName")
    urls = _arrival_urls(settings.webhook_base_url, webhook_path, domain, path)
    return WebhookRequest(urls, query, raw, headers.get("x-twilio-signature"))


def handle_function_url(hooks: Webhooks, event: Mapping[str, Any]) -> dict[str, Any]:
    """Twilio's webhooks on a function URL: no API Gateway request fee for every callback."""
    method = ((event.get("requestContext") or {}).get("http") or {}).get("method", "POST")
    path = str(event.get("rawPath") or "/")
    if method != "POST":
        result = HttpResult(405, "POST only")
    elif path.endswith(STATUS_PATH):
        result = hooks.status(function_url_request(hooks.settings, event))
    elif path.endswith(INBOUND_PATH):
        result = hooks.inbound(function_url_request(hooks.settings, event))
    else:
        result = HttpResult(404, f"no webhook at {path}; use {STATUS_PATH} or {INBOUND_PATH}")
    return {"statusCode": result.status, "headers": result.headers, "body": result.body}

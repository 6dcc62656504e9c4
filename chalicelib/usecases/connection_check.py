"""POST /connection/test: what HCL Unica's "Test connection" does, and more: the write-back's credentials too."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.domain import rules
from chalicelib.domain.connection import ConnectionSettings, require_connection
from chalicelib.domain.ports import Credentials, CredentialsUnavailable
from chalicelib.domain.twilio import Twilio, TwilioError
from chalicelib.domain.twilio_signature import compute_signature
from chalicelib.domain.writeback import WriteBackFormat
from chalicelib.settings import ConfigurationError, Settings


@dataclass(frozen=True)
class Report:
    """Every check with what to do about a failed one: 200 when all passed, else 502."""

    status: int
    body: dict[str, Any]


class ConnectionCheck:
    """What HCL Unica's "Test connection" does, and more: credentials, sender, webhook round trip."""

    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        twilio: Twilio,
        http_post: Callable[..., Any],
        http_get: Callable[..., Any] | None = None,
        formats: Mapping[str, WriteBackFormat] | None = None,
        connections: Mapping[str, ConnectionSettings] | None = None,
    ) -> None:
        self.settings = settings
        # deploy-time and managed connections (wiring gives the live store); else the deploy-time ones
        self.connections = settings.connections if connections is None else connections
        self.credentials = credentials
        self.twilio = twilio
        self.http_post = http_post
        self.http_get = http_get
        self.formats = formats or {}  # the write-back formats, which know how to check their platform's credentials

    def run(self, name: str | None) -> Report:
        """Raises ValidationError for a connection that does not exist."""
        connection = require_connection(self.connections, name)
        checks: list[dict[str, Any]] = []
        try:
            creds = self.credentials.for_connection(connection)
            account = self.twilio.fetch_account(creds)
            checks.append(
                {
                    "check": "credentials",
                    "ok": True,
                    "detail": f"account {account.get('sid')} is {account.get('status')}",
                }
            )
        except (CredentialsUnavailable, ConfigurationError) as exc:
            why = self.settings.unreadable_secret(connection)
            detail = f"cannot read the secret: {exc}" + (f" ({why})" if why else "")
            checks.append({"check": "credentials", "ok": False, "detail": detail})
            creds = None
        except TwilioError as exc:
            checks.append(
                {"check": "credentials", "ok": False, "detail": f"Twilio refused them ({exc.code}): {exc.message}"}
            )
            creds = None
        checks.append(self._sender(connection.from_numbers, connection.messaging_service_sid))
        checks.append(self._webhook(creds.auth_token if creds else None))
        checks += self._write_back(connection)
        ok = all(c["ok"] for c in checks)
        return Report(200 if ok else 502, {"ok": ok, "connection": connection.name, "checks": checks})

    @staticmethod
    def _sender(numbers: Sequence[str], service: str | None) -> dict[str, Any]:
        if not numbers and not service:
            return {"check": "sender", "ok": False, "detail": "no TWILIO_DEFAULT_FROM or TWILIO_MESSAGING_SERVICE_SID"}
        bad = [n for n in numbers if not rules.is_valid_sender(n)]
        if bad or (service and not rules.MESSAGING_SERVICE_SID.match(service)):
            return {"check": "sender", "ok": False, "detail": f"not a valid sender: {', '.join(bad) or service}"}
        return {
            "check": "sender",
            "ok": True,
            "detail": f"{len(numbers)} number(s)" + (f", service {service}" if service else ""),
        }

    def _webhook(self, auth_token: str | None) -> dict[str, Any]:
        url = self.settings.status_callback_url("connection-test")
        if url is None:
            return {
                "check": "webhook",
                "ok": False,
                "detail": "neither WEBHOOK_BASE_URL nor PUBLIC_BASE_URL is set: Twilio cannot reach the connector",
            }
        if auth_token is None:
            return {"check": "webhook", "ok": False, "detail": "skipped: no working credentials to sign with"}
        params = [("MessageSid", "SM" + "0" * 32), ("MessageStatus", "sent"), ("AccountSid", "connection-test")]
        headers = {"X-Twilio-Signature": compute_signature(url, params, auth_token)}
        try:
            status = self.http_post(url, data=params, headers=headers, timeout=10).status_code
        except Exception as exc:
            return {"check": "webhook", "ok": False, "detail": f"{url} unreachable: {type(exc).__name__}"}
        if status == 200:
            return {"check": "webhook", "ok": True, "detail": f"a signed callback to {url} was accepted"}
        hint = (
            " (the signature did not match: is WEBHOOK_BASE_URL / PUBLIC_BASE_URL the exact public URL Twilio calls?)"
            if status == 403
            else ""
        )
        return {"check": "webhook", "ok": False, "detail": f"{url} answered {status}{hint}"}

    def _write_back(self, connection: ConnectionSettings) -> list[dict[str, Any]]:
        """The platform's credentials, where its format knows a way to check them without an event (CI360's
        gateway configuration, Tealium v3's token exchange)."""
        config = connection.write_back
        fmt = self.formats.get(config.format) if config else None
        if config is None or fmt is None:
            return []
        try:
            secret = self.credentials.write_back_secret(connection) or ""
        except (CredentialsUnavailable, ConfigurationError) as exc:
            return [{"check": "write_back", "ok": False, "detail": f"cannot read the write-back secret: {exc}"}]
        check = fmt.check(config, secret)
        if check is None:
            return []
        if not secret:
            return [{"check": "write_back", "ok": False, "detail": "the connection has no write-back `secret`"}]
        name = PLATFORM_NAMES.get(fmt.name, fmt.name)
        refusal = rules.callback_target_refusal(check.url, self.settings.allow_local_callbacks)
        call = self.http_get if check.method == "GET" else self.http_post
        if refusal is not None or call is None:
            return [
                {"check": "write_back", "ok": False, "detail": f"{check.url} {refusal or 'cannot be checked here'}"}
            ]
        try:
            kwargs: dict[str, Any] = {"headers": dict(check.headers), "timeout": 10, "allow_redirects": False}
            if check.body is not None:
                kwargs["data"] = check.body
            status = call(check.url, **kwargs).status_code
        except Exception as exc:
            return [{"check": "write_back", "ok": False, "detail": f"{check.url} unreachable: {type(exc).__name__}"}]
        if status == 200:
            return [{"check": "write_back", "ok": True, "detail": f"{name} accepted the connector's credentials"}]
        if status in (400, 401, 403):
            detail = f"{name} refused the credentials ({status}): {fmt.credentials_hint}"
            return [{"check": "write_back", "ok": False, "detail": detail}]
        return [{"check": "write_back", "ok": False, "detail": f"{check.url} answered {status}"}]


PLATFORM_NAMES = {"ci360": "CI360", "tealium": "Tealium", "swrve": "Swrve"}

"""Typed settings, read once from the environment by the composition root.

Stage values live in .chalice/config.json; the local stack and the tests set the
same variables. Every variable is listed in docs/deploy.md, "Configuration".
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from chalicelib.domain.connection import DEFAULT_CONNECTION, ConnectionSettings, WriteBack
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.polling import PollPlan

if TYPE_CHECKING:
    from chalicelib.domain.guardrails import Guardrails

DEFAULT_TWILIO_BASE_URL = "https://api.twilio.com/2010-04-01"
STATUS_PATH = "/twilio/status"
INBOUND_PATH = "/twilio/inbound"
MESSAGE_ID_PARAM = "mid"
CONNECTION_PARAM = "c"  # the connection whose token signs the callback: checked first, and alone if it is read
# Twilio retries no callback answered 429 or 5xx unless its URL asks in a fragment
# (twilio.com/docs/usage/webhooks/webhooks-connection-overrides): rc ≤ 5 retries, rp which failures,
# tt ≤ 15000 ms for all tries; ct/rt short so a slow try leaves time for the others. A function URL
# answers 429 above 10 requests/s per reserved unit, so a spike's callbacks come again, not never.
CALLBACK_OVERRIDES = "#ct=2000&rt=4000&rc=5&rp=all&tt=15000"


class ConfigurationError(Exception):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    twilio_base_url: str = DEFAULT_TWILIO_BASE_URL
    connections: Mapping[str, ConnectionSettings] = field(default_factory=dict)  # deploy-time ones only
    retry_interval_ms: int = 10000
    retry_attempts: int = 10
    # One poll execution follows every message sent in a window of this many seconds: Step Functions
    # bills transitions, so polling costs the same whether messages came in bursts or one at a time.
    poll_window_seconds: int = 120
    poll_page_size: int = 200  # POLL_PAGE_SIZE: a window's open messages read and fetched a page at a time
    poll_window_shards: int = 1  # POLL_WINDOW_SHARDS (from SEND_RATE at package time): index keys per window
    public_base_url: str | None = None
    webhook_base_url: str | None = None  # where Twilio calls the webhooks (a function URL); else public_base_url
    messages_table: str = "twilio-connector-messages"
    optouts_table: str = "twilio-connector-optouts"
    templates_table: str = "twilio-connector-templates"
    counters_table: str = "twilio-connector-counters"
    senders_table: str = "twilio-connector-senders"
    sender_rates: Mapping[str, float] = field(default_factory=dict)  # SENDER_RATES: segments/s per sender
    api_keys_secret_id: str | None = None
    send_queue: str = "twilio-connector-send"
    send_queue_url: str | None = None  # set by the template; else the URL is looked up by name
    send_dlq_url: str | None = None  # the send queue's dead-letter queue (GET /dlq, POST /dlq/redrive)
    state_machine_arn: str | None = None
    event_bus_name: str = "default"
    # STATUS_EVENTS: which events the bus gets, each $1 per million: none, final (a message's last status,
    # replies and opt-outs) or all (every status change). Write-backs do not need the bus.
    status_events: str = "none"
    forward_queue_url: str | None = None  # where a write-back its platform did not take waits (the forward queue)
    forward_dlq_url: str | None = None  # where one waits after about an hour of refusals (GET /dlq?queue=forward)
    claim_lease_seconds: int = 120
    record_ttl_days: int = 90
    secret_max_age_seconds: int = 300
    # Set by the template: the functions may read the stack's Twilio secret and secrets named with this prefix.
    connection_secret_prefix: str | None = None
    # Local development only (make run, tests): status_callback may be http and loopback.
    allow_local_callbacks: bool = False
    twilio_connect_timeout: float = 3.05
    twilio_read_timeout: float = 10.0
    twilio_max_attempts: int = 4
    # Requests in flight to Twilio: per send invocation, and per poll invocation. The package step derives
    # how many send invocations may run (the SQS trigger's MaximumConcurrency) from TWILIO_MAX_CONCURRENCY.
    send_concurrency: int = 10
    poll_concurrency: int = 5
    # The Twilio-compatible front door: its accounts (a secret) and the content window that absorbs a
    # caller's retries when it sends no idempotency key (0: off; an account may set its own).
    facade_secret_id: str | None = None
    facade_dedup_seconds: int = 300
    connections_table: str | None = None  # connections made with PUT /connections
    connections_max_age_seconds: int = 30  # how long a function trusts its copy of them

    def poll_window(self, moment: datetime) -> int:
        """The window a message sent at `moment` is polled in: its start, in epoch seconds."""
        epoch = int(moment.timestamp())
        return epoch - epoch % self.poll_window_seconds

    def unreadable_secret(self, connection: ConnectionSettings) -> str | None:
        """Why the deployed functions' roles cannot read this connection's secret, if they cannot."""
        prefix, secret = self.connection_secret_prefix, connection.secret_id
        own = self.connections.get(DEFAULT_CONNECTION)
        if prefix is None or (own is not None and secret == own.secret_id) or prefix in secret:
            return None
        return f"secret {secret} is not named {prefix}<name>, the only further secrets the functions may read"

    def poll_plan(self, connection: ConnectionSettings | None) -> PollPlan:
        """How the poll loop follows a connection's messages: its Retry Interval and Attempts, else
        RETRY_INTERVAL_MS and RETRY_ATTEMPTS."""
        interval = connection.retry_interval_ms if connection else None
        attempts = connection.retry_attempts if connection else None
        return PollPlan(
            self.retry_interval_ms if interval is None else interval,
            self.retry_attempts if attempts is None else attempts,
        )

    @property
    def webhooks_url(self) -> str | None:
        """The base of the URLs Twilio calls and signs: the webhook function URL, else the API."""
        return self.webhook_base_url or self.public_base_url

    def status_callback_url(self, message_id: str, connection: str | None = None) -> str | None:
        """The StatusCallback a send gives Twilio: it names the message, so a callback needs no lookup, and
        a managed connection, whose token the webhook checks first."""
        if not self.webhooks_url:
            return None
        query = {MESSAGE_ID_PARAM: message_id, **({CONNECTION_PARAM: connection} if connection else {})}
        return f"{self.webhooks_url}{STATUS_PATH}?{urlencode(query)}{CALLBACK_OVERRIDES}"


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from exc


def _csv(raw: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())


def _connections(env: Mapping[str, str]) -> dict[str, ConnectionSettings]:
    connections: dict[str, ConnectionSettings] = {}
    secret_id = env.get("TWILIO_SECRET_ID", "")
    if secret_id:
        connections[DEFAULT_CONNECTION] = ConnectionSettings(
            name=DEFAULT_CONNECTION,
            secret_id=secret_id,
            account_sid=env.get("TWILIO_ACCOUNT_SID") or None,
            from_numbers=_csv(env.get("TWILIO_DEFAULT_FROM")),
            messaging_service_sid=env.get("TWILIO_MESSAGING_SERVICE_SID") or None,
            guardrails=_guardrails(env.get("TWILIO_GUARDRAILS"), "TWILIO_GUARDRAILS"),
        )
    extra = env.get("TWILIO_CONNECTIONS")
    if extra:
        try:
            parsed = json.loads(extra)
        except ValueError as exc:
            raise ConfigurationError("TWILIO_CONNECTIONS must be a JSON object") from exc
        if not isinstance(parsed, dict):
            raise ConfigurationError("TWILIO_CONNECTIONS must be a JSON object of name -> settings")
        for name, spec in parsed.items():
            if not isinstance(spec, dict) or not spec.get("secret_id"):
                raise ConfigurationError(f"TWILIO_CONNECTIONS[{name!r}] needs a secret_id")
            from_numbers = spec.get("from_numbers") or ()
            write_back = spec.get("write_back")
            connections[name] = ConnectionSettings(
                name=name,
                secret_id=str(spec["secret_id"]),
                account_sid=spec.get("account_sid"),
                from_numbers=tuple(from_numbers),
                messaging_service_sid=spec.get("messaging_service_sid"),
                # the same settings a connection made through the API has (its secrets stay in its secret)
                retry_interval_ms=spec.get("retry_interval_ms"),
                retry_attempts=spec.get("retry_attempts"),
                sender_rates={str(k): float(v) for k, v in (spec.get("sender_rates") or {}).items()},
                dedup_seconds=spec.get("dedup_seconds"),
                write_back=WriteBack(
                    str(write_back["format"]),
                    write_back.get("url"),
                    write_back.get("options") or {},
                    write_back.get("attributes") or {},
                )
                if isinstance(write_back, dict) and write_back.get("format")
                else None,
                is_default=bool(spec.get("default")),
                guardrails=_guardrails(spec.get("guardrails"), f"TWILIO_CONNECTIONS[{name!r}]"),
            )
    return connections


def _guardrails(value: Any, where: str) -> Guardrails | None:
    if not value:
        return None  # nothing of the guardrails is imported
    from chalicelib.domain.guardrails import parse_guardrails

    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except ValueError as exc:
            raise ConfigurationError(f"{where} must be a JSON object") from exc
    try:
        return parse_guardrails(value)
    except ValidationError as exc:
        raise ConfigurationError(f"{where}: {exc.message}") from exc


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Every variable, with the default each field declares above (written once, there)."""
    env = os.environ if env is None else env
    D = Settings()
    return Settings(
        twilio_base_url=(env.get("TWILIO_BASE_URL") or D.twilio_base_url).rstrip("/"),
        connections=_connections(env),
        retry_interval_ms=_int(env, "RETRY_INTERVAL_MS", D.retry_interval_ms, minimum=0),
        retry_attempts=_int(env, "RETRY_ATTEMPTS", D.retry_attempts, minimum=0),
        poll_window_seconds=_int(env, "POLL_WINDOW_SECONDS", D.poll_window_seconds, minimum=1),
        poll_page_size=_int(env, "POLL_PAGE_SIZE", D.poll_page_size, minimum=1),
        poll_window_shards=min(_int(env, "POLL_WINDOW_SHARDS", D.poll_window_shards, minimum=1), 99),
        public_base_url=(env.get("PUBLIC_BASE_URL") or "").rstrip("/") or None,
        webhook_base_url=(env.get("WEBHOOK_BASE_URL") or "").rstrip("/") or None,
        messages_table=env.get("MESSAGES_TABLE") or D.messages_table,
        optouts_table=env.get("OPTOUTS_TABLE") or D.optouts_table,
        templates_table=env.get("TEMPLATES_TABLE") or D.templates_table,
        counters_table=env.get("COUNTERS_TABLE") or D.counters_table,
        senders_table=env.get("SENDERS_TABLE") or D.senders_table,
        sender_rates=parse_rates(env.get("SENDER_RATES")),
        api_keys_secret_id=env.get("API_KEYS_SECRET_ID") or None,
        send_queue=env.get("SEND_QUEUE_NAME") or D.send_queue,
        send_queue_url=env.get("SEND_QUEUE_URL") or None,
        send_dlq_url=env.get("SEND_DLQ_URL") or None,
        state_machine_arn=env.get("POLL_STATE_MACHINE_ARN") or None,
        event_bus_name=env.get("EVENT_BUS_NAME") or D.event_bus_name,
        status_events=_choice(env, "STATUS_EVENTS", D.status_events, ("none", "final", "all")),
        forward_queue_url=env.get("FORWARD_QUEUE_URL") or None,
        forward_dlq_url=env.get("FORWARD_DLQ_URL") or None,
        claim_lease_seconds=_int(env, "CLAIM_LEASE_SECONDS", D.claim_lease_seconds, minimum=1),
        record_ttl_days=_int(env, "RECORD_TTL_DAYS", D.record_ttl_days, minimum=1),
        secret_max_age_seconds=_int(env, "SECRET_MAX_AGE_SECONDS", D.secret_max_age_seconds),
        allow_local_callbacks=(env.get("ALLOW_LOCAL_CALLBACKS") or "").lower() == "true",
        connection_secret_prefix=env.get("CONNECTION_SECRET_PREFIX") or None,
        twilio_connect_timeout=_float(env, "TWILIO_CONNECT_TIMEOUT", D.twilio_connect_timeout),
        twilio_read_timeout=_float(env, "TWILIO_READ_TIMEOUT", D.twilio_read_timeout),
        twilio_max_attempts=_int(env, "TWILIO_MAX_ATTEMPTS", D.twilio_max_attempts, minimum=1),
        send_concurrency=_int(env, "SEND_CONCURRENCY", D.send_concurrency, minimum=1),
        poll_concurrency=_int(env, "POLL_CONCURRENCY", D.poll_concurrency, minimum=1),
        facade_secret_id=env.get("FACADE_SECRET_ID") or None,
        facade_dedup_seconds=_int(env, "FACADE_DEDUP_SECONDS", D.facade_dedup_seconds),
        connections_table=env.get("CONNECTIONS_TABLE") or None,
        connections_max_age_seconds=_int(env, "CONNECTIONS_MAX_AGE_SECONDS", D.connections_max_age_seconds),
    )


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in allowed:
        raise ConfigurationError(f"{name} must be one of {', '.join(allowed)}; it is `{value}`")
    return value


def parse_rates(raw: str | None) -> dict[str, float]:
    """SENDER_RATES: JSON {"<From number or MG sid>": segments per second}."""
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
        rates = {str(k): float(v) for k, v in parsed.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise ConfigurationError("SENDER_RATES must be a JSON object of sender -> segments per second") from exc
    if any(rate <= 0 for rate in rates.values()):
        raise ConfigurationError("SENDER_RATES: every rate must be above 0")
    return rates

"""Composition root: builds each adapter lazily, once per Lambda container.

Nothing reads the environment or creates a boto3 client at import time; tests
and the local stack call `reset()` or `override(...)` to swap pieces.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack

from chalicelib.adapters.aws import OnFirstUse
from chalicelib.settings import Settings, load_settings

if TYPE_CHECKING:
    from chalicelib.adapters.connections import ConnectionTable
    from chalicelib.adapters.facade_accounts import FacadeAccounts
    from chalicelib.adapters.queue import ForwardQueue, SendQueue
    from chalicelib.adapters.tables import DynamoWriteBackMarks
    from chalicelib.adapters.workflow import PollWorkflow
    from chalicelib.domain.connection import ConnectionSettings
    from chalicelib.domain.events import Events
    from chalicelib.domain.guard_ports import GuardStore
    from chalicelib.domain.ledger import MessageLedger
    from chalicelib.domain.ports import Credentials, OptOutStore, SenderQueues, StatsStore, TemplateStore
    from chalicelib.domain.twilio import Twilio
    from chalicelib.domain.writeback import WriteBackFormat
    from chalicelib.entrypoints.api import MessagesApi
    from chalicelib.entrypoints.api_keys import ApiKeys
    from chalicelib.entrypoints.connections_api import ConnectionsApi
    from chalicelib.entrypoints.facade import TwilioFacade
    from chalicelib.usecases.consumer import SendConsumer
    from chalicelib.usecases.forward import Forwarder
    from chalicelib.usecases.outbox import OutboxConsumer
    from chalicelib.usecases.release import ReleaseHeld
    from chalicelib.usecases.send import SendService
    from chalicelib.usecases.tracking import TrackingService

T = TypeVar("T")

_lock = threading.RLock()
_built: dict[str, Any] = {}


def once(name: str, build: Callable[[], T]) -> T:
    with _lock:
        if name not in _built:
            _built[name] = build()
        result: T = _built[name]
        return result


def reset() -> None:
    """Forget every built piece (tests, the local stack after changing settings)."""
    with _lock:
        _built.clear()


class Pieces(TypedDict, total=False):
    """What tests and the local stack may put in place of a built piece, by name and type."""

    settings: Settings
    dynamodb: Any  # a boto3 DynamoDB client (the local stack wraps moto's to make it atomic)
    ledger: MessageLedger
    opt_outs: OptOutStore
    templates: TemplateStore
    stats: StatsStore
    twilio: Twilio
    credentials: Credentials
    clock: Callable[[], datetime]
    tracking: TrackingService
    send_consumer: SendConsumer
    forwarder: Forwarder
    api_keys: ApiKeys
    messages_api: MessagesApi
    facade_accounts: FacadeAccounts
    twilio_facade: TwilioFacade
    connections_table: ConnectionTable
    connections_api: ConnectionsApi
    publisher: Events
    forward_queue: ForwardQueue
    outbox: OutboxConsumer


def override(**pieces: Unpack[Pieces]) -> None:
    with _lock:
        _built.update(pieces)


def settings() -> Settings:
    return once("settings", load_settings)


def connections() -> Mapping[str, ConnectionSettings]:
    """Deploy-time connections, then the ones made with the connections API (read at most every
    CONNECTIONS_MAX_AGE_SECONDS): injected where a connection is looked up, never kept in the settings."""
    from chalicelib.adapters.connections import LiveConnections

    def build() -> LiveConnections:
        s = settings()
        table = connections_table if s.connections_table else None
        return LiveConnections(s.connections, table, s.connections_max_age_seconds)

    return once("connections", build)


def connections_table() -> ConnectionTable:
    from chalicelib.adapters.connections import DynamoConnections

    def build() -> ConnectionTable:
        name = settings().connections_table
        assert name is not None, "CONNECTIONS_TABLE is not set"
        return DynamoConnections(dynamodb(), name)

    return once("connections_table", build)


def _session() -> Any:
    import boto3

    # One session for every client: each new session reloads botocore's data files (~50 ms).
    return once("session", boto3.session.Session)


def boto_client(service: str) -> Any:
    from chalicelib.adapters.aws import client

    return client(_session(), service, _lock)


def on_first_use(service: str) -> Any:
    return OnFirstUse(lambda: boto_client(service), _lock)


def dynamodb() -> Any:
    return once("dynamodb", lambda: boto_client("dynamodb"))


def ledger() -> MessageLedger:
    from chalicelib.adapters.dynamo_ledger import DynamoMessageLedger

    s = settings()
    build = lambda: DynamoMessageLedger(dynamodb(), s.messages_table, s.record_ttl_days, s.poll_window_shards)  # noqa: E731
    return once("ledger", build)


def opt_outs() -> OptOutStore:
    from chalicelib.adapters.tables import DynamoOptOuts

    return once("opt_outs", lambda: DynamoOptOuts(dynamodb(), settings().optouts_table))


def templates() -> TemplateStore:
    from chalicelib.adapters.tables import DynamoTemplates

    return once("templates", lambda: DynamoTemplates(dynamodb(), settings().templates_table))


def sender_queues() -> SenderQueues:
    from chalicelib.adapters.tables import DynamoSenderQueues

    return once("sender_queues", lambda: DynamoSenderQueues(dynamodb(), settings().senders_table))


def stats() -> StatsStore:
    from chalicelib.adapters.tables import DynamoStats

    return once("stats", lambda: DynamoStats(dynamodb(), settings().counters_table))


def twilio() -> Twilio:
    from chalicelib.adapters.twilio_api import TwilioApi

    def build() -> Twilio:
        s = settings()
        timeouts = (s.twilio_connect_timeout, s.twilio_read_timeout)
        return TwilioApi(
            s.twilio_base_url, connect_timeout=timeouts[0], read_timeout=timeouts[1], max_attempts=s.twilio_max_attempts
        )

    return once("twilio", build)


def credentials() -> Credentials:
    from chalicelib.adapters.secrets import SecretsCredentials

    return once("credentials", lambda: SecretsCredentials(secrets_provider(), settings().secret_max_age_seconds))


def clock() -> Callable[[], datetime]:
    return once("clock", lambda: lambda: datetime.now(UTC))


def send_service() -> SendService:
    from chalicelib.usecases.send import SendService

    def build() -> SendService:
        s = (ledger(), opt_outs(), templates(), twilio(), credentials(), clock())  # the stores, and the clock
        return SendService(settings(), *s, senders=sender_queues(), connections=connections(), guards=guard_store())

    return once("send_service", build)


def guard_store() -> GuardStore:
    def build() -> GuardStore:  # on its first use: a deployment without guardrails never imports it
        from chalicelib.adapters.guard_store import DynamoGuardStore

        s = settings()
        return DynamoGuardStore(dynamodb(), s.counters_table, s.messages_table, s.poll_window_shards)

    return once("guard_store", lambda: OnFirstUse(build, _lock))


def events_client() -> Any:
    return once("events_client", lambda: on_first_use("events"))


def publisher() -> Events:
    from chalicelib.adapters.eventbridge import EventPublisher

    return once("publisher", lambda: EventPublisher(events_client(), settings().event_bus_name))


def workflow() -> PollWorkflow | None:
    from chalicelib.adapters.workflow import PollWorkflow

    s = settings()
    arn = s.state_machine_arn
    if not arn:
        return None
    plan = (s.retry_interval_ms, s.retry_attempts, s.poll_window_seconds)
    return once("workflow", lambda: PollWorkflow(on_first_use("stepfunctions"), arn, *plan))


def send_consumer() -> SendConsumer:
    from chalicelib.usecases.consumer import SendConsumer

    def build() -> SendConsumer:
        from chalicelib.domain.connection import pick

        live, s = connections(), settings()
        plans = lambda name: s.poll_plan(pick(live, name))  # noqa: E731 - a connection's Retry Interval, Attempts
        return SendConsumer(send_service(), workflow(), send_queue(), plans=plans)

    return once("send_consumer", build)


def tracking() -> TrackingService:
    from concurrent.futures import ThreadPoolExecutor

    from chalicelib.usecases.tracking import TrackingService

    def build() -> TrackingService:
        pool = ThreadPoolExecutor(max_workers=settings().poll_concurrency, thread_name_prefix="poll")
        pieces = (ledger(), opt_outs(), twilio(), credentials(), clock(), pool)
        return TrackingService(settings(), *pieces, connections=connections())

    return once("tracking", build)


def write_back_formats() -> dict[str, WriteBackFormat]:
    from chalicelib.adapters.writeback.registry import formats  # the forward function's: off the send path

    return once("write_back_formats", formats)


def forwarder() -> Forwarder:
    import requests

    from chalicelib.domain.connection import DEFAULT_CONNECTION
    from chalicelib.usecases.forward import Forwarder

    def build() -> Forwarder:
        s = settings()
        connection = connections().get(DEFAULT_CONNECTION)
        key = credentials().signing_key(connection) if connection else None
        return Forwarder(
            write_back_formats(),
            requests.Session(),
            key or "",
            connections=connections(),
            secrets=credentials().write_back_secret,
            accounts=facade_accounts(),
            ledger=ledger(),
            pace=sender_queues(),
            clock=clock(),
            allow_local=s.allow_local_callbacks,
        )

    return once("forwarder", build)


def writeback_marks() -> DynamoWriteBackMarks:
    from chalicelib.adapters.tables import DynamoWriteBackMarks

    return once("writeback_marks", lambda: DynamoWriteBackMarks(dynamodb(), settings().messages_table))


def forward_queue() -> ForwardQueue:
    from chalicelib.adapters.queue import ForwardQueue

    s = settings()
    assert s.forward_queue_url is not None, "FORWARD_QUEUE_URL is not set"
    url = s.forward_queue_url
    return once("forward_queue", lambda: ForwardQueue(on_first_use("sqs"), url))


def outbox() -> OutboxConsumer:
    """The stream consumer: counters, subscribed events, opt-outs and write-backs from the ledger's changes."""
    from concurrent.futures import ThreadPoolExecutor

    from chalicelib.usecases.outbox import OutboxConsumer

    def build() -> OutboxConsumer:
        s = settings()
        pool = ThreadPoolExecutor(max_workers=s.poll_concurrency, thread_name_prefix="outbox")
        events = publisher() if s.status_events != "none" else None
        parts = (forwarder(), forward_queue(), opt_outs(), events, s.status_events, clock(), pool)
        return OutboxConsumer(stats(), *parts, marks=writeback_marks(), connections=connections())

    return once("outbox", build)


def secrets_provider() -> Any:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    return once("secrets_provider", lambda: SecretsProvider(boto3_client=boto_client("secretsmanager")))


def release_held() -> ReleaseHeld:
    from chalicelib.usecases.release import ReleaseHeld

    return once("release_held", lambda: ReleaseHeld(guard_store(), send_queue(), connections(), clock()))


def send_queue() -> SendQueue:
    from chalicelib.adapters.queue import SendQueue

    s = settings()
    return once("send_queue", lambda: SendQueue(on_first_use("sqs"), s.send_queue, s.send_queue_url))


def facade_accounts() -> FacadeAccounts:
    from chalicelib.adapters.facade_accounts import FacadeAccounts

    s = settings()
    build = lambda: FacadeAccounts(secrets_provider(), s.facade_secret_id, s.secret_max_age_seconds)  # noqa: E731
    return once("facade_accounts", build)

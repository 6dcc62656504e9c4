"""Composition root: builds each adapter lazily, once per Lambda container.

Nothing reads the environment or creates a boto3 client at import time; tests
and the local stack call `reset()` or `override(...)` to swap pieces.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack

from chalicelib.settings import Settings, load_settings

if TYPE_CHECKING:
    from chalicelib.adapters.connections import ConnectionTable
    from chalicelib.adapters.events import CallbackForwarder, Events
    from chalicelib.adapters.facade_accounts import FacadeAccounts
    from chalicelib.adapters.queue import SendQueue
    from chalicelib.adapters.workflow import PollWorkflow
    from chalicelib.domain.ledger import MessageLedger
    from chalicelib.domain.ports import Credentials, OptOutStore, SenderQueues, StatsStore, TemplateStore
    from chalicelib.domain.twilio import Twilio
    from chalicelib.entrypoints.api import MessagesApi
    from chalicelib.entrypoints.api_keys import ApiKeys
    from chalicelib.entrypoints.connections_api import ConnectionsApi
    from chalicelib.entrypoints.facade import TwilioFacade
    from chalicelib.entrypoints.operations import DeadLetters, OperationsApi
    from chalicelib.entrypoints.webhooks import Webhooks
    from chalicelib.usecases.accept import AcceptMessages
    from chalicelib.usecases.connection_check import ConnectionCheck
    from chalicelib.usecases.consumer import SendConsumer
    from chalicelib.usecases.send import SendService
    from chalicelib.usecases.tracking import TrackingService

T = TypeVar("T")

_lock = threading.RLock()
_built: dict[str, Any] = {}


def _once(name: str, build: Callable[[], T]) -> T:
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
    forwarder: CallbackForwarder
    api_keys: ApiKeys
    messages_api: MessagesApi
    facade_accounts: FacadeAccounts
    twilio_facade: TwilioFacade
    connections_table: ConnectionTable
    connections_api: ConnectionsApi
    publisher: Events


def override(**pieces: Unpack[Pieces]) -> None:
    with _lock:
        _built.update(pieces)


def settings() -> Settings:
    def build() -> Settings:
        import dataclasses

        from chalicelib.adapters.connections import LiveConnections

        loaded = load_settings()
        table = connections_table if loaded.connections_table else None
        live = LiveConnections(loaded.connections, table, loaded.connections_max_age_seconds)
        return dataclasses.replace(loaded, connections=live)

    return _once("settings", build)


def connections_table() -> ConnectionTable:
    from chalicelib.adapters.connections import DynamoConnections

    def build() -> ConnectionTable:
        name = settings().connections_table
        assert name is not None, "CONNECTIONS_TABLE is not set"
        return DynamoConnections(dynamodb(), name)

    return _once("connections_table", build)


def connections_api() -> ConnectionsApi:
    from chalicelib.adapters.connections import LiveConnections
    from chalicelib.entrypoints.connections_api import ConnectionsApi, SecretsManagerWriter

    def build() -> ConnectionsApi:
        s = settings()
        assert isinstance(s.connections, LiveConnections)
        issuer = None
        if s.facade_secret_id:
            from chalicelib.adapters.facade_accounts import account_for_connection

            secret_id = s.facade_secret_id

            def issuer(name: str) -> tuple[str, str | None]:
                return account_for_connection(_boto_client("secretsmanager"), secret_id, name)

        writer = SecretsManagerWriter(_boto_client("secretsmanager"))
        return ConnectionsApi(s, s.connections, connections_table(), writer, issuer, clock())

    return _once("connections_api", build)


def _session() -> Any:
    import boto3

    # One session for every client: each new session reloads botocore's data files (~50 ms).
    return _once("session", boto3.session.Session)


def _boto_client(service: str) -> Any:
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10)
    with _lock:  # a boto3 session is not thread-safe while it creates clients
        return _session().client(service, config=config)


class _OnFirstUse:
    """A boto3 client built when first called. The send function needs EventBridge and Step Functions only
    after its batch is sent: building them then lets the first send start ~25 ms sooner on a cold start."""

    def __init__(self, service: str) -> None:
        self._service = service
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        with _lock:
            if self._client is None:
                self._client = _boto_client(self._service)
        return getattr(self._client, name)


def dynamodb() -> Any:
    return _once("dynamodb", lambda: _boto_client("dynamodb"))


def ledger() -> MessageLedger:
    from chalicelib.adapters.dynamo_ledger import DynamoMessageLedger

    s = settings()
    return _once("ledger", lambda: DynamoMessageLedger(dynamodb(), s.messages_table, s.record_ttl_days))


def opt_outs() -> OptOutStore:
    from chalicelib.adapters.tables import DynamoOptOuts

    return _once("opt_outs", lambda: DynamoOptOuts(dynamodb(), settings().optouts_table))


def templates() -> TemplateStore:
    from chalicelib.adapters.tables import DynamoTemplates

    return _once("templates", lambda: DynamoTemplates(dynamodb(), settings().templates_table))


def sender_queues() -> SenderQueues:
    from chalicelib.adapters.tables import DynamoSenderQueues

    return _once("sender_queues", lambda: DynamoSenderQueues(dynamodb(), settings().senders_table))


def stats() -> StatsStore:
    from chalicelib.adapters.tables import DynamoStats

    return _once("stats", lambda: DynamoStats(dynamodb(), settings().counters_table))


def twilio() -> Twilio:
    from chalicelib.adapters.twilio_api import TwilioApi

    s = settings()
    return _once(
        "twilio",
        lambda: TwilioApi(
            s.twilio_base_url,
            connect_timeout=s.twilio_connect_timeout,
            read_timeout=s.twilio_read_timeout,
            max_attempts=s.twilio_max_attempts,
        ),
    )


def credentials() -> Credentials:
    from chalicelib.adapters.secrets import SecretsCredentials

    return _once("credentials", lambda: SecretsCredentials(secrets_provider(), settings().secret_max_age_seconds))


def clock() -> Callable[[], datetime]:
    from datetime import datetime

    return _once("clock", lambda: lambda: datetime.now(UTC))


def send_service() -> SendService:
    from chalicelib.usecases.send import SendService

    return _once(
        "send_service",
        lambda: SendService(
            settings(),
            ledger(),
            opt_outs(),
            templates(),
            twilio(),
            credentials(),
            stats(),
            clock=clock(),
            senders=sender_queues(),
        ),
    )


def events_client() -> Any:
    return _once("events_client", lambda: _OnFirstUse("events"))


def publisher() -> Events:
    from chalicelib.adapters.events import EventPublisher

    return _once("publisher", lambda: EventPublisher(events_client(), settings().event_bus_name))


def workflow() -> PollWorkflow | None:
    from chalicelib.adapters.workflow import PollWorkflow

    s = settings()
    if not s.state_machine_arn:
        return None
    arn = s.state_machine_arn
    return _once(
        "workflow",
        lambda: PollWorkflow(
            _OnFirstUse("stepfunctions"), arn, s.retry_interval_ms, s.retry_attempts, s.poll_window_seconds
        ),
    )


def send_consumer() -> SendConsumer:
    from chalicelib.usecases.consumer import SendConsumer

    def build() -> SendConsumer:
        return SendConsumer(send_service(), publisher(), workflow(), send_queue(), plans=settings().poll_plan)

    return _once("send_consumer", build)


def tracking() -> TrackingService:
    from concurrent.futures import ThreadPoolExecutor

    from chalicelib.usecases.tracking import TrackingService

    return _once(
        "tracking",
        lambda: TrackingService(
            settings(),
            ledger(),
            opt_outs(),
            twilio(),
            credentials(),
            publisher(),
            stats(),
            clock(),
            ThreadPoolExecutor(max_workers=settings().poll_concurrency, thread_name_prefix="poll"),
        ),
    )


def webhooks() -> Webhooks:
    from chalicelib.entrypoints.webhooks import Webhooks

    return _once("webhooks", lambda: Webhooks(settings(), credentials(), tracking()))


def forwarder() -> CallbackForwarder:
    import requests

    from chalicelib.adapters.events import CallbackForwarder
    from chalicelib.domain.connection import DEFAULT_CONNECTION

    def build() -> Any:
        connection = settings().connection(DEFAULT_CONNECTION)
        key = credentials().signing_key(connection) if connection else None
        secrets = credentials().write_back_secret
        return CallbackForwarder(
            requests.Session(),
            key or "",
            allow_local=settings().allow_local_callbacks,
            accounts=facade_accounts(),
            connections=settings().connections,
            secrets=secrets,
            ledger=ledger(),
            clock=clock(),
            pace=sender_queues(),
            stats=stats(),
        )

    return _once("forwarder", build)


def secrets_provider() -> Any:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    return _once("secrets_provider", lambda: SecretsProvider(boto3_client=_boto_client("secretsmanager")))


def api_keys() -> ApiKeys:
    from chalicelib.entrypoints.api_keys import ApiKeys

    s = settings()
    return _once("api_keys", lambda: ApiKeys(secrets_provider(), s.api_keys_secret_id, s.secret_max_age_seconds))


def messages_api() -> MessagesApi:
    from chalicelib.entrypoints.api import MessagesApi

    s = settings()
    return _once(
        "messages_api",
        lambda: MessagesApi(s, ledger(), templates(), stats(), accept_messages(), clock()),
    )


def accept_messages() -> AcceptMessages:
    from chalicelib.usecases.accept import AcceptMessages

    return _once("accept_messages", lambda: AcceptMessages(send_service(), ledger(), stats(), send_queue(), clock()))


def send_queue() -> SendQueue:
    from chalicelib.adapters.queue import SendQueue

    s = settings()
    return _once("send_queue", lambda: SendQueue(_OnFirstUse("sqs"), s.send_queue, s.send_queue_url))


def connection_check() -> ConnectionCheck:
    import requests

    from chalicelib.usecases.connection_check import ConnectionCheck

    return _once(
        "connection_check",
        lambda: ConnectionCheck(settings(), credentials(), twilio(), requests.post, http_get=requests.get),
    )


def facade_accounts() -> FacadeAccounts:
    from chalicelib.adapters.facade_accounts import FacadeAccounts

    s = settings()
    return _once(
        "facade_accounts", lambda: FacadeAccounts(secrets_provider(), s.facade_secret_id, s.secret_max_age_seconds)
    )


def twilio_facade() -> TwilioFacade:
    from chalicelib.entrypoints.facade import TwilioFacade

    def build() -> TwilioFacade:
        pieces = (facade_accounts(), accept_messages(), ledger(), twilio(), credentials(), publisher(), clock())
        return TwilioFacade(settings(), *pieces)

    return _once("twilio_facade", build)


def dead_letters() -> DeadLetters | None:
    from chalicelib.entrypoints.operations import DeadLetters

    s = settings()
    if not s.send_dlq_url:
        return None
    dlq = s.send_dlq_url
    return _once("dead_letters", lambda: DeadLetters(_OnFirstUse("sqs"), dlq, send_queue().url))


def issue_api_key(name: str) -> str:
    from chalicelib.entrypoints.api_keys import add_api_key

    secret_id = settings().api_keys_secret_id
    if not secret_id:
        raise RuntimeError("API_KEYS_SECRET_ID is not set")
    return add_api_key(_boto_client("secretsmanager"), secret_id, name)


def operations_api() -> OperationsApi:
    from chalicelib.entrypoints.operations import OperationsApi

    return _once("operations_api", lambda: OperationsApi(dead_letters(), issue_api_key))

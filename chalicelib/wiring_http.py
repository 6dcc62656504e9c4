"""The composition root's other half: the HTTP entry points (the API, its keys and operations, the
connections API, the front door, Twilio's webhooks, the connection check), assembled from what wiring.py
builds and cached alike. The functions behind a queue or a state machine need none of it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from chalicelib import wiring  # boto_client through the module: the IAM test records its calls
from chalicelib.wiring import (
    clock,
    connections,
    connections_table,
    credentials,
    facade_accounts,
    ledger,
    on_first_use,
    once,
    secrets_provider,
    send_queue,
    settings,
    stats,
    templates,
    tracking,
    twilio,
    write_back_formats,
)

if TYPE_CHECKING:
    from chalicelib.adapters.tables import DynamoKeyUse
    from chalicelib.entrypoints.api import MessagesApi
    from chalicelib.entrypoints.api_keys import ApiKeys
    from chalicelib.entrypoints.connections_api import ConnectionsApi
    from chalicelib.entrypoints.facade import TwilioFacade
    from chalicelib.entrypoints.operations import DeadLetters, OperationsApi
    from chalicelib.entrypoints.webhooks import Webhooks
    from chalicelib.usecases.accept import AcceptMessages
    from chalicelib.usecases.connection_check import ConnectionCheck


def connections_api() -> ConnectionsApi:
    from chalicelib.adapters.connections import LiveConnections
    from chalicelib.entrypoints.connections_api import ConnectionsApi, SecretsManagerWriter

    def build() -> ConnectionsApi:
        s, live = settings(), connections()
        assert isinstance(live, LiveConnections)  # the API writes managed connections and refreshes the store
        issuer = None
        if s.facade_secret_id:
            from chalicelib.adapters.facade_accounts import account_for_connection

            secret_id = s.facade_secret_id

            def issuer(name: str) -> tuple[str, str | None]:
                return account_for_connection(wiring.boto_client("secretsmanager"), secret_id, name)

        writer = SecretsManagerWriter(wiring.boto_client("secretsmanager"))
        return ConnectionsApi(s, live, connections_table(), writer, issuer, clock())

    return once("connections_api", build)


def webhooks() -> Webhooks:
    from chalicelib.entrypoints.webhooks import Webhooks

    return once("webhooks", lambda: Webhooks(settings(), credentials(), tracking(), connections()))


def api_keys() -> ApiKeys:
    from chalicelib.entrypoints.api_keys import ApiKeys

    s = settings()
    return once(
        "api_keys",
        lambda: ApiKeys(secrets_provider(), s.api_keys_secret_id, s.secret_max_age_seconds, key_use().used),
    )


def key_use() -> DynamoKeyUse:
    from chalicelib.adapters.tables import DynamoKeyUse

    return once("key_use", lambda: DynamoKeyUse(wiring.dynamodb(), settings().counters_table))


def messages_api() -> MessagesApi:
    from chalicelib.entrypoints.api import MessagesApi

    s = settings()
    return once(
        "messages_api",
        lambda: MessagesApi(
            s, ledger(), templates(), stats(), accept_messages(), clock(), connections(), wiring.guard_store()
        ),
    )


def connection_check() -> ConnectionCheck:
    import requests

    from chalicelib.usecases.connection_check import ConnectionCheck

    def build() -> ConnectionCheck:
        formats = write_back_formats()
        return ConnectionCheck(settings(), credentials(), twilio(), requests.post, requests.get, formats, connections())

    return once("connection_check", build)


def twilio_facade() -> TwilioFacade:
    from chalicelib.entrypoints.facade import TwilioFacade

    def build() -> TwilioFacade:
        pieces = (
            facade_accounts(),
            accept_messages(),
            ledger(),
            twilio(),
            credentials(),
            clock(),
        )
        return TwilioFacade(settings(), *pieces, connections())

    return once("twilio_facade", build)


def dead_letters() -> DeadLetters | None:
    from chalicelib.entrypoints.operations import DeadLetters

    s = settings()
    if not s.send_dlq_url:
        return None
    dlq = s.send_dlq_url
    return once("dead_letters", lambda: DeadLetters(on_first_use("sqs"), dlq, send_queue().url))


def forward_dead_letters() -> DeadLetters | None:
    from chalicelib.entrypoints.operations import ForwardDeadLetters

    s = settings()
    if not s.forward_dlq_url or not s.forward_queue_url:
        return None
    dlq, queue = s.forward_dlq_url, s.forward_queue_url
    return once("forward_dead_letters", lambda: ForwardDeadLetters(on_first_use("sqs"), dlq, queue))


def issue_api_key(name: str, role: str = "admin", connections: Sequence[str] = ()) -> str:
    from chalicelib.entrypoints.api_keys import add_api_key

    secret_id = settings().api_keys_secret_id
    if not secret_id:
        raise RuntimeError("API_KEYS_SECRET_ID is not set")
    return add_api_key(wiring.boto_client("secretsmanager"), secret_id, name, role=role, connections=connections)


def operations_api() -> OperationsApi:
    from chalicelib.entrypoints.operations import OperationsApi

    return once("operations_api", lambda: OperationsApi(dead_letters(), issue_api_key, forward_dead_letters()))


def accept_messages() -> AcceptMessages:
    from chalicelib.usecases.accept import AcceptMessages

    validation = wiring.send_service().validation  # accepting judges a request as sending will, with no Twilio
    return once("accept_messages", lambda: AcceptMessages(validation, ledger(), wiring.send_queue(), clock()))

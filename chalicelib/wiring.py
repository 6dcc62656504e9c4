"""Composition root: builds each adapter lazily, once per Lambda container.

Nothing reads the environment or creates a boto3 client at import time; tests
and the local stack call `reset()` or `override(...)` to swap pieces.
"""

from __future__ import annotations

import threading
from datetime import UTC
from typing import Any

from chalicelib.settings import Settings, load_settings

_lock = threading.RLock()
_built: dict[str, Any] = {}


def _once(name: str, build: Any) -> Any:
    with _lock:
        if name not in _built:
            _built[name] = build()
        return _built[name]


def reset() -> None:
    """Forget every built piece (tests, the local stack after changing settings)."""
    with _lock:
        _built.clear()


def override(**pieces: Any) -> None:
    with _lock:
        _built.update(pieces)


def settings() -> Settings:
    result: Settings = _once("settings", load_settings)
    return result


def _boto_client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10)
    return boto3.session.Session().client(service, config=config)


def dynamodb() -> Any:
    return _once("dynamodb", lambda: _boto_client("dynamodb"))


def ledger() -> Any:
    from chalicelib.store import DynamoMessageLedger

    s = settings()
    return _once("ledger", lambda: DynamoMessageLedger(dynamodb(), s.messages_table, s.record_ttl_days))


def opt_outs() -> Any:
    from chalicelib.store import DynamoOptOuts

    return _once("opt_outs", lambda: DynamoOptOuts(dynamodb(), settings().optouts_table))


def templates() -> Any:
    from chalicelib.store import DynamoTemplates

    return _once("templates", lambda: DynamoTemplates(dynamodb(), settings().templates_table))


def twilio() -> Any:
    from chalicelib.twilio_api import TwilioApi

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


def credentials() -> Any:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    from chalicelib.secrets import SecretsCredentials

    return _once(
        "credentials",
        lambda: SecretsCredentials(
            SecretsProvider(boto3_client=_boto_client("secretsmanager")), settings().secret_max_age_seconds
        ),
    )


def clock() -> Any:
    from datetime import datetime

    return _once("clock", lambda: lambda: datetime.now(UTC))


def send_service() -> Any:
    from chalicelib.services import SendService

    return _once(
        "send_service",
        lambda: SendService(settings(), ledger(), opt_outs(), templates(), twilio(), credentials(), clock=clock()),
    )


def send_consumer() -> Any:
    from chalicelib.consumer import SendConsumer

    return _once("send_consumer", lambda: SendConsumer(send_service()))

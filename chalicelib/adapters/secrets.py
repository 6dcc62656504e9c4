"""Twilio credentials from Secrets Manager through Powertools parameters, cached.

The secret is JSON: {"account_sid", "auth_token", "secondary_auth_token"?}. The
secondary token lets an operator rotate the auth token without downtime.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError

from chalicelib.domain.connection import ConnectionSettings
from chalicelib.domain.ports import CredentialsUnavailable
from chalicelib.domain.twilio import TwilioCredentials
from chalicelib.settings import ConfigurationError


def read_json_secret(client: Any, secret_id: str) -> dict[str, Any]:
    """A JSON-object secret read straight through a Secrets Manager client (the issuing code, not the hot path)."""
    value = json.loads(client.get_secret_value(SecretId=secret_id).get("SecretString") or "{}")
    return value if isinstance(value, dict) else {}


class SecretsCredentials:
    def __init__(self, provider: SecretsProvider, max_age_seconds: int = 300) -> None:
        self.provider = provider
        self.max_age = max_age_seconds

    def _read(self, connection: ConnectionSettings) -> Any:
        """The connection's secret (cached), with Powertools' errors translated to ours."""
        try:
            return self.provider.get(connection.secret_id, max_age=self.max_age, transform="json")
        except TransformParameterError as exc:
            raise ConfigurationError(f"secret {connection.secret_id} is not a JSON object") from exc
        except GetParameterError as exc:
            raise CredentialsUnavailable(f"could not read secret {connection.secret_id}") from exc

    def for_connection(self, connection: ConnectionSettings) -> TwilioCredentials:
        value = self._read(connection)
        if not isinstance(value, dict) or not value.get("auth_token"):
            raise ConfigurationError(f"secret {connection.secret_id} needs an `auth_token`")
        account_sid = value.get("account_sid") or connection.account_sid
        if not account_sid:
            raise ConfigurationError(
                f"secret {connection.secret_id} has no `account_sid` and TWILIO_ACCOUNT_SID is not set"
            )
        return TwilioCredentials(
            account_sid=str(account_sid),
            auth_token=str(value["auth_token"]),
            secondary_auth_token=value.get("secondary_auth_token") or None,
        )

    def write_back_secret(self, connection: ConnectionSettings) -> str | None:
        """The secret its write-back needs (a Swrve API key, a CI360 client secret), from its secret."""
        value = self._read(connection)
        secret = value.get("write_back_secret") if isinstance(value, dict) else None
        return str(secret) if secret else None

    def signing_key(self, connection: ConnectionSettings) -> str | None:
        """The key that signs status events forwarded to a request's own status_callback."""
        value = self._read(connection)
        key = value.get("callback_signing_key") if isinstance(value, dict) else None
        return str(key) if key else None

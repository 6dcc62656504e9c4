"""Who may use the Twilio-compatible front door: accounts and API keys the connector issues.

One Secrets Manager secret (FACADE_SECRET_ID) holds them:

    {"accounts": [{"account_sid": "AC…", "auth_token": "…", "connection": "default",
                   "friendly_name": "…", "dedup_seconds": 300, "date_created": "…"}],
     "keys": [{"sid": "SK…", "secret_sha256": "…", "account_sid": "AC…"}]}

An account's token is kept, not only its hash, for the reason Twilio keeps yours: StatusCallbacks are
signed with it (X-Twilio-Signature), and a receiver's RequestValidator recomputes that HMAC from the
token. An API key (SK…) only authenticates, so only its hash is stored, as for the connector's API keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.observability import logger, metrics

ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}\Z")
KEY_SID = re.compile(r"SK[0-9a-f]{32}\Z")


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class FacadeAccount:
    account_sid: str
    auth_token: str
    connection: str | None = None  # None: the default connection
    friendly_name: str = "Twilio connector"
    dedup_seconds: int | None = None  # None: FACADE_DEDUP_SECONDS
    date_created: str | None = None

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> FacadeAccount:
        dedup = entry.get("dedup_seconds")
        return cls(
            account_sid=str(entry["account_sid"]),
            auth_token=str(entry["auth_token"]),
            connection=entry.get("connection") or None,
            friendly_name=str(entry.get("friendly_name") or "Twilio connector"),
            dedup_seconds=int(dedup) if isinstance(dedup, int) and not isinstance(dedup, bool) else None,
            date_created=entry.get("date_created"),
        )


class Refusal(Exception):
    """Why a caller may not in: Twilio's status, code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def basic_credentials(headers: Mapping[str, str]) -> tuple[str, str] | None:
    scheme, _, encoded = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


class FacadeAccounts:
    def __init__(self, provider: Any, secret_id: str | None, max_age: int = 300) -> None:
        self.provider = provider
        self.secret_id = secret_id
        self.max_age = max_age

    def _value(self) -> Mapping[str, Any]:
        if not self.secret_id:
            raise Refusal(401, 20003, "Authenticate")  # no accounts issued: nobody may in
        try:
            value = self.provider.get(self.secret_id, max_age=self.max_age, transform="json")
        except Exception as exc:
            logger.error("front door accounts unavailable", extra={"error": type(exc).__name__})
            raise Refusal(503, 20503, "Service unavailable: the account store could not be read; retry") from exc
        return value if isinstance(value, dict) else {}

    def get(self, account_sid: str) -> FacadeAccount | None:
        for entry in self._value().get("accounts") or []:
            if isinstance(entry, dict) and entry.get("account_sid") == account_sid and entry.get("auth_token"):
                return FacadeAccount.from_entry(entry)
        return None

    def for_connection(self, connection: str) -> FacadeAccount | None:
        """The first account issued for this connection (its token signs the connection's Twilio write-back)."""
        for entry in self._value().get("accounts") or []:
            if isinstance(entry, dict) and entry.get("connection") == connection and entry.get("auth_token"):
                return FacadeAccount.from_entry(entry)
        return None

    def authenticate(self, headers: Mapping[str, str], path_account: str) -> FacadeAccount:
        """The account of the path, if the caller's Basic credentials are its own or one of its keys."""
        presented = basic_credentials(headers)
        if presented is None:
            raise Refusal(401, 20003, "Authenticate")
        user, secret = presented
        account = self.get(path_account) if ACCOUNT_SID.match(path_account) else None
        allowed = False
        if account is not None and user == path_account:
            allowed = hmac.compare_digest(secret_hash(secret), secret_hash(account.auth_token))
        elif account is not None and KEY_SID.match(user):
            digest = secret_hash(secret)
            for key in self._value().get("keys") or []:
                if isinstance(key, dict) and key.get("sid") == user and key.get("account_sid") == path_account:
                    allowed = hmac.compare_digest(digest, str(key.get("secret_sha256") or ""))
        if not allowed or account is None:
            metrics.add_metric(name="FacadeAuthRejected", unit="Count", value=1)
            raise Refusal(401, 20003, "Authenticate")
        return account


class FacadeSetupError(ValueError):
    """The account cannot be issued; the message says why."""


def add_facade_account(
    client: Any,
    secret_id: str,
    name: str,
    connection: str | None = None,
    new_token: Callable[[], str] = lambda: secrets.token_hex(16),
    new_sid: Callable[[], str] = lambda: "AC" + secrets.token_hex(16),
    now: str | None = None,
) -> tuple[str, str]:
    """An account for the Twilio-compatible front door: (Account SID, token), shown once.

    The token is kept in the secret, not only its hash: the front door signs this account's
    StatusCallbacks with it (X-Twilio-Signature), as Twilio signs with yours."""
    from datetime import UTC, datetime

    if not re.fullmatch(r"[A-Za-z0-9 _.-]{1,64}", name):
        raise FacadeSetupError("an account name is 1-64 letters, digits, spaces, '.', '_' or '-'")
    from chalicelib.adapters.secrets import read_json_secret

    value = read_json_secret(client, secret_id)
    accounts = [a for a in value.get("accounts", []) if isinstance(a, dict)]
    if any(a.get("friendly_name") == name for a in accounts):
        raise FacadeSetupError(
            f"an account named {name!r} exists; pick another name (remove the old one in the secret)"
        )
    sid, token = new_sid(), new_token()
    entry = {"account_sid": sid, "auth_token": token, "friendly_name": name}
    entry["date_created"] = now or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    if connection:
        entry["connection"] = connection
    value = {**value, "accounts": [*accounts, entry], "keys": value.get("keys", [])}
    client.put_secret_value(SecretId=secret_id, SecretString=json.dumps(value))
    return sid, token


def account_for_connection(client: Any, secret_id: str, connection: str) -> tuple[str, str | None]:
    """The connection's front-door account: (SID, None) if it has one, else a new one (SID, token)."""
    from chalicelib.adapters.secrets import read_json_secret

    for entry in read_json_secret(client, secret_id).get("accounts", []):
        if isinstance(entry, dict) and entry.get("connection") == connection and entry.get("account_sid"):
            return str(entry["account_sid"]), None
    return add_facade_account(client, secret_id, connection, connection)

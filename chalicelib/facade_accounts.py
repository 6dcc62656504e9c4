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
import re
from collections.abc import Mapping
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

"""API keys: `x-api-key` or `Authorization: Bearer`, checked against SHA-256 hashes in Secrets Manager, each
with a role that names the routes it opens:

- `send`: `POST /messages`, `POST /messages/batch`, `GET /messages/{id}` and `GET /templates/{name}`;
- `read`: the status page's reads — `GET /stats`, `GET /dlq`, messages, templates and connections;
- `admin`: everything, and alone what changes the deployment — templates, connections, keys, DLQ redrive,
  `POST /connection/test`.

A key stored without a role (every key made before roles) is `admin`: it keeps working as it did. A route
this table does not name needs `admin`: a new route is closed until it is given a role.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chalicelib.entrypoints.responses import ApiResult, error
from chalicelib.observability import logger, metrics


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def presented_key(headers: Mapping[str, str]) -> str | None:
    """`x-api-key: <key>` or `Authorization: Bearer <key>`."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    auth = headers.get("authorization") or ""
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


ROLES = ("send", "read", "admin")
DEFAULT_ROLE = "admin"  # keys made before roles
SEND, READ = {"send", "read", "admin"}, {"read", "admin"}
ROUTE_ROLES: dict[tuple[str, str], set[str]] = {
    ("POST", "/messages"): {"send", "admin"},
    ("POST", "/messages/batch"): {"send", "admin"},
    ("GET", "/messages/{message_id}"): SEND,
    ("GET", "/templates/{name}"): SEND,
    ("GET", "/stats"): READ,
    ("GET", "/dlq"): READ,
    ("GET", "/connections"): READ,
    ("GET", "/connections/{name}"): READ,
    ("GET", "/connections/{name}/budget"): READ,
}


def roles_for(method: str, route: str) -> set[str]:
    """The roles whose keys may call this route (its pattern, as the API declares it)."""
    return ROUTE_ROLES.get((method.upper(), route), {"admin"})


class ApiKeys:
    """Key hashes from Secrets Manager ({"keys": [{"name", "sha256", "role"}]}); a key is never stored in clear.
    A revoked key (removed from the secret) is refused once the secret is read again: within `max_age`."""

    def __init__(
        self,
        provider: Any,
        secret_id: str | None,
        max_age: int = 300,
        on_use: Callable[[str, str], None] | None = None,
    ) -> None:
        self.provider = provider
        self.secret_id = secret_id
        self.max_age = max_age
        self.on_use = on_use  # (name, day): the key list's "last used", written once a day per key here
        self._noted: dict[str, str] = {}

    def check(
        self, headers: Mapping[str, str], method: str = "GET", route: str = "", grant: dict[str, Any] | None = None
    ) -> ApiResult | None:
        """None when the caller may proceed (then `grant` holds the key's name, role and the connections it is
        limited to, if any); else the 401/403 to answer (a 403 names the role the route needs)."""
        key = presented_key(headers)
        if key is None:
            return error(401, "unauthorized", "send an API key as `x-api-key` or `Authorization: Bearer <key>`")
        if not self.secret_id:
            return error(403, "forbidden", "no API keys are configured (API_KEYS_SECRET_ID)")
        try:
            value = self.provider.get(self.secret_id, max_age=self.max_age, transform="json")
        except Exception as exc:
            logger.error("API keys unavailable", extra={"error": type(exc).__name__})
            return error(503, "keys_unavailable", "API keys could not be read; retry")
        digest = key_hash(key)
        entries = [k for k in (value or {}).get("keys", []) if isinstance(k, dict)]
        found = next((k for k in entries if hmac.compare_digest(digest, str(k.get("sha256", "")))), None)
        if found is None:
            metrics.add_metric(name="ApiKeyRejected", unit="Count", value=1)
            return error(403, "forbidden", "this API key is not valid")
        role = str(found.get("role") or DEFAULT_ROLE)
        allowed = roles_for(method, route)
        if role not in allowed:
            metrics.add_metric(name="ApiKeyRoleRefused", unit="Count", value=1)
            needed = " or ".join(f"`{r}`" for r in ROLES if r in allowed)
            return error(403, "forbidden", f"{method.upper()} {route} needs a key with role {needed}; this key "
                         f"({found.get('name', '?')}) has role `{role}`")  # fmt: skip
        self._note_use(str(found.get("name", "")))
        if grant is not None:
            limited = found.get("connections")
            grant.update(name=found.get("name"), role=role, connections=frozenset(limited) if limited else None)
        return None

    def _note_use(self, name: str) -> None:
        day = _today()
        if self.on_use is None or self._noted.get(name) == day:
            return
        try:
            self.on_use(name, day)
            self._noted[name] = day
        except Exception as exc:  # a key's last-used day is never worth refusing its request
            logger.warning("API key use not noted", extra={"error": type(exc).__name__})


class KeySetupError(ValueError):
    """The key cannot be made; the message says why."""


KEY_PREFIX = "tck_"  # never '-' first (a command line would read the key as an option), and easy to spot


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def add_api_key(
    client: Any,
    secret_id: str,
    name: str,
    new_key: Callable[[], str] = new_api_key,
    role: str = DEFAULT_ROLE,
    connections: Sequence[str] = (),
) -> str:
    """A new API key for `name` with `role`: its SHA-256 is stored, the key itself is returned once, never kept."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise KeySetupError("a key name is 1-64 letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise KeySetupError(f"a key's role is one of {', '.join(ROLES)}; not {role!r}")
    from chalicelib.adapters.secrets import read_json_secret

    value = read_json_secret(client, secret_id)
    keys = [k for k in value.get("keys", []) if isinstance(k, dict)]
    if any(k.get("name") == name for k in keys):
        raise KeySetupError(f"a key named {name!r} exists; pick another name (remove the old one in the secret)")
    key = new_key()
    entry: dict[str, Any] = {"name": name, "sha256": key_hash(key), "role": role, "created": _today()}
    keys.append({**entry, **({"connections": sorted(set(connections))} if connections else {})})
    client.put_secret_value(SecretId=secret_id, SecretString=json.dumps({**value, "keys": keys}))
    return key


def list_api_keys(client: Any, secret_id: str) -> list[dict[str, Any]]:
    """Each key's name, role, the day it was made and the connections it is limited to; never its hash."""
    from chalicelib.adapters.secrets import read_json_secret

    shown = ("name", "role", "created", "connections")
    entries = [k for k in read_json_secret(client, secret_id).get("keys", []) if isinstance(k, dict)]
    return [{**{k: e[k] for k in shown if k in e}, "role": e.get("role") or DEFAULT_ROLE} for e in entries]


def revoke_api_key(client: Any, secret_id: str, name: str) -> bool:
    """Remove the key named `name`; False if there is none. The functions refuse it once they read the
    secret again (SECRET_MAX_AGE_SECONDS). To rotate: make the new key, move the caller to it, revoke the old."""
    from chalicelib.adapters.secrets import read_json_secret

    value = read_json_secret(client, secret_id)
    keys = [k for k in value.get("keys", []) if isinstance(k, dict)]
    kept = [k for k in keys if k.get("name") != name]
    if len(kept) == len(keys):
        return False
    client.put_secret_value(SecretId=secret_id, SecretString=json.dumps({**value, "keys": kept}))
    return True

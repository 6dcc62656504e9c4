"""`PUT/GET/DELETE /connections/{name}` and `GET /connections`: a thin controller over the connections
table and Secrets Manager. Secrets given in a request go to Secrets Manager, never to DynamoDB, and
no answer ever holds one (a front-door token issued by `"facade": true` is shown once)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from chalicelib.adapters.connections import (
    ConnectionTable,
    LiveConnections,
    connection_from_item,
    describe,
    parse_connection,
)
from chalicelib.domain import rules
from chalicelib.domain.guard_ports import GuardStore
from chalicelib.domain.models import ValidationError
from chalicelib.domain.ports import StoreError
from chalicelib.entrypoints.responses import ApiResult, error, invalid
from chalicelib.observability import logger
from chalicelib.settings import Settings


class SecretWriter(Protocol):
    def merge(self, secret_id: str, values: Mapping[str, str]) -> None:
        """Create the secret, or add these keys to it (keeping the others)."""
        ...

    def delete(self, secret_id: str) -> None: ...


class SecretsManagerWriter:
    def __init__(self, client: Any) -> None:
        self.client = client

    def merge(self, secret_id: str, values: Mapping[str, str]) -> None:
        import json

        from botocore.exceptions import BotoCoreError, ClientError

        errors = self.client.exceptions
        try:
            try:
                current = json.loads(self.client.get_secret_value(SecretId=secret_id).get("SecretString") or "{}")
            except errors.ResourceNotFoundException:
                self.client.create_secret(Name=secret_id, SecretString=json.dumps(dict(values)))
                return
            except errors.InvalidRequestException:  # deleted, within its recovery window: a connection made again
                self.client.restore_secret(SecretId=secret_id)
                current = {}  # what the deleted connection held is not carried over
            merged = {**(current if isinstance(current, dict) else {}), **values}
            self.client.put_secret_value(SecretId=secret_id, SecretString=json.dumps(merged))
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"Secrets Manager did not take the connection's secret: {exc}") from exc

    def delete(self, secret_id: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_secret(SecretId=secret_id, RecoveryWindowInDays=7)
        except self.client.exceptions.ResourceNotFoundException:
            return
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"Secrets Manager did not delete the connection's secret: {exc}") from exc


FacadeIssuer = Callable[[str], "tuple[str, str | None]"]  # connection name -> (account SID, token or None)


class ConnectionsApi:
    def __init__(
        self,
        settings: Settings,
        live: LiveConnections,
        table: ConnectionTable,
        secrets: SecretWriter,
        issue_facade: FacadeIssuer | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.live = live
        self.table = table
        self.secrets = secrets
        self.issue_facade = issue_facade
        self.clock = clock

    def secret_id(self, name: str) -> str:
        return f"{self.settings.connection_secret_prefix or 'twilio-connector/twilio/'}{name}"

    def put(self, name: str, body: Any) -> ApiResult:
        if name in self.live.fixed:
            return error(409, "deploy_time_connection", f"`{name}` is set at deploy time; change it there", "name")
        try:
            existing = self.table.get(name)
            item, secrets = parse_connection(name, body, existing, self.settings.allow_local_callbacks)
        except ValidationError as exc:
            return invalid(exc)
        except StoreError as exc:
            return self._unavailable(exc)
        item.update(secret_id=self.secret_id(name), updated_at=rules.iso(self.clock()))
        try:
            if secrets:
                self.secrets.merge(item["secret_id"], {**secrets, "account_sid": item["account_sid"]})
            if item.get("is_default"):  # one default: the others give it up
                for other in self.table.all():
                    if other["name"] != name and other.get("is_default"):
                        self.table.put({**other, "is_default": False})
            self.table.put(item)
        except StoreError as exc:
            return self._unavailable(exc)
        self.live.refresh()
        answer = describe(self.live.managed().get(name) or connection_from_item(item))
        if isinstance(body, dict) and body.get("facade") and self.issue_facade is not None:
            sid, token = self.issue_facade(name)
            answer["facade"] = {"account_sid": sid, **({"auth_token": token} if token else {})}
            if token:
                answer["facade"]["note"] = "the token is shown once; only this answer holds it"
        return ApiResult(201 if existing is None else 200, answer)

    def get(self, name: str) -> ApiResult:
        connection = self.live.get(name)
        if connection is None:
            return error(404, "not_found", f"no connection named `{name}`", "name")
        return ApiResult(200, describe(connection))

    def list(self) -> ApiResult:
        return ApiResult(200, {"connections": [describe(self.live[name]) for name in sorted(self.live)]})

    def delete(self, name: str) -> ApiResult:
        if name in self.live.fixed:
            return error(409, "deploy_time_connection", f"`{name}` is set at deploy time; remove it there", "name")
        try:
            item = self.table.get(name)
            if item is None:
                return error(404, "not_found", f"no connection named `{name}`", "name")
            self.table.delete(name)
            self.secrets.delete(str(item["secret_id"]))
        except StoreError as exc:
            return self._unavailable(exc)
        self.live.refresh()
        return ApiResult(200, {"deleted": name})

    @staticmethod
    def _unavailable(exc: Exception) -> ApiResult:
        logger.error("connections unavailable", extra={"error": str(exc)})
        return error(503, "storage_unavailable", "the connections table is unavailable; retry")


def segment_budget(connections: Mapping[str, Any], store: GuardStore, name: str, body: Any, now: datetime) -> ApiResult:
    """`GET /connections/{name}/budget` (today's spend against the budget) and `POST` with `add_segments`
    (an admin's release: today's budget grows, and the release function sends what it held, within a minute)."""
    connection = connections.get(name)
    if connection is None:
        return error(404, "not_found", f"no connection named `{name}`", "name")
    limit = connection.guardrails.daily_segments if connection.guardrails else None
    if limit is None:
        return error(409, "no_budget", f"`{name}` has no `guardrails.daily_segments`; set one with PUT", "name")
    if body is not None:
        add = body.get("add_segments") if isinstance(body, dict) else None
        if isinstance(add, bool) or not isinstance(add, int) or not 1 <= add <= 100_000_000:
            return invalid(ValidationError("add_segments", "`add_segments` must be an integer from 1 to 100000000"))
        spent, extra = store.add_segments(name, add, now, limit)
        logger.info("segment budget raised for today", extra={"connection": name, "added": add})
    else:
        spent, extra = store.spend(name, now)
    allowed = limit + extra
    answer = {"connection": name, "day": rules.day_of(now), "daily_segments": limit, "added_today": extra}
    return ApiResult(
        200, {**answer, "spent": spent, "remaining": max(0, allowed - spent), "exhausted": spent >= allowed}
    )

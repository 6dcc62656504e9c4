"""`tealium`: Tealium's Collect HTTP API, v1 (docs.tealium.com/platforms/http-api/endpoint) or the
authenticated v3 (docs.tealium.com/api/v3/http-api/about), one event per change. AudienceStream knows a
visitor by `tealium_visitor_id` or by a known visitor ID attribute (that page, "Visitor identifiers"): the
connection maps request metadata to such attributes (`write_back.attributes`). At most 100 events/s per
Tealium account, across every forward."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from chalicelib.adapters.writeback.base import Format, first_of, mapped, twilio_status
from chalicelib.domain import rules
from chalicelib.domain.connection import ConnectionSettings, WriteBack
from chalicelib.domain.events import OPTED_OUT, REPLY_RECEIVED, STATUS_CHANGED
from chalicelib.domain.models import ValidationError
from chalicelib.domain.writeback import Check, Context, CredentialsRefused, ForwardFailed, NotDeliverable, Request

V1_URL = "https://collect.tealiumiq.com/event"
# v3 and its token exchange (docs.tealium.com/api/v3/getting-started/authentication): username and API key
# for a JWT that lasts 30 minutes and must be reused, not made per call.
V3_URL = "https://collect.tealiumiq.com/v3/collect/event"
AUTH_URL = "https://platform.tealiumapis.com/v3/auth/accounts/{account}/profiles/{profile}"
TOKEN_SECONDS = 25 * 60
RATE = 100.0  # events/s Tealium's HTTP API takes (docs.tealium.com/api/v3/http-api/about; v1 alike)
RESERVED = ("tealium_account", "tealium_profile", "tealium_datasource", "tealium_event")
VISITOR = ("tealium_visitor_id", "visitor_id")  # where the visitor id is read, first found wins


def v3(write_back: WriteBack) -> bool:
    return write_back.options.get("api") == "v3"


class BearerTokens:
    """Tokens reused until shortly before they expire, per (URL, user): Tealium throttles a client that
    exchanges its key for every call. One exchange at a time: concurrent forwards wait for its token."""

    def __init__(self, lifetime: float = TOKEN_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime = lifetime
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}

    def get(self, key: tuple[str, str], fetch: Callable[[], str]) -> str:
        with self._lock:
            held = self._tokens.get(key)
            if held is not None and held[1] > self.clock():
                return held[0]
            token = fetch()
            self._tokens[key] = (token, self.clock() + self.lifetime)
            return token

    def forget(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return self._tokens.pop(key, None) is not None


class TealiumFormat(Format):
    name = "tealium"
    credentials_hint = "check the connection's options.username and its API key"
    required_options = ("account", "profile")

    def __init__(self) -> None:
        self.tokens = BearerTokens()

    def request(self, detail_type: str, detail: Mapping[str, Any], context: Context) -> Request | None:
        config = context.configured
        if config is None:
            raise NotDeliverable("the message's connection has no `tealium` write-back configured")
        request = tealium(detail_type, detail, config)  # no identity: said before waiting for a turn
        context.wait_for_turn(f"tealium:{config.options['account']}", RATE)
        if not v3(config):
            return request
        exchange = token_request(config, context.secret())

        def fetch() -> str:
            status, answer = context.exchange(exchange)
            if status in (400, 401, 403):
                raise CredentialsRefused(
                    f"tealium refused the connector's credentials ({status}): {self.credentials_hint}"
                )
            token = answer.get("token") if isinstance(answer, dict) else None
            if status != 200 or not isinstance(token, str) or not token:
                raise ForwardFailed(f"tealium's token exchange answered {status}; retried later")
            return token

        token = self.tokens.get((exchange.url, config.options["username"]), fetch)
        return Request(request.url, request.body, {**request.headers, "Authorization": f"Bearer {token}"})

    def forget_credentials(self, connection: ConnectionSettings | None) -> bool:
        config = connection.write_back if connection else None
        if config is None or config.format != self.name or not v3(config):
            return False
        return self.tokens.forget((token_request(config, "").url, config.options["username"]))

    def check(self, config: WriteBack, secret: str) -> Check | None:
        if not v3(config):
            return None  # v1 takes no credentials
        exchange = token_request(config, secret)
        return Check("POST", exchange.url, exchange.headers, exchange.body)

    def needs_secret(self, options: Mapping[str, str]) -> bool:
        return options.get("api") == "v3"  # the API key

    def validate(self, options: Mapping[str, str], attributes: Mapping[str, str], allow_local: bool) -> None:
        super().validate(options, attributes, allow_local)
        if options.get("api", "v1") not in ("v1", "v3"):
            raise ValidationError(
                "write_back.options.api", "`options.api` is `v1` (Collect HTTP API) or `v3` (authenticated)"
            )
        if options.get("api") == "v3" and not options.get("username"):
            raise ValidationError("write_back.options.username", "the `tealium` v3 write-back needs `options.username`")
        taken = sorted(set(attributes) & set(RESERVED))
        if taken:
            raise ValidationError(f"write_back.attributes.{taken[0]}", f"`{taken[0]}` is set by the connector")
        auth_url = options.get("auth_url")
        refusal = rules.callback_target_refusal(auth_url, allow_local) if auth_url else None
        if refusal:
            raise ValidationError("write_back.options.auth_url", f"`options.auth_url` {refusal}")


def tealium(detail_type: str, detail: Mapping[str, Any], write_back: WriteBack) -> Request:
    known = mapped(write_back, detail)
    visitor = known.pop("tealium_visitor_id", None) or first_of(detail.get("metadata") or {}, VISITOR)
    if visitor is None and not known:
        wanted = [f"metadata.{n}" for n in VISITOR] + [f"metadata.{k}" for k in write_back.attributes.values()]
        raise NotDeliverable(
            f"the `tealium` write-back needs the recipient's visitor id or a known visitor attribute: "
            f"none of {', '.join(dict.fromkeys(wanted))} is set (map more with write_back.attributes)"
        )
    event = {STATUS_CHANGED: f"sms_{twilio_status(detail)}", OPTED_OUT: "sms_opt_out", REPLY_RECEIVED: "sms_reply"}
    body = {
        **known,
        "tealium_account": write_back.options["account"],
        "tealium_profile": write_back.options["profile"],
        "tealium_datasource": write_back.options.get("datasource"),
        "tealium_event": event.get(detail_type, "sms_event"),
        "tealium_visitor_id": visitor,
        "message_id": detail.get("id") or detail.get("in_reply_to"),
        "message_status": detail.get("status"),
        "error_code": detail.get("error_code"),
        "connection": detail.get("connection"),
        "reply_body": detail.get("body") if detail_type == REPLY_RECEIVED else None,
    }
    clean = {k: v for k, v in body.items() if v is not None}
    default = V3_URL if v3(write_back) else V1_URL
    return Request(write_back.url or default, json.dumps(clean), {"Content-Type": "application/json"})


def token_request(write_back: WriteBack, api_key: str) -> Request:
    """The v3 token exchange: form-encoded username and API key, answered {"token", "host"}."""
    options = write_back.options
    url = options.get("auth_url") or AUTH_URL.format(
        account=quote(options["account"], safe=""), profile=quote(options["profile"], safe="")
    )
    body = urlencode({"username": options["username"], "key": api_key})
    return Request(url, body, {"Content-Type": "application/x-www-form-urlencoded"})

"""`json`: the connector's own JSON to a request's `status_callback` (or a connection's URL), signed with
X-Connector-Timestamp and X-Connector-Signature (docs/platforms.md, "Connections and write-back")."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from chalicelib.adapters.writeback.base import Format
from chalicelib.domain.events import OPTED_OUT, STATUS_CHANGED
from chalicelib.domain.writeback import Context, ForwardFailed, Request

SIGNATURE_HEADER = "X-Connector-Signature"
TIMESTAMP_HEADER = "X-Connector-Timestamp"
# Added to events after this body was fixed: kept out of it, so its receivers' contract stays as it was.
NOT_IN_JSON = ("sid", "raw_dlr_done_date", "twilio_fields")


def sign(key: str, timestamp: str, body: str) -> str:
    """`v1=` + hex HMAC-SHA256 of "<timestamp>.<body>": what a receiver recomputes to trust a forward."""
    return "v1=" + hmac.new(key.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()


class JsonFormat(Format):
    name = "json"
    credentials_hint = "the receiver refused X-Connector-Signature: give it the callback_signing_key"

    def request(self, detail_type: str, detail: Mapping[str, Any], context: Context) -> Request | None:
        url = detail.get("status_callback") or (context.configured.url if context.configured else None)
        if not url:
            return None
        if not context.signing_key:
            raise ForwardFailed("no `callback_signing_key` in the Twilio secret: status_callback forwarding is off")
        hidden: tuple[str, ...] = ("status_callback", "write_back", "connection", "account_sid", "created_as")
        hidden += NOT_IN_JSON + (("in_reply_to",) if detail_type == OPTED_OUT else ())
        body = json.dumps({k: v for k, v in detail.items() if k not in hidden}, separators=(",", ":"))
        timestamp = str(int(context.now if context.now is not None else time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(context.signing_key, timestamp, body),
        }
        if detail_type != STATUS_CHANGED:
            headers["X-Connector-Event"] = detail_type
        return Request(str(url), body, headers)

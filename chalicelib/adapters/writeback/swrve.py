"""`swrve`: Swrve's Events API (docs.swrve.com, Swrve Events API guide), with the event names Swrve's Twilio
integration uses: `Queued`, `Sent`, `Delivered`, `Undelivered`, `Failed`, and `black_listed_error` on STOP or
21610. Not paced: Swrve documents no request rate, only about 10 events a minute per user on average."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from chalicelib.adapters.writeback.base import Format, first_of, opted_out, twilio_status
from chalicelib.domain.connection import WriteBack
from chalicelib.domain.events import STATUS_CHANGED
from chalicelib.domain.writeback import Context, NotDeliverable, Request

NAMES = {"queued": "Queued", "sent": "Sent", "delivered": "Delivered", "undelivered": "Undelivered"}
BLACKLISTED = "black_listed_error"  # Swrve's name for a recipient who replied STOP (or 21610)
USER = ("swrve_user_id", "user_id", "user")  # where the recipient's Swrve user id is read, first found wins


class SwrveFormat(Format):
    name = "swrve"
    credentials_hint = "check the connection's secret, the Swrve app's API key"
    required_options = ("app_id",)
    secret_required = True  # the app's API key

    def request(self, detail_type: str, detail: Mapping[str, Any], context: Context) -> Request | None:
        if context.configured is None:
            raise NotDeliverable("the message's connection has no `swrve` write-back configured")
        if swrve_name(detail_type, detail) is None:
            return None
        return swrve(detail_type, detail, context.configured, context.secret())


def swrve_name(detail_type: str, detail: Mapping[str, Any]) -> str | None:
    if opted_out(detail_type, detail):
        return BLACKLISTED
    if detail_type != STATUS_CHANGED:
        return None  # a reply: Swrve's Twilio integration reports opt-outs only
    status = twilio_status(detail)
    return NAMES.get(status, "Failed" if status == "failed" else None)  # accepted, read…: no Swrve event


def swrve(detail_type: str, detail: Mapping[str, Any], write_back: WriteBack, api_key: str) -> Request | None:
    name = swrve_name(detail_type, detail)
    if name is None:
        return None
    user = first_of(detail.get("metadata") or {}, USER)
    if user is None:
        names = " or ".join(f"metadata.{n}" for n in USER)
        raise NotDeliverable(f"the `swrve` write-back needs the recipient's Swrve user id in {names}")
    host = "eu-api" if write_back.options.get("region") == "eu" else "api"
    url = write_back.url or f"https://{write_back.options['app_id']}.{host}.swrve.com/1/event"
    payload = {k: detail.get(k) for k in ("id", "status", "error_code") if detail.get(k) is not None}
    form = {
        "api_key": api_key,
        "user": user,
        "name": name,
        "app_version": write_back.options.get("app_version", "1.0"),
        "swrve_payload": json.dumps(payload, separators=(",", ":")),
    }
    return Request(url, urlencode(form), {"Content-Type": "application/x-www-form-urlencoded"})

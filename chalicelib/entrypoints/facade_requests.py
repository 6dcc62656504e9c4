"""Reading requests as Twilio's Messages API takes them, from callers that speak Twilio.

Bodies are decided by content, never refused with a 415: JSON if the body is a JSON object,
multipart/form-data when its Content-Type says so, else urlencoded (repeated names kept).
Callers' quirks are read as they meant them: SAS CI360 inserts raw values, so an unescaped `+`
arrives as a space, and `To= 15551234567` is `+15551234567`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl

from chalicelib.domain.json_reader import read_json
from chalicelib.domain.models import TWILIO_ALIASES, ValidationError

MAX_BODY_BYTES = 128 * 1024  # a create with 10 media URLs and 1,600 characters is under 32 KB
MAX_FIELDS = 200
REPEATED = {"MediaUrl", "PersistentAction"}
PLUS_LOST = re.compile(r" [0-9]{8,15}\Z")  # `+` decoded as a space
NUMBER_PARAMS = {"To", "From", "FallbackFrom"}


class BadRequest(Exception):
    """The body cannot be read at all."""


@dataclass(frozen=True)
class FacadeRequest:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    @classmethod
    def from_function_url(cls, event: Mapping[str, Any]) -> FacadeRequest:
        """A Lambda function URL request (payload format 2.0)."""
        body = event.get("body") or ""
        raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
        http = (event.get("requestContext") or {}).get("http") or {}
        return cls(
            method=str(http.get("method") or "GET").upper(),
            path=str(event.get("rawPath") or "/"),
            query=dict(parse_qsl(event.get("rawQueryString") or "", keep_blank_values=True)),
            headers={str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()},
            body=raw,
        )

    def pairs(self) -> list[tuple[str, Any]]:
        """The body's parameters in order; a JSON list value stands for a repeated name."""
        if len(self.body) > MAX_BODY_BYTES:
            raise BadRequest(f"the body is over {MAX_BODY_BYTES} bytes")
        text = self.body.lstrip()
        content_type = self.headers.get("content-type", "")
        if text.startswith(b"{"):
            try:
                data = read_json(text)
            except ValidationError as exc:
                raise BadRequest(f"the body starts like JSON but is refused: {exc.message}") from exc
            if not isinstance(data, dict):
                raise BadRequest("a JSON body must be an object")
            pairs: list[tuple[str, Any]] = []
            for key, value in data.items():
                pairs += [(key, v) for v in value] if isinstance(value, list) else [(key, value)]
        else:
            try:
                pairs = list(parse_form(self.body, content_type))
            except UnicodeDecodeError as exc:
                raise BadRequest("the body is not UTF-8") from exc
        if len(pairs) > MAX_FIELDS:
            raise BadRequest(f"the body has more than {MAX_FIELDS} parameters")
        return pairs


def parse_form(body: bytes, content_type: str) -> list[tuple[str, str]]:
    """Parameters as Twilio takes them: urlencoded or multipart/form-data, repeated names kept."""
    if not content_type.lower().startswith("multipart/form-data"):
        return parse_qsl(body.decode(), keep_blank_values=True)
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: list[tuple[str, str]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields.append((str(name), str(part.get_content()).removesuffix("\r\n")))
    return fields


@dataclass(frozen=True)
class CreateParams:
    """A create as the accept use case takes it, and what the front door keeps aside."""

    request: dict[str, Any]  # canonical names, as POST /messages takes them
    idempotency_key: str | None
    ignored: tuple[str, ...]  # names Twilio's create does not have


def create_params(pairs: list[tuple[str, Any]], header_key: str | None) -> CreateParams:
    request: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    ignored: list[str] = []
    key = header_key
    for name, value in pairs:
        if name.startswith("Meta.") and len(name) > 5:
            metadata[name[5:]] = value
        elif name == "IdempotencyKey":
            key = key or (str(value) if value not in (None, "") else None)
        elif name not in TWILIO_ALIASES:
            ignored.append(name)
        elif name in REPEATED:
            if value not in (None, ""):
                request.setdefault(TWILIO_ALIASES[name], []).append(value)
        elif value not in (None, ""):  # an empty form field is an absent one, as Twilio reads it
            if name in NUMBER_PARAMS and isinstance(value, str) and PLUS_LOST.match(value):
                value = "+" + value[1:]
            request[TWILIO_ALIASES[name]] = value
    if metadata:
        request["metadata"] = metadata
    if key is not None:
        request["idempotency_key"] = key
    return CreateParams(request, key, tuple(dict.fromkeys(ignored)))

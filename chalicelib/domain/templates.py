"""Placeholders and named templates with field maps (docs/user-guide.md, "The send request").

Two placeholder styles are filled from the request's `fields`:
`<First Name>` (HCL Unica; names may contain spaces) and `{{$firstName}}` (SAS CI360).
A placeholder without a value is an error naming it, never a message that reads
"Hello <First Name>".
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.domain import rules
from chalicelib.domain.models import SendRequest, ValidationError, is_name
from chalicelib.domain.rules import ConnectorCode

# A name starts with a letter and may hold letters, digits, spaces, `_`, `-` and `.`;
# it cannot end in a space, so "a < b > c" is left alone.
ANGLE = re.compile(r"<([A-Za-z](?:[A-Za-z0-9 _.\-]*[A-Za-z0-9_.\-])?)>")
CURLY = re.compile(r"\{\{\s*\$([A-Za-z_][A-Za-z0-9_.\-]*)\s*\}\}")
TO_KEY = "to"


@dataclass(frozen=True)
class Template:
    """A stored message shape plus the map from the caller's field names to its inputs."""

    name: str
    body: str | None = None
    media_urls: tuple[str, ...] = ()
    from_: str | None = None
    messaging_service_sid: str | None = None
    connection: str | None = None
    # target ("to" or a placeholder name) -> the caller's field name
    field_map: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "field_map": dict(self.field_map)}
        for key, value in (
            ("body", self.body),
            ("media_urls", list(self.media_urls) or None),
            ("from", self.from_),
            ("messaging_service_sid", self.messaging_service_sid),
            ("connection", self.connection),
        ):
            if value is not None:
                data[key] = value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Template:
        return cls(
            name=str(data["name"]),
            body=data.get("body"),
            media_urls=tuple(data.get("media_urls") or ()),
            from_=data.get("from"),
            messaging_service_sid=data.get("messaging_service_sid"),
            connection=data.get("connection"),
            field_map=dict(data.get("field_map") or {}),
        )


# A body before its placeholders are filled: ten times what a message may hold once rendered, so
# every scan of it stays small (40,000 placeholders took 10 s before sizes were checked first).
MAX_UNRENDERED_CHARS = 16_000


def placeholders(text: str) -> list[str]:
    """Placeholder names in order of first appearance (one pass; names kept in an ordered dict)."""
    found: dict[str, int] = {}
    for match in [*ANGLE.finditer(text), *CURLY.finditer(text)]:
        name, at = match.group(1), match.start()
        found[name] = min(at, found.get(name, at))
    return sorted(found, key=found.__getitem__)


def check_unrendered_size(text: str, field: str = "body") -> None:
    if len(text) > MAX_UNRENDERED_CHARS:
        raise ValidationError(
            field, f"`{field}` must be at most {MAX_UNRENDERED_CHARS} characters before placeholders are filled", 21617
        )


def _value(fields: Mapping[str, Any], key: str) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return text if text.strip() else None


def render(text: str, fields: Mapping[str, Any], field_map: Mapping[str, str] | None = None) -> str:
    """Fill every placeholder; a missing value raises ValidationError naming the placeholder."""
    field_map = field_map or {}
    missing = [name for name in placeholders(text) if _value(fields, field_map.get(name, name)) is None]
    if missing:
        described = ", ".join(f"<{n}>" + _via(field_map, n) for n in missing)
        raise ValidationError(
            "fields",
            f"no value for placeholder {described}; add it to `fields`",
            ConnectorCode.TEMPLATE_MISSING_VALUE,
        )

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return _value(fields, field_map.get(name, name)) or ""

    return CURLY.sub(fill, ANGLE.sub(fill, text))


def _via(field_map: Mapping[str, str], name: str) -> str:
    source = field_map.get(name)
    return f" (field `{source}`)" if source and source != name else ""


def apply_template(req: SendRequest, template: Template | None) -> SendRequest:
    """Merge a named template under the request (the request's own values win) and render."""
    field_map: Mapping[str, str] = {}
    changes: dict[str, Any] = {}
    if template is not None:
        field_map = template.field_map
        changes = {
            "body": req.body if req.body is not None else template.body,
            "media_urls": req.media_urls or template.media_urls,
            "connection": req.connection or template.connection,
        }
        if req.from_ is None and req.messaging_service_sid is None:
            changes["from_"] = template.from_
            changes["messaging_service_sid"] = template.messaging_service_sid
        if req.to is None and TO_KEY in field_map:
            to = _value(req.fields, field_map[TO_KEY])
            if to is None:
                raise ValidationError(
                    "to",
                    f"template `{template.name}` takes `to` from field `{field_map[TO_KEY]}`, which is missing",
                    21604,
                )
            changes["to"] = to.strip()
    body = changes.get("body", req.body)
    if body:
        check_unrendered_size(body)  # sizes first: the scans below stay linear and small
        changes["body"] = render(body, req.fields, field_map)
    return dataclasses.replace(req, **changes) if changes else req


MAX_TEMPLATE_BYTES = 64 * 1024  # far below DynamoDB's 400 KB item


def parse_template(name: str, body: Any) -> Template:
    """A template as PUT: known fields only, and a field map that can fill every placeholder."""
    if not isinstance(body, dict):
        raise ValidationError("", "the template must be a JSON object")
    if len(json.dumps(body)) > MAX_TEMPLATE_BYTES:  # sizes first: DynamoDB takes 400 KB, the rest scans it
        raise ValidationError("", f"a template must be at most {MAX_TEMPLATE_BYTES // 1024} KB as JSON")
    allowed = {"body", "media_urls", "from", "messaging_service_sid", "connection", "field_map"}
    unknown = sorted(set(body) - allowed - {"name"})
    if unknown:
        raise ValidationError(
            unknown[0], f"unknown field `{unknown[0]}`; a template has {', '.join(sorted(allowed))}", 20001
        )
    if not is_name(name):
        raise ValidationError("name", "a template name must be 1-128 printable characters, no space at either end")
    text = body.get("body")
    media = body.get("media_urls") or []
    if text is not None and not isinstance(text, str):
        raise ValidationError("body", "`body` must be a string")
    check_unrendered_size(text or "")
    if not isinstance(media, list) or not all(
        isinstance(m, str) and m.startswith(("http://", "https://")) for m in media
    ):
        raise ValidationError("media_urls", "`media_urls` must be a list of http(s) URLs", 21620)
    if not text and not media:
        raise ValidationError("body", "a template needs a `body` or `media_urls`", 21602)
    field_map = body.get("field_map") or {}
    if not isinstance(field_map, dict) or not all(isinstance(v, str) and v for v in field_map.values()):
        raise ValidationError("field_map", "`field_map` must map names to the caller's field names")
    used = placeholders(text or "")
    unused = sorted(set(field_map) - {TO_KEY, *used})
    if unused:
        raise ValidationError("field_map", f"`field_map` maps `{unused[0]}`, which the body does not use")
    if field_map:
        unmapped = [p for p in used if p not in field_map]
        if unmapped:
            raise ValidationError(
                "field_map", f"placeholder <{unmapped[0]}> has no entry in `field_map`, so nothing can fill it"
            )
    connection = body.get("connection")
    if connection is not None and (not isinstance(connection, str) or not is_name(connection)):
        raise ValidationError("connection", "`connection` must be a connection's name (1-128 printable characters)")
    sender, service = body.get("from"), body.get("messaging_service_sid")
    if sender is not None and (not isinstance(sender, str) or not rules.is_valid_sender(sender)):
        raise ValidationError(
            "from", "`from` must be an E.164 number, a short code or an alphanumeric sender ID", 21212
        )
    if service is not None and (not isinstance(service, str) or not rules.MESSAGING_SERVICE_SID.match(service)):
        raise ValidationError("messaging_service_sid", "`messaging_service_sid` must match ^MG[0-9a-fA-F]{32}$", 21705)
    return Template(
        name=name,
        body=text,
        media_urls=tuple(media),
        from_=sender,
        messaging_service_sid=service,
        connection=body.get("connection"),
        field_map=dict(field_map),
    )

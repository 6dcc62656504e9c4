"""What makes a request a message, and what refuses one without calling Twilio: accepting (the API, the
front door) and sending (the queue's consumer) both take this one object, so a request is judged the same
at either door, and accepting needs no Twilio adapter."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from chalicelib.domain import rules
from chalicelib.domain.connection import ConnectionSettings, require_connection
from chalicelib.domain.models import OutboundMessage, ValidationError, check_storable, parse_send_request
from chalicelib.domain.outbound import validate_outbound
from chalicelib.domain.ports import OptOutStore, TemplateStore
from chalicelib.domain.rules import ConnectorCode
from chalicelib.domain.templates import apply_template
from chalicelib.settings import Settings

if TYPE_CHECKING:
    from chalicelib.domain.guardrails import Guardrails


def ledger_attrs(msg: OutboundMessage) -> dict[str, Any]:
    return {
        "to": msg.to,
        "from": msg.from_,
        "messaging_service_sid": msg.messaging_service_sid,
        "connection": msg.connection,
        "num_segments": msg.num_segments,
        "encoding": msg.encoding,
        "num_media": len(msg.media_urls) or None,  # MM, not SM, in the Twilio-shaped sid (rules.message_sid)
        "metadata": dict(msg.metadata) or None,
        "body_sha256": rules.body_digest(msg.body),
        "status_callback": msg.status_callback,
        "idempotency_key": msg.idempotency_key,
        "write_back": msg.write_back if msg.write_back != "none" else None,
    }


def partial_attrs(raw: Any) -> dict[str, Any]:
    """What an invalid request can still tell its record: who it was for, if that much is readable."""
    if not isinstance(raw, dict):
        return {}
    attrs: dict[str, Any] = {}
    for key, aliases in (("to", ("to", "To")), ("from", ("from", "From"))):
        value = next((raw[a] for a in aliases if isinstance(raw.get(a), str)), None)
        if value is not None and len(value) <= 64:
            attrs[key] = value
    if isinstance(raw.get("metadata"), dict):
        try:
            check_storable("metadata", raw["metadata"])
            attrs["metadata"] = raw["metadata"]
        except ValidationError:
            pass  # what DynamoDB would refuse is left off the error record
    return attrs


class Validation:
    def __init__(
        self,
        settings: Settings,
        templates: TemplateStore,
        opt_outs: OptOutStore,
        connections: Mapping[str, ConnectionSettings] | None = None,
    ) -> None:
        self.settings = settings
        self.templates = templates
        self.opt_outs = opt_outs
        # deploy-time and managed connections (wiring gives the live store); else the deploy-time ones
        self.connections = settings.connections if connections is None else connections

    def prepare(self, raw: Any, now: datetime) -> OutboundMessage:
        """Parse, apply the named template, pick the connection, and validate every rule."""
        req = parse_send_request(raw)
        template = None
        if req.template is not None:
            template = self.templates.get(req.template)
            if template is None:
                raise ValidationError(
                    "template", f"no template named `{req.template}`", ConnectorCode.TEMPLATE_NOT_FOUND
                )
        req = apply_template(req, template)
        connection = self.connection(req.connection)
        message = validate_outbound(
            req,
            connection.name,
            connection.from_numbers,
            connection.messaging_service_sid,
            now,
            self.settings.allow_local_callbacks,
        )
        if message.write_back is None:
            # A request's own status_callback is where its caller asked to hear (the connector's JSON); else the
            # connection's write-back. An explicit `write_back` wins over both.
            chosen = (
                "json" if message.status_callback else connection.write_back.format if connection.write_back else None
            )
            message = dataclasses.replace(message, write_back=chosen)
        return self._spend_guard(message, connection.guardrails)

    @staticmethod
    def _spend_guard(message: OutboundMessage, guard: Guardrails | None) -> OutboundMessage:
        """The connection's SmartEncoded (unless the request says otherwise) and its max segments."""
        if guard is None:
            return message
        from chalicelib.domain.guardrails import segments_refusal, smart_encode

        if guard.smart_encoded and message.smart_encoded is None and message.body:
            info = rules.segment_info(smart_encode(message.body))
            message = dataclasses.replace(
                message, smart_encoded=True, encoding=info.encoding, num_segments=info.num_segments
            )
        if guard.max_segments is not None and message.body and message.num_segments > guard.max_segments:
            body = smart_encode(message.body) if message.smart_encoded else message.body
            refusal = segments_refusal(body, guard.max_segments)
            if refusal:
                raise ValidationError("body", refusal, ConnectorCode.TOO_MANY_SEGMENTS)
        return message

    def connection(self, name: str | None) -> ConnectionSettings:
        return require_connection(self.connections, name)

    def refusal(self, msg: OutboundMessage, now: datetime) -> tuple[int, str] | None:
        """Reasons to refuse without calling Twilio: a stale request, an opted-out recipient."""
        if rules.is_stale(msg.not_after, now):
            return ConnectorCode.STALE_REQUEST, "the request's `not_after` time passed before it could be sent"
        senders = [s for s in (msg.from_, msg.messaging_service_sid) if s]
        if self.opt_outs.is_opted_out(msg.to, senders):
            return rules.OPTED_OUT_CODE, "the recipient has opted out (replied STOP) of messages from this sender"
        return None

"""What the platforms' formats share: the defaults of `WriteBackFormat`, Twilio's status names, and reading
the recipient's identity from the request's metadata."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.domain import rules
from chalicelib.domain.connection import ConnectionSettings, WriteBack
from chalicelib.domain.events import OPTED_OUT
from chalicelib.domain.models import ValidationError
from chalicelib.domain.writeback import Check


class Format:
    """A platform's format with nothing to forget, check or validate beyond its required options."""

    name = ""
    credentials_hint = "check the receiver's credentials"
    required_options: tuple[str, ...] = ()
    secret_required = False

    def forget_credentials(self, connection: ConnectionSettings | None) -> bool:
        return False

    def check(self, config: WriteBack, secret: str) -> Check | None:
        return None

    def needs_secret(self, options: Mapping[str, str]) -> bool:
        return self.secret_required

    def validate(self, options: Mapping[str, str], attributes: Mapping[str, str], allow_local: bool) -> None:
        missing = [o for o in self.required_options if not options.get(o)]
        if missing:
            raise ValidationError(
                f"write_back.options.{missing[0]}", f"the `{self.name}` write-back needs `options.{missing[0]}`"
            )


def twilio_status(detail: Mapping[str, Any]) -> str:
    return rules.as_twilio_status(str(detail.get("status")))


def first_of(metadata: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    """The first of these metadata keys that holds a value."""
    return next((str(metadata[name]) for name in names if metadata.get(name)), None)


def mapped(write_back: WriteBack, detail: Mapping[str, Any]) -> dict[str, str]:
    """The platform's attributes the connection maps from the request's metadata, those present."""
    metadata = detail.get("metadata") or {}
    return {
        attr: str(metadata[key]) for attr, key in write_back.attributes.items() if metadata.get(key) not in (None, "")
    }


def opted_out(detail_type: str, detail: Mapping[str, Any]) -> bool:
    return detail_type == OPTED_OUT or detail.get("error_code") in (21610, "21610")

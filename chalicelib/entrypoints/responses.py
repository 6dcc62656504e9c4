"""The API's answers: one error body for every refusal (docs/user-guide.md, "The HTTP API"), Chalice's own
refusals in that shape, a bug as a 500 that logs where it happened and not its message, and request bodies
as JSON."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.domain.json_reader import read_json
from chalicelib.domain.models import ValidationError
from chalicelib.observability import logger, where


@dataclass(frozen=True)
class ApiResult:
    status: int
    body: Any


def error(status: int, code: int | str, message: str, field: str | None = None) -> ApiResult:
    return ApiResult(status, {"error": {"code": code, "message": message, "field": field}})


def invalid(exc: ValidationError) -> ApiResult:
    return ApiResult(400, {"error": exc.to_dict()})


def from_chalice(status: int, body: Any, headers: Mapping[str, Any]) -> ApiResult | None:
    """Chalice answers some requests itself (405, 415) as {"Code", "Message"}: the same in our shape."""
    if status < 400 or not isinstance(body, dict) or set(body) != {"Code", "Message"}:
        return None
    code = re.sub(r"(?<!^)(?=[A-Z])", "_", str(body["Code"])).lower().removesuffix("_error")
    allowed = headers.get("Allow")
    return error(status, code, f"{body['Message']}; this route allows {allowed}" if allowed else str(body["Message"]))


def unexpected(exc: Exception, path: str) -> ApiResult:
    """A bug answered as a 500 in our shape; logged by where it happened, not by its message (it may hold data)."""
    logger.error("unexpected error", extra={"error": type(exc).__name__, "path": path, "frames": where(exc)})
    return error(500, "internal_error", "the connector failed on this request; retry, and report it if it repeats")


def parse_json(raw_body: bytes | str) -> Any:
    """A request body as JSON, or a ValidationError the API answers with 400."""
    if not raw_body:
        raise ValidationError("", "the request body must be a JSON object")
    return read_json(raw_body)

"""Bad input, as every layer reports it."""

from __future__ import annotations

from typing import Any

from chalicelib.domain.rules import ConnectorCode


class ValidationError(Exception):
    """Bad input. `field` uses the connector's snake_case name."""

    def __init__(self, field: str, message: str, code: int = ConnectorCode.INVALID_REQUEST) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = int(code)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "field": self.field}

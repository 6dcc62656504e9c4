import json
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Reference files the tests read; everything a test reads lives inside the repository.
TWILIO_DATA = Path(__file__).resolve().parent / "data" / "twilio"


def must(value: T | None) -> T:
    """A value a test expects to be there (a record it just wrote), narrowed for the type checker."""
    assert value is not None
    return value


def _nullable(schema: Any) -> Any:
    """OpenAPI 3.0 `nullable` as JSON Schema: a null is allowed too."""
    if isinstance(schema, dict):
        out = {k: _nullable(v) for k, v in schema.items() if k not in ("nullable", "x-twilio", "description")}
        if schema.get("nullable") and "type" in out:
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(schema, list):
        return [_nullable(v) for v in schema]
    return schema


MESSAGE_SCHEMA = _nullable(json.loads((TWILIO_DATA / "message_subset.json").read_text())["MessageResource"])
# twilio-oai spec/json/twilio_api_v2010.json, MessageResource.sid: ^(SM|MM)[0-9a-fA-F]{32}$
MESSAGE_SID = str(MESSAGE_SCHEMA["properties"]["sid"]["pattern"])

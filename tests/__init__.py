from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# Reference files the tests read; everything a test reads lives inside the repository.
TWILIO_DATA = Path(__file__).resolve().parent / "data" / "twilio"


def must(value: T | None) -> T:
    """A value a test expects to be there (a record it just wrote), narrowed for the type checker."""
    assert value is not None
    return value

"""The send function's cold start pays for no guardrail it does not use: without guardrails, none of their code
and none of the time-zone data (phonenumbers, tzdata) is imported (make bench measures the time; this holds the
imports)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.bench.connector import LAMBDA_ENV, SEND_PATH, SEND_PATH_QUIET_HOURS

ROOT = Path(__file__).resolve().parents[2]
GUARDRAILS = (
    "chalicelib.domain.guardrails", "chalicelib.domain.guard_ports", "chalicelib.usecases.guard",
    "chalicelib.adapters.guard_store", "chalicelib.domain.timezones", "phonenumbers", "tzdata", "zoneinfo",
)  # fmt: skip
LOADED = f"; import sys; print(sorted(m for m in {GUARDRAILS!r} if m in sys.modules))"


def _imported(code: str, **env: str) -> list[str]:
    environment = {**os.environ, **LAMBDA_ENV, "TWILIO_SECRET_ID": "twilio-connector-dev/twilio", **env}
    done = subprocess.run(
        [sys.executable, "-c", code + LOADED], cwd=ROOT, env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return list(eval(done.stdout.strip().splitlines()[-1]))  # noqa: S307 - our own subprocess's printed list


def test_the_send_function_loads_no_guardrail_until_a_connection_sets_one() -> None:
    assert _imported(SEND_PATH) == []
    with_caps = _imported(SEND_PATH, TWILIO_GUARDRAILS='{"frequency": {"per_day": 2}}')
    assert "chalicelib.domain.guardrails" in with_caps and "phonenumbers" not in with_caps  # no quiet hours
    assert "phonenumbers" in _imported(SEND_PATH_QUIET_HOURS)

"""The send function's cold start pays for no guardrail it does not use: without quiet hours, the time-zone data
(phonenumbers, tzdata) is never imported (make bench measures the time; this holds the imports)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.bench.connector import LAMBDA_ENV, SEND_PATH, SEND_PATH_QUIET_HOURS

ROOT = Path(__file__).resolve().parents[2]
LOADED = "; import sys; print(sorted({m.split('.')[0] for m in sys.modules} & {'phonenumbers', 'tzdata'}))"


def _imported(code: str) -> str:
    env = {**os.environ, **LAMBDA_ENV, "TWILIO_SECRET_ID": "twilio-connector-dev/twilio"}
    done = subprocess.run([sys.executable, "-c", code + LOADED], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_the_send_function_loads_no_time_zone_data_until_a_connection_sets_quiet_hours() -> None:
    assert _imported(SEND_PATH) == "[]"
    assert _imported(SEND_PATH_QUIET_HOURS) == "['phonenumbers']"  # tzdata too, where the OS has no zoneinfo

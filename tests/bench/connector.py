"""The connector's own figures, measured side by side in one run (`make bench`).

1. Batch send latency: one SQS batch of 10 against the simulator with 200 ms added
   latency, divided by one create's round trip (target <= 1.3; sequential would be ~10).
2. Cold start: fresh-interpreter import time of the entry module, and of the send path
   built ready to run, from deployment.zip unpacked as Lambda does, divided by
   `import boto3, requests` (target <= 1.6); the same without the zip's bytecode; zip size.
3. Pipeline throughput through the local stack, and the AWS calls it made, priced.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


# --- 1. batch send latency --------------------------------------------------------


def batch_latency(latency_ms: int = 200) -> dict[str, float]:
    import boto3
    from moto import mock_aws

    from chalicelib import wiring
    from local import aws as local_aws
    from local.twilio_sim import SimConfig, TwilioSimulator

    account, token = "AC" + "6" * 32, "bench"
    with mock_aws(), TwilioSimulator(SimConfig(account, token, latency_ms=latency_ms)) as sim:
        stage = "bench"
        tables = local_aws.create_tables(boto3.client("dynamodb"), stage)
        boto3.client("secretsmanager").create_secret(
            Name="bench/twilio", SecretString=json.dumps({"account_sid": account, "auth_token": token})
        )
        env = {
            "MESSAGES_TABLE": tables["MessagesTable"],
            "OPTOUTS_TABLE": tables["OptOutsTable"],
            "TEMPLATES_TABLE": tables["TemplatesTable"],
            "COUNTERS_TABLE": tables["CountersTable"],
            "TWILIO_SECRET_ID": "bench/twilio",
            "TWILIO_BASE_URL": sim.base_url,
            "TWILIO_DEFAULT_FROM": "+15005550006",
            "EVENT_BUS_NAME": "default",
        }
        import os

        os.environ.update(env)
        wiring.reset()
        import app
        from chalicelib.domain.twilio import TwilioCredentials

        result = _compare(
            lambda records: app.send({"Records": records}, None), wiring.twilio(), TwilioCredentials(account, token)
        )
        wiring.reset()
    return result


def batch_latency_in_memory(latency_ms: int = 200) -> dict[str, float]:
    """The same batch with the stores in memory: the connector's own concurrency, without moto's
    CPU-bound emulation of DynamoDB (which holds the GIL; the real service is network I/O)."""
    from chalicelib.adapters.twilio_api import TwilioApi
    from chalicelib.domain.twilio import TwilioCredentials
    from chalicelib.settings import load_settings
    from chalicelib.usecases.consumer import SendConsumer
    from chalicelib.usecases.send import SendService
    from local.twilio_sim import SimConfig, TwilioSimulator
    from tests.fakes import InMemoryLedger, InMemoryOptOuts, InMemoryTemplates, StaticCredentials

    account, token = "AC" + "7" * 32, "bench"
    with TwilioSimulator(SimConfig(account, token, latency_ms=latency_ms)) as sim:
        settings = load_settings({"TWILIO_SECRET_ID": "x", "TWILIO_DEFAULT_FROM": "+15005550006"})
        api = TwilioApi(sim.base_url)
        creds = TwilioCredentials(account, token)
        service = SendService(
            settings,
            InMemoryLedger(),
            InMemoryOptOuts(),
            InMemoryTemplates(),
            api,
            StaticCredentials(creds),
        )
        consumer = SendConsumer(service, None)

        return _compare(lambda records: consumer.handle({"Records": records}), api, creds)


def _compare(handle: Any, api: Any, creds: Any) -> dict[str, float]:
    """Median wall time of a batch of 10 through `handle`, and of one create on the same Twilio."""
    from chalicelib.domain.models import parse_send_request
    from chalicelib.domain.outbound import validate_outbound

    message = validate_outbound(
        parse_send_request({"to": "+15550000000", "from": "+15005550006", "body": "one"}),
        "default",
        (),
        None,
        datetime_now(),
    )

    def batch() -> float:
        started = time.perf_counter()
        result = handle([_record(i) for i in range(10)])
        elapsed = time.perf_counter() - started
        assert result["batchItemFailures"] == [], result
        return elapsed

    def one() -> float:
        started = time.perf_counter()
        api.create_message(creds, message)
        return time.perf_counter() - started

    batch()  # warm: imports, clients, pooled connections
    singles = [one() for _ in range(5)]
    batches = [batch() for _ in range(5)]
    single, whole = statistics.median(singles), statistics.median(batches)
    return {"single_s": single, "batch_s": whole, "ratio": whole / single}


def _record(i: int) -> dict[str, Any]:
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": "r",
        "body": json.dumps({"to": f"+1555{i:07d}", "body": f"bench {uuid.uuid4().hex[:6]}"}),
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:bench",
        "awsRegion": "us-east-1",
    }


def datetime_now() -> Any:
    from datetime import datetime

    return datetime.now(UTC)


# --- 2. cold start ------------------------------------------------------------------

BASELINE = "import boto3, requests"
ENTRY = "import app"
# What the send function has done before its first record: imports and every client built.
SEND_PATH = (
    "import os; os.environ.setdefault('POLL_STATE_MACHINE_ARN','arn:aws:states:us-east-1:1:stateMachine:x'); "
    "import app; from chalicelib import wiring; c = wiring.send_consumer(); c.service.credentials.provider.client"
)
# The same with a connection that sets quiet hours: the recipient's zones (phonenumbers, tzdata) are loaded at
# the first such send, not before; a deployment without quiet hours never loads them (README, "Guardrails").
SEND_PATH_QUIET_HOURS = (
    SEND_PATH + "; from chalicelib.domain.timezones import zones_for; from zoneinfo import ZoneInfo; "
    "[ZoneInfo(z).utcoffset(None) for z in zones_for('+13105550100')]"
)
# The least any boto3 function does before its first call: the imports and one client (botocore decodes its
# endpoint data and the service model: ~80 ms, whatever the service).
FLOOR = "import boto3, requests; boto3.session.Session().client('dynamodb')"
# What a Lambda container has: credentials and region in the environment, and a read-only /var/task (no
# .pyc is written there: what the zip does not ship is compiled at every cold start).
LAMBDA_ENV = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "ASIABENCH",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_SESSION_TOKEN": "bench",
    "PYTHONDONTWRITEBYTECODE": "1",
}


def _fresh(code: str, cwd: Path) -> float:
    import os

    script = f"import time; t=time.perf_counter(); {code}; print(time.perf_counter()-t)"
    env = {**os.environ, **LAMBDA_ENV}
    out = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _task_dirs(zip_path: Path, into: Path) -> dict[str, Path]:
    """The package unpacked as Lambda unpacks it into /var/task, and a copy without its bytecode."""
    import zipfile

    dirs = {"shipped": into / "task", "source_only": into / "task-source-only"}
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(dirs["shipped"])
        z.extractall(dirs["source_only"], [n for n in z.namelist() if not n.endswith(".pyc")])
    return dirs


def cold_start(runs: int = 9) -> dict[str, float]:
    """Every figure runs from the unpacked deployment.zip (so `requests` and Powertools are the zip's), with
    the venv's boto3 standing in for the runtime's."""
    import tempfile

    built = zip_path()
    assert built is not None, "make package failed"
    with tempfile.TemporaryDirectory(prefix="bench-task-") as tmp:
        dirs = _task_dirs(built, Path(tmp))
        shipped, bare = dirs["shipped"], dirs["source_only"]
        codes = {
            "baseline": (BASELINE, shipped),
            "entry": (ENTRY, shipped),
            "send_path": (SEND_PATH, shipped),
            "send_path_source_only": (SEND_PATH, bare),
            "send_path_quiet_hours": (SEND_PATH_QUIET_HOURS, shipped),
            "floor": (FLOOR, shipped),
        }
        samples: dict[str, list[float]] = {k: [] for k in codes}
        for _ in range(runs):  # interleaved, so machine noise hits all alike
            for name, (code, cwd) in codes.items():
                samples[name].append(_fresh(code, cwd))
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {**med, **{f"{k}_ratio": v / med["baseline"] for k, v in med.items() if k != "baseline"}}


def zip_path() -> Path | None:
    """The zip `make package` builds from the code as it is now (a stale one would measure old code)."""
    built = ROOT / "build" / "dev" / "deployment.zip"
    done = subprocess.run(["make", "package"], cwd=ROOT, capture_output=True, check=False)
    return built if done.returncode == 0 and built.exists() else None


def zip_size() -> int | None:
    built = ROOT / "build" / "dev" / "deployment.zip"  # cold_start() has just built it
    return built.stat().st_size if built.exists() else None

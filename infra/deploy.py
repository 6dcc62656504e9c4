"""The one deploy path: package the Chalice app with the merge template, then deploy it as one
CloudFormation stack.

    python -m infra.deploy package --stage prod            # build/prod/sam.json + deployment.zip
    python -m infra.deploy deploy --stage prod --bucket B  # package, upload, change set, wait, outputs

`chalice deploy` is not a way to deploy this app: it creates the SQS trigger without
ReportBatchItemFailures (failed records would be deleted), and none of the queue, tables,
state machine, function URL, roles or alarms (app.py refuses it with this advice).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MERGE_TEMPLATE = ROOT / "infra" / "resources.json"
CONFIG = ROOT / ".chalice" / "config.json"
# AWS: a queue that triggers a Lambda needs a visibility timeout of at least six times the function's
# timeout, plus the batching window, or a slow batch is handed out again while it is still being sent.
VISIBILITY_FACTOR = 6
# requests in flight; Twilio's default account limit is higher
# (docs/deploy.md, "Twilio's limits, and how the connector lives within them")
DEFAULT_TWILIO_BUDGET = 50
# AWS caps a function URL at 10 requests/s per unit of its function's reserved concurrency and answers 429
# above it (Lambda developer guide, function URLs: "Your function's maximum request rate per second (RPS) is
# equivalent to 10 times the configured reserved concurrency"); Twilio retries no 429 by default.
URL_RPS_PER_RESERVED = 10
CALLBACKS_PER_MESSAGE = 3  # Twilio's status callbacks per message (make bench counts 3.0)
FRONT_DOOR_REQUESTS_PER_MESSAGE = 4  # a create and ~3 polls from a platform that polls (make bench's front door)
FETCHES_PER_MESSAGE = 1  # a poll attempt fetches each open message once; sized as if no callback came
WRITEBACKS_PER_MESSAGE = 3  # a platform told every change (make bench counts 3 callbacks)
TWILIO_REQUEST_SECONDS = 0.25  # a create or fetch answered (docs/deploy.md: ~0.2 s)
PARTITION_WRITES = 1000  # DynamoDB: one partition key takes ~1,000 writes/s (best practices, partition keys)
INDEX_WRITES_PER_MESSAGE = 2  # a message enters its poll window's index key and leaves it
TELL_SECONDS = 0.3  # a write-back answered by a platform (the timeout is far longer: this is the common case)
HEADROOM = 2.0  # bursts above the stage's average rate
DEFAULT_SEND_RATE = 10.0  # messages/s: a new account's few long codes and toll-free numbers
TEMPLATE_BODY_LIMIT = 51_200  # bytes CloudFormation takes inline; larger templates go through S3
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"]
DONE = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"}
FAILED_SUFFIXES = ("_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED")


class DeployError(Exception):
    """The deploy cannot go on; the message says what to do."""


def connection_secret_prefix(stage: str) -> str:
    return f"twilio-connector-{stage}/twilio/"


def stage_environment(stage: str, config_path: Path = CONFIG) -> dict[str, str]:
    config = json.loads(config_path.read_text())
    stages = config.get("stages", {})
    if stage not in stages:
        raise DeployError(f"stage `{stage}` is not in {config_path.name}; known: {', '.join(sorted(stages))}")
    env: dict[str, str] = {**config.get("environment_variables", {}), **stages[stage].get("environment_variables", {})}
    return env


def check_connection_secrets(stage: str, env: Mapping[str, str]) -> None:
    """The functions may read only secrets under the stage's prefix (and the stack's own Twilio secret)."""
    raw = env.get("TWILIO_CONNECTIONS")
    if not raw:
        return
    prefix = connection_secret_prefix(stage)
    for name, spec in json.loads(raw).items():
        secret = str((spec or {}).get("secret_id", ""))
        if not (secret.startswith(prefix) or f":secret:{prefix}" in secret):
            raise DeployError(
                f"TWILIO_CONNECTIONS[{name!r}].secret_id is {secret!r}: the functions may read only secrets named "
                f"{prefix}<name>; create the secret under that name and set secret_id to it"
            )


def concurrency_plan(env: Mapping[str, str], poll_invocations: int) -> dict[str, int]:
    """How many send invocations may run so that every request in flight to Twilio fits the budget:
    send invocations × SEND_CONCURRENCY + poll invocations × POLL_CONCURRENCY ≤ TWILIO_MAX_CONCURRENCY
    (else the budget SEND_RATE needs: `capacity_plan`)."""
    budget = int(env.get("TWILIO_MAX_CONCURRENCY") or DEFAULT_TWILIO_BUDGET)
    per_send = int(env.get("SEND_CONCURRENCY") or 10)
    per_poll = int(env.get("POLL_CONCURRENCY") or 5)
    send_invocations = (budget - poll_invocations * per_poll) // per_send
    if send_invocations < 2:  # the SQS trigger's MaximumConcurrency is at least 2
        raise DeployError(
            f"TWILIO_MAX_CONCURRENCY={budget} leaves room for {max(send_invocations, 0)} send invocations of "
            f"SEND_CONCURRENCY={per_send} beside {poll_invocations} poll invocations of POLL_CONCURRENCY={per_poll}; "
            "at least 2 are needed: raise the budget or lower SEND_CONCURRENCY"
        )
    return {"budget": budget, "send_invocations": min(send_invocations, 1000), "per_send": per_send,
            "poll_invocations": poll_invocations, "per_poll": per_poll}  # fmt: skip


def send_rate(env: Mapping[str, str]) -> float:
    raw = env.get("SEND_RATE") or str(DEFAULT_SEND_RATE)
    try:
        rate = float(raw)
    except ValueError:
        rate = 0.0
    if not 0 < rate <= 100_000:
        raise DeployError(
            f"SEND_RATE must be the messages per second the stage must hold (0 < rate ≤ 100000); it is {raw!r}"
        )
    return rate


def capacity_plan(env: Mapping[str, str]) -> dict[str, Any]:
    """Everything SEND_RATE (messages/s the stage must hold) decides, twice over (HEADROOM):
    - the webhooks and front-door function URLs' reserved concurrency, so that their 10-requests/s-per-unit
      cap stays above the callbacks (3 a message) and front-door requests (4 a message) the rate brings;
    - the poll function's, so that it can fetch every message once per attempt if no callback came;
    - the forward function's and its trigger's, so that write-backs parked while a platform was slow are
      told at the rate they come (3 a message);
    - the Twilio concurrency budget (requests in flight: creates and fetches, ~0.25 s each), unless
      TWILIO_MAX_CONCURRENCY names the account's own; the send trigger's concurrency fills what is left."""
    rate = send_rate(env)

    def units(per_message: float, per_unit: float) -> int:
        return max(2, math.ceil(rate * per_message * HEADROOM / per_unit))

    per_poll = int(env.get("POLL_CONCURRENCY") or 5)
    polls = units(FETCHES_PER_MESSAGE, per_poll / TWILIO_REQUEST_SECONDS)
    needed = math.ceil(rate * (1 + FETCHES_PER_MESSAGE) * TWILIO_REQUEST_SECONDS * HEADROOM)
    budget = env.get("TWILIO_MAX_CONCURRENCY") or str(max(DEFAULT_TWILIO_BUDGET, needed + polls * per_poll))
    try:
        twilio = concurrency_plan({**env, "TWILIO_MAX_CONCURRENCY": budget}, polls)
    except DeployError as exc:
        raise DeployError(
            f"SEND_RATE={rate:g} needs about {needed + polls * per_poll} requests in flight to Twilio. {exc}: ask "
            "Twilio to raise the account's concurrency and set TWILIO_MAX_CONCURRENCY to it, or lower SEND_RATE"
        ) from exc
    return {
        "send_rate": rate,
        "Webhooks": units(CALLBACKS_PER_MESSAGE, URL_RPS_PER_RESERVED),
        "Facade": units(FRONT_DOOR_REQUESTS_PER_MESSAGE, URL_RPS_PER_RESERVED),
        "Poll": polls,
        "Forward": units(WRITEBACKS_PER_MESSAGE, per_poll / TELL_SECONDS),
        "Send": twilio["send_invocations"],
        "twilio_budget": twilio["budget"],
        "poll_window_shards": int(env.get("POLL_WINDOW_SHARDS") or 0)
        or math.ceil(rate * INDEX_WRITES_PER_MESSAGE * HEADROOM / PARTITION_WRITES),
        "sends_per_second": round(twilio["send_invocations"] * twilio["per_send"] / TWILIO_REQUEST_SECONDS),
    }


def describe_plan(plan: Mapping[str, Any]) -> str:
    """What `make deploy` and `make capacity` say."""
    return (
        f"capacity for SEND_RATE={plan['send_rate']:g} messages/s: webhooks {plan['Webhooks']} and front door "
        f"{plan['Facade']} reserved ({URL_RPS_PER_RESERVED} requests/s each on their function URLs), poll "
        f"{plan['Poll']}, forward {plan['Forward']}, send {plan['Send']} invocations (~{plan['sends_per_second']} "
        f"creates/s) within {plan['twilio_budget']} requests in flight to Twilio, poll windows over "
        f"{plan['poll_window_shards']} index key(s)"
        + (f" (ask Twilio for an account concurrency of {plan['twilio_budget']})"
           if plan["twilio_budget"] > DEFAULT_TWILIO_BUDGET else "")
    )  # fmt: skip


def derive(sam: dict[str, Any], env: Mapping[str, str] | None = None, stage: str | None = None) -> dict[str, Any]:
    """Settings of the template that follow from others: the send queue's visibility timeout, and from
    SEND_RATE (`capacity_plan`) every function's reserved concurrency and the SQS triggers' maximum
    concurrency (a larger reserved_concurrency in .chalice/config.json stays, except the send function's,
    which must equal its trigger's)."""
    resources = sam["Resources"]
    if stage is not None:  # a pipeline that does not override Stage deploys the stage it packaged
        sam["Parameters"]["Stage"]["Default"] = stage
    send = resources["Send"]["Properties"]
    trigger = send["Events"]["SendSqsEventSource"]["Properties"]
    window = int(trigger.get("MaximumBatchingWindowInSeconds", 0))
    resources["SendQueue"]["Properties"]["VisibilityTimeout"] = VISIBILITY_FACTOR * int(send["Timeout"]) + window
    plan = capacity_plan(env or {})
    trigger["ScalingConfig"] = {"MaximumConcurrency": plan["Send"]}
    # Reserved concurrency below the trigger's maximum would throttle its invocations and burn receives.
    send["ReservedConcurrentExecutions"] = plan["Send"]
    for name in ("Webhooks", "Facade", "Poll", "Forward"):
        props = resources[name]["Properties"]
        props["ReservedConcurrentExecutions"] = max(int(props.get("ReservedConcurrentExecutions", 0)), plan[name])
    shared = sam.setdefault("Globals", {}).setdefault("Function", {}).setdefault("Environment", {})
    shared.setdefault("Variables", {})["POLL_WINDOW_SHARDS"] = str(plan["poll_window_shards"])
    forward = resources["Forward"]["Properties"]
    forward["Events"]["ForwardSqsEventSource"]["Properties"]["ScalingConfig"] = {
        "MaximumConcurrency": min(1000, forward["ReservedConcurrentExecutions"])
    }
    return sam


def package(stage: str, out: Path, run: Callable[..., Any] = subprocess.run) -> Path:
    env = stage_environment(stage)
    check_connection_secrets(stage, env)
    chalice = Path(sys.executable).parent / "chalice"
    run(
        [str(chalice), "package", "--stage", stage, "--merge-template", str(MERGE_TEMPLATE), str(out)],
        cwd=ROOT,
        check=True,
    )
    template = out / "sam.json"
    sam = derive(json.loads(template.read_text()), env, stage)
    template.write_text(json.dumps(sam, indent=2) + "\n")
    check_environment_size(sam, stage, f"twilio-connector-{stage}")
    runtimes = {f["Properties"].get("Runtime") for f in functions(sam).values()}
    if runtimes == {LAMBDA_PYTHON}:
        compile_bytecode(out / "deployment.zip")
    else:
        print(f"package: bytecode not compiled (this Python is {LAMBDA_PYTHON}, the functions run {runtimes})")
    return template


def functions(sam: Mapping[str, Any]) -> dict[str, Any]:
    """The template's Lambda functions, by logical id."""
    return {n: r for n, r in sam["Resources"].items() if r.get("Type") == "AWS::Serverless::Function"}


ENVIRONMENT_LIMIT = 4096  # bytes: Lambda refuses a function whose environment variables take more
LONGEST_REGION = 14  # "ap-southeast-4"


def _resolved_length(value: Any, resources: Mapping[str, Any], stage: str, stack: str, region: str | None) -> int:
    """The most a template value can take once CloudFormation fills it in: names it generates are
    `<stack>-<LogicalId>-<random>` (a queue's at most 80 characters)."""
    if isinstance(value, str):
        return len(value.encode())
    r = len(region) if region else LONGEST_REGION
    if "Ref" in value and value["Ref"] in resources:
        logical = value["Ref"]
        kind = resources[logical].get("Type")
        generated = len(stack) + len(logical) + 15
        if kind == "AWS::DynamoDB::Table":
            return generated
        if kind == "AWS::SQS::Queue":  # its URL
            return len("https://sqs..amazonaws.com/") + r + 13 + min(80, generated)
        if kind == "AWS::SecretsManager::Secret":  # its ARN
            return len("arn:aws-us-gov:secretsmanager::123456789012:secret:") + r + len(logical) + 20
        if kind == "AWS::StepFunctions::StateMachine":
            return len("arn:aws-us-gov:states::123456789012:stateMachine:") + r + len(logical) + 13
    if value.get("Fn::GetAtt", [None, None])[1] == "FunctionUrl":
        return len("https://.lambda-url..on.aws/") + 32 + r
    if isinstance(value.get("Fn::Sub"), str):
        text = value["Fn::Sub"].replace("${Stage}", stage)
        return len(text.encode()) + 128 * text.count("${")
    return 256


def check_environment_size(sam: Mapping[str, Any], stage: str, stack: str, region: str | None = None) -> None:
    """Lambda refuses environment variables over 4 KB in all, and only when CloudFormation creates the
    function (minutes in). TWILIO_CONNECTIONS is what grows: many connections belong in the connections API."""
    resources = sam["Resources"]
    shared = sam.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    for name, resource in functions(sam).items():
        own = resource["Properties"].get("Environment", {}).get("Variables", {})
        sizes = {k: _resolved_length(v, resources, stage, stack, region) for k, v in {**shared, **own}.items()}
        total = 2 + sum(len(k) + v + 6 for k, v in sizes.items())  # as JSON: {"k":"v",...}
        if total > ENVIRONMENT_LIMIT:
            largest = ", ".join(f"{k} ({v:,} bytes)" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
            raise DeployError(
                f"function {name}'s environment variables would take up to {total:,} bytes once CloudFormation "
                f"fills in the names it makes (stack {stack}); Lambda refuses more than {ENVIRONMENT_LIMIT:,}. "
                f"Largest: {largest}. Make further connections with the connections API (PUT /connections/<name>, "
                "kept in DynamoDB) instead of TWILIO_CONNECTIONS, or shorten the stack's name."
            )


LAMBDA_PYTHON = f"python{sys.version_info.major}.{sys.version_info.minor}"


# phonenumbers' geocoding and carrier data: quiet hours read only its metadata and time-zone data (timezones.py)
UNUSED_DATA = ("phonenumbers/geodata/", "phonenumbers/carrierdata/")


def compile_bytecode(zip_path: Path) -> int:
    """Adds every module's .pyc to the zip (and leaves out UNUSED_DATA). Lambda's /var/task is read-only,
    so without them each cold start compiles every module it imports from source (the send function:
    ~3x `import boto3, requests` instead of ~1.8x, make bench). Checked hashes, not times: a zip's times
    need not survive unpacking, and a source changed after packaging is still compiled rather than ignored
    (hashing costs no measurable time). Only valid for the Python that compiled them (checked by the caller)."""
    import importlib.util
    import py_compile
    import tempfile
    import zipfile

    compiled = 0
    rebuilt = zip_path.with_suffix(".tmp")
    with (
        tempfile.TemporaryDirectory(prefix="pyc-") as tmp,
        zipfile.ZipFile(zip_path) as zin,
        zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_DEFLATED) as zout,
    ):
        work = Path(tmp)
        for info in zin.infolist():
            if info.filename.endswith(".pyc"):
                continue  # stale ones from a work tree: timestamped for another file
            if info.filename.startswith(UNUSED_DATA):
                continue  # never read by the connector: ~8 MB of the zip
            data = zin.read(info)
            zout.writestr(info, data)
            if not info.filename.endswith(".py"):
                continue
            source = work / "m.py"
            source.write_bytes(data)
            try:
                py_compile.compile(
                    str(source),
                    cfile=str(work / "m.pyc"),
                    dfile=f"/var/task/{info.filename}",  # what a traceback shows in Lambda
                    doraise=True,
                    invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
                )
            except py_compile.PyCompileError:
                continue  # e.g. a vendored file for another Python: imported from source, if ever
            pyc = zipfile.ZipInfo(importlib.util.cache_from_source(info.filename), info.date_time)
            pyc.external_attr = info.external_attr
            zout.writestr(pyc, (work / "m.pyc").read_bytes(), zipfile.ZIP_DEFLATED)
            compiled += 1
    rebuilt.replace(zip_path)
    return compiled


# --- deploy -------------------------------------------------------------------------


def check_bucket(s3: Any, bucket: str) -> None:
    """Lambda takes its code only from a bucket in the function's region: a bucket elsewhere fails the stack
    minutes in ("S3 Error Code: PermanentRedirect"); a missing one fails the upload with a bare 404."""
    from botocore.exceptions import ClientError

    region = s3.meta.region_name or "us-east-1"
    try:
        where = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404"):
            raise DeployError(
                f"there is no bucket {bucket}; make one in {region} (aws s3 mb s3://{bucket} --region {region})"
            ) from exc
        if code in ("AccessDenied", "403"):
            raise DeployError(f"bucket {bucket} is not yours to use (access denied); name a bucket of yours") from exc
        raise
    where = "eu-west-1" if where == "EU" else where  # S3's legacy name for it
    if where != region:
        raise DeployError(
            f"bucket {bucket} is in {where}, but the stack goes to {region}: Lambda takes its code only from "
            f"a bucket in its own region. Deploy with REGION={where}, or make a bucket in {region} "
            f"(aws s3 mb s3://<name> --region {region})"
        )


def upload(s3: Any, bucket: str, prefix: str, path: Path) -> str:
    """Content-addressed, as `aws cloudformation package` does: an unchanged file is not uploaded twice."""
    data = path.read_bytes()
    key = f"{prefix}/{hashlib.sha256(data).hexdigest()}{path.suffix}"
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return key


def with_code_in_s3(sam: dict[str, Any], bucket: str, key: str) -> dict[str, Any]:
    for resource in functions(sam).values():
        resource["Properties"]["CodeUri"] = f"s3://{bucket}/{key}"
    return sam


def _stack_status(cfn: Any, name: str) -> str | None:
    from botocore.exceptions import ClientError

    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise
    return str(stacks[0]["StackStatus"]) if stacks else None


def _wait(
    describe: Callable[[], str],
    done: Callable[[str], bool],
    say: Callable[[str], None],
    sleep: Callable[[float], None],
    timeout_s: float,
) -> str:
    started = time.monotonic()
    while True:
        status = describe()
        if done(status):
            return status
        if time.monotonic() - started > timeout_s:
            raise DeployError(
                f"still {status} after {int(timeout_s)} s; look at the stack in the CloudFormation console"
            )
        say(f"  … {status}")
        sleep(10)


def _failure_reasons(cfn: Any, stack: str) -> list[str]:
    events = cfn.describe_stack_events(StackName=stack).get("StackEvents", [])
    return [
        f"{e.get('LogicalResourceId')}: {e.get('ResourceStatusReason')}"
        for e in events[:30]
        if str(e.get("ResourceStatus", "")).endswith("FAILED") and e.get("ResourceStatusReason")
    ]


# AWS keeps this much of an account's Lambda concurrency for functions without a reservation (all of it,
# in an account whose limit is lower: new accounts may start at 10); a reservation past it fails the stack.
MIN_UNRESERVED = 100
CONCURRENCY_QUOTA = "L-B99A9384"  # Service Quotas: AWS Lambda, "Concurrent executions"


def reservations(sam: Mapping[str, Any]) -> dict[str, int]:
    """Reserved concurrency per function the template declares."""
    return {
        name: int(r["Properties"]["ReservedConcurrentExecutions"])
        for name, r in functions(sam).items()
        if "ReservedConcurrentExecutions" in r.get("Properties", {})
    }


def _held_by_stack(lam: Any, cfn: Any, stack: str) -> int:
    """What this stack's functions reserve now (an update gives it back before taking the new amounts)."""
    held, token = 0, None
    while True:
        page = cfn.list_stack_resources(StackName=stack, **({"NextToken": token} if token else {}))
        for resource in page.get("StackResourceSummaries", []):
            if resource.get("ResourceType") == "AWS::Lambda::Function" and resource.get("PhysicalResourceId"):
                found = lam.get_function_concurrency(FunctionName=resource["PhysicalResourceId"])
                held += int(found.get("ReservedConcurrentExecutions", 0))
        token = page.get("NextToken")
        if not token:
            return held


def check_concurrency(
    sam: Mapping[str, Any], stage: str, stack: str, exists: bool, lam: Any, cfn: Any, say: Callable[[str], None]
) -> None:
    """Refuses, before anything is uploaded, a stack whose reservations the account cannot give: otherwise
    CloudFormation fails it minutes later ("decreases account's UnreservedConcurrentExecution below its
    minimum value") and a first create must then be deleted by hand."""
    from botocore.exceptions import BotoCoreError, ClientError

    wanted = reservations(sam)
    if not wanted:
        return
    try:
        account = lam.get_account_settings()["AccountLimit"]
        held = _held_by_stack(lam, cfn, stack) if exists else 0
    except (ClientError, BotoCoreError) as exc:
        say(f"could not read the account's Lambda concurrency ({exc}); deploying without checking it")
        return
    limit, unreserved = int(account["ConcurrentExecutions"]), int(account["UnreservedConcurrentExecutions"])
    total, keep = sum(wanted.values()), min(MIN_UNRESERVED, limit)
    if unreserved + held - total >= keep:
        return
    others = limit - unreserved - held  # reserved by functions outside this stack
    each = ", ".join(f"{name} {n}" for name, n in sorted(wanted.items()))
    region = getattr(getattr(lam, "meta", None), "region_name", None) or "this region"
    raise DeployError(
        f"this stack reserves {total} concurrent Lambda executions ({each}), and your account in {region} "
        f"allows {limit} in all, {others} of them reserved by other functions; AWS keeps {keep} unreserved. "
        f"Ask AWS to raise the Lambda quota 'Concurrent executions' to at least {total + others + MIN_UNRESERVED} "
        f"(aws service-quotas request-service-quota-increase --service-code lambda --quota-code {CONCURRENCY_QUOTA} "
        f"--desired-value {total + others + MIN_UNRESERVED}), or lower reserved_concurrency in .chalice/config.json "
        f"(stage {stage}). Nothing was deployed."
    )


def deploy(
    stage: str,
    bucket: str,
    stack: str,
    parameters: Mapping[str, str],
    session: Any,
    say: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
    build: Callable[[str, Path], Path] = package,
    timeout_s: float = 3600,
) -> dict[str, str]:
    """Package, upload, create and execute a change set, wait; the stack's outputs."""
    out = ROOT / "build" / stage
    say(f"packaging stage {stage} into {out.relative_to(ROOT)}")
    template_path = build(stage, out)
    s3, cfn = session.client("s3"), session.client("cloudformation")
    status = _stack_status(cfn, stack)
    if status == "ROLLBACK_COMPLETE":
        raise DeployError(f"stack {stack} failed its first create; delete it, then deploy again")
    exists = status not in (None, "REVIEW_IN_PROGRESS")
    template = json.loads(template_path.read_text())
    check_bucket(s3, bucket)
    check_environment_size(template, stage, stack, s3.meta.region_name)
    say(f"{describe_plan(capacity_plan(stage_environment(stage)))}; "
        f"the stack reserves {sum(reservations(template).values())} concurrent executions in all")  # fmt: skip
    check_concurrency(template, stage, stack, exists, session.client("lambda"), cfn, say)
    say(f"uploading deployment.zip to s3://{bucket}/{stack}/")
    code_key = upload(s3, bucket, stack, out / "deployment.zip")
    sam = with_code_in_s3(template, bucket, code_key)
    body = json.dumps(sam)
    template_args: dict[str, str]
    if len(body.encode()) > TEMPLATE_BODY_LIMIT:
        deployed = out / "packaged.json"
        deployed.write_text(body)
        template_key = upload(s3, bucket, stack, deployed)
        region = s3.meta.region_name
        host = "s3.amazonaws.com" if region in (None, "us-east-1") else f"s3.{region}.amazonaws.com"
        template_args = {"TemplateURL": f"https://{bucket}.{host}/{template_key}"}
    else:
        template_args = {"TemplateBody": body}

    change_type = "UPDATE" if exists else "CREATE"
    change_set = f"deploy-{int(time.time())}"
    params = [{"ParameterKey": k, "ParameterValue": v} for k, v in {"Stage": stage, **parameters}.items()]
    say(f"{'creating' if change_type == 'CREATE' else 'updating'} stack {stack} (change set {change_set})")
    cfn.create_change_set(
        StackName=stack,
        ChangeSetName=change_set,
        ChangeSetType=change_type,
        Capabilities=CAPABILITIES,
        Parameters=params,
        **template_args,
    )

    def change_set_status() -> str:
        found = cfn.describe_change_set(StackName=stack, ChangeSetName=change_set)
        if found["Status"] == "FAILED":
            reason = str(found.get("StatusReason", ""))
            if "didn't contain changes" in reason or "No updates" in reason:
                return "NO_CHANGES"
            raise DeployError(f"the change set failed: {reason}")
        return str(found["Status"])

    created = _wait(change_set_status, lambda s: s in ("CREATE_COMPLETE", "NO_CHANGES"), say, sleep, timeout_s)
    if created == "NO_CHANGES":
        say("nothing to change")
        cfn.delete_change_set(StackName=stack, ChangeSetName=change_set)
    else:
        cfn.execute_change_set(StackName=stack, ChangeSetName=change_set)

        def stack_done(s: str) -> bool:
            return s in DONE or s.endswith(FAILED_SUFFIXES)

        final = _wait(lambda: _stack_status(cfn, stack) or "GONE", stack_done, say, sleep, timeout_s)
        if final not in DONE:
            reasons = "; ".join(_failure_reasons(cfn, stack)) or "see the stack's events"
            raise DeployError(f"stack {stack} ended {final}: {reasons}")
    outputs = {
        o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
    }
    for key, value in sorted(outputs.items()):
        say(f"{key} = {value}")
    return outputs


def _parameters(pairs: Sequence[str]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DeployError(f"--parameter takes Name=value, got {pair!r}")
        result[key] = value
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.deploy", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack = commands.add_parser("package", help="chalice package with the merge template, settings derived")
    pack.add_argument("--stage", default="dev")
    pack.add_argument("--out", type=Path)
    plan = commands.add_parser("plan", help="what the stage's SEND_RATE reserves, without packaging")
    plan.add_argument("--stage", default="dev")
    plan.add_argument("--rate", type=float, help="another SEND_RATE to plan for")
    up = commands.add_parser("deploy", help="package and deploy the CloudFormation stack")
    up.add_argument("--stage", default="dev")
    up.add_argument("--bucket", required=True, help="an S3 bucket of yours in the target region, for the code")
    up.add_argument("--stack-name", help="default: twilio-connector-<stage>")
    up.add_argument("--region", help="default: your AWS configuration's")
    up.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a template parameter: AlarmTopicArn, LogRetentionDays, Tracing",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "package":
            print(package(args.stage, args.out or ROOT / "build" / args.stage))
            return 0
        if args.command == "plan":
            env = stage_environment(args.stage)
            print(describe_plan(capacity_plan({**env, **({"SEND_RATE": str(args.rate)} if args.rate else {})})))
            return 0
        import boto3

        session = boto3.session.Session(region_name=args.region)
        deploy(
            args.stage,
            args.bucket,
            args.stack_name or f"twilio-connector-{args.stage}",
            _parameters(args.parameter),
            session,
        )
    except DeployError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"deploy: `{' '.join(map(str, exc.cmd))}` failed (exit {exc.returncode})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

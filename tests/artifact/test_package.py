"""The deployable artifact: `make package` (chalice package with infra/resources.json merged and
settings derived), then the SAM translator, cfn-lint and checkov on what it produced, and the rules
a real AWS account enforces that moto does not: IAM per function, function URL permissions, names
that let a stack be deleted and re-created, alarms and outputs."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.iam import FUNCTION_ROLES, granted, statements

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("package") / "dev"
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    subprocess.run(
        [sys.executable, "-m", "infra.deploy", "package", "--stage", "dev", "--out", str(out)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    yield out


@pytest.fixture(scope="module")
def sam(package: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((package / "sam.json").read_text())
    return result


@pytest.fixture(scope="module")
def cfn(sam: dict[str, Any]) -> dict[str, Any]:
    """The template as CloudFormation sees it after the SAM transform."""
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
    from samtranslator.translator.transform import transform

    class NoAws(ManagedPolicyLoader):  # the translator would ask IAM for managed policy ARNs
        def __init__(self) -> None:
            pass

        def load(self) -> dict[str, str]:
            return {}

    uploaded = copy.deepcopy(sam)  # what `aws cloudformation package` does to the local CodeUri
    for function in resources(uploaded, "AWS::Serverless::Function").values():
        function["Properties"]["CodeUri"] = "s3://artifacts/deployment.zip"
    try:
        translated: dict[str, Any] = transform(uploaded, {"AWS::Region": "us-east-1"}, NoAws(), feature_toggle=None)
    except InvalidDocumentException as exc:
        pytest.fail(f"SAM translator refused the template: {[str(e) for e in exc.causes]}")
    return translated


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def test_cfn_lint_passes(package: Path) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), str(package / "sam.json")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_trigger_reports_partial_batch_failures(cfn: dict[str, Any]) -> None:
    mappings = {
        m["Properties"]["FunctionName"]["Ref"]: m["Properties"]
        for m in resources(cfn, "AWS::Lambda::EventSourceMapping").values()
    }
    assert set(mappings) == {"Send", "Forward", "Outbox"}
    assert all(p["FunctionResponseTypes"] == ["ReportBatchItemFailures"] for p in mappings.values())
    send = mappings["Send"]
    assert send["BatchSize"] == 50 and 0 < send["MaximumBatchingWindowInSeconds"] <= 5
    assert send["EventSourceArn"] == {"Fn::Sub": "${SendQueue.Arn}"}
    assert mappings["Forward"]["EventSourceArn"] == {"Fn::Sub": "${ForwardQueue.Arn}"}


def test_the_outbox_reads_the_ledgers_stream_with_bounded_retries_and_a_place_for_what_it_gives_up(
    cfn: dict[str, Any],
) -> None:
    """docs.aws.amazon.com/lambda/latest/dg/with-ddb.html: bisect on a function error, a bounded retry count and
    record age, an on-failure destination; the stream carries both images (domain/outbox.py compares them)."""
    (outbox,) = [
        m["Properties"]
        for m in resources(cfn, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"]["Ref"] == "Outbox"
    ]
    assert outbox["EventSourceArn"] == {"Fn::GetAtt": ["MessagesTable", "StreamArn"]}
    assert outbox["StartingPosition"] == "TRIM_HORIZON" and outbox["BisectBatchOnFunctionError"] is True
    assert 0 < outbox["MaximumRetryAttempts"] <= 10_000 and 0 < outbox["MaximumRecordAgeInSeconds"] <= 86_400
    destination = outbox["DestinationConfig"]["OnFailure"]["Destination"]
    assert destination == {"Fn::GetAtt": ["OutboxDeadLetterQueue", "Arn"]}
    assert outbox["BatchSize"] == 1000 and 0 < outbox["MaximumBatchingWindowInSeconds"] <= 300
    table = resources(cfn, "AWS::DynamoDB::Table")["MessagesTable"]["Properties"]
    assert table["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    forward = resources(cfn, "AWS::SQS::Queue")["ForwardQueue"]["Properties"]
    assert forward["FifoQueue"] is True  # a message's write-backs wait in order


def test_every_request_in_flight_to_twilio_fits_the_concurrency_budget(sam: dict[str, Any]) -> None:
    """Twilio limits concurrent requests per account (429 / 20429 beyond): the SQS trigger's maximum
    concurrency × sends per invocation, plus the poll function's share, stays within the budget: the account's
    TWILIO_MAX_CONCURRENCY when set, else what SEND_RATE needs (50 at least)."""
    from infra.deploy import DeployError, capacity_plan, concurrency_plan

    send = sam["Resources"]["Send"]["Properties"]
    env = send["Environment"]["Variables"]
    invocations = send["Events"]["SendSqsEventSource"]["Properties"]["ScalingConfig"]["MaximumConcurrency"]
    polls = sam["Resources"]["Poll"]["Properties"]["ReservedConcurrentExecutions"]
    in_flight = invocations * int(env["SEND_CONCURRENCY"]) + polls * int(env["POLL_CONCURRENCY"])
    assert invocations >= 2 and in_flight <= capacity_plan(env)["twilio_budget"] == 50
    assert send["ReservedConcurrentExecutions"] == invocations  # fewer would throttle the trigger's invocations
    with pytest.raises(DeployError, match="raise the budget or lower SEND_CONCURRENCY"):
        concurrency_plan({"TWILIO_MAX_CONCURRENCY": "20", "SEND_CONCURRENCY": "10"}, poll_invocations=2)


def test_the_function_urls_hold_the_requests_of_the_stages_send_rate(sam: dict[str, Any]) -> None:
    """AWS answers 429 above 10 requests/s per unit of a function URL's reserved concurrency, and Twilio
    retries no 429: the webhooks must hold 3 callbacks a message at SEND_RATE, twice over; the front door a
    create and ~3 polls a message."""
    from infra.deploy import DeployError, capacity_plan

    rate = float(sam["Resources"]["Webhooks"]["Properties"]["Environment"]["Variables"]["SEND_RATE"])
    webhooks = sam["Resources"]["Webhooks"]["Properties"]["ReservedConcurrentExecutions"]
    facade = sam["Resources"]["Facade"]["Properties"]["ReservedConcurrentExecutions"]
    assert webhooks * 10 >= 3 * rate * 2 and facade * 10 >= 4 * rate * 2
    plans = [capacity_plan({"SEND_RATE": str(r)}) for r in (10, 100, 1000)]
    assert [(p["Webhooks"], p["Facade"]) for p in plans] == [(6, 8), (60, 80), (600, 800)]
    with pytest.raises(DeployError, match="SEND_RATE must be"):
        capacity_plan({"SEND_RATE": "lots"})


def test_every_function_and_trigger_is_sized_from_the_send_rate(sam: dict[str, Any]) -> None:
    """One number: the poll function fetches every message once per attempt as if no callback came
    (POLL_CONCURRENCY fetches of ~0.25 s each per invocation), the forward function and its trigger tell 3
    write-backs a message, the Twilio budget holds the creates and fetches, twice over; an account's own
    TWILIO_MAX_CONCURRENCY too small for the rate is refused naming what to ask Twilio for."""
    from infra.deploy import DeployError, capacity_plan

    resources = sam["Resources"]
    env = resources["Send"]["Properties"]["Environment"]["Variables"]
    plan = capacity_plan(env)
    for name in ("Webhooks", "Facade", "Poll", "Forward", "Send"):
        assert resources[name]["Properties"]["ReservedConcurrentExecutions"] >= plan[name], name
    forward = resources["Forward"]["Properties"]
    scaling = forward["Events"]["ForwardSqsEventSource"]["Properties"]["ScalingConfig"]
    assert scaling["MaximumConcurrency"] == forward["ReservedConcurrentExecutions"]

    rate = float(env["SEND_RATE"])
    assert plan["Poll"] * int(env["POLL_CONCURRENCY"]) / 0.25 >= rate * 2  # every open message, each attempt
    assert plan["sends_per_second"] >= rate * 2
    plans = {r: capacity_plan({"SEND_RATE": str(r), "POLL_CONCURRENCY": "5"}) for r in (10, 100, 1000)}
    assert [(p["Poll"], p["Forward"], p["Send"], p["twilio_budget"]) for p in plans.values()] == [
        (2, 4, 4, 50), (10, 36, 10, 150), (100, 360, 100, 1500)
    ]  # fmt: skip
    assert all(p["sends_per_second"] >= 2 * r for r, p in plans.items())
    # a poll window's index key takes 2 writes a message: spread over keys of ~1,000 writes/s each
    assert [p["poll_window_shards"] for p in plans.values()] == [1, 1, 4]
    shared = sam["Globals"]["Function"]["Environment"]["Variables"]
    assert shared["POLL_WINDOW_SHARDS"] == str(plan["poll_window_shards"])
    with pytest.raises(DeployError, match=r"SEND_RATE=100 needs about 150 requests in flight.*ask Twilio"):
        capacity_plan({"SEND_RATE": "100", "TWILIO_MAX_CONCURRENCY": "50"})


def test_the_queues_visibility_timeout_is_derived_from_the_send_timeout(sam: dict[str, Any]) -> None:
    """AWS: at least six times the function's timeout (plus the batching window), else a slow batch is
    handed out again while it is still being sent."""
    from infra.deploy import derive

    queue = sam["Resources"]["SendQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["SendDeadLetterQueue", "Arn"]}
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 3
    send = sam["Resources"]["Send"]["Properties"]
    window = send["Events"]["SendSqsEventSource"]["Properties"]["MaximumBatchingWindowInSeconds"]
    assert queue["VisibilityTimeout"] == 6 * send["Timeout"] + window
    slower = copy.deepcopy(sam)
    slower["Resources"]["Send"]["Properties"]["Timeout"] = 300
    assert derive(slower, {})["Resources"]["SendQueue"]["Properties"]["VisibilityTimeout"] == 1800 + window


def test_tables_are_on_demand_encrypted_recoverable_and_messages_expire(sam: dict[str, Any]) -> None:
    tables = resources(sam, "AWS::DynamoDB::Table")
    assert set(tables) == {
        "MessagesTable",
        "OptOutsTable",
        "TemplatesTable",
        "CountersTable",
        "SendersTable",
        "ConnectionsTable",
    }
    for table in tables.values():
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert tables["MessagesTable"]["Properties"]["TimeToLiveSpecification"] == {
        "AttributeName": "expires_at",
        "Enabled": True,
    }


def test_the_state_machine_invokes_only_the_poll_functions(sam: dict[str, Any]) -> None:
    machine = sam["Resources"]["PollStateMachine"]["Properties"]
    assert set(machine["DefinitionSubstitutions"]) == {"PollFunctionArn", "FinalizeFunctionArn"}
    role = sam["Resources"]["PollStateMachineRole"]["Properties"]
    (statement,) = role["Policies"][0]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "lambda:InvokeFunction"
    assert statement["Resource"] == [{"Fn::GetAtt": ["Poll", "Arn"]}, {"Fn::GetAtt": ["Finalize", "Arn"]}]
    assert sam["Resources"]["Send"]["Properties"]["Environment"]["Variables"]["POLL_STATE_MACHINE_ARN"] == {
        "Ref": "PollStateMachine"
    }


def test_secrets_are_kept_and_the_api_is_throttled_per_stage(sam: dict[str, Any]) -> None:
    """Credentials, key hashes and front-door tokens outlive a deleted or replaced stack, as the data tables
    do. API keys are the app's own (ApiKeysSecret): a usage plan without API Gateway keys throttles nothing,
    so there is none; the stage's method settings throttle every request."""
    secrets = resources(sam, "AWS::SecretsManager::Secret")
    assert set(secrets) == {"TwilioSecret", "ApiKeysSecret", "FacadeSecret"}
    for name in secrets:
        resource = sam["Resources"][name]
        assert (resource.get("DeletionPolicy"), resource.get("UpdateReplacePolicy")) == ("Retain", "Retain"), name
    assert resources(sam, "AWS::ApiGateway::UsagePlan") == {}
    assert "QUOTA_EXCEEDED" not in sam["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]
    (setting,) = sam["Resources"]["RestAPI"]["Properties"]["MethodSettings"]
    assert setting["ThrottlingRateLimit"] > 0


def test_the_packaged_template_defaults_stage_to_the_stage_it_was_packaged_for(sam: dict[str, Any]) -> None:
    """A pipeline that deploys build/<stage>/sam.json without overriding Stage gets that stage's log groups
    and secret prefix, not dev's (whose webhooks would then answer 503)."""
    import copy

    from infra.deploy import derive, stage_environment

    assert sam["Parameters"]["Stage"]["Default"] == "dev"  # the fixture packages dev
    prod = derive(copy.deepcopy(sam), stage_environment("prod"), stage="prod")
    assert prod["Parameters"]["Stage"]["Default"] == "prod"


def test_each_function_has_its_own_role(sam: dict[str, Any]) -> None:
    """What each role grants is checked against what its function's code calls in
    tests/flow/test_iam_per_function.py; here, that the packaged template wires the roles."""
    for function, role in FUNCTION_ROLES.items():
        assert sam["Resources"][function]["Properties"]["Role"] == {"Fn::GetAtt": [role, "Arn"]}
        assert granted(function, sam), function
    public = {action for action, _ in granted("Webhooks", sam)}
    assert not [a for a in public if a.startswith(("sqs:", "states:"))]  # the public function cannot send
    assert ("secretsmanager:GetSecretValue", "ApiKeysSecret") not in granted("Webhooks", sam)


def test_policies_name_partition_region_and_account_never_a_literal_or_a_wildcard(sam: dict[str, Any]) -> None:
    for role in [*FUNCTION_ROLES.values(), "PollStateMachineRole"]:
        for policy in sam["Resources"][role]["Properties"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                if "Fn::If" in statement:  # X-Ray accepts no resource-level permission: "*" only when tracing is on
                    condition, on, off = statement["Fn::If"]
                    assert (condition, off, on["Resource"]) == ("TracingActive", {"Ref": "AWS::NoValue"}, "*")
                    assert all(a.startswith("xray:") for a in on["Action"])
                    continue
                targets = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                for target in targets:
                    assert target != "*" and isinstance(target, dict), f"{role}: {target}"
                    text = target.get("Fn::Sub", "")
                    if text.startswith("arn:"):
                        assert text.startswith("arn:${AWS::Partition}:"), text
                        assert "${AWS::Region}:${AWS::AccountId}:" in text, text
    assert '"arn:aws:' not in json.dumps(sam)


def test_each_function_logs_to_its_own_group_with_retention(sam: dict[str, Any]) -> None:
    """Log group ARNs come from the groups themselves, not from the stack's or the functions' names."""
    for function, role in FUNCTION_ROLES.items():
        group = f"{function}LogGroup"
        props = sam["Resources"][function]["Properties"]
        assert props["LoggingConfig"]["LogGroup"] == {"Ref": group}
        assert sam["Resources"][group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        (logs,) = [s for s in statements(role, sam) if s["Sid"] == "Logs"]
        assert logs["Resource"] == {"Fn::GetAtt": [group, "Arn"]}
        assert set(logs["Action"]) == {"logs:CreateLogStream", "logs:PutLogEvents"}
        assert props["Tracing"] == {"Ref": "Tracing"}
    assert sam["Resources"]["PollStateMachine"]["Properties"]["TracingConfiguration"]["Enabled"]["Fn::If"][0] == (
        "TracingActive"
    )


def test_further_connections_secrets_are_readable_where_credentials_are_read(sam: dict[str, Any]) -> None:
    from infra.deploy import DeployError, check_connection_secrets

    pattern = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:"
    pattern += "twilio-connector-${Stage}/twilio/*"
    for function in ("Send", "Poll", "Webhooks", "APIHandler"):
        (statement,) = [s for s in statements(FUNCTION_ROLES[function], sam) if s["Sid"] == "TwilioCredentials"]
        assert {"Fn::Sub": pattern} in statement["Resource"], function
    assert sam["Globals"]["Function"]["Environment"]["Variables"]["CONNECTION_SECRET_PREFIX"] == {
        "Fn::Sub": "twilio-connector-${Stage}/twilio/"
    }
    check_connection_secrets(
        "prod", {"TWILIO_CONNECTIONS": json.dumps({"eu": {"secret_id": "twilio-connector-prod/twilio/eu"}})}
    )
    with pytest.raises(DeployError, match="twilio-connector-prod/twilio/<name>"):
        check_connection_secrets("prod", {"TWILIO_CONNECTIONS": json.dumps({"eu": {"secret_id": "my-eu-twilio"}})})
    for stage in ("dev", "prod"):
        from infra.deploy import stage_environment

        check_connection_secrets(stage, stage_environment(stage))


def test_no_retained_or_slow_to_free_name_blocks_re_creating_the_stack(sam: dict[str, Any]) -> None:
    """A retained table, a queue name in its 60 s cool-down or a secret pending deletion would make the
    next create of a deleted stack fail: CloudFormation names them."""
    names = {"AWS::DynamoDB::Table": "TableName", "AWS::SQS::Queue": "QueueName",
             "AWS::SecretsManager::Secret": "Name", "AWS::StepFunctions::StateMachine": "StateMachineName"}  # fmt: skip
    for kind, prop in names.items():
        for name, props in ((n, r["Properties"]) for n, r in resources(sam, kind).items()):
            assert prop not in props, f"{name} sets {prop}"
    variables = sam["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["MESSAGES_TABLE"] == {"Ref": "MessagesTable"} and variables["SEND_QUEUE_URL"] == {
        "Ref": "SendQueue"
    }
    for function in FUNCTION_ROLES:
        env = sam["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
        assert not {"MESSAGES_TABLE", "SEND_QUEUE_NAME", "TWILIO_SECRET_ID"} & set(env), function


def test_producers_get_the_queue_and_a_policy_to_post_to_it(sam: dict[str, Any]) -> None:
    outputs = sam["Outputs"]
    assert outputs["SendQueueUrl"]["Value"] == {"Ref": "SendQueue"}
    assert outputs["SendQueueArn"]["Value"] == {"Fn::GetAtt": ["SendQueue", "Arn"]}
    assert outputs["SendDeadLetterQueueArn"]["Value"] == {"Fn::GetAtt": ["SendDeadLetterQueue", "Arn"]}
    assert outputs["ProducerPolicyArn"]["Value"] == {"Ref": "ProducerPolicy"}
    (statement,) = sam["Resources"]["ProducerPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert "sqs:SendMessage" in statement["Action"] and statement["Resource"] == {"Fn::GetAtt": ["SendQueue", "Arn"]}
    assert not [a for a in statement["Action"] if not a.startswith("sqs:") or "Delete" in a or "Receive" in a]


def alarms_list(sam: dict[str, Any]) -> list[dict[str, Any]]:
    return [r["Properties"] for r in resources(sam, "AWS::CloudWatch::Alarm").values()]


def test_alarms_cover_what_an_operator_must_hear_about(sam: dict[str, Any]) -> None:
    alarms = {alarm["MetricName"]: alarm for alarm in alarms_list(sam)}
    wanted = {"ApproximateNumberOfMessagesVisible", "Errors", "TwilioThrottled", "ExecutionsFailed",
              "DuplicateSendDetected", "PollStartFailed", "Throttles", "IteratorAge", "ApproximateAgeOfOldestMessage",
              "EventsNotPublished", "PollWindowsAbandoned", "WriteThrottleEvents", "ReadThrottleEvents"}  # fmt: skip
    assert wanted <= set(alarms)
    # every function: Lambda's Throttles (a function URL answers 429 above 10 × its reserved concurrency)
    throttled = {a["Dimensions"][0]["Value"]["Ref"] for a in alarms_list(sam) if a["MetricName"] == "Throttles"}
    functions = {name for name, r in sam["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
    assert throttled == functions
    failing = {a["Dimensions"][0]["Value"]["Ref"] for a in alarms_list(sam) if a["MetricName"] == "Errors"}
    assert {"Send", "Webhooks", "APIHandler", "Facade", "Outbox", "Poll"} <= failing
    queues = {
        alarm["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for alarm in alarms_list(sam)
        if alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    }
    assert queues == {"SendDeadLetterQueue", "ForwardDeadLetterQueue", "OutboxDeadLetterQueue"}
    for alarm in alarms_list(sam):
        assert alarm["AlarmActions"] == {
            "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
        }
        if alarm["Namespace"] == "TwilioConnector":  # Powertools' default dimension
            assert alarm["Dimensions"] == [{"Name": "service", "Value": {"Fn::Sub": "twilio-connector-${Stage}"}}]
    assert sam["Parameters"]["AlarmTopicArn"]["Default"] == ""


def test_the_zip_ships_what_runs_and_nothing_else(package: Path) -> None:
    names = zipfile.ZipFile(package / "deployment.zip").namelist()
    assert "app.py" in names and "chalicelib/usecases/send.py" in names and "chalice/app.py" in names
    tops = {n.split("/", 1)[0] for n in names}
    assert {"requests", "aws_lambda_powertools"} <= tops
    # the chalice CLI and its tooling, and the SDK the Lambda runtime already has
    assert not tops & {"pip", "setuptools", "yaml", "click", "boto3", "botocore", "s3transfer", "local", "tests"}
    # phonenumbers without its geocoding and carrier data (never read: docs/deploy.md, "Package weight")
    assert not [n for n in names if n.startswith(("phonenumbers/geodata/", "phonenumbers/carrierdata/"))]
    assert "phonenumbers/tzdata/__init__.py" in names  # what quiet hours do read
    assert (package / "deployment.zip").stat().st_size < 6_000_000


# Run inside the unpacked zip: counts every module Python had to compile from source while importing
# each function's code and building the send function's pieces, as a cold start in Lambda does.
COMPILE_PROBE = """
import importlib._bootstrap_external as bootstrap, json, os, pkgutil, sys
compiled = []
original = bootstrap.SourceLoader.source_to_code
def counting(self, data, path, *args, **kwargs):
    compiled.append(path)
    return original(self, data, path, *args, **kwargs)
bootstrap.SourceLoader.source_to_code = counting
import app, chalicelib, requests, aws_lambda_powertools
for module in pkgutil.iter_modules(chalicelib.__path__):
    __import__("chalicelib." + module.name)
from chalicelib import wiring
wiring.send_consumer()
task = os.getcwd()
modules = (app, chalicelib, requests, aws_lambda_powertools)
print(json.dumps({"compiled": [p for p in compiled if p.startswith(task)],
                  "from_task": [m.__file__.startswith(task) for m in modules]}))
"""


def test_the_zip_ships_bytecode_so_a_cold_start_compiles_nothing(package: Path, tmp_path: Path) -> None:
    """Lambda's /var/task is read-only, so a module without its .pyc in the zip is compiled from source at
    every cold start (the send function's start: ~3x `import boto3, requests` instead of ~1.8x, make bench)."""
    with zipfile.ZipFile(package / "deployment.zip") as z:
        z.extractall(tmp_path)
        names = set(z.namelist())
    missing = [n for n in names if n.endswith(".py") and importlib.util.cache_from_source(n) not in names]
    assert missing == []
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    out = subprocess.run(
        [sys.executable, "-c", COMPILE_PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(seen["from_task"]), "the probe imported the work tree, not the zip"
    assert seen["compiled"] == []
    # a source changed after packaging is compiled, not shadowed by its old bytecode (and the probe sees it)
    with (tmp_path / "chalicelib" / "wiring.py").open("a") as source:
        source.write("\n# edited in place\n")
    out = subprocess.run(
        [sys.executable, "-c", COMPILE_PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1])["compiled"] == [str(tmp_path / "chalicelib" / "wiring.py")]


@pytest.mark.parametrize(("function", "handler"), [("Webhooks", "app.webhooks"), ("Facade", "app.facade")])
def test_each_function_url_is_invocable_only_through_it(sam: dict[str, Any], function: str, handler: str) -> None:
    """Since October 2025 a function URL needs lambda:InvokeFunction too; the condition keeps that grant
    to requests through the URL (AWS, "Control access to Lambda function URLs"). Twilio's webhooks and
    the Twilio-compatible front door each have one."""
    url = sam["Resources"][f"{function}Url"]["Properties"]
    assert url == {"TargetFunctionArn": {"Fn::GetAtt": [function, "Arn"]}, "AuthType": "NONE"}
    granted = [p["Properties"] for p in resources(sam, "AWS::Lambda::Permission").values()]
    permissions = {p["Action"]: p for p in granted if p["FunctionName"] == {"Ref": function}}
    assert set(permissions) == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    assert permissions["lambda:InvokeFunctionUrl"]["FunctionUrlAuthType"] == "NONE"
    assert permissions["lambda:InvokeFunction"]["InvokedViaFunctionUrl"] is True
    assert all(p["Principal"] == "*" for p in permissions.values())
    assert sam["Resources"][function]["Properties"]["Handler"] == handler
    assert f"{function}Url" in sam["Outputs"]
    assert resources(sam, "AWS::Lambda::Url").keys() == {"WebhooksUrl", "FacadeUrl"}  # nothing else public


def test_twilios_webhook_url_is_named_in_every_send(sam: dict[str, Any]) -> None:
    # the send function names the URL in StatusCallback; the webhook function itself cannot (a cycle)
    for function in ("Send", "APIHandler"):
        env = sam["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert env["WEBHOOK_BASE_URL"] == {"Fn::GetAtt": ["WebhooksUrl", "FunctionUrl"]}
    assert "WEBHOOK_BASE_URL" not in sam["Resources"]["Webhooks"]["Properties"]["Environment"]["Variables"]


def test_checkov_fails_nothing_and_every_exception_says_why(package: Path) -> None:
    checkov = ROOT / ".venv-checkov" / "bin" / "checkov"
    assert checkov.exists(), "checkov is installed by `make test` into .venv-checkov"
    result = subprocess.run(
        [
            str(checkov),
            "-f",
            str(package / "sam.json"),
            "--framework",
            "cloudformation",
            "--skip-download",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    report = json.loads(result.stdout)
    failed = [(f["check_id"], f["resource"]) for f in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 50
    for skipped in report["results"]["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "")) > 30, skipped["check_id"]


def test_chalice_deploy_is_refused_with_the_way_that_works(tmp_path: Path) -> None:
    """`chalice deploy` would create the SQS trigger without ReportBatchItemFailures: failed records deleted."""
    chalice = Path(sys.executable).parent / "chalice"
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    result = subprocess.run(
        [str(chalice), "deploy", "--stage", "dev"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "make deploy STAGE=" in result.stdout + result.stderr


def test_api_gateways_own_errors_carry_our_error_body(cfn: dict[str, Any]) -> None:
    """Unknown routes, throttling and gateway failures never reach the app: the deployed API's
    gateway responses (in the swagger body, so each change redeploys the stage) answer in the API's one error shape."""
    (api,) = resources(cfn, "AWS::ApiGateway::RestApi").values()
    responses = api["Properties"]["Body"]["x-amazon-apigateway-gateway-responses"]
    assert responses["MISSING_AUTHENTICATION_TOKEN"]["statusCode"] == "404"
    assert responses["THROTTLED"]["statusCode"] == "429"
    assert {"DEFAULT_4XX", "DEFAULT_5XX", "INCOMPLETE_SIGNATURE", "REQUEST_TOO_LARGE"} <= set(responses)
    for kind, response in responses.items():
        # API Gateway fills $context.error.messageString in as a quoted JSON string
        text = response["responseTemplates"]["application/json"].replace("$context.error.messageString", '"x"')
        error = json.loads(text)["error"]
        assert set(error) == {"code", "message", "field"} and error["code"] and error["message"], kind


def test_every_functions_environment_fits_lambdas_4_kb_whatever_the_stacks_name(sam: dict[str, Any]) -> None:
    """Lambda refuses more than 4 KB of environment variables, counted after CloudFormation fills in the
    names it makes from the stack's name (up to 128 characters); `make package` and `make deploy` check."""
    from infra.deploy import DeployError, check_environment_size

    check_environment_size(sam, "dev", "s" * 128)
    grown = copy.deepcopy(sam)
    grown["Resources"]["Send"]["Properties"]["Environment"]["Variables"]["TWILIO_CONNECTIONS"] = "x" * 3000
    with pytest.raises(DeployError, match="function Send's environment"):
        check_environment_size(grown, "dev", "twilio-connector-dev")


def test_the_readme_says_what_to_do_when_each_alarm_fires(sam: dict[str, Any]) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## When an alarm fires", 1)[1].split("\n## ", 1)[0]
    missing = []
    for name, resource in resources(sam, "AWS::CloudWatch::Alarm").items():
        metric = resource["Properties"]["MetricName"]
        shown = f"<Function>{metric}" if metric in ("Throttles", "Errors") else name.removesuffix("Alarm")
        if f"`{shown}`" not in section:
            missing.append(name)
    assert missing == []

"""The deployable artifact: `chalice package --merge-template infra/resources.json`, then the
SAM translator and cfn-lint on what it produced, and the properties a deployment relies on."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("package") / "dev"
    chalice = Path(sys.executable).parent / "chalice"
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    subprocess.run(
        [str(chalice), "package", "--stage", "dev", "--merge-template", "infra/resources.json", str(out)],
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


def test_the_send_trigger_reports_partial_batch_failures(cfn: dict[str, Any]) -> None:
    (mapping,) = resources(cfn, "AWS::Lambda::EventSourceMapping").values()
    props = mapping["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BatchSize"] == 50 and 0 < props["MaximumBatchingWindowInSeconds"] <= 5


def test_the_queue_has_a_dead_letter_queue(sam: dict[str, Any]) -> None:
    queue = sam["Resources"]["SendQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["SendDeadLetterQueue", "Arn"]}
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 3
    assert queue["VisibilityTimeout"] >= 6 * sam["Resources"]["Send"]["Properties"]["Timeout"]


def test_tables_are_on_demand_encrypted_recoverable_and_messages_expire(sam: dict[str, Any]) -> None:
    tables = resources(sam, "AWS::DynamoDB::Table")
    assert set(tables) == {"MessagesTable", "OptOutsTable", "TemplatesTable", "CountersTable"}
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


def test_secrets_throttling_and_the_usage_plan(sam: dict[str, Any]) -> None:
    assert {"TwilioSecret", "ApiKeysSecret"} <= set(resources(sam, "AWS::SecretsManager::Secret"))
    plan = sam["Resources"]["UsagePlan"]["Properties"]
    assert plan["Throttle"]["RateLimit"] > 0 and plan["ApiStages"][0]["ApiId"] == {"Ref": "RestAPI"}
    (setting,) = sam["Resources"]["RestAPI"]["Properties"]["MethodSettings"]
    assert setting["ThrottlingRateLimit"] > 0


def test_iam_policies_name_their_resources(sam: dict[str, Any]) -> None:
    actions: set[str] = set()
    for name, role in resources(sam, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                assert statement["Resource"] != "*", f"{name} grants {statement['Action']} on every resource"
                listed = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                actions |= set(listed)
    needed = {
        "events:PutEvents",
        "states:StartExecution",
        "dynamodb:UpdateItem",
        "sqs:ReceiveMessage",
        "secretsmanager:GetSecretValue",
        "sqs:SendMessage",
        "dynamodb:BatchGetItem",
        "dynamodb:Query",
    }
    assert needed <= actions


def test_the_zip_ships_the_app_and_not_the_local_tooling(package: Path) -> None:
    names = zipfile.ZipFile(package / "deployment.zip").namelist()
    assert "app.py" in names and "chalicelib/services.py" in names
    assert not any(n.startswith(("local/", "tests/")) for n in names)


def test_twilios_webhooks_have_a_function_url_signed_in_code(sam: dict[str, Any]) -> None:
    url = sam["Resources"]["WebhooksUrl"]["Properties"]
    assert url == {"TargetFunctionArn": {"Fn::GetAtt": ["Webhooks", "Arn"]}, "AuthType": "NONE"}
    permission = sam["Resources"]["WebhooksUrlPermission"]["Properties"]
    assert (permission["Action"], permission["FunctionUrlAuthType"]) == ("lambda:InvokeFunctionUrl", "NONE")
    assert sam["Resources"]["Webhooks"]["Properties"]["Handler"] == "app.webhooks"
    assert "WebhooksUrl" in sam["Outputs"]


def test_api_gateways_own_errors_carry_our_error_body(cfn: dict[str, Any]) -> None:
    """Unknown routes, throttling and gateway failures never reach the app: the deployed API's
    gateway responses (in the swagger body, so each change redeploys the stage) answer in DESIGN §3.2's shape."""
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

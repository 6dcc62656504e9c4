"""`make deploy`: the code goes to S3, the template through a change set, and the outputs come back.

S3 is moto; CloudFormation is a recording fake, since moto cannot run the SAM transform."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from infra.deploy import DeployError, deploy
from tests.aws import SessionWithCloudFormation

BUCKET = "my-artifacts"


class FakeCloudFormation:
    def __init__(self, existing: str | None = None, change_set_reason: str | None = None) -> None:
        self.status = existing
        self.change_set_reason = change_set_reason
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.polls = 0

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        self.calls.append(("describe_stacks", {}))
        if self.status is None:
            raise ClientError(
                {"Error": {"Code": "ValidationError", "Message": f"Stack with id {StackName} does not exist"}},
                "DescribeStacks",
            )
        outputs = [{"OutputKey": "SendQueueUrl", "OutputValue": "https://sqs/q"}]
        return {"Stacks": [{"StackStatus": self.status, "Outputs": outputs}]}

    def create_change_set(self, **kwargs: Any) -> None:
        self.calls.append(("create_change_set", kwargs))

    def describe_change_set(self, **kwargs: Any) -> dict[str, Any]:
        self.polls += 1
        if self.change_set_reason:
            return {"Status": "FAILED", "StatusReason": self.change_set_reason}
        return {"Status": "CREATE_PENDING" if self.polls < 2 else "CREATE_COMPLETE"}

    def execute_change_set(self, **kwargs: Any) -> None:
        self.calls.append(("execute_change_set", kwargs))
        self.status = "CREATE_COMPLETE" if self.status is None else "UPDATE_COMPLETE"

    def delete_change_set(self, **kwargs: Any) -> None:
        self.calls.append(("delete_change_set", kwargs))

    def describe_stack_events(self, StackName: str) -> dict[str, Any]:
        return {"StackEvents": []}


@pytest.fixture
def built(tmp_path: Path) -> Any:
    """A stand-in for `make package`'s output: three functions and a template over CloudFormation's inline limit."""

    def build(stage: str, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        (out / "deployment.zip").write_bytes(b"zip bytes")
        functions = {
            n: {"Type": "AWS::Serverless::Function", "Properties": {"CodeUri": "./deployment.zip"}}
            for n in ("Send", "Poll", "Webhooks")
        }
        padding = {
            "Padding": {"Type": "AWS::SQS::Queue", "Properties": {"Tags": [{"Key": "k", "Value": "v" * 60_000}]}}
        }
        (out / "sam.json").write_text(json.dumps({"Resources": {**functions, **padding}}))
        return out / "sam.json"

    return build


def test_a_first_deploy_uploads_the_code_and_creates_the_stack(built: Any) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        cfn = FakeCloudFormation()
        said: list[str] = []
        outputs = deploy(
            "prod",
            BUCKET,
            "twilio-connector-prod",
            {"AlarmTopicArn": "arn:t"},
            SessionWithCloudFormation(cfn),
            said.append,
            lambda s: None,
            built,
        )
        (create,) = [kw for name, kw in cfn.calls if name == "create_change_set"]
        assert create["ChangeSetType"] == "CREATE"
        assert set(create["Capabilities"]) == {"CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"}
        assert {"ParameterKey": "Stage", "ParameterValue": "prod"} in create["Parameters"]
        assert {"ParameterKey": "AlarmTopicArn", "ParameterValue": "arn:t"} in create["Parameters"]
        # the template is over 51,200 bytes: it goes through S3, with every function's code in S3
        key = create["TemplateURL"].split(".amazonaws.com/", 1)[1]
        template = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        uris = {f["Properties"]["CodeUri"] for n, f in template["Resources"].items() if n != "Padding"}
        (uri,) = uris
        assert uri.startswith(f"s3://{BUCKET}/twilio-connector-prod/") and uri.endswith(".zip")
        assert s3.get_object(Bucket=BUCKET, Key=uri.split("/", 3)[3])["Body"].read() == b"zip bytes"
        assert (
            "execute_change_set",
            {"StackName": "twilio-connector-prod", "ChangeSetName": create["ChangeSetName"]},
        ) in cfn.calls
        assert outputs == {"SendQueueUrl": "https://sqs/q"} and "SendQueueUrl = https://sqs/q" in said


def test_an_existing_stack_is_updated_and_no_change_is_not_an_error(built: Any) -> None:
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        cfn = FakeCloudFormation(
            "UPDATE_COMPLETE", change_set_reason="The submitted information didn't contain changes."
        )
        said: list[str] = []
        deploy("prod", BUCKET, "s", {}, SessionWithCloudFormation(cfn), said.append, lambda s: None, built)
        (create,) = [kw for name, kw in cfn.calls if name == "create_change_set"]
        assert create["ChangeSetType"] == "UPDATE"
        assert "nothing to change" in said and not [c for c in cfn.calls if c[0] == "execute_change_set"]


def test_a_stack_whose_first_create_failed_must_be_deleted_first(built: Any) -> None:
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        with pytest.raises(DeployError, match="delete it"):
            deploy(
                "prod",
                BUCKET,
                "s",
                {},
                SessionWithCloudFormation(FakeCloudFormation("ROLLBACK_COMPLETE")),
                print,
                lambda s: None,
                built,
            )


def test_make_deploy_without_a_bucket_says_how() -> None:
    import subprocess

    result = subprocess.run(
        ["make", "-s", "deploy", "STAGE=prod"], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2]
    )
    assert result.returncode != 0 and "BUCKET=" in result.stdout


def test_the_connection_check_can_say_why_a_secret_is_unreadable() -> None:
    """The template names the only further secrets the roles may read (CONNECTION_SECRET_PREFIX)."""
    from chalicelib.settings import load_settings

    env = {
        "TWILIO_SECRET_ID": "arn:aws:secretsmanager:us-east-1:1:secret:TwilioSecret-abc",
        "TWILIO_CONNECTIONS": '{"eu": {"secret_id": "my-eu"}, "us": {"secret_id": "twilio-connector-prod/twilio/us"}}',
        "CONNECTION_SECRET_PREFIX": "twilio-connector-prod/twilio/",
    }
    settings = load_settings(env)
    assert settings.unreadable_secret(settings.connections["default"]) is None
    assert settings.unreadable_secret(settings.connections["us"]) is None
    assert "twilio-connector-prod/twilio/<name>" in (settings.unreadable_secret(settings.connections["eu"]) or "")
    assert load_settings({**env, "CONNECTION_SECRET_PREFIX": ""}).unreadable_secret(settings.connections["eu"]) is None

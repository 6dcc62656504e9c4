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

    def list_stack_resources(self, StackName: str, NextToken: str | None = None) -> dict[str, Any]:
        functions = [("Send", "fn-send"), ("Poll", "fn-poll")]  # as the stack stands now, over two pages
        if NextToken is None:
            return {"StackResourceSummaries": [self._fn(*functions[0])], "NextToken": "2"}
        return {"StackResourceSummaries": [self._fn(*functions[1]), {"ResourceType": "AWS::SQS::Queue"}]}

    @staticmethod
    def _fn(name: str, physical: str) -> dict[str, str]:
        return {"LogicalResourceId": name, "PhysicalResourceId": physical, "ResourceType": "AWS::Lambda::Function"}

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


class FakeLambda:
    """What GetAccountSettings answers (moto does not implement it), and this stack's current reservations."""

    def __init__(self, limit: int, reserved_elsewhere: int, held: dict[str, int] | None = None) -> None:
        self.held = held or {}
        self.limit, self.unreserved = limit, limit - reserved_elsewhere - sum(self.held.values())

    def get_account_settings(self) -> dict[str, Any]:
        return {"AccountLimit": {"ConcurrentExecutions": self.limit, "UnreservedConcurrentExecutions": self.unreserved}}

    def get_function_concurrency(self, FunctionName: str) -> dict[str, Any]:
        return {"ReservedConcurrentExecutions": self.held[FunctionName]} if FunctionName in self.held else {}


def reserving(**per_function: int) -> Any:
    """A stand-in for `make package` whose functions reserve the given concurrency."""

    def build(stage: str, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        (out / "deployment.zip").write_bytes(b"zip bytes")
        functions = {
            n: {"Type": "AWS::Serverless::Function", "Properties": {"ReservedConcurrentExecutions": c}}
            for n, c in per_function.items()
        }
        (out / "sam.json").write_text(json.dumps({"Resources": functions}))
        return out / "sam.json"

    return build


def _deploy(cfn: FakeCloudFormation, lam: Any, build: Any) -> list[str]:
    said: list[str] = []
    deploy("prod", BUCKET, "s", {}, SessionWithCloudFormation(cfn, lam), said.append, lambda s: None, build)
    return said


def _uploaded() -> list[str]:
    return [
        o["Key"] for o in boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket=BUCKET).get("Contents", [])
    ]


def test_a_new_account_too_small_for_the_reservations_is_told_what_to_ask_for_before_anything_is_deployed() -> None:
    """New AWS accounts may start at 10 concurrent executions; CloudFormation would fail the stack minutes in."""
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        cfn = FakeCloudFormation()
        with pytest.raises(DeployError) as refused:
            _deploy(cfn, FakeLambda(limit=10, reserved_elsewhere=0), reserving(Send=4, APIHandler=20, Webhooks=10))
        text = str(refused.value)
        assert "reserves 34" in text and "APIHandler 20, Send 4, Webhooks 10" in text and "allows 10" in text
        assert "--quota-code L-B99A9384 --desired-value 134" in text and "reserved_concurrency" in text
        assert "Nothing was deployed" in text
        assert _uploaded() == [] and not [c for c in cfn.calls if c[0] == "create_change_set"]


def test_reservations_elsewhere_in_the_account_count_and_aws_keeps_100_unreserved() -> None:
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        with pytest.raises(DeployError, match=r"880 of them reserved by other functions.*desired-value 1005"):
            _deploy(FakeCloudFormation(), FakeLambda(1000, reserved_elsewhere=880), reserving(Send=15, Poll=10))
        # 1000 - 875 - 25 = 100 left: exactly what AWS keeps, so it deploys
        said = _deploy(FakeCloudFormation(), FakeLambda(1000, reserved_elsewhere=875), reserving(Send=15, Poll=10))
        assert "SendQueueUrl = https://sqs/q" in said
        # the plan is said before anything is uploaded: prod's SEND_RATE (.chalice/config.json) and its reservations
        assert any(line.startswith("capacity for SEND_RATE=10 messages/s: webhooks 6") for line in said), said


def test_an_update_counts_what_the_stack_already_reserves_as_given_back() -> None:
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        held = {"fn-send": 15, "fn-poll": 10}
        lam = FakeLambda(1000, reserved_elsewhere=870, held=held)  # 105 unreserved now
        said = _deploy(FakeCloudFormation("UPDATE_COMPLETE"), lam, reserving(Send=15, Poll=10))  # unchanged: fits
        assert "SendQueueUrl = https://sqs/q" in said
        with pytest.raises(DeployError, match="desired-value 1010"):  # 30 more than the account can give
            _deploy(FakeCloudFormation("UPDATE_COMPLETE"), lam, reserving(Send=30, Poll=10))


def test_an_account_whose_settings_cannot_be_read_is_deployed_with_a_word_of_it() -> None:
    with mock_aws():  # moto answers GetAccountSettings with an error, as a role without the right would
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        said = _deploy(FakeCloudFormation(), None, reserving(Send=4))
        assert any("deploying without checking it" in line for line in said)
        assert "SendQueueUrl = https://sqs/q" in said


def _with_environment(variables: dict[str, Any]) -> dict[str, Any]:
    return {
        "Globals": {"Function": {"Environment": {"Variables": {"SEND_QUEUE_URL": {"Ref": "SendQueue"}}}}},
        "Resources": {
            "SendQueue": {"Type": "AWS::SQS::Queue"},
            "Send": {"Type": "AWS::Serverless::Function", "Properties": {"Environment": {"Variables": variables}}},
        },
    }


def test_the_names_cloudformation_makes_are_counted_at_their_longest() -> None:
    from infra.deploy import _resolved_length

    real = "https://sqs.us-east-1.amazonaws.com/123456789012/twilio-connector-prod-SendQueue-AbCdEfGhIjKl"
    template = _with_environment({})
    estimate = _resolved_length(
        {"Ref": "SendQueue"}, template["Resources"], "prod", "twilio-connector-prod", "us-east-1"
    )
    assert len(real) <= estimate <= len(real) + 5
    # a queue's generated name is at most 80 characters, however long the stack's name
    long = _resolved_length({"Ref": "SendQueue"}, template["Resources"], "prod", "s" * 128, "us-east-1")
    assert long == len("https://sqs.us-east-1.amazonaws.com/123456789012/") + 80


def test_environment_variables_past_lambdas_4_kb_are_refused_before_deploying_with_what_to_do() -> None:
    """Lambda refuses them only when CloudFormation creates the function; TWILIO_CONNECTIONS is what grows."""
    from infra.deploy import check_environment_size

    connection = {"secret_id": "twilio-connector-prod/twilio/x", "from_numbers": ["+15551230000"] * 3}
    few = json.dumps({f"agency{i}": connection for i in range(10)})
    many = json.dumps({f"agency{i}": connection for i in range(40)})
    check_environment_size(_with_environment({"TWILIO_CONNECTIONS": few}), "prod", "twilio-connector-prod")
    with pytest.raises(DeployError) as refused:
        check_environment_size(_with_environment({"TWILIO_CONNECTIONS": many}), "prod", "twilio-connector-prod")
    text = str(refused.value)
    assert "function Send's environment variables" in text and "4,096" in text
    assert f"TWILIO_CONNECTIONS ({len(many):,} bytes)" in text and "PUT /connections/<name>" in text


def test_a_bucket_in_another_region_or_none_at_all_is_refused_before_anything_is_deployed(built: Any) -> None:
    """Lambda takes its code only from a bucket in its own region; CloudFormation finds out minutes in."""
    with mock_aws():
        boto3.client("s3", region_name="us-west-2").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"}
        )
        cfn = FakeCloudFormation()
        with pytest.raises(DeployError, match=r"is in us-west-2, but the stack goes to us-east-1.*REGION=us-west-2"):
            deploy("prod", BUCKET, "s", {}, SessionWithCloudFormation(cfn), print, lambda s: None, built)
        with pytest.raises(
            DeployError, match=r"no bucket nowhere-bucket.*aws s3 mb s3://nowhere-bucket --region us-east-1"
        ):
            deploy("prod", "nowhere-bucket", "s", {}, SessionWithCloudFormation(cfn), print, lambda s: None, built)
        assert not [c for c in cfn.calls if c[0] == "create_change_set"]
        objects = boto3.client("s3", region_name="us-west-2").list_objects_v2(Bucket=BUCKET)
        assert objects.get("KeyCount", 0) == 0

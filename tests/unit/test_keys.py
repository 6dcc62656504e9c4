"""After `make deploy`: the Twilio credentials and API keys go into the stack's secrets (moto), found
through the stack's outputs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.keys import SetupError, add_api_key, main, set_twilio_credentials
from tests.aws import SessionWithCloudFormation

SID = "AC" + "a" * 32


class Outputs:
    def __init__(self, **outputs: str) -> None:
        self.outputs = outputs

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        return {"Stacks": [{"Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in self.outputs.items()]}]}


@pytest.fixture
def secrets() -> Any:
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        twilio = client.create_secret(Name="TwilioSecret-x1", SecretString='{"account_sid": "", "auth_token": ""}')
        keys = client.create_secret(Name="ApiKeysSecret-y2", SecretString='{"keys": []}')
        yield client, twilio["ARN"], keys["ARN"]


def test_an_api_key_is_shown_once_and_only_its_hash_is_stored(secrets: Any, capsys: pytest.CaptureFixture[str]) -> None:
    client, _, keys_arn = secrets
    assert (
        main(
            ["api-key", "--stage", "prod", "--name", "cdp"],
            SessionWithCloudFormation(Outputs(ApiKeysSecretArn=keys_arn)),
        )
        == 0
    )
    key = capsys.readouterr().out.strip().splitlines()[-1]
    stored = json.loads(client.get_secret_value(SecretId=keys_arn)["SecretString"])
    assert stored == {"keys": [{"name": "cdp", "sha256": hashlib.sha256(key.encode()).hexdigest()}]}
    assert key not in json.dumps(stored) and len(key) >= 40
    with pytest.raises(SetupError, match="exists"):
        add_api_key(client, keys_arn, "cdp")


def test_twilio_credentials_keep_a_secondary_token_and_make_a_signing_key_once(secrets: Any) -> None:
    client, twilio_arn, _ = secrets
    client.put_secret_value(SecretId=twilio_arn, SecretString=json.dumps({"secondary_auth_token": "old-token"}))
    set_twilio_credentials(client, twilio_arn, SID, "t" * 32)
    first = json.loads(client.get_secret_value(SecretId=twilio_arn)["SecretString"])
    assert first["account_sid"] == SID and first["auth_token"] == "t" * 32
    assert first["secondary_auth_token"] == "old-token" and len(first["callback_signing_key"]) >= 40
    set_twilio_credentials(client, twilio_arn, SID, "u" * 32)
    second = json.loads(client.get_secret_value(SecretId=twilio_arn)["SecretString"])
    assert second["callback_signing_key"] == first["callback_signing_key"] and second["auth_token"] == "u" * 32


@pytest.mark.parametrize(("sid", "token", "says"), [("AB123", "t" * 32, "Account SID"), (SID, "short", "auth token")])
def test_wrong_looking_credentials_are_refused_before_anything_is_written(
    secrets: Any, sid: str, token: str, says: str
) -> None:
    client, twilio_arn, _ = secrets
    with pytest.raises(SetupError, match=says):
        set_twilio_credentials(client, twilio_arn, sid, token)
    assert json.loads(client.get_secret_value(SecretId=twilio_arn)["SecretString"])["auth_token"] == ""


def test_a_stack_without_the_output_says_to_deploy(secrets: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["api-key", "--stage", "prod", "--name", "cdp"], SessionWithCloudFormation(Outputs())) == 2
    assert "make deploy" in capsys.readouterr().err

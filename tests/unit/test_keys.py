"""After `make deploy`: the Twilio credentials and API keys go into the stack's secrets (moto), found
through the stack's outputs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.entrypoints.api_keys import KeySetupError
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
            ["api-key", "--stage", "prod", "--name", "cdp", "--role", "send"],
            SessionWithCloudFormation(Outputs(ApiKeysSecretArn=keys_arn)),
        )
        == 0
    )
    key = capsys.readouterr().out.strip().splitlines()[-1]
    stored = json.loads(client.get_secret_value(SecretId=keys_arn)["SecretString"])
    ((entry,),) = [stored["keys"]]
    assert entry["name"] == "cdp" and entry["sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert entry["role"] == "send" and len(entry["created"]) == 10  # its day: the key list shows it
    assert key not in json.dumps(stored) and len(key) >= 40
    with pytest.raises(KeySetupError, match="exists"):
        add_api_key(client, keys_arn, "cdp")
    with pytest.raises(KeySetupError, match="role is one of send, read, admin"):
        add_api_key(client, keys_arn, "other", role="root")
    add_api_key(client, keys_arn, "eu-only", role="send", connections=["eu", "eu", "apac"])
    stored = json.loads(client.get_secret_value(SecretId=keys_arn)["SecretString"])
    assert stored["keys"][-1]["connections"] == ["apac", "eu"]


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
    assert (
        main(["api-key", "--stage", "prod", "--name", "cdp", "--role", "send"], SessionWithCloudFormation(Outputs()))
        == 2
    )
    assert "make deploy" in capsys.readouterr().err


def test_a_front_door_account_is_shown_once_and_then_lets_its_platform_in(
    secrets: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import base64

    from chalicelib.adapters.facade_accounts import FacadeAccounts

    client, _, _ = secrets
    facade_arn = client.create_secret(Name="FacadeSecret-z3", SecretString='{"accounts": [], "keys": []}')["ARN"]
    outputs = Outputs(FacadeSecretArn=facade_arn, FacadeUrl="https://abc.lambda-url.us-east-1.on.aws/")
    argv = ["facade-account", "--stage", "prod", "--name", "unica", "--connection", "eu"]
    assert main(argv, SessionWithCloudFormation(outputs)) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    printed = {name.strip(): value.strip() for name, value in (line.split(": ", 1) for line in lines)}
    assert printed["Base URL"] == "https://abc.lambda-url.us-east-1.on.aws/2010-04-01"
    sid, token = printed["Account SID"], printed["Auth token"]

    class Provider:
        def get(self, name: str, max_age: int = 0, transform: str | None = None) -> Any:
            return json.loads(client.get_secret_value(SecretId=name)["SecretString"])

    basic = "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()
    account = FacadeAccounts(Provider(), facade_arn).authenticate({"authorization": basic}, sid)
    assert account.connection == "eu" and account.friendly_name == "unica"
    assert main(argv, SessionWithCloudFormation(outputs)) == 2  # the same name again: refused, nothing written
    assert len(json.loads(client.get_secret_value(SecretId=facade_arn)["SecretString"])["accounts"]) == 1


def test_a_new_api_key_can_be_given_on_a_command_line_whatever_its_random_part(
    secrets: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """URL-safe base64 starts with '-' one time in 64: `cli --key -abc…` would read it as an option."""
    import chalicelib.entrypoints.api_keys as api_keys
    from infra.cli import _parser

    client, _, keys_arn = secrets
    monkeypatch.setattr(api_keys.secrets, "token_urlsafe", lambda n=None: "-" + "a" * 42)
    key = add_api_key(client, keys_arn, "dashed")
    assert key == "tck_-" + "a" * 42
    assert _parser().parse_args(["--key", key, "stats"]).key == key

"""AWS resources for tests, created in moto from the same merge template the deployment uses."""

from __future__ import annotations

from typing import Any

from local import aws as local_aws
from local.aws import AtomicClient

__all__ = ["STAGE", "AtomicClient", "create_tables"]

STAGE = "test"


def create_tables(client: Any, stage: str = STAGE) -> dict[str, str]:
    return local_aws.create_tables(client, stage)


SECRET_ID = f"twilio-connector-{STAGE}/twilio"
API_KEYS_SECRET_ID = f"twilio-connector-{STAGE}/api-keys"
API_KEY = "test-api-key"
FACADE_SECRET_ID = f"twilio-connector-{STAGE}/facade"
FACADE_ACCOUNT = "AC" + "f" * 32
FACADE_TOKEN = "test-facade-token"


def provision(monkeypatch: Any, base_url: str, account_sid: str, auth_token: str, **env: str) -> dict[str, str]:
    """Inside mock_aws: the template's tables and queues, the secrets, and the env the app reads."""
    import json

    import boto3

    from chalicelib.entrypoints.api_keys import key_hash

    names = create_tables(boto3.client("dynamodb"))
    names.update(local_aws.create_queues(boto3.client("sqs"), STAGE))
    secrets = boto3.client("secretsmanager")
    secrets.create_secret(
        Name=SECRET_ID, SecretString=json.dumps({"account_sid": account_sid, "auth_token": auth_token})
    )
    secrets.create_secret(
        Name=API_KEYS_SECRET_ID, SecretString=json.dumps({"keys": [{"name": "tests", "sha256": key_hash(API_KEY)}]})
    )
    account = {"account_sid": FACADE_ACCOUNT, "auth_token": FACADE_TOKEN, "friendly_name": "tests"}
    secrets.create_secret(Name=FACADE_SECRET_ID, SecretString=json.dumps({"accounts": [account], "keys": []}))
    values = {
        "FACADE_SECRET_ID": FACADE_SECRET_ID,
        "MESSAGES_TABLE": names["MessagesTable"],
        "OPTOUTS_TABLE": names["OptOutsTable"],
        "TEMPLATES_TABLE": names["TemplatesTable"],
        "CONNECTIONS_TABLE": names["ConnectionsTable"],
        "COUNTERS_TABLE": names["CountersTable"],
        "SENDERS_TABLE": names["SendersTable"],
        "FORWARD_QUEUE_URL": names["ForwardQueue"],
        "FORWARD_DLQ_URL": names["ForwardDeadLetterQueue"],
        "SEND_QUEUE_NAME": f"twilio-connector-{STAGE}-send",
        "TWILIO_SECRET_ID": SECRET_ID,
        "API_KEYS_SECRET_ID": API_KEYS_SECRET_ID,
        "TWILIO_BASE_URL": base_url,
        "TWILIO_DEFAULT_FROM": "",
        "CLAIM_LEASE_SECONDS": "120",
        "CONNECTION_SECRET_PREFIX": f"twilio-connector-{STAGE}/twilio/",
        **env,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return names


class SessionWithCloudFormation:
    """A boto3 session whose CloudFormation is a fake (moto cannot run the SAM transform), and Lambda too when
    given (moto has no GetAccountSettings); every other client is moto's."""

    def __init__(self, cloudformation: Any, lambda_: Any = None) -> None:
        self.fakes = {"cloudformation": cloudformation, "lambda": lambda_}

    def client(self, service: str) -> Any:
        import boto3

        return self.fakes.get(service) or boto3.client(service, region_name="us-east-1")

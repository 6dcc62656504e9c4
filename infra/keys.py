"""After `make deploy`: put the Twilio credentials and API keys into the stack's secrets.

    python -m infra.keys twilio --stage prod     # asks for the Account SID and auth token
    python -m infra.keys api-key --stage prod --name cdp   # prints a new key once; stores its hash
    python -m infra.keys facade-account --stage prod --name unica [--connection eu]   # the front door

The secrets are found through the stack's outputs (TwilioSecretArn, ApiKeysSecretArn), so their
generated names never need typing. Nothing secret is taken from the command line (shell history).
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import secrets
import sys
from typing import Any

from chalicelib.adapters.facade_accounts import FacadeSetupError, add_facade_account  # shared with PUT /connections
from chalicelib.adapters.secrets import read_json_secret
from chalicelib.entrypoints.api_keys import ROLES, KeySetupError, add_api_key  # shared with POST /api-keys

ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")


class SetupError(Exception):
    """The secret cannot be written; the message says what to do."""


def stack_output(cfn: Any, stack: str, key: str) -> str:
    from botocore.exceptions import ClientError

    try:
        (found,) = cfn.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:
        raise SetupError(f"stack {stack} not found: deploy it first (make deploy)") from exc
    for output in found.get("Outputs", []):
        if output["OutputKey"] == key:
            return str(output["OutputValue"])
    raise SetupError(f"stack {stack} has no output {key}: deploy this version first (make deploy)")


def set_twilio_credentials(client: Any, secret_id: str, account_sid: str, auth_token: str) -> dict[str, Any]:
    """Write the account SID and auth token; keep a secondary token, and a signing key (made once)."""
    if not ACCOUNT_SID.fullmatch(account_sid):
        raise SetupError("the Account SID is AC followed by 32 hexadecimal characters (Twilio console, Account Info)")
    if len(auth_token) < 16:
        raise SetupError("that is not a Twilio auth token (32 characters, Twilio console, Account Info)")
    value = read_json_secret(client, secret_id)
    value.update(account_sid=account_sid, auth_token=auth_token)
    value.setdefault("callback_signing_key", secrets.token_urlsafe(32))
    client.put_secret_value(SecretId=secret_id, SecretString=json.dumps(value))
    return {k: v for k, v in value.items() if k == "account_sid"}


def main(argv: list[str] | None = None, session: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.keys", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("twilio", "api-key", "facade-account"):
        sub = commands.add_parser(name)
        sub.add_argument("--stage", default="dev")
        sub.add_argument("--stack-name")
        sub.add_argument("--region")
        if name in ("api-key", "facade-account"):
            sub.add_argument("--name", required=True, help="who it is for, e.g. the platform's name")
        if name == "api-key":
            sub.add_argument("--role", choices=ROLES, help="send, read or admin (asked for when not given)")
            sub.add_argument("--connections", default="", help="comma-separated: the only connections it reaches")
        if name == "facade-account":
            sub.add_argument("--connection", help="the Twilio connection it sends through (default: the default)")
    args = parser.parse_args(argv)
    if session is None:
        import boto3

        session = boto3.session.Session(region_name=args.region)
    stack = args.stack_name or f"twilio-connector-{args.stage}"
    client = session.client("secretsmanager")
    try:
        cfn = session.client("cloudformation")
        if args.command == "twilio":
            secret_id = stack_output(cfn, stack, "TwilioSecretArn")
            account_sid = input("Twilio Account SID (AC…): ").strip()
            token = getpass.getpass("Twilio auth token (not shown): ").strip()
            set_twilio_credentials(client, secret_id, account_sid, token)
            print(f"stored in {secret_id}; the functions read it within SECRET_MAX_AGE_SECONDS (300 s)")
        elif args.command == "facade-account":
            sid, token = add_facade_account(
                client, stack_output(cfn, stack, "FacadeSecretArn"), args.name, args.connection
            )
            base = stack_output(cfn, stack, "FacadeUrl").rstrip("/") + "/2010-04-01"
            print(f"Front door account for {args.name} (the token is shown once):")
            print(f"  Base URL:    {base}\n  Account SID: {sid}\n  Auth token:  {token}")
        else:
            role = args.role or input(f"Role of the key for {args.name} ({', '.join(ROLES)}): ").strip()
            limited = [c.strip() for c in args.connections.split(",") if c.strip()]
            secret = stack_output(cfn, stack, "ApiKeysSecretArn")
            key = add_api_key(client, secret, args.name, role=role, connections=limited)
            print(f"API key for {args.name}, role {role} (shown once; only its hash is stored):\n{key}")
    except (SetupError, FacadeSetupError, KeySetupError) as exc:
        print(f"keys: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

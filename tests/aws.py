"""AWS resources for tests, created in moto from the same merge template the deployment uses."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "resources.json"
STAGE = "test"


def resolve_name(value: Any, stage: str = STAGE) -> str:
    if isinstance(value, dict) and "Fn::Sub" in value:
        return str(value["Fn::Sub"]).replace("${Stage}", stage)
    return str(value)


def template_resources(kind: str) -> dict[str, dict[str, Any]]:
    resources = json.loads(TEMPLATE.read_text())["Resources"]
    return {name: r["Properties"] for name, r in resources.items() if r.get("Type") == kind}


def table_names(stage: str = STAGE) -> dict[str, str]:
    return {name: resolve_name(p["TableName"], stage) for name, p in template_resources("AWS::DynamoDB::Table").items()}


def create_tables(client: Any, stage: str = STAGE) -> dict[str, str]:
    names = table_names(stage)
    for logical, props in template_resources("AWS::DynamoDB::Table").items():
        extra = {"GlobalSecondaryIndexes": props["GlobalSecondaryIndexes"]} if "GlobalSecondaryIndexes" in props else {}
        client.create_table(
            TableName=names[logical],
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
            BillingMode=props["BillingMode"],
            **extra,
        )
    return names


class AtomicClient:
    """A boto3 client whose calls run one at a time.

    moto checks a ConditionExpression and writes without a lock, so two threads can
    both pass the same condition; DynamoDB does both atomically per item. Serialising
    the calls restores the guarantee the ledger relies on, for tests that run sends
    concurrently.
    """

    _lock = threading.Lock()

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return call

"""AWS resources for tests, created in moto from the same merge template the deployment uses."""

from __future__ import annotations

from typing import Any

from local import aws as local_aws
from local.aws import AtomicClient

__all__ = ["STAGE", "AtomicClient", "create_tables"]

STAGE = "test"


def create_tables(client: Any, stage: str = STAGE) -> dict[str, str]:
    return local_aws.create_tables(client, stage)

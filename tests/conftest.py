"""Test set-up shared by every tier.

Before anything imports boto3 or Powertools: fake AWS credentials and a region.
A socket guard refuses every connection that is not to loopback, so a client
that escaped moto or the Twilio stub fails loudly instead of reaching AWS or Twilio.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_METRICS_NAMESPACE": "TwilioConnectorTests",
        "POWERTOOLS_SERVICE_NAME": "twilio-connector",
        # local receivers (127.0.0.1, http) take status callbacks, as under `make run`; the tests of the
        # deployed rule turn it off
        "ALLOW_LOCAL_CALLBACKS": "true",
    }
)
for leaked in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
    os.environ.pop(leaked, None)

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: Any) -> Any:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and self.family in (socket.AF_INET, socket.AF_INET6):
        try:
            allowed = ipaddress.ip_address(host).is_loopback
        except ValueError:
            allowed = host == "localhost"
        if not allowed:
            raise ConnectionRefusedError(f"tests may only connect to loopback, not {host}")
    return _real_connect(self, address)


socket.socket.connect = _loopback_only  # type: ignore[method-assign,assignment]


@pytest.fixture(autouse=True)
def _fresh_wiring() -> Iterator[None]:
    from chalicelib import wiring

    wiring.reset()
    yield
    wiring.reset()

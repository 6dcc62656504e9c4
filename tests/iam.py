"""IAM as the template grants it, per function: which actions on which of the template's resources.

moto enforces no IAM. The tests read each function's role from infra/resources.json and compare
it with the calls the function's code really makes (tests/flow/test_iam_per_function.py), and
with the template's structure (tests/artifact/test_package.py).
"""

from __future__ import annotations

from typing import Any

from local.aws import template

FUNCTION_ROLES = {
    "Send": "SendRole",
    "Poll": "PollRole",
    "Finalize": "FinalizeRole",
    "Forward": "ForwardRole",
    "Outbox": "OutboxRole",
    "Webhooks": "WebhooksRole",
    "APIHandler": "ApiHandlerRole",
    "Facade": "FacadeRole",
    "Release": "ReleaseRole",
}
# What AWS itself does with a function's role, not the function's code: Lambda's SQS pollers read and delete
# the send and forward queues' records; its stream poller reads the messages table's stream (named by the table
# here) and posts a batch it gives up on to the on-failure destination.
_SQS_POLLER = ("ReceiveMessage", "DeleteMessage", "GetQueueAttributes")
_STREAM_POLLER = ("DescribeStream", "GetRecords", "GetShardIterator", "ListStreams")
ON_THE_FUNCTIONS_BEHALF = {
    "Send": {(f"sqs:{a}", "SendQueue") for a in _SQS_POLLER},
    "Forward": {(f"sqs:{a}", "ForwardQueue") for a in _SQS_POLLER},
    "Outbox": {(f"dynamodb:{a}", "MessagesTable") for a in _STREAM_POLLER}
    | {("sqs:SendMessage", "OutboxDeadLetterQueue")},
}
SECRET_PREFIX_MARKER = ":secret:twilio-connector-${Stage}/twilio/"


def resource_name(resource: Any) -> str:
    """The template resource a policy's Resource entry names."""
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        return str(resource["Fn::GetAtt"][0])
    if isinstance(resource, dict) and "Ref" in resource:
        return str(resource["Ref"])
    text = str(resource["Fn::Sub"])
    for marker, name in (("/index/by_recipient", "by_recipient"), ("/index/by_poll_window", "by_poll_window"),
                         ("/index/by_release", "by_release"),
                         ("/index/by_account", "by_account"),
                         (":event-bus/", "event-bus"),
                         (SECRET_PREFIX_MARKER, "ConnectionSecrets")):  # fmt: skip
        if marker in text:
            return name
    raise AssertionError(f"unrecognised resource {text}")


def statements(role: str, sam: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The role's statements, without the conditional X-Ray one."""
    (policy,) = (sam or template())["Resources"][role]["Properties"]["Policies"]
    return [s for s in policy["PolicyDocument"]["Statement"] if "Fn::If" not in s]


def granted(function: str, sam: dict[str, Any] | None = None) -> set[tuple[str, str]]:
    """(action, resource) pairs the function's role grants, its own log group left out."""
    pairs: set[tuple[str, str]] = set()
    for statement in statements(FUNCTION_ROLES[function], sam):
        if statement["Sid"] == "Logs":
            continue
        targets = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        pairs |= {(action, resource_name(t)) for t in targets for action in statement["Action"]}
    return pairs

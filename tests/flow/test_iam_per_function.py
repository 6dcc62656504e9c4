"""Least privilege, proven on the code: each function runs its work against moto with every AWS client
recording its calls, and the calls are compared with the function's role in infra/resources.json.

moto enforces no IAM, so without this a new code path (a DeleteItem in the public webhook function,
a forgotten grant that AWS would refuse with AccessDenied) would pass every other test. Each role
must grant every call its function makes, and nothing that neither its code nor AWS on its behalf uses.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest
import responses
from chalice.test import Client
from moto import mock_aws
from twilio.request_validator import RequestValidator

from chalicelib import wiring
from chalicelib.domain.ledger import StatusUpdate
from local import aws as local_aws
from tests import must
from tests.aws import (
    API_KEY,
    API_KEYS_SECRET_ID,
    FACADE_ACCOUNT,
    FACADE_SECRET_ID,
    FACADE_TOKEN,
    SECRET_ID,
    STAGE,
    AtomicClient,
    provision,
)
from tests.events import Delivery, LambdaContext, sqs_event
from tests.iam import FUNCTION_ROLES, ON_THE_FUNCTIONS_BEHALF, granted
from tests.twilio_stub import ACCOUNT_SID, AUTH_TOKEN, BASE_URL, TwilioStub

FROM = "+15005550006"
TO = "+15551234567"
FUNCTION_URL = "https://abc123.lambda-url.us-east-1.on.aws"
Call = tuple[str, str]  # (IAM action, template resource)


class Recorder:
    """A boto3 client that notes each call as the IAM action and template resource it needs."""

    def __init__(self, client: Any, service: str, calls: set[Call], names: dict[str, str]) -> None:
        self._client, self._service, self._calls, self._names = client, service, calls, names

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name.startswith("_") or name in ("meta", "exceptions") or not callable(attr):
            return attr

        def call(**kwargs: Any) -> Any:
            self._calls |= self._needs(name, kwargs)
            return attr(**kwargs)

        return call

    def _needs(self, operation: str, kwargs: dict[str, Any]) -> set[Call]:
        action = "".join(part.capitalize() for part in operation.split("_"))
        action = {"SendMessageBatch": "SendMessage"}.get(action, action)  # IAM knows the batch by its single
        prefix = {"stepfunctions": "states"}.get(self._service, self._service)
        if operation == "transact_write_items":  # IAM checks each item's own action (no TransactWriteItems action)
            kinds = {
                "Put": "PutItem",
                "Update": "UpdateItem",
                "Delete": "DeleteItem",
                "ConditionCheck": "ConditionCheckItem",
            }
            items = [(kind, write[kind]["TableName"]) for write in kwargs["TransactItems"] for kind in write]
            return {(f"dynamodb:{kinds[kind]}", self._logical(table)) for kind, table in items}
        if "RequestItems" in kwargs:
            targets = list(kwargs["RequestItems"])
        elif kwargs.get("IndexName"):
            targets = [kwargs["IndexName"]]
        else:
            keys = ("TableName", "QueueUrl", "SecretId", "Name", "stateMachineArn", "Entries")
            key = next(k for k in keys if k in kwargs)
            targets = ["default-bus"] if key == "Entries" else [kwargs[key]]
        return {(f"{prefix}:{action}", self._logical(t)) for t in targets}

    def _logical(self, target: str) -> str:
        if target.startswith(f"twilio-connector-{STAGE}/twilio/"):
            return "ConnectionSecrets"  # a further connection's secret, granted by its name's prefix
        return self._names.get(target, target)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """moto with the template's resources, a Twilio stub, and recording clients; env as the template sets it."""
    with mock_aws(), responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        names = provision(monkeypatch, BASE_URL, ACCOUNT_SID, AUTH_TOKEN, TWILIO_DEFAULT_FROM=FROM)
        machine = local_aws.create_state_machine(boto3.client("stepfunctions"), STAGE)
        # the deployed functions get the queue's URL and the webhook URL from the template
        monkeypatch.setenv("SEND_QUEUE_URL", names["SendQueue"])
        monkeypatch.setenv("SEND_DLQ_URL", names["SendDeadLetterQueue"])
        monkeypatch.setenv("POLL_STATE_MACHINE_ARN", machine)
        monkeypatch.setenv("WEBHOOK_BASE_URL", FUNCTION_URL)
        monkeypatch.setenv("SECRET_MAX_AGE_SECONDS", "0")  # every read reaches Secrets Manager, so each is seen
        monkeypatch.setenv("CONNECTIONS_MAX_AGE_SECONDS", "0")  # and every look at the connections, the table
        # a connection made through the API, which every function must be able to use
        secret = f"twilio-connector-{STAGE}/twilio/eu"
        boto3.client("secretsmanager").create_secret(
            Name=secret,
            SecretString=json.dumps({"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "write_back_secret": "k"}),
        )
        swrve = {"format": "swrve", "url": "https://swrve.example/1/event", "options": {"app_id": "1"}}
        eu: dict[str, Any] = {"name": "eu", "secret_id": secret, "account_sid": ACCOUNT_SID, "from_numbers": [FROM]}
        eu["write_back"] = swrve
        from chalicelib.adapters.dynamo import serialize

        boto3.client("dynamodb").put_item(TableName=names["ConnectionsTable"], Item=serialize(eu))
        tealium = {
            "format": "tealium",
            "url": "https://tealium.example/event",
            "options": {"account": "a", "profile": "p"},
        }
        us = {**eu, "name": "us", "write_back": tealium}
        boto3.client("dynamodb").put_item(TableName=names["ConnectionsTable"], Item=serialize(us))
        # guardrails (README, "Guardrails"): a cap and a budget, counted in the counters table
        guarded = {**eu, "name": "guarded", "guardrails": {"frequency": {"per_day": 5}, "daily_segments": 100}}
        guarded.pop("write_back")
        boto3.client("dynamodb").put_item(TableName=names["ConnectionsTable"], Item=serialize(guarded))
        logical = {physical: name for name, physical in names.items()}
        logical.update({SECRET_ID: "TwilioSecret", API_KEYS_SECRET_ID: "ApiKeysSecret", machine: "PollStateMachine"})
        logical.update({FACADE_SECRET_ID: "FacadeSecret", "by_account": "by_account"})
        logical.update({"default-bus": "event-bus", "by_recipient": "by_recipient", "by_poll_window": "by_poll_window"})
        logical.update({"by_release": "by_release"})
        calls: set[Call] = set()
        original = wiring.boto_client

        def recorded(service: str) -> Any:
            return Recorder(original(service), service, calls, logical)

        monkeypatch.setattr(wiring, "boto_client", recorded)
        stub = TwilioStub(mock)
        mock.add(
            responses.GET, f"{BASE_URL}/Accounts/{ACCOUNT_SID}.json", json={"sid": ACCOUNT_SID, "status": "active"}
        )
        mock.add_passthru(re.compile(r"http://127\.0\.0\.1.*"))
        world = {"calls": calls, "stub": stub, "names": logical, "mock": mock, "queue_url": names["SendQueue"]}
        yield {**world, "names_by_logical": names}


def fresh_wiring(world: dict[str, Any]) -> None:
    wiring.reset()
    dynamodb = Recorder(AtomicClient(boto3.client("dynamodb")), "dynamodb", world["calls"], world["names"])
    wiring.override(dynamodb=dynamodb, clock=lambda: world["stub"].clock)
    world["calls"].clear()


def signed(url: str, params: dict[str, str]) -> str:
    return RequestValidator(AUTH_TOKEN).compute_signature(url, params)


def sent_message(world: dict[str, Any], to: str = TO, connection: str | None = None) -> tuple[str, str]:
    """A message the send function has handed to Twilio: (message id, Twilio SID)."""
    import app

    request = {"to": to, "from": FROM, "body": "hello", "idempotency_key": f"k-{to}"}
    delivery = Delivery({**request, "connection": connection} if connection else request)
    assert app.send(sqs_event(delivery), LambdaContext())["batchItemFailures"] == []
    from chalicelib.domain import rules

    message_id = rules.message_id(f"k-{to}", "")
    return message_id, must(must(wiring.ledger().get(message_id)).twilio_sid)


def function_url_event(path: str, params: dict[str, str], query: str = "") -> dict[str, Any]:
    url = f"{FUNCTION_URL}{path}" + (f"?{query}" if query else "")
    return {
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"x-twilio-signature": signed(url, params)},
        "requestContext": {"domainName": FUNCTION_URL.removeprefix("https://"), "http": {"method": "POST"}},
        "body": base64.b64encode(urlencode(params).encode()).decode(),
        "isBase64Encoded": True,
    }


# --- what each function does -------------------------------------------------------------------


def send_work(world: dict[str, Any]) -> None:
    import app
    from chalicelib.domain.templates import Template

    wiring.templates().put(Template(name="welcome", body="Hi <Name>", field_map={"to": "mobile", "Name": "n"}))
    world["stub"].fail_for("+15551230002", "reject:21610")
    world["stub"].fail_for("+15551230004", "429", "429", "429", "429")  # put back on the queue
    batch = [
        Delivery({"to": "+15551230004", "from": FROM, "body": "throttled"}),
        Delivery({"to": "+15551230005", "from": "+15551239999", "body": "paced: a long code's queue at Twilio"}),
        Delivery({"to": "+15551230001", "from": FROM, "body": "one"}),
        Delivery({"to": "+15551230002", "from": FROM, "body": "opted out at Twilio"}),
        Delivery({"template": "welcome", "from": FROM, "fields": {"mobile": "+15551230003", "n": "Ann"}}),
        Delivery("not json"),
        Delivery({"to": "+15551230006", "from": FROM, "body": "capped and budgeted", "connection": "guarded"}),
    ]
    world["calls"].clear()  # the template was written by the test, not the function
    assert app.send(sqs_event(*batch), LambdaContext())["batchItemFailures"] == []
    assert app.send(sqs_event(batch[1].redelivered()), LambdaContext())["batchItemFailures"] == []


def release_work(world: dict[str, Any]) -> None:
    import app

    ledger, store, now = wiring.ledger(), wiring.guard_store(), world["stub"].clock
    ledger.claim("m-held", {"to": TO, "connection": "guarded", "num_segments": 1}, "t", now, timedelta(seconds=60))
    hold = {"status": "scheduled", "until": now, "reason": "quiet_hours", "connection": "guarded"}
    assert store.hold("m-held", "t", hold, {"to": TO, "body": "hi", "connection": "guarded"}, now) is not None
    world["calls"].clear()
    assert app.release(local_aws.scheduled_event("release"), LambdaContext())["released"] == 1


def poll_work(world: dict[str, Any]) -> None:
    import app

    delivered, delivered_sid = sent_message(world, "+15551230011")
    sent_message(world, "+15551230012")  # undelivered with 30004: the recipient is blocked, an opt-out
    sent_message(world, "+15551230013", connection="eu")  # a connection made through the API
    for message in world["stub"].messages:
        message.status, message.error_code = (
            ("delivered", None) if message.sid == delivered_sid else ("undelivered", 30004)
        )
    window = must(wiring.ledger().get(delivered)).item["poll_window"]
    world["calls"].clear()
    assert app.poll({"window": window, "attempt": 0, "retry_attempts": 3}, LambdaContext())["remaining"] == 0


def finalize_work(world: dict[str, Any]) -> None:
    import app

    message_id, _ = sent_message(world)
    window = must(wiring.ledger().get(message_id)).item["poll_window"]
    world["calls"].clear()
    app.finalize({"window": window, "attempt": 3}, LambdaContext())


def forward_work(world: dict[str, Any]) -> None:
    import app

    boto3.client("secretsmanager").put_secret_value(
        SecretId=SECRET_ID,
        SecretString=json.dumps({"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "callback_signing_key": "k"}),
    )
    world["mock"].add(responses.POST, "https://cdp.example/status", status=200)
    detail: dict[str, Any] = {"id": "m", "status": "delivered", "status_callback": "https://cdp.example/status"}

    def forward(*details: dict[str, Any]) -> Any:
        events = [Delivery({"detail_type": "Message Status Changed", "detail": d}) for d in details]
        return app.forward(sqs_event(*events), LambdaContext())

    forward(detail)
    # a message from the Twilio-compatible front door: posted as Twilio posts, signed with its account's token
    forward({**detail, "callback_format": "twilio", "account_sid": FACADE_ACCOUNT, "to": TO})
    # a platform that takes the first of a message's parked events and not the second: the second comes back
    world["mock"].add(responses.POST, "https://cdp.example/later", status=503)
    assert len(forward(detail, {**detail, "status_callback": "https://cdp.example/later"})["batchItemFailures"]) == 1
    # a connection's own write-back (Swrve, with its API key from the connection's secret), refused with a 400:
    # noted on the message, not retried
    forward_calls = set(world["calls"])
    message_id, _ = sent_message(world, "+15551230031", connection="eu")
    world["calls"].clear()  # the send function's calls are its own
    world["calls"].update(forward_calls)
    world["mock"].add(responses.POST, "https://swrve.example/1/event", status=400)
    detail = {"id": message_id, "status": "delivered", "connection": "eu", "write_back": "swrve",
              "metadata": {"swrve_user_id": "u-1"}}  # fmt: skip
    forward(detail)
    # Tealium's 100 requests/s: each forward takes its place in line (the senders table)
    world["mock"].add(responses.POST, "https://tealium.example/event", status=200)
    forward({**detail, "connection": "us", "write_back": "tealium", "metadata": {"tealium_visitor_id": "v"}})
    table = world["names_by_logical"]["MessagesTable"]
    noted = boto3.client("dynamodb").get_item(TableName=table, Key={"id": {"S": message_id}})["Item"]
    assert noted["write_back_error"]["S"] == "swrve write-back answered 400"


def outbox_work(world: dict[str, Any]) -> None:
    """The stream's records of real ledger writes: a send, a callback with an opt-out code, a write-back
    its platform refuses (noted on the message), one that is down (parked), and events on the bus."""
    import app

    boto3.client("secretsmanager").put_secret_value(
        SecretId=SECRET_ID,
        SecretString=json.dumps({"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "callback_signing_key": "k"}),
    )
    refused, _ = sent_message(world, "+15551230041", connection="eu")  # Swrve answers 400: noted on the message
    world["mock"].add(responses.POST, "https://swrve.example/1/event", status=400)
    blocked, sid = sent_message(world, "+15551230042")
    opted_out = StatusUpdate("undelivered", "callback", sid, error_code=30004)
    wiring.ledger().apply_status(blocked, opted_out, world["stub"].clock)
    down = {"to": "+15551230043", "from": FROM, "body": "hi", "status_callback": "https://cdp.example/down"}
    world["mock"].add(responses.POST, "https://cdp.example/down", status=503)
    assert app.send(sqs_event(Delivery(down)), LambdaContext())["batchItemFailures"] == []
    # Tealium's line (the senders table), and a front-door message told in Twilio's form (its account's token)
    world["mock"].add(responses.POST, "https://tealium.example/event", status=200)
    request = {
        "to": "+15551230044",
        "from": FROM,
        "body": "hi",
        "connection": "us",
        "metadata": {"tealium_visitor_id": "v"},
    }
    assert app.send(sqs_event(Delivery(request)), LambdaContext())["batchItemFailures"] == []
    world["mock"].add(responses.POST, "https://cdp.example/twilio", status=200)
    front_door = {"to": TO, "callback_format": "twilio", "account_sid": FACADE_ACCOUNT}
    now = world["stub"].clock
    wiring.ledger().create_pending("m-front", {**front_door, "status_callback": "https://cdp.example/twilio"}, now)
    wiring.ledger().cancel_pending("m-front", now)
    streams = boto3.client("dynamodbstreams", endpoint_url=local_aws.STREAMS_ENDPOINT)
    table = world["names_by_logical"]["MessagesTable"]
    arn = boto3.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STATUS_EVENTS", "all")  # the bus is called only for a deployment that subscribes
        fresh_wiring(world)
        event = {"Records": [local_aws.lambda_stream_record(r, arn) for r in records]}
        assert app.outbox(event, LambdaContext())["batchItemFailures"] == []
    noted = boto3.client("dynamodb").get_item(TableName=table, Key={"id": {"S": refused}})["Item"]
    assert noted["write_back_status"]["S"] == "not_deliverable"  # no Swrve user id: noted, not retried


def webhooks_work(world: dict[str, Any]) -> None:
    import app

    message_id, sid = sent_message(world)
    world["calls"].clear()
    status = {"MessageSid": sid, "MessageStatus": "delivered"}
    for _ in range(2):  # the second is a duplicate Twilio sends now and then
        answer = app.webhooks(function_url_event("/twilio/status", status, f"mid={message_id}"), None)
        assert answer["statusCode"] == 200
    for body in ("STOP", "START", "What time do you open?"):
        params = {"From": TO, "To": FROM, "Body": body, "MessageSid": f"SM{abs(hash(body)):032d}"[:34]}
        assert app.webhooks(function_url_event("/twilio/inbound", params), None)["statusCode"] == 200


def api_work(world: dict[str, Any]) -> None:
    import app

    message_id, sid = sent_message(world)
    world["calls"].clear()
    world["mock"].add(responses.POST, re.compile(re.escape(FUNCTION_URL) + r"/twilio/status.*"), status=200)
    headers = {"x-api-key": API_KEY, "Content-Type": "application/json"}
    with Client(app.app) as client:
        http = client.http
        body = json.dumps({"to": "+15551230021", "body": "hi"})
        assert http.post("/messages", body=body, headers=headers).status_code == 202
        assert (
            http.post("/messages/batch", body=json.dumps({"messages": [json.loads(body)]}), headers=headers).status_code
            == 200
        )
        assert http.get(f"/messages/{message_id}", headers=headers).status_code == 200
        template = json.dumps({"body": "Hi <Name>", "field_map": {"Name": "n"}})
        assert http.put("/templates/welcome", body=template, headers=headers).status_code == 200
        assert http.get("/templates/welcome", headers=headers).status_code == 200
        assert http.get("/stats", headers=headers).status_code == 200
        assert http.post("/connection/test", headers=headers).status_code == 200
        # connections made through the API: the table, their secrets, a front-door account
        connection = {"account_sid": ACCOUNT_SID, "auth_token": "t" * 32, "retry_interval_ms": 5000, "facade": True,
                      "write_back": {"format": "swrve", "options": {"app_id": "1"}, "secret": "swrve-key"}}  # fmt: skip
        assert http.put("/connections/apac", body=json.dumps(connection), headers=headers).status_code == 201
        # the operator's routes: the DLQ (a record put there to be redriven) and a new API key
        sqs = boto3.client("sqs")
        sqs.send_message(QueueUrl=world["names_by_logical"]["SendDeadLetterQueue"], MessageBody="{}")
        assert http.get("/dlq", headers=headers).status_code == 200
        assert http.post("/dlq/redrive?dry_run=true", headers=headers).status_code == 200
        assert http.post("/dlq/redrive", headers=headers).json_body["moved"] == 1
        # the forward queue's DLQ (FIFO): a write-back no platform took, redriven into its message's group
        parked = {"detail_type": "Message Status Changed", "detail": {"id": "m", "status": "sent"}}
        dlq = world["names_by_logical"]["ForwardDeadLetterQueue"]
        sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(parked), MessageGroupId="m", MessageDeduplicationId="1")
        assert http.get("/dlq?queue=forward", headers=headers).json_body["depth"] == 1
        assert http.post("/dlq/redrive?queue=forward", headers=headers).json_body["moved"] == 1
        assert http.post("/api-keys/ops", headers=headers).status_code == 201
        rotated = json.dumps({"auth_token": "u" * 32})  # an update: the secret is changed, not made
        assert http.put("/connections/apac", body=rotated, headers=headers).status_code == 200
        assert http.get("/connections/apac", headers=headers).status_code == 200
        assert http.get("/connections", headers=headers).status_code == 200
        assert http.get("/connections/guarded/budget", headers=headers).status_code == 200
        raised = http.post("/connections/guarded/budget", body=json.dumps({"add_segments": 10}), headers=headers)
        assert raised.status_code == 200, raised.body
        assert http.delete("/connections/apac", headers=headers).status_code == 200
        # made again within its secret's recovery window: the secret is restored, not refused
        assert http.put("/connections/apac", body=json.dumps(connection), headers=headers).status_code == 201
        # Twilio's webhooks through API Gateway reach the same code
        base = "http://localhost"
        wiring.override(settings=wiring.settings().__class__(**{**wiring.settings().__dict__, "public_base_url": base}))
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        status = {"MessageSid": sid, "MessageStatus": "delivered"}
        url = f"{base}/twilio/status?mid={message_id}"
        answer = http.post(f"/twilio/status?mid={message_id}", body=urlencode(status),
                           headers={**form, "X-Twilio-Signature": signed(url, status)})  # fmt: skip
        assert answer.status_code == 200
        for text in ("STOP", "START", "Hello?"):
            params = {"From": TO, "To": FROM, "Body": text, "MessageSid": "SM" + text.encode().hex().ljust(32, "0")}
            signature = signed(f"{base}/twilio/inbound", params)
            answer = http.post(
                "/twilio/inbound", body=urlencode(params), headers={**form, "X-Twilio-Signature": signature}
            )
            assert answer.status_code == 200


def facade_work(world: dict[str, Any]) -> None:
    import app

    def call(method: str, path: str, form: dict[str, str] | None = None, query: str = "") -> dict[str, Any]:
        auth = base64.b64encode(f"{FACADE_ACCOUNT}:{FACADE_TOKEN}".encode()).decode()
        event = {
            "rawPath": f"/2010-04-01/Accounts/{FACADE_ACCOUNT}{path}",
            "rawQueryString": query,
            "headers": {"authorization": f"Basic {auth}", "content-type": "application/x-www-form-urlencoded"},
            "requestContext": {"domainName": FUNCTION_URL.removeprefix("https://"), "http": {"method": method}},
            "body": urlencode(form or {}),
        }
        answer: dict[str, Any] = app.facade(event, LambdaContext())
        assert answer["statusCode"] < 500, answer
        result: dict[str, Any] = json.loads(answer["body"])
        return result

    created = call(
        "POST", "/Messages.json", {"To": TO, "From": FROM, "Body": "hi", "StatusCallback": "https://x.example"}
    )
    call("POST", "/Messages.json", {"To": TO, "From": FROM, "Body": "hi", "StatusCallback": "https://x.example"})
    assert call("GET", f"/Messages/{created['sid']}.json")["status"] == "queued"
    assert call("POST", f"/Messages/{created['sid']}.json", {"Status": "canceled"})["status"] == "canceled"
    assert call("GET", "/Messages.json", query="PageSize=1&To=%2B15551234567")["messages"]
    assert call("GET", ".json")["status"] == "active"
    call("GET", "/IncomingPhoneNumbers.json")
    # a scheduled message the send function has handed to Twilio is canceled there
    send_at = (world["stub"].clock + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    form = {
        "To": TO,
        "MessagingServiceSid": "MG" + "1" * 32,
        "Body": "later",
        "SendAt": send_at,
        "ScheduleType": "fixed",
    }
    scheduled = call("POST", "/Messages.json", form)
    from local.stack import _lambda_record

    facade_calls, url = set(world["calls"]), world["queue_url"]
    received = boto3.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
    records = [_lambda_record(m, url) for m in received["Messages"]]
    assert app.send({"Records": records}, LambdaContext())["batchItemFailures"] == []
    world["calls"].clear()  # the send function's calls are its own
    world["calls"].update(facade_calls)
    assert call("POST", f"/Messages/{scheduled['sid']}.json", {"Status": "canceled"})["status"] == "canceled"


WORK: dict[str, Callable[[dict[str, Any]], None]] = {
    "Send": send_work,
    "Poll": poll_work,
    "Finalize": finalize_work,
    "Forward": forward_work,
    "Outbox": outbox_work,
    "Webhooks": webhooks_work,
    "APIHandler": api_work,
    "Facade": facade_work,
    "Release": release_work,
}


@pytest.mark.parametrize("function", sorted(FUNCTION_ROLES))
def test_the_role_grants_exactly_what_the_function_calls(world: dict[str, Any], function: str) -> None:
    fresh_wiring(world)
    WORK[function](world)
    made = set(world["calls"])
    allowed = granted(function)
    # a further connection's secret is granted by name pattern; the default one stands for it here
    allowed_here = allowed | {(a, "TwilioSecret") for a, r in allowed if r == "ConnectionSecrets"}
    assert made - allowed_here == set(), f"{function} would be refused these by AWS: {sorted(made - allowed_here)}"
    unused = allowed - made - ON_THE_FUNCTIONS_BEHALF.get(function, set())
    unused -= {(a, "ConnectionSecrets") for a, r in allowed if r == "TwilioSecret" and (a, r) in made}
    assert unused == set(), f"{function}'s role grants what its code never calls: {sorted(unused)}"

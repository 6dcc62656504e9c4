"""The HTTP API through Chalice's test client (the same gateway `chalice local` runs),
with moto for DynamoDB, SQS and Secrets Manager. Every 4xx a CDP can meet is here."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, cast

import boto3
import pytest
import responses
from chalice.test import Client
from moto import mock_aws

from chalicelib import wiring, wiring_http
from tests import must
from tests.aws import API_KEY, API_KEYS_SECRET_ID, AtomicClient, provision
from tests.twilio_stub import ACCOUNT_SID, AUTH_TOKEN, BASE_URL, TwilioStub

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TO = "+15551234567"
FROM = "+15005550006"
AUTH = {"x-api-key": API_KEY, "Content-Type": "application/json"}


class Api:
    def __init__(self, client: Client, queue_url: str, stub: TwilioStub) -> None:
        self.client = client
        self.queue_url = queue_url
        self.stub = stub

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        raw = body if isinstance(body, str) else (json.dumps(body) if body is not None else "")
        response = getattr(self.client.http, method)(path, body=raw, headers={**AUTH, **(headers or {})})
        return response.status_code, json.loads(response.body) if response.body else None

    def queued(self) -> list[dict[str, Any]]:
        sqs = boto3.client("sqs")
        found = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        return found.get("Messages", [])


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Api]:
    with mock_aws(), responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        names = provision(monkeypatch, BASE_URL, ACCOUNT_SID, AUTH_TOKEN, TWILIO_DEFAULT_FROM=FROM)
        import app

        wiring.override(dynamodb=AtomicClient(boto3.client("dynamodb")), clock=lambda: NOW)
        with Client(app.app, project_dir=str(tmp_path)) as client:
            yield Api(client, names["SendQueue"], TwilioStub(mock))


class TestApiKeys:
    def test_no_key_is_401_and_nothing_happens(self, api: Api) -> None:
        status, body = api.call("post", "/messages", {"to": TO, "body": "hi"}, headers={"x-api-key": ""})
        assert status == 401 and "x-api-key" in body["error"]["message"]
        assert api.queued() == []

    def test_a_wrong_key_is_403(self, api: Api) -> None:
        status, body = api.call("get", "/stats", headers={"x-api-key": "guess"})
        assert (status, body["error"]["code"]) == (403, "forbidden")

    def test_a_bearer_token_works_too(self, api: Api) -> None:
        status, _ = api.call("get", "/stats", headers={"x-api-key": "", "Authorization": f"Bearer {API_KEY}"})
        assert status == 200


class TestPostMessages:
    def test_a_valid_message_is_accepted_recorded_and_enqueued_as_posted(self, api: Api) -> None:
        body = {"To": TO, "Body": "Hi <name>", "fields": {"name": "Ann"}, "metadata": {"c": 1}}
        status, answer = api.call("post", "/messages", body)
        assert status == 202 and answer["status"] == "pending"
        (queued,) = api.queued()
        assert json.loads(queued["Body"]) == body
        assert queued["MessageAttributes"]["connector_message_id"]["StringValue"] == answer["id"]
        status, record = api.call("get", f"/messages/{answer['id']}")
        assert status == 200 and record["status"] == "pending" and record["from"] == FROM
        assert record["events"] == [{"status": "pending", "at": "2026-11-22T12:00:00.000Z", "source": "api"}]

    @pytest.mark.parametrize(
        ("body", "field", "code"),
        [
            ({"body": "hi"}, "to", 21604),
            ({"to": "555", "body": "hi"}, "to", 21211),
            ({"to": TO}, "body", 21602),
            ({"to": TO, "body": "hi", "colour": "red"}, "colour", 20001),
            ({"to": TO, "body": "Hi <name>"}, "fields", 900003),
            ({"to": TO, "template": "missing"}, "template", 900002),
            ({"to": TO, "body": "hi", "connection": "eu"}, "connection", 900005),
            ({"to": TO, "body": "hi", "not_after": "2026-11-22T11:00:00Z"}, "not_after", 900004),
            ("[1, 2", "", 900001),
            ("", "", 900001),
            ([1, 2], "", 900001),
            # found by a hostile-input run: each was a 500
            ({"to": TO, "body": "hi", "validity_period": "²"}, "validity_period", 900001),
            ({"to": TO, "body": "hi", "attempt": "--5"}, "attempt", 900001),
            ({"to": TO, "body": "hi", "not_after": "9999-12-31T23:00:00-05:00"}, "not_after", 900001),
            ({"to": TO, "body": "hi", "send_at": "0001-01-01T00:00:00+05:00"}, "send_at", 900001),
            ('{"to": "' + TO + '", "body": "hi", "metadata": {"x": NaN}}', "metadata.x", 900001),
            ('{"to": "' + TO + '", "body": "hi", "metadata": {"x": Infinity}}', "metadata.x", 900001),
            ('{"to": "' + TO + '", "body": "hi", "metadata": {"x": 1e999}}', "metadata.x", 900001),
            ({"to": TO, "body": "hi", "metadata": {"x": 1e200}}, "metadata", 900001),
            ({"to": TO, "body": "hi", "metadata": {"x": 1e-200}}, "metadata", 900001),
            ({"to": TO, "body": "hi", "metadata": {"x": 10**40}}, "metadata", 900001),
            ({"to": TO, "body": "hi", "metadata": {"": 1}}, "metadata", 900001),
            ({"to": TO, "body": "hi", "metadata": {"a": [[[[[[[[[[1]]]]]]]]]]}}, "metadata", 900001),
            ("[" * 5000 + "]" * 5000, "", 900001),
            ("[" * 100_000 + "]" * 100_000, "", 900001),
            (
                '{"to": "' + TO + '", "body": "hi", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}",
                "metadata",
                900001,
            ),
            # content_variables is JSON in a string: read by the same bounded reader, named by its field
            (
                {"to": TO, "content_sid": "HX" + "0" * 32, "content_variables": "[" * 100_000 + "]" * 100_000},
                "content_variables",
                21656,
            ),
            (
                {"to": TO, "content_sid": "HX" + "0" * 32, "content_variables": '{"1": NaN}'},
                "content_variables.1",
                21656,
            ),
            ({"to": TO + "\n", "body": "hi"}, "to", 21211),
        ],
    )
    def test_bad_input_is_400_naming_the_field_and_rule(self, api: Api, body: Any, field: str, code: int) -> None:
        status, answer = api.call("post", "/messages", body)
        assert status == 400
        assert (answer["error"]["field"], answer["error"]["code"]) == (field, code)
        assert answer["error"]["message"]
        assert api.queued() == []

    def test_a_repeated_idempotency_key_returns_the_record_and_sends_nothing(self, api: Api) -> None:
        first_status, first = api.call("post", "/messages", {"to": TO, "body": "hi"}, {"Idempotency-Key": "order-7"})
        again_status, again = api.call("post", "/messages", {"to": TO, "body": "hi"}, {"Idempotency-Key": "order-7"})
        assert (first_status, again_status) == (202, 200)
        assert again["id"] == first["id"] and again["status"] == "pending"
        assert len(api.queued()) == 1

    def test_one_key_with_a_different_request_is_409_and_nothing_is_dropped_silently(self, api: Api) -> None:
        first, _ = api.call("post", "/messages", {"to": TO, "body": "hi"}, {"Idempotency-Key": "order-8"})
        status, answer = api.call("post", "/messages", {"to": TO, "body": "bye"}, {"Idempotency-Key": "order-8"})
        assert (first, status) == (202, 409)
        assert (answer["error"]["code"], answer["error"]["field"]) == ("idempotency_key_reused", "idempotency_key")
        assert "order-8" in answer["error"]["message"] and len(api.queued()) == 1
        again, _ = api.call("post", "/messages", {"body": "hi", "to": TO}, {"Idempotency-Key": "order-8"})
        assert again == 200  # the same request again, in another key order, is the same request

    def test_the_header_and_the_body_key_must_agree(self, api: Api) -> None:
        status, answer = api.call(
            "post", "/messages", {"to": TO, "body": "hi", "idempotency_key": "a"}, {"Idempotency-Key": "b"}
        )
        assert (status, answer["error"]["field"]) == (400, "idempotency_key")

    def test_a_queue_outage_is_503_and_the_retry_enqueues_it(self, api: Api) -> None:
        sqs = boto3.client("sqs")
        sqs.delete_queue(QueueUrl=api.queue_url)
        wiring.reset()
        wiring.override(dynamodb=AtomicClient(boto3.client("dynamodb")), clock=lambda: NOW)
        status, answer = api.call("post", "/messages", {"to": TO, "body": "hi"}, {"Idempotency-Key": "k-503"})
        assert status == 503 and answer["error"]["code"] == "queue_unavailable"
        api.queue_url = sqs.create_queue(QueueName="twilio-connector-test-send")["QueueUrl"]
        wiring.reset()
        wiring.override(dynamodb=AtomicClient(boto3.client("dynamodb")), clock=lambda: NOW)
        status, _ = api.call("post", "/messages", {"to": TO, "body": "hi"}, {"Idempotency-Key": "k-503"})
        assert status == 202 and len(api.queued()) == 1


class TestBatch:
    def test_invalid_items_do_not_sink_valid_ones(self, api: Api) -> None:
        status, answer = api.call(
            "post",
            "/messages/batch",
            {"messages": [{"to": TO, "body": "a"}, {"to": "nope", "body": "b"}, {"to": TO, "body": "c"}]},
        )
        assert status == 200
        assert [r["http_status"] for r in answer["results"]] == [202, 400, 202]
        assert answer["results"][1]["error"]["field"] == "to"
        assert len(api.queued()) == 2

    def test_a_bug_on_one_item_is_that_items_answer_and_its_neighbours_are_sent(
        self, api: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        service = wiring_http.accept_messages().validation
        prepare = service.prepare

        def breaks_on_b(raw: Any, now: Any) -> Any:
            if raw.get("body") == "b":
                raise KeyError("a bug")
            return prepare(raw, now)

        monkeypatch.setattr(service, "prepare", breaks_on_b)
        batch = {"messages": [{"to": TO, "body": "a"}, {"to": TO, "body": "b"}, {"to": TO, "body": "c"}]}
        status, answer = api.call("post", "/messages/batch", batch)
        assert status == 200 and [r["http_status"] for r in answer["results"]] == [202, 500, 202]
        assert answer["results"][1]["error"]["code"] == "internal_error"
        assert len(api.queued()) == 2  # the first item is not left pending forever

    @pytest.mark.parametrize("body", [{"messages": []}, {"messages": [{"to": TO, "body": "x"}] * 101}, {"items": []}])
    def test_the_batch_shape_is_checked(self, api: Api, body: Any) -> None:
        status, answer = api.call("post", "/messages/batch", body)
        assert status == 400 and answer["error"]["field"] == "messages"


def test_an_unknown_message_is_404(api: Api) -> None:
    status, answer = api.call("get", "/messages/msg_nope")
    assert (status, answer["error"]["code"]) == (404, "not_found")


class TestTemplates:
    WELCOME: ClassVar[dict[str, Any]] = {
        "body": "Hi <First Name>!",
        "from": FROM,
        "field_map": {"to": "mobile", "First Name": "fname"},
    }

    def test_store_read_and_send_through_a_template(self, api: Api) -> None:
        assert api.call("put", "/templates/welcome", self.WELCOME)[0] == 200
        status, stored = api.call("get", "/templates/welcome")
        assert status == 200 and stored["field_map"] == self.WELCOME["field_map"]
        status, _ = api.call("post", "/messages", {"template": "welcome", "fields": {"mobile": TO, "fname": "Ann"}})
        assert status == 202

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"body": "Hi <First Name> from <Shop>", "field_map": {"First Name": "fname"}}, "field_map"),
            ({"body": "Hi", "field_map": {"Shop": "shop"}}, "field_map"),
            ({"body": "Hi", "colour": "red"}, "colour"),
            ({"field_map": {}}, "body"),
            ({"body": "Hi", "from": "not a sender!"}, "from"),
            ({"body": "Hi", "media_urls": ["ftp://x"]}, "media_urls"),
            ({"body": "Hi", "connection": "eu"}, "connection"),
            ({"body": "Hi", "connection": ["default"]}, "connection"),
            ({"body": "Hi", "connection": {"name": "default"}}, "connection"),
            ({"body": "Hi " + "x" * 20_000}, "body"),  # DynamoDB would refuse a 400 KB item: sizes are rules
            ({"body": "Hi", "field_map": {f"k{i}": "v" * 900 for i in range(80)}}, ""),  # a 64 KB template
        ],
    )
    def test_a_template_that_cannot_work_is_400(self, api: Api, body: Any, field: str) -> None:
        status, answer = api.call("put", "/templates/t1", body)
        assert (status, answer["error"]["field"]) == (400, field)

    def test_an_unknown_template_is_404(self, api: Api) -> None:
        assert api.call("get", "/templates/none")[0] == 404

    def test_a_template_name_with_a_newline_is_400(self, api: Api) -> None:
        # API Gateway decodes `%0A` in the path to a newline (Chalice's local gateway does not): the rule itself
        result = wiring_http.messages_api().put_template("welcome\n", {"body": "Hi"})
        assert (result.status, result.body["error"]["field"]) == (400, "name")


class TestStats:
    def test_counts_by_status_and_error_code_come_from_counters(self, api: Api) -> None:
        day, earlier = NOW.strftime("%Y-%m-%d"), (NOW - timedelta(days=3)).strftime("%Y-%m-%d")
        counts = {"status#pending": 1, "status#delivered": 2, "status#undelivered": 1, "code#30007": 1}
        wiring.stats().count_batch("1", {day: counts, earlier: {"status#delivered": 1}})
        status, answer = api.call("get", "/stats?from=2026-11-22&to=2026-11-22")
        assert status == 200
        assert answer["by_status"] == {"pending": 1, "delivered": 2, "undelivered": 1}
        assert answer["by_error_code"] == {"30007": 1}
        assert api.call("get", "/stats?from=2026-11-19&to=2026-11-22")[1]["by_status"]["delivered"] == 3

    @pytest.mark.parametrize(
        "query",
        [
            "from=yesterday",
            "from=2026-11-22&to=2026-11-01",
            "from=2026-01-01&to=2026-11-22",
            "from=9999-12-31T23:00:00-05:00",
            "from=0001-01-01T00:00:00%2B05:00",
        ],
    )
    def test_a_bad_window_is_400(self, api: Api, query: str) -> None:
        status, answer = api.call("get", f"/stats?{query}")
        assert status == 400 and answer["error"]["field"] in ("from", "to")


class TestWebhooksOnAFunctionUrl:
    DOMAIN = "abc123.lambda-url.us-east-1.on.aws"
    BASE = f"https://{DOMAIN}"

    def event(
        self, path: str, params: dict[str, str], signature: str | None, query: str = "", method: str = "POST"
    ) -> dict[str, Any]:
        """What Lambda hands the function for a request to its URL (payload 2.0)."""
        import base64
        from urllib.parse import urlencode

        headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
        if signature:
            headers["x-twilio-signature"] = signature
        return {
            "version": "2.0",
            "rawPath": path,
            "rawQueryString": query,
            "headers": headers,
            "requestContext": {"domainName": self.DOMAIN, "http": {"method": method, "path": path}},
            "body": base64.b64encode(urlencode(params).encode()).decode(),
            "isBase64Encoded": True,
        }

    @pytest.fixture
    def sent(self, api: Api, monkeypatch: pytest.MonkeyPatch) -> str:
        from chalicelib.domain.ledger import SentMessage

        # Deployed, the webhook function has no WEBHOOK_BASE_URL: it cannot know its own URL (a cycle in the
        # template), so it checks signatures against the domain Lambda says the request arrived on.
        monkeypatch.delenv("WEBHOOK_BASE_URL", raising=False)
        monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
        wiring.reset()
        wiring.override(dynamodb=AtomicClient(boto3.client("dynamodb")), clock=lambda: NOW)
        ledger = wiring.ledger()
        ledger.claim("m-url", {"to": TO, "from": FROM}, "t", NOW, timedelta(seconds=60))
        ledger.record_sent("m-url", SentMessage("SM" + "9" * 32, "queued"), NOW)
        return "m-url"

    def test_a_signed_callback_is_applied(self, api: Api, sent: str) -> None:
        from twilio.request_validator import RequestValidator

        import app

        params = {"MessageSid": "SM" + "9" * 32, "MessageStatus": "delivered"}
        url = f"{self.BASE}/twilio/status?mid={sent}"
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
        answer = app.webhooks(self.event("/twilio/status", params, signature, f"mid={sent}"), None)
        assert answer["statusCode"] == 200
        assert must(wiring.ledger().get(sent)).status == "delivered"

    def test_a_bad_signature_wrong_method_or_path_is_refused(self, api: Api, sent: str) -> None:
        import app

        params = {"MessageSid": "SM" + "9" * 32, "MessageStatus": "delivered"}
        assert app.webhooks(self.event("/twilio/status", params, "bad", f"mid={sent}"), None)["statusCode"] == 403
        assert app.webhooks(self.event("/twilio/status", params, None, "", "GET"), None)["statusCode"] == 405
        assert app.webhooks(self.event("/elsewhere", params, "x"), None)["statusCode"] == 404
        assert must(wiring.ledger().get(sent)).status == "queued"

    def test_a_stop_reply_opts_out_and_answers_twiml(self, api: Api, sent: str) -> None:
        from twilio.request_validator import RequestValidator

        import app

        params = {"From": TO, "To": FROM, "Body": "STOP", "MessageSid": "SM" + "8" * 32}
        signature = RequestValidator(AUTH_TOKEN).compute_signature(f"{self.BASE}/twilio/inbound", params)
        answer = app.webhooks(self.event("/twilio/inbound", params, signature), None)
        assert answer["statusCode"] == 200 and "<Response>" in answer["body"]
        assert wiring.opt_outs().is_opted_out(TO, [FROM])

    def test_oversized_or_unsigned_webhooks_are_refused_before_any_work(self, api: Api, sent: str) -> None:
        """The public URL takes anything: a 500,000-field form with a bogus signature must cost nothing."""
        from twilio.request_validator import RequestValidator

        import app

        flood = {f"f{i}": "x" for i in range(500_000)}
        assert app.webhooks(self.event("/twilio/status", flood, "bogus"), None)["statusCode"] == 403
        assert app.webhooks(self.event("/twilio/status", flood, "A" * 27 + "="), None)["statusCode"] == 413
        many = {f"f{i}": "x" for i in range(300)}
        signature = RequestValidator(AUTH_TOKEN).compute_signature(f"{self.BASE}/twilio/status", many)
        assert app.webhooks(self.event("/twilio/status", many, signature), None)["statusCode"] == 400
        assert must(wiring.ledger().get(sent)).status == "queued"

    def test_a_replayed_inbound_message_is_acted_on_once(self, api: Api, sent: str) -> None:
        """STOP, START, STOP; then the earlier START, validly signed, arrives again: the recipient stays out."""
        from twilio.request_validator import RequestValidator

        import app

        def inbound(text: str, sid: str) -> dict[str, Any]:
            params = {"From": TO, "To": FROM, "Body": text, "MessageSid": sid}
            signature = RequestValidator(AUTH_TOKEN).compute_signature(f"{self.BASE}/twilio/inbound", params)
            return app.webhooks(self.event("/twilio/inbound", params, signature), None)

        for text, sid in (("STOP", "SM" + "1" * 32), ("START", "SM" + "2" * 32), ("STOP", "SM" + "3" * 32)):
            assert inbound(text, sid)["statusCode"] == 200
        assert inbound("START", "SM" + "2" * 32)["statusCode"] == 200  # the replay is acknowledged …
        assert wiring.opt_outs().is_opted_out(TO, [FROM])  # … and changes nothing


class TestOneUnreadableSecret:
    """A connection whose Twilio secret cannot be read (deleted, empty, not yet filled) fails only the
    callbacks signed with its token: the callback's URL names its connection (`c`), whose token is checked
    first; every other connection's callbacks and replies are taken (before, any unreadable secret made every
    webhook answer 503). Counted (ConnectionSecretUnreadable) and alarmed."""

    def test_other_connections_callbacks_are_taken_and_its_own_are_retried(
        self, api: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from twilio.request_validator import RequestValidator

        import app
        from chalicelib.domain.ledger import SentMessage

        hooks = TestWebhooksOnAFunctionUrl()
        unreadable = {"eu": {"secret_id": "twilio-connector-test/twilio/eu"}}  # never created
        monkeypatch.setenv("TWILIO_CONNECTIONS", json.dumps(unreadable))
        monkeypatch.delenv("WEBHOOK_BASE_URL", raising=False)
        monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
        wiring.reset()
        wiring.override(dynamodb=AtomicClient(boto3.client("dynamodb")), clock=lambda: NOW)
        ledger = wiring.ledger()
        for message_id, sid in (("m-default", "SM" + "5" * 32), ("m-eu", "SM" + "6" * 32)):
            ledger.claim(message_id, {"to": TO, "from": FROM}, "t", NOW, timedelta(seconds=60))
            ledger.record_sent(message_id, SentMessage(sid, "queued"), NOW)
        validator = RequestValidator(AUTH_TOKEN)

        def callback(message_id: str, sid: str, query: str, token: str = AUTH_TOKEN) -> int:
            params = {"MessageSid": sid, "MessageStatus": "delivered"}
            signature = RequestValidator(token).compute_signature(f"{hooks.BASE}/twilio/status?{query}", params)
            return int(app.webhooks(hooks.event("/twilio/status", params, signature, query), None)["statusCode"])

        assert callback("m-default", "SM" + "5" * 32, "mid=m-default") == 200
        assert must(ledger.get("m-default")).status == "delivered"
        # signed by the unreadable connection's token (no readable one signs it): 503, so Twilio tries again
        assert callback("m-eu", "SM" + "6" * 32, "mid=m-eu&c=eu", token="eu-token") == 503
        assert must(ledger.get("m-eu")).status == "queued"
        # a reply signed with a readable connection's token is taken though another's secret is unreadable
        reply = {"MessageSid": "SM" + "7" * 32, "From": TO, "To": FROM, "Body": "hello"}
        signature = validator.compute_signature(f"{hooks.BASE}/twilio/inbound", reply)
        assert app.webhooks(hooks.event("/twilio/inbound", reply, signature), None)["statusCode"] == 200
        # and a wrong signature is still a 403 where every connection that could sign it was read
        monkeypatch.setenv("TWILIO_CONNECTIONS", "{}")
        wiring.reset()
        wiring.override(dynamodb=AtomicClient(boto3.client("dynamodb")), clock=lambda: NOW)
        params = {"MessageSid": "SM" + "6" * 32, "MessageStatus": "delivered"}
        forged = RequestValidator("guess").compute_signature(f"{hooks.BASE}/twilio/status?mid=m-eu", params)
        assert app.webhooks(hooks.event("/twilio/status", params, forged, "mid=m-eu"), None)["statusCode"] == 403


class TestOneDeployTwoEntryPoints:
    """Twilio signs the URL it called. The same webhooks live on API Gateway and on a function URL, and
    the send function names the function URL in StatusCallback: each entry point checks the URL the
    request really arrived on, so a deploy with WEBHOOK_BASE_URL set still accepts API Gateway's."""

    API_DOMAIN = "xyz789.execute-api.us-east-1.amazonaws.com"
    FUNCTION_URL = TestWebhooksOnAFunctionUrl.BASE
    SID = "SM" + "7" * 32

    @pytest.fixture
    def sent(self, api: Api, monkeypatch: pytest.MonkeyPatch) -> str:
        from chalicelib.domain.ledger import SentMessage

        monkeypatch.setenv("WEBHOOK_BASE_URL", self.FUNCTION_URL)  # what the template gives the api function
        monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
        wiring.reset()
        wiring.override(dynamodb=AtomicClient(boto3.client("dynamodb")), clock=lambda: NOW)
        ledger = wiring.ledger()
        ledger.claim("m-two", {"to": TO, "from": FROM}, "t", NOW, timedelta(seconds=60))
        ledger.record_sent("m-two", SentMessage(self.SID, "queued"), NOW)
        return "m-two"

    def api_gateway_event(self, params: dict[str, str], signature: str, message_id: str) -> dict[str, Any]:
        """What API Gateway (REST, proxy integration) hands the api function for POST /api/twilio/status."""
        from urllib.parse import urlencode

        return {
            "resource": "/twilio/status",
            "path": "/twilio/status",
            "httpMethod": "POST",
            "headers": {
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                "Host": self.API_DOMAIN,
                "X-Twilio-Signature": signature,
            },
            "multiValueHeaders": {},
            "queryStringParameters": {"mid": message_id},
            "multiValueQueryStringParameters": {"mid": [message_id]},
            "pathParameters": None,
            "stageVariables": None,
            "requestContext": {
                "resourcePath": "/twilio/status",
                "httpMethod": "POST",
                "path": "/api/twilio/status",
                "stage": "api",
                "domainName": self.API_DOMAIN,
                "identity": {"sourceIp": "54.0.0.1"},
            },
            "body": urlencode(params),
            "isBase64Encoded": False,
        }

    def test_api_gateway_checks_the_api_url_while_sends_name_the_function_url(self, api: Api, sent: str) -> None:
        from twilio.request_validator import RequestValidator

        import app

        params = {"MessageSid": self.SID, "MessageStatus": "sent"}
        validator = RequestValidator(AUTH_TOKEN)
        api_url = f"https://{self.API_DOMAIN}/api/twilio/status?mid={sent}"
        signed_for_function_url = validator.compute_signature(f"{self.FUNCTION_URL}/twilio/status?mid={sent}", params)

        refused = app.app(self.api_gateway_event(params, signed_for_function_url, sent), None)
        assert refused["statusCode"] == 403 and must(wiring.ledger().get(sent)).status == "queued"
        answer = app.app(self.api_gateway_event(params, validator.compute_signature(api_url, params), sent), None)
        assert answer["statusCode"] == 200 and must(wiring.ledger().get(sent)).status == "sent"
        # and what the send function gives Twilio is the function URL, asking for retries of a refused callback
        assert wiring.settings().status_callback_url(sent) == (
            f"{self.FUNCTION_URL}/twilio/status?mid={sent}#ct=2000&rt=4000&rc=5&rp=all&tt=15000"
        )

    def test_a_signature_over_the_callback_url_with_or_without_its_overrides_is_taken(
        self, api: Api, sent: str
    ) -> None:
        """Twilio does not say whether X-Twilio-Signature covers the overrides fragment, which no request
        carries: both are URLs the connector gave Twilio, so both are taken; another fragment is not."""
        from twilio.request_validator import RequestValidator

        import app

        hooks = TestWebhooksOnAFunctionUrl()
        validator = RequestValidator(AUTH_TOKEN)
        given = must(wiring.settings().status_callback_url(sent))
        assert "#rc=" in given or "&rc=5" in given
        bare = given.partition("#")[0]
        for url, status, taken in [
            (f"{bare}#rc=1", "sent", 403),
            (given, "sent", 200),
            (bare, "delivered", 200),
        ]:
            params = {"MessageSid": self.SID, "MessageStatus": status}
            event = hooks.event("/twilio/status", params, validator.compute_signature(url, params), f"mid={sent}")
            assert app.webhooks(event, None)["statusCode"] == taken, url
        assert must(wiring.ledger().get(sent)).status == "delivered"

    def test_the_function_url_accepts_its_own_domain_and_a_configured_name(self, api: Api, sent: str) -> None:
        from twilio.request_validator import RequestValidator

        import app

        hooks = TestWebhooksOnAFunctionUrl()
        params = {"MessageSid": self.SID, "MessageStatus": "delivered"}
        validator = RequestValidator(AUTH_TOKEN)
        elsewhere = validator.compute_signature(f"https://evil.example/twilio/status?mid={sent}", params)
        assert app.webhooks(hooks.event("/twilio/status", params, elsewhere, f"mid={sent}"), None)["statusCode"] == 403
        own = validator.compute_signature(f"{self.FUNCTION_URL}/twilio/status?mid={sent}", params)
        assert app.webhooks(hooks.event("/twilio/status", params, own, f"mid={sent}"), None)["statusCode"] == 200
        assert must(wiring.ledger().get(sent)).status == "delivered"


class TestErrorsChaliceWouldAnswer:
    """Answers Chalice makes itself, and a bug, come in the API's one error body too."""

    def test_a_method_the_route_lacks_is_405_naming_the_allowed_ones(self, api: Api) -> None:
        response = api.client.http.delete("/messages/msg_1", headers=AUTH)
        body = json.loads(response.body)
        assert response.status_code == 405 and body["error"]["code"] == "method_not_allowed"
        assert body["error"]["message"] == "Unsupported method: DELETE; this route allows GET"
        assert response.headers["Allow"] == "GET"

    def test_a_webhook_posted_as_json_is_415_in_our_shape(self, api: Api) -> None:
        response = api.client.http.post("/twilio/status", body="{}", headers={"Content-Type": "application/json"})
        body = json.loads(response.body)
        assert response.status_code == 415 and body["error"]["code"] == "unsupported_media_type"

    def test_a_bug_is_a_500_in_our_shape_and_its_message_stays_out_of_the_log(
        self, api: Api, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Broken:
            def get(self, message_id: str, *scope: Any) -> Any:
                raise ValueError(f"cannot read record for {TO}")

        wiring.override(messages_api=cast(Any, Broken()))
        status, body = api.call("get", "/messages/msg_1")
        assert status == 500 and body["error"]["code"] == "internal_error" and "retry" in body["error"]["message"]
        logged = [vars(record) for record in caplog.records]
        assert any(r.get("error") == "ValueError" and "test_api.py" in str(r.get("frames")) for r in logged)
        assert TO not in str(logged) and TO[-7:] not in str(logged)


class TestHostileInput:
    """Generated from the classes a hostile-input run found (tests/unit/test_properties.py has the
    values): whatever is posted, no 5xx, and every refusal names its problem in the error body."""

    @staticmethod
    def bodies() -> Any:
        from hypothesis import strategies as st

        from tests.unit.test_properties import FIELD_NAMES, JSON, nested

        request = st.dictionaries(
            st.sampled_from(FIELD_NAMES), JSON | st.builds(nested, st.integers(0, 40)), max_size=6
        )
        as_text = request.map(lambda d: json.dumps(d, default=str, allow_nan=True))
        raw = st.sampled_from(["[" * 5000 + "]" * 5000, '{"to": NaN}', '{"metadata": {"x": Infinity}}', "\ufeff{}"])
        return as_text | raw | st.text(max_size=60)

    def test_no_request_is_a_5xx(self, api: Api) -> None:
        import os

        from hypothesis import HealthCheck, given, settings

        examples = 1000 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 40

        @given(self.bodies())
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
        def check(body: str) -> None:
            for method, path in (("post", "/messages"), ("put", "/templates/t"), ("post", "/messages/batch")):
                wrapped = body if path != "/messages/batch" else '{"messages": [' + (body or "null") + "]}"
                status, answer = api.call(method, path, wrapped)
                assert status < 500, (path, body, answer)
                if status >= 400:
                    assert answer["error"]["message"] and "field" in answer["error"], answer

        check()


class TestBoundedJson:
    """Every JSON the connector is given goes through one bounded reader (chalicelib/domain/json_reader.py):
    100,000 levels deep (Python's parser would exhaust its recursion: a 500), NaN and Infinity literals, and
    numbers past a float are 400s naming the field they are in, on every route that takes a body (the
    OpenAPI document's), per batch item for JSON inside a string, and on the front door."""

    DEEP = "[" * 100_000 + "]" * 100_000

    def routes(self) -> list[tuple[str, str]]:
        document = json.loads((Path(__file__).resolve().parents[2] / "infra" / "openapi.json").read_text())
        found = [
            (method, path.replace("{name}", "t"))
            for path, operations in document["paths"].items()
            for method, operation in operations.items()
            if isinstance(operation, dict) and "requestBody" in operation
        ]
        assert {p for _, p in found} >= {"/messages", "/messages/batch", "/templates/t", "/connections/t"}
        return found

    @pytest.mark.parametrize(
        ("inside", "field"),
        [("DEEP", ""), ('{"metadata": DEEP}', "metadata"), ('{"metadata": {"score": NaN}}', "metadata.score"),
         ('{"metadata": {"score": -Infinity}}', "metadata.score"), ('{"a": {"b": [1e999]}}', "a.b[0]")],
    )  # fmt: skip
    def test_every_route_refuses_it_naming_the_field(self, api: Api, inside: str, field: str) -> None:
        body = inside.replace("DEEP", self.DEEP)
        for method, path in self.routes():
            status, answer = api.call(method, path, body)
            assert status == 400, (method, path, status, answer)
            assert answer["error"]["field"] == field, (method, path, answer)
            assert "deeper than 32 levels" in answer["error"]["message"] or "finite" in answer["error"]["message"]
        # inside a batch the path names the message
        status, answer = api.call("post", "/messages/batch", '{"messages": [{"to": "' + TO + '"}, ' + body + "]}")
        assert status == 400 and answer["error"]["field"] == (f"messages[1].{field}" if field else "messages"), answer

    def test_json_inside_a_string_is_read_the_same_way_per_batch_item(self, api: Api) -> None:
        content = {"to": TO, "content_sid": "HX" + "0" * 32, "content_variables": self.DEEP}
        status, answer = api.call("post", "/messages/batch", {"messages": [{"to": TO, "body": "hi"}, content]})
        assert status < 500, answer
        refused = [r for r in answer["results"] if r.get("error")]
        assert [r["error"]["field"] for r in refused] == ["content_variables"], answer

    def test_the_front_door_answers_400_not_500(self, api: Api) -> None:
        from chalicelib.entrypoints.facade_requests import BadRequest, FacadeRequest

        deep = "[" * 50_000 + "]" * 50_000  # within the front door's 128 KB
        for body in ('{"To": NaN}', '{"To": ' + deep + "}", '{"Body": 1e999}'):  # a JSON body starts with {
            request = FacadeRequest("POST", "/", {}, {"content-type": "application/json"}, body.encode())
            with pytest.raises(BadRequest, match="refused"):
                request.pairs()


class TestKeyRoles:
    """Every route the API serves, called with a key of each role: a route a role does not open answers 403
    naming the role it needs (never 401: the key is known), and one it opens is never refused for the key.
    Keys made before roles (no `role`) are `admin`. Removing a key from the secret revokes it."""

    ROUTES: ClassVar[list[tuple[str, str]]] = [  # every route of the OpenAPI document, and the operations ones
        *(
            (method.upper(), path)
            for path, operations in json.loads(
                (Path(__file__).resolve().parents[2] / "infra" / "openapi.json").read_text()
            )["paths"].items()
            for method in operations
            if method in ("get", "post", "put", "delete")
        ),
        ("GET", "/dlq"),
        ("POST", "/dlq/redrive"),
        ("POST", "/api-keys/{name}"),
        ("GET", "/api-keys"),
        ("DELETE", "/api-keys/{name}"),
    ]
    OPENS: ClassVar[dict[str, set[tuple[str, str]]]] = {
        "send": {("POST", "/messages"), ("POST", "/messages/batch"), ("GET", "/messages/{message_id}"),
                 ("GET", "/templates/{name}")},
        "read": {("GET", "/messages/{message_id}"), ("GET", "/templates/{name}"), ("GET", "/stats"), ("GET", "/dlq"),
                 ("GET", "/connections"), ("GET", "/connections/{name}"), ("GET", "/connections/{name}/budget")},
    }  # fmt: skip

    def keys(self, *entries: dict[str, str]) -> None:
        from chalicelib.entrypoints.api_keys import key_hash

        stored = [{"name": e["name"], "sha256": key_hash(e["key"]), **({"role": e["role"]} if "role" in e else {})}
                  for e in entries]  # fmt: skip
        boto3.client("secretsmanager").put_secret_value(
            SecretId=API_KEYS_SECRET_ID, SecretString=json.dumps({"keys": stored})
        )
        wiring.reset()
        wiring.override(dynamodb=AtomicClient(boto3.client("dynamodb")), clock=lambda: NOW)

    def test_each_role_opens_its_routes_and_is_refused_the_rest_by_name(
        self, api: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("SECRET_MAX_AGE_SECONDS", "0")
        self.keys({"name": "cdp", "key": "k-send", "role": "send"}, {"name": "ops", "key": "k-read", "role": "read"},
                  {"name": "old", "key": "k-old"})  # fmt: skip
        assert {p for _, p in self.ROUTES} >= {"/messages", "/connections/{name}", "/dlq/redrive"}
        for role, key in (("send", "k-send"), ("read", "k-read"), ("admin", "k-old")):
            for method, route in self.ROUTES:
                path = route.replace("{message_id}", "msg_1").replace("{name}", "t")
                status, body = api.call(method.lower(), path, "{}", headers={"x-api-key": key})
                opened = role == "admin" or (method, route) in self.OPENS[role]
                if opened:
                    assert status not in (401, 403), (role, method, route, body)
                else:
                    assert status == 403, (role, method, route, status, body)
                    assert f"has role `{role}`" in body["error"]["message"] and "`admin`" in body["error"]["message"]

    def test_keys_are_listed_without_their_hashes_and_a_revoked_key_is_refused(
        self, api: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("SECRET_MAX_AGE_SECONDS", "0")
        self.keys({"name": "cdp", "key": "k-send", "role": "send"}, {"name": "me", "key": "k-admin", "role": "admin"})
        admin = {"x-api-key": "k-admin"}
        status, made = api.call("post", "/api-keys/eu-cdp?role=send&connections=eu", headers=admin)
        assert status == 201 and made["role"] == "send" and made["api_key"].startswith("tck_")
        status, listed = api.call("get", "/api-keys", headers=admin)
        assert status == 200 and [(k["name"], k["role"]) for k in listed["keys"]] == [
            ("cdp", "send"), ("me", "admin"), ("eu-cdp", "send")
        ]  # fmt: skip
        assert listed["keys"][-1]["connections"] == ["eu"] and "sha256" not in json.dumps(listed)
        today = time.strftime("%Y-%m-%d", time.gmtime())
        used = {k["name"]: k["last_used"] for k in listed["keys"]}
        assert used == {"cdp": None, "me": today, "eu-cdp": None}  # the admin key listing them was used today
        assert api.call("get", "/messages/msg_1", headers={"x-api-key": "k-send"})[0] == 404
        status, revoked = api.call("delete", "/api-keys/cdp", headers=admin)
        assert status == 200 and revoked["revoked"] == "cdp" and "within 0 s" in revoked["note"]
        status, body = api.call("get", "/messages/msg_1", headers={"x-api-key": "k-send"})
        assert (status, body["error"]["message"]) == (403, "this API key is not valid")
        assert api.call("delete", "/api-keys/cdp", headers=admin)[0] == 404


class TestKeysLimitedToConnections:
    """A `send` key limited to one connection sends and reads through it alone: another connection's message
    is not found for it, a request through another is 403 naming `connection`, and in a batch only those
    items are refused."""

    def test_a_limited_key_reaches_its_connection_only(self, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
        from chalicelib.domain.ledger import SentMessage
        from chalicelib.entrypoints.api_keys import key_hash

        monkeypatch.setenv("SECRET_MAX_AGE_SECONDS", "0")
        monkeypatch.setenv("TWILIO_CONNECTIONS", json.dumps({"eu": {"secret_id": "twilio-connector-test/twilio/eu"}}))
        limited = {"name": "cdp-us", "sha256": key_hash("k-us"), "role": "send", "connections": ["default"]}
        boto3.client("secretsmanager").put_secret_value(
            SecretId=API_KEYS_SECRET_ID, SecretString=json.dumps({"keys": [limited]})
        )
        wiring.reset()
        wiring.override(dynamodb=AtomicClient(boto3.client("dynamodb")), clock=lambda: NOW)
        ledger = wiring.ledger()
        for message_id, connection in (("m-us", None), ("m-eu", "eu")):
            attrs = {"to": TO, "from": FROM, **({"connection": connection} if connection else {})}
            ledger.claim(message_id, attrs, "t", NOW, timedelta(seconds=60))
            ledger.record_sent(message_id, SentMessage("SM" + "4" * 32, "queued"), NOW)
        key = {"x-api-key": "k-us"}
        assert api.call("get", "/messages/m-us", headers=key)[0] == 200
        assert api.call("get", "/messages/m-eu", headers=key)[0] == 404  # as if it did not exist
        status, body = api.call("post", "/messages", {"to": TO, "body": "hi", "connection": "eu"}, headers=key)
        assert (status, body["error"]["field"]) == (403, "connection") and "`default` only" in body["error"]["message"]
        assert api.call("post", "/messages", {"to": TO, "body": "hi"}, headers=key)[0] == 202  # its own
        batch = {"messages": [{"to": TO, "body": "a"}, {"to": TO, "body": "b", "connection": "eu"}]}
        status, body = api.call("post", "/messages/batch", batch, headers=key)
        assert status == 200 and [r["http_status"] for r in body["results"]] == [202, 403]

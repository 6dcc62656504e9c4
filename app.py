"""The Chalice switchboard: every entry point is one line into chalicelib."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from chalice import Chalice, Response
from chalice.app import DynamoDBEvent, Request, SQSEvent

from chalicelib import wiring, wiring_http
from chalicelib.settings import INBOUND_PATH, STATUS_PATH


def _refuse_chalice_deploy() -> None:
    """`chalice deploy` would lose messages (no ReportBatchItemFailures on the SQS trigger) and lacks the
    queue, tables, state machine, function URL, roles and alarms: `make deploy` is the one way to deploy."""
    click = sys.modules.get("click")  # loaded only by the chalice CLI, never in Lambda
    if click is None:
        return
    context = click.get_current_context(silent=True)
    if context is not None and context.command.name == "deploy":
        raise click.ClickException(
            "this app is deployed as one CloudFormation stack: run `make deploy STAGE=<stage> BUCKET=<s3 bucket>` "
            "(docs/deploy.md); `chalice deploy` would create an SQS trigger that deletes failed records"
        )


_refuse_chalice_deploy()
app = Chalice(app_name="twilio-connector")

# Chalice reads these when it loads this module (deploy and package time), with the stage's variables set.
SEND_QUEUE = os.environ.get("SEND_QUEUE_NAME", "twilio-connector-send")
# 50 records per invocation (gathered for up to 2 s) make one poll execution follow 50 messages:
# Step Functions bills per transition, so this is what keeps polling cheap
# (docs/performance.md, "Performance and cost").
SEND_BATCH_SIZE = int(os.environ.get("SEND_BATCH_SIZE", "50"))
SEND_BATCH_WINDOW = 0 if SEND_BATCH_SIZE <= 10 else int(os.environ.get("SEND_BATCH_WINDOW_SECONDS", "2"))
# The messages table's stream: the template puts the table's StreamArn in its place (infra/resources.json).
MESSAGES_STREAM = os.environ.get(
    "MESSAGES_STREAM_ARN",
    "arn:aws:dynamodb:us-east-1:000000000000:table/twilio-connector-messages/stream/set-by-template",
)
FORWARD_QUEUE = os.environ.get("FORWARD_QUEUE_NAME", "twilio-connector-forward.fifo")
# Up to 1,000 changes a batch, gathered for up to OUTBOX_BATCH_WINDOW_SECONDS: the counters are one write a
# batch, so a trickle's cost falls as the window grows; write-backs and events wait at most that long.
OUTBOX_BATCH_SIZE = int(os.environ.get("OUTBOX_BATCH_SIZE", "1000"))
OUTBOX_BATCH_WINDOW = int(os.environ.get("OUTBOX_BATCH_WINDOW_SECONDS", "15"))
# Twilio posts `application/x-www-form-urlencoded; charset=utf-8`; Chalice answers 415 unless listed.
FORM = ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8"]
# JSON routes parse the raw body themselves, so a wrong type or bad JSON gets our error body, not Chalice's.
ANY = ["*/*"]
# Twilio's signature guards the webhooks instead; the status page holds no data (it asks for a key to fetch any).
UNSIGNED_BY_KEY = {STATUS_PATH, INBOUND_PATH, "/dashboard"}
GRANT = "connector_key"  # in the request's context: the key's name, role and the connections it is limited to


def _limited() -> frozenset[str] | None:
    grant = (_request().context or {}).get(GRANT) or {}
    limited: frozenset[str] | None = grant.get("connections")
    return limited


def _request() -> Request:
    request = app.current_request
    assert request is not None  # always set inside a route
    return request


def _json(result: Any) -> Response:
    return Response(
        body=json.dumps(result.body), status_code=result.status, headers={"Content-Type": "application/json"}
    )


def _with_body(handle: Callable[[Any], Any]) -> Response:
    from chalicelib.domain.models import ValidationError
    from chalicelib.entrypoints.responses import invalid, parse_json

    try:
        body = parse_json(_request().raw_body)
    except ValidationError as exc:
        return _json(invalid(exc))
    return _json(handle(body))


def _seconds_left(context: Any) -> Callable[[], float] | None:
    """The invocation's time left, in seconds (None where the context cannot tell: the time is not budgeted)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return (lambda: remaining() / 1000) if remaining else None


def _guarded(view: Callable[..., Response]) -> Callable[..., Response]:
    """A bug in a route answers 500 in our error shape; Chalice's own handler would log the
    exception's message, which may hold a phone number."""

    @functools.wraps(view)
    def run(*args: Any, **kwargs: Any) -> Response:
        try:
            return view(*args, **kwargs)
        except Exception as exc:
            from chalicelib.entrypoints.responses import unexpected

            return _json(unexpected(exc, _request().path))

    return run


@app.middleware("all")
def publish_metrics(event: Any, get_response: Callable[[Any], Any]) -> Any:
    """Every handler's metrics reach CloudWatch, whether it answered, returned or raised."""
    try:
        return get_response(event)
    finally:
        from chalicelib.observability import flush_metrics

        flush_metrics()


@app.middleware("http")
def require_api_key(event: Request, get_response: Callable[[Request], Response]) -> Response:
    from chalicelib.entrypoints.responses import from_chalice

    if event.path not in UNSIGNED_BY_KEY:
        route = str((event.context or {}).get("resourcePath") or event.path)
        grant: dict[str, Any] = {}
        refusal = wiring_http.api_keys().check(event.headers, event.method, route, grant)
        if refusal is not None:
            return _json(refusal)
        event.context[GRANT] = grant  # the routes read what the key may reach
    response = get_response(event)
    if event.path not in UNSIGNED_BY_KEY and event.context.get(GRANT):
        response.headers = {**response.headers, "X-Key-Role": str(event.context[GRANT]["role"])}  # the page shows it
    ours = from_chalice(response.status_code, response.body, response.headers)
    if ours is None:
        return response
    translated = _json(ours)
    translated.headers = {**response.headers, **translated.headers}  # keeps 405's Allow
    return translated


# --- the API for CDPs ---------------------------------------------------------


@app.route("/messages", methods=["POST"], content_types=ANY)
@_guarded
def post_message() -> Response:
    key = _request().headers.get("idempotency-key")
    return _with_body(lambda body: wiring_http.messages_api().accept(body, key, _limited()))


@app.route("/messages/batch", methods=["POST"], content_types=ANY)
@_guarded
def post_batch() -> Response:
    return _with_body(lambda body: wiring_http.messages_api().accept_batch(body, _limited()))


@app.route("/messages/{message_id}", methods=["GET"], content_types=ANY)
@_guarded
def get_message(message_id: str) -> Response:
    return _json(wiring_http.messages_api().get(message_id, _limited()))


@app.route("/templates/{name}", methods=["PUT"], content_types=ANY)
@_guarded
def put_template(name: str) -> Response:
    return _with_body(lambda body: wiring_http.messages_api().put_template(name, body))


@app.route("/templates/{name}", methods=["GET"], content_types=ANY)
@_guarded
def get_template(name: str) -> Response:
    return _json(wiring_http.messages_api().get_template(name))


@app.route("/connection/test", methods=["POST"], content_types=ANY)
@_guarded
def connection_test() -> Response:
    """The connection named by `?connection=` or a JSON body's `connection`; else the default."""
    query: Any = _request().query_params or {}
    name = query.get("connection")
    if name is None and (_request().raw_body or b"").strip():
        return _with_body(lambda body: _test_connection(body.get("connection") if isinstance(body, dict) else None))
    return _json(_test_connection(name))


def _test_connection(name: str | None) -> Any:
    from chalicelib.domain.models import ValidationError
    from chalicelib.entrypoints.responses import invalid

    try:
        return wiring_http.connection_check().run(name)
    except ValidationError as exc:  # no such connection: the 400 that names it
        return invalid(exc)


@app.route("/connections", methods=["GET"], content_types=ANY)
@_guarded
def list_connections() -> Response:
    return _json(wiring_http.connections_api().list())


@app.route("/connections/{name}", methods=["PUT"], content_types=ANY)
@_guarded
def put_connection(name: str) -> Response:
    return _with_body(lambda body: wiring_http.connections_api().put(name, body))


@app.route("/connections/{name}", methods=["GET"], content_types=ANY)
@_guarded
def get_connection(name: str) -> Response:
    return _json(wiring_http.connections_api().get(name))


@app.route("/connections/{name}", methods=["DELETE"], content_types=ANY)
@_guarded
def delete_connection(name: str) -> Response:
    return _json(wiring_http.connections_api().delete(name))


@app.route("/connections/{name}/budget", methods=["GET", "POST"], content_types=ANY)
@_guarded
def connection_budget(name: str) -> Response:
    """Today's segment budget (guardrails.daily_segments); POST `{"add_segments": N}` releases held messages."""
    from chalicelib.entrypoints.connections_api import segment_budget

    def answer(body: Any) -> Any:
        return segment_budget(wiring.connections(), wiring.guard_store(), name, body, wiring.clock()())

    if _request().method == "GET":
        return _json(answer(None))
    return _with_body(answer)


@app.route("/stats", methods=["GET"], content_types=ANY)
@_guarded
def stats() -> Response:
    return _json(wiring_http.messages_api().stats_for(_request().query_params or {}))


@app.route("/dashboard", methods=["GET"], content_types=ANY)
@_guarded
def dashboard() -> Response:
    """One self-contained page (no CDN, no build step): it asks for an API key and reads the API with it."""
    from chalicelib.entrypoints.operations import dashboard_html, dashboard_policy

    html = dashboard_html()
    headers: dict[str, str | list[str]] = {
        "Content-Type": "text/html; charset=utf-8",
        "Cache-Control": "no-store",
        "Content-Security-Policy": dashboard_policy(html),
        "X-Frame-Options": "DENY",  # frame-ancestors, for browsers that predate it
    }
    return Response(body=html, status_code=200, headers=headers)


@app.route("/dlq", methods=["GET"], content_types=ANY)
@_guarded
def dlq_show() -> Response:
    return _json(wiring_http.operations_api().dlq_show(_request().query_params or {}))


@app.route("/dlq/redrive", methods=["POST"], content_types=ANY)
@_guarded
def dlq_redrive() -> Response:
    return _json(wiring_http.operations_api().dlq_redrive(_request().query_params or {}))


@app.route("/api-keys", methods=["GET"], content_types=ANY)
@_guarded
def list_api_keys() -> Response:
    from chalicelib.entrypoints.api_keys import list_api_keys as listed
    from chalicelib.entrypoints.responses import ApiResult

    secret_id = wiring.settings().api_keys_secret_id or ""
    keys = listed(wiring.boto_client("secretsmanager"), secret_id)
    used = wiring_http.key_use().last_used([k["name"] for k in keys])
    return _json(ApiResult(200, {"keys": [{**k, "last_used": used.get(k["name"])} for k in keys]}))


@app.route("/api-keys/{name}", methods=["DELETE"], content_types=ANY)
@_guarded
def revoke_api_key(name: str) -> Response:
    from chalicelib.entrypoints.api_keys import revoke_api_key as revoke
    from chalicelib.entrypoints.responses import ApiResult, error

    secret_id = wiring.settings().api_keys_secret_id or ""
    if not revoke(wiring.boto_client("secretsmanager"), secret_id, name):
        return _json(error(404, "not_found", f"no API key named `{name}`", "name"))
    max_age = wiring.settings().secret_max_age_seconds
    return _json(ApiResult(200, {"revoked": name, "note": f"refused by every function within {max_age} s"}))


@app.route("/api-keys/{name}", methods=["POST"], content_types=ANY)
@_guarded
def create_api_key(name: str) -> Response:
    query: dict[str, str] = dict(_request().query_params or {})
    role = query.get("role") or "admin"
    limited = [c for c in (query.get("connections") or "").split(",") if c]
    return _json(wiring_http.operations_api().create_api_key(name, role, limited))


# --- Twilio's webhooks ----------------------------------------------------------


def _webhook(handle: Any, path: str) -> Response:
    from chalicelib.entrypoints.webhooks import api_gateway_request

    request = _request()
    arrived = api_gateway_request(
        wiring.settings(),
        path,
        request.context,
        request.query_params,
        request.raw_body,
        request.headers.get("x-twilio-signature"),
    )
    result = handle(arrived)
    return Response(body=result.body, status_code=result.status, headers=result.headers)


@app.route(STATUS_PATH, methods=["POST"], content_types=FORM)
@_guarded
def twilio_status() -> Response:
    return _webhook(wiring_http.webhooks().status, STATUS_PATH)


@app.route(INBOUND_PATH, methods=["POST"], content_types=FORM)
@_guarded
def twilio_inbound() -> Response:
    return _webhook(wiring_http.webhooks().inbound, INBOUND_PATH)


@app.lambda_function(name="webhooks")
def webhooks(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The same two webhooks on a Lambda function URL (WEBHOOK_BASE_URL): no API Gateway fee per callback."""
    from chalicelib.entrypoints.webhooks import handle_function_url

    return handle_function_url(wiring_http.webhooks(), event)


@app.lambda_function(name="facade")
def facade(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Twilio's Messages API (2010-04-01) on a function URL, for platforms that speak Twilio
    (docs/user-guide.md, "The Twilio-compatible front door")."""
    return wiring_http.twilio_facade().handle(event)


# --- queue, poll loop and events -------------------------------------------------


@app.on_sqs_message(
    queue=SEND_QUEUE, batch_size=SEND_BATCH_SIZE, maximum_batching_window_in_seconds=SEND_BATCH_WINDOW, name="send"
)
def send(event: SQSEvent) -> dict[str, Any]:
    result: dict[str, Any] = wiring.send_consumer().handle(event.to_dict(), event.context)
    return result


@app.lambda_function(name="poll")
def poll(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from chalicelib.domain.polling import PollState

    return wiring.tracking().poll(PollState.from_state(event), _seconds_left(context)).to_state()


@app.lambda_function(name="finalize")
def finalize(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from chalicelib.domain.polling import PollState

    return wiring.tracking().finalize(PollState.from_state(event))


@app.schedule("rate(1 minute)", name="release")
def release(event: Any) -> dict[str, Any]:
    """Messages a guardrail held (quiet hours, a cap, the budget) go back on the send queue when due."""
    left = _seconds_left(getattr(event, "context", None))
    return wiring.release_held().run(left or (lambda: 60.0))


@app.on_dynamodb_record(
    stream_arn=MESSAGES_STREAM,
    batch_size=OUTBOX_BATCH_SIZE,
    starting_position="TRIM_HORIZON",
    maximum_batching_window_in_seconds=OUTBOX_BATCH_WINDOW,
    name="outbox",
)
def outbox(event: DynamoDBEvent) -> dict[str, Any]:
    """Every change of the ledger becomes what follows from it (chalicelib/usecases/outbox.py)."""
    from chalicelib.adapters.streams import stream_records

    failed = wiring.outbox().handle(stream_records(event.to_dict()), _seconds_left(event.context))
    return {"batchItemFailures": [{"itemIdentifier": sequence} for sequence in failed]}


@app.on_sqs_message(queue=FORWARD_QUEUE, batch_size=10, name="forward")
def forward(event: SQSEvent) -> dict[str, Any]:
    """Write-backs their platform did not take when the outbox tried, in order: the first refused comes back
    with all after it (a FIFO queue's rule: docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html)."""
    from chalicelib.adapters.queue import parked_entry, parked_token
    from chalicelib.usecases.outbox import forward_parked

    records = [record.to_dict() for record in event]
    groups = [str((r.get("attributes") or {}).get("MessageGroupId") or "") for r in records]
    parked_as = [(group, parked_token(group, r["body"])) for group, r in zip(groups, records, strict=True)]
    entries = [parked_entry(r["body"]) for r in records]
    told = forward_parked(wiring.forwarder(), entries, parked_as, wiring.writeback_marks())
    return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records[told:]]}

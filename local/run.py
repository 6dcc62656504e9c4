"""`make run`: the whole connector on this machine, no AWS account, no Twilio account.

python -m local.run [--port 8000] [--demo] [--real-twilio] [--verbose]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

import requests

DEMO = [
    ("+15550001001", "delivered", None, "Your order has shipped"),
    ("+15550001002", "undelivered", 30007, "Your order has shipped"),
    ("+15005550001", None, None, "To an invalid number (Twilio answers 21211)"),
    ("+15550001004", "opted_out", None, "To someone who replied STOP"),
]


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--demo", action="store_true", help="send a few messages and watch their statuses change")
    parser.add_argument(
        "--real-twilio",
        action="store_true",
        help="send through real Twilio with TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN / TWILIO_DEFAULT_FROM "
        "(status comes by polling unless PUBLIC_BASE_URL is a public URL that reaches this machine)",
    )
    parser.add_argument("--verbose", action="store_true", help="show the connector's own JSON logs and metrics")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if not args.verbose:
        os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
        os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    from local.stack import LocalStack, StackConfig

    config = StackConfig(
        stage="local",
        api_port=args.port,
        retry_interval_ms=int(os.environ.get("RETRY_INTERVAL_MS", "5000")),
        poll_window_seconds=int(os.environ.get("POLL_WINDOW_SECONDS", "10")),
        retry_attempts=int(os.environ.get("RETRY_ATTEMPTS", "10")),
        time_scale=1.0,
        visibility_timeout=10,
        api_key=os.environ.get("CONNECTOR_API_KEY") or "local-dev-key",
        verbose=args.verbose,
    )
    config.facade_account_sid = os.environ.get("FACADE_ACCOUNT_SID") or config.facade_account_sid
    config.facade_token = os.environ.get("FACADE_TOKEN") or config.facade_token
    if args.real_twilio:
        missing = [
            v for v in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_DEFAULT_FROM") if not os.environ.get(v)
        ]
        if missing:
            print(f"--real-twilio needs {', '.join(missing)} in the environment", file=sys.stderr)
            return 2
        config.account_sid = os.environ["TWILIO_ACCOUNT_SID"]
        config.auth_token = os.environ["TWILIO_AUTH_TOKEN"]
        config.default_from = os.environ["TWILIO_DEFAULT_FROM"]
        config.use_simulator = False
    stack = LocalStack(config)
    try:
        stack.start()
    except OSError as exc:
        print(f"could not start: {exc} (is port {args.port} free? try `make run PORT=8001`)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        _banner(stack, args.real_twilio)
        if args.demo:
            _demo(stack)
            _demo_write_back(stack)
            print("\nThe stack keeps running; Ctrl-C stops it.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping…")
    finally:
        stack.stop()
    return 0


def _banner(stack: Any, real: bool) -> None:
    key = stack.config.api_key
    twilio = "real Twilio" if real else f"the Twilio simulator at {stack.simulator.origin} (control API under /_sim/)"
    print(
        f"""
Twilio connector running locally
  API:         {stack.api_url}
  API key:     {key}
  Twilio:      {twilio}
  Webhooks:    {stack.api_url}/twilio/status and /twilio/inbound
  Status page: {stack.api_url}/dashboard  (it asks for the API key)
  CLI:         CONNECTOR_URL={stack.api_url} CONNECTOR_API_KEY={key} python -m infra.cli --help
  Twilio-compatible front door (for platforms that speak Twilio; docs/user-guide.md):
    Base URL:    {stack.facade_url}
    Account SID: {stack.config.facade_account_sid}
    Auth token:  {stack.config.facade_token}

Send a message:
  curl -s -X POST {stack.api_url}/messages -H 'x-api-key: {key}' -H 'Content-Type: application/json' \\
       -d '{{"to": "+15551234567", "body": "Hello from the connector"}}'
Then read it back (use the id it answered with):
  curl -s {stack.api_url}/messages/<id> -H 'x-api-key: {key}'
Or as a platform talks to Twilio:
  curl -s -u {stack.config.facade_account_sid}:{stack.config.facade_token} \\
       {stack.facade_url}/Accounts/{stack.config.facade_account_sid}/Messages.json \\
       --data-urlencode To=+15551234567 --data-urlencode From={stack.config.default_from} -d Body=Hello

Ctrl-C stops everything.""",
        flush=True,
    )


def _demo(stack: Any) -> None:
    if stack.simulator is None:
        print("--demo needs the simulator (it sets up each recipient's outcome); skipped with --real-twilio")
        return
    sim = stack.simulator.sim
    headers = {"x-api-key": stack.config.api_key, "Content-Type": "application/json"}
    for phone, scenario, code, _ in DEMO:
        if scenario == "opted_out":
            sim.inbound(phone, stack.config.default_from, "STOP")
        elif scenario:
            sim.set_scenario(phone, scenario, code)
    ids: list[tuple[str, str]] = []
    print("\nDemo: sending")
    for phone, _, _, text in DEMO:
        answer = requests.post(
            f"{stack.api_url}/messages", headers=headers, data=json.dumps({"to": phone, "body": text}), timeout=10
        )
        body = answer.json()
        print(f"  {phone}  {text:<44} -> HTTP {answer.status_code} {body.get('id', body)}")
        if "id" in body:
            ids.append((phone, body["id"]))
    last: dict[str, str] = {}
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        for phone, message_id in ids:
            record = requests.get(f"{stack.api_url}/messages/{message_id}", headers=headers, timeout=10).json()
            status = record["status"] + (f" ({record['error_code']})" if record.get("error_code") else "")
            if last.get(message_id) != status:
                last[message_id] = status
                source = (record.get("events") or [{}])[-1].get("source", "")
                print(f"  {time.strftime('%H:%M:%S')}  {phone}  {status:<22} via {source}")
        if all(s.split(" ")[0] in ("delivered", "undelivered", "failed", "error") for s in last.values()) and last:
            break
        time.sleep(0.5)


DEMO_CI360_SECRET = "ZGVtby1jbGllbnQtc2VjcmV0LW5vdC1hLXJlYWwtb25l"  # noqa: S105 - a demo's, as CI360 shows one
# One connection per write-back format, each with what its platform needs to know the recipient (docs/platforms.md,
# "Connections and write-back"): the platform's own options, and the request metadata it reads.
PLATFORMS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "clevertap": ({"format": "twilio"}, {}),
    "swrve": ({"format": "swrve", "options": {"app_id": "demo"}, "secret": "swrve-api-key"}, {"swrve_user_id": "u-1"}),
    "tealium": (
        {
            "format": "tealium",
            "options": {"account": "demo", "profile": "main"},
            "attributes": {"customer_id": "crm_id"},
        },
        {"crm_id": "C-1001"},
    ),
    "tealium3": (
        {
            "format": "tealium",
            "options": {"account": "demo", "profile": "main", "api": "v3", "username": "ops@demo.example"},
            "attributes": {"email_address_hash": "email_sha256"},
            "secret": "tealium-api-key",
        },
        {"email_sha256": "9f86d081884c7d65"},
    ),
    "ci360": (
        {"format": "ci360", "options": {"tenant": "demo", "identity": "customer_id"}, "secret": DEMO_CI360_SECRET},
        {"customer_id": "C-1001", "response_tracking_code": "rtc-1", "external_code": "TSK_1"},
    ),
    "json": ({"format": "json"}, {}),
}


def _ci360_accepts(headers: Any) -> bool:
    """The stand-in gateway verifies the JWT as SAS's own send_event.py signs it (b64encode of the secret)."""
    import base64

    import jwt

    token = str(headers.get("Authorization") or "").removeprefix("Bearer ")
    try:
        jwt.decode(token, base64.b64encode(DEMO_CI360_SECRET.encode()), algorithms=["HS256"])
    except jwt.InvalidTokenError:
        return False
    return True


def _demo_write_back(stack: Any) -> None:
    """One connection per write-back format, each pointed at a local receiver standing in for the platform."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Platform(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            name = self.path.strip("/").split("/")[0]
            answer = b""
            status = 200
            if self.path.endswith("/auth"):  # Tealium v3's token exchange: username and API key for a JWT
                answer, body = b'{"token": "demo-token", "host": "local"}', "(token exchange)"
            elif name == "ci360" and not _ci360_accepts(self.headers):
                status, body = 401, f"401 (JWT refused) {body}"
            elif name == "tealium3":
                body = f"[{self.headers.get('Authorization')}] {body}"
            shown = body if len(body) < 110 else body[:107] + "..."
            with printing:  # one line at a time: the platforms are called concurrently
                sys.stdout.write(f"  {time.strftime('%H:%M:%S')}  {name:<9} <- {shown}\n")
                sys.stdout.flush()
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    printing = threading.Lock()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Platform)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    headers = {"x-api-key": stack.config.api_key, "Content-Type": "application/json"}
    print("\nDemo: one connection per write-back format; what each platform receives:")
    sent: list[str] = []
    for number, (name, (write_back, metadata)) in enumerate(PLATFORMS.items()):
        url = f"{base}/{name}" + ("/v3/collect/event" if name == "tealium3" else "")
        options = {
            **write_back.get("options", {}),
            **({"auth_url": f"{base}/{name}/auth"} if name == "tealium3" else {}),
        }
        connection = {
            "account_sid": stack.config.account_sid,
            "auth_token": stack.config.auth_token,
            "from_numbers": [stack.config.default_from],
            "write_back": {**write_back, "url": url, **({"options": options} if options else {})},
            "facade": name == "clevertap",  # its callbacks are signed with the front-door token
        }
        made = requests.put(
            f"{stack.api_url}/connections/{name}", headers=headers, data=json.dumps(connection), timeout=10
        )
        if made.status_code not in (200, 201):
            print(f"  {name}: {made.status_code} {made.text}")
            continue
        message = {
            "to": f"+1555000{2001 + number}",
            "body": f"Hello via {name}",
            "connection": name,
            "metadata": metadata,
        }
        answer = requests.post(f"{stack.api_url}/messages", headers=headers, data=json.dumps(message), timeout=10)
        sent.append(answer.json()["id"])
    # the write-backs arrive as the simulator delivers: wait until every message is final and told
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _all_told(stack, sent, headers):
        time.sleep(0.5)


def _all_told(stack: Any, ids: list[str], headers: dict[str, str]) -> bool:
    """Every message final, the ledger's stream read to its end, and nothing waiting in the forward queue."""
    final = {"delivered", "undelivered", "failed", "error"}
    if any(requests.get(f"{stack.api_url}/messages/{i}", headers=headers, timeout=10).json().get("status") not in final
           for i in ids):  # fmt: skip
        return False
    waiting = stack.sqs.get_queue_attributes(
        QueueUrl=stack.queues["ForwardQueue"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                        "ApproximateNumberOfMessagesDelayed"],
    )["Attributes"]  # fmt: skip
    time.sleep(0.5)  # a change written just now is on the stream within the trigger's next read
    return not stack.outbox.pending and not any(int(n) for n in waiting.values())


if __name__ == "__main__":
    sys.exit(main())

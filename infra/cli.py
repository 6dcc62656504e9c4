"""The connector's command line, for operators: it talks to the deployed API or `make run`'s.

    python -m infra.cli [--url URL] [--key KEY] <command> …

URL and key come from flags or CONNECTOR_URL / CONNECTOR_API_KEY. Exit codes: 0 done, 1 the message
or check failed, 2 the command could not be carried out (the message says why and what to do).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import requests

FINAL = {"delivered", "undelivered", "failed", "error", "canceled", "read"}
FAILED = {"undelivered", "failed", "error"}


class CliError(Exception):
    """The command cannot go on; the text says why and what to do."""


class Client:
    def __init__(self, url: str, key: str, timeout: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> dict[str, Any]:
        headers = {"x-api-key": self.key, "Content-Type": "application/json"}
        try:
            answer = requests.request(
                method,
                f"{self.url}{path}",
                headers=headers,
                params={k: v for k, v in params.items() if v is not None},
                data=None if body is None else json.dumps(body),
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise CliError(f"cannot reach {self.url} ({type(exc).__name__}); check --url / CONNECTOR_URL") from exc
        try:
            result: dict[str, Any] = answer.json()
        except ValueError as exc:
            raise CliError(
                f"{self.url} answered {answer.status_code} without JSON: is it the connector's API?"
            ) from exc
        if answer.status_code in (401, 403):
            said = (result.get("error") or {}).get("message") if isinstance(result, dict) else None
            raise CliError(f"the API refused the key ({answer.status_code}: {said or 'no reason given'}); "
                           "check --key / CONNECTOR_API_KEY, or use a key whose role opens this command")  # fmt: skip
        if answer.status_code >= 400 and "error" in result:
            error = result["error"]
            field = f" (field `{error.get('field')}`)" if error.get("field") else ""
            raise CliError(f"{answer.status_code} {error.get('code')}: {error.get('message')}{field}")
        return result


def _fields(pairs: Sequence[str]) -> dict[str, str]:
    fields = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise CliError(f"--field takes NAME=VALUE, not {pair!r}")
        fields[name] = value
    return fields


def send(client: Client, args: argparse.Namespace, out: TextIO, sleep: Callable[[float], None]) -> int:
    if not args.body and not args.template:
        raise CliError("give --body, or --template with its --field NAME=VALUE pairs")
    request: dict[str, Any] = {"to": args.to}
    for name in ("body", "template", "connection"):
        if getattr(args, name):
            request[name] = getattr(args, name)
    if args.field:
        request["fields"] = _fields(args.field)
    accepted = client.call("POST", "/messages", request)
    message_id = accepted["id"]
    out.write(f"{message_id}\n")
    if args.no_follow:
        return 0
    return follow(client, message_id, args.wait, out, sleep)


def follow(client: Client, message_id: str, wait: float, out: TextIO, sleep: Callable[[float], None]) -> int:
    """Print each status change as it happens, until a final one or `wait` seconds."""
    deadline, seen = time.monotonic() + wait, 0
    record: dict[str, Any] = {}
    while time.monotonic() < deadline:
        record = client.call("GET", f"/messages/{message_id}")
        for event in (record.get("events") or [])[seen:]:
            code = f" ({event['error_code']})" if event.get("error_code") else ""
            out.write(f"  {event.get('at')}  {event.get('status')}{code} via {event.get('source')}\n")
        seen = len(record.get("events") or [])
        if record.get("status") in FINAL:
            break
        sleep(1.0)
    status = record.get("status")
    if status not in FINAL:
        out.write(f"still {status} after {wait:.0f} s; follow it with: status {message_id}\n")
        return 0
    if status in FAILED:
        out.write(f"{status}: {record.get('error_code')} {record.get('error_message') or ''}\n".rstrip() + "\n")
        return 1
    return 0


def redrive(client: Client, limit: int, out: TextIO, queue: str = "send") -> int:
    """In rounds of at most 100, with progress: a large DLQ is not one long request."""
    total = 0
    while total < limit:
        result = client.call("POST", "/dlq/redrive", limit=min(100, limit - total), queue=queue)
        total += int(result.get("moved", 0))
        out.write(f"  moved {total} so far; {result.get('depth')} left in the DLQ\n")
        if not result.get("moved"):
            break
    out.write(f"redriven: {total}\n")
    return 0


def run(argv: Sequence[str] | None, out: TextIO, sleep: Callable[[float], None] = time.sleep) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    url = args.url or os.environ.get("CONNECTOR_URL")
    key = args.key or os.environ.get("CONNECTOR_API_KEY")
    if not url or not key:
        parser.print_usage(sys.stderr)
        sys.stderr.write("cli: give --url and --key (or CONNECTOR_URL and CONNECTOR_API_KEY); `make run` prints both\n")
        return 2
    client = Client(url, key)
    try:
        if args.command == "send":
            return send(client, args, out, sleep)
        if args.command == "status":
            return _print(out, client.call("GET", f"/messages/{args.id}"))
        if args.command == "stats":
            return _print(out, client.call("GET", "/stats", **{"from": args.from_, "to": args.to}))
        if args.command == "test-connection":
            result = client.call("POST", "/connection/test", {"connection": args.name} if args.name else None)
            for check in result.get("checks", []):
                out.write(f"  {'ok  ' if check['ok'] else 'FAIL'}  {check['check']}: {check['detail']}\n")
            return 0 if result.get("ok") else 1
        if args.command == "dlq":
            if args.action == "show":
                return _print(out, client.call("GET", "/dlq", queue=args.queue))
            if args.dry_run:
                dry = {"dry_run": "true", "limit": args.limit, "queue": args.queue}
                return _print(out, client.call("POST", "/dlq/redrive", **dry))
            return redrive(client, args.limit, out, args.queue)
        if args.command == "api-key":
            made = client.call("POST", f"/api-keys/{args.name}")
            out.write(f"API key for {made['name']} (shown once; only its hash is stored):\n{made['api_key']}\n")
            return 0
        listed = client.call("GET", "/connections")
        for connection in listed.get("connections", []):
            default = " (default)" if connection.get("default") else ""
            write_back = (connection.get("write_back") or {}).get("format") or "-"
            out.write(f"  {connection['name']:<16} {connection['source']:<7} write-back {write_back}{default}\n")
        return 0
    except CliError as exc:
        sys.stderr.write(f"cli: {exc}\n")
        return 2


def _print(out: TextIO, value: Any) -> int:
    out.write(json.dumps(value, indent=2) + "\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra.cli", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="the API's base URL (else CONNECTOR_URL)")
    parser.add_argument("--key", help="an API key (else CONNECTOR_API_KEY)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    send_ = commands.add_parser("send", help="send a message and follow its status until it is final")
    send_.add_argument("--to", required=True)
    send_.add_argument("--body")
    send_.add_argument("--template")
    send_.add_argument("--field", action="append", default=[], help="NAME=VALUE for the template (repeatable)")
    send_.add_argument("--connection")
    send_.add_argument("--wait", type=float, default=120, help="seconds to follow it (default 120)")
    send_.add_argument("--no-follow", action="store_true", help="print the id and return")
    status = commands.add_parser("status", help="a message's record and its events")
    status.add_argument("id")
    stats = commands.add_parser("stats", help="counts by status, error code, connection (GET /stats)")
    stats.add_argument("--from", dest="from_", help="YYYY-MM-DD (default today)")
    stats.add_argument("--to", help="YYYY-MM-DD (default today)")
    test = commands.add_parser("test-connection", help="check a connection's credentials, sender and webhooks")
    test.add_argument("name", nargs="?")
    dlq = commands.add_parser("dlq", help="a dead-letter queue: the send queue's, or the forward queue's")
    dlq.add_argument("action", choices=["show", "redrive"])
    dlq.add_argument(
        "--queue", choices=["send", "forward"], default="send", help="forward: write-backs no platform took"
    )
    dlq.add_argument("--dry-run", action="store_true", help="redrive: only say how many would move")
    dlq.add_argument("--limit", type=int, default=100, help="redrive: at most this many (default 100)")
    key = commands.add_parser("api-key", help="make an API key (shown once)")
    key.add_argument("action", choices=["create"])
    key.add_argument("name")
    commands.add_parser("connections", help="list the connections").add_argument("action", choices=["list"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())

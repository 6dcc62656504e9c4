"""HTTP front of the simulator: Twilio's REST paths under /2010-04-01 and a control API under /_sim.

Keep-alive HTTP/1.1 on a threading server, so a pooled client (the connector's
requests.Session, the official twilio package) behaves as against Twilio.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from chalicelib.entrypoints.facade_requests import parse_form  # Twilio's own reading of a form, shared
from local.twilio_sim.core import (
    API_VERSION,
    CallbackFaults,
    Fault,
    SimConfig,
    Simulator,
    TwilioApiError,
)

ACCOUNT = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>AC\w+)\.json$")
MESSAGES = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>AC\w+)/Messages\.json$")
MESSAGE = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>AC\w+)/Messages/(?P<sid>(SM|MM)\w+)\.json$")
MAX_PAGE_SIZE = 1000


class _DropConnection(Exception):
    """Close the socket without answering (a reset, or a reply lost after the work was done)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and the local stack print what matters

    # --- plumbing ------------------------------------------------------------

    @property
    def sim(self) -> Simulator:
        return self.server.sim

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _credentials(self) -> tuple[str | None, str | None]:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None, None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None, None
        return user, password

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        body = self._body()
        try:
            if parts.path.startswith("/_sim/"):
                self._control(method, parts.path, body)
            else:
                self._api(method, parts.path, dict(parse_qsl(parts.query)), body)
        except _DropConnection:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
        except TwilioApiError as exc:
            self._send_json(exc.status, exc.body(), exc.headers)
        except (ValueError, KeyError, TypeError) as exc:
            self._send_json(400, {"error": str(exc)})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- the Twilio API ------------------------------------------------------

    def _api(self, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        sim = self.sim
        route = self._route(method, path)
        if route is None:
            raise TwilioApiError(404, 20404, f"The requested resource {path} was not found")
        op, match = route
        form = parse_form(body, self.headers.get("Content-Type", ""))
        to = dict(form).get("To")
        with sim.lock:
            sim.requests[op] += 1
            sim.in_flight += 1
            sim.peak_in_flight = max(sim.peak_in_flight, sim.in_flight)
            over = sim.config.max_in_flight is not None and sim.in_flight > sim.config.max_in_flight
            sim.throttled += over
        try:
            if sim.config.latency_ms:
                time.sleep(sim.config.latency_ms / 1000)
            user, password = self._credentials()
            sim.authenticate(user, password, match["account"])
            if over:
                raise TwilioApiError(429, 20429, headers={"Retry-After": "1"})
            fault = sim.take_fault(op, to)
            if fault is not None:
                self._apply_fault(fault)
            if op == "create":
                message = sim.create_message(form)
                if fault is not None and fault.kind == "lost":
                    raise _DropConnection
                self._send_json(201, message.to_json(sim.clock.now()))
            elif op == "update":
                self._send_json(200, sim.update_message(match["sid"], form).to_json(sim.clock.now()))
            elif op == "fetch":
                self._send_json(200, sim.fetch_message(match["sid"]).to_json(sim.clock.now()))
            elif op == "list":
                self._send_json(200, self._page(path, query))
            else:
                self._send_json(200, self._account())
        finally:
            with sim.lock:
                sim.in_flight -= 1

    @staticmethod
    def _route(method: str, path: str) -> tuple[str, dict[str, str]] | None:
        for op, verb, pattern in (
            ("create", "POST", MESSAGES),
            ("list", "GET", MESSAGES),
            ("fetch", "GET", MESSAGE),
            ("update", "POST", MESSAGE),
            ("account", "GET", ACCOUNT),
        ):
            found = pattern.match(path)
            if found and method == verb:
                return op, found.groupdict()
        return None

    def _apply_fault(self, fault: Fault) -> None:
        if fault.latency_ms:
            time.sleep(fault.latency_ms / 1000)
        if fault.kind == "429":
            raise TwilioApiError(429, 20429, headers={"Retry-After": str(fault.retry_after)})
        if fault.kind == "500":
            raise TwilioApiError(500, 20500)
        if fault.kind == "503":
            raise TwilioApiError(503, 20503)
        if fault.kind == "reset":
            raise _DropConnection

    def _page(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        size = min(int(query.get("PageSize", "50")), MAX_PAGE_SIZE)
        page = int(query.get("Page", "0"))
        found = self.sim.list_messages(query)
        now = self.sim.clock.now()
        chunk = found[page * size : (page + 1) * size]
        filters = {k: v for k, v in query.items() if k not in ("Page", "PageSize", "PageToken")}

        def uri(number: int) -> str:
            params = {**filters, "PageSize": str(size), "Page": str(number)}
            if number:
                params["PageToken"] = f"PA{number}"
            return f"{path}?{urlencode(params)}"

        has_next = (page + 1) * size < len(found)
        return {
            "messages": [m.to_json(now) for m in chunk],
            "end": page * size + max(len(chunk) - 1, 0),
            "first_page_uri": uri(0),
            "next_page_uri": uri(page + 1) if has_next else None,
            "page": page,
            "page_size": size,
            "previous_page_uri": uri(page - 1) if page > 0 else None,
            "start": page * size,
            "uri": uri(page),
        }

    def _account(self) -> dict[str, Any]:
        sid = self.sim.config.account_sid
        return {
            "sid": sid,
            "friendly_name": "Local simulator",
            "status": "active",
            "type": "Full",
            "auth_token": self.sim.config.auth_token,
            "owner_account_sid": sid,
            "date_created": "Sun, 01 Nov 2026 00:00:00 +0000",
            "date_updated": "Sun, 01 Nov 2026 00:00:00 +0000",
            "uri": f"/{API_VERSION}/Accounts/{sid}.json",
            "subresource_uris": {"messages": f"/{API_VERSION}/Accounts/{sid}/Messages.json"},
        }

    # --- the control API -----------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> None:
        sim = self.sim
        data = json.loads(body) if body else {}
        if method == "GET" and path == "/_sim/creates":
            counts = [{"to": to, "body": text, "count": n} for (to, text), n in sim.create_counts().items()]
            self._send_json(200, {"creates": sim.creates(), "counts": counts})
        elif method == "GET" and path.startswith("/_sim/messages/"):
            self._send_json(200, sim.truth(path.rsplit("/", 1)[1]))
        elif method == "GET" and path == "/_sim/stats":
            stats = {"requests": dict(sim.requests), "callbacks": len(sim.callbacks)}
            stats |= {"peak_in_flight": sim.peak_in_flight, "throttled": sim.throttled}
            self._send_json(200, stats)
        elif method == "GET" and path == "/_sim/senders":
            self._send_json(200, {"senders": sim.senders()})
        elif method == "POST" and path == "/_sim/senders":
            sim.config.sender_rates[str(data["sender"])] = float(data["rate"])
            self._send_json(200, {"ok": True})
        elif method == "GET" and path == "/_sim/callbacks":
            self._send_json(200, {"callbacks": [asdict(c) for c in sim.callbacks]})
        elif method == "POST" and path == "/_sim/scenarios":
            sim.set_scenario(data["to"], data["scenario"], data.get("error_code"))
            self._send_json(200, {"ok": True})
        elif method == "POST" and path == "/_sim/faults":
            sim.add_fault(Fault(**data))
            self._send_json(200, {"ok": True})
        elif method == "POST" and path == "/_sim/callback-faults":
            sim.callback_faults = CallbackFaults(**data)
            self._send_json(200, {"ok": True})
        elif method == "DELETE" and path == "/_sim/faults":
            sim.clear_faults()
            self._send_json(200, {"ok": True})
        elif method == "POST" and path == "/_sim/inbound":
            result = sim.inbound(data["from"], data["to"], data["body"], data.get("messaging_service_sid"))
            self._send_json(200, result)
        elif method == "POST" and path == "/_sim/clock/advance":
            self._send_json(200, {"now": sim.clock.advance(float(data["seconds"])).isoformat()})
        elif method == "GET" and path == "/_sim/clock":
            self._send_json(200, {"now": sim.clock.now().isoformat(), "scale": sim.clock.scale})
        elif method == "POST" and path == "/_sim/config":
            for key in ("inbound_url", "latency_ms", "max_in_flight", "default_scenario"):
                if key in data:
                    setattr(sim.config, key, data[key])
            if "time_scale" in data:
                sim.clock.set_scale(float(data["time_scale"]))
            self._send_json(200, {"ok": True})
        elif method == "POST" and path == "/_sim/reset":
            sim.reset()
            self._send_json(200, {"ok": True})
        else:
            self._send_json(404, {"error": f"no control route {method} {path}"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sim: Simulator) -> None:
        super().__init__(address, _Handler)
        self.sim = sim


class TwilioSimulator:
    """The simulator as a server: `start()` in a thread for tests and the local stack."""

    def __init__(self, config: SimConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = Simulator(config)
        self._server = _Server((host, port), self.sim)
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    @property
    def base_url(self) -> str:
        """What the connector's TWILIO_BASE_URL should be."""
        return f"{self.origin}/{API_VERSION}"

    def start(self) -> TwilioSimulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="twilio-sim", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.sim.close()

    def __enter__(self) -> TwilioSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

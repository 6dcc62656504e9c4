import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from twilio.request_validator import RequestValidator

from chalicelib.adapters.writeback.json_format import sign
from chalicelib.domain.events import status_detail
from chalicelib.domain.ledger import MessageRecord
from chalicelib.domain.twilio_signature import compute_signature, is_valid
from chalicelib.domain.writeback import ForwardFailed
from chalicelib.usecases.tracking import keyword_of
from tests.fakes import make_forwarder


@pytest.mark.parametrize(
    ("body", "opt_out_type", "expected"),
    [
        ("STOP", None, "STOP"),
        ("  stop ", None, "STOP"),
        ("Unsubscribe", None, "STOP"),
        ("stopall", None, "STOP"),
        ("quit", None, "STOP"),
        ("revoke", None, "STOP"),
        ("optout", None, "STOP"),
        ("start", None, "START"),
        ("YES", None, "START"),
        ("unstop", None, "START"),
        ("help", None, "HELP"),
        ("info", None, "HELP"),
        ("please stop", None, None),  # keywords are single words
        ("Arrêtez", "STOP", "STOP"),  # Twilio's OptOutType wins for languages we do not parse
        ("thanks!", None, None),
    ],
)
def test_keywords(body, opt_out_type, expected):
    assert keyword_of(body, opt_out_type) == expected


class TestSignatures:
    URL = "https://hooks.example.com/api/twilio/status?mid=msg_1"
    PARAMS = (("MessageSid", "SM1"), ("MessageStatus", "delivered"), ("To", "+15551234567"), ("ErrorCode", ""))

    def test_our_signature_is_twilios(self):
        expected = RequestValidator("token").compute_signature(self.URL, dict(self.PARAMS))
        assert compute_signature(self.URL, self.PARAMS, "token") == expected

    def test_it_fails_closed(self):
        good = compute_signature(self.URL, self.PARAMS, "token")
        assert is_valid(self.URL, self.PARAMS, good, ["token"])
        assert not is_valid(self.URL, self.PARAMS, None, ["token"])
        assert not is_valid(self.URL, self.PARAMS, "", ["token"])
        assert not is_valid(self.URL, self.PARAMS, good, [None, ""])
        assert not is_valid(self.URL, self.PARAMS, good, ["other"])
        assert is_valid(self.URL, self.PARAMS, good, ["old", None, "token"])  # rotation: either token

    def test_the_default_port_is_optional_either_way(self):
        with_port = self.URL.replace("example.com", "example.com:443")
        assert is_valid(self.URL, self.PARAMS, compute_signature(with_port, self.PARAMS, "t"), ["t"])
        assert is_valid(with_port, self.PARAMS, compute_signature(self.URL, self.PARAMS, "t"), ["t"])


def test_status_events_carry_the_metadata_and_the_latest_change():
    record = MessageRecord(
        {
            "id": "m1",
            "status": "undelivered",
            "error_code": 30007,
            "to": "+15551234567",
            "from": "+15005550006",
            "metadata": {"campaign": "c"},
            "status_callback": "https://cdp.test/cb",
            "events": [
                {"status": "queued", "at": "t1", "source": "send"},
                {"status": "undelivered", "at": "t2", "source": "callback"},
            ],
        }
    )
    detail = status_detail(record)
    assert (detail["status"], detail["error_code"], detail["source"], detail["at"]) == (
        "undelivered",
        30007,
        "callback",
        "t2",
    )
    assert detail["metadata"] == {"campaign": "c"} and detail["status_callback"] == "https://cdp.test/cb"


class _Receiver:
    def __init__(self, status: int) -> None:
        self.received: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                outer.received.append({"headers": dict(self.headers), "body": body})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def test_forwarded_events_are_signed_with_the_connectors_key():
    receiver = _Receiver(204)
    try:
        make_forwarder(requests.Session(), "k3y", allow_local=True).forward(
            {"id": "m1", "status": "delivered", "status_callback": receiver.url}, now=1700000000
        )
        (got,) = receiver.received
        expected = "v1=" + hmac.new(b"k3y", f"1700000000.{got['body']}".encode(), hashlib.sha256).hexdigest()
        assert got["headers"]["X-Connector-Signature"] == expected == sign("k3y", "1700000000", got["body"])
        assert json.loads(got["body"]) == {"id": "m1", "status": "delivered"}
    finally:
        receiver.server.shutdown()


def test_a_refusing_receiver_makes_the_forward_fail_so_it_is_retried():
    receiver = _Receiver(500)
    try:
        with pytest.raises(ForwardFailed):
            make_forwarder(requests.Session(), "k", allow_local=True).forward(
                {"id": "m1", "status_callback": receiver.url}
            )
        with pytest.raises(ForwardFailed, match="callback_signing_key"):
            make_forwarder(requests.Session(), "").forward({"id": "m1", "status_callback": receiver.url})
    finally:
        receiver.server.shutdown()


@pytest.mark.parametrize(
    ("url", "resolves_to"),
    [
        ("http://169.254.169.254/latest/meta-data/", None),  # the instance metadata: link-local, and http
        ("https://169.254.169.254/latest/meta-data/", None),
        ("https://127.0.0.1/hook", None),
        ("https://[::1]/hook", None),
        ("https://10.0.0.5/hook", None),
        ("https://localhost/hook", None),
        ("https://cdp.example/hook", "10.1.2.3"),  # a public name that resolves to a private address
        ("https://cdp.example/hook", "169.254.169.254"),
    ],
)
def test_deployed_forwards_never_reach_internal_addresses(url, resolves_to):
    """The forward function runs inside the user's account: a request's status_callback must not make
    it call the metadata service or a private host, also not through DNS."""
    posted = []

    class Session:
        def post(self, *args, **kwargs):
            posted.append(args)

    forwarder = make_forwarder(Session(), "k", resolver=lambda host: [resolves_to or "93.184.216.34"])
    assert forwarder.forward({"id": "m1", "status": "delivered", "status_callback": url}) == 0
    assert posted == []


def test_a_public_https_callback_is_forwarded():
    posted = []

    class Session:
        def post(self, url, **kwargs):
            posted.append(url)
            return type("R", (), {"status_code": 204})()

    forwarder = make_forwarder(Session(), "k", resolver=lambda host: ["93.184.216.34"])
    assert forwarder.forward({"id": "m1", "status_callback": "https://cdp.example/hook"}) == 204
    assert posted == ["https://cdp.example/hook"]

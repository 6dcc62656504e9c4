"""An HTTP-level Twilio double on `responses`, so the real TwilioApi adapter is exercised.

It answers Messages create/fetch/list and Account fetch with Twilio's JSON shapes,
checks HTTP Basic credentials, and takes scripted faults for the next creates:
429, 500, a lost response after the message was created, read timeouts with and
without a message behind them, and refused connections. It records every create
so tests can assert that nothing was sent twice.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests
import responses
from urllib3.exceptions import NewConnectionError, ProtocolError

BASE_URL = "https://api.twilio.test/2010-04-01"
ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "stub-auth-token"


@dataclass
class StubMessage:
    sid: str
    to: str
    from_: str | None
    body: str
    messaging_service_sid: str | None
    date_created: datetime
    status: str
    media: list[str] = field(default_factory=list)
    form: list[tuple[str, str]] = field(default_factory=list)
    error_code: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": ACCOUNT_SID,
            "to": self.to,
            "from": self.from_,
            "body": self.body,
            "status": self.status,
            "messaging_service_sid": self.messaging_service_sid,
            "num_segments": "1",
            "num_media": str(len(self.media)),
            "direction": "outbound-api",
            "price": None,
            "price_unit": "USD",
            "error_code": self.error_code,
            "error_message": None,
            "date_created": format_datetime(self.date_created),
            "date_updated": format_datetime(self.date_created),
            "date_sent": None,
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{self.sid}.json",
        }


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> tuple[int, dict, str]:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body)


class TwilioStub:
    def __init__(self, mock: responses.RequestsMock) -> None:
        self.mock = mock
        self.messages: list[StubMessage] = []
        self.create_attempts = 0
        self.faults: deque[str] = deque()
        self.faults_by_recipient: dict[str, deque[str]] = {}
        self.barrier: threading.Barrier | None = None
        self.clock: datetime = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
        self.lock = threading.Lock()
        prefix = re.escape(BASE_URL)
        mock.add_callback(responses.POST, re.compile(prefix + r"/Accounts/(AC\w+)/Messages\.json$"), self._create)
        mock.add_callback(responses.GET, re.compile(prefix + r"/Accounts/(AC\w+)/Messages\.json(\?.*)?$"), self._list)
        mock.add_callback(responses.GET, re.compile(prefix + r"/Accounts/(AC\w+)/Messages/(\w+)\.json$"), self._fetch)
        mock.add_callback(responses.POST, re.compile(prefix + r"/Accounts/(AC\w+)/Messages/(\w+)\.json$"), self._update)

    # --- what tests look at --------------------------------------------------

    def creates_per_message(self) -> Counter[tuple[str, str]]:
        return Counter((m.to, m.body) for m in self.messages)

    def fail_next(self, *faults: str) -> None:
        """Faults for the next creates, whoever they are for."""
        self.faults.extend(faults)

    def fail_for(self, to: str, *faults: str) -> None:
        """Faults for the next creates to one recipient: deterministic inside a concurrent batch."""
        self.faults_by_recipient.setdefault(to, deque()).extend(faults)

    def add_existing(self, to: str, from_: str, body: str, age: timedelta) -> StubMessage:
        """A message Twilio already holds, e.g. one sent by an earlier campaign."""
        message = self._store([("To", to), ("From", from_), ("Body", body)], self.clock - age)
        return message

    # --- handlers ------------------------------------------------------------

    def _authorized(self, request: Any) -> bool:
        expected = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        return request.headers.get("Authorization") == expected

    def _store(self, form: list[tuple[str, str]], created: datetime) -> StubMessage:
        values = dict(form)
        with self.lock:
            message = StubMessage(
                sid="SM" + uuid.uuid4().hex,
                to=values["To"],
                from_=values.get("From"),
                body=values.get("Body", ""),
                messaging_service_sid=values.get("MessagingServiceSid"),
                date_created=created,
                status="scheduled"
                if values.get("SendAt")
                else "accepted"
                if values.get("MessagingServiceSid")
                else "queued",
                media=[v for k, v in form if k == "MediaUrl"],
                form=form,
            )
            self.messages.append(message)
        return message

    def _next_fault(self, to: str) -> str | None:
        with self.lock:
            self.create_attempts += 1
            queue = self.faults_by_recipient.get(to)
            if queue:
                return queue.popleft()
            return self.faults.popleft() if self.faults else None

    def _create(self, request: Any) -> tuple[int, dict, str]:
        form = parse_qsl(request.body or "", keep_blank_values=True)
        fault = self._next_fault(dict(form).get("To", ""))
        if self.barrier is not None:
            self.barrier.wait(timeout=10)
        if not self._authorized(request):
            return _error(401, 20003, "Authentication Error - invalid username")
        if fault == "429":
            return _error(429, 20429, "Too Many Requests", {"Retry-After": "0"})
        if fault == "500":
            return _error(500, 20500, "Internal Server Error")
        if fault == "timeout_not_created":
            raise requests.exceptions.ReadTimeout("read timed out")
        if fault == "refused":
            raise requests.exceptions.ConnectionError(NewConnectionError(None, "connection refused"))  # type: ignore[arg-type]
        if fault and fault.startswith("reject:"):
            code = int(fault.split(":")[1])
            return _error(400, code, f"rejected with {code}")
        message = self._store(form, self.clock)
        if fault == "lost":
            raise requests.exceptions.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError()))
        if fault == "timeout_created":
            raise requests.exceptions.ReadTimeout("read timed out")
        return 201, {"Content-Type": "application/json"}, json.dumps(message.to_json())

    def _list(self, request: Any) -> tuple[int, dict, str]:
        if not self._authorized(request):
            return _error(401, 20003, "Authentication Error - invalid username")
        query = dict(parse_qsl(urlsplit(request.url).query))
        with self.lock:
            found = [
                m
                for m in reversed(self.messages)
                if m.to == query.get("To", m.to) and m.from_ == query.get("From", m.from_)
            ]
        found.sort(key=lambda m: m.date_created, reverse=True)  # Twilio lists newest first
        size = int(query.get("PageSize", "50"))
        page = int(query.get("Page", "0"))
        chunk = found[page * size : (page + 1) * size]
        path = urlsplit(request.url).path
        next_uri = None
        if (page + 1) * size < len(found):
            next_uri = f"{path}?{urlencode({**query, 'Page': str(page + 1)})}"
        body = {"messages": [m.to_json() for m in chunk], "next_page_uri": next_uri, "page": page, "page_size": size}
        return 200, {"Content-Type": "application/json"}, json.dumps(body)

    def _fetch(self, request: Any) -> tuple[int, dict, str]:
        sid = urlsplit(request.url).path.rsplit("/", 1)[-1].removesuffix(".json")
        for message in self.messages:
            if message.sid == sid:
                return 200, {"Content-Type": "application/json"}, json.dumps(message.to_json())
        return _error(404, 20404, f"The requested resource {sid} was not found")

    def _update(self, request: Any) -> tuple[int, dict, str]:
        """Twilio's update: `Status=canceled` while scheduled, else 30409 (as the simulator answers)."""
        if not self._authorized(request):
            return _error(401, 20003, "Authentication Error - invalid username")
        sid = urlsplit(request.url).path.rsplit("/", 1)[-1].removesuffix(".json")
        form = dict(parse_qsl(request.body or "", keep_blank_values=True))
        for message in self.messages:
            if message.sid == sid:
                if form.get("Status") != "canceled" or message.status != "scheduled":
                    return _error(400, 30409, "This message cannot be canceled")
                message.status = "canceled"
                return 200, {"Content-Type": "application/json"}, json.dumps(message.to_json())
        return _error(404, 20404, f"The requested resource {sid} was not found")

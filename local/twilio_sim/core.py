"""The simulator's state: the account, messages and their status timelines, scenarios,
faults, opt-outs, callbacks and the clock. The HTTP layer (server.py) only translates.

Time is simulated: `SimClock` runs `time_scale` times faster than the wall clock and
can be advanced by hand, so a test can watch a message go queued → sent → delivered
in a fraction of a second.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import random
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import requests

from chalicelib.domain import rules
from chalicelib.domain.pacing import DEFAULT_VALIDITY_SECONDS, default_rate
from chalicelib.domain.twilio_signature import compute_signature

API_VERSION = "2010-04-01"
CALLBACK_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"

# Twilio's test-credential magic numbers.
MAGIC_FROM = {"+15005550001": 21212, "+15005550007": 21606, "+15005550008": 21611}
MAGIC_TO = {
    "+15005550001": 21211,
    "+15005550002": 21612,
    "+15005550003": 21408,
    "+15005550004": 21610,
    "+15005550009": 21614,
}

# Twilio's messages for the codes the simulator answers with (from its error dictionary).
ERROR_MESSAGES = {
    20003: "Authentication Error - invalid username",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20503: "Service unavailable",
    21211: "Invalid 'To' Phone Number",
    21212: "Invalid From Number (caller ID)",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To' number",
    21602: "Message body is required",
    21603: "A 'From' or 'MessagingServiceSid' parameter is required to send a message",
    21604: "The destination 'To' phone number is required to send an SMS",
    21606: "The 'From' phone number provided is not a valid message-capable Twilio phone number for this destination.",
    21609: "Invalid 'StatusCallback'",
    21610: "Attempt to send to unsubscribed recipient",
    21611: "This 'From' number has exceeded the maximum number of queued messages",
    21612: "The 'To' phone number is not currently reachable via SMS",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit",
    21620: "Invalid media URL(s)",
    21623: "Number of media files exceeds allowed limit",
    21624: "Invalid validity period value",
    21654: "ContentSid Required",
    21705: "The Messaging Service is invalid",
    35111: "SendAt timestamp is missing",
    35114: "Scheduling does not support this timestamp",
    35125: "Maximum limit reached in the account for scheduling messages",
    35118: "MessagingServiceSid is required to schedule a message",
    30001: "Queue overflow",
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
}

# name -> (steps after creation as (seconds, status), default error code)
# How Twilio's API words these errors: unlike its dictionary, it quotes the numbers (and so must never
# reach a log line unmasked).
REAL_WORDING = {
    21211: "The 'To' number {to} is not a valid phone number.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}.",
    21612: "The 'To' phone number: {to}, is not currently reachable using the 'From' phone number: {sender} via SMS.",
    21614: "To number: {to}, is not a mobile number",
}
SCENARIOS: dict[str, tuple[list[tuple[float, str]], int | None]] = {
    "delivered": ([(1, "sending"), (2, "sent"), (4, "delivered")], None),
    "undelivered": ([(1, "sending"), (2, "sent"), (4, "undelivered")], 30003),
    "failed": ([(1, "failed")], 30008),
    "stuck_sent": ([(1, "sending"), (2, "sent")], None),
    "slow_receipt": ([(1, "sending"), (2, "sent"), (120, "delivered")], None),
}
OPT_OUT_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
OPT_IN_WORDS = {"START", "YES", "UNSTOP"}
HELP_WORDS = {"HELP", "INFO"}
FAULT_KINDS = {"429", "500", "503", "reset", "lost", "latency"}


def default_sender_rate(sender: str, pool_size: int = 1) -> float | None:
    """Segments/s a sender drains (Twilio's published US defaults, the same table the connector paces by):
    long code 1, toll-free 3, short code 100, alphanumeric 1; a messaging service its pool's sum.
    Twilio's test numbers (+1500555…) queue nothing: None, unpaced."""
    if sender.startswith("MG"):
        return float(max(pool_size, 1))
    return default_rate(sender)


class TwilioApiError(Exception):
    def __init__(self, status: int, code: int, message: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message or ERROR_MESSAGES.get(code, "Error"))
        self.status = status
        self.code = code
        self.message = message or ERROR_MESSAGES.get(code, "Error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


class SimClock:
    """Simulated UTC time: `scale` simulated seconds pass per real second, plus manual advances."""

    def __init__(self, scale: float = 1.0, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._scale = scale
        self._real0 = time.monotonic()
        self._sim0 = start or datetime.now(UTC)
        self.changed = threading.Condition()

    def now(self) -> datetime:
        with self._lock:
            return self._sim0 + timedelta(seconds=(time.monotonic() - self._real0) * self._scale)

    @property
    def scale(self) -> float:
        return self._scale

    def set_scale(self, scale: float) -> None:
        with self._lock:
            self._sim0 += timedelta(seconds=(time.monotonic() - self._real0) * self._scale)
            self._real0 = time.monotonic()
            self._scale = scale
        self._notify()

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._sim0 += timedelta(seconds=seconds)
        self._notify()
        return self.now()

    def real_seconds_until(self, when: datetime) -> float:
        return max(0.0, (when - self.now()).total_seconds() / self._scale)

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()


@dataclass
class SimMessage:
    sid: str
    account_sid: str
    to: str
    from_: str | None
    body: str
    media: list[str]
    messaging_service_sid: str | None
    status_callback: str | None
    date_created: datetime
    timeline: list[tuple[datetime, str, int | None]]  # (when, status, error_code)
    direction: str = "outbound-api"
    num_segments: int = 1
    fetches: int = 0

    def state_at(self, now: datetime) -> tuple[str, int | None, datetime | None, datetime]:
        """Status, error code, date_sent and date_updated as of `now`."""
        status, code, sent_at, updated = self.timeline[0][1], None, None, self.date_created
        for when, step, step_code in self.timeline:
            if when > now:
                break
            status, code, updated = step, step_code, when
            if step == "sent":
                sent_at = when
        return status, code, sent_at, updated

    def to_json(self, now: datetime) -> dict[str, Any]:
        status, code, sent_at, updated = self.state_at(now)
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": format_datetime(self.date_created, usegmt=True),
            "date_sent": format_datetime(sent_at, usegmt=True) if sent_at else None,
            "date_updated": format_datetime(updated, usegmt=True),
            "direction": self.direction,
            "error_code": code,
            "error_message": ERROR_MESSAGES.get(code) if code else None,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": str(len(self.media)),
            "num_segments": str(self.num_segments),
            "price": "-0.00790" if status in ("sent", "delivered", "undelivered") else None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": status,
            "subresource_uris": {"media": f"{base}/Media.json", "feedback": f"{base}/Feedback.json"},
            "to": self.to,
            "uri": f"{base}.json",
        }


@dataclass
class Fault:
    kind: str
    op: str = "create"  # create | fetch | list | account | any
    count: int | None = 1  # None: until cleared (use with rate)
    rate: float | None = None
    to: str | None = None
    latency_ms: int = 0
    retry_after: int = 1

    def matches(self, op: str, to: str | None) -> bool:
        return (self.op in (op, "any")) and (self.to is None or self.to == to)


@dataclass
class CallbackFaults:
    duplicate: float = 0.0
    drop: float = 0.0
    reorder: float = 0.0


@dataclass
class CallbackRecord:
    url: str
    params: list[tuple[str, str]]
    signature: str
    status_code: int | None
    kind: str  # status | inbound
    attempt: int = 0  # 0 the first try, then Twilio's retries the URL's overrides ask for


@dataclass(frozen=True)
class Overrides:
    """Twilio's webhook connection overrides, read from the URL's fragment as Twilio documents them
    (twilio.com/docs/usage/webhooks/webhooks-connection-overrides): `rc` retries 0–5 (default 1), `rp` the
    failures retried, comma-separated 4xx, 5xx, ct (connect), rt (read) or all (default ct,rt), `tt` the
    milliseconds all tries may take, 100–15000 (default 15000). Without a fragment a 429 or 5xx answer is
    never retried. Twilio does not document the pause between tries: here, 1 s of its time times the try."""

    retries: int = 1
    policy: frozenset[str] = frozenset({"ct", "rt"})
    total_ms: int = 15_000

    @classmethod
    def of(cls, url: str) -> Overrides:
        _, _, fragment = url.partition("#")
        pairs = dict(pair.partition("=")[::2] for pair in fragment.split("&") if pair)
        default = cls()

        def number(key: str, low: int, high: int, fallback: int) -> int:
            raw = pairs.get(key, "")
            return min(high, max(low, int(raw))) if raw.isdigit() else fallback

        policy = frozenset(p.strip() for p in pairs["rp"].split(",")) if pairs.get("rp") else default.policy
        return cls(number("rc", 0, 5, default.retries), policy, number("tt", 100, 15_000, default.total_ms))

    def retried(self, status: int | None) -> bool:
        """Whether a try that ended so (None: no answer) is tried again."""
        if "all" in self.policy:
            return status is None or status >= 400
        if status is None:
            return bool(self.policy & {"ct", "rt"})
        return (400 <= status < 500 and "4xx" in self.policy) or (status >= 500 and "5xx" in self.policy)


@dataclass
class SimConfig:
    account_sid: str
    auth_token: str
    time_scale: float = 1.0
    default_scenario: str = "delivered"
    inbound_url: str | None = None
    latency_ms: int = 0
    max_in_flight: int | None = None  # concurrent REST requests per account; beyond: 429 / 20429
    sender_rates: dict[str, float] = field(default_factory=dict)  # segments/s, overriding the defaults
    seed: int | None = None
    service_numbers: list[str] = field(default_factory=lambda: ["+15005550006"])
    # Twilio keeps at most 500,000 scheduled messages per account at a time; past it a SendAt create is refused
    # with 35125 (twilio.com/docs/api/errors/35125)
    max_scheduled: int = 500_000


def _sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def new_account_sid() -> str:
    return "AC" + secrets.token_hex(16)


class Simulator:
    """Everything the fake Twilio knows, safe for concurrent requests."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.clock = SimClock(config.time_scale)
        self.lock = threading.RLock()
        self.rng = random.Random(config.seed)  # noqa: S311 - chooses simulated faults, not secrets
        self.messages: dict[str, SimMessage] = {}
        self.order: list[str] = []
        self.scenarios: dict[str, tuple[str, int | None]] = {}
        self.faults: list[Fault] = []
        self.callback_faults = CallbackFaults()
        self.opt_outs: set[tuple[str, str]] = set()  # (recipient, sender)
        self.callbacks: list[CallbackRecord] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.throttled = 0  # requests refused for the account's concurrency limit
        self.sender_free: dict[str, datetime] = {}  # when each sender's queue is empty again
        self.overflows: Counter[str] = Counter()  # messages failed 30001 per sender
        self.requests: Counter[str] = Counter()
        self._schedule: list[tuple[datetime, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._running = 0
        self._stopping = threading.Event()
        self._http = requests.Session()
        self._http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sim-callback")
        self._scheduler = threading.Thread(target=self._run_schedule, name="sim-scheduler", daemon=True)
        self._scheduler.start()

    def close(self) -> None:
        self._stopping.set()
        with self.clock.changed:
            self.clock.changed.notify_all()
        self._pool.shutdown(wait=True, cancel_futures=True)  # a callback under way finishes before the session goes
        self._http.close()

    # --- control ---------------------------------------------------------------

    def set_scenario(self, to: str, scenario: str, error_code: int | None = None) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; one of {sorted(SCENARIOS)}")
        with self.lock:
            self.scenarios[to] = (scenario, error_code)

    def add_fault(self, fault: Fault) -> None:
        if fault.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {fault.kind!r}; one of {sorted(FAULT_KINDS)}")
        with self.lock:
            self.faults.append(fault)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()
            self.callback_faults = CallbackFaults()

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
            self.order.clear()
            self.scenarios.clear()
            self.faults.clear()
            self.callback_faults = CallbackFaults()
            self.opt_outs.clear()
            self.callbacks.clear()
            self.requests.clear()
            self.sender_free.clear()
            self.overflows.clear()
            self.peak_in_flight = self.throttled = 0
            self._schedule.clear()

    def creates(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {
                    "sid": m.sid,
                    "to": m.to,
                    "from": m.from_,
                    "body": m.body,
                    "messaging_service_sid": m.messaging_service_sid,
                    "date_created": rules.iso(m.date_created),
                }
                for m in (self.messages[s] for s in self.order)
                if m.direction == "outbound-api"
            ]

    def create_counts(self) -> Counter[tuple[str, str]]:
        return Counter((c["to"], c["body"]) for c in self.creates())

    def truth(self, sid: str) -> dict[str, Any]:
        """A message's final status as its scenario decides it, whatever the clock says."""
        message = self.messages[sid]
        _, status, code = message.timeline[-1]
        return {"sid": sid, "final_status": status, "error_code": code, "fetches": message.fetches}

    def take_fault(self, op: str, to: str | None) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if not fault.matches(op, to):
                    continue
                if fault.rate is not None and self.rng.random() >= fault.rate:
                    continue
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    # --- the Messages API ------------------------------------------------------

    def authenticate(self, username: str | None, password: str | None, account_sid: str) -> None:
        if username != self.config.account_sid or password != self.config.auth_token:
            raise TwilioApiError(401, 20003)
        if account_sid != self.config.account_sid:
            raise TwilioApiError(404, 20404, f"The requested resource /Accounts/{account_sid} was not found")

    def create_message(self, form: list[tuple[str, str]]) -> SimMessage:
        values = dict(form)
        to = values.get("To", "").strip()
        sender = values.get("From") or None
        service = values.get("MessagingServiceSid") or None
        body = values.get("Body", "")
        media = [v for k, v in form if k == "MediaUrl"]
        self._validate(values, to, sender, service, body, media)
        now = self.clock.now()
        scenario, code = self._scenario_for(to)
        steps, default_code = SCENARIOS[scenario]
        first = "accepted" if service else "queued"
        send_at = values.get("SendAt")
        start = now
        timeline: list[tuple[datetime, str, int | None]] = [(now, first, None)]
        if send_at:
            start = datetime.fromisoformat(send_at.replace("Z", "+00:00"))
            timeline = [(now, "scheduled", None), (start, "queued", None)]
        elif service:
            timeline.append((now + timedelta(seconds=0.5), "queued", None))
        terminal_code = code if code is not None else default_code
        segments = rules.segment_info(body).num_segments
        sender_key = service or sender or ""
        wait = None if send_at else self._queue_wait(sender_key, segments, now, values.get("ValidityPeriod"))
        if wait is None or wait >= 0:
            start += timedelta(seconds=wait or 0)  # it waits in the sender's queue before Twilio sends it
            for offset, status in steps:
                step_code = terminal_code if status in ("undelivered", "failed") else None
                timeline.append((start + timedelta(seconds=offset), status, step_code))
        else:  # it would wait longer than its validity: Twilio fails it with 30001 when that runs out
            timeline.append((now + timedelta(seconds=-wait), "failed", 30001))
        message = SimMessage(
            sid=_sid("MM" if media else "SM"),
            account_sid=self.config.account_sid,
            to=to,
            from_=sender or (self._pool_number(to) if service else None),
            body=body,
            media=media,
            messaging_service_sid=service,
            status_callback=values.get("StatusCallback") or None,
            date_created=now,
            timeline=timeline,
            num_segments=segments,
        )
        with self.lock:
            self.messages[message.sid] = message
            self.order.append(message.sid)
        if message.status_callback:
            self._schedule_status_callbacks(message)
        return message

    def sender_rate(self, sender: str) -> float | None:
        configured = self.config.sender_rates.get(sender)
        return configured if configured is not None else default_sender_rate(sender, len(self.config.service_numbers))

    def _queue_wait(self, sender: str, segments: int, now: datetime, validity: str | None) -> float | None:
        """Seconds the message waits in the sender's queue (taking its place), or -validity when it would
        wait longer than its ValidityPeriod (it takes no place then); None for an unpaced sender."""
        rate = self.sender_rate(sender)
        if rate is None:
            return None
        limit = float(validity or DEFAULT_VALIDITY_SECONDS)
        with self.lock:
            free = max(self.sender_free.get(sender, now), now)
            wait = (free - now).total_seconds()
            if wait > limit:
                self.overflows[sender] += 1
                return -limit
            self.sender_free[sender] = free + timedelta(seconds=segments / rate)
            return wait

    def senders(self) -> dict[str, Any]:
        """Each paced sender's rate, backlog (seconds of queue) and overflows, as of now."""
        now = self.clock.now()
        with self.lock:
            names = set(self.sender_free) | set(self.config.sender_rates) | set(self.overflows)
            return {
                name: {
                    "rate": self.sender_rate(name),
                    "backlog_seconds": max(0.0, (self.sender_free.get(name, now) - now).total_seconds()),
                    "overflows": self.overflows[name],
                }
                for name in sorted(names)
            }

    def _pool_number(self, to: str) -> str:
        numbers = self.config.service_numbers
        return numbers[sum(to.encode()) % len(numbers)]

    def _scenario_for(self, to: str) -> tuple[str, int | None]:
        with self.lock:
            return self.scenarios.get(to, (self.config.default_scenario, None))

    def _validate(
        self, values: dict[str, str], to: str, sender: str | None, service: str | None, body: str, media: list[str]
    ) -> None:
        if not to:
            raise TwilioApiError(400, 21604)
        if to in MAGIC_TO:
            code = MAGIC_TO[to]
            raise TwilioApiError(400, code, REAL_WORDING.get(code, "").format(to=to, sender=sender) or None)
        if not rules.is_valid_recipient(to):
            raise TwilioApiError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not sender and not service:
            raise TwilioApiError(400, 21603)
        if sender in MAGIC_FROM:
            raise TwilioApiError(400, MAGIC_FROM[sender])
        if sender and not rules.is_valid_sender(sender):
            raise TwilioApiError(400, 21212, f"The 'From' number {sender} is not a valid phone number or shortcode.")
        if service and not rules.MESSAGING_SERVICE_SID.match(service):
            raise TwilioApiError(400, 21705)
        if not body and not media and not values.get("ContentSid"):
            raise TwilioApiError(400, 21602)
        if len(body) > 1600:
            raise TwilioApiError(400, 21617)
        if len(media) > 10:
            raise TwilioApiError(400, 21623)
        if any(not m.startswith(("http://", "https://")) for m in media):
            raise TwilioApiError(400, 21620)
        callback = values.get("StatusCallback")
        if callback and (not callback.startswith(("http://", "https://")) or len(callback) > 2048):
            raise TwilioApiError(400, 21609)
        if "ContentVariables" in values and "ContentSid" not in values:
            raise TwilioApiError(400, 21654)
        validity = values.get("ValidityPeriod")
        if validity is not None and not (validity.isdigit() and 1 <= int(validity) <= 36000):
            raise TwilioApiError(400, 21624)
        self._validate_schedule(values, service)
        with self.lock:
            blocked = (to, sender or "") in self.opt_outs or (to, service or "") in self.opt_outs
        if blocked:
            raise TwilioApiError(400, 21610)

    def _validate_schedule(self, values: dict[str, str], service: str | None) -> None:
        send_at, schedule = values.get("SendAt"), values.get("ScheduleType")
        if not send_at and not schedule:
            return
        if not send_at:
            raise TwilioApiError(400, 35111)
        if not service:
            raise TwilioApiError(400, 35118)
        try:
            when = datetime.fromisoformat(send_at.replace("Z", "+00:00"))
        except ValueError as exc:
            raise TwilioApiError(400, 35114) from exc
        ahead = (when - self.clock.now()).total_seconds()
        if schedule != "fixed" or not 300 < ahead <= 35 * 86400:
            raise TwilioApiError(400, 35114)
        now = self.clock.now()
        with self.lock:
            waiting = sum(
                1
                for m in self.messages.values()
                if m.timeline[0][1] == "scheduled" and m.state_at(now)[0] == "scheduled"
            )
        if waiting >= self.config.max_scheduled:
            raise TwilioApiError(400, 35125)

    def fetch_message(self, sid: str) -> SimMessage:
        with self.lock:
            message = self.messages.get(sid)
            if message is None:
                raise TwilioApiError(404, 20404, f"The requested resource /Messages/{sid}.json was not found")
            message.fetches += 1
            return message

    def update_message(self, sid: str, form: list[tuple[str, str]]) -> SimMessage:
        """Twilio's Message update: `Status=canceled` while scheduled (else 30409); `Body=` (empty) redacts
        a message in a final state."""
        values = dict(form)
        now = self.clock.now()
        with self.lock:
            message = self.messages.get(sid)
            if message is None:
                raise TwilioApiError(404, 20404, f"The requested resource /Messages/{sid}.json was not found")
            status = message.state_at(now)[0]
            if values.get("Status") == "canceled":
                if status != "scheduled":
                    raise TwilioApiError(400, 30409, "This message cannot be canceled")
                message.timeline = [*[t for t in message.timeline if t[0] <= now], (now, "canceled", None)]
                if message.status_callback:
                    params = self._callback_params(message, "canceled", None, now)
                    self.schedule(now, functools.partial(self._post, message.status_callback, params, "status"))
            elif "Body" in values:
                if values["Body"] or status not in ("delivered", "undelivered", "failed", "canceled", "received"):
                    raise TwilioApiError(400, 20001, "Body can only be redacted (set to empty) in a final state")
                message.body = ""
            else:
                raise TwilioApiError(400, 20001, "Give Status=canceled or Body= (empty)")
            return message

    def list_messages(self, query: dict[str, str]) -> list[SimMessage]:
        now = self.clock.now()
        with self.lock:
            found = [self.messages[s] for s in reversed(self.order)]
        if "To" in query:
            found = [m for m in found if m.to == query["To"]]
        if "From" in query:
            found = [m for m in found if m.from_ == query["From"]]
        filters: list[Callable[[date], bool]] = []
        for key, test in (
            ("DateSent", lambda d, v: d == v),
            ("DateSent<", lambda d, v: d <= v),
            ("DateSent>", lambda d, v: d >= v),
        ):
            if key in query:
                day = date.fromisoformat(query[key][:10])
                filters.append(lambda d, test=test, day=day: test(d, day))  # type: ignore[misc]
        if filters:
            kept = []
            for message in found:
                sent_at = message.state_at(now)[2]
                if sent_at is not None and all(f(sent_at.date()) for f in filters):
                    kept.append(message)
            found = kept
        found.sort(key=lambda m: m.date_created, reverse=True)
        return found

    # --- inbound and opt-outs --------------------------------------------------

    def inbound(self, from_: str, to: str, body: str, messaging_service_sid: str | None = None) -> dict[str, Any]:
        """A user replies: record the message, apply Twilio's opt-out keywords, post the webhook."""
        now = self.clock.now()
        word = body.strip().upper()
        opt_out_type = None
        with self.lock:
            for sender in filter(None, (to, messaging_service_sid)):
                if word in OPT_OUT_WORDS:
                    self.opt_outs.add((from_, sender))
                elif word in OPT_IN_WORDS:
                    self.opt_outs.discard((from_, sender))
        if word in OPT_OUT_WORDS:
            opt_out_type = "STOP"
        elif word in OPT_IN_WORDS:
            opt_out_type = "START"
        elif word in HELP_WORDS:
            opt_out_type = "HELP"
        message = SimMessage(
            sid=_sid("SM"),
            account_sid=self.config.account_sid,
            to=to,
            from_=from_,
            body=body,
            media=[],
            messaging_service_sid=messaging_service_sid,
            status_callback=None,
            date_created=now,
            timeline=[(now, "received", None)],
            direction="inbound",
        )
        with self.lock:
            self.messages[message.sid] = message
            self.order.append(message.sid)
        # Twilio's whole incoming-message form (twilio.com/docs/messaging/guides/webhook-request): the
        # geographic fields come even when Twilio knows nothing of them, then empty.
        params = [
            ("ToCountry", "US"),
            ("ToState", "CA"),
            ("SmsMessageSid", message.sid),
            ("NumMedia", "0"),
            ("ToCity", ""),
            ("FromZip", ""),
            ("SmsSid", message.sid),
            ("FromState", "NY" if from_.startswith("+1") else ""),
            ("SmsStatus", "received"),
            ("FromCity", ""),
            ("Body", body),
            ("FromCountry", "US" if from_.startswith("+1") else ""),
            ("To", to),
            ("ToZip", ""),
            ("NumSegments", "1"),
            ("MessageSid", message.sid),
            ("AccountSid", self.config.account_sid),
            ("From", from_),
            ("ApiVersion", API_VERSION),
        ]
        if messaging_service_sid:
            params.append(("MessagingServiceSid", messaging_service_sid))
        if opt_out_type:
            params.append(("OptOutType", opt_out_type))
        status_code = None
        if self.config.inbound_url:
            status_code = self._post(self.config.inbound_url, params, "inbound")
        return {"sid": message.sid, "opt_out_type": opt_out_type, "webhook_status": status_code}

    # --- status callbacks ------------------------------------------------------

    def _callback_params(
        self, message: SimMessage, status: str, code: int | None, when: datetime
    ) -> list[tuple[str, str]]:
        params = [
            ("SmsSid", message.sid),
            ("SmsStatus", status),
            ("MessageStatus", status),
            ("To", message.to),
            ("MessageSid", message.sid),
            ("AccountSid", message.account_sid),
            ("From", message.from_ or ""),
            ("ApiVersion", API_VERSION),
        ]
        if message.messaging_service_sid:
            params.append(("MessagingServiceSid", message.messaging_service_sid))
        if code is not None:
            params.append(("ErrorCode", str(code)))
        if status in ("delivered", "undelivered"):
            params.append(("RawDlrDoneDate", when.strftime("%y%m%d%H%M")))
        return params

    def _schedule_status_callbacks(self, message: SimMessage) -> None:
        url = message.status_callback
        assert url is not None
        steps = message.timeline[1:]
        with self.lock:
            faults = self.callback_faults
            reorder = len(steps) >= 2 and self.rng.random() < faults.reorder
            decisions = [(self.rng.random() < faults.drop, self.rng.random() < faults.duplicate) for _ in steps]
        times = [when for when, _, _ in steps]
        if reorder:  # the last two callbacks arrive swapped
            times[-1], times[-2] = times[-2], times[-1] - timedelta(milliseconds=1)
        for (when, status, code), due, (drop, duplicate) in zip(steps, times, decisions, strict=True):
            if drop:
                continue
            params = self._callback_params(message, status, code, when)
            for extra in range(2 if duplicate else 1):
                post = functools.partial(self._post_if_current, message, (when, status, code), url, params)
                self.schedule(due + timedelta(milliseconds=5 * extra), post)

    def _post_if_current(
        self, message: SimMessage, step: tuple[datetime, str, int | None], url: str, params: list[tuple[str, str]]
    ) -> int | None:
        """A step a cancel removed from the timeline is never reported."""
        return self._post(url, params, "status") if step in message.timeline else None

    def _post(
        self, url: str, params: list[tuple[str, str]], kind: str, attempt: int = 0, started: datetime | None = None
    ) -> int | None:
        """One try of a callback; the retry its URL's connection overrides ask for is scheduled, not waited."""
        overrides = Overrides.of(url)
        started = started or self.clock.now()
        status = self._try_post(url, params, kind, attempt)
        retry_at = self.clock.now() + timedelta(seconds=attempt + 1)
        within = retry_at - started <= timedelta(milliseconds=overrides.total_ms)
        if attempt < overrides.retries and overrides.retried(status) and within and not self._stopping.is_set():
            self.schedule(retry_at, functools.partial(self._post, url, params, kind, attempt + 1, started))
        return status

    def _try_post(self, url: str, params: list[tuple[str, str]], kind: str, attempt: int) -> int | None:
        url = url.partition("#")[0]  # a fragment is Twilio's to read; no request carries it
        signature = compute_signature(url, params, self.config.auth_token)
        headers = {
            "X-Twilio-Signature": signature,
            "Content-Type": CALLBACK_CONTENT_TYPE,
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        }
        try:
            response = self._http.post(url, data=params, headers=headers, timeout=15)
            status: int | None = response.status_code
        except requests.RequestException:
            status = None
        with self.lock:
            self.callbacks.append(CallbackRecord(url, params, signature, status, kind, attempt))
        return status

    # --- the scheduler ---------------------------------------------------------

    def schedule(self, due: datetime, job: Callable[[], Any]) -> None:
        with self.lock:
            heapq.heappush(self._schedule, (due, next(self._seq), job))
        with self.clock.changed:
            self.clock.changed.notify_all()

    def _run_schedule(self) -> None:
        while not self._stopping.is_set():
            with self.lock:
                head = self._schedule[0] if self._schedule else None
            wait = 0.5 if head is None else self.clock.real_seconds_until(head[0])
            if wait > 0:
                with self.clock.changed:
                    self.clock.changed.wait(timeout=min(wait, 0.5))
                continue
            with self.lock:
                if not self._schedule or self._schedule[0] is not head:
                    continue
                heapq.heappop(self._schedule)
            if head is not None:
                with self.lock:
                    self._running += 1
                try:
                    self._pool.submit(self._run_job, head[2])
                except RuntimeError:
                    return  # shutting down

    def _run_job(self, job: Callable[[], Any]) -> None:
        try:
            job()
        finally:
            with self.lock:
                self._running -= 1

    def pending_jobs(self) -> int:
        """Callbacks scheduled or being delivered."""
        with self.lock:
            return len(self._schedule) + self._running

"""Guardrails a connection may set (README, "Guardrails"): quiet hours in the recipient's time, frequency caps,
a spend guard and its own Twilio error policy. All off unless configured; pure rules, no I/O — the time-zone
data is looked up by domain/timezones.py, and only when quiet hours are set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from chalicelib.domain import rules
from chalicelib.domain.errors import ValidationError

OVER_CAP = ("refuse", "hold")
HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])\Z")
FIELDS = {"quiet_hours", "frequency", "max_segments", "smart_encoded", "daily_segments", "error_policy"}

# Twilio's Smart Encoding list (twilio.com/docs/messaging/services/smart-encoding-char-list): the characters
# templates pick up from word processors. A subset; what is not here is counted as Twilio's UCS-2 would be.
SMART_ENCODING = str.maketrans(
    {
        **dict.fromkeys("«»“”ʺˮ‟❝❞〝〞＂", '"'),
        **dict.fromkeys("‘’ʻˈʼʽʹ‛＇´ˊ`ˋ❛❜", "'"),
        **dict.fromkeys("‐‑‒–—―⁃", "-"),
        **dict.fromkeys("\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f", " "),
        "…": "...",
        "\u200b": "",
        "\u2060": "",
        "\ufeff": "",
    }
)


def _zone(name: str) -> Any:
    from zoneinfo import ZoneInfo  # here: a deployment without quiet hours never loads it

    return ZoneInfo(name)


@dataclass(frozen=True)
class QuietHours:
    start: time  # the window in which marketing may land, recipient-local (e.g. 08:00-21:00)
    end: time
    fallback_zone: str = "UTC"  # for a number whose zone the data does not know

    def allows(self, moment: datetime, zone: str) -> bool:
        local = moment.astimezone(_zone(zone)).time()
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # a window across midnight

    def _openings(self, now: datetime, zone: str) -> Iterable[datetime]:
        tz = _zone(zone)
        day = now.astimezone(tz).date()
        for offset in range(0, 3):
            yield datetime.combine(day + timedelta(days=offset), self.start, tz).astimezone(UTC)

    def next_allowed(self, now: datetime, zones: Iterable[str]) -> datetime | None:
        """When a message may land in every one of the number's zones (the strictest): None if now; the
        connection's fallback zone alone when the zones share no moment in the next two days."""
        zones = tuple(zones) or (self.fallback_zone,)
        for attempt in (zones, (self.fallback_zone,)):
            candidates = sorted({now, *(o for z in attempt for o in self._openings(now, z) if o > now)})
            for moment in candidates:
                if all(self.allows(moment, z) for z in attempt):
                    return None if moment == now else moment
        return None


@dataclass(frozen=True)
class FrequencyCap:
    per_day: int | None = None  # messages per recipient per UTC day on this connection
    per_week: int | None = None  # per ISO week (UTC)
    over: str = "refuse"  # refuse | hold (until the next UTC day)


@dataclass(frozen=True)
class ErrorPolicy:
    """How this connection treats Twilio's error codes at create; None: the connector's defaults (rules.py)."""

    permanent: frozenset[int] = frozenset()  # recorded as `error`, never retried
    retry: frozenset[int] = frozenset()  # put back on the queue and tried again
    retry_attempts: int = 3
    retry_interval_seconds: int = 300
    opt_out: frozenset[int] | None = None  # codes that opt the recipient out (default: rules.OPT_OUT_CODES)

    def is_retryable(self, http_status: int, code: int | None) -> bool:
        if code in self.permanent:
            return False
        if code in self.retry:
            return True
        return rules.is_retryable(http_status, code)

    def opts_out(self, code: int | None) -> bool:
        return code in (rules.OPT_OUT_CODES if self.opt_out is None else self.opt_out)


@dataclass(frozen=True)
class Guardrails:
    quiet_hours: QuietHours | None = None
    frequency: FrequencyCap | None = None
    max_segments: int | None = None
    smart_encoded: bool = False  # ask Twilio for SmartEncoded, and count segments as it will send them
    daily_segments: int | None = None  # the connection's segment budget per UTC day
    error_policy: ErrorPolicy = field(default_factory=ErrorPolicy)

    @property
    def holds(self) -> bool:
        """Whether any guardrail may hold a message (the release function has work)."""
        held_by_cap = self.frequency is not None and self.frequency.over == "hold"
        return self.quiet_hours is not None or held_by_cap or self.daily_segments is not None


NONE = Guardrails()


def smart_encode(body: str) -> str:
    return body.translate(SMART_ENCODING)


def segments_refusal(body: str, limit: int) -> str | None:
    """Why a body is over a connection's max_segments, naming the encoding and what caused it."""
    info = rules.segment_info(body)
    if info.num_segments <= limit:
        return None
    cause = ""
    if info.encoding == "UCS-2":
        at, char = next((i, c) for i, c in enumerate(body) if c not in rules.GSM7_BASIC | rules.GSM7_EXTENDED)
        fix = "" if smart_encode(char) == char else "; `smart_encoded: true` sends it as GSM-7"
        cause = f" because of {char!r} (U+{ord(char):04X}) at position {at + 1}{fix}"
    return f"the body is {info.num_segments} segments in {info.encoding}{cause}; this connection allows at most {limit}"


def week_of(moment: datetime) -> str:
    year, week, _ = moment.astimezone(UTC).isocalendar()
    return f"{year}-W{week:02d}"


def next_day(moment: datetime) -> datetime:
    start = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start + timedelta(days=1)


# --- parsing: a connection's `guardrails` (PUT /connections, TWILIO_CONNECTIONS, TWILIO_GUARDRAILS) ---------


def _int(spec: Mapping[str, Any], name: str, path: str, low: int, high: int) -> int | None:
    value = spec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{path}.{name}", f"`{path}.{name}` must be an integer from {low} to {high}")
    return value


def _object(value: Any, path: str, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(path, f"`{path}` must be an object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValidationError(f"{path}.{unknown[0]}", f"unknown field `{path}.{unknown[0]}`")
    return value


def _clock(spec: Mapping[str, Any], name: str, path: str) -> time:
    value = spec.get(name)
    match = HHMM.match(value) if isinstance(value, str) else None
    if not match:
        raise ValidationError(f"{path}.{name}", f"`{path}.{name}` must be a time as HH:MM (24-hour), e.g. 08:00")
    return time(int(match[1]), int(match[2]))


def _codes(spec: Mapping[str, Any], name: str, path: str) -> frozenset[int] | None:
    value = spec.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) and 10000 <= c <= 999999 for c in value
    ):
        raise ValidationError(f"{path}.{name}", f"`{path}.{name}` must be a list of Twilio error codes (integers)")
    return frozenset(value)


def parse_guardrails(value: Any, path: str = "guardrails") -> Guardrails | None:
    """A connection's guardrails from JSON (None: none set); every failure names the field and the rule."""
    if value is None:
        return None
    spec = _object(value, path, FIELDS)
    quiet = None
    if spec.get("quiet_hours") is not None:
        qpath = f"{path}.quiet_hours"
        q = _object(spec["quiet_hours"], qpath, {"start", "end", "fallback_zone"})
        start, end = _clock(q, "start", qpath), _clock(q, "end", qpath)
        if start == end:
            raise ValidationError(f"{qpath}.end", f"`{qpath}` must not start and end at the same time")
        zone = q.get("fallback_zone", "UTC")
        try:
            _zone(zone)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValidationError(f"{qpath}.fallback_zone", f"`{qpath}.fallback_zone` must be an IANA zone") from exc
        quiet = QuietHours(start, end, zone)
    frequency = None
    if spec.get("frequency") is not None:
        fpath = f"{path}.frequency"
        f = _object(spec["frequency"], fpath, {"per_day", "per_week", "over"})
        per_day, per_week = _int(f, "per_day", fpath, 1, 1000), _int(f, "per_week", fpath, 1, 7000)
        if per_day is None and per_week is None:
            raise ValidationError(fpath, f"`{fpath}` needs `per_day`, `per_week` or both")
        over = f.get("over", "refuse")
        if over not in OVER_CAP:
            raise ValidationError(f"{fpath}.over", f"`{fpath}.over` must be one of: {', '.join(OVER_CAP)}")
        frequency = FrequencyCap(per_day, per_week, over)
    smart = spec.get("smart_encoded", False)
    if not isinstance(smart, bool):
        raise ValidationError(f"{path}.smart_encoded", f"`{path}.smart_encoded` must be true or false")
    policy = ErrorPolicy()
    if spec.get("error_policy") is not None:
        epath = f"{path}.error_policy"
        allowed = {"permanent", "retry", "retry_attempts", "retry_interval_seconds", "opt_out"}
        e = _object(spec["error_policy"], epath, allowed)
        permanent, retry = _codes(e, "permanent", epath) or frozenset(), _codes(e, "retry", epath) or frozenset()
        both = sorted(permanent & retry)
        if both:
            raise ValidationError(f"{epath}.retry", f"code {both[0]} is both permanent and retried")
        policy = ErrorPolicy(
            permanent,
            retry,
            _int(e, "retry_attempts", epath, 1, 20) or 3,
            _int(e, "retry_interval_seconds", epath, 1, 900) or 300,
            _codes(e, "opt_out", epath),
        )
    found = Guardrails(
        quiet_hours=quiet,
        frequency=frequency,
        max_segments=_int(spec, "max_segments", path, 1, 10),
        smart_encoded=smart,
        daily_segments=_int(spec, "daily_segments", path, 1, 100_000_000),
        error_policy=policy,
    )
    return None if found == NONE else found


def describe_guardrails(g: Guardrails | None) -> dict[str, Any] | None:
    """A connection's guardrails as the API shows them (the shape parse_guardrails reads); None: none set."""
    if g is None or g == NONE:
        return None
    out: dict[str, Any] = {"smart_encoded": g.smart_encoded}
    if g.quiet_hours:
        q = g.quiet_hours
        out["quiet_hours"] = {
            "start": q.start.strftime("%H:%M"),
            "end": q.end.strftime("%H:%M"),
            "fallback_zone": q.fallback_zone,
        }
    if g.frequency:
        f = g.frequency
        out["frequency"] = {k: v for k, v in (("per_day", f.per_day), ("per_week", f.per_week)) if v} | {"over": f.over}
    out |= {k: v for k, v in (("max_segments", g.max_segments), ("daily_segments", g.daily_segments)) if v}
    if g.error_policy != ErrorPolicy():
        e = g.error_policy
        out["error_policy"] = {
            "permanent": sorted(e.permanent),
            "retry": sorted(e.retry),
            "retry_attempts": e.retry_attempts,
            "retry_interval_seconds": e.retry_interval_seconds,
            **({"opt_out": sorted(e.opt_out)} if e.opt_out is not None else {}),
        }
    return out

"""The guardrails at the send (README, "Guardrails"): whether a message goes now, goes scheduled at Twilio,
waits (held) or is refused. Imported only for a connection that sets guardrails (usecases/send.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from chalicelib.domain.connection import ConnectionSettings
from chalicelib.domain.guard_ports import GuardStore
from chalicelib.domain.guardrails import next_day
from chalicelib.domain.models import SCHEDULE_MAX, SCHEDULE_MIN, OutboundMessage
from chalicelib.domain.rules import ConnectorCode
from chalicelib.observability import metrics


@dataclass(frozen=True)
class Verdict:
    action: str  # send | hold | refuse
    until: datetime | None = None  # hold: when it is released; send: Twilio's SendAt (quiet hours)
    reason: str = ""  # quiet_hours | frequency | budget
    status: str = ""  # hold: the record's status, `scheduled` (a time) or `held`
    code: int = 0  # refuse
    text: str = ""


SEND = Verdict("send")
# Twilio's scheduler refuses a SendAt too near (35114/35115: > 300 s from when Twilio receives it) or an account
# holding 500,000 scheduled messages (35125): the connector then holds the message itself
TWILIO_WONT_SCHEDULE = frozenset({35114, 35115, 35125})
SCHEDULE_MARGIN = timedelta(seconds=60)  # the request's own way to Twilio, off Twilio's 300 s


def check(store: GuardStore | None, msg: OutboundMessage, message_id: str, token: str,
          connection: ConnectionSettings, now: datetime) -> Verdict:  # fmt: skip
    g = connection.guardrails
    if g is None or store is None:
        return SEND
    marketing = msg.category != "transactional"  # unmarked traffic is treated as marketing: the safe side
    send_at = None
    if g.quiet_hours is not None and marketing:
        from chalicelib.domain.timezones import zones_for  # only where quiet hours are set: off the cold start

        at = msg.send_at or now
        opens = g.quiet_hours.next_allowed(at, zones_for(msg.to))
        if opens is not None:
            metrics.add_metric(name="HeldForQuietHours", unit="Count", value=1)
            if msg.messaging_service_sid and SCHEDULE_MIN + SCHEDULE_MARGIN < opens - now <= SCHEDULE_MAX:
                send_at = opens  # Twilio holds it: scheduled at Twilio, sent by Twilio at the time
            else:
                return Verdict("hold", opens, "quiet_hours", "scheduled")
    if g.frequency is not None and marketing:
        over = store.count_recipient(connection.name, msg.to, message_id, g.frequency, now)
        if over:
            metrics.add_metric(name="FrequencyCapped", unit="Count", value=1)
            limit = getattr(g.frequency, over)
            if g.frequency.over == "hold":
                return Verdict("hold", next_day(now), "frequency", "held")
            text = (
                f"the recipient is over this connection's cap of {limit} messages {over.replace('_', ' ')} "
                f"(guardrails.frequency.{over}); send it as `category: transactional` if it is not marketing"
            )
            return Verdict("refuse", reason="frequency", code=ConnectorCode.FREQUENCY_CAPPED, text=text)
    if g.daily_segments is not None and not store.charge(
        connection.name, message_id, token, msg.num_segments, g.daily_segments, now
    ):
        metrics.add_metric(name="SegmentBudgetExhausted", unit="Count", value=1)
        return Verdict("hold", next_day(now), "budget", "held")
    return Verdict("send", until=send_at)

"""The one Logger and Metrics of the connector.

Log lines carry message ids and masked phone numbers (rules.mask_phone), never a full number, a body
or a secret. Text from elsewhere can hold a number ("The 'To' number +33612345678 is not a valid
phone number", as Twilio words it), so a filter masks anything number-like in every log line.
Tracing is left out: the X-Ray SDK would cost cold-start time on every invocation.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from traceback import extract_tb

from aws_lambda_powertools import Logger, Metrics

# One service per stage (`twilio-connector-<stage>`, set in .chalice/config.json): stages share no metrics.
SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "twilio-connector"
# E.164 (+ and 8-15 digits, as Twilio quotes them) and bare runs of 10-15 digits (a number that lost its +).
PHONE_LIKE = re.compile(r"(?<![\w+])\+\d{7,15}(?!\d)|(?<![\w+.:/-])\d{10,15}(?![\w.:/-])")


def mask_numbers(text: str) -> str:
    """Every phone-number-like run in `text` cut to its last four digits."""
    return PHONE_LIKE.sub(lambda m: ("+" if m.group().startswith("+") else "") + "***" + m.group()[-4:], text)


class _MaskNumbers(logging.Filter):
    _standard = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_numbers(record.msg)
        if record.args:
            record.args = tuple(mask_numbers(a) if isinstance(a, str) else a for a in record.args)
        for name, value in list(record.__dict__.items()):
            if name not in self._standard and isinstance(value, str):
                setattr(record, name, mask_numbers(value))
        return True


logger = Logger(service=SERVICE)
logger.addFilter(_MaskNumbers())
metrics = Metrics(namespace="TwilioConnector", service=SERVICE)


def where(exc: BaseException, last: int = 5) -> list[str]:
    """Where an exception happened, as `file:line function` for its last frames: what a log may say of
    a bug, since its message may hold a phone number or a secret."""
    return [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in extract_tb(exc.__traceback__)][-last:]


_flushing = threading.Lock()


def flush_metrics() -> None:
    """Publish what this invocation counted (one EMF line on stdout); nothing if it counted nothing. One flush
    at a time: Powertools checks the set is not empty, then serializes it, and a flush between the two (the
    local stack runs several functions in one process) would make this one raise and fail its handler."""
    with _flushing:
        if metrics.metric_set:
            metrics.flush_metrics()

"""The one Logger and Metrics of the connector.

Log lines carry message ids and masked phone numbers (rules.mask_phone), never a
full number, a body or a secret. Tracing is left out: the X-Ray SDK would cost
cold-start time on every invocation (DESIGN §6).
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

SERVICE = "twilio-connector"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace="TwilioConnector", service=SERVICE)


def flush_metrics() -> None:
    """Publish what this invocation counted (one EMF line on stdout); nothing if it counted nothing."""
    if metrics.metric_set:
        metrics.flush_metrics()

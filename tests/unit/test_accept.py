"""The accept use case with its ports in memory: each request its own outcome, and nothing lost
between the ledger and the queue."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from chalicelib.adapters.twilio_api import TwilioApi
from chalicelib.domain.connection import pick
from chalicelib.domain.polling import PollPlan
from chalicelib.domain.twilio import TwilioCredentials
from chalicelib.settings import load_settings
from chalicelib.usecases.accept import Accepted, AcceptMessages, AlreadyAccepted, Failed, Refused, Unavailable
from chalicelib.usecases.send import SendService
from tests import must
from tests.fakes import InMemoryLedger, InMemoryOptOuts, InMemoryTemplates, StaticCredentials

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
TO = "+15551234567"


class Queue:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.sent: list[tuple[str, Mapping[str, Any]]] = []

    def send(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> set[str]:
        if self.refuse:
            return {message_id for message_id, _ in items}
        self.sent += items
        return set()


def accepting(queue: Queue) -> tuple[AcceptMessages, InMemoryLedger]:
    settings = load_settings({"TWILIO_SECRET_ID": "s", "TWILIO_DEFAULT_FROM": "+15005550006"})
    ledger = InMemoryLedger()
    unused = TwilioApi("https://api.twilio.test")  # accepting never calls Twilio
    creds = StaticCredentials(TwilioCredentials("AC" + "0" * 32, "t"))
    service = SendService(settings, ledger, InMemoryOptOuts(), InMemoryTemplates(), unused, creds)
    return AcceptMessages(service.validation, ledger, queue, lambda: NOW), ledger


def test_each_request_gets_its_own_outcome_and_the_valid_ones_are_queued_as_posted() -> None:
    queue = Queue()
    use_case, ledger = accepting(queue)
    outcomes = use_case.accept([{"to": TO, "body": "a"}, {"to": "nope", "body": "b"}, {"to": TO, "body": "c"}])
    assert [type(o) for o in outcomes] == [Accepted, Refused, Accepted]
    assert isinstance(outcomes[1], Refused) and (outcomes[1].status, outcomes[1].field) == (400, "to")
    assert [raw for _, raw in queue.sent] == [{"to": TO, "body": "a"}, {"to": TO, "body": "c"}]
    assert all((r := ledger.get(message_id)) and r.status == "pending" for message_id, _ in queue.sent)


def test_a_key_is_one_request_the_same_again_is_already_accepted_a_different_one_is_refused() -> None:
    use_case, _ = accepting(Queue())
    (first,) = use_case.accept([{"to": TO, "body": "hi"}], "k1")
    (again,) = use_case.accept([{"body": "hi", "to": TO}], "k1")
    (other,) = use_case.accept([{"to": TO, "body": "bye"}], "k1")
    assert isinstance(first, Accepted) and isinstance(again, AlreadyAccepted) and again.message_id == first.message_id
    assert isinstance(other, Refused) and (other.status, other.code) == (409, "idempotency_key_reused")


def test_a_queue_outage_is_unavailable_and_the_same_key_later_enqueues_it() -> None:
    down = Queue(refuse=True)
    use_case, _ = accepting(down)
    (outcome,) = use_case.accept([{"to": TO, "body": "hi"}], "k2")
    assert isinstance(outcome, Unavailable) and outcome.code == "queue_unavailable"
    use_case.queue = up = Queue()
    (retried,) = use_case.accept([{"to": TO, "body": "hi"}], "k2")
    assert isinstance(retried, Accepted) and len(up.sent) == 1


def test_a_bug_on_one_request_is_that_requests_failure() -> None:
    use_case, _ = accepting(Queue())
    prepare = use_case.validation.prepare

    def breaks_on_b(raw: Any, now: datetime) -> Any:
        if raw["body"] == "b":
            raise KeyError("a bug")
        return prepare(raw, now)

    setattr(use_case.validation, "prepare", breaks_on_b)  # noqa: B010 - replacing a bound method
    outcomes = use_case.accept([{"to": TO, "body": "a"}, {"to": TO, "body": "b"}])
    assert isinstance(outcomes[0], Accepted) and isinstance(outcomes[1], Failed)


def test_a_deploy_time_connection_takes_a_managed_ones_settings_and_its_write_back_is_recorded() -> None:
    """Infrastructure-as-code users set in TWILIO_CONNECTIONS what the API sets on a managed connection."""
    import json as json_

    write_back = {"format": "tealium", "options": {"account": "a"}, "attributes": {"customer_id": "crm_id"}}
    spec = {"secret_id": "twilio-connector-prod/twilio/eu", "from_numbers": ["+15005550006"], "retry_attempts": 2,
            "retry_interval_ms": 4000, "write_back": write_back, "default": True}  # fmt: skip
    settings = load_settings({"TWILIO_SECRET_ID": "s", "TWILIO_CONNECTIONS": json_.dumps({"eu": spec})})
    connection = pick(settings.connections, None)  # marked default
    assert connection is not None and connection.name == "eu" and settings.poll_plan(connection) == PollPlan(4000, 2)
    assert connection.write_back is not None and connection.write_back.attributes == {"customer_id": "crm_id"}
    ledger = InMemoryLedger()
    creds = StaticCredentials(TwilioCredentials("AC" + "0" * 32, "t"))
    unused = TwilioApi("https://api.twilio.test")
    service = SendService(settings, ledger, InMemoryOptOuts(), InMemoryTemplates(), unused, creds)
    use_case = AcceptMessages(service.validation, ledger, Queue(), lambda: NOW)
    (outcome,) = use_case.accept([{"to": TO, "body": "hi"}])
    assert isinstance(outcome, Accepted)
    record = ledger.get(outcome.message_id)
    assert record is not None and (record.connection, record.item["write_back"]) == ("eu", "tealium")
    (overridden,) = use_case.accept([{"to": TO, "body": "hi", "write_back": "none"}])
    assert isinstance(overridden, Accepted)
    assert "write_back" not in must(ledger.get(overridden.message_id)).item

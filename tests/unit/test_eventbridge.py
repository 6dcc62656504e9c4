"""Status events to EventBridge as the real PutEvents answers: a 200 that refuses some entries
(docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEvents.html: `FailedEntryCount`, and `Entries`
in request order, each an `EventId` or an `ErrorCode`/`ErrorMessage`). moto never refuses one; this stand-in does."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.adapters.eventbridge import EventPublisher
from chalicelib.domain.events import STATUS_CHANGED


class Bus:
    """Refuses the entries whose status it is told to, `times` times each, inside a 200 answer."""

    def __init__(self, refuse: dict[str, int]) -> None:
        self.refuse = refuse
        self.calls: list[list[str]] = []
        self.accepted: list[str] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        statuses = [json.loads(e["Detail"])["status"] for e in Entries]
        self.calls.append(statuses)
        answers = []
        for status in statuses:
            if self.refuse.get(status, 0) > 0:
                self.refuse[status] -= 1
                answers.append({"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"})
            else:
                self.accepted.append(status)
                answers.append({"EventId": f"e-{status}"})
        return {"FailedEntryCount": sum("ErrorCode" in a for a in answers), "Entries": answers}


def entries(*statuses: str) -> list[tuple[str, dict[str, Any]]]:
    return [(STATUS_CHANGED, {"id": "m1", "status": s}) for s in statuses]


def test_an_entry_refused_in_a_200_answer_is_sent_again_alone() -> None:
    bus = Bus({"sent": 2})
    publisher = EventPublisher(bus, "default", sleep=lambda s: None)
    assert publisher.publish(entries("queued", "sent", "delivered")) is None
    assert bus.calls == [["queued", "sent", "delivered"], ["sent"], ["sent"]]
    assert sorted(bus.accepted) == ["delivered", "queued", "sent"]


def test_an_entry_still_refused_after_its_tries_is_named_so_its_record_comes_back() -> None:
    bus = Bus({"sent": 99})
    publisher = EventPublisher(bus, "default", sleep=lambda s: None)
    assert publisher.publish(entries(*[f"s{n}" for n in range(12)], "sent", "delivered")) == 12
    assert [len(c) for c in bus.calls] == [10, 4, 1, 1]  # ten a call; the refused one tried three times
    assert "delivered" in bus.accepted  # what followed it in its call went; the stream hands it back all the same

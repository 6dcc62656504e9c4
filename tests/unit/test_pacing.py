"""Pacing rules, pure: a sender's queue at Twilio, by rate and validity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain.pacing import default_rate, reserve
from chalicelib.settings import ConfigurationError, parse_rates

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_rates_by_sender_type() -> None:
    assert default_rate("+15551230000") == 1.0
    assert default_rate("+18885550100") == 3.0
    assert default_rate("24680") == 100.0
    assert default_rate("+15005550006") is None  # Twilio's test numbers queue nothing
    assert parse_rates('{"MG00000000000000000000000000000000": 30}') == {"MG00000000000000000000000000000000": 30.0}
    with pytest.raises(ConfigurationError, match="SENDER_RATES"):
        parse_rates('{"+1555": 0}')


def test_a_message_takes_its_segments_time_in_the_queue() -> None:
    first = reserve(None, NOW, 2, 1.0, 36_000)
    assert (first.wait_seconds, first.next_free) == (0, NOW + timedelta(seconds=2))
    second = reserve(first.next_free, NOW, 1, 1.0, 36_000)
    assert (second.wait_seconds, second.next_free) == (2, NOW + timedelta(seconds=3))
    later = reserve(first.next_free, NOW + timedelta(seconds=5), 1, 1.0, 36_000)  # the queue emptied meanwhile
    assert later.wait_seconds == 0


def test_a_message_that_would_outwait_its_validity_does_not_take_a_place() -> None:
    full = NOW + timedelta(seconds=36_000)
    place = reserve(full, NOW, 1, 1.0, 36_000)
    assert place.next_free is None and place.over_by == 60  # the 60 s margin
    assert reserve(NOW + timedelta(seconds=9.5), NOW, 1, 1.0, 10).next_free is None  # margin: 10 % of a short one
    assert reserve(NOW + timedelta(seconds=9), NOW, 1, 1.0, 10).next_free is not None

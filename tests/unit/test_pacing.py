"""Pacing rules, pure: a sender's queue at Twilio, by rate and validity."""

from __future__ import annotations

import itertools
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


def test_a_lease_hands_out_a_seconds_places_in_order_and_expires() -> None:
    from chalicelib.domain.pacing import Lease, from_lease, lease_size

    assert lease_size(100.0, 1) == 1 and lease_size(3.0, 5) == 5  # a first lease: the message's own
    used_up, left_over = Lease(NOW, 0, NOW, 16), Lease(NOW, 9, NOW, 16)
    soon, later = NOW + timedelta(seconds=0.2), NOW + timedelta(seconds=0.8)
    assert lease_size(100.0, 1, used_up, soon) == 32 and lease_size(100.0, 1, used_up, later) == 16
    assert lease_size(100.0, 1, left_over, later) == 8  # expired with places left: half
    assert lease_size(100.0, 1, Lease(NOW, 0, NOW, 64), soon) == 100 and lease_size(1.0, 1, used_up, soon) == 1
    lease = Lease(NOW, 3, NOW)
    places = []
    for _ in range(3):
        taken = from_lease(lease, NOW, 1, 100.0)
        assert taken is not None
        place, lease = taken
        places.append(place.next_free)
    assert places == [NOW + timedelta(milliseconds=10 * n) for n in (1, 2, 3)]
    assert from_lease(lease, NOW, 1, 100.0) is None  # used up
    assert from_lease(Lease(NOW, 50, NOW), NOW + timedelta(seconds=1), 1, 100.0) is None  # a second old


@pytest.mark.parametrize("rate", [100.0, 1.0])
def test_a_busy_sender_is_one_write_a_second_not_one_a_message(rate: float) -> None:
    """DynamoDB takes ~1,000 writes/s on one key (local.aws.PartitionModel, scaled down here to 20): a short
    code's 200 sends in two seconds from one invocation write its item a few times a second as the lease
    grows, not 200 times, and every message still has its own place, none before the one ahead of it has
    drained at the sender's rate."""
    import boto3
    from moto import mock_aws

    from chalicelib.adapters.tables import DynamoSenderQueues
    from local.aws import PartitionModel
    from tests.aws import AtomicClient, create_tables

    with mock_aws():
        client = boto3.client("dynamodb")
        names = create_tables(client)
        partitions = PartitionModel("test", writes_per_second=20, second=60.0)
        senders = DynamoSenderQueues(AtomicClient(client, partitions), names["SendersTable"])
        count = 200 if rate == 100.0 else 20
        ends = []
        for n in range(count):
            now = NOW + timedelta(seconds=2 * n / count)
            place = senders.reserve("24680" if rate == 100.0 else "+15551230000", 1, rate, 36_000, now)
            assert place.next_free is not None
            ends.append(place.next_free)
        assert ends == sorted(ends) and len(set(ends)) == count  # a place each, in order
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(ends)]
        assert min(gaps) >= 1 / rate - 1e-6  # never faster than the sender drains
        assert sum(partitions.throttled.values()) == 0
        (writes,) = [n for (table, _, _), n in partitions.peak.items() if table == names["SendersTable"]]
        assert writes <= (12 if rate == 100.0 else count)  # in the model's one "second"; a long code's lease is 1

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain import rules
from chalicelib.domain.rules import ClaimOutcome, ClaimState

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=120)


class TestStatusRank:
    def test_forward_moves_are_allowed(self):
        assert rules.advances("pending", "queued")
        assert rules.advances("sent", "delivered")
        assert rules.advances("delivered", "read")

    def test_late_or_duplicate_events_never_move_back(self):
        assert not rules.advances("delivered", "sent")
        assert not rules.advances("sent", "sent")
        assert not rules.advances("undelivered", "delivered")

    def test_terminal_set(self):
        assert {"delivered", "undelivered", "failed", "canceled"} <= rules.TERMINAL_STATUSES
        assert "sent" not in rules.TERMINAL_STATUSES


class TestErrorPolicy:
    @pytest.mark.parametrize("code", [21211, 21212, 21408, 21606, 21610, 21614, 21617])
    def test_permanent_twilio_4xx_are_not_retried(self, code):
        assert not rules.is_retryable(400, code)

    @pytest.mark.parametrize(("status", "code"), [(429, 20429), (500, 20500), (503, None), (401, 20003)])
    def test_throttling_outages_and_bad_credentials_are_retried(self, status, code):
        assert rules.is_retryable(status, code)


class TestAddresses:
    @pytest.mark.parametrize("value", ["+15551234567", "+4915112345678", "whatsapp:+15551234567", "+12345678"])
    def test_valid_recipients(self, value):
        assert rules.is_valid_recipient(value)

    @pytest.mark.parametrize("value", ["15551234567", "+0123456789", "+1234567", "+1234567890123456", "whatsapp:1555"])
    def test_invalid_recipients(self, value):
        assert not rules.is_valid_recipient(value)

    @pytest.mark.parametrize("value", ["+15551234567", "12345", "123456", "ACME", "Acme Shop 1"])
    def test_valid_senders(self, value):
        assert rules.is_valid_sender(value)

    @pytest.mark.parametrize("value", ["1234", "1234567", "Acme-Shop", "A" * 12, "123 456"])
    def test_invalid_senders(self, value):
        assert not rules.is_valid_sender(value)

    def test_masked_numbers_keep_only_the_last_four_digits(self):
        assert rules.mask_phone("+15551234567") == "+***4567"
        assert rules.mask_phone("whatsapp:+15551234567") == "whatsapp:+***4567"
        assert "555123" not in rules.mask_phone("+15551234567")


class TestSegments:
    @pytest.mark.parametrize(
        ("body", "encoding", "segments"),
        [
            ("", "GSM-7", 1),
            ("a" * 160, "GSM-7", 1),
            ("a" * 161, "GSM-7", 2),
            ("a" * 306, "GSM-7", 2),
            ("a" * 307, "GSM-7", 3),
            ("a" * 159 + "€", "GSM-7", 2),  # the euro sign costs two septets
            ("a" * 158 + "€", "GSM-7", 1),
            ("你" * 70, "UCS-2", 1),
            ("你" * 71, "UCS-2", 2),
            ("你" * 134, "UCS-2", 2),
            ("你" * 135, "UCS-2", 3),
            ("😀" * 35, "UCS-2", 1),  # each emoji is a surrogate pair
            ("😀" * 36, "UCS-2", 2),
        ],
    )
    def test_encoding_and_count(self, body, encoding, segments):
        info = rules.segment_info(body)
        assert (info.encoding, info.num_segments) == (encoding, segments)

    def test_an_extension_character_is_never_split_across_segments(self):
        # 306 septets would fit two segments, but the euro sign cannot straddle them.
        assert rules.segment_info("a" * 152 + "€" + "a" * 152).num_segments == 3

    def test_a_surrogate_pair_is_never_split_across_segments(self):
        assert rules.segment_info("你" * 66 + "😀" + "你" * 66).num_segments == 3


class TestClaimDecision:
    def state(self, **kw):
        base = dict(status="pending", twilio_sid=None, claim_token="t1", claim_state="in_flight", claimed_at=NOW)
        return ClaimState(**{**base, **kw})

    def test_nothing_known_means_fresh(self):
        assert rules.decide_claim(None, NOW, LEASE) is ClaimOutcome.FRESH

    def test_a_sent_or_failed_message_is_done(self):
        assert rules.decide_claim(self.state(twilio_sid="SM1"), NOW, LEASE) is ClaimOutcome.DONE
        assert rules.decide_claim(self.state(status="error", claim_token=None), NOW, LEASE) is ClaimOutcome.DONE

    def test_a_live_claim_is_busy(self):
        assert rules.decide_claim(self.state(), NOW + LEASE - timedelta(seconds=1), LEASE) is ClaimOutcome.BUSY

    def test_an_expired_claim_is_taken_over(self):
        assert rules.decide_claim(self.state(), NOW + LEASE, LEASE) is ClaimOutcome.TAKEOVER

    def test_an_ambiguous_attempt_is_taken_over_at_once(self):
        state = self.state(claim_state="outcome_unknown")
        assert rules.decide_claim(state, NOW, LEASE) is ClaimOutcome.TAKEOVER

    def test_a_released_claim_is_fresh(self):
        state = self.state(claim_token=None, claim_state="released", claimed_at=None)
        assert rules.decide_claim(state, NOW, LEASE) is ClaimOutcome.FRESH


def test_message_ids_are_stable_and_keyed_by_idempotency_key_first():
    assert rules.message_id("order-1", "sqs-a") == rules.message_id("order-1", "sqs-b")
    assert rules.message_id(None, "sqs-a") == rules.message_id(None, "sqs-a")
    assert rules.message_id(None, "sqs-a") != rules.message_id(None, "sqs-b")


def test_timestamps_round_trip():
    assert rules.from_iso(rules.iso(NOW)) == NOW
    assert rules.iso(NOW) == "2026-11-22T12:00:00.000Z"

"""One contract, two ledgers: the in-memory fake and DynamoDB (moto) must agree on every rule."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from chalicelib.adapters.dynamo_ledger import DynamoMessageLedger
from chalicelib.adapters.tables import DynamoOptOuts
from chalicelib.domain.ledger import BadPageToken, PageQuery, SentMessage, StatusUpdate
from chalicelib.domain.rules import ClaimOutcome
from tests.aws import AtomicClient, create_tables
from tests.fakes import InMemoryLedger, InMemoryOptOuts

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=120)
ATTRS = {
    "to": "+15551234567",
    "from": "+15005550006",
    "num_segments": 1,
    "encoding": "GSM-7",
    "metadata": {"campaign": "c1", "score": 0.5},
    "body_sha256": "abc",
}


@pytest.fixture(params=["memory", "dynamodb"])
def ledger(request) -> Iterator[object]:
    if request.param == "memory":
        yield InMemoryLedger()
        return
    with mock_aws():
        client = boto3.client("dynamodb")
        names = create_tables(client)
        yield DynamoMessageLedger(AtomicClient(client), names["MessagesTable"])  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "dynamodb"])
def opt_outs(request) -> Iterator[object]:
    if request.param == "memory":
        yield InMemoryOptOuts()
        return
    with mock_aws():
        client = boto3.client("dynamodb")
        names = create_tables(client)
        yield DynamoOptOuts(client, names["OptOutsTable"])


def test_a_new_message_is_claimed_fresh_and_described(ledger):
    assert ledger.claim("m1", ATTRS, "t1", NOW, LEASE).outcome is ClaimOutcome.FRESH
    record = ledger.get("m1")
    assert record.status == "pending" and record.to == "+15551234567"
    assert record.metadata == {"campaign": "c1", "score": 0.5}
    assert record.first_claimed_at == NOW and record.claim.claim_token == "t1"
    assert record.item["expires_at"] == int((NOW + timedelta(days=90)).timestamp())


def test_a_live_claim_makes_others_wait(ledger):
    ledger.claim("m1", ATTRS, "t1", NOW, LEASE)
    assert ledger.claim("m1", ATTRS, "t2", NOW + timedelta(seconds=5), LEASE).outcome is ClaimOutcome.BUSY
    assert ledger.get("m1").claim.claim_token == "t1"


def test_an_expired_claim_is_taken_over_and_keeps_the_first_claim_time(ledger):
    ledger.claim("m1", ATTRS, "t1", NOW, LEASE)
    later = NOW + LEASE + timedelta(seconds=1)
    result = ledger.claim("m1", ATTRS, "t2", later, LEASE)
    assert result.outcome is ClaimOutcome.TAKEOVER and result.record.claim.claim_token == "t1"
    record = ledger.get("m1")
    assert record.claim.claim_token == "t2" and record.first_claimed_at == NOW


def test_an_unknown_outcome_is_taken_over_at_once(ledger):
    ledger.claim("m1", ATTRS, "t1", NOW, LEASE)
    ledger.mark_outcome_unknown("m1", "t1", NOW)
    assert ledger.claim("m1", ATTRS, "t2", NOW, LEASE).outcome is ClaimOutcome.TAKEOVER


def test_a_released_claim_can_be_claimed_fresh(ledger):
    ledger.claim("m1", ATTRS, "t1", NOW, LEASE)
    ledger.release("m1", "t1", NOW)
    assert ledger.claim("m1", ATTRS, "t2", NOW, LEASE).outcome is ClaimOutcome.FRESH


def test_a_stale_token_cannot_release_or_mark_someone_elses_claim(ledger):
    ledger.claim("m1", ATTRS, "t1", NOW, LEASE)
    ledger.claim("m1", ATTRS, "t2", NOW + LEASE, LEASE)  # takeover
    ledger.release("m1", "t1", NOW + LEASE)
    ledger.mark_outcome_unknown("m1", "t1", NOW + LEASE)
    claim = ledger.get("m1").claim
    assert claim.claim_token == "t2" and claim.claim_state == "in_flight"


def test_a_sent_message_is_done_for_every_later_delivery(ledger):
    ledger.claim("m1", ATTRS, "t1", NOW, LEASE)
    assert ledger.record_sent("m1", SentMessage("SM1", "queued", price=None, price_unit="USD"), NOW)
    record = ledger.get("m1")
    assert (record.status, record.twilio_sid, record.price_unit) == ("queued", "SM1", "USD")
    assert [e["status"] for e in record.events] == ["queued"]
    assert ledger.claim("m1", ATTRS, "t2", NOW + timedelta(days=1), LEASE).outcome is ClaimOutcome.DONE


def test_a_second_sid_is_never_written_over_the_first(ledger):
    ledger.claim("m1", ATTRS, "t1", NOW, LEASE)
    assert ledger.record_sent("m1", SentMessage("SM1", "queued"), NOW)
    assert not ledger.record_sent("m1", SentMessage("SM2", "queued"), NOW)
    assert ledger.get("m1").twilio_sid == "SM1"


def test_an_error_before_any_claim_is_recorded_once(ledger):
    assert ledger.record_error("m1", 21211, "bad number", NOW, attrs={"to": "555"})
    record = ledger.get("m1")
    assert (record.status, record.error_code, record.error_message, record.to) == ("error", 21211, "bad number", "555")
    assert record.events == [
        {"status": "error", "at": "2026-11-22T12:00:00.000Z", "source": "send", "error_code": 21211}
    ]
    assert not ledger.record_error("m1", 21211, "bad number", NOW)
    assert ledger.claim("m1", ATTRS, "t1", NOW, LEASE).outcome is ClaimOutcome.DONE


def test_an_error_never_overwrites_a_sent_message(ledger):
    ledger.claim("m1", ATTRS, "t1", NOW, LEASE)
    ledger.record_sent("m1", SentMessage("SM1", "queued"), NOW)
    assert not ledger.record_error("m1", 900001, "late validation failure", NOW)
    assert not ledger.record_error("m1", 21211, "stale holder", NOW, token="t1")
    assert ledger.get("m1").status == "queued"


def test_the_claim_holder_records_twilios_rejection(ledger):
    ledger.claim("m1", ATTRS, "t1", NOW, LEASE)
    assert ledger.record_error("m1", 21610, "opted out", NOW, token="t1")
    assert ledger.get("m1").status == "error"


def test_an_unknown_message_reads_as_none(ledger):
    assert ledger.get("nope") is None


def test_opt_outs_match_the_sender_or_every_sender(opt_outs):
    opt_outs.opt_out("+15551234567", "+15005550006", NOW)
    opt_outs.opt_out("+15550000000", "*", NOW)
    assert opt_outs.is_opted_out("+15551234567", ["+15005550006"])
    assert not opt_outs.is_opted_out("+15551234567", ["+15005550010"])
    assert opt_outs.is_opted_out("+15550000000", ["+15005550010", "MG" + "a" * 32])
    assert not opt_outs.is_opted_out("+15559999999", ["+15005550006"])


def test_of_many_concurrent_claims_exactly_one_wins(ledger):
    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(lambda i: ledger.claim("m1", ATTRS, f"t{i}", NOW, LEASE).outcome, range(10)))
    assert outcomes.count(ClaimOutcome.FRESH) == 1
    assert outcomes.count(ClaimOutcome.BUSY) == 9


def sent(ledger, message_id="m1", sid="SM1", status="queued"):
    ledger.claim(message_id, ATTRS, "t1", NOW, LEASE)
    ledger.record_sent(message_id, SentMessage(sid, status), NOW)


def test_status_only_moves_forward(ledger):
    sent(ledger)
    assert ledger.apply_status("m1", StatusUpdate("delivered", "callback", "SM1"), NOW).status == "delivered"
    assert ledger.apply_status("m1", StatusUpdate("sent", "callback", "SM1"), NOW) is None  # late
    assert ledger.apply_status("m1", StatusUpdate("delivered", "poll", "SM1"), NOW) is None  # duplicate
    record = ledger.get("m1")
    assert record.status == "delivered" and [e["source"] for e in record.events] == ["send", "callback"]


def test_a_report_for_another_sid_is_ignored(ledger):
    sent(ledger)
    assert ledger.apply_status("m1", StatusUpdate("delivered", "callback", "SM-other"), NOW) is None
    assert ledger.apply_status("nope", StatusUpdate("delivered", "callback", "SM1"), NOW) is None


def test_error_codes_and_receipts_are_kept(ledger):
    sent(ledger)
    update = StatusUpdate("undelivered", "callback", "SM1", error_code=30007, raw_dlr_done_date="2611221200")
    record = ledger.apply_status("m1", update, NOW)
    assert (record.error_code, record.item["raw_dlr_done_date"]) == (30007, "2611221200")
    assert record.events[-1] == {
        "status": "undelivered",
        "at": "2026-11-22T12:00:00.000Z",
        "source": "callback",
        "error_code": 30007,
    }


def test_polls_record_the_attempt_that_learned_a_status_and_exhaustion(ledger):
    sent(ledger)
    ledger.apply_status("m1", StatusUpdate("sent", "poll", "SM1", poll_attempts=2), NOW)
    assert ledger.get("m1").poll_attempts == 2
    ledger.mark_poll_exhausted("m1", 5, NOW)
    record = ledger.get("m1")
    assert record.poll_attempts == 5 and record.item["polling"] == "exhausted"


def test_many_records_are_read_at_once(ledger):
    for i in range(3):
        sent(ledger, f"m{i}", f"SM{i}")
    assert set(ledger.get_many(["m0", "m2", "missing", "m0"])) == {"m0", "m2"}


def test_more_records_than_one_batch_read_holds_are_all_read(ledger):
    ids = [f"m{i}" for i in range(150)]  # DynamoDB's BatchGetItem takes 100 keys
    for i, message_id in enumerate(ids[::7]):
        sent(ledger, message_id, f"SM{i}")
    assert set(ledger.get_many(ids)) == set(ids[::7])


def test_the_last_message_to_a_number_is_found(ledger):
    ledger.claim("old", {**ATTRS, "to": "+15550001111"}, "t", NOW, LEASE)
    ledger.claim("new", {**ATTRS, "to": "+15550001111"}, "t", NOW + timedelta(minutes=1), LEASE)
    assert ledger.last_message_to("+15550001111") == "new"
    assert ledger.last_message_to("+15559999999") is None


def test_opt_in_lifts_an_opt_out(opt_outs):
    opt_outs.opt_out("+15551234567", "+15005550006", NOW)
    opt_outs.opt_in("+15551234567", "+15005550006")
    assert not opt_outs.is_opted_out("+15551234567", ["+15005550006"])


def test_a_poll_window_holds_its_sent_messages_until_they_finish(ledger):
    """The sparse window index: a message sent into a window stays there until it is terminal or
    polling is exhausted, so each poll attempt reads only what is still open."""
    for i in range(3):
        ledger.claim(f"w{i}", ATTRS, "t", NOW, LEASE)
        ledger.record_sent(f"w{i}", SentMessage(f"SMw{i}", "queued", poll_window=1_795_000_000), NOW)
    ledger.claim("elsewhere", ATTRS, "t", NOW, LEASE)
    ledger.record_sent("elsewhere", SentMessage("SMx", "queued", poll_window=1_795_000_060), NOW)
    assert sorted(ledger.open_in_window(1_795_000_000)) == ["w0", "w1", "w2"]
    ledger.apply_status("w0", StatusUpdate("sent", "callback", "SMw0"), NOW)  # not terminal: still followed
    ledger.apply_status("w1", StatusUpdate("delivered", "callback", "SMw1"), NOW)
    ledger.mark_poll_exhausted("w2", 10, NOW)
    assert ledger.open_in_window(1_795_000_000) == ["w0"]
    assert ledger.open_in_window(1_795_000_060) == ["elsewhere"]
    assert ledger.open_in_window(1) == []


def test_a_poll_window_is_read_a_page_at_a_time_and_a_cursor_survives_its_message_leaving(ledger):
    for i in range(5):
        ledger.claim(f"p{i}", ATTRS, "t", NOW, LEASE)
        ledger.record_sent(f"p{i}", SentMessage(f"SMp{i}", "queued", poll_window=1_795_000_120), NOW)
    first, cursor = ledger.open_page(1_795_000_120, None, 2)
    assert first == ["p0", "p1"] and cursor == "p1"
    ledger.apply_status("p1", StatusUpdate("delivered", "callback", "SMp1"), NOW)  # the cursor's message leaves
    second, cursor = ledger.open_page(1_795_000_120, cursor, 2)
    assert second == ["p2", "p3"] and cursor == "p3"
    last, cursor = ledger.open_page(1_795_000_120, cursor, 2)
    assert last == ["p4"] and cursor is None


def test_an_inbound_message_is_stored_once_and_a_replay_sees_it(ledger):
    reply = {"id": "in_SM1", "direction": "inbound", "from": "+15551234567", "body": "START"}
    assert ledger.record_reply(reply, NOW) is None
    ledger.mark_reply_handled("in_SM1")
    again = ledger.record_reply({**reply, "body": "changed"}, NOW)
    assert again is not None and again.item["handled"] is True and again.item["body"] == "START"


def test_an_accepted_message_is_created_pending_once_and_marked_enqueued(ledger):
    created = ledger.create_pending("p1", ATTRS, NOW)
    assert created is not None and created.status == "pending" and created.to == ATTRS["to"]
    assert [e["source"] for e in created.events] == ["api"]
    assert ledger.create_pending("p1", {**ATTRS, "to": "+15550000000"}, NOW) is None  # a repeated key
    assert ledger.get("p1").to == ATTRS["to"] and not ledger.get("p1").item.get("enqueued_at")
    ledger.mark_enqueued("p1", NOW)
    assert ledger.get("p1").item["enqueued_at"]
    # the send then claims it as any queued request
    assert ledger.claim("p1", ATTRS, "t", NOW, LEASE).outcome is ClaimOutcome.FRESH


# --- the Twilio-compatible front door ------------------------------------------

ACCOUNT = "AC" + "1" * 32


def _facade_message(ledger, message_id, at, to="+15551234567", account=ACCOUNT):
    ledger.create_pending(message_id, {**ATTRS, "to": to, "account_sid": account}, at)


def test_a_content_window_belongs_to_the_first_message_until_it_ends(ledger):
    window = timedelta(seconds=300)
    assert ledger.claim_content("k", "SM1", NOW, window) == "SM1"
    assert ledger.claim_content("k", "SM2", NOW + timedelta(seconds=299), window) == "SM1"
    assert ledger.claim_content("other", "SM3", NOW, window) == "SM3"
    assert ledger.claim_content("k", "SM4", NOW + timedelta(seconds=301), window) == "SM4"  # a new window


def test_an_accounts_messages_page_newest_first_with_filters_and_tokens(ledger):
    for n in range(5):
        _facade_message(ledger, f"SM{n}", NOW + timedelta(minutes=n), to="+15550000001" if n % 2 else "+15550000002")
    _facade_message(ledger, "SMx", NOW, account="AC" + "2" * 32)
    ledger.create_pending("plain", ATTRS, NOW)  # not through the front door: not in the index

    page, token = ledger.account_page(ACCOUNT, PageQuery(size=2))
    assert [r.id for r in page] == ["SM4", "SM3"] and token
    rest: list[str] = []
    while token:
        more, token = ledger.account_page(ACCOUNT, PageQuery(size=2, token=token))
        rest += [r.id for r in more]
    assert rest == ["SM2", "SM1", "SM0"]

    to_one, _ = ledger.account_page(ACCOUNT, PageQuery(to="+15550000001"))
    assert [r.id for r in to_one] == ["SM3", "SM1"]
    day = NOW.date().isoformat()
    assert len(ledger.account_page(ACCOUNT, PageQuery(sent_on=day))[0]) == 5
    assert ledger.account_page(ACCOUNT, PageQuery(sent_before="2026-11-21"))[0] == []
    assert len(ledger.account_page(ACCOUNT, PageQuery(sent_after=day))[0]) == 5


def test_a_page_token_for_another_account_is_refused(ledger):
    for n in range(3):
        _facade_message(ledger, f"SM{n}", NOW + timedelta(minutes=n))
    _, token = ledger.account_page(ACCOUNT, PageQuery(size=1))
    with pytest.raises(BadPageToken):
        ledger.account_page("AC" + "2" * 32, PageQuery(token=token))
    with pytest.raises(BadPageToken):
        ledger.account_page(ACCOUNT, PageQuery(token="PAnot-base64!"))


def test_only_a_pending_unclaimed_message_can_be_canceled(ledger):
    ledger.create_pending("m1", ATTRS, NOW)
    canceled = ledger.cancel_pending("m1", NOW)
    assert canceled is not None and canceled.status == "canceled"
    assert ledger.claim("m1", ATTRS, "t1", NOW, LEASE).outcome is not ClaimOutcome.FRESH  # never sent after
    ledger.create_pending("m2", ATTRS, NOW)
    ledger.claim("m2", ATTRS, "t2", NOW, LEASE)
    assert ledger.cancel_pending("m2", NOW) is None
    assert ledger.cancel_pending("missing", NOW) is None


def test_a_refused_write_back_is_noted_on_the_message_and_nowhere_else(ledger):
    ledger.create_pending("m1", ATTRS, NOW)
    ledger.note_write_back_failure("m1", "swrve answered 400", NOW)
    ledger.note_write_back_failure("gone", "no such message", NOW)  # never creates a record
    assert ledger.get("m1").item["write_back_error"] == "swrve answered 400"
    assert ledger.get("gone") is None
    ledger.note_write_back_failure("m1", "ci360 refused the token (401)", NOW, "credentials_refused")
    shown = ledger.get("m1").public()  # GET /messages/{id} shows the last one
    assert (shown["write_back_error"], shown["write_back_status"]) == (
        "ci360 refused the token (401)",
        "credentials_refused",
    )


@pytest.mark.parametrize("shards", [1, 8])
def test_a_busy_poll_window_is_written_across_shards_and_read_whole(shards: int) -> None:
    """DynamoDB takes ~1,000 writes/s on one partition key, and a GSI short of it throttles its base table
    (local.aws.PartitionModel, here scaled down to 20 writes a second). Every message sent in a window
    writes the window's `by_poll_window` key: on one key a burst is throttled; over POLL_WINDOW_SHARDS keys
    it is not, and a poll run still reads each open message exactly once, a page at a time."""
    from local.aws import PartitionModel

    window = 1_795_000_200
    with mock_aws():
        client = boto3.client("dynamodb")
        names = create_tables(client)
        partitions = PartitionModel("test", writes_per_second=20, second=60.0)  # one "second" spans the test
        ledger = DynamoMessageLedger(AtomicClient(client, partitions), names["MessagesTable"], poll_shards=shards)  # type: ignore[arg-type]
        sent, refused = [], 0
        for i in range(60):
            ledger.claim(f"w{i:02d}", {**ATTRS, "to": f"+155512300{i:02d}"}, "t", NOW, LEASE)
            try:
                ledger.record_sent(f"w{i:02d}", SentMessage(f"SMw{i}", "queued", poll_window=window), NOW)
                sent.append(f"w{i:02d}")
            except Exception as exc:  # StoreError: the send would be retried from the queue
                assert "ProvisionedThroughputExceeded" in str(exc)
                refused += 1
        index_throttled = sum(n for (_, index, _), n in partitions.throttled.items() if index == "by_poll_window")
        if shards == 1:
            assert refused == index_throttled == 40  # past 20 on the window's one key
        else:
            assert refused == index_throttled == 0
            assert max(n for (_, index, _), n in partitions.peak.items() if index == "by_poll_window") <= 20
        partitions.limit = 1000  # a new second
        read, cursor = [], None
        while True:
            page, cursor = ledger.open_page(window, cursor, 7)
            read += page
            if cursor is None:
                break
        assert sorted(read) == sorted(sent)
        ledger.apply_status(sent[0], StatusUpdate("delivered", "callback", "SMw0"), NOW)  # leaves the index
        assert sorted(ledger.open_in_window(window)) == sorted(sent[1:])

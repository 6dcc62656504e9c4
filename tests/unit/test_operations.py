"""The DLQ as operators see it (moto's SQS): a redrive keeps each record's ledger id, so never sends twice."""

from __future__ import annotations

import json

import boto3
from moto import mock_aws

from chalicelib.domain import rules
from chalicelib.domain.queued import MESSAGE_ID_ATTRIBUTE
from chalicelib.entrypoints.operations import DeadLetters, describe_errors


def test_a_redriven_record_names_the_ledger_id_it_had_even_without_an_idempotency_key() -> None:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
        main = sqs.create_queue(QueueName="send")["QueueUrl"]
        unkeyed = sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"to": "+15551234567", "body": "x"}))
        named = {MESSAGE_ID_ATTRIBUTE: {"DataType": "String", "StringValue": "msg_from_the_api"}}
        sqs.send_message(QueueUrl=dlq, MessageBody="{}", MessageAttributes=named)
        letters = DeadLetters(sqs, dlq, main, clock=lambda: 2_000_000_000.0)
        assert letters.redrive(dry_run=True) == {"dry_run": True, "would_move": 2, "depth": 2}
        assert letters.redrive() == {"dry_run": False, "moved": 2, "depth": 0}
        moved = sqs.receive_message(QueueUrl=main, MaxNumberOfMessages=10, MessageAttributeNames=["All"])["Messages"]
        ids = sorted(m["MessageAttributes"][MESSAGE_ID_ATTRIBUTE]["StringValue"] for m in moved)
        assert ids == sorted(["msg_from_the_api", rules.message_id(None, unkeyed["MessageId"])])


def test_error_codes_are_described_in_twilios_words_and_ours() -> None:
    described = describe_errors(["21211", "900004", "99999999"])
    assert described["21211"] == "Invalid 'To' Phone Number" and "not_after" in described["900004"]
    assert "99999999" not in described


def test_the_shipped_error_dictionary_is_twilios_reference_one() -> None:
    from chalicelib.entrypoints.operations import ERRORS_FILE
    from tests import TWILIO_DATA

    reference = json.loads((TWILIO_DATA / "twilio-error-codes.2023-05.json").read_text())
    assert json.loads(ERRORS_FILE.read_text()) == {str(e["code"]): (e.get("message") or "").strip() for e in reference}

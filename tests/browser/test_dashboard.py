"""The status page in a real browser: Debian's Chromium (installed by `make test` as root), driven by Playwright,
against the local stack with demo traffic. The test enters the key as a person would and reads the charts
the page drew; it saves a screenshot under build/."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from local.stack import LocalStack, StackConfig
from tests.receiver import Receiver

KEY = "dashboard-test-key"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BUILD = Path(__file__).resolve().parents[2] / "build"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    config = StackConfig(stage="dash", api_key=KEY, time_scale=20, retry_interval_ms=1000, retry_attempts=3)
    with LocalStack(config) as running:
        yield running


def _traffic(stack: LocalStack) -> list[str]:
    """What `make run DEMO=1` sends: delivered, undelivered (30007), an invalid number (21211), a STOP."""
    assert stack.simulator is not None
    sim = stack.simulator.sim
    sim.set_scenario("+15550700002", "undelivered", 30007)
    sim.inbound("+15550700003", stack.config.default_from, "STOP")  # before it is written to: 21610
    headers = {"x-api-key": KEY, "Content-Type": "application/json"}
    ids = []
    for to in ("+15550700001", "+15550700002", "+15005550001", "+15550700003"):
        answer = requests.post(f"{stack.api_url}/messages", headers=headers, data=json.dumps({"to": to, "body": "hi"}))
        ids.append(answer.json()["id"])
    sim.inbound("+15550700001", stack.config.default_from, "Thanks")
    deadline = time.monotonic() + 20
    final = {"delivered", "undelivered", "error", "failed"}
    while time.monotonic() < deadline:
        records = [requests.get(f"{stack.api_url}/messages/{i}", headers=headers).json() for i in ids]
        if all(r["status"] in final for r in records):
            return ids
        time.sleep(0.2)
    raise AssertionError("the demo traffic never finished")


def _refused_write_back(stack: LocalStack) -> str:
    """A message whose platform refuses the connector's credentials (401): noted on it and counted."""
    receiver = Receiver()
    receiver.status_for["/tealium/event"] = 401
    headers = {"x-api-key": KEY, "Content-Type": "application/json"}
    write_back = {
        "format": "tealium",
        "url": f"{receiver.url}/tealium/event",
        "options": {"account": "a", "profile": "p"},
    }
    connection = {"account_sid": stack.config.account_sid, "auth_token": stack.config.auth_token,
                  "from_numbers": [stack.config.default_from], "write_back": write_back}  # fmt: skip
    made = requests.put(f"{stack.api_url}/connections/refusing", headers=headers, data=json.dumps(connection))
    assert made.status_code == 201, made.text
    message = {"to": "+15550700009", "body": "hi", "connection": "refusing", "metadata": {"tealium_visitor_id": "v-1"}}
    message_id = requests.post(f"{stack.api_url}/messages", headers=headers, data=json.dumps(message)).json()["id"]
    deadline = time.monotonic() + 20
    while True:
        record = requests.get(f"{stack.api_url}/messages/{message_id}", headers=headers).json()
        if record.get("write_back_error") and record["status"] == "delivered":
            break
        assert time.monotonic() < deadline, "the write-back was never refused"
        time.sleep(0.2)
    # the counters follow the ledger's stream: wait until they hold every delivery, as the page will show them
    while requests.get(f"{stack.api_url}/stats", headers=headers).json()["by_status"].get("delivered") != 2:
        assert time.monotonic() < deadline, "the deliveries were never counted"
        time.sleep(0.2)
    receiver.server.shutdown()
    return str(message_id)


def test_the_page_draws_the_demos_counts_after_asking_for_the_key(stack: LocalStack) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed: as root, `apt-get install chromium`, then `make browser`")
    from playwright.sync_api import sync_playwright

    stack.rewire()
    ids = _traffic(stack)
    refused = _refused_write_back(stack)
    BUILD.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        refusals: list[str] = []  # what the browser's CSP refused: nothing on this page
        page.on("console", lambda m: refusals.append(m.text) if "Content Security Policy" in m.text else None)
        response = page.goto(f"{stack.api_url}/dashboard")
        assert response is not None
        policy = response.headers["content-security-policy"]
        script_src = next(d for d in policy.split(";") if d.strip().startswith("script-src"))
        assert "unsafe-inline" not in script_src and "'sha256-" in script_src  # the page's script, by its hash
        assert "frame-ancestors 'none'" in policy
        assert page.locator("#key-dialog").is_visible()  # asks for the key first
        page.fill("#key", "not-the-key")
        page.click("#key-form button")
        page.wait_for_selector("#key-error:has-text('refused')")  # a wrong key is refused, and asked again
        # a CDP's send key opens no page: the page says the role it needs
        import boto3

        from chalicelib.entrypoints.api_keys import key_hash

        keys = [
            {"name": "dash", "sha256": key_hash(KEY)},
            {"name": "cdp", "sha256": key_hash("k-send"), "role": "send"},
        ]
        boto3.client("secretsmanager").put_secret_value(
            SecretId=stack.api_keys_secret_id, SecretString=json.dumps({"keys": keys})
        )
        page.fill("#key", "k-send")
        page.click("#key-form button")
        page.wait_for_selector("#key-error:has-text('role `read` or `admin`')")
        assert "has role `send`" in page.inner_text("#key-error")
        page.fill("#key", KEY)
        page.click("#key-form button")
        page.wait_for_selector("body[data-loaded=true]", timeout=15000)
        assert KEY not in page.url and page.evaluate("sessionStorage.getItem('connector-api-key')") == KEY
        assert page.inner_text("#key-role") == "key: admin"  # a key made before roles is admin

        drawn = page.eval_on_selector_all(
            "#per-day rect.bar", "rs => rs.map(r => [r.dataset.series, Number(r.dataset.count)])"
        )
        by_status: dict[str, int] = {}
        for series, count in drawn:
            by_status[series] = by_status.get(series, 0) + count
        # the demo's four, and the message whose write-back was refused (delivered all the same)
        assert (by_status.get("delivered"), by_status.get("undelivered"), by_status.get("error")) == (2, 1, 2)
        # each message once, in its final status: the bars are the day's five messages, not every status they
        # passed through (pending, queued, sent, …), which drew each message several times over
        assert sum(by_status.values()) == 5, by_status
        assert [page.inner_text(f"#{n}") for n in ("scheduled", "held", "capped")] == ["0", "0", "0"]
        assert page.inner_text("#budgets").endswith("no connection sets a daily budget")
        errors = page.eval_on_selector_all("#errors tr.error-row", "rs => rs.map(r => r.innerText)")
        assert any("30007" in row and "Queue overflow" not in row and "\t1" in row for row in errors), errors
        assert any("21211" in row and "invalid" in row.lower() for row in errors), errors
        connections = page.eval_on_selector_all("#connections rect.bar", "rs => rs.map(r => r.dataset.series)")
        assert sorted(connections) == ["default", "refusing"]
        rows = page.eval_on_selector_all("#write-backs tr.write-back-row", "rs => rs.map(r => r.innerText)")
        assert len(rows) == 1 and rows[0].startswith(
            "refusing\tcredentials refused: check them with POST /connection/test"
        )
        events = page.eval_on_selector_all("#events rect.bar", "rs => rs.map(r => [r.dataset.series, r.dataset.count])")
        assert ["opt_out", "1"] in events and ["reply", "1"] in events
        assert page.inner_text("#delivery-rate") == "40%"  # delivered 2 of 5 final (undelivered, two errors)
        assert any("21610" in row for row in errors), errors
        assert page.inner_text("#dlq-depth") == "0" and page.inner_text("#forward-dlq-depth") == "0"

        page.fill("#message-id", ids[0])
        page.click("#search button")
        page.wait_for_selector("#found ol.timeline li")
        timeline = page.inner_text("#found")
        assert "pending / api" in timeline and "delivered / callback" in timeline
        assert page.locator("#write-back-error").count() == 0
        page.fill("#message-id", refused)
        page.click("#search button")
        page.wait_for_selector("#write-back-error")
        assert page.inner_text("#write-back-error").startswith(
            "write-back credentials_refused: tealium refused the connector's credentials (401)"
        )
        page.fill("#message-id", ids[0])
        page.click("#search button")
        page.wait_for_selector(f"#found:has-text('{ids[0]}')")
        page.screenshot(path=str(BUILD / "dashboard.png"), full_page=True)
        browser.close()
    assert refusals == []
    assert (BUILD / "dashboard.png").stat().st_size > 10_000

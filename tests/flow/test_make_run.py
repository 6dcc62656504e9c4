"""`make run` as a person uses it: start `python -m local.run`, read the banner, follow its examples."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_banner_tells_the_truth_about_the_api_and_the_front_door() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "local.run", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = ""
        deadline = time.monotonic() + 60
        while "Ctrl-C stops everything." not in banner:
            assert time.monotonic() < deadline and process.poll() is None, banner
            banner += process.stdout.readline()
        api = re.search(r"API:\s+(\S+)", banner)
        key = re.search(r"API key:\s+(\S+)", banner)
        base = re.search(r"Base URL:\s+(\S+)", banner)
        sid = re.search(r"Account SID:\s+(\S+)", banner)
        token = re.search(r"Auth token:\s+(\S+)", banner)
        assert api and key and base and sid and token, banner
        page = requests.get(f"{api[1]}/dashboard", timeout=10)
        assert f"{api[1]}/dashboard" in banner and page.status_code == 200 and "<title>Twilio connector" in page.text
        posted = requests.post(
            f"{api[1]}/messages",
            json={"to": "+15551234567", "body": "Hello"},
            headers={"x-api-key": key[1]},
            timeout=10,
        )
        assert posted.status_code == 202, posted.text
        created = requests.post(
            f"{base[1]}/Accounts/{sid[1]}/Messages.json",
            data={"To": "+15551234567", "From": "+15005550006", "Body": "Hello"},
            auth=(sid[1], token[1]),
            timeout=10,
        )
        assert created.status_code == 201 and created.json()["status"] == "queued", created.text
        fetched = requests.get(
            f"{base[1]}/Accounts/{sid[1]}/Messages/{created.json()['sid']}.json", auth=(sid[1], token[1]), timeout=10
        )
        assert fetched.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)

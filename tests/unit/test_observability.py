"""Metrics flushed from several functions in one process (the local stack) never fail a handler."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from chalicelib.observability import flush_metrics, metrics


def test_two_flushes_at_once_neither_fails(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Powertools checks the set is not empty, then serializes it: a flush in between (here held open for
    0.2 s) made the other raise "Must contain at least one metric" and its handler answer nothing."""
    serialize = metrics.provider.serialize_metric_set

    def slowly(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.2)
        return serialize(*args, **kwargs)

    monkeypatch.setattr(metrics.provider, "serialize_metric_set", slowly)
    metrics.add_metric(name="Concurrent", unit="Count", value=1)
    failures: list[BaseException] = []

    def flush() -> None:
        try:
            flush_metrics()
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=flush) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)  # the second starts while the first is serializing
    for thread in threads:
        thread.join()
    assert failures == []
    assert capsys.readouterr().out.count('"Concurrent":[1.0]') == 1  # published once

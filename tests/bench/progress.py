"""A line on stderr every half minute, for benchmark runs that take many minutes."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, every: float = 30.0) -> None:
        self.started = time.perf_counter()
        self.every = every
        self._last = time.monotonic()

    def __call__(self, what: str) -> None:
        if time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            print(f"  … {what} after {time.perf_counter() - self.started:.0f} s", file=sys.stderr, flush=True)

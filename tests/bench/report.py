"""The one file the figures of a run live in, `docs/figures.md`: `make bench` rewrites its bench section,
`make soak` the section of its shape, `make campaign` its own. Prose elsewhere states targets and reasons, never a run's numbers."""

from __future__ import annotations

import contextlib
import io
import platform
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

FIGURES = Path(__file__).resolve().parents[2] / "docs" / "figures.md"
HEADER = """# Figures of the last runs

Generated: `make bench` rewrites the bench section, `make soak` the section of its shape and `make campaign`
its model's; edit none by hand. What each figure means, its target and why the design looks as it does:
[performance.md](performance.md).
"""


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with the section between `<!-- name -->` markers set to `body` (added at the end if absent)."""
    block = f"<!-- {name} -->\n{body.rstrip()}\n<!-- /{name} -->"
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + "\n\n" + block + "\n"


@contextlib.contextmanager
def recorded(name: str, title: str, path: Path = FIGURES) -> Iterator[None]:
    """Everything printed inside goes to the terminal as before and, when the block ends without an
    exception, to its section of the figures file, stamped with the day and the machine."""
    captured = io.StringIO()
    terminal = sys.stdout

    class Tee(io.TextIOBase):
        def write(self, text: str) -> int:
            captured.write(text)
            return terminal.write(text)

        def flush(self) -> None:
            terminal.flush()

    with contextlib.redirect_stdout(Tee()):
        yield
    stamp = (
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()} with {_cores()} cores, Python {platform.python_version()}"
    )
    body = f"## {title}\n\n{stamp}:\n\n```\n{captured.getvalue().rstrip()}\n```"
    current = path.read_text() if path.exists() else HEADER
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_section(current, name, body))


def _cores() -> int:
    import os

    return os.cpu_count() or 1

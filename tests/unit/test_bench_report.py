"""The figures file: each run rewrites its own section and leaves the others as they were."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench import report


def test_a_run_rewrites_its_own_section_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    figures = tmp_path / "figures.md"
    with report.recorded("bench", "make bench", figures):
        print("cost per million: $11.32")
    with report.recorded("soak-paced", "make soak", figures):
        print("lost: 0")
    with report.recorded("bench", "make bench", figures):
        print("cost per million: $7.90")
    text = figures.read_text()
    assert text.startswith("# Figures of the last runs")
    assert "$7.90" in text and "$11.32" not in text and "lost: 0" in text
    assert text.index("<!-- bench -->") < text.index("<!-- soak-paced -->")  # kept in place
    assert "cost per million: $7.90" in capsys.readouterr().out  # the terminal still sees it


def test_a_run_that_fails_writes_nothing(tmp_path: Path) -> None:
    figures = tmp_path / "figures.md"
    with pytest.raises(RuntimeError), report.recorded("bench", "make bench", figures):
        print("half a run")
        raise RuntimeError("the stack did not start")
    assert not figures.exists()

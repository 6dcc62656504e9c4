"""The repository stands alone: a user clones it and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from tests import TWILIO_DATA

ROOT = Path(__file__).resolve().parents[2]
# What reaching beside the checkout looks like: `../shared`, or climbing above the root by parents[N].
OUTSIDE = re.compile(r"\.\./shared|[\"']shared[\"']\s*/|parents\[(\d+)\]")


def _project_files() -> list[Path]:
    skip = {
        ".venv",
        ".venv-checkov",
        ".git",
        "build",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".hypothesis",
        "node_modules",
    }
    return [
        p
        for p in ROOT.rglob("*")
        if p.is_file()
        and p != Path(__file__).resolve()
        and p.suffix in {".py", ".sh", ".json", ""}
        and not skip & set(p.relative_to(ROOT).parts)
    ]


def test_no_project_file_reads_outside_the_repository() -> None:
    offenders = []
    for path in _project_files():
        text = path.read_text(errors="replace")
        for match in OUTSIDE.finditer(text):
            depth = match.group(1)
            # parents[N] of a file N+1 folders deep is the root itself; deeper is outside
            if depth is not None and int(depth) < len(path.relative_to(ROOT).parts):
                continue
            offenders.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert offenders == []


def test_twilios_reference_files_are_in_the_repository() -> None:
    assert (TWILIO_DATA / "message_subset.json").stat().st_size > 10_000
    assert (TWILIO_DATA / "twilio-error-codes.2023-05.json").stat().st_size > 1_000_000
    assert TWILIO_DATA.is_relative_to(ROOT)


def test_no_file_points_at_a_document_the_repository_does_not_ship() -> None:
    """The team's shared design notes stay beside the checkout; a pointer to them is one a user cannot follow."""
    pointers = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in _project_files()
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if re.search(r"DESIGN(\.md)? ?§", line)
    ]
    assert pointers == []

"""The README is a front page and docs/ holds the rest: every link between them resolves, to a file and to
a heading, and every pointer from the code to a section of them ("README, \\"…\\"" or
"docs/<name>.md, \\"…\\"") names a heading that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
POINTER = re.compile(r"(README|docs/[a-z-]+\.md)[,:] \"([^\"]+)\"")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)  # a `# comment` in a code block is not one
    return [line.lstrip("#").strip() for line in text.splitlines() if re.match(r"#{1,6} ", line)]


def test_the_readme_is_a_page() -> None:
    assert 100 <= len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_every_link_in_the_readme_and_docs_resolves_to_a_file_and_a_heading() -> None:
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            file_part, _, anchor = target.partition("#")
            path = (doc.parent / file_part).resolve() if file_part else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in {slug(h) for h in headings(path)}:
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_every_pointer_from_the_code_names_a_heading_that_exists() -> None:
    known = {doc.relative_to(ROOT).as_posix(): {h.lower() for h in headings(doc)} for doc in DOCS}
    sources = [p for p in ROOT.glob("**/*") if p.suffix in {".py", ".json", ".html"} or p.name == "Makefile"]
    missing = []
    for path in sources:
        if {".venv", ".venv-checkov", "node_modules", "build", "data"} & set(path.relative_to(ROOT).parts):
            continue
        for where, heading in POINTER.findall(path.read_text(errors="replace")):
            names = known.get("README.md" if where == "README" else where, set())
            if heading.lower() not in names:
                missing.append(f"{path.relative_to(ROOT)}: {where}, {heading!r}")
    assert missing == []


def test_every_file_the_docs_name_exists() -> None:
    """A path in backquotes (`chalicelib/…`, `tests/…`, `infra/…`, `local/…`) is a file or folder of the repository."""
    named = {
        (doc.relative_to(ROOT).as_posix(), path)
        for doc in DOCS
        for path in re.findall(r"`((?:chalicelib|tests|infra|local)/[\w./-]+)`", doc.read_text())
    }
    assert sorted(f"{doc}: {path}" for doc, path in named if not (ROOT / path.rstrip("/")).exists()) == []


def test_the_capacity_table_is_the_plan_make_package_applies_and_costs_what_make_bench_measured() -> None:
    """docs/deploy.md's table, row by row, against infra.deploy.capacity_plan, and its cost per hour against
    the burst cost per million in docs/figures.md (written by make bench)."""
    from infra.deploy import capacity_plan

    text = (ROOT / "docs" / "deploy.md").read_text()
    section = text.split("### Capacity: one send rate", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| [\d,]+ \|", line)]
    figures = (ROOT / "docs" / "figures.md").read_text()
    burst = float(re.search(r"burst, callbacks to a Lambda function URL .* (\d+\.\d\d)\n", figures)[1])  # type: ignore[index]
    assert len(rows) == 3
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        rate = int(cells[0].replace(",", ""))
        plan = capacity_plan({"SEND_RATE": str(rate), "POLL_CONCURRENCY": "5"})

        def number(cell: str) -> int:
            return int(cell.split(" ")[0].replace(",", ""))

        said = [number(c) for c in cells[1:7]]
        assert said == [plan[k] for k in ("Webhooks", "Facade", "Poll", "Forward", "Send", "twilio_budget")], row
        assert f"(~{plan['sends_per_second']:,})" in cells[5], row
        assert cells[7] == f"${rate * 3600 * burst / 1e6:.2f}", row


def test_the_readmes_capacity_table_says_the_same_plan() -> None:
    from infra.deploy import capacity_plan

    rows = re.findall(
        r"^\| ([\d,]+) \| ([\d /]+) \| ([\d,]+)[^|]* \| (\$[\d.]+) \|$", (ROOT / "README.md").read_text(), re.M
    )
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert [r[0] for r in rows] == ["10", "100", "1,000"]
    for rate, reserved, budget, cost in rows:
        plan = capacity_plan({"SEND_RATE": rate.replace(",", ""), "POLL_CONCURRENCY": "5"})
        names = ("Webhooks", "Facade", "Poll", "Forward", "Send")
        assert [int(n) for n in reserved.split(" / ")] == [plan[k] for k in names]
        assert int(budget.replace(",", "")) == plan["twilio_budget"]
        assert f"| {cost} |" in deploy  # the cost docs/deploy.md's table holds to make bench's figure

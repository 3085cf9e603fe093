"""The repository speaks for itself: no tracked file points to design notes kept outside it.

Methods and standards are cited from docs/ (evaluation.md, standards.md, conventions.md,
architecture.md) or from the national standards themselves. Only `.ci/run` may name the
TimescaleDB build it installs from the directory beside the repository.
"""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = frozenset({".ci/run"})
NOTE_NAMES = ("DESIGN", "STANDARDS", "EVALUATION", "STYLE", "HJ212")
OUTSIDE_DIRECTORY = "shared"
# A note by its file name, or cited by a section sign without it; the notes' directory beside the
# repository, by a relative or absolute path; the packet file kept there.
OUTSIDE = re.compile(
    rf"\b(?:{'|'.join(NOTE_NAMES)})(?:\.md\b|\s*§)"
    rf"|\.\./{OUTSIDE_DIRECTORY}\b|/work/{OUTSIDE_DIRECTORY}\b|hj212-field-packets\.txt"
)


def _tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [name for name in listed.decode().split("\0") if name]


def _outside_references(name: str) -> list[str]:
    path = ROOT / name
    if not path.is_file():  # tracked, but deleted in this checkout
        return []
    data = path.read_bytes()
    if b"\0" in data:  # binary
        return []
    text = data.decode("utf-8", errors="replace")
    return [
        f"{name}:{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), start=1)
        if OUTSIDE.search(line)
    ]


def test_no_tracked_file_points_outside_the_repository() -> None:
    found = [
        reference
        for name in _tracked_files()
        if name not in ALLOWED
        for reference in _outside_references(name)
    ]
    assert found == []


def test_the_scan_finds_what_it_looks_for() -> None:
    """`.ci/run`, the one file allowed to, is found naming the directory beside the repository."""
    assert ".ci/run" in _tracked_files()
    found = _outside_references(".ci/run")
    assert len(found) >= 1
    assert all("shared/timescaledb" in line for line in found)
    assert OUTSIDE.search("see " + "EVALUATION" + ".md §8")
    assert OUTSIDE.search("conventions (" + "DESIGN" + " §9)")
    assert not OUTSIDE.search("see docs/evaluation.md §8 and docs/standards.md §3")
    assert not OUTSIDE.search('STYLE = """')

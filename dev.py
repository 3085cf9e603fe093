#!/usr/bin/env python3
"""EnvLink's quick start, with nothing but Python >= 3.11 installed.

    python3 dev.py demo       embedded PostgreSQL, station catalogue, simulator, API on :8000
    python3 dev.py test       the test suite (extra arguments go to pytest)
    python3 dev.py lint       ruff and mypy
    python3 dev.py envlink …  any `envlink` command (keys, migrate, api, …), from .venv

Each creates ./.venv on first use and (re)installs EnvLink into it whenever pyproject.toml
changes, so it also works where the system Python refuses pip installs.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".envlink-installed"


def ensure_environment() -> Path:
    """The virtualenv's python, with EnvLink and its test extras installed and current."""
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py may be run by an older python3)
        sys.exit(f"EnvLink needs Python >= 3.11; this is {sys.version.split()[0]}")
    python = BIN / "python"
    if not python.exists():
        print(f"creating virtualenv {VENV} ...", flush=True)
        try:
            venv.create(VENV, with_pip=True)
        except (subprocess.CalledProcessError, OSError) as exc:
            sys.exit(
                f"could not create {VENV} ({exc}). On Debian/Ubuntu install the venv module "
                "first: apt install python3-venv"
            )
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text().strip() != wanted:
        print("installing EnvLink and its dependencies into .venv ...", flush=True)
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-e", f"{ROOT}[test,embedded]"],
            check=True,
        )  # fmt: skip
        STAMP.write_text(wanted)
    return python


def run_to_its_end(command: list[str | Path]) -> int:
    """Run `command`, passing it Ctrl-C and SIGTERM once and waiting for it to finish.

    subprocess.call would kill it a quarter of a second after Ctrl-C, while the demo's
    embedded PostgreSQL is still stopping (and leave that server behind). The child runs in a
    process group of its own, so a Ctrl-C reaches it once, from here, not twice (a second
    one means "stop at once" to the API server).
    """
    child = subprocess.Popen(command, process_group=0)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    status = child.wait()
    return 130 if status == -signal.SIGINT else status


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if command not in ("demo", "test", "lint", "envlink"):
        print(__doc__)
        return 0 if command in ("help", "-h", "--help") else 2
    python = ensure_environment()
    os.chdir(ROOT)
    if command == "demo":
        return run_to_its_end([BIN / "envlink", "demo", *rest])
    if command == "envlink":
        return run_to_its_end([BIN / "envlink", *rest])
    if command == "test":
        return subprocess.call([python, "-m", "pytest", *rest])
    status = subprocess.call([BIN / "ruff", "check", "."])
    status |= subprocess.call([BIN / "ruff", "format", "--check", "."])
    return status | subprocess.call([BIN / "mypy"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

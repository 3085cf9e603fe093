"""envlink.runtime.tune_malloc: a large response's buffers are reused, not faulted in anew."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# 100 times, allocate and fill three buffers of about a megabyte, then free them (as a page of
# readings is written and sent), and print the minor page faults it took.
_CYCLE = """
import resource, sys
from envlink.runtime import tune_malloc
tuned = tune_malloc() if sys.argv[1] == "tuned" else False
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    buffers = [b"x" * (size << 10) for size in (1000, 1200, 1400)]
    del buffers
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _CYCLE, mode], cwd=ROOT, capture_output=True, text=True, check=True
    )
    tuned, faults = done.stdout.split()
    return tuned, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")
def test_freed_large_buffers_are_kept_for_the_next() -> None:
    plain_tuned, plain = _faults("plain")
    tuned, faults = _faults("tuned")
    assert (plain_tuned, tuned) == ("False", "True")
    # The three are 900 pages: touched anew (most of them) every time, or once.
    assert plain >= 100 * 600
    assert faults < 2 * 900

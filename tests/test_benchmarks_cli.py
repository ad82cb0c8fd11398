"""Every benchmark's command starts: `--help` of each `make bench*` module exits 0.

The benchmarks import Herald's modules before Django is set up (to build
daphne's arguments, say); an import that needs the app registry breaks them
all at once, and nothing else in the suite would notice.
"""

import subprocess
import sys

import pytest

from tests.server import ROOT

MODULES = [
    path.stem
    for path in sorted((ROOT / "benchmarks").glob("*.py"))
    if path.stem not in {"__init__"}
    and "argparse" in path.read_text()
    and '__name__ == "__main__"' in path.read_text()
]


def test_there_are_benchmarks_to_check():
    assert {"run", "joins", "relay", "identity"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_a_benchmark_command_starts(module):
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout

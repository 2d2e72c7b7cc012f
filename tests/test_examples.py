"""The scripts of ``examples/`` run end to end, as a user runs them.

Each runs in a fresh process with its own budget (about 4 minutes for all
of them on 2 cores); ``python -m pytest -m "not examples"`` leaves them out.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_examples_are_found():
    # A wrong path would leave the parametrised test below with no case.
    assert len(EXAMPLES) >= 5


@pytest.mark.examples
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_example_runs(path, tmp_path):
    # A non-interactive backend: plt.show() returns at once.
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]

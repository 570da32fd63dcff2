"""R1: a short coverage-guided fuzzing run (atheris) over the credential and provisioning parsers.

The run must finish its inputs with no failure (see tests/fuzz_credentials.py for what fails
it) and must find new coverage beyond the seed corpus, which shows the instrumentation is
live. ``make fuzz`` runs ten million inputs. atheris has wheels for x86_64 Linux only, so this
test is deselected on other machines (a Pi), like the hardware tests off a Pi.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.x86_64_only
RUNS = 300_000


def test_fuzzing_the_parsers_finds_new_branches_and_no_failure(tmp_path):
    try:
        import atheris  # noqa: F401
    except ImportError:
        pytest.fail("atheris is not installed: `.venv/bin/pip install 'atheris>=3,<4'` (x86_64 Linux wheels)")
    done = subprocess.run([sys.executable, "-m", "tests.fuzz_credentials", str(tmp_path / "corpus"),
                           f"-runs={RUNS}", "-max_len=4096", "-seed=1", "-rss_limit_mb=2048",
                           f"-artifact_prefix={tmp_path}/"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    log = done.stderr
    assert f"Done {RUNS} runs" in log
    initial = int(re.search(r"INITED cov: (\d+)", log).group(1))
    final = max(int(n) for n in re.findall(r"cov: (\d+)", log))
    assert final > initial + 20, f"coverage went from {initial} to {final} only: is the instrumentation live?"
    assert "Instrumenting firmware.core.credentials.qg1" in log and "Instrumenting firmware.core.cose" in log
    assert "Instrumenting firmware.core.credentials.dcc" in log
    assert re.search(r"slowest input so far: [\d.]+ ms", log)

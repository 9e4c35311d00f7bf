"""The test set-up says what it used and lacks: the run's summary (tests/conftest.py) names the engine
and every skip with its reason; scripts/install-test-tools names the command for each missing tool."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SKIPPING = """
import pytest

def test_needs_a_tool_that_is_missing() -> None:
    pytest.skip("frobnicator not installed (apt-get install frobnicator)")

def test_runs() -> None:
    assert True
"""


def _run(tmp_path: Path, source: str) -> str:
    (tmp_path / "test_sample.py").write_text(source)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_summary_lists_every_skip_with_its_reason(tmp_path: Path) -> None:
    out = _run(tmp_path, SKIPPING)
    summary = out[out.index("hos-search: what this run used") :]
    assert "engine: none started" in summary
    assert "skipped: 1 tests" in summary
    assert "1 × frobnicator not installed (apt-get install frobnicator)  [test_sample.py]" in summary


def test_a_run_without_skips_says_so(tmp_path: Path) -> None:
    out = _run(tmp_path, "def test_runs() -> None:\n    assert True\n")
    assert "skipped: nothing" in out[out.index("hos-search: what this run used") :]


def test_the_set_up_script_names_the_command_for_a_jre_without_javac(tmp_path: Path) -> None:
    jre = tmp_path / "jre"
    (jre / "bin").mkdir(parents=True)
    (jre / "bin" / "java").write_text("#!/bin/sh\nexit 0\n")
    (jre / "bin" / "java").chmod(0o755)
    done = subprocess.run(
        [str(ROOT / "scripts" / "install-test-tools"), "--check"],
        env={"PATH": "/usr/bin:/bin", "JAVA_HOME": str(jre), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr  # never fatal: the tests that need a tool skip, with the reason
    missing = done.stdout[done.stdout.index("MISSING") :]
    assert "JDK 17+ and Maven" in missing and "Fix: sudo apt-get install openjdk-17-jdk-headless maven" in missing

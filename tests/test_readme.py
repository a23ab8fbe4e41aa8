"""The README's Quick start is what CI runs: keep the two in step."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```\n(.*?)```", section, re.S) if block.startswith("pip ")]


def test_quick_start_has_two_commands():
    commands = _quick_start_commands()
    assert len(commands) == 2
    assert commands[1] == "pip install '.[test]' && pytest -q"


def test_ci_runs_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    install_run, install_test = _quick_start_commands()
    assert install_test in ci
    assert install_run in ci
    assert "sample_models/resnet_block.onnx" in install_run

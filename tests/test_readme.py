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
    assert commands[1] == "pip install '.[test,keras]' && pytest -q"  # real TensorFlow for the Keras tests


def test_ci_runs_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    install_run, install_test = _quick_start_commands()
    assert install_test in ci
    assert install_run in ci
    assert "sample_models/resnet_block.onnx" in install_run


def test_python_api_example_runs_and_cleans_up(monkeypatch, capsys):
    """The README's Python API block, run as written from the repository root: it leaves nothing behind."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    monkeypatch.chdir(ROOT)
    before = sorted(p.name for p in ROOT.iterdir())
    exec(compile(code, "README.md", "exec"), {})
    assert sorted(p.name for p in ROOT.iterdir()) == before
    out = capsys.readouterr().out
    assert "bn1 folded forward fc2 None" in out
    assert "folded 2/2 BatchNormalization: 2 forward into Gemm" in out
    assert "verified: 1 output and 2 folded layers within limits over 3 batches" in out


def test_every_test_the_readme_names_exists():
    text = (ROOT / "README.md").read_text()
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    named = set(re.findall(r"`(?:tests/[\w/]+\.py::)?(test_\w+)`", text))
    files = set(re.findall(r"`(tests/test_\w+\.py)`", text))
    assert named and files
    assert sorted(n for n in named if f"def {n}(" not in sources) == []
    assert sorted(f for f in files if not (ROOT / f).is_file()) == []


def test_install_lines_work_from_this_repository():
    # no package-index release yet: `pip install bnfold` would fetch nothing (or somebody else's package)
    text = (ROOT / "README.md").read_text()
    installs = re.findall(r"pip install ([^\n`]+)", text)
    assert installs and not [line for line in installs if re.match(r"['\"]?bnfold\b", line.strip())]
    assert "rev: v" not in text  # no release tag exists to pin

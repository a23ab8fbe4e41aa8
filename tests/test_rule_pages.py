"""rules/*.md: one page per code, fixed headings, examples that trigger their rule, shipped in the wheel."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from importlib.resources import files
from pathlib import Path

import onnx
import onnx.checker
import onnx.parser
import onnx_ir as ir
import pytest
from click.testing import CliRunner

import bnfold
from bnfold import rule_pages
from bnfold.cli import cli
from bnfold.errors import BnfoldError, InputError
from bnfold.lint import RULES, lint_model

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "rules"
HEADINGS = ["What it does", "Why is this bad?", "Example", "How to fix", "Options", "References"]
CODES = sorted(RULES)
# A .keras/.h5 model cannot have BN012 (bnfold lowers Keras weights to plain initializers): its Example
# shows the PyTorch export that causes it and says so.
KERAS_NOT_APPLICABLE = {"BN012"}
# Only a Keras file shows these (ONNX BN always normalizes axis 1): the page has no ONNX block, and its
# example is a shipped Keras sample, next to the clean one.
KERAS_ONLY = {"BN013": ("wrong_bn_axis", "clean"), "BN014": ("pytorch_momentum", "clean")}
KERAS_SAMPLES = ROOT / "sample_models" / "keras"


def _page(code: str) -> str:
    return (RULES_DIR / RULES[code].page).read_text(encoding="utf-8")


def _outside_fences(text: str) -> list[str]:
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _section(text: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"no '## {heading}' section"
    return match.group(1)


def _blocks(text: str, lang: str) -> list[str]:
    return [textwrap.dedent(block) for block in re.findall(rf"^ *```{lang}\n(.*?)^ *```", text, re.S | re.M)]


def _lint_codes(onnx_text: str, name: str) -> set[str]:
    proto = onnx.parser.parse_model(onnx_text)
    onnx.checker.check_model(proto, full_check=True)
    return {f.code for f in lint_model(ir.from_proto(proto), name)}


@pytest.mark.parametrize("code", CODES)
def test_page_has_title_severity_and_headings(code):
    rule = RULES[code]
    text = _page(code)
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0] == f"# {rule.code}: {rule.name}"
    assert lines[1] == f"Default severity: {rule.severity}"
    headings = [line[3:] for line in _outside_fences(text) if line.startswith("## ")]
    assert headings == HEADINGS
    assert not [line for line in _outside_fences(text)[1:] if line.startswith("# ")], "one title only"


def test_every_page_names_a_rule():
    pages = sorted(p.name for p in RULES_DIR.glob("*.md") if p.name != "README.md")
    assert pages == sorted(rule.page for rule in RULES.values())


@pytest.mark.parametrize("code", CODES)
def test_example_has_keras_and_onnx_blocks(code):
    example = _section(_page(code), "Example")
    assert len(_blocks(example, "onnx")) == (0 if code in KERAS_ONLY else 1)
    python = _blocks(example, "python")
    assert python, "no Python (Keras) block"
    if code in KERAS_NOT_APPLICABLE:
        assert "Keras" in example and "cannot show this problem" in example
    else:
        assert any("keras" in block for block in python), "no Keras block"


@pytest.mark.parametrize("code", CODES)
def test_example_triggers_the_rule_and_the_fix_does_not(code):
    text = _page(code)
    if code in KERAS_ONLY:
        from bnfold.keras import load_keras

        problem, fixed = KERAS_ONLY[code]
        assert f"sample_models/keras/{problem}.keras" in text
        for suffix in (".keras", ".h5"):
            assert code in {f.code for f in lint_model(load_keras(KERAS_SAMPLES / f"{problem}{suffix}"), "m")}
            assert code not in {f.code for f in lint_model(load_keras(KERAS_SAMPLES / f"{fixed}{suffix}"), "m")}
        return
    (problem,) = _blocks(_section(text, "Example"), "onnx")
    (fixed,) = _blocks(_section(text, "How to fix"), "onnx")
    assert code in _lint_codes(problem, f"{code}-example.onnx")
    assert code not in _lint_codes(fixed, f"{code}-fixed.onnx")


@pytest.mark.parametrize("code", CODES)
def test_code_blocks_parse(code):
    text = _page(code)
    for block in _blocks(text, "python"):
        ast.parse(block)
    if sys.version_info >= (3, 11):
        import tomllib

        for block in _blocks(text, "toml"):
            tomllib.loads(block)


@pytest.mark.parametrize("code", CODES)
def test_references_are_not_empty(code):
    references = _section(_page(code), "References")
    items = re.split(r"^- ", references, flags=re.M)[1:]
    assert items
    for item in items:
        assert re.search(r"<https://\S+>|\]\(https://\S+\)", item), f"no link in {item!r}"


@pytest.mark.parametrize("code", CODES)
def test_options_name_the_common_ones(code):
    options = _section(_page(code), "Options")
    for needle in ("select", "ignore", "[tool.bnfold.lint.severity]", f'bnfold.ignore = "{code}"'):
        assert needle in options
    specific = {"BN003": "min-normalized-fraction", "BN004": "placement"}
    if code in specific:
        assert f"`{specific[code]}`" in options
    else:
        assert "None beyond the common ones" in options


def test_page_text_reads_every_page():
    for code in CODES:
        assert rule_pages.page_text(code) == _page(code)
    assert rule_pages.page_text(" bn001 ") == _page("BN001")
    assert rule_pages.all_pages() == {code: _page(code) for code in CODES}


def test_unknown_rule_is_an_input_error():
    with pytest.raises(InputError, match=r"unknown rule 'BN099'; `bnfold rule` lists them") as info:
        rule_pages.page_text("BN099")
    assert isinstance(info.value, BnfoldError)


def test_source_checkout_fallback(monkeypatch):
    monkeypatch.setattr(rule_pages, "PACKAGE", "bnfold._no_such_package")
    monkeypatch.setattr(rule_pages, "SOURCE_DIR", RULES_DIR)
    assert rule_pages.page_text("BN007") == _page("BN007")
    monkeypatch.setattr(rule_pages, "SOURCE_DIR", ROOT / "no-such-folder")
    with pytest.raises(BnfoldError, match="missing"):
        rule_pages.page_text("BN007")


def test_installed_package_ships_the_pages():
    if Path(bnfold.__file__).resolve().parents[1] == ROOT:
        pytest.skip("bnfold is imported from the source tree (editable install): pages come from rules/")
    shipped = files("bnfold._rules")
    for rule in RULES.values():
        assert shipped.joinpath(rule.page).read_text(encoding="utf-8") == _page(rule.code)


def test_readme_lists_every_rule():
    readme = (RULES_DIR / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if re.match(r"\| \[BN\d{3}\]", line)]
    assert len(rows) == len(RULES) == 16
    for row, code in zip(rows, CODES, strict=True):
        rule = RULES[code]
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[:3] == [f"[{code}]({rule.page})", rule.name, rule.severity]
        assert cells[3] == rule.summary


def test_wheel_packages_cover_every_subpackage():
    """pyproject lists packages explicitly (package-dir maps rules/ to bnfold._rules): a new one must be added."""
    if sys.version_info < (3, 11):
        pytest.skip("tomllib")
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "bnfold").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert on_disk <= set(setuptools["packages"]), "add the new bnfold subpackage to [tool.setuptools] packages"
    assert setuptools["package-dir"] == {"bnfold._rules": "rules"}
    assert "bnfold._rules" in setuptools["packages"]
    assert "*.md" in setuptools["package-data"]["bnfold._rules"]


def test_catalogue_is_the_rule_registry():
    assert rule_pages.catalogue() == [(r.code, r.name, r.severity, r.summary) for r in RULES.values()]


def test_a_rule_is_found_by_name_too():
    assert rule_pages.page_text("unfolded-batchnorm") == rule_pages.page_text("BN009")
    result = CliRunner().invoke(cli, ["rule", "unfolded-batchnorm"])
    assert result.exit_code == 0 and result.stdout.startswith("# BN009: unfolded-batchnorm\n")


def test_rule_and_help_import_nothing_heavy():
    # `bnfold rule` prints static text: it must not pay for onnx, onnx_ir or numpy (seconds of start-up)
    code = ("import sys\nfrom click.testing import CliRunner\nfrom bnfold.cli import cli\n"
            "for args in (['rule'], ['rule', 'BN001'], ['--help'], ['lint', '--help']):\n"
            "    assert CliRunner().invoke(cli, args).exit_code == 0, args\n"
            "print(sorted(m for m in ('onnx', 'onnx_ir', 'numpy', 'onnxruntime') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

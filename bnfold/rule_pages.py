"""The lint rules' documentation pages: `rules/{code}-{name}.md` (RuleInfo.page), as `bnfold rule CODE` prints them.

    page_text("BN001")   # one page, as Markdown (a rule name works too: page_text("unfolded-batchnorm"))
    catalogue()          # (code, name, severity, summary) of every rule, from the rules/ index
    all_pages()          # {code: page} for every rule, in code order

The pages live in the top-level `rules/` folder. The wheel ships that folder as the package
`bnfold._rules` (pyproject.toml maps it with `package-dir`). In a source checkout, or in an editable
install, that package may not be importable, so the pages are read from `rules/` beside the `bnfold`
package instead.
"""

from __future__ import annotations

import re
from pathlib import Path

from bnfold.errors import BnfoldError, InputError

PACKAGE = "bnfold._rules"
SOURCE_DIR = Path(__file__).resolve().parents[1] / "rules"


def _read(filename: str) -> str | None:
    """The page from the installed package data, else from the source checkout; None when neither has it."""
    from importlib.resources import files

    try:
        resource = files(PACKAGE).joinpath(filename)
        if resource.is_file():
            return resource.read_text(encoding="utf-8")
    except ModuleNotFoundError:
        pass  # not installed as a package: a source checkout or an editable install
    path = SOURCE_DIR / filename
    return path.read_text(encoding="utf-8") if path.is_file() else None


def catalogue() -> list[tuple[str, str, str, str]]:
    """(code, name, default severity, summary) of every rule, read from the rules/ index page: `bnfold rule`
    then imports no rule module (they load onnx_ir). tests/test_rule_pages.py keeps the index equal to
    bnfold.lint.RULES."""
    text = _read("README.md")
    if text is None:
        raise BnfoldError("the rules index README.md is missing from this installation")
    rows = []
    for line in text.splitlines():
        match = re.match(r"\| \[(BN\d{3})\]\([^)]*\) \| ([\w-]+) \| (\w+) \| (.*) \|$", line)
        if match:
            rows.append(match.groups())
    return rows


def resolve(rule: str) -> tuple[str, str]:
    """(code, name) of a rule given by code (case-insensitive) or by name, e.g. "bn009" or
    "unfolded-batchnorm"."""
    wanted = rule.strip()
    for code, name, _severity, _summary in catalogue():
        if wanted.upper() == code or wanted.lower() == name:
            return code, name
    raise InputError(f"unknown rule '{rule}'; `bnfold rule` lists them")


def page_text(rule: str) -> str:
    """The documentation page of a rule given by code or name."""
    code, name = resolve(rule)
    text = _read(f"{code}-{name}.md")
    if text is None:
        raise BnfoldError(f"the documentation page {code}-{name}.md of {code} is missing from this installation")
    return text


def all_pages() -> dict[str, str]:
    """Every rule's page, keyed by code."""
    return {code: page_text(code) for code, *_ in catalogue()}

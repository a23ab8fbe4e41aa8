"""The lint rules' documentation pages: `rules/{code}-{name}.md` (RuleInfo.page), as `bnfold rule CODE` prints them.

    page_text("BN001")   # one page, as Markdown
    all_pages()          # {code: page} for every rule in bnfold.lint.RULES, in code order

The pages live in the top-level `rules/` folder. The wheel ships that folder as the package
`bnfold._rules` (pyproject.toml maps it with `package-dir`). In a source checkout, or in an editable
install, that package may not be importable, so the pages are read from `rules/` beside the `bnfold`
package instead.
"""

from __future__ import annotations

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


def page_text(code: str) -> str:
    """The documentation page of rule `code` (case-insensitive), e.g. "BN001"."""
    from bnfold.lint import RULES

    rule = RULES.get(code.strip().upper())
    if rule is None:
        raise InputError(f"unknown rule '{code}'; `bnfold rule` lists them")
    text = _read(rule.page)
    if text is None:
        raise BnfoldError(f"the documentation page {rule.page} of {rule.code} is missing from this installation")
    return text


def all_pages() -> dict[str, str]:
    """Every rule's page, keyed by code."""
    from bnfold.lint import RULES

    return {code: page_text(code) for code in sorted(RULES)}

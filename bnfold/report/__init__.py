"""Reporters: render lint findings as text, JSON, SARIF, GitHub workflow commands or Markdown.

    from bnfold.report import render
    out = render(findings, "sarif", rules=RULES, files=["a.onnx", "b.onnx"])

Pure Python and stdlib only: rendering never imports onnx, onnx_ir or numpy, and no reporter imports
`bnfold.lint` at run time (importing that package loads every rule, and so onnx_ir).

`files` is every model path that was checked, in order, so a clean run still names what it checked.
Findings are rendered in the order given (the linter's: file, then rule, then graph order).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bnfold.lint.finding import Finding, RuleInfo

FORMATS = ("text", "json", "sarif", "github", "markdown")

# Base URL of the rule documentation pages; a rule's page is DOCS_URL + RuleInfo.page.
DOCS_URL = "https://github.com/bnfold/bnfold/blob/main/rules/"

__all__ = ["DOCS_URL", "FORMATS", "render"]


def render(findings: list[Finding], fmt: str, *, rules: dict[str, RuleInfo], files: list[str],
           statistics: bool = False, errors: dict[str, str] | None = None) -> str:
    """The report of `findings` on the models `files`, in format `fmt` (one of FORMATS).

    `rules` maps every selected rule code to its RuleInfo (SARIF lists them all, Markdown links them).
    `statistics` adds per-rule counts to the text, Markdown and JSON reports (the CLI refuses it for the
    others).
    `errors` maps each model that could not be read to why: every format reports them (the text report
    counts them in its summary; the lines themselves go to stderr).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; expected one of {', '.join(FORMATS)}")
    module = importlib.import_module(f"bnfold.report.{fmt}")
    return module.render(list(findings), rules=rules, files=list(files), statistics=statistics,
                         errors=dict(errors or {}))

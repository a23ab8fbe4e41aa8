"""Markdown report (`--format markdown`) for `$GITHUB_STEP_SUMMARY` and pull-request comments.

    ### bnfold lint

    Found 1 finding (1 warning) in 1 of 2 models.

    | Severity | Code | Model | Node | Message | Fix |
    | --- | --- | --- | --- | --- | --- |
    | warning | [BN001](…/BN001-…md) | `a.onnx` | `conv1` | Conv 'conv1' has a bias … | drop the bias … |

A clean run reads "No findings: all checks passed (2 models)." Cells escape `|`, `<` and line breaks;
messages keep their inline Markdown (backticks). With statistics, a per-rule count table follows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bnfold.report import DOCS_URL
from bnfold.report._common import (
    all_files,
    error_text,
    files_with_findings,
    keras_suffix,
    plural,
    rule_statistics,
    summary_counts,
    unreadable,
)

if TYPE_CHECKING:
    from bnfold.lint.finding import Finding, RuleInfo

HEADING = "### bnfold lint"


def render(findings: list[Finding], *, rules: dict[str, RuleInfo], files: list[str],
           statistics: bool = False, errors: dict[str, str] | None = None) -> str:
    checked = all_files(findings, [*files, *(errors or {})])
    lines = [HEADING, ""]
    for path, message in (errors or {}).items():
        lines.append(f"**Could not read** {code_span(path)}: {cell(error_text(path, message))}")
    if errors:
        lines.append("")
    if not findings:
        lines.append(f"No findings; {len(errors)} of {plural(len(checked), 'model')} could not be read." if errors
                     else f"No findings: all checks passed ({plural(len(checked), 'model')}).")
        return "\n".join(lines) + "\n"
    lines.append(f"Found {summary_counts(findings)} in {len(files_with_findings(findings))} of "
                 f"{plural(len(checked), 'model')}{unreadable(errors)}.")
    lines += ["", "| Severity | Code | Model | Node | Message | Fix |", "| --- | --- | --- | --- | --- | --- |"]
    for f in findings:
        node = f"{code_span(f.node)} (graph {code_span(f.graph)})" if f.graph else code_span(f.node)
        cells = [f.severity, _rule_link(f.code, rules), code_span(f.path), node,
                 cell(f.message + keras_suffix(f)), cell(f.fix)]
        lines.append("| " + " | ".join(cells) + " |")
    if statistics:
        lines += ["", "| Count | Code | Rule | Severity |", "| ---: | --- | --- | --- |"]
        for count, code, name, severity in rule_statistics(findings):
            lines.append(f"| {count} | {_rule_link(code, rules)} | {cell(name)} | {severity} |")
    return "\n".join(lines) + "\n"


def cell(text: str) -> str:
    """Text safe inside a table cell: `|` escaped, `<` as an entity, line breaks as <br>."""
    text = text.replace("|", "\\|").replace("<", "&lt;")
    return "<br>".join(part.strip() for part in text.splitlines()) if "\n" in text or "\r" in text else text


def code_span(text: str) -> str:
    """`text` as an inline code span that survives backticks and `|` inside a table cell."""
    text = " ".join(text.splitlines()).replace("|", "\\|")
    fence = "`"
    while fence in text:
        fence += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _rule_link(code: str, rules: dict[str, RuleInfo]) -> str:
    rule = rules.get(code)
    return f"[{code}]({DOCS_URL}{rule.page})" if rule else code

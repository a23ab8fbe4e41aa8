"""Human-readable report, one finding a line plus its fix:

    models/a.onnx:conv1: BN001 [warning] Conv 'conv1' has a bias B that ... (Keras layer 'dense_1')
      fix: drop the bias (Keras: use_bias=False; PyTorch: bias=False)

    Found 1 finding (1 warning) in 1 of 2 files.

A node inside a subgraph reads `path:[graph body] node: ...`. With statistics, a table of counts per rule
(most frequent first) comes before the summary line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bnfold.report._common import (
    all_files,
    files_with_findings,
    keras_suffix,
    node_label,
    plural,
    rule_statistics,
    summary_counts,
    unreadable,
)

if TYPE_CHECKING:
    from bnfold.lint.finding import Finding, RuleInfo


def render(findings: list[Finding], *, rules: dict[str, RuleInfo], files: list[str],
           statistics: bool = False, errors: dict[str, str] | None = None) -> str:
    checked = all_files(findings, [*files, *(errors or {})])
    lines: list[str] = []
    for f in findings:
        lines.append(f"{f.path}:{node_label(f)}: {f.code} [{f.severity}] {f.message}{keras_suffix(f)}")
        lines.append(f"  fix: {f.fix}")
    if findings:
        lines.append("")
    if statistics and findings:
        lines.extend(statistics_table(findings))
        lines.append("")
    if findings:
        lines.append(f"Found {summary_counts(findings)} in {len(files_with_findings(findings))} of "
                     f"{plural(len(checked), 'file')}{unreadable(errors)}.")
    elif errors:  # not "all checks passed": some files were not checked at all
        lines.append(f"No findings; {len(errors)} of {plural(len(checked), 'file')} could not be read.")
    else:
        lines.append(f"All checks passed ({plural(len(checked), 'file')}).")
    return "\n".join(lines) + "\n"


def statistics_table(findings: list[Finding]) -> list[str]:
    """'  3  BN001  redundant-bias-before-batchnorm  [warning]', one row per rule, columns aligned."""
    rows = rule_statistics(findings)
    count_width = max(len(str(count)) for count, *_ in rows)
    name_width = max(len(name) for _, _, name, _ in rows)
    return [f"  {count:>{count_width}}  {code}  {name:<{name_width}}  [{severity}]"
            for count, code, name, severity in rows]

"""Helpers shared by the reporters: severity counts, plurals, node labels."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bnfold.lint.finding import Finding

# The values of Finding.severity, most severe first. They mirror bnfold.lint.finding (ERROR, WARNING, INFO),
# which cannot be imported here without loading every rule (tests/test_report.py checks they agree).
ERROR = "error"
WARNING = "warning"
INFO = "info"
SEVERITIES_DESC = (ERROR, WARNING, INFO)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def severity_counts(findings: list[Finding]) -> dict[str, int]:
    """{"error": e, "warning": w, "info": i}, always all three keys, in that order."""
    counts = Counter(f.severity for f in findings)
    return {sev: counts.get(sev, 0) for sev in SEVERITIES_DESC}


def all_files(findings: list[Finding], files: list[str]) -> list[str]:
    """`files` without duplicates, plus any finding path missing from it, in first-seen order."""
    return list(dict.fromkeys([*files, *(f.path for f in findings)]))


def unreadable(errors: dict[str, str] | None) -> str:
    """'; 1 could not be read' for the summary line, or ''."""
    return f"; {len(errors)} could not be read" if errors else ""


def error_text(path: str, message: str) -> str:
    """The error without the path it starts with (the reporters name the file themselves)."""
    return message[len(path) + 2:] if message.startswith(f"{path}: ") else message


def files_with_findings(findings: list[Finding]) -> list[str]:
    return list(dict.fromkeys(f.path for f in findings))


def summary_counts(findings: list[Finding]) -> str:
    """'3 findings (1 error, 2 warnings)': severities that occur, "info" uncountable ('4 findings (4 info)')."""
    counts = severity_counts(findings)
    parts = [plural(counts[ERROR], "error"), plural(counts[WARNING], "warning"), f"{counts[INFO]} info"]
    return f"{plural(len(findings), 'finding')} ({', '.join(p for p in parts if not p.startswith('0 '))})"


def node_label(finding: Finding) -> str:
    """The node name, prefixed with `[graph g] ` when the node is in a subgraph."""
    return f"[graph {finding.graph}] {finding.node}" if finding.graph else finding.node


def keras_suffix(finding: Finding) -> str:
    return f" (Keras layer '{finding.keras_layer}')" if finding.keras_layer else ""


def rule_statistics(findings: list[Finding]) -> list[tuple[int, str, str, str]]:
    """(count, code, name, severity) per rule code, most frequent first, then by code.

    The severity is the highest among that code's findings (they differ only under overrides).
    """
    rows: dict[str, list] = {}
    for f in findings:
        row = rows.setdefault(f.code, [0, f.code, f.name, f.severity])
        row[0] += 1
        if SEVERITIES_DESC.index(f.severity) < SEVERITIES_DESC.index(row[3]):
            row[3] = f.severity
    return sorted((tuple(row) for row in rows.values()), key=lambda r: (-r[0], r[1]))

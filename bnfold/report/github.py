"""GitHub Actions workflow commands (`--format github`): one annotation per finding.

    ::warning file=models/a.onnx,line=1,title=BN001 redundant-bias-before-batchnorm::conv1: Conv 'conv1' ...

error -> `::error`, warning -> `::warning`, info -> `::notice`. Values are escaped as the runner expects:
in the message `%`, CR and LF become `%25`, `%0D`, `%0A`; in the properties `:` and `,` too (`%3A`, `%2C`).
A model that could not be read is an `::error` on its file. A clean run prints nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bnfold.report._common import ERROR, INFO, WARNING, error_text, keras_suffix, node_label

if TYPE_CHECKING:
    from bnfold.lint.finding import Finding, RuleInfo

COMMANDS = {ERROR: "error", WARNING: "warning", INFO: "notice"}


def escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def render(findings: list[Finding], *, rules: dict[str, RuleInfo], files: list[str],
           statistics: bool = False, errors: dict[str, str] | None = None) -> str:
    lines = []
    for f in findings:
        command = COMMANDS.get(f.severity, "warning")
        properties = f"file={escape_property(f.path)},line=1,title={escape_property(f'{f.code} {f.name}')}"
        data = escape_data(f"{node_label(f)}: {f.message}{keras_suffix(f)}")
        lines.append(f"::{command} {properties}::{data}")
    for path, message in (errors or {}).items():
        lines.append(f"::error file={escape_property(path)},title=bnfold could not read this model::"
                     f"{escape_data(error_text(path, message))}")
    return "".join(line + "\n" for line in lines)

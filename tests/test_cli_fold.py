"""`bnfold fold IN OUT` end to end: exit codes, messages, what is (and is not) written, and the JSON report.

Models are the shipped samples (copied into tmp_path when a test may write next to them) or small models
built here with onnx.helper. Every comparison runs real onnxruntime with graph optimizations disabled:
at the default level onnxruntime folds Conv+BN itself, which would make a before/after check circular.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import ort_run
from onnx import TensorProto, helper, numpy_helper

import bnfold
from bnfold.cli import cli
from bnfold.errors import BnfoldError

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
RESNET = SAMPLES / "resnet_block.onnx"
FP16 = SAMPLES / "fp16_conv_bn.onnx"
TRAINING = SAMPLES / "training_mode_bn.onnx"

RESNET_PAIRS = {"bn1": "conv1", "bn2": "conv2", "bn3": "conv3", "bn4": "conv4", "bn_down": "conv_down"}
BNFOLD_SCRIPT = Path(sys.executable).with_name("bnfold")
SUBPROCESS_ENV = {**os.environ, "PYTHONIOENCODING": "utf-8"}


# --------------------------------------------------------------------------------------------------------
# helpers


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def stdout_lines(result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.strip()]


def assert_same_outputs(before: Path, after: Path, feeds: dict[str, np.ndarray], rtol=1e-4, atol=1e-5):
    ref, got = ort_run(before, feeds), ort_run(after, feeds)
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        assert r.shape == g.shape and r.dtype == g.dtype
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol)


def op_types(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def node_names(path: Path) -> set[str]:
    return {n.name for n in onnx.load(str(path)).graph.node}


def resnet_feeds(batch: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(7).standard_normal((batch, 16, 32, 32)).astype(np.float32)}


def conv_bn_model(*, tail: str = "relu", ir_version: int = 8, opset: int = 17,
                  initializers_as_inputs: bool = False, seed: int = 0) -> onnx.ModelProto:
    """x[1,3,8,8] -> conv1 (3x3, pad 1) -> bn1 -> relu1 (or a com.example custom op 'custom1') -> y."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "W"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "s"),
        numpy_helper.from_array(rng.normal(0.0, 0.1, 4).astype(np.float32), "b"),
        numpy_helper.from_array(rng.normal(0.0, 0.5, 4).astype(np.float32), "m"),
        numpy_helper.from_array(rng.uniform(0.5, 2.0, 4).astype(np.float32), "v"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"], name="bn1"),
    ]
    opsets = [helper.make_opsetid("", opset)]
    if tail == "custom":
        nodes.append(helper.make_node("MyOp", ["n"], ["y"], name="custom1", domain="com.example"))
        opsets.append(helper.make_opsetid("com.example", 1))
    else:
        nodes.append(helper.make_node("Relu", ["n"], ["y"], name="relu1"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    if initializers_as_inputs:
        inputs += [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "conv_bn", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)


def small_feeds() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)}


# --------------------------------------------------------------------------------------------------------
# the happy path


def test_fold_resnet_block(tmp_path):
    out = tmp_path / "out.onnx"
    result = invoke("fold", RESNET, out)

    assert result.exit_code == 0, result.output
    assert "folded 5/5 BatchNormalization" in result.stdout
    assert "verified:" in result.stdout
    assert f"wrote {out}" in result.stdout
    assert out.is_file()
    assert "BatchNormalization" not in op_types(out)
    # the partner Convs keep their names; the graph keeps its input and output names
    assert set(RESNET_PAIRS.values()) <= node_names(out)
    folded = onnx.load(str(out))
    original = onnx.load(str(RESNET))
    assert [i.name for i in folded.graph.input] == [i.name for i in original.graph.input] == ["x"]
    assert [o.name for o in folded.graph.output] == [o.name for o in original.graph.output] == ["y"]
    onnx.checker.check_model(folded, full_check=True)
    assert_same_outputs(RESNET, out, resnet_feeds())
    assert sorted(os.listdir(tmp_path)) == ["out.onnx"]


def test_results_go_to_stdout_and_diagnostics_to_stderr(tmp_path):
    out = tmp_path / "out.onnx"
    result = invoke("fold", RESNET, out)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # a short run off a terminal has no progress lines
    lines = stdout_lines(result)
    assert lines[5] == "folded 5/5 BatchNormalization: 5 backward into Conv; 0 skipped; 16 nodes become 11"
    assert lines[-2:] == ["verified: 1 output and 5 folded layers within limits over 3 batches", f"wrote {out}"]
    refused = invoke("fold", tmp_path / "missing.onnx", tmp_path / "o.onnx")
    assert refused.exit_code == 2 and refused.stdout == ""
    assert stderr_lines(refused) == [
        f"error: Invalid value for 'IN': {tmp_path / 'missing.onnx'} does not exist (see `bnfold fold --help`)"]


def test_fold_prints_a_plan_line_per_bn(tmp_path):
    result = invoke("fold", RESNET, tmp_path / "out.onnx")
    assert result.exit_code == 0, result.output
    for bn, conv in RESNET_PAIRS.items():
        assert f"BatchNormalization '{bn}': folded backward into Conv '{conv}'" in result.stdout


# --------------------------------------------------------------------------------------------------------
# never overwrite the input unless told


@pytest.mark.parametrize("spelling", ["same", "dot-slash", "absolute", "symlink"])
def test_out_equal_to_in_is_refused_without_in_place(tmp_path, monkeypatch, spelling):
    model = tmp_path / "in.onnx"
    shutil.copy(RESNET, model)
    original = model.read_bytes()
    monkeypatch.chdir(tmp_path)
    out = {"same": "in.onnx", "dot-slash": "./in.onnx", "absolute": str(model), "symlink": "link.onnx"}[spelling]
    if spelling == "symlink":
        (tmp_path / "link.onnx").symlink_to(model)

    result = invoke("fold", "in.onnx", out)

    assert result.exit_code == 2, result.output
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "--in-place" in lines[0]
    assert "Traceback" not in result.output
    assert model.read_bytes() == original
    expected = ["in.onnx", "link.onnx"] if spelling == "symlink" else ["in.onnx"]
    assert sorted(os.listdir(tmp_path)) == expected


@pytest.mark.parametrize("with_out", [False, True], ids=["OUT-omitted", "OUT-is-IN"])
def test_in_place_overwrites_input(tmp_path, with_out):
    model = tmp_path / "in.onnx"
    shutil.copy(RESNET, model)
    feeds = resnet_feeds()
    expected = ort_run(RESNET, feeds)

    args = ["fold", model, "--in-place"] + ([model] if with_out else [])
    result = invoke(*args)

    assert result.exit_code == 0, result.output
    assert "folded 5/5 BatchNormalization" in result.stdout
    assert model.read_bytes() != RESNET.read_bytes()
    assert "BatchNormalization" not in op_types(model)
    for want, got in zip(expected, ort_run(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["in.onnx"]


def test_missing_out_without_in_place_is_a_usage_error(tmp_path):
    model = tmp_path / "in.onnx"
    shutil.copy(RESNET, model)
    result = invoke("fold", model)
    assert result.exit_code == 2, result.output
    assert "--in-place" in result.stderr
    assert "Traceback" not in result.output
    assert model.read_bytes() == RESNET.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["in.onnx"]


# --------------------------------------------------------------------------------------------------------
# --dry-run and --report


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    model = tmp_path / "in.onnx"
    shutil.copy(RESNET, model)
    out = tmp_path / "out.onnx"

    result = invoke("fold", model, out, "--dry-run")

    assert result.exit_code == 0, result.output
    plan = [line for line in stdout_lines(result) if "BatchNormalization '" in line]
    assert len(plan) == 5
    for bn, conv in RESNET_PAIRS.items():
        assert f"  BatchNormalization '{bn}': would fold backward into Conv '{conv}'" in plan
    assert ("would fold 5/5 BatchNormalization: 5 backward into Conv; 0 would be skipped; 16 nodes would become 11; nothing "
            "written (--dry-run)") in stdout_lines(result)
    assert "verified:" not in result.stdout and "wrote" not in result.stdout
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["in.onnx"]
    assert model.read_bytes() == RESNET.read_bytes()


def test_dry_run_without_out(tmp_path):
    model = tmp_path / "in.onnx"
    shutil.copy(RESNET, model)
    result = invoke("fold", model, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "BatchNormalization 'bn_down': would fold backward into Conv 'conv_down'" in result.stdout
    assert model.read_bytes() == RESNET.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["in.onnx"]


DEGENERATE = SAMPLES / "lint" / "bn008_degenerate_statistics.onnx"


def test_a_degenerate_bn_is_skipped_with_what_is_wrong_and_the_copy_is_written(tmp_path):
    result = invoke("fold", DEGENERATE, tmp_path / "out.onnx")
    assert result.exit_code == 0, result.output
    assert ("  BatchNormalization 'bn1': skipped (degenerate-statistics): var + epsilon <= 0 in 1 channel(s) (min "
            "var -0.25): the model's output is not finite in those channels") in stdout_lines(result)
    assert (tmp_path / "out.onnx").read_bytes() == DEGENERATE.read_bytes()


@pytest.mark.parametrize("dry_run", [False, True])
def test_fail_on_skip_gates_ci_and_writes_nothing(tmp_path, dry_run):
    out, report_path = tmp_path / "out.onnx", tmp_path / "report.json"
    args = ["--dry-run"] if dry_run else []
    result = invoke("fold", DEGENERATE, out, "--fail-on-skip", "training-mode,degenerate-statistics",
                    "--report", report_path, *args)
    assert result.exit_code == 1, result.output
    gate = "1 skipped for degenerate-statistics (1), which --fail-on-skip refuses"
    assert stdout_lines(result)[-1] == (gate if dry_run else f"{gate}: {out} not written")
    assert not out.exists()
    assert json.loads(report_path.read_text(encoding="utf-8"))["fail_on_skip"] == gate
    # a reason that did not happen does not gate
    assert invoke("fold", DEGENERATE, out, "--fail-on-skip", "training-mode").exit_code == 0


def test_fail_on_skip_rejects_an_unknown_reason(tmp_path):
    result = invoke("fold", RESNET, tmp_path / "out.onnx", "--fail-on-skip", "degenerate")
    assert result.exit_code == 2
    assert "Invalid value for --fail-on-skip: unknown reason degenerate (one of training-mode, " in result.output
    assert not (tmp_path / "out.onnx").exists()


def test_report_lists_every_bn(tmp_path):
    out, report_path = tmp_path / "out.onnx", tmp_path / "report.json"
    result = invoke("fold", RESNET, out, "--report", report_path)

    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["version"] == 2
    assert report["input"] == str(RESNET) and report["output"] == str(out)
    assert report["nodes_before"] == 16 and report["nodes_after"] == 11
    assert report["removed_initializer_inputs"] == []
    decisions = report["decisions"]
    assert isinstance(decisions, list) and len(decisions) == 5
    by_node = {d["node"]: d for d in decisions}
    assert set(by_node) == set(RESNET_PAIRS)
    for bn, conv in RESNET_PAIRS.items():
        d = by_node[bn]
        assert {k: d[k] for k in ("node", "op_type", "outcome", "direction", "partner", "partner_op", "reason")} == {
            "node": bn, "op_type": "BatchNormalization", "outcome": "folded", "direction": "backward",
            "partner": conv, "partner_op": "Conv", "reason": None,
        }
    verify = report["verify"]
    assert (verify["ok"], verify["batches"], verify["criterion"]) == (True, 3, "noise")
    assert [o["name"] for o in verify["outputs"]] == ["y"]
    assert [(c["name"], c["original"]) for c in verify["layers"]] == [
        (f"Conv '{conv}'", bn) for bn, conv in RESNET_PAIRS.items()]
    for c in verify["outputs"] + verify["layers"]:
        assert c["ok"] and 0 <= c["error"] <= c["limit"] == pytest.approx(4 * c["noise"] + 8 * 2.0 ** -23)


def test_report_gives_the_range_growth_of_each_fold(tmp_path):
    # bn1's channel 5 has running variance 1e-4: its scale is ~46x the others' at the weight's largest entry
    sample = SAMPLES / "lint" / "bn015_batchnorm_inflates_folded_weight_range.onnx"
    out, report_path = tmp_path / "out.onnx", tmp_path / "report.json"
    result = invoke("fold", sample, out, "--report", report_path)
    assert result.exit_code == 0, result.output
    (decision,) = json.loads(report_path.read_text(encoding="utf-8"))["decisions"]
    assert decision["worst_channel"] == 5
    assert decision["range_growth"] == pytest.approx(45.85, abs=0.01)
    assert ("BatchNormalization 'bn1': folded backward into Conv 'conv1' (widens the weight's per-tensor range "
            "46x, channel 5: quantize it per channel; BN015)") in result.stdout
    folded = numpy_helper.to_array(next(t for t in onnx.load(out).graph.initializer if t.dims[0] == 8
                                        and len(t.dims) == 4))
    original = numpy_helper.to_array(next(t for t in onnx.load(sample).graph.initializer if t.name == "conv1.weight"))
    scale = np.abs(folded).reshape(8, -1).max(1) / np.abs(original).reshape(8, -1).max(1)
    # the figure is the folded range over the range a uniform (median) scale would give
    assert np.abs(folded).max() / (np.median(scale) * np.abs(original).max()) == pytest.approx(45.85, rel=1e-3)

    assert invoke("fold", RESNET, tmp_path / "o.onnx", "--report", tmp_path / "r.json").exit_code == 0
    growths = [d["range_growth"] for d in json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["decisions"]]
    assert len(growths) == 5 and all(1 <= g < 2 for g in growths)  # trained-like statistics: a near-uniform fold


@pytest.mark.parametrize("limit, folded", [("50", True), ("10", False)])
def test_max_range_growth_refuses_folds_that_widen_the_range_past_it(tmp_path, limit, folded):
    """The BN015 sample widens conv1's per-tensor range 46x: under --max-range-growth 10 the fold is refused
    (range-growth) and the BN stays, so per-tensor int8 keeps its levels; under 50 it folds."""
    sample = SAMPLES / "lint" / "bn015_batchnorm_inflates_folded_weight_range.onnx"
    out = tmp_path / "out.onnx"
    result = invoke("fold", sample, out, "--max-range-growth", limit)
    assert result.exit_code == 0, result.output
    bn_left = sum(n.op_type == "BatchNormalization" for n in onnx.load(out).graph.node)
    assert bn_left == (0 if folded else 1)
    if not folded:
        assert ("BatchNormalization 'bn1': skipped (range-growth): folding widens the per-tensor weight range of "
                "Conv 'conv1' 46x (BN channel 5), over --max-range-growth 10") in result.stdout
    gate = invoke("fold", sample, tmp_path / "gated.onnx", "--max-range-growth", limit, "--fail-on-skip",
                  "range-growth")
    assert gate.exit_code == (0 if folded else 1)


def test_max_range_growth_below_one_is_a_usage_error(tmp_path):
    result = invoke("fold", RESNET, tmp_path / "o.onnx", "--max-range-growth", "0.5")
    assert result.exit_code == 2 and "0.5 is not in the range x>=1" in result.output
    assert not (tmp_path / "o.onnx").exists()


def test_report_training_mode_bn_is_skipped_and_model_still_written(tmp_path):
    out, report_path = tmp_path / "out.onnx", tmp_path / "report.json"
    result = invoke("fold", TRAINING, out, "--report", report_path)

    assert result.exit_code == 0, result.output
    assert "folded 0/1 BatchNormalization" in result.stdout
    assert "1 training-mode" in result.stdout
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["version"] == 2
    assert len(report["decisions"]) == 1
    d = report["decisions"][0]
    assert (d["node"], d["op_type"], d["outcome"], d["direction"], d["partner"], d["reason"]) == (
        "bn1", "BatchNormalization", "skipped", None, None, "training-mode")
    assert out.is_file()
    bns = [n for n in onnx.load(str(out)).graph.node if n.op_type == "BatchNormalization"]
    assert [n.name for n in bns] == ["bn1"]
    assert helper.get_attribute_value(next(a for a in bns[0].attribute if a.name == "training_mode")) == 1


def test_dry_run_report_has_no_output(tmp_path):
    report_path = tmp_path / "report.json"
    result = invoke("fold", RESNET, tmp_path / "out.onnx", "--dry-run", "--report", report_path)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["output"] is None
    assert len(report["decisions"]) == 5
    assert "verify" not in report
    assert sorted(os.listdir(tmp_path)) == ["report.json"]


def test_report_into_missing_folder_is_a_one_line_error(tmp_path):
    """A --report path in a folder that does not exist is a user error (exit 2, one line), not a crash."""
    result = invoke("fold", RESNET, tmp_path / "out.onnx", "--report", tmp_path / "nope" / "report.json")
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    error_lines = [line for line in stderr_lines(result) if line.startswith("error: ")]
    assert len(error_lines) == 1 and "nope" in error_lines[0]


# --------------------------------------------------------------------------------------------------------
# verification failure


def test_verification_failure_writes_nothing(tmp_path):
    model = tmp_path / "in.onnx"
    shutil.copy(FP16, model)
    out = tmp_path / "out.onnx"

    # fp16 weights rounded once after folding change the last bits: exact comparison must fail
    result = invoke("fold", model, out, "--atol", "0", "--rtol", "0")

    assert result.exit_code == 1, result.output
    assert "MISMATCH" in result.stdout
    assert "not written" in result.stdout
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["in.onnx"]  # no staged temp folder left behind
    assert model.read_bytes() == FP16.read_bytes()


def test_verification_failure_in_place_keeps_input(tmp_path):
    model = tmp_path / "in.onnx"
    shutil.copy(FP16, model)
    result = invoke("fold", model, "--in-place", "--atol", "0", "--rtol", "0")
    assert result.exit_code == 1, result.output
    assert model.read_bytes() == FP16.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["in.onnx"]


def test_verification_failure_with_force_writes_and_exits_1(tmp_path):
    model = tmp_path / "in.onnx"
    shutil.copy(FP16, model)
    out, report_path = tmp_path / "out.onnx", tmp_path / "report.json"

    result = invoke("fold", model, out, "--atol", "0", "--rtol", "0", "--force", "--report", report_path)

    assert result.exit_code == 1, result.output
    assert "written because of --force" in result.stdout
    assert out.is_file()
    assert "BatchNormalization" not in op_types(out)
    assert sorted(os.listdir(tmp_path)) == ["in.onnx", "out.onnx", "report.json"]
    assert json.loads(report_path.read_text(encoding="utf-8"))["verify"]["ok"] is False


def test_fp16_sample_verifies_against_its_fp16_noise(tmp_path):
    out = tmp_path / "out.onnx"
    result = invoke("fold", FP16, out)
    assert result.exit_code == 0, result.output
    assert "folded 1/1 BatchNormalization" in result.stdout
    assert "verified: 1 output and 1 folded layer within limits over 3 batches" in result.stdout
    assert "BatchNormalization" not in op_types(out)
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


# --------------------------------------------------------------------------------------------------------
# bad input


def test_nonexistent_input(tmp_path):
    out = tmp_path / "out.onnx"
    result = invoke("fold", tmp_path / "missing.onnx", out)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("content", [b"this is not a model\n", b"", RESNET.read_bytes()[:40000]],
                         ids=["text", "empty", "truncated"])
def test_not_a_model_is_a_one_line_error(tmp_path, content):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(content)
    out = tmp_path / "out.onnx"

    result = invoke("fold", bad, out)

    assert result.exit_code == 2, result.output
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert "not" in lines[0] and "x.onnx" in lines[0]
    assert "Traceback" not in result.output
    assert sorted(os.listdir(tmp_path)) == ["x.onnx"]


def test_out_in_missing_folder(tmp_path):
    out = tmp_path / "nope" / "out.onnx"
    result = invoke("fold", RESNET, out)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in stderr_lines(result) if line.startswith("error: ")]
    assert len(error_lines) == 1 and "does not exist" in error_lines[0]
    assert not (tmp_path / "nope").exists()


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_text("this is not a model\n")

    result = invoke("--debug", "fold", bad, tmp_path / "out.onnx")
    assert isinstance(result.exception, BnfoldError)
    assert result.exit_code != 0

    proc = subprocess.run([sys.executable, "-m", "bnfold", "--debug", "fold", str(bad), str(tmp_path / "out.onnx")],
                          capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    assert "InputError" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["x.onnx"]


# --------------------------------------------------------------------------------------------------------
# models onnxruntime cannot run


def test_model_onnxruntime_cannot_run(tmp_path):
    model = tmp_path / "in.onnx"
    onnx.save(conv_bn_model(tail="custom"), str(model))
    out = tmp_path / "out.onnx"

    result = invoke("fold", model, out)

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in stderr_lines(result) if line.startswith("error: ")]
    assert len(error_lines) == 1 and "--no-verify" in error_lines[0]
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["in.onnx"]


def test_no_verify_writes_a_model_onnxruntime_cannot_run(tmp_path):
    model = tmp_path / "in.onnx"
    onnx.save(conv_bn_model(tail="custom"), str(model))
    out = tmp_path / "out.onnx"

    result = invoke("fold", model, out, "--no-verify")

    assert result.exit_code == 0, result.output
    assert "folded 1/1 BatchNormalization" in result.stdout
    assert "verified:" not in result.stdout
    folded = onnx.load(str(out))
    assert [(n.op_type, n.name, n.domain) for n in folded.graph.node] == [
        ("Conv", "conv1", ""), ("MyOp", "custom1", "com.example")]
    assert sorted(os.listdir(tmp_path)) == ["in.onnx", "out.onnx"]


# --------------------------------------------------------------------------------------------------------
# initializers that are also graph inputs


def test_strict_inputs_refuses_overridable_parameters(tmp_path):
    model = tmp_path / "in.onnx"
    onnx.save(conv_bn_model(ir_version=4, opset=9, initializers_as_inputs=True), str(model))
    out, report_path = tmp_path / "out.onnx", tmp_path / "report.json"

    result = invoke("fold", model, out, "--strict-inputs", "--report", report_path)

    assert result.exit_code == 0, result.output
    assert "1 overridable-parameters" in result.stdout
    (d,) = json.loads(report_path.read_text(encoding="utf-8"))["decisions"]
    assert (d["node"], d["outcome"], d["reason"]) == ("bn1", "skipped", "overridable-parameters")
    folded = onnx.load(str(out))
    assert [n.op_type for n in folded.graph.node] == ["Conv", "BatchNormalization", "Relu"]
    assert [i.name for i in folded.graph.input] == ["x", "W", "s", "b", "m", "v"]


def test_overridable_parameters_fold_by_default(tmp_path):
    model = tmp_path / "in.onnx"
    onnx.save(conv_bn_model(ir_version=4, opset=9, initializers_as_inputs=True), str(model))
    out, report_path = tmp_path / "out.onnx", tmp_path / "report.json"

    result = invoke("fold", model, out, "--report", report_path)

    assert result.exit_code == 0, result.output
    assert "folded 1/1 BatchNormalization" in result.stdout
    assert "removed 5 initializer graph inputs" in result.stdout
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert sorted(report["removed_initializer_inputs"]) == ["W", "b", "m", "s", "v"]
    (d,) = report["decisions"]
    assert (d["node"], d["outcome"], d["partner"], d["overridable"]) == ("bn1", "folded", "conv1", True)
    folded = onnx.load(str(out))
    assert folded.ir_version == 4
    assert [n.op_type for n in folded.graph.node] == ["Conv", "Relu"]
    assert [i.name for i in folded.graph.input] == ["x"]
    onnx.checker.check_model(folded, full_check=True)
    assert_same_outputs(model, out, small_feeds())


def test_ir3_model_folds_into_a_valid_ir3_model(tmp_path):
    """IR 3 requires every initializer to be listed as a graph input; the folded model must still pass
    onnx.checker (the fold keeps ir_version, and the result passes the full check)."""
    source = conv_bn_model(ir_version=3, opset=9, initializers_as_inputs=True)
    onnx.checker.check_model(source, full_check=True)
    model = tmp_path / "in.onnx"
    onnx.save(source, str(model))
    out = tmp_path / "out.onnx"

    result = invoke("fold", model, out)

    assert result.exit_code == 0, result.output
    folded = onnx.load(str(out))
    assert folded.ir_version == 3
    assert "BatchNormalization" not in [n.op_type for n in folded.graph.node]
    onnx.checker.check_model(folded, full_check=True)


# --------------------------------------------------------------------------------------------------------
# entry points


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"bnfold, version {bnfold.__version__}\n"


@pytest.mark.parametrize("command", [[str(BNFOLD_SCRIPT)], [sys.executable, "-m", "bnfold"]],
                         ids=["console-script", "python-m"])
def test_version_subprocess(command):
    proc = subprocess.run(command + ["--version"], capture_output=True, text=True, env=SUBPROCESS_ENV,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"bnfold, version {bnfold.__version__}\n"


@pytest.mark.parametrize("command", [[str(BNFOLD_SCRIPT)], [sys.executable, "-m", "bnfold"]],
                         ids=["console-script", "python-m"])
def test_fold_subprocess(tmp_path, command):
    out = tmp_path / "out.onnx"
    proc = subprocess.run(command + ["fold", str(RESNET), str(out)], capture_output=True, text=True,
                          env=SUBPROCESS_ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "folded 5/5 BatchNormalization" in proc.stdout
    assert "verified:" in proc.stdout
    assert "BatchNormalization" not in op_types(out)
    assert_same_outputs(RESNET, out, resnet_feeds(batch=1))


@pytest.mark.parametrize("argv", [["--help"], ["fold", "--help"]], ids=["bnfold--help", "fold--help"])
def test_help_does_not_import_heavy_modules(argv):
    code = (
        "import sys\n"
        f"sys.argv = ['bnfold'] + {argv!r}\n"
        "from bnfold.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "from bnfold.deferred import Placeholder\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('onnxruntime', 'onnx_ir', 'tensorflow', 'keras') and type(sys.modules[m]) is not Placeholder)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=SUBPROCESS_ENV,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY="


def test_fold_keeps_model_metadata_and_interface(tmp_path):
    """What the user's tools key on survives the (streamed) rewrite: metadata, producer, versions, docs,
    opsets, ir_version, and the names, order and types of inputs and outputs."""
    model = onnx.load(RESNET)
    model.producer_name, model.producer_version = "exporter", "9.9"
    model.domain, model.model_version, model.doc_string = "com.example", 42, "a ResNet block"
    model.graph.doc_string = "graph docs"
    onnx.helper.set_model_props(model, {"author": "someone", "license": "MIT"})
    src, out = tmp_path / "meta.onnx", tmp_path / "meta.folded.onnx"
    onnx.save(model, src)

    result = invoke("fold", src, out)

    assert result.exit_code == 0, result.output
    folded = onnx.load(out)
    assert {p.key: p.value for p in folded.metadata_props} == {"author": "someone", "license": "MIT"}
    for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string", "ir_version"):
        assert getattr(folded, field) == getattr(model, field), field
    assert folded.graph.doc_string == "graph docs"
    assert list(folded.opset_import) == list(model.opset_import)
    assert list(folded.graph.input) == list(model.graph.input)
    assert list(folded.graph.output) == list(model.graph.output)
    assert not any(n.op_type == "BatchNormalization" for n in folded.graph.node)


def test_nothing_to_fold_writes_the_input_byte_for_byte(tmp_path):
    out = tmp_path / "out.onnx"
    result = invoke("fold", TRAINING, out)
    assert result.exit_code == 0, result.output
    assert "skipped (training-mode)" in result.stdout
    assert out.read_bytes() == TRAINING.read_bytes()


# --------------------------------------------------------------------------------------------------------
# side files (--report, --save-inputs) never replace a model


@pytest.mark.parametrize("case", ["report-is-in", "report-is-in-dry-run", "report-is-in-in-place", "report-is-out",
                                  "report-is-out-data", "save-inputs-is-in", "report-is-save-inputs"])
def test_a_side_file_that_would_replace_a_model_is_refused(tmp_path, case):
    model, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    shutil.copy(RESNET, model)
    out.write_bytes(b"previous")
    args, message = {
        "report-is-in": (["fold", model, out, "--report", model], f"--report {model} is the input model"),
        "report-is-in-dry-run": (["fold", model, "--dry-run", "--report", model], f"--report {model} is the input model"),
        "report-is-in-in-place": (["fold", model, "--in-place", "--report", model],
                                  f"--report {model} is the input model"),
        "report-is-out": (["fold", model, out, "--report", out], f"--report {out} is the output model"),
        "report-is-out-data": (["fold", model, out, "--report", f"{out}.data"],
                               f"--report {out}.data is the output model's external data"),
        "save-inputs-is-in": (["fold", model, out, "--save-inputs", model], f"--save-inputs {model} is the input model"),
        "report-is-save-inputs": (["fold", model, out, "--report", tmp_path / "r", "--save-inputs", tmp_path / "r"],
                                  f"--save-inputs {tmp_path / 'r'} is also given to --report"),
    }[case]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert stderr_lines(result) == [f"error: {message}: choose another file"]
    assert model.read_bytes() == RESNET.read_bytes() and out.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "out.onnx"]


def test_a_model_shape_inference_rejects_folds_quietly(tmp_path):
    """onnx's inference fails on a mixed-dtype Add elsewhere in the graph; onnx-ir logs that failure with a
    traceback. The fold goes on with the shapes the model declares, and says nothing on stderr."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 6])
    nodes = [helper.make_node("Relu", ["X"], ["r"], name="relu"), helper.make_node("Mul", ["r", "k"], ["m"], name="mul"),
             helper.make_node("Gemm", ["m", "W"], ["Y"], name="gemm"), helper.make_node("Add", ["X", "ik"], ["odd"])]
    inits = [numpy_helper.from_array(np.full([6], 2.0, np.float32), "k"),
             numpy_helper.from_array(np.ones([6, 3], np.float32), "W"), numpy_helper.from_array(np.ones([1], np.int64), "ik")]
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3]),
                                                helper.make_tensor_value_info("odd", TensorProto.FLOAT, None)], inits)
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    proc = subprocess.run([sys.executable, "-m", "bnfold", "fold", str(model), str(tmp_path / "o.onnx"), "--no-verify"],
                          capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "  Mul 'mul': skipped (unknown-shape)" in proc.stdout

"""The shipped sample models match sample_models/make_samples.py and are valid, runnable and small."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "sample_models"
SCRIPT = SAMPLES_DIR / "make_samples.py"

EXPECTED_FILES = [
    "resnet_block.onnx",
    "convtranspose_bn.onnx",
    "gemm_bn.onnx",
    "matmul_bn.onnx",
    "mlp_bn_after_relu.onnx",
    "depthwise_mul_add.onnx",
    "training_mode_bn.onnx",
    "fp16_conv_bn.onnx",
]

# Number of BatchNormalization nodes each sample was built with.
EXPECTED_BN_COUNT = {
    "resnet_block.onnx": 5,
    "convtranspose_bn.onnx": 1,
    "gemm_bn.onnx": 1,
    "matmul_bn.onnx": 1,
    "mlp_bn_after_relu.onnx": 2,
    "depthwise_mul_add.onnx": 0,
    "training_mode_bn.onnx": 1,
    "fp16_conv_bn.onnx": 1,
}

MAX_BYTES = 1 << 20


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True, capture_output=True)
    return out


def _load(name: str) -> onnx.ModelProto:
    return onnx.load(str(SAMPLES_DIR / name))


def _bn_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "BatchNormalization"]


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def test_script_knows_exactly_the_expected_samples():
    ns = runpy.run_path(str(SCRIPT), run_name="make_samples")
    assert list(ns["SAMPLES"]) == EXPECTED_FILES
    assert ns["RESNET_BN_COUNT"] == EXPECTED_BN_COUNT["resnet_block.onnx"]


def test_no_stray_onnx_files_committed():
    assert sorted(p.name for p in SAMPLES_DIR.glob("*.onnx")) == sorted(EXPECTED_FILES)


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_committed_file_matches_script_output(name, regenerated):
    committed = SAMPLES_DIR / name
    assert committed.exists(), f"{name} missing: run python sample_models/make_samples.py"
    assert (regenerated / name).read_bytes() == committed.read_bytes(), (
        f"sample_models/{name} differs from make_samples.py output: re-run the script"
    )


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_passes_full_check(name):
    model = _load(name)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert model.producer_name == "bnfold-samples"
    assert all(n.name for n in model.graph.node), "every node needs a readable name"
    assert len({n.name for n in model.graph.node}) == len(model.graph.node), "node names must be unique"


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_smaller_than_1mb(name):
    assert (SAMPLES_DIR / name).stat().st_size < MAX_BYTES


def _random_feeds(session, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.RandomState(seed)
    feeds = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) else 2 for d in inp.shape]  # symbolic batch "N" -> 2
        dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}[inp.type]
        feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


@pytest.mark.parametrize("optimize", [False, True], ids=["ORT_DISABLE_ALL", "ORT_default"])
@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_runs_in_onnxruntime(name, optimize):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(SAMPLES_DIR / name), so, providers=["CPUExecutionProvider"])
    outputs = session.run(None, _random_feeds(session))
    assert len(outputs) == len(session.get_outputs())
    for meta, value in zip(session.get_outputs(), outputs):
        assert np.isfinite(value.astype(np.float64)).all(), f"{name}: non-finite values in {meta.name}"
        assert np.abs(value).max() > 0, f"{name}: output {meta.name} is all zeros"


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_bn_count(name):
    assert len(_bn_nodes(_load(name))) == EXPECTED_BN_COUNT[name]


def test_resnet_block_has_grouped_strided_projection():
    model = _load("resnet_block.onnx")
    by_name = {n.name: n for n in model.graph.node}
    down = by_name["conv_down"]
    assert _attr(down, "group") == 4
    assert _attr(down, "strides") == [2, 2]
    assert _attr(down, "kernel_shape") == [1, 1]
    assert by_name["bn_down"].input[0] == down.output[0]
    assert len(by_name["conv1"].input) == 3, "conv1 has a bias (BN001 example)"
    assert len(by_name["conv2"].input) == 2


def test_training_mode_bn_is_training_and_exposes_running_stats():
    model = _load("training_mode_bn.onnx")
    bns = _bn_nodes(model)
    assert len(bns) == 1
    bn = bns[0]
    assert _attr(bn, "training_mode") == 1
    assert len(bn.output) == 3
    graph_outputs = {o.name for o in model.graph.output}
    assert set(bn.output[1:]) <= graph_outputs
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    assert relu.input[0] == bn.output[0] and relu.output[0] in graph_outputs
    assert model.opset_import[0].version == 15


def test_fp16_sample_mixes_dtypes():
    model = _load("fp16_conv_bn.onnx")
    assert model.opset_import[0].version == 15
    inits = {t.name: t for t in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    bn = _bn_nodes(model)[0]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert all(inits[i].data_type == onnx.TensorProto.FLOAT16 for i in conv.input[1:])
    assert all(inits[i].data_type == onnx.TensorProto.FLOAT for i in bn.input[1:])


def test_bn_statistics_are_realistic():
    """No sample has the untrained 0/1 statistics, and the parameter ranges match the README."""
    for name in EXPECTED_FILES:
        model = _load(name)
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        for bn in _bn_nodes(model):
            gamma, _beta, mean, var = (inits[i] for i in bn.input[1:5])
            assert ((gamma >= 0.5) & (gamma <= 1.5)).all()
            assert ((var >= 0.5) & (var <= 2.0)).all()
            assert np.abs(mean).max() > 0


def test_depthwise_sample_uses_channel_shaped_constants():
    model = _load("depthwise_mul_add.onnx")
    inits = {t.name: t for t in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    assert _attr(by_name["dw_conv"], "group") == 32
    assert list(inits[by_name["bn_mul"].input[1]].dims) == [1, 32, 1, 1]
    assert list(inits[by_name["bn_add"].input[1]].dims) == [1, 32, 1, 1]

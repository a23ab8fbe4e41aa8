"""The shipped sample models match sample_models/make_samples.py and are valid, runnable and small."""

from __future__ import annotations

import re
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

# The lint samples, in sample_models/lint/: the classic Keras MLP and one model per rule.
LINT_FILES = [
    "lint/classic_mlp.onnx",
    "lint/bn001_redundant_bias.onnx",
    "lint/bn002_batchnorm_before_softmax.onnx",
    "lint/bn003_missing_batchnorm.onnx",
    "lint/bn004_inconsistent_placement.onnx",
    "lint/bn005_dropout_before_batchnorm.onnx",
    "lint/bn006_batchnorm_in_training_mode.onnx",
    "lint/bn007_untrained_statistics.onnx",
    "lint/bn008_degenerate_statistics.onnx",
    "lint/bn009_unfolded_batchnorm.onnx",
    "lint/bn010_consecutive_batchnorm.onnx",
    "lint/bn011_batchnorm_on_model_input.onnx",
    "lint/bn012_overridable_parameters.onnx",
    "lint/bn015_batchnorm_inflates_folded_weight_range.onnx",
    "lint/bn016_placeholder_batchnorm_statistics.onnx",
]
EXPECTED_FILES += LINT_FILES

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
    "lint/classic_mlp.onnx": 3,
    "lint/bn001_redundant_bias.onnx": 1,
    "lint/bn002_batchnorm_before_softmax.onnx": 2,
    "lint/bn003_missing_batchnorm.onnx": 2,
    "lint/bn004_inconsistent_placement.onnx": 3,
    "lint/bn005_dropout_before_batchnorm.onnx": 1,
    "lint/bn006_batchnorm_in_training_mode.onnx": 1,
    "lint/bn007_untrained_statistics.onnx": 1,
    "lint/bn008_degenerate_statistics.onnx": 1,
    "lint/bn009_unfolded_batchnorm.onnx": 2,
    "lint/bn010_consecutive_batchnorm.onnx": 2,
    "lint/bn011_batchnorm_on_model_input.onnx": 1,
    "lint/bn012_overridable_parameters.onnx": 1,
    "lint/bn015_batchnorm_inflates_folded_weight_range.onnx": 1,
    "lint/bn016_placeholder_batchnorm_statistics.onnx": 1,
}

# Everything `lint_model` reports (all rules, default options) for each sample, as (code, node) in report
# order (BN009 is one finding per model, on its first foldable BatchNormalization). sample_models/README.md
# shows the same lists.
EXPECTED_LINT = {
    "resnet_block.onnx": [("BN001", "conv1"), ("BN009", "bn1")],
    "convtranspose_bn.onnx": [("BN001", "deconv1"), ("BN009", "bn1")],
    "gemm_bn.onnx": [("BN001", "fc1"), ("BN009", "bn1")],
    "matmul_bn.onnx": [("BN001", "matmul1"), ("BN009", "bn1")],
    "mlp_bn_after_relu.onnx": [("BN009", "bn1")],
    "depthwise_mul_add.onnx": [],
    "training_mode_bn.onnx": [("BN006", "bn1")],
    "fp16_conv_bn.onnx": [("BN009", "bn1")],
    "lint/classic_mlp.onnx": [("BN001", "fc1"), ("BN001", "fc2"), ("BN001", "fc3"), ("BN002", "bn3"),
                              ("BN009", "bn1")],
    "lint/bn001_redundant_bias.onnx": [("BN001", "conv1"), ("BN009", "bn1")],
    "lint/bn002_batchnorm_before_softmax.onnx": [("BN002", "bn2"), ("BN009", "bn1")],
    "lint/bn003_missing_batchnorm.onnx": [("BN003", "conv2"), ("BN009", "bn1")],
    "lint/bn004_inconsistent_placement.onnx": [("BN004", "bn3"), ("BN009", "bn1")],
    "lint/bn005_dropout_before_batchnorm.onnx": [("BN005", "bn1"), ("BN009", "bn1")],
    "lint/bn006_batchnorm_in_training_mode.onnx": [("BN006", "bn1")],
    "lint/bn007_untrained_statistics.onnx": [("BN007", "bn1"), ("BN009", "bn1")],
    "lint/bn008_degenerate_statistics.onnx": [("BN008", "bn1")],
    "lint/bn009_unfolded_batchnorm.onnx": [("BN009", "bn1")],
    "lint/bn010_consecutive_batchnorm.onnx": [("BN009", "bn1"), ("BN010", "bn2")],
    "lint/bn011_batchnorm_on_model_input.onnx": [("BN009", "bn_input"), ("BN011", "bn_input")],
    "lint/bn012_overridable_parameters.onnx": [("BN009", "bn1"), ("BN012", "bn1")],
    "lint/bn015_batchnorm_inflates_folded_weight_range.onnx": [("BN009", "bn1"), ("BN015", "bn1")],
    "lint/bn016_placeholder_batchnorm_statistics.onnx": [("BN009", "bn1"), ("BN016", "bn1")],
}

# Samples whose statistics are odd on purpose (BN007: untrained 0/1; BN008: a negative variance; BN015: a
# near-zero variance; BN016: placeholders).
DEGENERATE_STATS = {"lint/bn007_untrained_statistics.onnx", "lint/bn008_degenerate_statistics.onnx",
                    "lint/bn015_batchnorm_inflates_folded_weight_range.onnx",
                    "lint/bn016_placeholder_batchnorm_statistics.onnx"}
# The one sample whose output is not finite in onnxruntime (that is the point of BN008).
NAN_OUTPUT = {"lint/bn008_degenerate_statistics.onnx"}

MAX_BYTES = 1 << 20
MAX_LINT_BYTES = 100 * 1024


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
    # pytorch/ and keras/ hold exporters' own output (tests/test_pytorch_exports.py, test_keras_exports.py).
    found = [p.relative_to(SAMPLES_DIR).as_posix() for p in SAMPLES_DIR.rglob("*.onnx")
             if p.parent.name not in ("pytorch", "keras")]
    assert sorted(found) == sorted(EXPECTED_FILES)


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


@pytest.mark.parametrize("name", LINT_FILES)
def test_lint_samples_smaller_than_100kb(name):
    assert (SAMPLES_DIR / name).stat().st_size < MAX_LINT_BYTES


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
    if name in NAN_OUTPUT:
        assert not np.isfinite(outputs[0]).all(), f"{name}: the degenerate channel should come out NaN"
        return
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
        if name in DEGENERATE_STATS:
            continue
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


# ------------------------------------------------------------------------------------------------------
# lint samples


def _lint(name: str):
    from bnfold.io import load_model
    from bnfold.lint import lint_model

    path = SAMPLES_DIR / name
    return lint_model(load_model(path), str(path))


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_lint_findings(name):
    assert [(f.code, f.node) for f in _lint(name)] == EXPECTED_LINT[name]


def _readme_lint_table() -> dict[str, list[tuple[str, str]]]:
    """`| `lint/x.onnx` | ... | BN001 on `a`, `b`; BN009 on `c` |` rows of the README's lint table."""
    text = (SAMPLES_DIR / "README.md").read_text()
    section = text.split("## Lint samples", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        match = re.match(r"\| `(lint/[\w.]+\.onnx)` \|.*\| ([^|]*) \|$", line)
        if not match:
            continue
        findings = []
        for part in match.group(2).split(";"):
            part = part.strip()
            if part in ("", "—"):
                continue
            code, nodes = part.split(" on ", 1)
            findings += [(code.strip(), node) for node in re.findall(r"`([^`]+)`", nodes)]
        table[match.group(1)] = findings
    return table


def test_readme_lint_table_matches_expected_findings():
    table = _readme_lint_table()
    assert sorted(table) == sorted(LINT_FILES)
    for name, findings in table.items():
        assert sorted(findings) == sorted(EXPECTED_LINT[name]), name


def test_every_sample_is_in_the_readme():
    text = (SAMPLES_DIR / "README.md").read_text()
    for name in EXPECTED_FILES:
        assert f"`{name}`" in text, name


def test_classic_mlp_is_the_keras_example():
    model = _load("lint/classic_mlp.onnx")
    assert [n.op_type for n in model.graph.node] == [
        "Gemm", "BatchNormalization", "Tanh", "Dropout",
        "Gemm", "BatchNormalization", "Tanh", "Dropout",
        "Gemm", "BatchNormalization", "Softmax",
    ]
    inits = {t.name: t for t in model.graph.initializer}
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert [list(inits[g.input[2]].dims) for g in gemms] == [[64], [64], [2]], "every Dense has a bias C"
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]] == [20]
    keras = {n.name: {p.key: p.value for p in n.metadata_props}.get("bnfold.keras_layer") for n in model.graph.node}
    assert keras["fc1"] == "dense" and keras["bn3"] == "batch_normalization_2"


def test_bn012_sample_lists_bn_parameters_as_inputs():
    model = _load("lint/bn012_overridable_parameters.onnx")
    assert model.ir_version >= 4
    bn = _bn_nodes(model)[0]
    assert set(bn.input[1:5]) <= {i.name for i in model.graph.input}


# Everything lint reports on the real exporters' files (PyTorch TorchScript, keep_initializers_as_inputs,
# dynamo; tf2onnx from Keras 3 and tf_keras), each read against the graph: every Conv/Gemm there keeps a
# bias its BN cancels (the export scripts build them so), and nothing was folded yet.
_RESNETISH_BN001 = [("BN001", "/stem/stem.0/Conv"), ("BN001", "/dw/dw.0/Conv"), ("BN001", "/up/up.0/ConvTranspose"),
                    ("BN001", "/fc1/Gemm")]
EXPORT_LINT = {
    "pytorch/resnetish_dynamo.onnx": [("BN001", "node_conv2d"), ("BN001", "node_conv2d_1"),
                                      ("BN001", "node_convolution"), ("BN001", "node_linear"),
                                      ("BN009", "node__native_batch_norm_legit_no_training__0")],
    "pytorch/resnetish_legacy.onnx": [*_RESNETISH_BN001, ("BN009", "/stem/stem.1/BatchNormalization")],
    "pytorch/resnetish_legacy_inputs.onnx": [*_RESNETISH_BN001, ("BN009", "/stem/stem.1/BatchNormalization"),
                                             ("BN012", "/stem/stem.1/BatchNormalization")],
    "keras/keras3.onnx": [("BN001", "functional_1/separable_conv2d_1/BiasAdd"),
                          ("BN001", "functional_1/dense_1/MatMul_Gemm__6"),
                          ("BN009", "functional_1/batch_normalization_1_2/batchnorm/mul_1")],
    "keras/tf_keras_bn_kept.onnx": [("BN001", "model/separable_conv2d/BiasAdd"),
                                    ("BN001", "model/dense/MatMul_Gemm__6"),
                                    ("BN009", "model/batch_normalization/FusedBatchNormV3")],
}


def test_the_export_table_covers_every_exported_sample():
    shipped = [p for sub in ("pytorch", "keras") for p in (SAMPLES_DIR / sub).glob("*.onnx")]
    assert sorted(str(p.relative_to(SAMPLES_DIR)) for p in shipped) == sorted(EXPORT_LINT)


@pytest.mark.parametrize("name", sorted(EXPORT_LINT))
def test_export_lint_findings(name):
    assert [(f.code, f.node) for f in _lint(name)] == EXPORT_LINT[name]

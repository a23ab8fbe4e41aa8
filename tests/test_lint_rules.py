"""Lint rules BN001..BN012: each rule's sample model (sample_models/lint/) gives exactly the expected findings,
and near-miss models built here give none.

Positive cases lint the committed sample; negatives are small models built with tests/helpers.GraphBuilder.
Every check runs one rule at a time (`codes=frozenset({CODE})`) and compares the exact list of (code, node).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from helpers import BOOL, FLOAT, FLOAT16, INT64, GraphBuilder, bn_stats, make_rng, weights

from bnfold.fold import fold_model
from bnfold.io import load_model
from bnfold.lint import RULES, lint_model
from bnfold.lint.context import IGNORE_KEY, KERAS_LAYER_KEY, LintContext, LintOptions

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
LINT_SAMPLES = SAMPLES / "lint"


# --------------------------------------------------------------------------------------------------------
# running the linter


def lint_sample(name: str, code: str | None = None, options: LintOptions | None = None):
    path = LINT_SAMPLES / name
    codes = None if code is None else frozenset({code})
    return lint_model(load_model(path), str(path), codes=codes, options=options)


def lint_proto(proto: onnx.ModelProto, code: str | None = None, options: LintOptions | None = None):
    codes = None if code is None else frozenset({code})
    return lint_model(ir.from_proto(copy.deepcopy(proto)), "test.onnx", codes=codes, options=options)


def pairs(findings) -> list[tuple[str, str]]:
    return [(f.code, f.node) for f in findings]


# --------------------------------------------------------------------------------------------------------
# building near-miss models


def _conv(gb: GraphBuilder, rng, x: str, cin: int, cout: int, name: str, *, bias: bool = False, pad: int = 1,
          dtype=np.float32) -> str:
    ins = [x, gb.init(f"{name}_W", weights(rng, [cout, cin, 3, 3], dtype))]
    if bias:
        ins.append(gb.init(f"{name}_B", rng.normal(0.0, 0.1, cout).astype(dtype)))
    return gb.node("Conv", ins, name=name, kernel_shape=[3, 3], pads=[pad] * 4)


def _gemm(gb: GraphBuilder, rng, x: str, n_in: int, n_out: int, name: str, *, bias: bool = False) -> str:
    ins = [x, gb.init(f"{name}_W", weights(rng, [n_in, n_out], fan_in=n_in))]
    if bias:
        ins.append(gb.init(f"{name}_C", rng.normal(0.0, 0.1, n_out).astype(np.float32)))
    return gb.node("Gemm", ins, name=name)


def _bn(gb: GraphBuilder, rng, x: str, c: int, name: str, **kwargs) -> str:
    return gb.bn(x, bn_stats(rng, c), name=name, **kwargs)


def _act(gb: GraphBuilder, op: str, x: str, name: str, **attrs) -> str:
    return gb.node(op, [x], name=name, **attrs)


def _image_input(gb: GraphBuilder, c: int = 3, elem=FLOAT) -> str:
    return gb.input("X", elem, [2, c, 8, 8])


def _finish(gb: GraphBuilder, y: str, **model_kwargs) -> onnx.ModelProto:
    gb.node("Identity", [y], "Y", name="out")
    gb.output("Y")
    return gb.model(**model_kwargs)


def mlp(layers: list[str], *, seed: int = 0, head: str | None = "Softmax", width: int = 8,
        bias: bool = False) -> onnx.ModelProto:
    """A Gemm MLP from a compact spec: one string per hidden block, e.g. "gemm bn relu", "gemm relu bn",
    "gemm relu dropout bn", then a Gemm head followed by `head` (None: the Gemm is the output)."""
    rng = make_rng(seed)
    gb = GraphBuilder()
    t = gb.input("X", FLOAT, [2, width])
    for i, block in enumerate(layers, start=1):
        for op in block.split():
            if op == "gemm":
                t = _gemm(gb, rng, t, width, width, f"fc{i}", bias=bias)
            elif op == "bn":
                t = _bn(gb, rng, t, width, f"bn{i}")
            elif op == "dropout":
                t = _act(gb, "Dropout", t, f"dropout{i}")
            else:
                t = _act(gb, op.capitalize(), t, f"{op}{i}")
    t = _gemm(gb, rng, t, width, 3, "head", bias=True)
    if head is not None:
        t = _act(gb, head, t, head.lower(), **({"axis": -1} if head in ("Softmax", "LogSoftmax") else {}))
    gb.output(t)
    return gb.model()


# ========================================================================================================
# BN001 redundant-bias-before-batchnorm


def test_bn001_sample():
    assert pairs(lint_sample("bn001_redundant_bias.onnx", "BN001")) == [("BN001", "conv1")]


def test_bn001_classic_mlp_reports_every_dense():
    assert pairs(lint_sample("classic_mlp.onnx", "BN001")) == [("BN001", "fc1"), ("BN001", "fc2"), ("BN001", "fc3")]


def test_bn001_matmul_add_and_gemm_c_are_biases():
    rng = make_rng(1)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [2, 6])
    t = gb.node("MatMul", [x, gb.init("W", weights(rng, [6, 4]))], name="matmul")
    t = gb.node("Add", [t, gb.init("Bias", rng.normal(0, 0.1, 4).astype(np.float32))], name="bias_add")
    t = _bn(gb, rng, t, 4, "bn1")
    t = _act(gb, "Relu", t, "relu1")
    t = _gemm(gb, rng, t, 4, 4, "fc", bias=True)
    t = _bn(gb, rng, t, 4, "bn2")
    model = _finish(gb, t)
    assert pairs(lint_proto(model, "BN001")) == [("BN001", "matmul"), ("BN001", "fc")]


def test_bn001_not_through_a_relu():
    rng = make_rng(2)
    gb = GraphBuilder()
    t = _conv(gb, rng, _image_input(gb), 3, 4, "conv1", bias=True)
    t = _act(gb, "Relu", t, "relu1")
    t = _bn(gb, rng, t, 4, "bn1")
    assert pairs(lint_proto(_finish(gb, t), "BN001")) == []


def test_bn001_not_when_the_conv_output_feeds_another_node():
    """The bias still matters for the other consumer, so it is not redundant."""
    rng = make_rng(3)
    gb = GraphBuilder()
    c = _conv(gb, rng, _image_input(gb), 3, 4, "conv1", bias=True)
    t = _bn(gb, rng, c, 4, "bn1")
    side = _act(gb, "Relu", c, "side_relu")
    t = gb.node("Add", [t, side], name="add")
    assert pairs(lint_proto(_finish(gb, t), "BN001")) == []


def test_bn001_not_without_a_bias():
    rng = make_rng(4)
    gb = GraphBuilder()
    t = _conv(gb, rng, _image_input(gb), 3, 4, "conv1", bias=False)
    t = _bn(gb, rng, t, 4, "bn1")
    t = _gemm(gb, rng, gb.node("Flatten", [t], name="flat"), 4 * 64, 4, "fc", bias=False)
    t = _bn(gb, rng, t, 4, "bn2")
    assert pairs(lint_proto(_finish(gb, t), "BN001")) == []


def test_bn001_not_when_the_matmul_output_feeds_another_node():
    rng = make_rng(5)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [2, 6])
    m = gb.node("MatMul", [x, gb.init("W", weights(rng, [6, 4]))], name="matmul")
    t = gb.node("Add", [m, gb.init("Bias", rng.normal(0, 0.1, 4).astype(np.float32))], name="bias_add")
    t = _bn(gb, rng, t, 4, "bn1")
    t = gb.node("Add", [t, m], name="skip")
    assert pairs(lint_proto(_finish(gb, t), "BN001")) == []


def test_bn001_not_for_gemm_with_beta_0():
    """Gemm computes alpha*A*B + beta*C: with beta=0 the C input adds nothing, there is no bias to drop."""
    rng = make_rng(23)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [2, 6])
    c = gb.init("C", rng.normal(0.0, 0.1, 4).astype(np.float32))
    t = gb.node("Gemm", [x, gb.init("W", weights(rng, [6, 4])), c], name="gemm", beta=0.0)
    t = _bn(gb, rng, t, 4, "bn1")
    assert pairs(lint_proto(_finish(gb, t), "BN001")) == []


# ========================================================================================================
# BN002 batchnorm-before-softmax


def test_bn002_sample():
    assert pairs(lint_sample("bn002_batchnorm_before_softmax.onnx", "BN002")) == [("BN002", "bn2")]


def test_bn002_classic_mlp_last_bn_only():
    assert pairs(lint_sample("classic_mlp.onnx", "BN002")) == [("BN002", "bn3")]


def test_bn002_through_layout_ops_to_logsoftmax():
    rng = make_rng(6)
    gb = GraphBuilder()
    t = _conv(gb, rng, _image_input(gb), 3, 4, "conv1")
    t = _bn(gb, rng, t, 4, "bn1")
    t = gb.node("Flatten", [t], name="flat")
    t = _act(gb, "LogSoftmax", t, "logsoftmax", axis=-1)
    assert pairs(lint_proto(_finish(gb, t), "BN002")) == [("BN002", "bn1")]


def test_bn002_not_with_a_gemm_between_bn_and_softmax():
    assert pairs(lint_proto(mlp(["gemm bn relu", "gemm bn"]), "BN002")) == []


def test_bn002_not_before_sigmoid():
    rng = make_rng(7)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [2, 6])
    t = _gemm(gb, rng, x, 6, 1, "fc")
    t = _bn(gb, rng, t, 1, "bn1")
    t = _act(gb, "Sigmoid", t, "sigmoid")
    gb.output(t)
    assert pairs(lint_proto(gb.model(), "BN002")) == []


# ========================================================================================================
# BN003 missing-batchnorm


def test_bn003_sample():
    assert pairs(lint_sample("bn003_missing_batchnorm.onnx", "BN003")) == [("BN003", "conv2")]


def test_bn003_flags_the_unnormalized_block_of_an_mlp():
    model = mlp(["gemm bn relu", "gemm relu", "gemm bn relu"])
    assert pairs(lint_proto(model, "BN003")) == [("BN003", "fc2")]


@pytest.mark.parametrize("head", ["Softmax", "LogSoftmax", "Sigmoid", None])
def test_bn003_output_head_is_exempt(head):
    """Gemm -> Softmax (or Sigmoid, or nothing) at the end needs no BN: that is BN002's side."""
    assert pairs(lint_proto(mlp(["gemm bn relu", "gemm bn relu"], head=head), "BN003")) == []


def test_bn003_classic_mlp_silent():
    assert pairs(lint_sample("classic_mlp.onnx", "BN003")) == []


def test_bn003_silent_without_any_batchnorm():
    assert pairs(lint_proto(mlp(["gemm relu", "gemm relu", "gemm relu"], bias=True), "BN003")) == []


def test_bn003_silent_when_bn_is_consistently_after_the_activation():
    model = mlp(["gemm relu bn", "gemm relu bn", "gemm tanh dropout bn"], bias=True)
    assert pairs(lint_proto(model, "BN003")) == []


def test_bn003_silent_when_most_blocks_are_unnormalized():
    """1 of 3 blocks normalized is below min_normalized_fraction (0.5): not a model that normalizes."""
    model = mlp(["gemm bn relu", "gemm relu", "gemm relu"])
    assert pairs(lint_proto(model, "BN003")) == []


def _pointwise(gb: GraphBuilder, rng, x: str, c: int, name: str, *, bias: bool = False) -> str:
    ins = [x, gb.init(f"{name}_W", weights(rng, [c, c, 1, 1], fan_in=c))]
    if bias:
        ins.append(gb.init(f"{name}_B", rng.normal(0.0, 0.1, c).astype(np.float32)))
    return gb.node("Conv", ins, name=name)


def _cnn(blocks: list[str], *, se_after: int | None = None, head: list[str] = (), silu: bool = False) -> onnx.ModelProto:
    """Conv blocks ("conv bn relu", "conv relu", ...) on a [1, 4, 8, 8] input; `se_after` puts a
    squeeze-and-excitation gate after that block; `head` blocks ("conv relu") follow the last block and end
    in the graph output through a Reshape, as SSD heads do. `silu`: the gate's inner activation is x * sigmoid(x),
    as PyTorch exports SiLU (timm's MixNet, EfficientNet)."""
    rng, gb, c = make_rng(0), GraphBuilder(), 4
    t = gb.input("X", FLOAT, [1, c, 8, 8])
    for i, block in enumerate(blocks, start=1):
        for op in block.split():
            if op == "conv":
                t = _pointwise(gb, rng, t, c, f"conv{i}")
            elif op == "bn":
                t = _bn(gb, rng, t, c, f"bn{i}")
            else:
                t = _act(gb, op.capitalize(), t, f"{op}{i}")
        if i == se_after:
            pooled = gb.node("GlobalAveragePool", [t], name="se_pool")
            reduced = _pointwise(gb, rng, pooled, c, "se_reduce", bias=True)
            if silu:
                squeezed = gb.node("Mul", [reduced, gb.node("Sigmoid", [reduced], name="se_sigmoid")], name="se_silu")
            else:
                squeezed = gb.node("Relu", [reduced], name="se_relu")
            gate = gb.node("HardSigmoid", [_pointwise(gb, rng, squeezed, c, "se_expand", bias=True)], name="se_gate")
            t = gb.node("Mul", [t, gate], name="se_scale")
    for j, block in enumerate(head, start=1):
        t = _act(gb, "Relu", _pointwise(gb, rng, t, c, f"head{j}", bias=True), f"head_relu{j}")
    shape = gb.init("shape", np.array([1, -1], np.int64))
    gb.output(gb.node("Reshape", [t, shape], name="flatten"))
    return gb.model()


TRUNK = ["conv bn relu", "conv bn relu", "conv bn relu"]


@pytest.mark.parametrize("silu", [False, True], ids=["relu", "silu-as-mul-sigmoid"])
def test_bn003_squeeze_and_excitation_gate_is_not_missing_bn(silu):
    assert pairs(lint_proto(_cnn(TRUNK, se_after=1, silu=silu), "BN003")) == []


def test_bn003_heads_after_the_last_batchnorm_are_not_missing_bn():
    assert pairs(lint_proto(_cnn(TRUNK, head=["conv relu", "conv relu"]), "BN003")) == []


def test_bn003_still_flags_a_gap_in_the_trunk_and_says_what_it_compared():
    found = lint_proto(_cnn(["conv bn relu", "conv relu", "conv bn relu", "conv bn relu"], se_after=3,
                            head=["conv relu"]), "BN003")
    assert pairs(found) == [("BN003", "conv2")]
    assert found[0].message == ("Conv 'conv2' -> Relu 'relu2' has no BatchNormalization, while 3 of the model's 4 "
                                "comparable blocks have one (not counted: SE gates, heads, blocks after the last "
                                "BatchNormalization)")


def test_bn003_needs_two_normalized_blocks_as_evidence():
    assert pairs(lint_proto(_cnn(["conv relu", "conv bn relu", "conv relu"]), "BN003")) == []


def test_bn003_advises_bn_where_the_model_puts_it():
    found = lint_proto(_cnn(["conv relu bn", "conv relu", "conv relu bn", "conv relu bn"]), "BN003")
    assert pairs(found) == [("BN003", "conv2")]
    assert found[0].fix == "add BatchNormalization after the activation, as the model's other blocks have it"


def test_bn003_counts_a_bn_tensorflow_merged_into_the_conv():
    model = _cnn(["conv relu", "conv relu", "conv bn relu"])
    for node in model.graph.node:  # tf2onnx's names for weights TensorFlow multiplied a BN into
        if node.name in ("conv1", "conv2"):
            node.input[1] = node.input[1] + "_fused_bn"
    for init in model.graph.initializer:
        if init.name in ("conv1_W", "conv2_W"):
            init.name += "_fused_bn"
    assert pairs(lint_proto(model, "BN003")) == []


# ========================================================================================================
# BN004 inconsistent-batchnorm-placement


def test_bn004_sample():
    assert pairs(lint_sample("bn004_inconsistent_placement.onnx", "BN004")) == [("BN004", "bn3")]


def test_bn004_silent_when_all_before():
    assert pairs(lint_proto(mlp(["gemm bn relu", "gemm bn relu", "gemm bn tanh"]), "BN004")) == []


def test_bn004_silent_when_all_after():
    assert pairs(lint_proto(mlp(["gemm relu bn", "gemm relu bn"]), "BN004")) == []


def test_bn004_preference_before_flags_after_placed_bn():
    model = mlp(["gemm relu bn", "gemm relu bn"])
    findings = lint_proto(model, "BN004", LintOptions(placement="before"))
    assert pairs(findings) == [("BN004", "bn1"), ("BN004", "bn2")]


def test_bn004_preference_after_silent_on_after_placed_bn():
    model = mlp(["gemm relu bn", "gemm relu bn"])
    assert pairs(lint_proto(model, "BN004", LintOptions(placement="after"))) == []


def test_bn004_preference_after_flags_the_sample_majority():
    findings = lint_sample("bn004_inconsistent_placement.onnx", "BN004", LintOptions(placement="after"))
    assert pairs(findings) == [("BN004", "bn1"), ("BN004", "bn2")]


# ========================================================================================================
# BN005 dropout-before-batchnorm


def test_bn005_sample():
    assert pairs(lint_sample("bn005_dropout_before_batchnorm.onnx", "BN005")) == [("BN005", "bn1")]


def test_bn005_silent_when_dropout_follows_bn():
    assert pairs(lint_proto(mlp(["gemm bn relu dropout", "gemm bn relu dropout"]), "BN005")) == []


def test_bn005_classic_mlp_silent():
    """Dropout -> Dense -> BN: the Dense sits between, the dropout does not feed the BN."""
    assert pairs(lint_sample("classic_mlp.onnx", "BN005")) == []


# ========================================================================================================
# BN006 batchnorm-in-training-mode


def test_bn006_sample():
    assert pairs(lint_sample("bn006_batchnorm_in_training_mode.onnx", "BN006")) == [("BN006", "bn1")]


def test_bn006_training_mode_sample_with_running_stat_outputs():
    path = SAMPLES / "training_mode_bn.onnx"
    findings = lint_model(load_model(path), str(path), codes=frozenset({"BN006"}))
    assert pairs(findings) == [("BN006", "bn1")]


@pytest.mark.parametrize("opset,training_mode", [(17, None), (15, 0)])
def test_bn006_silent_on_inference_bn(opset, training_mode):
    rng = make_rng(8)
    gb = GraphBuilder()
    t = _conv(gb, rng, _image_input(gb), 3, 4, "conv1")
    attrs = {} if training_mode is None else {"training_mode": training_mode}
    t = _bn(gb, rng, t, 4, "bn1", **attrs)
    assert pairs(lint_proto(_finish(gb, _act(gb, "Relu", t, "relu1"), opset=opset), "BN006")) == []


def _opset9_bn(use_running_mean: bool) -> onnx.ModelProto:
    rng = make_rng(9)
    gb = GraphBuilder()
    t = _conv(gb, rng, _image_input(gb), 3, 4, "conv1")
    stats = bn_stats(rng, 4)
    params = [gb.init(f"bn1_{k}", stats[k]) for k in ("scale", "bias", "mean", "var")]
    # BatchNormalization-9 has 1 or 5 outputs: Y, running mean, running var, saved mean, saved var.
    outputs = ["bn1_out", "bn1_running_mean", "bn1_running_var", "bn1_saved_mean", "bn1_saved_var"]
    gb.node("BatchNormalization", [t, *params], outputs, name="bn1")
    t = _act(gb, "Relu", "bn1_out", "relu1")
    gb.output(t)
    if use_running_mean:
        gb.output("bn1_running_mean", FLOAT, [4])
    return gb.model(opset=9)


def test_bn006_opset9_running_mean_output_used():
    assert pairs(lint_proto(_opset9_bn(use_running_mean=True), "BN006")) == [("BN006", "bn1")]


def test_bn006_opset9_unused_running_mean_output_silent():
    assert pairs(lint_proto(_opset9_bn(use_running_mean=False), "BN006")) == []


# ========================================================================================================
# BN007 untrained-batchnorm-statistics


def test_bn007_sample():
    assert pairs(lint_sample("bn007_untrained_statistics.onnx", "BN007")) == [("BN007", "bn1")]


def _conv_bn_with(stats: dict[str, np.ndarray], *, seed: int = 10, conv_dtype=np.float32, opset: int = 17,
                  epsilon: float | None = None) -> onnx.ModelProto:
    rng = make_rng(seed)
    gb = GraphBuilder()
    elem = FLOAT16 if conv_dtype == np.float16 else FLOAT
    t = _conv(gb, rng, _image_input(gb, elem=elem), 3, 4, "conv1", dtype=conv_dtype)
    t = gb.bn(t, stats, name="bn1", epsilon=epsilon)
    return _finish(gb, _act(gb, "Relu", t, "relu1"), opset=opset)


def _stats(**overrides) -> dict[str, np.ndarray]:
    stats = bn_stats(make_rng(11), 4)
    for key, value in overrides.items():
        stats[key] = np.asarray(value, dtype=np.float32).reshape(-1).repeat(4 // np.size(value))
    return stats


def test_bn007_in_code_positive():
    assert pairs(lint_proto(_conv_bn_with(_stats(mean=0.0, var=1.0)), "BN007")) == [("BN007", "bn1")]


def test_bn007_silent_with_trained_statistics():
    assert pairs(lint_proto(_conv_bn_with(_stats()), "BN007")) == []


def test_bn007_silent_with_mean_0_but_var_2():
    assert pairs(lint_proto(_conv_bn_with(_stats(mean=0.0, var=2.0)), "BN007")) == []


def test_bn007_silent_when_only_some_channels_are_0_1():
    stats = _stats(mean=[0.0, 0.0, 0.3, 0.0], var=[1.0, 1.0, 1.0, 1.0])
    assert pairs(lint_proto(_conv_bn_with(stats), "BN007")) == []


def test_bn007_silent_on_epsilon_0_an_affine_by_construction():
    # gamma * x + beta written as BN with mean 0, var 1, epsilon 0 (a converted Scale layer, a reset BN)
    assert lint_proto(_conv_bn_with(_stats(mean=0.0, var=1.0), epsilon=0.0), "BN007") == []
    assert pairs(lint_proto(_conv_bn_with(_stats(mean=0.0, var=1.0), epsilon=1e-3), "BN007")) == [("BN007", "bn1")]


# ========================================================================================================
# BN016 placeholder-batchnorm-statistics


def test_bn016_on_the_same_statistics_in_every_channel():
    (found,) = lint_proto(_conv_bn_with(_stats(mean=0.5, var=2.0)), "BN016")
    assert (found.node, found.severity) == ("bn1", "info")
    assert found.message == ("BatchNormalization 'bn1' has moving mean 0.5 and moving variance 2 in all 4 channels: "
                             "learned statistics differ per channel, so these were filled in")


@pytest.mark.parametrize("stats", [_stats(), _stats(mean=0.0, var=1.0), _stats(mean=[0.5, 0.5, 0.5, 0.4], var=2.0)],
                         ids=["trained", "initial-0-1-is-bn007", "one-channel-differs"])
def test_bn016_silent(stats):
    assert lint_proto(_conv_bn_with(stats), "BN016") == []


# ========================================================================================================
# BN008 degenerate-batchnorm-statistics


def test_bn008_sample():
    assert pairs(lint_sample("bn008_degenerate_statistics.onnx", "BN008")) == [("BN008", "bn1")]


def test_bn008_silent_with_huge_scale_that_fits_fp32():
    model = _conv_bn_with(_stats(scale=1e4, var=1e-8))
    assert pairs(lint_proto(model, "BN008")) == []


def test_bn008_silent_with_zero_variance():
    """var = 0 is a dead channel, not degenerate: epsilon keeps the scale finite."""
    assert pairs(lint_proto(_conv_bn_with(_stats(var=[1.0, 0.0, 1.0, 1.0])), "BN008")) == []


def test_bn008_fp16_weights_overflow_when_folded():
    """gamma 1e4 / sqrt(1e-8 + 1e-5) ~ 3e6 times fp16 weights: far beyond fp16's 65504."""
    model = _conv_bn_with(_stats(scale=1e4, var=1e-8), conv_dtype=np.float16, opset=15)
    findings = lint_proto(model, "BN008")
    assert pairs(findings) == [("BN008", "bn1")]
    assert "overflow" in findings[0].message.lower() or "huge" in findings[0].message.lower()


def test_bn008_negative_variance():
    assert pairs(lint_proto(_conv_bn_with(_stats(var=[1.0, -0.5, 1.0, 1.0])), "BN008")) == [("BN008", "bn1")]


def test_bn008_nan_gamma():
    assert pairs(lint_proto(_conv_bn_with(_stats(scale=[1.0, np.nan, 1.0, 1.0])), "BN008")) == [("BN008", "bn1")]


def test_bn008_inf_beta():
    assert pairs(lint_proto(_conv_bn_with(_stats(bias=[np.inf, 0.0, 0.0, 0.0])), "BN008")) == [("BN008", "bn1")]


# ========================================================================================================
# BN009 unfolded-batchnorm


def test_bn009_sample_is_one_finding_that_counts_the_foldable_batchnorms():
    found = lint_sample("bn009_unfolded_batchnorm.onnx", "BN009")
    assert pairs(found) == [("BN009", "bn1")]
    assert found[0].severity == "info"
    assert found[0].message == ("2 BatchNormalization are foldable but still in the model: BatchNormalization "
                                "'bn1' backward into Conv 'conv1'; BatchNormalization 'bn2' backward into Conv 'conv2'")


def test_bn009_silent_after_fold():
    model = load_model(LINT_SAMPLES / "bn009_unfolded_batchnorm.onnx")
    fold_model(model)
    assert lint_model(model, "folded.onnx", codes=frozenset({"BN009"})) == []


def test_bn009_training_mode_bn_is_not_foldable():
    assert pairs(lint_sample("bn006_batchnorm_in_training_mode.onnx", "BN009")) == []
    rng = make_rng(12)
    gb = GraphBuilder()
    t = _conv(gb, rng, _image_input(gb), 3, 4, "conv1")
    stats = bn_stats(rng, 4)
    params = [gb.init(f"bn1_{k}", stats[k]) for k in ("scale", "bias", "mean", "var")]
    gb.node("BatchNormalization", [t, *params], ["bn1_out", "bn1_rm", "bn1_rv"], name="bn1", training_mode=1)
    model = _finish(gb, _act(gb, "Relu", "bn1_out", "relu1"), opset=15)
    assert pairs(lint_proto(model, "BN009")) == []


def test_bn009_bn_after_relu_feeding_padded_conv_is_not_foldable():
    rng = make_rng(13)
    gb = GraphBuilder()
    t = _conv(gb, rng, _image_input(gb), 3, 4, "conv1", bias=True)
    t = _act(gb, "Relu", t, "relu1")
    t = _bn(gb, rng, t, 4, "bn1")
    t = _conv(gb, rng, t, 4, 4, "conv2", pad=1)
    assert pairs(lint_proto(_finish(gb, t), "BN009")) == []


def test_bn009_degenerate_bn_is_not_foldable():
    assert pairs(lint_sample("bn008_degenerate_statistics.onnx", "BN009")) == []


# ========================================================================================================
# BN010 consecutive-batchnorm


def test_bn010_sample():
    assert pairs(lint_sample("bn010_consecutive_batchnorm.onnx", "BN010")) == [("BN010", "bn2")]


def test_bn010_silent_with_relu_between():
    rng = make_rng(14)
    gb = GraphBuilder()
    t = _conv(gb, rng, _image_input(gb), 3, 4, "conv1")
    t = _bn(gb, rng, t, 4, "bn1")
    t = _act(gb, "Relu", t, "relu1")
    t = _bn(gb, rng, t, 4, "bn2")
    assert pairs(lint_proto(_finish(gb, t), "BN010")) == []


def test_bn010_silent_with_conv_between():
    rng = make_rng(15)
    gb = GraphBuilder()
    t = _conv(gb, rng, _image_input(gb), 3, 4, "conv1")
    t = _bn(gb, rng, t, 4, "bn1")
    t = _conv(gb, rng, t, 4, 4, "conv2")
    t = _bn(gb, rng, t, 4, "bn2")
    assert pairs(lint_proto(_finish(gb, t), "BN010")) == []


# ========================================================================================================
# BN011 batchnorm-on-model-input


def test_bn011_sample():
    assert pairs(lint_sample("bn011_batchnorm_on_model_input.onnx", "BN011")) == [("BN011", "bn_input")]


def test_bn011_silent_after_a_conv():
    rng = make_rng(16)
    gb = GraphBuilder()
    t = _conv(gb, rng, _image_input(gb), 3, 4, "conv1")
    t = _bn(gb, rng, t, 4, "bn1")
    assert pairs(lint_proto(_finish(gb, t), "BN011")) == []


def test_bn011_after_reshape_of_an_input():
    rng = make_rng(17)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [2, 12])
    t = gb.node("Reshape", [x, gb.init("shape", np.array([2, 3, 4], dtype=np.int64))], name="reshape")
    t = _bn(gb, rng, t, 3, "bn1")
    assert pairs(lint_proto(_finish(gb, t), "BN011")) == [("BN011", "bn1")]


def test_bn011_silent_on_a_loop_body_input():
    """A Loop body's inputs are the loop-carried values of each iteration, not model inputs."""
    rng = make_rng(24)
    body = GraphBuilder("body")
    body.input("i", INT64, [])
    body.input("cond_in", BOOL, [])
    body.input("v_in", FLOAT, [2, 3, 4, 4])
    body.node("Identity", ["cond_in"], "cond_out", name="cond_id")
    body.bn("v_in", bn_stats(rng, 3), name="loop_bn", out="v_out")
    body.output("cond_out", BOOL, [])
    body.output("v_out", FLOAT, [2, 3, 4, 4])
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [2, 3, 4, 4])
    t = gb.node("Conv", [x, gb.init("W", weights(rng, [3, 3, 1, 1]))], name="conv", kernel_shape=[1, 1])
    gb.init("trip", np.array(2, dtype=np.int64))
    gb.init("cond", np.array(True))
    gb.node("Loop", ["trip", "cond", t], ["Y"], name="loop", body=body.graph())
    gb.output("Y", FLOAT, [2, 3, 4, 4])
    assert pairs(lint_proto(gb.model(), "BN011")) == []


def test_bn011_silent_on_a_second_bn_after_an_input_bn():
    """Only the BN that reads the input is 'on the input'."""
    rng = make_rng(18)
    gb = GraphBuilder()
    t = _bn(gb, rng, _image_input(gb), 3, "bn1")
    t = _act(gb, "Relu", t, "relu1")
    t = _bn(gb, rng, t, 3, "bn2")
    assert pairs(lint_proto(_finish(gb, t), "BN011")) == [("BN011", "bn1")]


# ========================================================================================================
# BN012 overridable-batchnorm-parameters


def test_bn012_sample():
    assert pairs(lint_sample("bn012_overridable_parameters.onnx", "BN012")) == [("BN012", "bn1")]


def test_bn012_sample_is_ir8_with_bn_params_as_inputs():
    proto = onnx.load(str(LINT_SAMPLES / "bn012_overridable_parameters.onnx"))
    assert proto.ir_version >= 4
    bn = next(n for n in proto.graph.node if n.op_type == "BatchNormalization")
    assert set(bn.input[1:5]) <= {i.name for i in proto.graph.input}


def _conv_bn(rng_seed: int = 19) -> GraphBuilder:
    rng = make_rng(rng_seed)
    gb = GraphBuilder()
    t = _conv(gb, rng, _image_input(gb), 3, 4, "conv1")
    t = _bn(gb, rng, t, 4, "bn1")
    t = _act(gb, "Relu", t, "relu1")
    gb.output(t)
    return gb


def test_bn012_silent_with_plain_initializers():
    assert pairs(lint_proto(_conv_bn().model(), "BN012")) == []


def test_bn012_silent_on_ir_version_3():
    """Before IR 4 every initializer had to be a graph input: that is not an override point."""
    model = _conv_bn().model(opset=7, ir_version=3, initializers_as_inputs=True)
    assert pairs(lint_proto(model, "BN012")) == []


def test_bn012_initializers_as_inputs_on_ir_version_8():
    model = _conv_bn().model(initializers_as_inputs=True)
    assert pairs(lint_proto(model, "BN012")) == [("BN012", "bn1")]


def test_bn012_only_the_conv_weight_is_an_input():
    """'or the weights before it': the Conv weight an initializer that is also a graph input."""
    proto = _conv_bn().model()
    proto.graph.input.append(onnx.helper.make_tensor_value_info("conv1_W", FLOAT, [4, 3, 3, 3]))
    onnx.checker.check_model(proto, full_check=True)
    assert pairs(lint_proto(proto, "BN012")) == [("BN012", "bn1")]


def test_bn012_matmul_weight_behind_its_bias_add_is_an_input():
    """MatMul + Add is one linear layer (as in BN001): its weight being overridable counts too."""
    rng = make_rng(25)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [2, 6])
    t = gb.node("MatMul", [x, gb.init("W", weights(rng, [6, 4]))], name="matmul")
    t = gb.node("Add", [t, gb.init("Bias", rng.normal(0, 0.1, 4).astype(np.float32))], name="bias_add")
    t = _bn(gb, rng, t, 4, "bn1")
    proto = _finish(gb, t)
    proto.graph.input.append(onnx.helper.make_tensor_value_info("W", FLOAT, [6, 4]))
    onnx.checker.check_model(proto, full_check=True)
    assert pairs(lint_proto(proto, "BN012")) == [("BN012", "bn1")]


def test_bn012_silent_on_bn_after_add_of_two_model_inputs():
    """The second Add input is data, not a weight: nothing here could have been an initializer."""
    rng = make_rng(20)
    gb = GraphBuilder()
    a = gb.input("A", FLOAT, [2, 3, 8, 8])
    b = gb.input("B", FLOAT, [2, 3, 8, 8])
    t = gb.node("Add", [a, b], name="add")
    t = _bn(gb, rng, t, 3, "bn1")
    assert pairs(lint_proto(_finish(gb, t), "BN012")) == []


def _two_conv_bn_blocks(producer: str = "bnfold-tests", **model_kwargs) -> onnx.ModelProto:
    rng = make_rng(23)
    gb = GraphBuilder()
    t = _act(gb, "Relu", _bn(gb, rng, _conv(gb, rng, _image_input(gb), 3, 4, "conv1"), 4, "bn1"), "relu1")
    t = _act(gb, "Relu", _bn(gb, rng, _conv(gb, rng, t, 4, 4, "conv2"), 4, "bn2"), "relu2")
    proto = _finish(gb, t, **model_kwargs)
    proto.producer_name = producer
    return proto


@pytest.mark.parametrize("producer, fix", [
    ("pytorch", "re-export without keep_initializers_as_inputs=True, or drop these initializers from graph.input "
                "(onnxruntime's tools/python/remove_initializer_from_input.py)"),
    ("bnfold-tests", "drop these initializers from graph.input "
                     "(onnxruntime's tools/python/remove_initializer_from_input.py)")])
def test_bn012_is_one_finding_per_model_and_its_fix_speaks_the_exporter(producer, fix):
    found = lint_proto(_two_conv_bn_blocks(producer, initializers_as_inputs=True), "BN012")
    assert pairs(found) == [("BN012", "bn1")]
    assert found[0].message == (
        "2 BatchNormalization read initializers that are also graph inputs, which a caller may override, so "
        "runtimes cannot fold or constant-fold them: BatchNormalization 'bn1' ('bn1_scale' and 4 more); "
        "BatchNormalization 'bn2' ('bn2_scale' and 4 more)")
    assert found[0].fix == fix


def test_bn012_and_bn011_on_statistics_that_are_plain_graph_inputs():
    # parameters fed at run time (no initializer): nothing can be overridden, and nothing was learned
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 3] x, float[3] s, float[3] b, float[3] m, float[3] v) => (float[2, 3] y)
        {
            n = BatchNormalization (x, s, b, m, v)
            y = Relu (n)
        }""")
    proto.graph.node[0].name = "bn"
    assert lint_proto(proto) == []


# ========================================================================================================
# BatchNormalization decomposed by TensorFlow (tf2onnx's Mul/Add in a .../batchnorm/ scope)


def _decomposed(body: str, names: list[str], inputs: str = "float[1, 3] x") -> ir.Model:
    proto = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17], producer_name: "tf2onnx">
        g ({inputs}) => (float[1, 3] y)
        <float[3, 3] w = {{1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0}}, float[3] s = {{0.9, 1.1, 1.2}},
         float[3] t = {{0.3, -0.3, 0.1}}, float[3] s2 = {{0.5, 0.6, 0.7}}, float[3] t2 = {{0.0, 0.1, 0.2}}>
        {{
            {body}
        }}""")
    for node, name in zip(proto.graph.node, names, strict=True):
        node.name = name
    return ir.from_proto(proto)


def test_bn011_and_bn010_on_decomposed_batchnorms():
    model = _decomposed("p = Mul (x, s)\n q = Add (p, t)\n p2 = Mul (q, s2)\n q2 = Add (p2, t2)\n y = Relu (q2)",
                        ["m/bn/batchnorm/mul_1", "m/bn/batchnorm/add_1", "m/bn_1/batchnorm/mul_1",
                         "m/bn_1/batchnorm/add_1", "m/act/Relu"])
    found = lint_model(model, "m.onnx", codes=frozenset({"BN010", "BN011"}))
    assert [(f.code, f.node, f.keras_layer) for f in found] == [
        ("BN010", "m/bn_1/batchnorm/mul_1", "bn_1"), ("BN011", "m/bn/batchnorm/mul_1", "bn")]
    assert found[0].message == ("BatchNormalization 'm/bn_1' (exported as Mul+Add from 'm/bn_1/batchnorm/mul_1') "
                                "normalizes the output of BatchNormalization 'm/bn' (exported as Mul+Add from "
                                "'m/bn/batchnorm/mul_1') directly")


def test_bn005_on_a_decomposed_batchnorm():
    model = _decomposed("h = MatMul (x, w)\n d = Dropout (h)\n p = Mul (d, s)\n q = Add (p, t)\n y = Relu (q)",
                        ["m/dense/MatMul", "m/dropout/Dropout", "m/bn/batchnorm/mul_1", "m/bn/batchnorm/add_1",
                         "m/act/Relu"])
    assert pairs(lint_model(model, "m.onnx", codes=frozenset({"BN005"}))) == [("BN005", "m/bn/batchnorm/mul_1")]


def test_bn008_on_a_decomposed_batchnorm_with_a_non_finite_scale():
    model = _decomposed("h = MatMul (x, w)\n p = Mul (h, s)\n q = Add (p, t)\n y = Relu (q)",
                        ["m/dense/MatMul", "m/bn/batchnorm/mul_1", "m/bn/batchnorm/add_1", "m/act/Relu"])
    model.graph.initializers["s"].const_value = ir.tensor(np.array([0.9, np.inf, 1.2], np.float32), name="s")
    found = lint_model(model, "m.onnx", codes=frozenset({"BN008"}))
    assert [(f.code, f.message) for f in found] == [
        ("BN008", "BatchNormalization 'm/bn' (exported as Mul+Add from 'm/bn/batchnorm/mul_1') has 1 non-finite "
                  "value(s) in its Mul 'm/bn/batchnorm/mul_1': onnxruntime returns NaN for those channels")]


# ========================================================================================================
# BN006 per model


@pytest.mark.parametrize("producer, fix", [
    ("pytorch", "export in inference mode: model.eval() before torch.onnx.export (or training=TrainingMode.EVAL)"),
    ("tf2onnx", "export in inference mode: convert with training=False and no training=True in BN calls")])
def test_bn006_is_one_finding_for_an_export_in_training_mode(producer, fix):
    proto = _two_conv_bn_blocks(producer)
    for node in proto.graph.node:
        if node.op_type == "BatchNormalization":
            node.attribute.append(onnx.helper.make_attribute("training_mode", 1))
    found = lint_proto(proto, "BN006")
    assert [(f.code, f.node, f.severity) for f in found] == [("BN006", "bn1", "error")]
    assert found[0].message == (
        "2 BatchNormalization are in training mode, normalizing with the statistics of each batch (a sample's "
        "output depends on the rest of its batch): BatchNormalization 'bn1' (training_mode=1); "
        "BatchNormalization 'bn2' (training_mode=1)")
    assert found[0].fix == fix


# ========================================================================================================
# names people recognise


def test_an_unnamed_node_is_named_by_the_module_path_of_its_weights():
    # PyTorch 1.x names no node: the message says what the weights say, the location stays the output name
    proto = _two_conv_bn_blocks("pytorch")
    renames = {"conv1_W": "features.0.weight", "conv1": "", "bn1": ""}
    for init in proto.graph.initializer:
        init.name = renames.get(init.name, init.name)
    for node in proto.graph.node:
        node.input[:] = [renames.get(i, i) for i in node.input]
        node.name = renames.get(node.name, node.name)
    bn1 = next(f for f in lint_proto(proto, "BN009"))
    assert bn1.node == proto.graph.node[1].output[0]
    assert bn1.message.startswith(f"2 BatchNormalization are foldable but still in the model: BatchNormalization "
                                  f"'{proto.graph.node[1].output[0]}' backward into Conv 'features.0'; ")


# ========================================================================================================
# BN015 batchnorm-inflates-folded-weight-range


def _conv_bn_variance(var5: float, gamma5: float | None = None, relu_between: bool = False) -> onnx.ModelProto:
    rng = make_rng(31)
    gb = GraphBuilder()
    t = _conv(gb, rng, _image_input(gb), 3, 8, "conv1")
    if relu_between:
        t = _act(gb, "Relu", t, "relu0")
    stats = bn_stats(rng, 8)
    stats["var"][5] = var5
    if gamma5 is not None:
        stats["scale"][5] = gamma5
    t = gb.bn(t, stats, name="bn1")
    return _finish(gb, _act(gb, "Relu", t, "relu1"))


def test_bn015_on_a_near_zero_variance_channel():
    (found,) = lint_proto(_conv_bn_variance(1e-4), "BN015")
    assert (found.code, found.node, found.severity) == ("BN015", "bn1", "warning")
    assert found.message.startswith("folding BatchNormalization 'bn1' into Conv 'conv1' widens the weight's "
                                    "per-tensor range ")
    assert "x (channel 5, running variance 0.0001): per-tensor int8 quantization" in found.message


@pytest.mark.parametrize("model", [
    _conv_bn_variance(0.5),                     # an ordinary spread of variances
    _conv_bn_variance(1e-4, gamma5=0.0),        # the dead channel pruned by gamma 0
    _conv_bn_variance(1e-4, relu_between=True),  # not folded: the weight stays as it is
], ids=["uniform", "gamma-zero", "not-folded"])
def test_bn015_silent(model):
    assert lint_proto(model, "BN015") == []


def test_bn015_on_a_decomposed_batchnorm():
    model = _decomposed("h = MatMul (x, w)\n p = Mul (h, s)\n q = Add (p, t)\n y = Relu (q)",
                        ["m/dense/MatMul", "m/bn/batchnorm/mul_1", "m/bn/batchnorm/add_1", "m/act/Relu"])
    model.graph.initializers["s"].const_value = ir.tensor(np.array([0.9, 60.0, 1.2], np.float32), name="s")
    (found,) = lint_model(model, "m.onnx", codes=frozenset({"BN015"}))
    assert found.message == (
        "folding BatchNormalization 'm/bn' (exported as Mul+Add from 'm/bn/batchnorm/mul_1') into MatMul "
        "'m/dense/MatMul' widens the weight's per-tensor range 50x (channel 1): per-tensor int8 quantization "
        "would give the other channels about 1/50 of their levels")


# ========================================================================================================
# shared behaviour: suppression, Keras layer names, messages, node labels


def _two_biased_conv_blocks(ignore_on: str | None, ignore: str = "BN001") -> onnx.ModelProto:
    rng = make_rng(21)
    gb = GraphBuilder()
    t = _conv(gb, rng, _image_input(gb), 3, 4, "conv1", bias=True)
    t = _bn(gb, rng, t, 4, "bn1")
    t = _act(gb, "Relu", t, "relu1")
    t = _conv(gb, rng, t, 4, 4, "conv2", bias=True)
    t = _bn(gb, rng, t, 4, "bn2")
    t = _act(gb, "Relu", t, "relu2")
    if ignore_on is not None:
        node = next(n for n in gb.nodes if n.name == ignore_on)
        entry = node.metadata_props.add()
        entry.key, entry.value = IGNORE_KEY, ignore
    return _finish(gb, t)


def test_ignore_metadata_suppresses_only_that_code_on_that_node():
    assert pairs(lint_proto(_two_biased_conv_blocks(None))) == [
        ("BN001", "conv1"), ("BN001", "conv2"), ("BN009", "bn1")]
    assert pairs(lint_proto(_two_biased_conv_blocks("conv1"))) == [("BN001", "conv2"), ("BN009", "bn1")]


def test_ignore_metadata_on_another_code_does_not_suppress_bn001():
    assert pairs(lint_proto(_two_biased_conv_blocks("conv1", ignore="BN009"), "BN001")) == [
        ("BN001", "conv1"), ("BN001", "conv2")]


@pytest.mark.parametrize("ignore", ["BN009", "bn009", "BN001, BN009", "BN00", "ALL"])
def test_ignore_metadata_lists_prefixes_and_all(ignore):
    # the per-model BN009 counts only the BatchNormalizations that do not ignore it
    findings = lint_proto(_two_biased_conv_blocks("bn1", ignore=ignore), "BN009")
    assert pairs(findings) == [("BN009", "bn2")]
    assert findings[0].message.startswith("1 BatchNormalization is foldable but still in the model: ")


def test_keras_layer_metadata_shows_up_in_findings():
    model = _two_biased_conv_blocks(None)
    for node in model.graph.node:
        if node.name in ("conv1", "bn2"):
            entry = node.metadata_props.add()
            entry.key, entry.value = KERAS_LAYER_KEY, f"keras_{node.name}"
    layers = {(f.code, f.node): f.keras_layer for f in lint_proto(model)}
    assert layers == {("BN001", "conv1"): "keras_conv1", ("BN001", "conv2"): None, ("BN009", "bn1"): None}


def test_classic_mlp_findings_carry_keras_layer_names():
    layers = [(f.code, f.node, f.keras_layer) for f in lint_sample("classic_mlp.onnx")]
    assert layers == [
        ("BN001", "fc1", "dense"), ("BN001", "fc2", "dense_1"), ("BN001", "fc3", "dense_2"),
        ("BN002", "bn3", "batch_normalization_2"),
        ("BN009", "bn1", None),  # one finding for the three: no one layer's name
    ]


ALL_SAMPLE_PATHS = sorted(SAMPLES.rglob("*.onnx"))


@pytest.mark.parametrize("path", ALL_SAMPLE_PATHS, ids=[str(p.relative_to(SAMPLES)) for p in ALL_SAMPLE_PATHS])
def test_every_finding_is_complete(path):
    findings = lint_model(load_model(path), str(path))
    for f in findings:
        rule = RULES[f.code]
        assert (f.name, f.severity) == (rule.name, rule.severity)
        assert f.path == str(path)
        assert f.node and f.op_type
        assert f.message.strip() and f"'{f.node}'" in f.message, f
        assert f.fix.strip(), f
        assert "\n" not in f.message and "\n" not in f.fix, "message and fix are one line"


def test_every_rule_has_a_sample_that_shows_it():
    shown = set()
    for path in sorted(LINT_SAMPLES.glob("bn0*.onnx")):
        code = "BN" + path.name[2:5]
        assert code in RULES
        findings = lint_model(load_model(path), str(path), codes=frozenset({code}))
        assert findings, f"{path.name} shows no {code}"
        shown.add(code)
    assert shown == set(RULES) - {"BN013", "BN014"}  # only Keras files show these: sample_models/keras/


def test_unnamed_node_falls_back_to_first_output_name():
    rng = make_rng(22)
    gb = GraphBuilder()
    t = _conv(gb, rng, _image_input(gb), 3, 4, "conv1", bias=True)
    t = _bn(gb, rng, t, 4, "bn1")
    model = _finish(gb, t)
    for node in model.graph.node:
        if node.op_type in ("Conv", "BatchNormalization"):
            node.name = ""
    conv_out = next(n for n in model.graph.node if n.op_type == "Conv").output[0]
    bn_out = next(n for n in model.graph.node if n.op_type == "BatchNormalization").output[0]
    findings = lint_proto(model)
    assert pairs(findings) == [("BN001", conv_out), ("BN009", bn_out)]
    assert all(f"'{f.node}'" in f.message for f in findings)


def test_findings_come_in_rule_then_graph_order():
    findings = lint_sample("classic_mlp.onnx")
    codes = [f.code for f in findings]
    assert codes == sorted(codes)


def _conv_bn_with_bias(bias_nodes, bias_inits, bias_name):
    rng = make_rng(61)
    stats = bn_stats(rng, 4)
    inits = [onnx.numpy_helper.from_array(weights(rng, (4, 3, 3, 3)), "W"), *bias_inits]
    inits += [onnx.numpy_helper.from_array(v, f"bn.{k}") for k, v in stats.items()]
    nodes = [onnx.helper.make_node("Relu", ["X"], ["act"], name="relu"), *bias_nodes,
             onnx.helper.make_node("Conv", ["act", "W", bias_name], ["c"], name="conv", pads=[1, 1, 1, 1]),
             onnx.helper.make_node("BatchNormalization", ["c", *[f"bn.{k}" for k in stats]], ["Y"], name="bn")]
    graph = onnx.helper.make_graph(nodes, "g", [onnx.helper.make_tensor_value_info("X", FLOAT, [1, 3, 5, 5])],
                                   [onnx.helper.make_tensor_value_info("Y", FLOAT, [1, 4, 5, 5])], inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_bn001_silent_on_the_zero_bias_pytorch_dynamo_synthesizes():
    """dynamo gives a bias=False Conv the bias Expand(CastLike(0, x), Shape(W)): not the author's bias."""
    nodes = [onnx.helper.make_node("Constant", [], ["zero"], name="zero", value_float=0.0),
             onnx.helper.make_node("CastLike", ["zero", "act"], ["zero_like"], name="castlike"),
             onnx.helper.make_node("Shape", ["W"], ["shape"], name="shape", end=1),
             onnx.helper.make_node("Expand", ["zero_like", "shape"], ["bias"], name="expand")]
    assert pairs(lint_proto(_conv_bn_with_bias(nodes, [], "bias"), "BN001")) == []


def test_bn001_still_fires_on_a_stored_all_zero_bias():
    """A stored bias stays at its zero init when BN follows (its gradient is zero): still redundant."""
    bias = onnx.numpy_helper.from_array(np.zeros(4, np.float32), "B")
    assert pairs(lint_proto(_conv_bn_with_bias([], [bias], "B"), "BN001")) == [("BN001", "conv")]


def test_bn004_counts_batchnorms_tensorflow_merged_into_their_conv_as_placed_before():
    # Keras 3 via tf2onnx: the two BN before their ReLU were merged into the Convs (bias from batchnorm/sub);
    # the one after its ReLU is left as Mul/Add
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17], producer_name: "tf2onnx">
        g (float[1, 2, 4, 4] x) => (float[1, 2, 4, 4] y)
        <float[2, 2, 1, 1] w1 = {0.5, -0.3, 0.2, 0.8}, float[2] b1 = {0.1, 0.2},
         float[2, 2, 1, 1] w2 = {0.4, 0.3, -0.2, 0.6}, float[2] b2 = {0.0, 0.1},
         float[2, 2, 1, 1] w3 = {0.7, 0.1, 0.3, -0.5}, float[2, 1, 1] s = {0.9, 1.1}, float[2, 1, 1] t = {0.3, -0.3}>
        {
            c1 = Conv (x, w1, b1)
            r1 = Relu (c1)
            c2 = Conv (r1, w2, b2)
            r2 = Relu (c2)
            c3 = Conv (r2, w3)
            r3 = Relu (c3)
            p = Mul (r3, s)
            y = Add (p, t)
        }""")
    names = {"w1": "m_1/conv2d_1/convolution/merged_input:0", "b1": "m_1/batch_normalization_1/batchnorm/sub:0",
             "w2": "m_1/conv2d_1_2/convolution/merged_input:0", "b2": "m_1/batch_normalization_1_2/batchnorm/sub:0"}
    for init in proto.graph.initializer:
        init.name = names.get(init.name, init.name)
    for node, name in zip(proto.graph.node, ["Conv__1", "m_1/act_1/Relu", "Conv__2", "m_1/act_1_2/Relu",
                                             "m_1/conv2d_2_1/convolution", "m_1/act_2_1/Relu",
                                             "m_1/bn_2_1/batchnorm/mul_1", "m_1/bn_2_1/batchnorm/add_1"]):
        node.input[:] = [names.get(i, i) for i in node.input]
        node.name = name
    (found,) = lint_proto(proto, "BN004")
    assert (found.node, found.keras_layer) == ("m_1/bn_2_1/batchnorm/mul_1", "bn_2")
    assert found.message.endswith("is placed after its activation; 2 BatchNormalization in this model are placed "
                                  "before it")
    # tf2onnx's own Conv__1 is known by its weight's path: Keras 3 layer conv2d (traced as conv2d_1)
    ctx = LintContext(ir.from_proto(proto), "m.onnx")
    assert [ctx.keras_layer(n) for n in ctx.model.graph if n.op_type == "Conv"] == ["conv2d", "conv2d_1", "conv2d_2"]


@pytest.mark.parametrize("producer, fix", [
    ("pytorch", "build the layer with bias=False (nn.Conv2d/nn.Linear(..., bias=False))"),
    ("tf2onnx", "build the Keras layer with use_bias=False"),
    ("PaddlePaddle", "build the layer with bias_attr=False"),
    ("onnx.helper", "drop the bias (Keras: use_bias=False; PyTorch: bias=False)")])
def test_bn001_fix_speaks_the_exporter_s_framework(producer, fix):
    model = load_model(LINT_SAMPLES / "bn001_redundant_bias.onnx")
    model.producer_name = producer
    (found,) = lint_model(model, "m.onnx", codes=frozenset({"BN001"}))
    assert found.fix == fix + "; `bnfold fold` also removes it"


def test_bn001_on_pytorch_dynamo_export_flags_only_the_real_biases():
    path = SAMPLES / "pytorch" / "resnetish_dynamo.onnx"
    findings = lint_model(load_model(path), str(path), codes=frozenset({"BN001"}))
    assert sorted(f.op_type for f in findings) == ["Conv", "Conv", "ConvTranspose", "Gemm"]


def _mlp_with_affine(scope: str) -> ir.Model:
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17], producer_name: "tf2onnx">
        g (float[1, 4] x) => (float[1, 2] y)
        <float[4, 2] w = {1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5, 0.5}, float[2] b = {0.1, 0.2},
         float[2] s = {0.9, 1.1}, float[2] t = {0.3, -0.3}>
        {
            m = MatMul (x, w)
            c = Add (m, b)
            p = Mul (c, s)
            q = Add (p, t)
            y = Softmax (q)
        }""")
    names = ["model/dense/MatMul", "model/dense/BiasAdd", f"model/{scope}/mul_1", f"model/{scope}/add_1",
             "model/head/Softmax"]
    for node, name in zip(proto.graph.node, names):
        node.name = name
    return ir.from_proto(proto)


def test_batchnorm_decomposed_by_tensorflow_is_a_batchnorm_for_bn001_and_bn002():
    found = lint_model(_mlp_with_affine("batch_normalization/batchnorm"), "m.onnx")
    assert [(f.code, f.node, f.keras_layer) for f in found] == [
        ("BN001", "model/dense/MatMul", "dense"),
        ("BN002", "model/batch_normalization/batchnorm/mul_1", "batch_normalization"),
        ("BN009", "model/batch_normalization/batchnorm/mul_1", "batch_normalization")]
    assert found[1].message.startswith("BatchNormalization 'model/batch_normalization' (exported as Mul+Add from "
                                       "'model/batch_normalization/batchnorm/mul_1') feeds Softmax")


def _renamed(model: ir.Model, rename: dict[str, str], weight: str) -> ir.Model:
    for node in model.graph:
        model_scope, layer, op = node.name.split("/", 2)
        node.name = f"{rename[model_scope]}/{rename.get(layer, layer)}/{op}"
    model.graph.initializers["w"].name = weight  # how the layer read its kernel
    return model


@pytest.mark.parametrize("kernel_read, layer", [("model_1/dense_1/Cast/ReadVariableOp:0", "dense"),
                                                ("model_1/dense_1/MatMul/ReadVariableOp:0", "dense_1")])
def test_keras3_trace_scopes_name_the_layer(kernel_read, layer):
    # Keras 3 traces layer `dense` in scope `dense_1` and reads its kernel through a dtype-policy Cast; a
    # tf_keras model built late in a session also has `_<k>` everywhere but reads the kernel in its MatMul
    model = _renamed(_mlp_with_affine("batch_normalization/batchnorm"),
                     {"model": "model_1", "dense": "dense_1", "batch_normalization": "batch_normalization_1",
                      "head": "head_1"}, kernel_read)
    found = lint_model(model, "m.onnx", codes=frozenset({"BN001", "BN002"}))
    bn = "batch_normalization" if layer == "dense" else "batch_normalization_1"
    assert [(f.code, f.keras_layer) for f in found] == [("BN001", layer), ("BN002", bn)]


def test_a_per_channel_mul_add_outside_a_batchnorm_scope_is_not_a_batchnorm():
    # a Scale layer or a hand-written affine: its bias before is not cancelled by any mean subtraction
    assert [f.code for f in lint_model(_mlp_with_affine("scale"), "m.onnx")] == []


@pytest.mark.parametrize("scale, flagged", [(np.float32(1 / np.sqrt(1.001)), True),
                                            (np.float32(1 / np.sqrt(1 + 1e-5)), True),
                                            (np.float32(0.97), False)])
def test_bn007_on_a_decomposed_bn_that_scales_by_its_initial_value(scale, flagged):
    model = _mlp_with_affine("batch_normalization/batchnorm")
    s = next(v for v in model.graph.initializers.values() if v.name == "s")
    s.const_value = ir.tensor(np.full(2, scale, np.float32), name="s")
    codes = [f.code for f in lint_model(model, "m.onnx", codes=frozenset({"BN007"}))]
    assert codes == (["BN007"] if flagged else [])


def test_bn004_sees_the_placement_of_decomposed_batchnorms():
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17], producer_name: "tf2onnx">
        g (float[1, 2] x) => (float[1, 2] y)
        <float[2, 2] w = {1.0, 0.5, -0.5, 1.0}, float[2] s = {0.9, 1.1}, float[2] t = {0.3, -0.3}>
        {
            m1 = MatMul (x, w)
            p1 = Mul (m1, s)
            q1 = Add (p1, t)
            r1 = Relu (q1)
            m2 = MatMul (r1, w)
            p2 = Mul (m2, s)
            q2 = Add (p2, t)
            r2 = Relu (q2)
            m3 = MatMul (r2, w)
            r3 = Relu (m3)
            p3 = Mul (r3, s)
            q3 = Add (p3, t)
            y = MatMul (q3, w)
        }""")
    names = ["model/dense/MatMul", "model/bn/batchnorm/mul_1", "model/bn/batchnorm/add_1", "model/relu/Relu",
             "model/dense_1/MatMul", "model/bn_1/batchnorm/mul_1", "model/bn_1/batchnorm/add_1",
             "model/relu_1/Relu", "model/dense_2/MatMul", "model/relu_2/Relu", "model/bn_2/batchnorm/mul_1",
             "model/bn_2/batchnorm/add_1", "model/head/MatMul"]
    for node, name in zip(proto.graph.node, names):
        node.name = name
    found = lint_proto(proto, "BN004")
    assert pairs(found) == [("BN004", "model/bn_2/batchnorm/mul_1")]
    assert found[0].message.startswith("BatchNormalization 'model/bn_2' (exported as Mul+Add from "
                                       "'model/bn_2/batchnorm/mul_1') is placed after its activation")


@pytest.mark.parametrize("producer, advice", [("pytorch", "check that the trained state_dict was loaded"),
                                              ("tf2onnx", "run the moving-statistics update during training"),
                                              ("paddle2onnx", "update the moving statistics during training")])
def test_bn007_fix_speaks_the_exporter_s_framework(producer, advice):
    proto = onnx.load(SAMPLES / "lint" / "bn007_untrained_statistics.onnx")
    proto.producer_name = producer
    (finding,) = lint_proto(proto, "BN007")
    assert finding.fix.startswith(advice)

"""Cases the fold must refuse: the exact reason code, BN (or the affine op) still present, outputs unchanged.

Every model is checked (onnx.checker, full) and run in onnxruntime before folding.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from helpers import (
    FLOAT,
    FLOAT16,
    GraphBuilder,
    assert_fold_refused,
    assert_outputs_close,
    bn_stats,
    check_reference,
    decision,
    fold_copy,
    make_rng,
    ort_run,
    weights,
)

from bnfold.fold.result import (
    CHANNEL_AXIS_MISMATCH,
    DEGENERATE_STATISTICS,
    FOLDED,
    GRAPH_OUTPUT,
    NO_LINEAR_NEIGHBOUR,
    NON_CONSTANT_PARAMETERS,
    NON_POSITIVE_SCALE,
    NONLINEARITY_BETWEEN,
    OVERFLOW,
    OVERRIDABLE_PARAMETERS,
    UNDERFLOW,
    PADDING_FORWARD,
    SHARED_OUTPUT,
    SKIPPED,
    TRAINING_MODE,
    UNSUPPORTED_PARTNER,
)

C = 4


def _x(gb, shape=(2, 3, 6, 6), elem=FLOAT):
    return gb.input("X", elem, list(shape))


def _conv(gb, x, rng, *, cin=3, cout=C, name="conv", out="conv_out", w_dtype=np.float32, **attrs):
    attrs.setdefault("kernel_shape", [3, 3])
    return gb.node("Conv", [x, gb.init(f"{name}_W", weights(rng, [cout, cin, *attrs["kernel_shape"]], w_dtype))],
                   out, name=name, **attrs)


def _feeds(shape=(2, 3, 6, 6), seed=100, dtype=np.float32):
    return {"X": make_rng(seed).normal(0, 1, shape).astype(dtype)}


# ---------------------------------------------------------------------------------------------------------
# training mode


def test_training_mode_attribute():
    rng = make_rng(20)
    gb = GraphBuilder()
    y = _conv(gb, _x(gb), rng)
    stats = bn_stats(rng, C)
    params = [gb.init(f"bn_{k}", stats[k]) for k in ("scale", "bias", "mean", "var")]
    gb.node("BatchNormalization", [y, *params], ["Y", "running_mean", "running_var"], name="bn", training_mode=1)
    gb.output("Y", FLOAT, [2, C, 4, 4])
    assert_fold_refused(gb.model(opset=15), _feeds(), "bn", TRAINING_MODE)


def test_opset9_running_mean_output_used():
    rng = make_rng(21)
    gb = GraphBuilder()
    y = _conv(gb, _x(gb), rng)
    stats = bn_stats(rng, C)
    params = [gb.init(f"bn_{k}", stats[k]) for k in ("scale", "bias", "mean", "var")]
    outs = ["Y", "running_mean", "running_var", "saved_mean", "saved_var"]
    gb.node("BatchNormalization", [y, *params], outs, name="bn")
    for name in outs[2:]:
        gb.vinfo(name, FLOAT, [C])
    gb.output("Y", FLOAT, [2, C, 4, 4])
    gb.output("running_mean", FLOAT, [C])
    assert_fold_refused(gb.model(opset=9), _feeds(), "bn", TRAINING_MODE)


# ---------------------------------------------------------------------------------------------------------
# parameters that are not constants


def test_bn_scale_is_graph_input():
    rng = make_rng(22)
    gb = GraphBuilder()
    y = _conv(gb, _x(gb), rng)
    stats = bn_stats(rng, C)
    scale = gb.input("bn_scale", FLOAT, [C])
    params = [scale] + [gb.init(f"bn_{k}", stats[k]) for k in ("bias", "mean", "var")]
    gb.node("BatchNormalization", [y, *params], "Y", name="bn")
    gb.output("Y", FLOAT, [2, C, 4, 4])
    feeds = {**_feeds(), "bn_scale": stats["scale"]}
    assert_fold_refused(gb.model(), feeds, "bn", NON_CONSTANT_PARAMETERS)


def test_bn_mean_from_random_normal():
    rng = make_rng(23)
    gb = GraphBuilder()
    y = _conv(gb, _x(gb), rng)
    stats = bn_stats(rng, C)
    # Seeded (so the reference is reproducible across sessions) but still not a constant.
    mean = gb.node("RandomNormal", [], "bn_mean", name="random_mean", shape=[C], mean=0.0, scale=0.5, seed=7.0)
    params = [gb.init("bn_scale", stats["scale"]), gb.init("bn_bias", stats["bias"]), mean,
              gb.init("bn_var", stats["var"])]
    gb.node("BatchNormalization", [y, *params], "Y", name="bn")
    gb.output("Y", FLOAT, [2, C, 4, 4])
    model, feeds = gb.model(), _feeds()
    np.testing.assert_array_equal(check_reference(model, feeds)[0], check_reference(model, feeds)[0])
    assert_fold_refused(model, feeds, "bn", NON_CONSTANT_PARAMETERS)


def test_conv_weight_is_graph_input():
    rng = make_rng(24)
    gb = GraphBuilder()
    x = _x(gb)
    w = gb.input("W", FLOAT, [C, 3, 3, 3])
    y = gb.node("Conv", [x, w], "conv_out", name="conv", kernel_shape=[3, 3])
    gb.bn(y, bn_stats(rng, C), out="Y")
    gb.output("Y", FLOAT, [2, C, 4, 4])
    feeds = {**_feeds(), "W": weights(rng, [C, 3, 3, 3])}
    assert_fold_refused(gb.model(), feeds, "bn", NON_CONSTANT_PARAMETERS)


def test_strict_inputs_refuses_initializer_inputs():
    rng = make_rng(25)
    gb = GraphBuilder()
    y = _conv(gb, _x(gb), rng)
    gb.bn(y, bn_stats(rng, C), out="Y")
    gb.output("Y", FLOAT, [2, C, 4, 4])
    model = gb.model(opset=9, ir_version=4, initializers_as_inputs=True)
    assert len(model.graph.input) == 6
    _, result = assert_fold_refused(model, _feeds(), "bn", OVERRIDABLE_PARAMETERS, strict_inputs=True)
    assert decision(result, "bn").overridable is True


# ---------------------------------------------------------------------------------------------------------
# graph structure


def test_conv_output_shared_and_bn_consumer_not_linear():
    rng = make_rng(26)
    gb = GraphBuilder()
    y = _conv(gb, _x(gb), rng)
    b = gb.bn(y, bn_stats(rng, C))
    gb.node("Relu", [b], "Y1", name="relu")
    gb.node("Sigmoid", [y], "Y2", name="side")
    gb.output("Y1", FLOAT, [2, C, 4, 4])
    gb.output("Y2", FLOAT, [2, C, 4, 4])
    assert_fold_refused(gb.model(), _feeds(), "bn", SHARED_OUTPUT)


def test_conv_output_is_graph_output():
    rng = make_rng(27)
    gb = GraphBuilder()
    y = _conv(gb, _x(gb), rng, out="conv_out")
    gb.bn(y, bn_stats(rng, C), out="Y")
    gb.output("conv_out", FLOAT, [2, C, 4, 4])
    gb.output("Y", FLOAT, [2, C, 4, 4])
    assert_fold_refused(gb.model(), _feeds(), "bn", GRAPH_OUTPUT)


def test_nonlinearity_between():
    rng = make_rng(28)
    gb = GraphBuilder()
    y = _conv(gb, _x(gb), rng)
    y = gb.node("Relu", [y], "relu1_out", name="relu1")
    y = gb.bn(y, bn_stats(rng, C))
    gb.node("Relu", [y], "Y", name="relu2")
    gb.output("Y", FLOAT, [2, C, 4, 4])
    assert_fold_refused(gb.model(), _feeds(), "bn", NONLINEARITY_BETWEEN)


def test_no_linear_neighbour():
    rng = make_rng(29)
    gb = GraphBuilder()
    y = gb.bn(_x(gb, (2, C, 5, 5)), bn_stats(rng, C))
    gb.node("Relu", [y], "Y", name="relu")
    gb.output("Y", FLOAT, [2, C, 5, 5])
    assert_fold_refused(gb.model(), _feeds((2, C, 5, 5)), "bn", NO_LINEAR_NEIGHBOUR)


@pytest.mark.parametrize("padding", [dict(pads=[1, 1, 1, 1]), dict(auto_pad="SAME_UPPER")],
                         ids=["pads1", "auto_pad-SAME_UPPER"])
def test_forward_into_padded_conv(padding):
    rng = make_rng(30)
    gb = GraphBuilder()
    y = gb.node("Relu", [_x(gb, (2, C, 6, 6))], "relu_out", name="relu")
    y = gb.bn(y, bn_stats(rng, C))
    _conv(gb, y, rng, cin=C, cout=5, out="Y", **padding)
    gb.output("Y", FLOAT, [2, 5, 6, 6])
    assert_fold_refused(gb.model(), _feeds((2, C, 6, 6)), "bn", PADDING_FORWARD)


def test_an_unnamed_partner_is_named_by_its_output_in_the_reason():
    # PyTorch 1.x names no node: the detail must not read "Conv '' pads its input"
    rng = make_rng(30)
    gb = GraphBuilder()
    y = gb.node("Relu", [_x(gb, (2, C, 6, 6))], "relu_out", name="relu")
    y = gb.bn(y, bn_stats(rng, C))
    _conv(gb, y, rng, cin=C, cout=5, name="", out="Y", pads=[1, 1, 1, 1])
    gb.output("Y", FLOAT, [2, 5, 6, 6])
    _, result = fold_copy(gb.model())
    assert decision(result, "bn").detail == "Conv 'Y' pads its input (pads=[1, 1, 1, 1], auto_pad=NOTSET)"


# ---------------------------------------------------------------------------------------------------------
# channel axis


def test_mul_by_C_vector_broadcasts_over_width():
    """Conv output [1,C,H,W] with W == C: a [C] constant scales the width, not the channels."""
    rng = make_rng(31)
    gb = GraphBuilder()
    y = _conv(gb, _x(gb, (1, 3, 6, 6)), rng, cout=C)  # -> [1, 4, 4, 4]
    gb.node("Mul", [y, gb.init("mul_k", rng.uniform(0.5, 1.5, C).astype(np.float32))], "Y", name="mul")
    gb.output("Y", FLOAT, [1, C, 4, 4])
    assert_fold_refused(gb.model(), _feeds((1, 3, 6, 6)), "mul", CHANNEL_AXIS_MISMATCH)


@pytest.mark.parametrize("seq_len", [3, 4], ids=["L3-ne-N4", "L4-eq-N4"])
def test_matmul_rank3_bn_channel_axis(seq_len):
    """[B,L,K] @ [K,N] -> BN: BN's channel axis 1 is L, the MatMul features are N."""
    rng = make_rng(32)
    n = 4
    gb = GraphBuilder()
    x = _x(gb, (2, seq_len, 5))
    y = gb.node("MatMul", [x, gb.init("W", weights(rng, [5, n], fan_in=5))], "mm_out", name="matmul")
    gb.bn(y, bn_stats(rng, seq_len), out="Y")
    gb.output("Y", FLOAT, [2, seq_len, n])
    assert_fold_refused(gb.model(), _feeds((2, seq_len, 5)), "bn", CHANNEL_AXIS_MISMATCH)


NOT_PER_CHANNEL_AFFINE = {
    "add-spatially-varying-1xCxHxW": ("Add", [1, C, 4, 4], False),
    "mul-by-HxW": ("Mul", [4, 4], False),
    "div-constant-by-output": ("Div", [1, C, 1, 1], True),  # k / y is not affine in y
    "sub-by-1x1xHx1": ("Sub", [1, 1, 4, 1], False),
}


@pytest.mark.parametrize("case", NOT_PER_CHANNEL_AFFINE.values(), ids=NOT_PER_CHANNEL_AFFINE.keys())
def test_not_a_per_channel_affine_is_not_folded(case):
    """Conv -> op(constant) where the constant varies over space, or the op is not affine in the Conv output."""
    op, shape, const_first = case
    rng = make_rng(38)
    gb = GraphBuilder()
    y = _conv(gb, _x(gb, (2, 3, 6, 6)), rng, cout=C)  # -> [2, 4, 4, 4]
    k = gb.init("k", rng.uniform(0.5, 1.5, shape).astype(np.float32))
    gb.node(op, [k, y] if const_first else [y, k], "Y", name="affine")
    gb.output("Y", FLOAT, [2, C, 4, 4])
    model, feeds = gb.model(), _feeds()
    ref = check_reference(model, feeds)
    folded, result = fold_copy(model)
    hits = [d for d in result.decisions if d.node == "affine"]
    assert all(d.outcome == SKIPPED for d in hits), hits
    assert [n.op_type for n in folded.graph.node] == ["Conv", op]
    assert_outputs_close(ref, ort_run(folded, feeds), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------
# forward partners


@pytest.mark.parametrize("gamma", [-0.7, 0.0], ids=["negative-gamma", "zero-gamma"])
def test_non_positive_scale_through_maxpool(gamma):
    rng = make_rng(33)
    gb = GraphBuilder()
    y = gb.node("Relu", [_x(gb, (2, C, 8, 8))], "relu_out", name="relu")
    stats = bn_stats(rng, C)
    stats["scale"][1] = gamma
    y = gb.bn(y, stats)
    y = gb.node("MaxPool", [y], "pool_out", name="maxpool", kernel_shape=[2, 2], strides=[2, 2])
    _conv(gb, y, rng, cin=C, cout=5, out="Y")
    gb.output("Y", FLOAT, [2, 5, 2, 2])
    assert_fold_refused(gb.model(), _feeds((2, C, 8, 8)), "bn", NON_POSITIVE_SCALE)


def test_forward_into_convtranspose_unsupported():
    rng = make_rng(34)
    gb = GraphBuilder()
    y = gb.node("Relu", [_x(gb, (2, C, 5, 5))], "relu_out", name="relu")
    y = gb.bn(y, bn_stats(rng, C))
    gb.node("ConvTranspose", [y, gb.init("W", weights(rng, [C, 3, 3, 3]))], "Y", name="convt",
            kernel_shape=[3, 3], strides=[2, 2])
    gb.output("Y", FLOAT, [2, 3, 11, 11])
    assert_fold_refused(gb.model(), _feeds((2, C, 5, 5)), "bn", UNSUPPORTED_PARTNER)


# ---------------------------------------------------------------------------------------------------------
# numbers


DEGENERATE = {
    "negative-variance": ("var", 1, -1.0),
    "nan-gamma": ("scale", 0, np.nan),
    "inf-beta": ("bias", 2, np.inf),
}


@pytest.mark.parametrize("where", DEGENERATE.values(), ids=DEGENERATE.keys())
def test_degenerate_statistics(where):
    key, idx, value = where
    rng = make_rng(35)
    gb = GraphBuilder()
    y = _conv(gb, _x(gb), rng)
    stats = bn_stats(rng, C)
    stats[key][idx] = value
    gb.bn(y, stats, out="Y")
    gb.output("Y", FLOAT, [2, C, 4, 4])
    assert_fold_refused(gb.model(), _feeds(), "bn", DEGENERATE_STATISTICS)


def test_fp16_weight_overflow():
    """gamma=1e4, var=1e-8: |scale| ~ 3e6, so an fp16 weight of ~0.3 folds to ~1e6 > 65504."""
    rng = make_rng(36)
    gb = GraphBuilder()
    y = _conv(gb, _x(gb, elem=FLOAT16), rng, w_dtype=np.float16)
    stats = bn_stats(rng, C)
    stats["scale"][:] = 1e4
    stats["var"][:] = 1e-8
    gb.bn(y, stats, out="Y")
    gb.output("Y", FLOAT16, [2, C, 4, 4])
    model = gb.model(opset=15)
    w = next(i for i in model.graph.initializer if i.name == "conv_W")
    assert w.data_type == FLOAT16
    assert_fold_refused(model, _feeds(dtype=np.float16), "bn", OVERFLOW)


def _fp16_conv_bn(gamma, x_scale: float = 1.0):
    rng = make_rng(37)
    gb = GraphBuilder()
    y = _conv(gb, _x(gb, elem=FLOAT16), rng, w_dtype=np.float16)
    stats = bn_stats(rng, C)
    stats["scale"][:] = gamma
    stats["mean"][:] = 0
    stats["bias"][:] = 0
    gb.bn(y, stats, out="Y")
    gb.output("Y", FLOAT16, [2, C, 4, 4])
    feeds = {"X": (make_rng(101).normal(0, 1, (2, 3, 6, 6)) * x_scale).astype(np.float16)}
    return gb.model(opset=15), feeds


def _in_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model computed in float32: the reference an fp16 model's accuracy is measured against."""
    model = copy.deepcopy(model)
    for init in model.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        value.type.tensor_type.elem_type = FLOAT
    return model


def _rms_error(model: onnx.ModelProto, reference: onnx.ModelProto, feeds) -> float:
    want = ort_run(reference, {k: v.astype(np.float32) for k, v in feeds.items()})[0].astype(np.float64)
    return float(np.sqrt(np.mean((ort_run(model, feeds)[0].astype(np.float64) - want) ** 2)))


def test_fp16_folded_channel_below_the_normal_range_is_refused():
    """gamma=1e-4 takes every folded weight (~0.3 * 1e-4) below fp16's smallest normal number (6.1e-5),
    where the spacing is fixed (6e-8) and each weight keeps a few bits. The original scales the Conv's output
    instead and keeps full precision: folded by hand, the model is over 3x further from a float32 evaluation
    than the original (a normal fold: 1.3x), so the analysis refuses the fold."""
    model, feeds = _fp16_conv_bn(1e-4, x_scale=1000.0)
    assert_fold_refused(model, feeds, "bn", UNDERFLOW)
    _, result = fold_copy(model)
    detail = decision(result, "bn").detail
    assert detail.startswith("rounding the folded weight of Conv 'conv' to float16 would cost 3.7x the error of "
                             "its normal range: 108 of 108 values fall below 6.104e-05"), detail

    inits = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    gamma, beta, mean, var = (inits[name] for name in bn.input[1:])
    s = gamma / np.sqrt(var + 1e-5)
    by_hand = copy.deepcopy(model)
    conv = next(n for n in by_hand.graph.node if n.op_type == "Conv")
    del by_hand.graph.node[1:]
    conv.output[0] = "Y"
    conv.input.append("conv_B")
    by_hand.graph.initializer.append(numpy_helper.from_array((beta - mean * s).astype(np.float16), "conv_B"))
    for init in by_hand.graph.initializer:
        if init.name == "conv_W":
            init.CopyFrom(numpy_helper.from_array((inits["conv_W"] * s[:, None, None, None]).astype(np.float16),
                                                  "conv_W"))
    reference = _in_float32(model)
    assert _rms_error(by_hand, reference, feeds) > 3 * _rms_error(model, reference, feeds)


@pytest.mark.parametrize("gamma", [1e-2, [1e-6, 1.0, 0.5, 2.0]], ids=["small", "one-dead-channel"])
def test_fp16_folded_weights_that_stay_normal_fold_nearly_as_accurately(gamma):
    """gamma=1e-2 keeps the folded weights normal; a channel slimmed to gamma=1e-6 goes subnormal but its
    values and errors are tiny next to the other channels'. Both fold, and the folded model stays within
    2x of the original's distance from a float32 evaluation (1.3x and 1.7x measured: the fold rounds each
    weight once, where the original rounds the Conv's output; refused by hand above: 4.6x)."""
    model, feeds = _fp16_conv_bn(np.asarray(gamma), x_scale=1000.0)
    folded, result = fold_copy(model)
    assert decision(result, "bn").outcome == FOLDED
    reference = _in_float32(model)
    assert _rms_error(folded, reference, feeds) <= 2 * _rms_error(model, reference, feeds)


# ---------------------------------------------------------------------------------------------------------
# a refusal does not stop the other BNs


def test_refusal_is_per_node():
    """Conv1 -> BN1 -> Relu -> Conv2 -> Relu -> BN2 -> Relu: BN1 folds, BN2 is refused, outputs unchanged."""
    rng = make_rng(37)
    gb = GraphBuilder()
    y = _conv(gb, _x(gb, (2, 3, 8, 8)), rng, name="conv1", out="conv1_out", cout=C)
    y = gb.bn(y, bn_stats(rng, C), name="bn1")
    y = gb.node("Relu", [y], "relu1_out", name="relu1")
    y = _conv(gb, y, rng, name="conv2", out="conv2_out", cin=C, cout=C)
    y = gb.node("Relu", [y], "relu2_out", name="relu2")
    y = gb.bn(y, bn_stats(rng, C), name="bn2")
    gb.node("Relu", [y], "Y", name="relu3")
    gb.output("Y", FLOAT, [2, C, 4, 4])
    model, feeds = gb.model(), _feeds((2, 3, 8, 8))
    ref = check_reference(model, feeds)
    folded, result = fold_copy(model)
    d1 = decision(result, "bn1")
    assert (d1.outcome, d1.partner) == (FOLDED, "conv1"), d1
    d2 = decision(result, "bn2")
    assert (d2.outcome, d2.reason) == (SKIPPED, NONLINEARITY_BETWEEN), d2
    assert [n.name for n in folded.graph.node if n.op_type == "BatchNormalization"] == ["bn2"]
    assert_outputs_close(ref, ort_run(folded, feeds))


# ---------------------------------------------------------------------------------------------------------
# malformed parameters that load-time validation cannot see (they come through an op): refused, not a crash


@pytest.mark.parametrize("param, array, detail", [
    ("bn_mean", np.zeros(4, np.float32), "scale, B, mean and var differ in length (scale 6, B 6, mean 4, var 6)"),
    ("bn_scale", np.ones((2, 3), np.float32), "scale is a FLOAT tensor of shape [2, 3], not a vector of floats"),
    ("bn_var", np.ones(6, np.int64), "var is a INT64 tensor of shape [6], not a vector of floats"),
])
def test_batchnorm_parameters_of_the_wrong_shape_behind_an_identity(param, array, detail):
    from onnx import helper, numpy_helper

    from bnfold.fold.result import MALFORMED
    from helpers import conv_bn_model, decision, fold_copy

    model = conv_bn_model()[0]
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    model.graph.initializer.append(numpy_helper.from_array(array, "odd"))
    model.graph.node.insert(0, helper.make_node("Identity", ["odd"], ["odd_out"], name="odd"))
    bn.input[list(bn.input).index(param)] = "odd_out"
    folded, result = fold_copy(model)
    d = decision(result, "bn")
    assert (d.outcome, d.reason, d.detail) == ("skipped", MALFORMED, detail)
    assert [n.op_type for n in folded.graph.node].count("BatchNormalization") == 1


def test_a_constant_numpy_cannot_make_is_left_as_computed():
    """Expand to 40 dims (numpy stops at 32): the BN's var is not a constant bnfold can evaluate."""
    from onnx import helper, numpy_helper

    from helpers import conv_bn_model, decision, fold_copy

    model = conv_bn_model()[0]
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    model.graph.initializer.extend([numpy_helper.from_array(np.ones([1], np.float32), "one"),
                                    numpy_helper.from_array(np.ones([40], np.int64), "forty_dims")])
    model.graph.node.insert(0, helper.make_node("Expand", ["one", "forty_dims"], ["var40"], name="expand"))
    bn.input[4] = "var40"
    d = decision(fold_copy(model)[1], "bn")
    assert (d.outcome, d.reason) == ("skipped", NON_CONSTANT_PARAMETERS)

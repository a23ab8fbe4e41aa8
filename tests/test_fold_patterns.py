"""Fold patterns that must fold: BN (or its decomposed Mul/Add/Sub/Div) disappears and outputs are equal.

Every model is checked (onnx.checker, full) and run in onnxruntime before folding, so a failure here is the
engine's, not the test's.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from helpers import (
    BOOL,
    DOUBLE,
    FLOAT,
    FLOAT16,
    GEMM_C_SHAPES,
    GraphBuilder,
    analyze_copy,
    assert_fold_equal,
    assert_folded,
    bn_stats,
    check_reference,
    constant_elem_type,
    constant_value,
    conv_bn_model,
    count_op,
    decision,
    find_node,
    gemm_bn_model,
    initializer_names,
    make_rng,
    matmul_bn_model,
    nodes_of,
    ort_run,
    weights,
)
from onnx import helper, numpy_helper

from bnfold.fold.result import BACKWARD, FORWARD

# ---------------------------------------------------------------------------------------------------------
# backward: Conv / ConvTranspose


CONV_CASES = {
    "conv1d": dict(dims=1),
    "conv1d-nobias": dict(dims=1, bias=False),
    "conv2d": dict(dims=2),
    "conv2d-eps1e-3": dict(dims=2, epsilon=1e-3),
    "conv2d-nobias": dict(dims=2, bias=False),
    "conv3d": dict(dims=3, size=5, epsilon=1e-3),
    "conv3d-nobias": dict(dims=3, size=5, bias=False),
    "conv2d-1x1": dict(kernel=1),
    "group2": dict(cin=4, cout=6, group=2, epsilon=1e-3),
    "group2-nobias": dict(cin=4, cout=6, group=2, bias=False),
    "group4": dict(cin=8, cout=8, group=4),
    "depthwise": dict(cin=6, cout=6, group=6, epsilon=1e-3),
    "depthwise-multiplier2": dict(cin=4, cout=8, group=4),
    "stride2-dilation2-pad1": dict(stride=2, dilation=2, pad=1, size=9),
    "asymmetric-pads": dict(pad=[0, 1, 2, 0]),
    "conv1d-group2-stride2-pad2": dict(dims=1, cin=4, cout=4, group=2, stride=2, pad=2, size=11),
}


@pytest.mark.parametrize("kwargs", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv_bn_backward(kwargs):
    model, feeds = conv_bn_model(**kwargs)
    _, result = assert_fold_equal(model, feeds)
    assert_folded(result, "bn", direction=BACKWARD, partner="conv", partner_op="Conv", op_type="BatchNormalization")


CONVT_CASES = {
    "bias-group1": dict(cin=4, cout=6, group=1),
    "nobias-group1": dict(cin=4, cout=6, group=1, bias=False),
    "bias-group2": dict(cin=4, cout=6, group=2, epsilon=1e-3),
    "nobias-group2": dict(cin=4, cout=6, group=2, bias=False),
    "stride2": dict(cin=3, cout=5, stride=2, epsilon=1e-3),
    "stride2-group2-pad1-outpad1": dict(cin=4, cout=6, group=2, stride=2, pad=1, output_padding=1),
    "conv1d-transpose": dict(dims=1, cin=4, cout=6, group=2, stride=2),
    "depthwise": dict(cin=4, cout=4, group=4, stride=2),
}


@pytest.mark.parametrize("kwargs", CONVT_CASES.values(), ids=CONVT_CASES.keys())
def test_convtranspose_bn_backward(kwargs):
    model, feeds = conv_bn_model(transpose=True, size=5, **kwargs)
    _, result = assert_fold_equal(model, feeds)
    assert_folded(result, "bn", direction=BACKWARD, partner="convt", partner_op="ConvTranspose")


# ---------------------------------------------------------------------------------------------------------
# backward: Gemm / MatMul


@pytest.mark.parametrize("c_shape", GEMM_C_SHAPES.values(), ids=[f"C-{k}" for k in GEMM_C_SHAPES])
@pytest.mark.parametrize("trans_b", [0, 1], ids=["transB0", "transB1"])
@pytest.mark.parametrize("trans_a", [0, 1], ids=["transA0", "transA1"])
def test_gemm_bn_backward(trans_a, trans_b, c_shape):
    model, feeds = gemm_bn_model(trans_a=trans_a, trans_b=trans_b, alpha=0.5, beta=2.0, c_shape=c_shape,
                                 epsilon=1e-3)
    _, result = assert_fold_equal(model, feeds)
    assert_folded(result, "bn", direction=BACKWARD, partner="gemm", partner_op="Gemm")


def test_gemm_bn_backward_default_attributes():
    model, feeds = gemm_bn_model(c_shape="N")
    _, result = assert_fold_equal(model, feeds)
    assert_folded(result, "bn", direction=BACKWARD, partner="gemm", partner_op="Gemm")


MATMUL_CASES = {
    "no-add": dict(add=False),
    "add": dict(add=True, epsilon=1e-3),
    "add-bias-first": dict(add=True, bias_first=True),
}


@pytest.mark.parametrize("kwargs", MATMUL_CASES.values(), ids=MATMUL_CASES.keys())
def test_matmul_bn_backward(kwargs):
    model, feeds = matmul_bn_model(**kwargs)
    _, result = assert_fold_equal(model, feeds)
    assert_folded(result, "bn", direction=BACKWARD, partner="matmul", partner_op="MatMul")
    # The bias Add belongs to the MatMul partner: it is not a decision of its own.
    assert not [d for d in result.decisions if d.node == "bias_add"]


# ---------------------------------------------------------------------------------------------------------
# backward through / of decomposed affine ops


def _conv_chain(ops, *, conv_bias=True, c=4, seed=1):
    """X[2,3,6,6] -> Conv(c, 3x3) ("conv") -> ops... -> Y[2,c,4,4].

    `ops` is a list of (op_type, node_name, const_shape[, "const-first"]) with op_type in
    Mul/Add/Sub/Div/BN; "const-first" puts the constant as the first operand.
    """
    rng = make_rng(seed)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [2, 3, 6, 6])
    ins = [x, gb.init("W", weights(rng, [c, 3, 3, 3]))]
    if conv_bias:
        ins.append(gb.init("B", rng.normal(0, 0.1, c).astype(np.float32)))
    y = gb.node("Conv", ins, "conv_out", name="conv", kernel_shape=[3, 3])
    for i, (op, name, shape, *flags) in enumerate(ops):
        out = "Y" if i == len(ops) - 1 else f"{name}_out"
        if op == "BN":
            y = gb.bn(y, bn_stats(rng, c), name=name, out=out)
            continue
        if op == "Div":
            const = rng.uniform(0.5, 2.0, shape)
        elif op == "Mul":
            const = rng.uniform(0.5, 1.5, shape)
        else:
            const = rng.normal(0.0, 0.5, shape)
        k = gb.init(f"{name}_k", np.asarray(const, np.float32))
        y = gb.node(op, [k, y] if "const-first" in flags else [y, k], out, name=name)
    gb.output("Y", FLOAT, [2, c, 4, 4])
    return gb.model(), {"X": rng.normal(0, 1, [2, 3, 6, 6]).astype(np.float32)}


@pytest.mark.parametrize("conv_bias", [True, False], ids=["conv-bias", "conv-nobias"])
def test_conv_add_bn_backward(conv_bias):
    model, feeds = _conv_chain([("Add", "add", [1, 4, 1, 1]), ("BN", "bn", None)], conv_bias=conv_bias)
    folded, result = assert_fold_equal(model, feeds)
    assert_folded(result, "add", direction=BACKWARD, partner="conv", partner_op="Conv", op_type="Add")
    assert_folded(result, "bn", direction=BACKWARD, partner="conv", partner_op="Conv")
    assert [n.op_type for n in folded.graph.node] == ["Conv"]


def test_convtranspose_add_bn_backward():
    """Paddle's ConvTranspose -> Add(per-channel) -> BN."""
    rng = make_rng(2)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [1, 4, 5, 5])
    y = gb.node("ConvTranspose", [x, gb.init("W", weights(rng, [4, 3, 3, 3]))], "ct_out", name="convt",
                kernel_shape=[3, 3], strides=[2, 2], group=2)
    y = gb.node("Add", [y, gb.init("add_k", rng.normal(0, 0.5, [1, 6, 1, 1]).astype(np.float32))],
                "add_out", name="add")
    gb.bn(y, bn_stats(rng, 6), out="Y")
    gb.output("Y", FLOAT, [1, 6, 11, 11])
    model = gb.model()
    folded, result = assert_fold_equal(model, {"X": rng.normal(0, 1, [1, 4, 5, 5]).astype(np.float32)})
    assert_folded(result, "add", direction=BACKWARD, partner="convt", partner_op="ConvTranspose")
    assert_folded(result, "bn", direction=BACKWARD, partner="convt", partner_op="ConvTranspose")
    assert [n.op_type for n in folded.graph.node] == ["ConvTranspose"]


AFFINE_CHAINS = {
    "mul[C,1,1]-add[1,C,1,1]": [("Mul", "mul", [4, 1, 1]), ("Add", "add", [1, 4, 1, 1])],
    "mul[1,C,1,1]": [("Mul", "mul", [1, 4, 1, 1])],
    "sub[1,C,1,1]": [("Sub", "sub", [1, 4, 1, 1])],
    "div[C,1,1]": [("Div", "div", [4, 1, 1])],
    "sub-div": [("Sub", "sub", [1, 4, 1, 1]), ("Div", "div", [1, 4, 1, 1])],
    "bn-mul-add": [("BN", "bn", None), ("Mul", "mul", [1, 4, 1, 1]), ("Add", "add", [1, 4, 1, 1])],
    "const-first-mul-add": [("Mul", "mul", [4, 1, 1], "const-first"), ("Add", "add", [1, 4, 1, 1], "const-first")],
}


@pytest.mark.parametrize("chain", AFFINE_CHAINS.values(), ids=AFFINE_CHAINS.keys())
def test_conv_decomposed_affine_backward(chain):
    model, feeds = _conv_chain(chain)
    folded, result = assert_fold_equal(model, feeds)
    for op, name, *_ in chain:
        assert_folded(result, name, direction=BACKWARD, partner="conv", partner_op="Conv",
                      op_type="BatchNormalization" if op == "BN" else op)
    assert [n.op_type for n in folded.graph.node] == ["Conv"]


def test_matmul_bias_mul_add_backward():
    """Keras Dense(use_bias) + BN as TF's constant folding leaves it: MatMul -> Add -> Mul -> Add."""
    rng = make_rng(3)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [3, 5])
    y = gb.node("MatMul", [x, gb.init("W", weights(rng, [5, 4], fan_in=5))], "mm_out", name="matmul")
    y = gb.node("Add", [y, gb.init("bias", rng.normal(0, 0.1, 4).astype(np.float32))], "b_out", name="bias_add")
    y = gb.node("Mul", [y, gb.init("mul_k", rng.uniform(0.5, 1.5, 4).astype(np.float32))], "mul_out", name="mul")
    y = gb.node("Add", [y, gb.init("add_k", rng.normal(0, 0.5, 4).astype(np.float32))], "Y", name="add")
    gb.output("Y", FLOAT, [3, 4])
    _, result = assert_fold_equal(gb.model(), {"X": rng.normal(0, 1, [3, 5]).astype(np.float32)})
    assert_folded(result, "mul", direction=BACKWARD, partner="matmul", partner_op="MatMul", op_type="Mul")
    assert_folded(result, "add", direction=BACKWARD, partner="matmul", partner_op="MatMul", op_type="Add")


# ---------------------------------------------------------------------------------------------------------
# forward: BN after the activation, folded into the consumer


@pytest.mark.parametrize("has_c", [True, False], ids=["gemm2-bias", "gemm2-nobias"])
@pytest.mark.parametrize("trans_b", [0, 1], ids=["gemm2-transB0", "gemm2-transB1"])
def test_gemm_relu_bn_gemm_forward(trans_b, has_c):
    rng = make_rng(4)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [3, 5])
    h = gb.node("Gemm", [x, gb.init("W1", weights(rng, [5, 6], fan_in=5)),
                         gb.init("C1", rng.normal(0, 0.1, 6).astype(np.float32))], "h", name="gemm1")
    h = gb.node("Relu", [h], "h_relu", name="relu")
    h = gb.bn(h, bn_stats(rng, 6), epsilon=1e-3)
    ins = [h, gb.init("W2", weights(rng, [4, 6] if trans_b else [6, 4], fan_in=6))]
    if has_c:
        ins.append(gb.init("C2", rng.normal(0, 0.1, 4).astype(np.float32)))
    gb.node("Gemm", ins, "Y", name="gemm2", transB=trans_b)
    gb.output("Y", FLOAT, [3, 4])
    _, result = assert_fold_equal(gb.model(), {"X": rng.normal(0, 1, [3, 5]).astype(np.float32)})
    assert_folded(result, "bn", direction=FORWARD, partner="gemm2", partner_op="Gemm")


def test_relu_bn_matmul_forward():
    rng = make_rng(5)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [3, 6])
    h = gb.node("Relu", [x], "h", name="relu")
    h = gb.bn(h, bn_stats(rng, 6))
    gb.node("MatMul", [h, gb.init("W", weights(rng, [6, 4], fan_in=6))], "Y", name="matmul")
    gb.output("Y", FLOAT, [3, 4])
    _, result = assert_fold_equal(gb.model(), {"X": rng.normal(0, 1, [3, 6]).astype(np.float32)})
    assert_folded(result, "bn", direction=FORWARD, partner="matmul", partner_op="MatMul")


FORWARD_CONV_CASES = {
    "1x1": dict(kernel=1, group=1, cout=5),
    "3x3-valid": dict(kernel=3, group=1, cout=5),
    "3x3-valid-group2": dict(kernel=3, group=2, cout=6),
    "3x3-valid-depthwise": dict(kernel=3, group=4, cout=4),
    "3x3-valid-stride2-nobias": dict(kernel=3, group=1, cout=5, stride=2, bias=False),
    "explicit-zero-pads": dict(kernel=3, group=1, cout=5, pads=[0, 0, 0, 0]),
}


@pytest.mark.parametrize("kwargs", FORWARD_CONV_CASES.values(), ids=FORWARD_CONV_CASES.keys())
def test_relu_bn_conv_forward(kwargs):
    k, group, cout = kwargs["kernel"], kwargs["group"], kwargs["cout"]
    stride = kwargs.get("stride", 1)
    rng = make_rng(6)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [2, 4, 7, 7])
    h = gb.node("Relu", [x], "h", name="relu")
    h = gb.bn(h, bn_stats(rng, 4), epsilon=1e-3)
    ins = [h, gb.init("W", weights(rng, [cout, 4 // group, k, k]))]
    if kwargs.get("bias", True):
        ins.append(gb.init("B", rng.normal(0, 0.1, cout).astype(np.float32)))
    attrs = dict(kernel_shape=[k, k], group=group, strides=[stride, stride])
    if "pads" in kwargs:
        attrs["pads"] = kwargs["pads"]
    gb.node("Conv", ins, "Y", name="conv", **attrs)
    o = (7 - k) // stride + 1
    gb.output("Y", FLOAT, [2, cout, o, o])
    _, result = assert_fold_equal(gb.model(), {"X": rng.normal(0, 1, [2, 4, 7, 7]).astype(np.float32)})
    assert_folded(result, "bn", direction=FORWARD, partner="conv", partner_op="Conv")


@pytest.mark.parametrize("reshape", ["flatten", "reshape"], ids=["Flatten", "Reshape-1x-1"])
@pytest.mark.parametrize("trans_b", [0, 1], ids=["transB0", "transB1"])
def test_relu_bn_flatten_gemm_forward(reshape, trans_b):
    c, n = 3, 5
    rng = make_rng(7)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [1, c, 4, 4])
    h = gb.node("Relu", [x], "h", name="relu")
    h = gb.bn(h, bn_stats(rng, c), epsilon=1e-3)
    if reshape == "flatten":
        h = gb.node("Flatten", [h], "flat", name="flatten", axis=1)
    else:
        h = gb.node("Reshape", [h, gb.init("shape", np.array([1, -1], np.int64))], "flat", name="reshape")
    gb.node("Gemm", [h, gb.init("W", weights(rng, [n, c * 16] if trans_b else [c * 16, n], fan_in=c * 16)),
                     gb.init("C", rng.normal(0, 0.1, n).astype(np.float32))], "Y", name="gemm", transB=trans_b)
    gb.output("Y", FLOAT, [1, n])
    _, result = assert_fold_equal(gb.model(), {"X": rng.normal(0, 1, [1, c, 4, 4]).astype(np.float32)})
    assert_folded(result, "bn", direction=FORWARD, partner="gemm", partner_op="Gemm")


def test_relu_bn_maxpool_conv_forward():
    rng = make_rng(8)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [2, 4, 8, 8])
    h = gb.node("Relu", [x], "h", name="relu")
    stats = bn_stats(rng, 4)
    assert (stats["scale"] > 0).all()
    h = gb.bn(h, stats, epsilon=1e-3)
    h = gb.node("MaxPool", [h], "pooled", name="maxpool", kernel_shape=[2, 2], strides=[2, 2])
    gb.node("Conv", [h, gb.init("W", weights(rng, [5, 4, 3, 3])), gb.init("B", np.zeros(5, np.float32))],
            "Y", name="conv", kernel_shape=[3, 3])
    gb.output("Y", FLOAT, [2, 5, 2, 2])
    _, result = assert_fold_equal(gb.model(), {"X": rng.normal(0, 1, [2, 4, 8, 8]).astype(np.float32)})
    assert_folded(result, "bn", direction=FORWARD, partner="conv", partner_op="Conv")


def test_relu_mul_add_conv_forward():
    """Decomposed pre-activation BN (what TF leaves) folded forward into a Conv without padding."""
    rng = make_rng(9)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [2, 4, 6, 6])
    h = gb.node("Relu", [x], "h", name="relu")
    h = gb.node("Mul", [h, gb.init("mul_k", rng.uniform(0.5, 1.5, [1, 4, 1, 1]).astype(np.float32))],
                "mul_out", name="mul")
    h = gb.node("Add", [h, gb.init("add_k", rng.normal(0, 0.5, [1, 4, 1, 1]).astype(np.float32))],
                "add_out", name="add")
    gb.node("Conv", [h, gb.init("W", weights(rng, [5, 4, 3, 3]))], "Y", name="conv", kernel_shape=[3, 3])
    gb.output("Y", FLOAT, [2, 5, 4, 4])
    folded, result = assert_fold_equal(gb.model(), {"X": rng.normal(0, 1, [2, 4, 6, 6]).astype(np.float32)})
    assert_folded(result, "mul", direction=FORWARD, partner="conv", partner_op="Conv", op_type="Mul")
    assert_folded(result, "add", direction=FORWARD, partner="conv", partner_op="Conv", op_type="Add")
    assert [n.op_type for n in folded.graph.node] == ["Relu", "Conv"]


# ---------------------------------------------------------------------------------------------------------
# parameters computed by constant-only subgraphs


def _const_node(gb, name, array):
    return gb.node("Constant", [], name, name=f"{name}_node", value=numpy_helper.from_array(np.asarray(array)))


def _param_model(variant):
    rng = make_rng(10)
    c = 4
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [2, 3, 6, 6])
    w = weights(rng, [c, 3, 3, 3])
    stats = bn_stats(rng, c)
    if variant == "conv-weight-constantofshape-cast":
        shape = _const_node(gb, "w_shape", np.array([c, 3, 3, 3], np.int64))
        w_name = gb.node("ConstantOfShape", [shape], "w64", name="cos",
                         value=numpy_helper.from_array(np.array([0.05], np.float64)))
        w_name = gb.node("Cast", [w_name], "w32", name="cast", to=FLOAT)
    elif variant == "conv-weight-unsqueeze-initializer":
        w_name = gb.node("Unsqueeze", [gb.init("W3", w[..., 0]), gb.init("axes", np.array([3], np.int64))],
                         "w_unsq", name="unsqueeze")  # [c,3,3] -> [c,3,3,1]
    else:
        w_name = gb.init("W", w)
    k = [3, 1] if variant == "conv-weight-unsqueeze-initializer" else [3, 3]
    if variant == "conv-bias-expand-constant":
        scalar = _const_node(gb, "b_scalar", np.array(0.25, np.float32))
        b_shape = _const_node(gb, "b_shape", np.array([c], np.int64))
        b_name = gb.node("Expand", [scalar, b_shape], "b_expanded", name="expand")
    else:
        b_name = gb.init("B", rng.normal(0, 0.1, c).astype(np.float32))
    y = gb.node("Conv", [x, w_name, b_name], "conv_out", name="conv", kernel_shape=k)
    params = {}
    for key in ("scale", "bias", "mean", "var"):
        if variant == "bn-scale-constant-node" and key == "scale":
            params[key] = _const_node(gb, "bn_scale_c", stats[key])
        elif variant == "bn-var-reshape-initializer" and key == "var":
            params[key] = gb.node("Reshape", [gb.init("var_1c1", stats[key].reshape(1, c, 1)),
                                              gb.init("flat", np.array([-1], np.int64))], "var_flat",
                                  name="reshape")
        else:
            params[key] = gb.init(f"bn_{key}", stats[key])
    gb.node("BatchNormalization", [y] + [params[k_] for k_ in ("scale", "bias", "mean", "var")], "Y", name="bn")
    gb.output("Y", FLOAT, None)
    return gb.model(), {"X": rng.normal(0, 1, [2, 3, 6, 6]).astype(np.float32)}


PARAM_VARIANTS = [
    "bn-scale-constant-node",
    "conv-bias-expand-constant",
    "conv-weight-constantofshape-cast",
    "bn-var-reshape-initializer",
    "conv-weight-unsqueeze-initializer",
]


@pytest.mark.parametrize("variant", PARAM_VARIANTS)
def test_constant_subgraph_parameters(variant):
    model, feeds = _param_model(variant)
    folded, result = assert_fold_equal(model, feeds)
    assert_folded(result, "bn", direction=BACKWARD, partner="conv", partner_op="Conv")
    assert count_op(folded, "Conv") == 1


# ---------------------------------------------------------------------------------------------------------
# initializers listed as graph inputs (PyTorch 1.x keep_initializers_as_inputs)


def _initializer_inputs_model():
    rng = make_rng(11)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [2, 3, 6, 6])
    y = gb.node("Conv", [x, gb.init("W", weights(rng, [4, 3, 3, 3])), gb.init("B", rng.normal(0, .1, 4).astype(
        np.float32))], "conv_out", name="conv", kernel_shape=[3, 3])
    gb.bn(y, bn_stats(rng, 4), out="Y")
    gb.output("Y", FLOAT, [2, 4, 4, 4])
    model = gb.model(opset=9, ir_version=4, initializers_as_inputs=True)
    return model, {"X": rng.normal(0, 1, [2, 3, 6, 6]).astype(np.float32)}


def test_initializer_inputs_fold_by_default():
    model, feeds = _initializer_inputs_model()
    assert len(model.graph.input) == 7  # X + W, B + four BN parameters
    folded, result = assert_fold_equal(model, feeds)
    d = assert_folded(result, "bn", direction=BACKWARD, partner="conv", partner_op="Conv")
    assert d.overridable is True
    assert folded.ir_version == 4


# ---------------------------------------------------------------------------------------------------------
# dtypes


def _fp16_conv_bn_model(seed=12):
    """Opset 15: fp16 X and Conv weight/bias, fp32 BN parameters (BatchNormalization-15 allows T1/T2 != T)."""
    rng = make_rng(seed)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT16, [2, 4, 6, 6])
    y = gb.node("Conv", [x, gb.init("W", weights(rng, [6, 4, 3, 3], np.float16)),
                         gb.init("B", rng.normal(0, 0.1, 6).astype(np.float16))], "conv_out", name="conv",
                kernel_shape=[3, 3])
    gb.bn(y, bn_stats(rng, 6, np.float32), out="Y")
    gb.output("Y", FLOAT16, [2, 6, 4, 4])
    return gb.model(opset=15), {"X": rng.normal(0, 1, [2, 4, 6, 6]).astype(np.float16)}


def test_fp16_conv_with_fp32_bn_params():
    model, feeds = _fp16_conv_bn_model()
    folded, result = assert_fold_equal(model, feeds)  # fp16 tolerance: rtol 1e-2, atol 1e-3
    assert_folded(result, "bn", direction=BACKWARD, partner="conv", partner_op="Conv")
    (conv,) = nodes_of(folded, "Conv")
    assert len(conv.input) == 3
    assert constant_elem_type(folded, conv.input[1]) == FLOAT16
    assert constant_elem_type(folded, conv.input[2]) == FLOAT16


@pytest.mark.parametrize("kind", ["gemm", "matmul-add"])
def test_fp64_model(kind):
    # onnxruntime's CPU provider has no double Conv kernel, so fp64 is exercised with Gemm/MatMul.
    if kind == "gemm":
        model, feeds = gemm_bn_model(trans_b=1, c_shape="N", alpha=0.5, beta=2.0, dtype=np.float64)
        partner, partner_op = "gemm", "Gemm"
    else:
        model, feeds = matmul_bn_model(add=True, dtype=np.float64)
        partner, partner_op = "matmul", "MatMul"
    folded, result = assert_fold_equal(model, feeds, rtol=1e-7, atol=1e-7)
    assert_folded(result, "bn", direction=BACKWARD, partner=partner, partner_op=partner_op)
    for init in folded.graph.initializer:
        assert init.data_type == DOUBLE, init.name


# ---------------------------------------------------------------------------------------------------------
# shared weights, subgraphs, clean-up


def test_shared_weight_is_copied_not_mutated():
    rng = make_rng(13)
    w = weights(rng, [4, 3, 3, 3])
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [2, 3, 6, 6])
    w_name = gb.init("W", w)
    a = gb.node("Conv", [x, w_name], "a_out", name="conv_a", kernel_shape=[3, 3])
    gb.bn(a, bn_stats(rng, 4), out="Y1")
    gb.node("Conv", [x, w_name], "Y2", name="conv_b", kernel_shape=[3, 3])
    gb.output("Y1", FLOAT, [2, 4, 4, 4])
    gb.output("Y2", FLOAT, [2, 4, 4, 4])
    model = gb.model()
    feeds = {"X": rng.normal(0, 1, [2, 3, 6, 6]).astype(np.float32)}
    ref = check_reference(model, feeds)
    folded, result = assert_fold_equal(model, feeds)
    assert_folded(result, "bn", direction=BACKWARD, partner="conv_a", partner_op="Conv")
    conv_b = find_node(folded, "conv_b")
    np.testing.assert_array_equal(constant_value(folded, conv_b.input[1]), w)
    assert find_node(folded, "conv_a").input[1] != conv_b.input[1]
    np.testing.assert_array_equal(ort_run(folded, feeds)[1], ref[1])


@pytest.mark.parametrize("where", ["outer-initializers", "branch-initializers"])
def test_bn_inside_if_then_branch(where):
    rng = make_rng(14)
    c = 4
    w_then, w_else = weights(rng, [c, 3, 3, 3]), weights(rng, [c, 3, 3, 3])
    stats = bn_stats(rng, c)
    outer = GraphBuilder("main")
    then = GraphBuilder("then_branch")
    els = GraphBuilder("else_branch")
    x = outer.input("X", FLOAT, [1, 3, 6, 6])
    cond = outer.input("cond", BOOL, [])
    if where == "outer-initializers":
        # Weights and BN parameters live in the main graph; the else branch reads the same W, so the fold
        # must copy it, not mutate it.
        wt = we = outer.init("W", w_then)
        params = [outer.init(f"bn_{k}", stats[k]) for k in ("scale", "bias", "mean", "var")]
    else:
        wt = then.init("W", w_then)
        we = els.init("W_else", w_else)
        params = [then.init(f"bn_{k}", stats[k]) for k in ("scale", "bias", "mean", "var")]
    t = then.node("Conv", [x, wt], "t_conv", name="then_conv", kernel_shape=[3, 3])
    then.node("BatchNormalization", [t, *params], "then_out", name="then_bn")
    then.output("then_out", FLOAT, [1, c, 4, 4])
    els.node("Conv", [x, we], "else_out", name="else_conv", kernel_shape=[3, 3])
    els.output("else_out", FLOAT, [1, c, 4, 4])
    outer.node("If", [cond], "Y", name="if", then_branch=then.graph(), else_branch=els.graph())
    outer.output("Y", FLOAT, [1, c, 4, 4])
    model = outer.model()
    xv = rng.normal(0, 1, [1, 3, 6, 6]).astype(np.float32)
    feeds = [{"X": xv, "cond": np.array(True)}, {"X": xv, "cond": np.array(False)}]
    _, result = assert_fold_equal(model, feeds)
    assert_folded(result, "then_bn", direction=BACKWARD, partner="then_conv", partner_op="Conv")


def test_no_dead_initializers_and_bn_params_gone():
    model, feeds = conv_bn_model(cin=3, cout=5)
    bn_params = {"bn_scale", "bn_bias", "bn_mean", "bn_var"}
    assert bn_params <= initializer_names(model.graph)
    folded, _ = assert_fold_equal(model, feeds)  # also asserts no dead initializer
    assert not bn_params & initializer_names(folded.graph)
    used = {i for n in folded.graph.node for i in n.input}
    assert initializer_names(folded.graph) <= used
    assert len(folded.graph.initializer) == 2  # folded W and B


def test_stale_value_info_is_dropped():
    """A model carrying value_info for the Conv output (gone after the fold) still passes the full check."""
    model, feeds = conv_bn_model()
    inferred = onnx.shape_inference.infer_shapes(model)
    assert any(vi.name == "lin_out" for vi in inferred.graph.value_info)
    folded, _ = assert_fold_equal(inferred, feeds)
    produced = ({o for n in folded.graph.node for o in n.output} | {i.name for i in folded.graph.input}
                | initializer_names(folded.graph))
    assert {vi.name for vi in folded.graph.value_info} <= produced


# ---------------------------------------------------------------------------------------------------------
# analyze_model: same decisions, no mutation


def test_analyze_model_matches_fold_and_does_not_mutate():
    import onnx_ir as ir

    from bnfold.fold import analyze_model

    model, feeds = _conv_chain([("BN", "bn", None), ("Mul", "mul", [1, 4, 1, 1]), ("Add", "add", [1, 4, 1, 1])])
    irm = ir.from_proto(copy.deepcopy(model))
    before = ir.to_proto(irm).SerializeToString()
    decisions = analyze_model(irm, strict_inputs=False)
    assert ir.to_proto(irm).SerializeToString() == before
    _, result = assert_fold_equal(model, feeds)

    def summarize(ds):
        return sorted((d.node, d.op_type, d.outcome, d.direction, d.partner, d.reason) for d in ds)

    assert summarize(decisions) == summarize(result.decisions)
    assert {d.node for d in analyze_copy(model)} == {"bn", "mul", "add"}
    assert decision(decisions, "bn").partner == "conv"


def test_dynamo_exporter_conv_bias_from_castlike_of_activation_and_shape_of_weight():
    """torch.onnx.export(dynamo=True, optimize=False) writes each bias-less Conv's bias as
    Expand(CastLike(Constant 0, <the activation>), Expand(Shape(W, end=1), [1])): CastLike reads only the
    activation's dtype and Shape only the weight's shape, so the bias is a constant and the BN folds."""
    rng = make_rng(51)
    c = 6
    stats = bn_stats(rng, c)
    inits = [numpy_helper.from_array(weights(rng, (c, 3, 3, 3)), "W"), numpy_helper.from_array(
        np.array([1], dtype=np.int64), "one")] + [numpy_helper.from_array(v, f"bn.{k}") for k, v in stats.items()]
    nodes = [
        helper.make_node("Relu", ["X"], ["act"], name="relu"),
        helper.make_node("Constant", [], ["zero"], name="zero", value_float=0.0),
        helper.make_node("CastLike", ["zero", "act"], ["zero_like"], name="castlike"),
        helper.make_node("Shape", ["W"], ["w_shape"], name="shape", end=1),
        helper.make_node("Expand", ["w_shape", "one"], ["bias_shape"], name="expand_shape"),
        helper.make_node("Expand", ["zero_like", "bias_shape"], ["bias"], name="expand_bias"),
        helper.make_node("Conv", ["act", "W", "bias"], ["conv_out"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv_out", *[f"bn.{k}" for k in stats]], ["Y"], name="bn",
                         epsilon=1e-3),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", FLOAT, [1, 3, 5, 5])],
                              [helper.make_tensor_value_info("Y", FLOAT, [1, c, 5, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folded, result = assert_fold_equal(model, {"X": rng.normal(size=(1, 3, 5, 5)).astype(np.float32)})
    assert_folded(result, "bn", direction=BACKWARD, partner="conv", partner_op="Conv")
    assert [n.op_type for n in folded.graph.node] == ["Relu", "Conv"]

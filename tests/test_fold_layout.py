"""Identity, inference-mode Dropout, Reshape and Transpose: folds look through them (they stay in the graph)
while the channel axis can be followed element for element;
a Dropout whose mask output is used is not the identity and blocks the fold."""

from __future__ import annotations

import numpy as np
import onnx
from helpers import assert_fold_equal, assert_fold_refused, assert_folded, bn_stats, make_rng, weights
from onnx import TensorProto, helper, numpy_helper

from bnfold.fold.result import BACKWARD, CHANNEL_AXIS_MISMATCH, FORWARD, NONLINEARITY_BETWEEN

C = 6


def _model(nodes, inits, x_shape, y_shape, outputs=("Y",)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, y_shape) for name in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _bn(rng, x, y, name="bn"):
    stats = {f"{name}.{k}": v for k, v in bn_stats(rng, C).items()}
    node = helper.make_node("BatchNormalization", [x, *stats], [y], name=name, epsilon=1e-3)
    return node, stats


def test_conv_identity_bn_folds_backward_and_keeps_the_identity():
    rng = make_rng(11)
    bn, stats = _bn(rng, "i", "Y")
    nodes = [helper.make_node("Conv", ["X", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Identity", ["c"], ["i"], name="identity"), bn]
    model = _model(nodes, {"W": weights(rng, (C, 3, 3, 3)), **stats}, [1, 3, 5, 5], [1, C, 5, 5])
    folded, result = assert_fold_equal(model, {"X": rng.normal(size=(1, 3, 5, 5)).astype(np.float32)})
    assert_folded(result, "bn", direction=BACKWARD, partner="conv", partner_op="Conv")
    assert [n.op_type for n in folded.graph.node] == ["Conv", "Identity"]


def test_relu_bn_dropout_gemm_folds_forward():
    rng = make_rng(12)
    bn, stats = _bn(rng, "r", "b")
    nodes = [helper.make_node("Relu", ["X"], ["r"], name="relu"), bn,
             helper.make_node("Dropout", ["b"], ["d"], name="dropout"),
             helper.make_node("Gemm", ["d", "B", "Cb"], ["Y"], name="fc", transB=1)]
    inits = {**stats, "B": weights(rng, (4, C)), "Cb": rng.normal(size=4).astype(np.float32)}
    model = _model(nodes, inits, [3, C], [3, 4])
    _, result = assert_fold_equal(model, {"X": rng.normal(size=(3, C)).astype(np.float32)})
    assert_folded(result, "bn", direction=FORWARD, partner="fc", partner_op="Gemm")


def test_dropout_with_its_mask_used_is_not_looked_through():
    rng = make_rng(13)
    bn, stats = _bn(rng, "r", "b")
    nodes = [helper.make_node("Relu", ["X"], ["r"], name="relu"), bn,
             helper.make_node("Dropout", ["b"], ["d", "mask"], name="dropout"),
             helper.make_node("Gemm", ["d", "B"], ["Y"], name="fc", transB=1)]
    model = _model(nodes, {**stats, "B": weights(rng, (4, C))}, [3, C], [3, 4], outputs=("Y", "mask"))
    model.graph.output[1].CopyFrom(helper.make_tensor_value_info("mask", TensorProto.BOOL, [3, C]))
    assert_fold_refused(model, {"X": rng.normal(size=(3, C)).astype(np.float32)}, "bn", NONLINEARITY_BETWEEN)


def _shape_init(name, dims):
    return {name: np.array(dims, dtype=np.int64)}


def test_matmul_reshape_bn_folds_through_the_reshape():
    """MatMul [N,C] -> Reshape [N,C,1,1] -> BN: axis 1 holds the same elements as the MatMul's features."""
    rng = make_rng(21)
    bn, stats = _bn(rng, "r", "Y")
    nodes = [helper.make_node("MatMul", ["X", "W"], ["m"], name="mm"),
             helper.make_node("Reshape", ["m", "shape"], ["r"], name="reshape"), bn]
    inits = {"W": weights(rng, (5, C)), **stats, **_shape_init("shape", [2, C, 1, 1])}
    model = _model(nodes, inits, [2, 5], [2, C, 1, 1])
    folded, result = assert_fold_equal(model, {"X": rng.normal(size=(2, 5)).astype(np.float32)})
    assert_folded(result, "bn", direction=BACKWARD, partner="mm", partner_op="MatMul")
    assert [n.op_type for n in folded.graph.node] == ["MatMul", "Add", "Reshape"]


def test_conv_transpose_round_trip_bn_folds():
    """Conv -> Transpose(NHWC) -> Transpose(NCHW) -> BN: the channel axis is followed through both perms."""
    rng = make_rng(22)
    bn, stats = _bn(rng, "t2", "Y")
    nodes = [helper.make_node("Conv", ["X", "W"], ["c"], name="conv"),
             helper.make_node("Transpose", ["c"], ["t1"], name="to_nhwc", perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["t1"], ["t2"], name="to_nchw", perm=[0, 3, 1, 2]), bn]
    model = _model(nodes, {"W": weights(rng, (C, 3, 1, 1)), **stats}, [1, 3, 4, 4], [1, C, 4, 4])
    _, result = assert_fold_equal(model, {"X": rng.normal(size=(1, 3, 4, 4)).astype(np.float32)})
    assert_folded(result, "bn", direction=BACKWARD, partner="conv", partner_op="Conv")


def test_reshape_that_mixes_channels_with_positions_is_refused():
    """Conv [1,C,2,2] -> Reshape [1,4,C] -> ... BN over axis 1 (size 4): not the Conv's channels."""
    rng = make_rng(23)
    stats = {f"bn.{k}": v for k, v in bn_stats(rng, 4).items()}
    nodes = [helper.make_node("Conv", ["X", "W"], ["c"], name="conv"),
             helper.make_node("Reshape", ["c", "shape"], ["r"], name="reshape"),
             helper.make_node("BatchNormalization", ["r", *stats], ["Y"], name="bn")]
    inits = {"W": weights(rng, (C, 3, 1, 1)), **stats, **_shape_init("shape", [1, 4, C])}
    model = _model(nodes, inits, [1, 3, 2, 2], [1, 4, C])
    assert_fold_refused(model, {"X": rng.normal(size=(1, 3, 2, 2)).astype(np.float32)}, "bn",
                        CHANNEL_AXIS_MISMATCH)


def test_transpose_that_moves_a_spatial_axis_to_axis_1_is_refused():
    rng = make_rng(24)
    stats = {f"bn.{k}": v for k, v in bn_stats(rng, 4).items()}
    nodes = [helper.make_node("Conv", ["X", "W"], ["c"], name="conv"),
             helper.make_node("Transpose", ["c"], ["t"], name="swap", perm=[0, 2, 1, 3]),
             helper.make_node("BatchNormalization", ["t", *stats], ["Y"], name="bn")]
    model = _model(nodes, {"W": weights(rng, (C, 3, 1, 1)), **stats}, [1, 3, 4, 4], [1, 4, C, 4])
    assert_fold_refused(model, {"X": rng.normal(size=(1, 3, 4, 4)).astype(np.float32)}, "bn",
                        CHANNEL_AXIS_MISMATCH)

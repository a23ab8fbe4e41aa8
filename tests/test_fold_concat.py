"""A BN after a Concat of linear ops (MixConv: Split -> per-group Convs -> Concat -> BN) folds backward into
every producer, each taking its own channels. Refused when an input is not its own linear op's output, when
the Concat joins another axis, and — all producers together — when one of them cannot take its slice."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import (
    FLOAT,
    FLOAT16,
    GraphBuilder,
    assert_fold_refused,
    assert_outputs_close,
    bn_stats,
    count_op,
    decision,
    fold_copy,
    make_rng,
    ort_run,
    weights,
)

from bnfold.fold.result import BACKWARD, CHANNEL_AXIS_MISMATCH, CONCAT_NOT_LINEAR, FOLDED, OVERFLOW, SHARED_OUTPUT

SIDE = 8


def _feeds(channels=6, dtype=np.float32):
    return {"X": make_rng(5).normal(0, 1, (2, channels, SIDE, SIDE)).astype(dtype)}


def _mixconv(kernels=(3, 5), *, widths=(2, 4), elem=FLOAT, dtype=np.float32, first=None, axis=1, gamma=None):
    """X (sum(widths) channels) -> Split -> a depthwise Conv per group (kernel k, padded to keep the size) ->
    Concat -> BN -> Relu. `first` replaces the first group's Conv by another op."""
    rng = make_rng(21)
    gb = GraphBuilder()
    x = gb.input("X", elem, [2, sum(widths), SIDE, SIDE])
    split = gb.init("split", np.asarray(widths, dtype=np.int64))
    pieces = [f"piece{i}" for i in range(len(widths))]
    gb.node("Split", [x, split], pieces, name="split", axis=1)
    outs = []
    for i, (k, w) in enumerate(zip(kernels, widths)):
        if i == 0 and first is not None:
            outs.append(gb.node(first, [pieces[i]], f"g{i}_out", name=f"g{i}"))
            continue
        W = gb.init(f"g{i}_W", weights(make_rng(30 + i), [w, 1, k, k], dtype))
        outs.append(gb.node("Conv", [pieces[i], W], f"g{i}_out", name=f"g{i}", kernel_shape=[k, k],
                            pads=[k // 2] * 4, group=w))
    joined = gb.node("Concat", outs, "joined", name="concat", axis=axis)
    stats = bn_stats(rng, sum(widths), dtype=dtype)
    if gamma is not None:  # the first group's channels only
        stats["scale"][:widths[0]] = gamma
        stats["var"][:widths[0]] = 1e-8
    gb.bn(joined, stats, out="bn_out")
    gb.node("Relu", ["bn_out"], "Y", name="relu")
    gb.output("Y", elem, [2, sum(widths), SIDE, SIDE])
    return gb.model(opset=15)


@pytest.mark.parametrize("kernels, widths", [((3, 5), (2, 4)), ((3, 5, 7, 9), (2, 2, 3, 1))])
def test_bn_after_concat_folds_into_each_group_conv(kernels, widths):
    model = _mixconv(kernels, widths=widths)
    feeds = _feeds(sum(widths))
    folded, result = fold_copy(model)
    onnx.checker.check_model(folded, full_check=True)
    d = decision(result, "bn")
    assert (d.outcome, d.direction, d.partner) == (FOLDED, BACKWARD, "g0"), d
    assert d.detail == ("folded backward into " + ", ".join(f"Conv 'g{i}'" for i in range(len(widths)))
                        + " (each its channels of the Concat)")
    assert count_op(folded, "BatchNormalization") == 0
    assert_outputs_close(ort_run(model, feeds), ort_run(folded, feeds), rtol=1e-4, atol=1e-5)


def test_concat_of_gemms_folds_on_the_feature_axis():
    rng = make_rng(22)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [4, 5])
    a = gb.node("Gemm", [x, gb.init("Wa", weights(rng, [5, 3])), gb.init("Ba", np.zeros(3, np.float32))], "a", name="ga")
    b = gb.node("Gemm", [x, gb.init("Wb", weights(rng, [6, 5])), gb.init("Bb", np.ones(6, np.float32))], "b", name="gb",
                transB=1)
    joined = gb.node("Concat", [a, b], "joined", name="concat", axis=-1)
    gb.bn(joined, bn_stats(rng, 9), out="Y")
    gb.output("Y", FLOAT, [4, 9])
    model = gb.model()
    feeds = {"X": make_rng(6).normal(0, 1, (4, 5)).astype(np.float32)}
    folded, result = fold_copy(model)
    assert decision(result, "bn").outcome == FOLDED and count_op(folded, "BatchNormalization") == 0
    assert_outputs_close(ort_run(model, feeds), ort_run(folded, feeds), rtol=1e-4, atol=1e-5)


def test_a_concat_input_that_is_no_linear_op_is_refused():
    assert_fold_refused(_mixconv(first="Relu"), _feeds(), "bn", CONCAT_NOT_LINEAR)
    _, result = fold_copy(_mixconv(first="Relu"))
    assert decision(result, "bn").detail == ("input 0 of Concat 'concat' is Relu 'g0', not the output of its own "
                                             "linear op")


def test_a_concat_along_another_axis_is_refused():
    rng = make_rng(23)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [2, 3, SIDE, SIDE])
    a = gb.node("Conv", [x, gb.init("Wa", weights(rng, [4, 3, 1, 1]))], "a", name="ca", kernel_shape=[1, 1])
    b = gb.node("Conv", [x, gb.init("Wb", weights(rng, [4, 3, 1, 1]))], "b", name="cb", kernel_shape=[1, 1])
    joined = gb.node("Concat", [a, b], "joined", name="concat", axis=2)
    gb.bn(joined, bn_stats(rng, 4), out="Y")
    gb.output("Y", FLOAT, [2, 4, 2 * SIDE, SIDE])
    feeds = {"X": make_rng(7).normal(0, 1, (2, 3, SIDE, SIDE)).astype(np.float32)}
    assert_fold_refused(gb.model(), feeds, "bn", CHANNEL_AXIS_MISMATCH)


def test_one_producer_feeding_the_concat_twice_is_refused():
    rng = make_rng(24)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [2, 3, SIDE, SIDE])
    a = gb.node("Conv", [x, gb.init("Wa", weights(rng, [4, 3, 1, 1]))], "a", name="ca", kernel_shape=[1, 1])
    joined = gb.node("Concat", [a, a], "joined", name="concat", axis=1)
    gb.bn(joined, bn_stats(rng, 8), out="Y")
    gb.output("Y", FLOAT, [2, 8, SIDE, SIDE])
    feeds = {"X": make_rng(8).normal(0, 1, (2, 3, SIDE, SIDE)).astype(np.float32)}
    assert_fold_refused(gb.model(), feeds, "bn", SHARED_OUTPUT)


def test_a_producer_that_cannot_take_its_slice_refuses_them_all():
    """fp16, gamma 1e4 with var 1e-8 in the first group's channels: its folded weight overflows. The second
    group's Conv could take its slice, but the BN stays, so that Conv must stay unscaled too (its weight
    unchanged, not half a fold)."""
    model = _mixconv(elem=FLOAT16, dtype=np.float16, gamma=1e4)
    assert_fold_refused(model, _feeds(dtype=np.float16), "bn", OVERFLOW)
    folded, _ = fold_copy(model)
    before = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    after = {i.name: onnx.numpy_helper.to_array(i) for i in folded.graph.initializer}
    assert all(np.array_equal(before[name], after[name]) for name in ("g0_W", "g1_W"))

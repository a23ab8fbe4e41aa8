"""Parallel branches of one input merge into one Conv (structural re-parameterization on the ONNX graph):
RepVGG (3x3 + 1x1 + identity BN), MobileOne (several k x k branches, a 1x1 scale branch, identity BN),
ACNet (3x3 + 1x3 + 3x1), in their train-time form with every branch's BN. Each merge is checked in
onnxruntime against the original; each misalignment is refused with `branches-misaligned` and changes
nothing."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import (
    FLOAT,
    GraphBuilder,
    assert_outputs_close,
    bn_stats,
    count_op,
    decision,
    fold_copy,
    make_rng,
    ort_run,
    weights,
)

from bnfold.fold.result import BRANCHES_MISALIGNED, FOLDED, MERGED, SKIPPED

C = 8


def _feeds(shape=(2, C, 9, 9), seed=7):
    return {"X": make_rng(seed).normal(0, 1, shape).astype(np.float32)}


def _conv_bn(gb, x, rng, name, kernel, pads, *, cin=C, cout=C, group=1, strides=(1, 1), dilations=(1, 1),
             bias=False):
    inputs = [x, gb.init(f"{name}_W", weights(rng, [cout, cin // group, *kernel]))]
    if bias:
        inputs.append(gb.init(f"{name}_B", rng.normal(0, 0.1, cout).astype(np.float32)))
    y = gb.node("Conv", inputs, f"{name}_out", name=name, kernel_shape=list(kernel), pads=list(pads), group=group,
                strides=list(strides), dilations=list(dilations))
    return gb.bn(y, bn_stats(rng, cout), name=f"{name}_bn")


def _finish(gb, branches, out_shape=(2, C, 9, 9)):
    total = branches[0]
    for k, branch in enumerate(branches[1:]):
        total = gb.node("Add", [total, branch], f"sum{k}", name=f"add{k}")
    gb.node("Relu", [total], "Y", name="relu")
    gb.output("Y", FLOAT, list(out_shape))
    return gb.model()


def _repvgg(group=1, identity=True):
    rng = make_rng(11)
    gb = GraphBuilder()
    x = gb.node("Relu", [gb.input("X", FLOAT, [2, C, 9, 9])], "x", name="pre")
    branches = [_conv_bn(gb, x, rng, "dense", (3, 3), (1, 1, 1, 1), group=group),
                _conv_bn(gb, x, rng, "one", (1, 1), (0, 0, 0, 0), group=group)]
    if identity:
        branches.append(gb.bn(x, bn_stats(rng, C), name="identity"))
    return _finish(gb, branches)


def _assert_merged(model, feeds, add, keeper, kernel, branches):
    reference = ort_run(model, feeds)
    folded, result = fold_copy(model)
    onnx.checker.check_model(folded, full_check=True)
    assert count_op(folded, "BatchNormalization") == 0
    assert count_op(folded, "Conv") == 1 and count_op(folded, "Add") == 0, [n.op_type for n in folded.graph.node]
    d = decision(result, add)
    assert (d.outcome, d.direction, d.partner, d.branches) == (FOLDED, MERGED, keeper, branches), d
    conv = next(n for n in folded.graph.node if n.op_type == "Conv")
    assert list(next(a for a in conv.attribute if a.name == "kernel_shape").ints) == list(kernel)
    assert_outputs_close(reference, ort_run(folded, feeds), rtol=1e-4, atol=1e-5)
    return result


@pytest.mark.parametrize("group", [1, 2, 8], ids=["dense", "grouped", "depthwise"])
def test_repvgg_block_merges_into_one_3x3_conv(group):
    result = _assert_merged(_repvgg(group), _feeds(), "add1", "dense", (3, 3), 3)
    identity = decision(result, "identity")
    assert (identity.outcome, identity.direction, identity.partner) == (FOLDED, MERGED, "dense")
    assert decision(result, "add1").detail == ("merged 3 branches (3x3 Conv 'dense', 1x1 Conv 'one', identity "
                                               "BatchNormalization 'identity') into one 3x3 Conv 'dense'")
    assert result.summary() == ("folded 3/3 BatchNormalization: 2 backward into Conv, 1 merged into Conv; 1/1 sums of "
                                "parallel branches merged into one Conv; 0 skipped; 9 nodes become 3")


def test_mobileone_block_with_several_kxk_branches_a_scale_branch_and_identity():
    rng = make_rng(12)
    gb = GraphBuilder()
    x = gb.node("Relu", [gb.input("X", FLOAT, [2, C, 9, 9])], "x", name="pre")
    branches = [_conv_bn(gb, x, rng, f"k{i}", (3, 3), (1, 1, 1, 1), group=C) for i in range(3)]
    branches.append(_conv_bn(gb, x, rng, "scale", (1, 1), (0, 0, 0, 0), group=C))
    branches.append(gb.bn(x, bn_stats(rng, C), name="skip"))
    _assert_merged(_finish(gb, branches), _feeds(), "add3", "k0", (3, 3), 5)


def test_acnet_asymmetric_kernels_merge_into_the_square_one():
    rng = make_rng(13)
    gb = GraphBuilder()
    x = gb.node("Relu", [gb.input("X", FLOAT, [2, C, 9, 9])], "x", name="pre")
    branches = [_conv_bn(gb, x, rng, "square", (3, 3), (1, 1, 1, 1)),
                _conv_bn(gb, x, rng, "hor", (1, 3), (0, 1, 0, 1)),
                _conv_bn(gb, x, rng, "ver", (3, 1), (1, 0, 1, 0), bias=True)]
    _assert_merged(_finish(gb, branches), _feeds(), "add1", "square", (3, 3), 3)


def test_1x3_and_3x1_alone_merge_into_a_new_3x3():
    rng = make_rng(14)
    gb = GraphBuilder()
    x = gb.node("Relu", [gb.input("X", FLOAT, [2, C, 9, 9])], "x", name="pre")
    branches = [_conv_bn(gb, x, rng, "hor", (1, 3), (0, 1, 0, 1)), _conv_bn(gb, x, rng, "ver", (3, 1), (1, 0, 1, 0))]
    _assert_merged(_finish(gb, branches), _feeds(), "add0", "hor", (3, 3), 2)


def test_strided_branches_without_identity_merge():
    rng = make_rng(15)
    gb = GraphBuilder()
    x = gb.node("Relu", [gb.input("X", FLOAT, [2, C, 9, 9])], "x", name="pre")
    branches = [_conv_bn(gb, x, rng, "dense", (3, 3), (1, 1, 1, 1), strides=(2, 2), cout=16),
                _conv_bn(gb, x, rng, "one", (1, 1), (0, 0, 0, 0), strides=(2, 2), cout=16)]
    _assert_merged(_finish(gb, branches, (2, 16, 5, 5)), _feeds(), "add0", "dense", (3, 3), 2)


def test_a_residual_joining_the_sum_leaves_the_inner_branch_merge():
    """Add(Add(conv3(x), conv1(x)), r) where r is another tensor: the inner Add still merges."""
    rng = make_rng(16)
    gb = GraphBuilder()
    x = gb.node("Relu", [gb.input("X", FLOAT, [2, C, 9, 9])], "x", name="pre")
    other = gb.node("Sigmoid", [x], "other", name="side")
    inner = gb.node("Add", [_conv_bn(gb, x, rng, "dense", (3, 3), (1, 1, 1, 1)),
                            _conv_bn(gb, x, rng, "one", (1, 1), (0, 0, 0, 0))], "inner", name="inner")
    gb.node("Add", [inner, other], "Y", name="residual")
    gb.output("Y", FLOAT, [2, C, 9, 9])
    model = gb.model()
    folded, result = fold_copy(model)
    assert decision(result, "inner").outcome == FOLDED
    assert not any(d.node == "residual" for d in result.decisions)  # not a sum of branches: no decision
    assert count_op(folded, "Conv") == 1 and count_op(folded, "Add") == 1
    assert_outputs_close(ort_run(model, _feeds()), ort_run(folded, _feeds()), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("second, detail", [
    (dict(kernel=(3, 3), pads=(2, 2, 2, 2), dilations=(2, 2)),
     "differ in dilations (Conv 'other' (2, 2), Conv 'dense' (1, 1))"),
    (dict(kernel=(1, 1), pads=(0, 0, 0, 0), group=2), "differ in group (Conv 'other' 2, Conv 'dense' 1)"),
    (dict(kernel=(3, 3), pads=(2, 2, 0, 0)), "Conv 'dense' does not fit inside the merged 3x3 kernel"),
], ids=["dilations", "group", "shifted"])
def test_misaligned_branches_are_refused_and_left_alone(second, detail):
    """Branches whose outputs add up (same shape) but whose kernels cannot be summed. (Strides, channels or
    an identity branch that do not line up change the output shape: such a model is not a valid sum.)"""
    rng = make_rng(17)
    gb = GraphBuilder()
    x = gb.node("Relu", [gb.input("X", FLOAT, [2, C, 9, 9])], "x", name="pre")
    kernel, pads = second.pop("kernel"), second.pop("pads")
    model = _finish(gb, [_conv_bn(gb, x, rng, "dense", (3, 3), (1, 1, 1, 1)),
                         _conv_bn(gb, x, rng, "other", kernel, pads, **second)])
    folded, result = fold_copy(model)
    d = decision(result, "add0")
    assert (d.outcome, d.reason, d.branches) == (SKIPPED, BRANCHES_MISALIGNED, 2), d
    assert detail in d.detail, d.detail
    assert count_op(folded, "Conv") == 2 and count_op(folded, "BatchNormalization") == 0
    assert_outputs_close(ort_run(model, _feeds()), ort_run(folded, _feeds()), rtol=1e-4, atol=1e-5)


def test_the_analysis_sees_the_merges_the_fold_makes():
    """lint and --dry-run read analyze_model: the same decisions as the fold, merges and identity BNs included."""
    from helpers import analyze_copy

    for model in (_repvgg(), _repvgg(group=2)):
        _, result = fold_copy(model)
        assert analyze_copy(model) == result.decisions

"""BN007: moving mean exactly 0 and variance exactly 1: the statistics were never updated."""

from __future__ import annotations

import numpy as np

from bnfold.fold.affine import bn_epsilon
from bnfold.lint.context import LintContext
from bnfold.lint.finding import ERROR, RuleInfo

RULE = RuleInfo("BN007", "untrained-batchnorm-statistics", ERROR,
                "moving mean is exactly 0 and moving variance exactly 1: the statistics were never updated")

# Default epsilons (Keras, PyTorch, keras.applications' ResNets): a decomposed BN with gamma 1 and moving
# variance 1 multiplies every channel by 1/sqrt(1 + eps), to float32 rounding (TensorFlow computes it as
# rsqrt(var + eps) in float32: a few ulp from the float64 value); a trained variance is nowhere that close
EPSILONS = (1e-3, 1e-5, 1.001e-5)
ULPS = 4 * float(np.finfo(np.float32).eps)
FIX_TENSORFLOW = ("run the moving-statistics update during training (TF1: run tf.GraphKeys.UPDATE_OPS with the "
                  "train op; Keras: train with training=True), then re-export")
FIX_PYTORCH = ("check that the trained state_dict was loaded before torch.onnx.export (BN's running_mean/running_var "
               "update only in model.train() forward passes), then re-export")


def _fix(ctx: LintContext) -> str:
    """The advice for the framework that made the model (no producer_name: most likely an old tf2onnx)."""
    if ctx.framework == "pytorch":
        return FIX_PYTORCH
    if ctx.framework == "tensorflow" or not ctx.model.producer_name:
        return FIX_TENSORFLOW
    return "update the moving statistics during training (or load the trained ones), then re-export"


def _initial_scale(ctx: LintContext, bn) -> tuple[int, float] | None:
    """(channels, eps) when a decomposed BN's Mul scales every channel by 1/sqrt(1 + eps)."""
    for op in bn.ops:
        if op.op_type != "Mul":
            continue
        scale = next((a for a in map(ctx.consts.array, op.inputs) if a is not None), None)
        if scale is None or scale.size < 2 or not np.all(scale == scale.flat[0]):
            return None
        for eps in EPSILONS:
            if scale.dtype == np.float32 and abs(float(scale.flat[0]) * np.sqrt(1 + eps) - 1) <= ULPS:
                return scale.size, eps
    return None


def check(ctx: LintContext):
    for graph, bn in ctx.batchnorms:
        if len(bn.inputs) < 5:
            continue
        mean, var = ctx.consts.array(bn.inputs[3]), ctx.consts.array(bn.inputs[4])
        if mean is None or var is None or mean.size == 0:
            continue
        # epsilon 0: a BN written as a plain affine (gamma * x + beta) by a converter or a tool that resets a
        # folded BN; no training framework makes one, so 0/1 there are by construction, not untrained
        if np.all(mean == 0) and np.all(var == 1) and bn_epsilon(bn) != 0:
            yield ctx.finding(
                RULE, graph, bn,
                f"{ctx.layer_label(bn)} has moving mean 0 and moving variance 1 in all "
                f"{mean.size} channels, the initial values: inference will not normalize like training did",
                _fix(ctx),
            )
    for bn in ctx.batchnorm_forms:
        found = _initial_scale(ctx, bn) if bn.decomposed else None
        if found is not None:
            channels, eps = found
            yield ctx.finding(
                RULE, bn.graph, bn.node,
                f"{ctx.bn_label(bn)} multiplies all {channels} channels by 1/sqrt(1 + {eps:g}), what gamma 1 "
                "and moving variance 1, the initial values, give: inference will not normalize like training did",
                _fix(ctx),
            )

"""BN008: statistics that make BatchNormalization (or its folded weights) produce NaN, Inf or overflow."""

from __future__ import annotations

import numpy as np

from bnfold.fold.affine import bn_epsilon
from bnfold.fold.analysis import node_label
from bnfold.fold.result import OVERFLOW
from bnfold.lint.context import LintContext
from bnfold.lint.finding import ERROR, RuleInfo

RULE = RuleInfo("BN008", "degenerate-batchnorm-statistics", ERROR,
                "negative/NaN/Inf variance or parameters, or a scale that overflows the folded weight dtype")

_NAMES = ("scale", "B", "mean", "var")


def _problems(ctx: LintContext, bn) -> list[str]:
    eps = bn_epsilon(bn)
    problems = []
    for name, value in zip(_NAMES, bn.inputs[1:5]):
        array = ctx.consts.array(value)
        if array is None:
            continue
        array = array.astype(np.float64)
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            problems.append(f"{bad} non-finite {name} value(s)")
        if name == "var" and np.any(array + eps <= 0):
            problems.append(f"var + epsilon <= 0 in {int(np.count_nonzero(array + eps <= 0))} channel(s) "
                            f"(min var {np.nanmin(array):g})")
    return problems


def _decomposed_problems(ctx: LintContext, bn) -> list[str]:
    """Non-finite scale/shift values of a BN TensorFlow wrote as Mul/Add (its statistics are baked in)."""
    problems = []
    for op in bn.ops:
        array = next((a for a in map(ctx.consts.array, op.inputs) if a is not None), None)
        bad = 0 if array is None else int(np.count_nonzero(~np.isfinite(array.astype(np.float64))))
        if bad:
            problems.append(f"{bad} non-finite value(s) in its {op.op_type} '{node_label(op)}'")
    return problems


def check(ctx: LintContext):
    for bn in ctx.batchnorm_forms:
        problems = _decomposed_problems(ctx, bn) if bn.decomposed else _problems(ctx, bn.node)
        if problems:
            yield ctx.finding(
                RULE, bn.graph, bn.node,
                f"{ctx.bn_label(bn)} has {'; '.join(problems)}: onnxruntime returns NaN for those channels",
                "fix or re-export the statistics (a negative variance is never valid)",
            )
            continue
        decision = next((d for d in (ctx.decision(bn.graph, op) for op in bn.ops)
                         if d is not None and d.reason == OVERFLOW), None)
        if decision is not None:
            yield ctx.finding(
                RULE, bn.graph, bn.node,
                f"{ctx.bn_label(bn)}: {decision.detail}; |gamma|/sqrt(var+eps) is huge (a near-zero variance)",
                "check the channel's variance; keep this BN unfolded or fold in a wider dtype",
            )

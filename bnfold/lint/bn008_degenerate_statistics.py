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


def check(ctx: LintContext):
    for graph, bn in ctx.batchnorms:
        problems = _problems(ctx, bn)
        if problems:
            yield ctx.finding(
                RULE, graph, bn,
                f"BatchNormalization '{node_label(bn)}' has {'; '.join(problems)}: onnxruntime returns NaN for "
                "those channels",
                "fix or re-export the statistics (a negative variance is never valid)",
            )
            continue
        decision = ctx.decision(graph, bn)
        if decision is not None and decision.reason == OVERFLOW:
            yield ctx.finding(
                RULE, graph, bn,
                f"BatchNormalization '{node_label(bn)}': {decision.detail}; |gamma|/sqrt(var+eps) is huge "
                "(a near-zero variance)",
                "check the channel's variance; keep this BN unfolded or fold in a wider dtype",
            )

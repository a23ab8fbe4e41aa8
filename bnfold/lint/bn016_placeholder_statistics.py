"""BN016: a BatchNormalization whose moving mean and moving variance are the same in every channel."""

from __future__ import annotations

import numpy as np

from bnfold.lint.context import LintContext
from bnfold.lint.finding import INFO, RuleInfo

RULE = RuleInfo("BN016", "placeholder-batchnorm-statistics", INFO,
                "moving mean and variance are identical in every channel: placeholders, not learned statistics")


def check(ctx: LintContext):
    for graph, bn in ctx.batchnorms:
        if len(bn.inputs) < 5:
            continue
        mean, var = ctx.consts.array(bn.inputs[3]), ctx.consts.array(bn.inputs[4])
        if mean is None or var is None or mean.size < 2 or var.size < 2:
            continue
        m, v = mean.flat[0], var.flat[0]
        if m == 0 and v == 1:  # the initial values: BN007 says what that means
            continue
        if np.all(mean == m) and np.all(var == v):
            yield ctx.finding(
                RULE, graph, bn,
                f"{ctx.layer_label(bn)} has moving mean {float(m):g} and moving variance {float(v):g} in all "
                f"{mean.size} channels: learned statistics differ per channel, so these were filled in",
                "load the trained statistics (or re-export from the trained model); if the values are meant, "
                "write the BN as a Mul/Add",
            )

"""BN007: moving mean exactly 0 and variance exactly 1: the statistics were never updated."""

from __future__ import annotations

import numpy as np

from bnfold.fold.analysis import node_label
from bnfold.lint.context import LintContext
from bnfold.lint.finding import ERROR, RuleInfo

RULE = RuleInfo("BN007", "untrained-batchnorm-statistics", ERROR,
                "moving mean is exactly 0 and moving variance exactly 1: the statistics were never updated")


def check(ctx: LintContext):
    for graph, bn in ctx.batchnorms:
        if len(bn.inputs) < 5:
            continue
        mean, var = ctx.consts.array(bn.inputs[3]), ctx.consts.array(bn.inputs[4])
        if mean is None or var is None or mean.size == 0:
            continue
        if np.all(mean == 0) and np.all(var == 1):
            yield ctx.finding(
                RULE, graph, bn,
                f"BatchNormalization '{node_label(bn)}' has moving mean 0 and moving variance 1 in all "
                f"{mean.size} channels, the initial values: inference will not normalize like training did",
                "run the moving-statistics update during training (TF1: run tf.GraphKeys.UPDATE_OPS with the "
                "train op; Keras: train with training=True), then re-export",
            )

"""BN010: BatchNormalization feeding BatchNormalization: the second re-normalizes normalized data."""

from __future__ import annotations

from bnfold.fold.analysis import node_label
from bnfold.lint.blocks import BN
from bnfold.lint.context import LintContext, is_op, upstream
from bnfold.lint.finding import WARNING, RuleInfo

RULE = RuleInfo("BN010", "consecutive-batchnorm", WARNING, "BatchNormalization feeds BatchNormalization")


def check(ctx: LintContext):
    for graph, bn in ctx.batchnorms:
        above = upstream(bn.inputs[0])
        if is_op(above, BN):
            yield ctx.finding(
                RULE, graph, bn,
                f"BatchNormalization '{node_label(bn)}' normalizes the output of BatchNormalization "
                f"'{node_label(above)}' directly",
                "remove one of the two",
            )

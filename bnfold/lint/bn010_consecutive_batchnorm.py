"""BN010: BatchNormalization feeding BatchNormalization: the second re-normalizes normalized data."""

from __future__ import annotations

from bnfold.lint.context import LintContext, upstream
from bnfold.lint.finding import WARNING, RuleInfo

RULE = RuleInfo("BN010", "consecutive-batchnorm", WARNING, "BatchNormalization feeds BatchNormalization")


def check(ctx: LintContext):
    by_output = {id(bn.output): bn for bn in ctx.batchnorm_forms}
    for bn in ctx.batchnorm_forms:
        above = upstream(bn.input)
        first = by_output.get(id(above.outputs[0])) if above is not None and above.outputs else None
        if first is not None:
            yield ctx.finding(
                RULE, bn.graph, bn.node,
                f"{ctx.bn_label(bn)} normalizes the output of {ctx.bn_label(first)} directly",
                "remove one of the two",
            )

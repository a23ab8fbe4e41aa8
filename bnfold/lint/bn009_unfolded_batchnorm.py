"""BN009: a BatchNormalization that `bnfold fold` would fold is still in the model."""

from __future__ import annotations

from bnfold.fold.analysis import node_label
from bnfold.fold.result import FOLDED
from bnfold.lint.context import LintContext
from bnfold.lint.finding import WARNING, RuleInfo

RULE = RuleInfo("BN009", "unfolded-batchnorm", WARNING,
                "a BatchNormalization that `bnfold fold` would fold is still in the model")


def check(ctx: LintContext):
    if ctx.from_keras:  # a Keras file is not deployed as is: `bnfold fold` folds its ONNX conversion
        return
    for graph, bn in ctx.batchnorms:
        decision = ctx.decision(graph, bn)
        if decision is not None and decision.outcome == FOLDED:
            yield ctx.finding(
                RULE, graph, bn,
                f"BatchNormalization '{node_label(bn)}' can be folded {decision.direction} into "
                f"{decision.partner_op} '{decision.partner}' but is still in the model",
                "run `bnfold fold IN OUT` before deploying",
            )

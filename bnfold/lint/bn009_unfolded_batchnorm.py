"""BN009: a BatchNormalization that `bnfold fold` would fold is still in the model."""

from __future__ import annotations

from bnfold.fold.result import FOLDED
from bnfold.lint.context import LintContext
from bnfold.lint.finding import WARNING, RuleInfo

RULE = RuleInfo("BN009", "unfolded-batchnorm", WARNING,
                "a BatchNormalization that `bnfold fold` would fold is still in the model")


def check(ctx: LintContext):
    if ctx.from_keras:  # a Keras file is not deployed as is: `bnfold fold` folds its ONNX conversion
        return
    for bn in ctx.batchnorm_forms:
        # a decomposed BN is one finding when every one of its ops folds (fold decides op by op)
        decisions = [ctx.decision(bn.graph, op) for op in bn.ops]
        if all(d is not None and d.outcome == FOLDED for d in decisions):
            decision = decisions[0]
            yield ctx.finding(
                RULE, bn.graph, bn.node,
                f"{ctx.bn_label(bn)} can be folded {decision.direction} into "
                f"{decision.partner_op} '{decision.partner}' but is still in the model",
                "run `bnfold fold IN OUT` before deploying",
            )

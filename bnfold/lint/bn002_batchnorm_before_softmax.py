"""BN002: BatchNormalization feeding Softmax normalizes the logits the softmax should see."""

from __future__ import annotations

from bnfold.lint.context import SOFTMAX, LintContext, downstream, is_op
from bnfold.lint.finding import WARNING, RuleInfo

RULE = RuleInfo("BN002", "batchnorm-before-softmax", WARNING,
                "BatchNormalization feeds Softmax/LogSoftmax")


def check(ctx: LintContext):
    for bn in ctx.batchnorm_forms:
        for consumer in downstream(bn.output):
            if is_op(consumer, SOFTMAX):
                yield ctx.finding(
                    RULE, bn.graph, bn.node,
                    f"{ctx.bn_label(bn)} feeds {ctx.layer_label(consumer)}: "
                    "the output logits are re-centred and re-scaled per batch statistics",
                    "remove this BatchNormalization: let the last linear layer produce the logits directly",
                )
                break

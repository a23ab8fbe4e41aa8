"""BN005: Dropout feeding BatchNormalization shifts the variance BN sees between training and inference."""

from __future__ import annotations

from bnfold.lint.context import LintContext, is_op
from bnfold.lint.finding import WARNING, RuleInfo

RULE = RuleInfo("BN005", "dropout-before-batchnorm", WARNING,
                "Dropout feeds BatchNormalization (variance shift between training and inference)")

_NEUTRAL_BUT_DROPOUT = frozenset({"Reshape", "Transpose", "Flatten", "Identity", "Squeeze", "Unsqueeze"})


def _dropout_above(value):
    while True:
        node = value.producer()
        if is_op(node, frozenset({"Dropout"})):
            return node
        if not is_op(node, _NEUTRAL_BUT_DROPOUT) or not node.inputs or node.inputs[0] is None:
            return None
        value = node.inputs[0]


def check(ctx: LintContext):
    for bn in ctx.batchnorm_forms:
        dropout = _dropout_above(bn.input)
        if dropout is not None:
            yield ctx.finding(
                RULE, bn.graph, bn.node,
                f"{ctx.layer_label(dropout)} feeds {ctx.bn_label(bn)}: the moving variance is learned with "
                "dropout's extra variance, which is gone at inference",
                "move the Dropout after the last BatchNormalization (or drop it)",
            )

"""BN005: Dropout feeding BatchNormalization shifts the variance BN sees between training and inference."""

from __future__ import annotations

from bnfold.fold.analysis import node_label
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
    for graph, bn in ctx.batchnorms:
        dropout = _dropout_above(bn.inputs[0])
        if dropout is not None:
            yield ctx.finding(
                RULE, graph, bn,
                f"Dropout '{node_label(dropout)}' feeds BatchNormalization '{node_label(bn)}': the moving variance "
                "is learned with dropout's extra variance, which is gone at inference",
                "move the Dropout after the last BatchNormalization (or drop it)",
            )

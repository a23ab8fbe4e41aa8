"""BN011: BatchNormalization applied straight to a model input, in place of input normalization."""

from __future__ import annotations

from bnfold.lint.context import LAYOUT_NEUTRAL, LintContext, is_op
from bnfold.lint.finding import INFO, RuleInfo

RULE = RuleInfo("BN011", "batchnorm-on-model-input", INFO,
                "BatchNormalization is applied straight to a model input")


def _stored_statistics(ctx: LintContext, bn) -> bool:
    """Whether the BN normalizes with statistics it stores. Mean and variance the caller feeds as graph
    inputs are input normalization done on purpose, not a learned stand-in for it."""
    return bn.decomposed or all(ctx.consts.array(v) is not None for v in bn.node.inputs[3:5] if v is not None)


def check(ctx: LintContext):
    for bn in ctx.batchnorm_forms:
        data = bn.input
        while is_op(data.producer(), LAYOUT_NEUTRAL) and data.producer().inputs[0] is not None:
            data = data.producer().inputs[0]
        # A subgraph's own inputs (a Loop's carried values) are not model inputs.
        if (data.producer() is None and data.is_graph_input() and not data.is_initializer()
                and data.graph is ctx.model.graph and _stored_statistics(ctx, bn)):
            yield ctx.finding(
                RULE, bn.graph, bn.node,
                f"{ctx.bn_label(bn)} normalizes the model input '{data.name}' with statistics learned in training",
                "normalize inputs in preprocessing with the data set's mean and std (or a Normalization layer)",
            )

"""BN011: BatchNormalization applied straight to a model input, in place of input normalization."""

from __future__ import annotations

from bnfold.fold.analysis import node_label
from bnfold.lint.context import LAYOUT_NEUTRAL, LintContext, is_op
from bnfold.lint.finding import INFO, RuleInfo

RULE = RuleInfo("BN011", "batchnorm-on-model-input", INFO,
                "BatchNormalization is applied straight to a model input")


def check(ctx: LintContext):
    for graph, bn in ctx.batchnorms:
        data = bn.inputs[0]
        while is_op(data.producer(), LAYOUT_NEUTRAL) and data.producer().inputs[0] is not None:
            data = data.producer().inputs[0]
        # A subgraph's own inputs (a Loop's carried values) are not model inputs.
        if (data.producer() is None and data.is_graph_input() and not data.is_initializer()
                and data.graph is ctx.model.graph):
            yield ctx.finding(
                RULE, graph, bn,
                f"BatchNormalization '{node_label(bn)}' normalizes the model input '{data.name}' with learned "
                "statistics",
                "normalize inputs in preprocessing with the data set's mean and std (or a Normalization layer)",
            )

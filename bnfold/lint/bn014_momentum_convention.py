"""BN014: a Keras BatchNormalization momentum written in PyTorch's convention (Keras files only)."""

from __future__ import annotations

from bnfold.lint.context import LintContext
from bnfold.lint.finding import WARNING, RuleInfo

RULE = RuleInfo("BN014", "batchnorm-momentum-convention", WARNING,
                "a Keras BatchNormalization momentum below 0.5: PyTorch's convention in a Keras model")

THRESHOLD = 0.5


def check(ctx: LintContext):
    # Only Keras configs keep the training-time momentum the author wrote; an ONNX export's is history.
    if not ctx.from_keras:
        return
    for graph, bn in ctx.nodes("BatchNormalization"):
        attr = bn.attributes.get("momentum")
        if attr is None or attr.value >= THRESHOLD:
            continue
        momentum = float(attr.value)
        yield ctx.finding(
            RULE, graph, bn,
            f"{ctx.layer_label(bn)} has momentum={momentum:g}: in Keras that is the weight the old moving average "
            f"keeps, so each batch replaces {1 - momentum:.0%} of the moving statistics and they follow the last "
            "few batches instead of the whole training set",
            f"use momentum={1 - momentum:g} (Keras' momentum is 1 - PyTorch's), or the default 0.99",
        )

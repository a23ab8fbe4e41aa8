"""BN013: a Keras BatchNormalization whose axis is not the channel axis (only a Keras file shows it)."""

from __future__ import annotations

from bnfold.lint.context import LintContext
from bnfold.lint.finding import ERROR, RuleInfo

RULE = RuleInfo("BN013", "batchnorm-axis-not-channels", ERROR,
                "a Keras BatchNormalization normalizes another axis than the channels")

KERAS_DOMAIN = "keras"  # bnfold.keras.lower keeps such a BN as an opaque node of this domain, with its axis


def check(ctx: LintContext):
    for label, graph in ctx.graphs():
        for node in graph:
            if node.domain != KERAS_DOMAIN or node.op_type != "BatchNormalization":
                continue
            attr = node.attributes.get("axis")
            axes = list(attr.value) if attr is not None else []
            shown = axes[0] if len(axes) == 1 else axes
            yield ctx.finding(
                RULE, label, node,
                f"BatchNormalization '{node.name}' normalizes axis {shown}, not the channel axis -1 of its "
                "channels-last input: it keeps one mean and variance per row (or column) instead of per channel",
                "use axis=-1 (the default) for channels-last data; axis=1 only with data_format='channels_first'",
            )

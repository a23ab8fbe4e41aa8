"""BN004: BatchNormalization before the activation in some blocks and after it in others."""

from __future__ import annotations

from bnfold.lint.blocks import activation_after, is_layer, merged_batchnorm, placement
from bnfold.lint.context import LintContext
from bnfold.lint.finding import INFO, RuleInfo

RULE = RuleInfo("BN004", "inconsistent-batchnorm-placement", INFO,
                "BatchNormalization sits before the activation in some blocks and after it in others")


def check(ctx: LintContext):
    placed = [(bn, placement(bn, ctx.consts)) for bn in ctx.batchnorm_forms]
    placed = [p for p in placed if p[1] is not None]
    counts = {side: sum(1 for p in placed if p[1] == side) for side in ("before", "after")}
    # a layer the exporter merged a BN into, straight into its activation, had its BN before it: evidence of
    # the model's placement, though no BN is left there to move
    counts["before"] += sum(1 for _, node in ctx.nodes() if is_layer(node, ctx.consts) and merged_batchnorm(node)
                            and activation_after(node, ctx.consts))
    preferred = ctx.options.placement
    if preferred is None:
        if not (counts["before"] and counts["after"]):
            return
        # Flag the minority; on a tie, the original paper's placement (before the activation) wins.
        preferred = "before" if counts["before"] >= counts["after"] else "after"
    why = (f"the configured placement is '{preferred}'" if ctx.options.placement
           else f"{counts[preferred]} BatchNormalization in this model are placed {preferred} it")
    for bn, side in placed:
        if side != preferred:
            yield ctx.finding(
                RULE, bn.graph, bn.node,
                f"{ctx.bn_label(bn)} is placed {side} its activation; {why}",
                f"move it {preferred} the activation so every block normalizes the same way "
                "(or set placement in [tool.bnfold.lint])",
            )

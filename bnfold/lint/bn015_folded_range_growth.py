"""BN015: folding a BatchNormalization would widen its layer's per-tensor weight range many times over (a
channel with a near-zero running variance): per-tensor int8 quantization of the folded model loses most of
its levels on every other channel."""

from __future__ import annotations

from bnfold.fold.ranges import GROWTH_LIMIT
from bnfold.fold.result import FOLDED
from bnfold.lint.context import LintContext
from bnfold.lint.finding import WARNING, RuleInfo

RULE = RuleInfo("BN015", "batchnorm-inflates-folded-weight-range", WARNING,
                "folding the BatchNormalization widens its layer's per-tensor weight range 10x or more")


def _variance(ctx: LintContext, bn, channel: int) -> str:
    """`, running variance v` for a BN node's channel (a decomposed BN has its variance baked in)."""
    var = ctx.consts.array(bn.node.inputs[4]) if not bn.decomposed and len(bn.node.inputs) > 4 else None
    return f", running variance {float(var.flat[channel]):.3g}" if var is not None and channel < var.size else ""


def check(ctx: LintContext):
    for bn in ctx.batchnorm_forms:
        decision = ctx.decision(bn.graph, bn.node)
        if decision is None or decision.outcome != FOLDED or (decision.range_growth or 0) < GROWTH_LIMIT:
            continue
        channel = decision.worst_channel
        partner = ctx.label_of(bn.graph, decision.partner, decision.partner_op)
        yield ctx.finding(
            RULE, bn.graph, bn.node,
            f"folding {ctx.bn_label(bn)} into {partner} widens the weight's per-tensor range "
            f"{decision.range_growth:.0f}x (channel {channel}{_variance(ctx, bn, channel)}): per-tensor int8 "
            f"quantization would give the other channels about 1/{decision.range_growth:.0f} of their levels",
            f"quantize {partner} per channel (onnxruntime: quantize_static(..., per_channel=True)), or prune "
            f"channel {channel} if it is dead (a near-zero variance means a near-constant input)",
        )

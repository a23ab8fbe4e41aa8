"""BN003: a linear -> activation block with no BatchNormalization in a model that normalizes the others."""

from __future__ import annotations

from bnfold.fold.analysis import node_label
from bnfold.lint.blocks import BN, activation_after, is_bias_add, is_layer
from bnfold.lint.context import SOFTMAX, LintContext, downstream, is_op, reaches_graph_output
from bnfold.lint.finding import WARNING, RuleInfo

RULE = RuleInfo("BN003", "missing-batchnorm", WARNING,
                "a linear layer -> activation block has no BatchNormalization, unlike the model's other blocks")


def _normalized(ctx: LintContext, layer) -> bool | None:
    """True/False for a block, None when `layer` heads no linear -> activation block or is the output head."""
    value = layer.outputs[0]
    consumers = downstream(value)
    if any(is_bias_add(n, ctx.consts) for n in consumers):
        value = next(n for n in consumers if is_bias_add(n, ctx.consts)).outputs[0]
        consumers = downstream(value)
    if any(is_op(n, BN) for n in consumers):
        return True
    activations = activation_after(layer, ctx.consts)
    if not activations or reaches_graph_output(value):
        return None
    if any(is_op(a, SOFTMAX) or reaches_graph_output(a.outputs[0]) for a in activations):
        return None  # the output head: BN002's territory
    return any(is_op(n, BN) for a in activations for n in downstream(a.outputs[0]))


def check(ctx: LintContext):
    if not ctx.batchnorms:
        return
    blocks = [(graph, node, _normalized(ctx, node)) for graph, node in ctx.nodes() if is_layer(node, ctx.consts)]
    blocks = [b for b in blocks if b[2] is not None]
    normalized = sum(1 for b in blocks if b[2])
    if not blocks or normalized / len(blocks) < ctx.options.min_normalized_fraction:
        return
    for graph, layer, is_normalized in blocks:
        if not is_normalized:
            activation = activation_after(layer, ctx.consts)[0]
            yield ctx.finding(
                RULE, graph, layer,
                f"{layer.op_type} '{node_label(layer)}' -> {activation.op_type} '{node_label(activation)}' has no "
                f"BatchNormalization, while {normalized} of the model's {len(blocks)} blocks have one",
                "add BatchNormalization between the layer and its activation (and drop the layer's bias)",
            )

"""BN003: a linear -> activation block with no BatchNormalization in a model that normalizes the others.

Only blocks of the model's normalized trunk are compared. Not counted, because models leave them without BN
by design: blocks after the last BatchNormalization on their path (SSD heads and extra layers, classifier
heads), blocks on globally pooled features (squeeze-and-excitation gates, pooled MLP heads), and output heads
(BN002's side). A layer whose BN the exporter merged into it (tf2onnx's `..._fused_bn` weights) or wrote as
Mul/Add counts as normalized."""

from __future__ import annotations

from bnfold.lint.blocks import BN, activation_after, is_bias_add, is_layer, merged_batchnorm
from bnfold.lint.context import ACTIVATIONS, LAYOUT_NEUTRAL, SOFTMAX, LintContext, downstream, is_op, \
    reaches_graph_output
from bnfold.lint.finding import WARNING, RuleInfo

RULE = RuleInfo("BN003", "missing-batchnorm", WARNING,
                "a linear layer -> activation block has no BatchNormalization, unlike the model's other blocks")

# Normalized blocks the model must have before an unnormalized one is worth a finding
MIN_NORMALIZED = 2
GLOBAL_POOLS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax"})
def _swish_input(node) -> object | None:
    """x for Mul(x, Sigmoid(x)) (either order), else None."""
    if not is_op(node, frozenset({"Mul"})) or len(node.inputs) != 2:
        return None
    for x, gate in (node.inputs, node.inputs[::-1]):
        producer = gate.producer() if gate is not None else None
        if is_op(producer, frozenset({"Sigmoid"})) and producer.inputs and producer.inputs[0] is x:
            return x
    return None


def _pooled(ctx: LintContext, layer) -> bool:
    """Whether the layer reads globally pooled features: up a chain of single-input ops (layout, activation,
    linear layers and their bias) to a global pool, as squeeze-and-excitation gates and pooled heads do."""
    value, seen = layer.inputs[0], 0
    while value is not None and seen < 64:
        node, seen = value.producer(), seen + 1
        if node is None:
            return False
        if is_op(node, GLOBAL_POOLS):
            return True
        gated = _swish_input(node)
        if gated is not None:  # x * sigmoid(x), how PyTorch exports SiLU: an activation like any other
            value = gated
            continue
        if not (is_op(node, LAYOUT_NEUTRAL | ACTIVATIONS) or is_layer(node, ctx.consts)
                or is_bias_add(node, ctx.consts)) or not node.inputs:
            return False
        value = node.inputs[0] if not is_bias_add(node, ctx.consts) else next(
            v for v in node.inputs if ctx.consts.resolve(v) is None)
    return False


def _feeds_batchnorm(ctx: LintContext) -> set[int]:
    """ids of the nodes some BatchNormalization (any form) depends on."""
    seen: set[int] = set()
    stack = [bn.input.producer() for bn in ctx.batchnorm_forms]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(v.producer() for v in node.inputs if v is not None)
    return seen


def _placement(ctx: LintContext, layer, bn_heads: set[int]) -> str | None:
    """'before' / 'after' the activation for a normalized block, 'none' for an unnormalized one, None when
    `layer` heads no comparable block."""
    if merged_batchnorm(layer):
        return "before"
    value = layer.outputs[0]
    consumers = downstream(value)
    if any(is_bias_add(n, ctx.consts) for n in consumers):
        value = next(n for n in consumers if is_bias_add(n, ctx.consts)).outputs[0]
        consumers = downstream(value)
    if any(is_op(n, BN) or id(n) in bn_heads for n in consumers):
        return "before"
    activations = activation_after(layer, ctx.consts)
    if not activations or reaches_graph_output(value):
        return None
    if any(is_op(a, SOFTMAX) or reaches_graph_output(a.outputs[0]) for a in activations):
        return None  # the output head: BN002's territory
    if any(is_op(n, BN) or id(n) in bn_heads for a in activations for n in downstream(a.outputs[0])):
        return "after"
    return "none"


def check(ctx: LintContext):
    if not ctx.batchnorm_forms:
        return
    bn_heads = {id(bn.node) for bn in ctx.batchnorm_forms if bn.decomposed}
    trunk = _feeds_batchnorm(ctx)
    blocks = []
    for graph, node in ctx.nodes():
        if not is_layer(node, ctx.consts):
            continue
        where = _placement(ctx, node, bn_heads)
        if where is None or (where == "none" and (id(node) not in trunk or _pooled(ctx, node))):
            continue
        blocks.append((graph, node, where))
    normalized = [where for _, _, where in blocks if where != "none"]
    if len(normalized) < MIN_NORMALIZED or len(normalized) / len(blocks) < ctx.options.min_normalized_fraction:
        return
    after = normalized.count("after") > len(normalized) / 2
    for graph, layer, where in blocks:
        if where == "none":
            activation = activation_after(layer, ctx.consts)[0]
            yield ctx.finding(
                RULE, graph, layer,
                f"{ctx.layer_label(layer)} -> {ctx.layer_label(activation)} has no "
                f"BatchNormalization, while {len(normalized)} of the model's {len(blocks)} comparable blocks have "
                "one (not counted: SE gates, heads, blocks after the last BatchNormalization)",
                "add BatchNormalization after the activation, as the model's other blocks have it" if after else
                "add BatchNormalization between the layer and its activation (and drop the layer's bias)",
            )

"""BN001: a bias right before BatchNormalization does nothing: BN subtracts the mean, beta is the bias."""

from __future__ import annotations

from bnfold.fold.analysis import node_label
from bnfold.lint.blocks import is_bias_add, is_layer
from bnfold.lint.context import LintContext, is_op, upstream
from bnfold.lint.finding import WARNING, RuleInfo
from bnfold.lint.forms import BatchNorm

RULE = RuleInfo("BN001", "redundant-bias-before-batchnorm", WARNING,
                "a linear layer's bias feeds BatchNormalization with no nonlinearity between")


FIXES = {
    "pytorch": "build the layer with bias=False (nn.Conv2d/nn.Linear(..., bias=False))",
    "tensorflow": "build the Keras layer with use_bias=False",
    "paddle": "build the layer with bias_attr=False",
    None: "drop the bias (Keras: use_bias=False; PyTorch: bias=False)",
}


def _stored_bias(ctx: LintContext, node) -> bool:
    """Whether the op has a bias the model author chose. PyTorch's dynamo exporter gives every bias=False Conv
    a computed all-zero bias (Expand(CastLike(0, x), ...)): that one is not a parameter and not a finding."""
    if len(node.inputs) < 3 or node.inputs[2] is None:
        return False
    bias = node.inputs[2]
    producer = bias.producer()
    if producer is None or producer.op_type == "Constant":
        return True
    value = ctx.consts.array(bias)
    return value is None or bool(value.any())


def _bias_owner(ctx: LintContext, bn: BatchNorm):
    """(node with the bias, what the bias is) for the linear op right before `bn`, or None."""
    node = upstream(bn.input, exclusive=True)
    if is_op(node, frozenset({"Conv", "ConvTranspose"})) and _stored_bias(ctx, node):
        return node, "bias B"
    if is_op(node, frozenset({"Gemm"})) and _stored_bias(ctx, node):
        beta = node.attributes.get("beta")
        return None if beta is not None and beta.value == 0 else (node, "bias C")
    if is_bias_add(node, ctx.consts):
        data = next(v for v in node.inputs if ctx.consts.resolve(v) is None)
        if len(data.uses()) == 1 and not data.is_graph_output() and is_layer(data.producer(), ctx.consts):
            return data.producer(), f"bias Add '{node_label(node)}'"
    return None


def check(ctx: LintContext):
    for bn in ctx.batchnorm_forms:
        owner = _bias_owner(ctx, bn)
        if owner is None:
            continue
        layer, what = owner
        if ctx.from_keras:
            what, fix = "bias", f"set use_bias=False on {ctx.layer_label(layer)}"
        else:
            fix = FIXES[ctx.framework] + "; `bnfold fold` also removes it"
        yield ctx.finding(
            RULE, bn.graph, layer,
            f"{ctx.layer_label(layer)} has a {what} that {ctx.bn_label(bn)} cancels: BN subtracts the batch "
            "mean, so its beta already plays the bias",
            fix,
        )

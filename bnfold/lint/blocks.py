"""Linear -> (BN) -> activation blocks, shared by the placement rules BN003 and BN004."""

from __future__ import annotations

import onnx_ir as ir

from bnfold.fold.constants import ConstantResolver
from bnfold.lint.context import ACTIVATIONS, LINEAR, downstream, is_op, upstream

BN = frozenset({"BatchNormalization"})
# Names tf2onnx gives the weights and outputs of a layer TensorFlow merged a BN into (tf_keras:
# `..._fused_bn`, a FusedBatchNorm output; Keras 3: a bias from the BN's `batchnorm/sub`)
MERGED_MARKS = ("fused_bn", "fusedbatchnorm", "/batchnorm/")


def merged_batchnorm(layer: ir.Node) -> bool:
    """Whether an exporter demonstrably merged a BatchNormalization into this linear layer."""
    names = [v.name or "" for v in layer.inputs[1:] if v is not None] + [layer.outputs[0].name or ""]
    return any(mark in name.lower() for name in names for mark in MERGED_MARKS)


def is_bias_add(node: ir.Node | None, consts: ConstantResolver) -> bool:
    """An Add of a constant to a linear op's output: the op's bias, as MatMul+Add or Keras exports write it."""
    if not is_op(node, frozenset({"Add"})) or len(node.inputs) != 2:
        return False
    constant = [consts.resolve(v) is not None for v in node.inputs]
    return constant.count(True) == 1


def is_layer(node: ir.Node | None, consts: ConstantResolver) -> bool:
    """A linear layer: Conv/ConvTranspose/Gemm/MatMul with a constant weight (not an attention MatMul)."""
    return is_op(node, LINEAR) and len(node.inputs) > 1 and consts.resolve(node.inputs[1]) is not None


def linear_source(value: ir.Value, consts: ConstantResolver) -> ir.Node | None:
    """The linear layer that produced `value`, looking through layout-neutral ops and one bias Add."""
    node = upstream(value)
    if is_bias_add(node, consts):
        data = next(v for v in node.inputs if consts.resolve(v) is None)
        node = upstream(data)
    return node if is_layer(node, consts) else None


def activation_after(node: ir.Node, consts: ConstantResolver) -> list[ir.Node]:
    """The activations that directly follow a linear layer's output (through its bias Add, if any)."""
    found = []
    for consumer in downstream(node.outputs[0]):
        if is_bias_add(consumer, consts):
            found.extend(n for n in downstream(consumer.outputs[0]) if is_op(n, ACTIVATIONS))
        elif is_op(consumer, ACTIVATIONS):
            found.append(consumer)
    return found


def placement(bn, consts: ConstantResolver) -> str | None:
    """'before' (linear -> BN -> activation), 'after' (linear -> activation -> BN), or None, for a
    bnfold.lint.forms.BatchNorm (a node, or the Mul/Add TensorFlow decomposed it into)."""
    source = upstream(bn.input)
    if linear_source(bn.input, consts) is not None and any(is_op(n, ACTIVATIONS) for n in downstream(bn.output)):
        return "before"
    if is_op(source, ACTIVATIONS) and source.inputs and source.inputs[0] is not None \
            and linear_source(source.inputs[0], consts) is not None:
        return "after"
    return None

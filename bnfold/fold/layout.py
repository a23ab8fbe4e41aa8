"""Ops a fold looks through without changing what each channel holds: Identity and inference Dropout
always, Reshape and Transpose while the channel axis can be followed element for element."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from bnfold.fold import result as R
from bnfold.fold.affine import Refusal
from bnfold.fold.partners import Layout
from bnfold.fold.shapes import ShapeOracle


def is_op(node: ir.Node | None, ops: tuple[str, ...]) -> bool:
    return node is not None and node.domain in ("", "ai.onnx") and node.op_type in ops and bool(node.inputs)


def reshaped_axis(before: tuple[int, ...] | None, after: tuple[int, ...] | None, axis: int) -> int:
    """The axis of `before` whose elements are exactly those of `axis` of `after`, or a Refusal: the axis must
    keep its size and everything before it must hold the same number of elements."""
    if before is None or after is None:
        raise Refusal(R.UNKNOWN_SHAPE, "a Reshape's shapes are not known statically")
    leading = int(np.prod(after[:axis], dtype=np.int64))
    for candidate in range(len(before)):
        if before[candidate] == after[axis] and int(np.prod(before[:candidate], dtype=np.int64)) == leading:
            return candidate
    raise Refusal(R.CHANNEL_AXIS_MISMATCH, f"Reshape {list(before)} -> {list(after)} mixes the channel axis "
                  "with others")


def is_identity(node: ir.Node | None) -> bool:
    """Identity, or a Dropout that is the identity: inference mode and its mask output unused."""
    if node is None or node.domain not in ("", "ai.onnx") or not node.inputs or node.inputs[0] is None:
        return False
    if node.op_type == "Identity":
        return True
    if node.op_type != "Dropout" or any(out.uses() or out.is_graph_output() for out in node.outputs[1:]):
        return False
    training = node.inputs[2] if len(node.inputs) > 2 else None
    return training is None or (training.const_value is not None and not training.const_value.numpy().any())


def follow_channels(shapes: ShapeOracle, data: ir.Value, moved: list[ir.Node], partner_layout: Layout) -> Layout:
    """The chain's layout when Reshape/Transpose sit between it and the partner: axis 1 of the chain's
    tensor must be, element for element, the partner's channel axis."""
    shape = shapes.static_shape(data)
    if shape is None or len(shape) < 2:
        raise Refusal(R.UNKNOWN_SHAPE, "the shape between the linear op and the chain is not known")
    axis, value = 1, data
    for node in moved:
        if node.op_type == "Transpose":
            perm = node.attributes.get("perm")
            rank = len(shapes.static_shape(value) or ())
            axis = list(perm.value)[axis] if perm is not None else rank - 1 - axis
        elif node.op_type == "Reshape":
            axis = reshaped_axis(shapes.static_shape(node.inputs[0]), shapes.static_shape(value), axis)
        value = node.inputs[0]
    rank = partner_layout.rank
    if rank is None or axis != partner_layout.axis % rank or shape[1] != partner_layout.channels:
        raise Refusal(R.CHANNEL_AXIS_MISMATCH, f"after {', '.join(n.op_type for n in moved)}, axis 1 of "
                      "the normalized tensor is not the linear op's channel axis")
    return Layout(len(shape), 1, shape[1])

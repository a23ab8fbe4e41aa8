"""Resolve a value to a constant array: an initializer, or the result of a constant-only subgraph.

PyTorch's dynamo exporter computes Conv biases with Expand and the onnx wheel's `light_*` models build
their weights with ConstantOfShape, so "constant" has to mean more than "initializer". Only ops with no
randomness and no dependence on graph inputs are evaluated here.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from bnfold.validate import MATERIALIZE_LIMIT


class Const:
    """A constant value. An initializer's array is read on each access and never kept: a 100 MB model must
    not hold a second copy of its weights while it is analysed."""

    __slots__ = ("_array", "_tensor", "overridable")

    def __init__(self, overridable: bool, *, array: np.ndarray | None = None, tensor=None) -> None:
        self._array = array
        self._tensor = tensor
        # An initializer that is also a graph input can be overridden at run time (IR >= 4).
        self.overridable = overridable

    @property
    def array(self) -> np.ndarray:
        return self._array if self._array is not None else self._tensor.numpy()

    def release(self) -> None:
        """Unmap an external tensor's file once it has been read, so its pages leave this process's RSS."""
        if isinstance(self._tensor, ir.ExternalTensor):
            self._tensor.release()

    @property
    def shape(self) -> tuple[int, ...]:
        return self._array.shape if self._array is not None else tuple(self._tensor.shape)

    @property
    def dtype(self) -> ir.DataType:
        return ir.DataType.from_numpy(self._array.dtype) if self._array is not None else self._tensor.dtype


def _attr(node: ir.Node, name: str, default=None):
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


def _constant(node: ir.Node, _inputs: list[np.ndarray]) -> np.ndarray:
    for name, dtype in (("value_float", np.float32), ("value_int", np.int64),
                        ("value_floats", np.float32), ("value_ints", np.int64)):
        value = _attr(node, name)
        if value is not None:
            return np.asarray(value, dtype=dtype)
    tensor = _attr(node, "value")
    if tensor is None:
        raise ValueError("Constant without a supported value attribute")
    return tensor.numpy()


def _within_budget(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    """`shape`, or ValueError (the value stays non-constant) when it is negative or too big to make."""
    if any(d < 0 for d in shape) or math.prod(shape) * dtype.itemsize > MATERIALIZE_LIMIT:
        raise ValueError(f"a constant of shape {list(shape)} is not evaluated")
    return shape


def _constant_of_shape(node: ir.Node, inputs: list[np.ndarray]) -> np.ndarray:
    tensor = _attr(node, "value")
    fill = np.zeros((), np.float32) if tensor is None else tensor.numpy().reshape(())
    return np.full(_within_budget(tuple(int(d) for d in inputs[0]), fill.dtype), fill, dtype=fill.dtype)


def _cast(node: ir.Node, inputs: list[np.ndarray]) -> np.ndarray:
    return inputs[0].astype(ir.DataType(_attr(node, "to")).numpy())


def _reshape(node: ir.Node, inputs: list[np.ndarray]) -> np.ndarray:
    data, shape = inputs[0], [int(d) for d in inputs[1]]
    if not _attr(node, "allowzero", 0):
        shape = [data.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return data.reshape(shape)


def _axes(node: ir.Node, inputs: list[np.ndarray]) -> list[int] | None:
    if len(inputs) > 1:
        return [int(a) for a in inputs[1]]
    axes = _attr(node, "axes")
    return None if axes is None else list(axes)


def _unsqueeze(node: ir.Node, inputs: list[np.ndarray]) -> np.ndarray:
    return np.expand_dims(inputs[0], tuple(_axes(node, inputs)))


def _squeeze(node: ir.Node, inputs: list[np.ndarray]) -> np.ndarray:
    axes = _axes(node, inputs)
    return np.squeeze(inputs[0], None if axes is None else tuple(axes))


def _expand(_node: ir.Node, inputs: list[np.ndarray]) -> np.ndarray:
    data, shape = inputs
    target = _within_budget(np.broadcast_shapes(data.shape, tuple(int(d) for d in shape)), data.dtype)
    return np.broadcast_to(data, target).copy()


_EVALUATORS = {
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Cast": _cast,
    "Reshape": _reshape,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Expand": _expand,
    "Identity": lambda node, inputs: inputs[0],
}


class ConstantResolver:
    """Evaluates and caches constants; one resolver per analysis run."""

    def __init__(self, ir_version: int, shapes=None) -> None:
        self._cache: dict[int, Const | None] = {}
        # A ShapeOracle, for the shape/dtype of run-time tensors that Shape/CastLike read (may be None).
        self._shapes = shapes
        # Before IR 4 every initializer had to be listed as an input: that says nothing about intent.
        self._inputs_override = ir_version >= 4

    def resolve(self, value: ir.Value | None) -> Const | None:
        if value is None:
            return None
        key = id(value)
        if key not in self._cache:
            try:
                self._cache[key] = self._compute(value)
            except RecursionError:  # a chain of constant ops deeper than Python's stack: left as computed
                self._cache[key] = None
        return self._cache[key]

    def array(self, value: ir.Value | None) -> np.ndarray | None:
        const = self.resolve(value)
        return None if const is None else const.array

    def _compute(self, value: ir.Value) -> Const | None:
        if value.const_value is not None:
            return Const(self._inputs_override and value.is_graph_input(), tensor=value.const_value)
        if value.is_graph_input():
            return None
        node = value.producer()
        if node is None or node.domain not in ("", "ai.onnx"):
            return None
        if node.op_type in _METADATA_OPS:
            return self._from_metadata(node)
        if node.op_type not in _EVALUATORS:
            return None
        inputs = [self.resolve(v) for v in node.inputs if v is not None]
        if any(c is None for c in inputs):
            return None
        try:
            array = _EVALUATORS[node.op_type](node, [c.array for c in inputs])
        except (ValueError, TypeError, IndexError, RuntimeError, OverflowError):  # numpy's refusals, e.g. > 32 dims
            return None
        return Const(any(c.overridable for c in inputs), array=np.asarray(array))

    def _from_metadata(self, node: ir.Node) -> Const | None:
        """Shape and CastLike read only a shape or a dtype from one input, so that input may be a run-time
        tensor (PyTorch's dynamo exporter builds Conv biases as Expand(CastLike(0, x), Shape(weight)))."""
        if node.op_type == "Shape":
            source = node.inputs[0]
            const = self.resolve(source)
            if const is not None:
                shape = const.shape
            else:
                shape = self._shapes.static_shape(source) if self._shapes is not None else source.shape
            if shape is None or not all(isinstance(d, int) for d in shape):
                return None
            start, end = _attr(node, "start", 0), _attr(node, "end", None)
            return Const(False, array=np.asarray(tuple(shape)[start:end], dtype=np.int64))
        data = self.resolve(node.inputs[0])
        like = None
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            target = node.inputs[1]
            like = self._shapes.dtype(target) if self._shapes is not None else target.dtype
        if data is None or like is None:
            return None
        return Const(data.overridable, array=data.array.astype(like.numpy()))


# Ops whose result depends on an input's shape or dtype only, never on its values.
_METADATA_OPS = frozenset({"Shape", "CastLike"})

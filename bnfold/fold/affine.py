"""Per-channel affine ops: y = s * x + t along one channel axis.

A BatchNormalization in inference mode is one; so is a Mul/Add/Sub/Div by a constant whose broadcast
shape varies only along the channel axis (how TF/Keras exporters leave BN behind). Everything the folder
does is composing these and pushing the result into a neighbouring linear op.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from bnfold.fold import result as R
from bnfold.fold.constants import ConstantResolver

FLOAT_TYPES = frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE})
ELEMENTWISE = frozenset({"Mul", "Add", "Sub", "Div"})


class Refusal(Exception):
    """A fold that must not happen, with its reason code and a human detail."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or R.REASONS[reason])
        self.reason = reason
        self.detail = detail or R.REASONS[reason]


@dataclass
class Affine:
    """One affine op. `s`/`t` are float64 and broadcast against the channel layout they are mapped to."""

    node: ir.Node
    data_index: int
    s: np.ndarray
    t: np.ndarray
    # BN normalizes axis 1 of its input; an elementwise op carries its constant's own broadcast shape.
    is_bn: bool
    overridable: bool

    @property
    def data(self) -> ir.Value:
        return self.node.inputs[self.data_index]

    @property
    def output(self) -> ir.Value:
        return self.node.outputs[0]

    def per_channel(self, rank: int | None, axis: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """(s, t) as vectors of length `channels` when this op acts along `axis` of a rank-`rank` tensor."""
        if self.is_bn:
            if rank is None:
                raise Refusal(R.UNKNOWN_SHAPE, "the rank of the BatchNormalization input is not known")
            if axis != 1:
                raise Refusal(R.CHANNEL_AXIS_MISMATCH,
                              f"BatchNormalization normalizes axis 1 but the partner's channels are axis {axis} "
                              f"of a rank-{rank} tensor")
            if self.s.size != channels:
                raise Refusal(R.CHANNEL_AXIS_MISMATCH,
                              f"BatchNormalization has {self.s.size} channels, the partner {channels}")
            return self.s.reshape(-1), self.t.reshape(-1)
        return _vector(self.s, rank, axis, channels), _vector(self.t, rank, axis, channels)


def _vector(const: np.ndarray, rank: int | None, axis: int, channels: int) -> np.ndarray:
    """Map a broadcast constant to a per-channel vector, or refuse if it varies along any other axis."""
    shape = const.shape
    if rank is None:
        # Without the data rank only a 0-D/1-D constant is unambiguous: it aligns with the last axis.
        if const.ndim <= 1 and (const.size == 1 or (axis == -1 and shape[0] == channels)):
            return np.broadcast_to(const.reshape(-1), (channels,)).astype(np.float64)
        raise Refusal(R.UNKNOWN_SHAPE, f"cannot place a constant of shape {list(shape)} without the data rank")
    if const.size == 1 and const.ndim <= rank:
        return np.full(channels, const.reshape(()), dtype=np.float64)
    if const.ndim > rank:
        raise Refusal(R.CHANNEL_AXIS_MISMATCH, f"a constant of shape {list(shape)} raises the rank of the data")
    padded = (1,) * (rank - const.ndim) + shape
    axis %= rank
    if any(d != 1 for i, d in enumerate(padded) if i != axis) or padded[axis] != channels:
        raise Refusal(R.CHANNEL_AXIS_MISMATCH,
                      f"a constant of shape {list(shape)} broadcasts along other axes than the channel axis "
                      f"{axis} of a rank-{rank} tensor with {channels} channels")
    return const.reshape(-1).astype(np.float64)


def compose(affines: list[tuple[np.ndarray, np.ndarray]], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Compose per-channel affines applied in order: (s2, t2) after (s1, t1) is (s2*s1, s2*t1 + t2)."""
    s = np.ones(channels, np.float64)
    t = np.zeros(channels, np.float64)
    for si, ti in affines:
        s, t = si * s, si * t + ti
    return s, t


def batchnorm_training(node: ir.Node) -> bool:
    attr = node.attributes.get("training_mode")
    if attr is not None and attr.value:
        return True
    return any(out.uses() or out.is_graph_output() for out in node.outputs[1:])


def as_affine(node: ir.Node, consts: ConstantResolver) -> Affine | None:
    """The node as an affine op, or None if it is not one (a Mul of two activations, say).

    Raises Refusal for a BatchNormalization that exists but cannot be folded on its own merits.
    """
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "BatchNormalization":
        return _batchnorm(node, consts)
    if node.op_type in ELEMENTWISE and len(node.inputs) == 2:
        return _elementwise(node, consts)
    return None


def _batchnorm(node: ir.Node, consts: ConstantResolver) -> Affine:
    if batchnorm_training(node):
        raise Refusal(R.TRAINING_MODE)
    x = node.inputs[0]
    if x.dtype is not None and x.dtype not in FLOAT_TYPES:
        raise Refusal(R.UNSUPPORTED_DTYPE, f"BatchNormalization input dtype {x.dtype} is not a float type")
    params = [consts.resolve(v) for v in node.inputs[1:5]]
    if len(params) < 4 or any(p is None for p in params):
        raise Refusal(R.NON_CONSTANT_PARAMETERS,
                      "scale, B, mean or var is computed at run time (a graph input or an input-dependent op)")
    eps = bn_epsilon(node)
    _check_batchnorm_parameters(node, params)
    gamma, beta, mean, var = (p.array.astype(np.float64).reshape(-1) for p in params)
    bad = [f"{int((~np.isfinite(a)).sum())} non-finite {name}" for name, a in
           (("scale", gamma), ("B", beta), ("mean", mean), ("var", var)) if not np.isfinite(a).all()]
    if (var + eps <= 0).any():
        bad.append(f"var + epsilon <= 0 in {int((var + eps <= 0).sum())} channel(s) (min var {np.nanmin(var):g})")
    if bad:
        # the model itself outputs NaN there: worth a gate (--fail-on-skip degenerate-statistics), see BN008
        raise Refusal(R.DEGENERATE_STATISTICS, "; ".join(bad) + ": the model's output is not finite in those channels")
    s = gamma / np.sqrt(var + eps)
    return Affine(node, 0, s, beta - mean * s, True, any(p.overridable for p in params))


def _check_batchnorm_parameters(node: ir.Node, params: list) -> None:
    """Four 1-D float vectors of one length C, and C the input's channels where its shape says so."""
    names = ("scale", "B", "mean", "var")
    for name, p in zip(names, params):
        if p.dtype not in FLOAT_TYPES or len(p.shape) != 1:
            raise Refusal(R.MALFORMED, f"{name} is a {p.dtype} tensor of shape {list(p.shape)}, not a vector of "
                          "floats")
    lengths = {p.shape[0] for p in params}
    if len(lengths) > 1:
        raise Refusal(R.MALFORMED, "scale, B, mean and var differ in length ("
                      + ", ".join(f"{n} {p.shape[0]}" for n, p in zip(names, params)) + ")")
    shape = node.inputs[0].shape
    channels = shape[1] if shape is not None and len(shape) > 1 else None
    if isinstance(channels, int) and channels != params[0].shape[0]:
        raise Refusal(R.MALFORMED, f"the input has {channels} channels and the parameters {params[0].shape[0]}")


def _elementwise(node: ir.Node, consts: ConstantResolver) -> Affine | None:
    a, b = (consts.resolve(v) for v in node.inputs)
    if (a is None) == (b is None):
        return None
    data_index = 0 if a is None else 1
    const = b if a is None else a
    x = node.inputs[data_index]
    if x.dtype is not None and x.dtype not in FLOAT_TYPES:
        return None
    c = const.array.astype(np.float64)
    if not np.isfinite(c).all():
        return None
    one, zero = np.ones_like(c), np.zeros_like(c)
    op = node.op_type
    if op == "Mul":
        s, t = c, zero
    elif op == "Add":
        s, t = one, c
    elif op == "Sub":
        s, t = (one, -c) if data_index == 0 else (-one, c)
    elif data_index == 0 and (c != 0).all():
        s, t = 1.0 / c, zero
    else:
        return None
    return Affine(node, data_index, s, t, False, const.overridable)


def bn_epsilon(node: ir.Node) -> float:
    """BatchNormalization's epsilon as runtimes use it: a 32-bit float attribute, whose default is the float32
    nearest 1e-5 (9.99999975e-06). Taking the decimal 1e-5 instead shifts a float64 fold by 2e-13."""
    attr = node.attributes.get("epsilon")
    return float(np.float32(1e-5)) if attr is None else float(attr.value)

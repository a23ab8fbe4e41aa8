"""The linear ops that absorb an affine: how their channels are laid out and how their weights change.

Backward (affine after the op): scale the weight along its output channels, s * b + t into the bias.
Forward (affine before the op): scale the weight along its input channels, W @ t into the bias — exact only
where every output sees every input position, which is why a padded Conv is refused.

A Partner keeps float64 working copies of its weight and bias: several folds may land on one op (a BN
forward into a Conv and another BN backward into the same Conv), each applied to the previous result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import ml_dtypes
import numpy as np
import onnx_ir as ir

from bnfold.fold import result as R
from bnfold.fold.affine import FLOAT_TYPES, Refusal
from bnfold.fold.constants import ConstantResolver

LINEAR_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def _attr(node: ir.Node, name: str, default):
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


@dataclass
class Layout:
    """Where the channels are in the tensor the affine acts on: `axis` of a rank-`rank` tensor."""

    rank: int | None
    axis: int
    channels: int


@dataclass
class Partner:
    node: ir.Node
    weight: np.ndarray
    # Conv/ConvTranspose B, Gemm C (as beta * C), or the bias added after a MatMul; None when absent.
    bias: np.ndarray | None
    dtype: ir.DataType
    overridable: bool
    # MatMul only: the rank of its data input and of its output (its channels are the last axis).
    ranks: tuple[int | None, int | None] = (None, None)
    touched: bool = False
    overflow_detail: str = ""
    original: tuple = field(default=(), repr=False)

    @property
    def op(self) -> str:
        return self.node.op_type

    @property
    def group(self) -> int:
        return int(_attr(self.node, "group", 1))

    def output_layout(self) -> Layout:
        w = self.weight
        if self.op == "Conv":
            return Layout(w.ndim, 1, w.shape[0])
        if self.op == "ConvTranspose":
            return Layout(w.ndim, 1, w.shape[1] * self.group)
        if self.op == "Gemm":
            return Layout(2, 1, w.shape[0] if _attr(self.node, "transB", 0) else w.shape[1])
        rank = self.ranks[1]
        return Layout(rank, -1 if rank is None else rank - 1, w.shape[1])

    def input_layout(self) -> Layout:
        w = self.weight
        if self.op == "Conv":
            return Layout(w.ndim, 1, w.shape[1] * self.group)
        if self.op == "Gemm":
            if _attr(self.node, "transA", 0):
                raise Refusal(R.CHANNEL_AXIS_MISMATCH, "Gemm with transA=1 reads its features from axis 0")
            return Layout(2, 1, w.shape[1] if _attr(self.node, "transB", 0) else w.shape[0])
        if self.op == "MatMul":
            rank = self.ranks[0]
            return Layout(rank, -1 if rank is None else rank - 1, w.shape[0])
        raise Refusal(R.UNSUPPORTED_PARTNER,
                      f"{self.op} spreads each input over a position-dependent number of outputs")

    def check_forward(self) -> None:
        if self.op != "Conv":
            return
        pads = _attr(self.node, "pads", None) or []
        auto_pad = _attr(self.node, "auto_pad", "NOTSET")
        if isinstance(auto_pad, bytes):
            auto_pad = auto_pad.decode()
        if any(pads) or auto_pad not in ("NOTSET", "VALID"):
            raise Refusal(R.PADDING_FORWARD, f"Conv '{self.node.name}' pads its input "
                          f"(pads={list(pads)}, auto_pad={auto_pad})")

    def snapshot(self) -> tuple:
        return (self.weight.copy(), None if self.bias is None else self.bias.copy(), self.touched)

    def restore(self, state: tuple) -> None:
        self.weight, self.bias, self.touched = state

    def fold_backward(self, s: np.ndarray, t: np.ndarray) -> None:
        """Apply y' = s * y + t, s and t along the output channels."""
        w = self.weight
        if self.op == "Conv":
            self.weight = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
        elif self.op == "ConvTranspose":
            cin, cout_g = w.shape[0], w.shape[1]
            group_of_row = np.arange(cin) // (cin // self.group)
            scale = s.reshape(self.group, cout_g)[group_of_row]
            self.weight = w * scale.reshape(scale.shape + (1,) * (w.ndim - 2))
        elif self.op == "Gemm" and _attr(self.node, "transB", 0):
            self.weight = w * s[:, None]
        else:
            self.weight = w * s[None, :]
        self.bias = t if self.bias is None else self.bias * s + t
        self.touched = True

    def fold_forward(self, s: np.ndarray, t: np.ndarray) -> None:
        """Absorb x' = s * x + t applied to the input, s and t along the input channels."""
        w = self.weight
        if self.op == "Conv":
            cout, cin_g = w.shape[0], w.shape[1]
            group_of_row = np.arange(cout) // (cout // self.group)
            s_in = s.reshape(self.group, cin_g)[group_of_row]
            t_in = t.reshape(self.group, cin_g)[group_of_row]
            extra = (1,) * (w.ndim - 2)
            shift = (w * t_in.reshape(t_in.shape + extra)).sum(axis=tuple(range(1, w.ndim)))
            self.weight = w * s_in.reshape(s_in.shape + extra)
        elif self.op == "Gemm":
            trans_b = _attr(self.node, "transB", 0)
            b = w.T if trans_b else w
            shift = _attr(self.node, "alpha", 1.0) * (t @ b)
            self.weight = w * (s[None, :] if trans_b else s[:, None])
        else:
            shift = t @ w
            self.weight = w * s[:, None]
        self.bias = shift if self.bias is None else self.bias + shift
        self.touched = True

    def overflow(self) -> str | None:
        limit = float(ml_dtypes.finfo(self.dtype.numpy()).max)
        for name, arr in (("weight", self.weight), ("bias", self.bias)):
            if arr is not None and not (np.abs(arr) <= limit).all():
                return f"the folded {name} of '{self.node.name}' exceeds the {self.dtype.name} range ({limit:g})"
        return None


def make_partner(node: ir.Node, consts: ConstantResolver, rank_of: Callable[[ir.Value], int | None]) -> Partner:
    """The node as a fold partner, or a Refusal saying why its weights cannot be rewritten."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or op not in LINEAR_OPS:
        raise Refusal(R.UNSUPPORTED_PARTNER, f"{op} is not a linear op bnfold can rewrite")
    weight = consts.resolve(node.inputs[1] if len(node.inputs) > 1 else None)
    if weight is None:
        raise Refusal(R.NON_CONSTANT_PARAMETERS, f"the weight of {op} '{node.name}' is computed at run time")
    if op in ("MatMul", "Gemm") and weight.array.ndim != 2:
        raise Refusal(R.UNSUPPORTED_PARTNER, f"{op} '{node.name}' has a {weight.array.ndim}-D weight")
    dtype = ir.DataType.from_numpy(weight.array.dtype)
    if dtype not in FLOAT_TYPES:
        raise Refusal(R.UNSUPPORTED_DTYPE, f"{op} '{node.name}' has {dtype} weights")
    overridable = weight.overridable
    bias = None
    if op != "MatMul" and len(node.inputs) > 2 and node.inputs[2] is not None:
        b = consts.resolve(node.inputs[2])
        if b is None:
            raise Refusal(R.NON_CONSTANT_PARAMETERS, f"the bias of {op} '{node.name}' is computed at run time")
        overridable = overridable or b.overridable
        bias = b.array.astype(np.float64)
        if op == "Gemm":
            bias = bias * float(_attr(node, "beta", 1.0))
    ranks = (rank_of(node.inputs[0]), rank_of(node.outputs[0])) if op == "MatMul" else (None, None)
    partner = Partner(node, weight.array.astype(np.float64), bias, dtype, overridable, ranks)
    partner.original = partner.snapshot()
    return partner

"""The linear ops that absorb an affine: how their channels are laid out and how their weights change.

Backward (affine after the op): scale the weight along its output channels, s * b + t into the bias.
Forward (affine before the op): scale the weight along its input channels, W @ t into the bias — exact only
where every output sees every input position, which is why a padded Conv is refused.

A Partner keeps float64 working copies of its weight and bias: several folds may land on one op (a BN
forward into a Conv and another BN backward into the same Conv), each applied to the previous result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import reduce
from typing import Callable

import ml_dtypes
import numpy as np
import onnx_ir as ir

from bnfold.fold import result as R
from bnfold.fold.affine import FLOAT_TYPES, Refusal
from bnfold.fold.constants import Const, ConstantResolver

LINEAR_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def node_label(node: ir.Node) -> str:
    """How reports and decisions name a node: its name, else its first output's (PyTorch 1.x names none)."""
    return node.name or (node.outputs[0].name if node.outputs else "") or node.op_type


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
    weight: Const
    shape: tuple[int, ...]
    # Conv/ConvTranspose B, Gemm C (as beta * C), or the bias added after a MatMul; None when absent.
    bias: np.ndarray | None
    dtype: ir.DataType
    overridable: bool
    # MatMul only: the rank of its data input and of its output (its channels are the last axis).
    ranks: tuple[int | None, int | None] = (None, None)
    # Pending multiplications of the weight, in order: the weight itself is materialized only by weight64(),
    # one partner at a time, so folding a large model never holds a float64 copy of all its weights.
    scales: list[np.ndarray] = field(default_factory=list)
    # The same scales per BatchNormalization channel (1-D), for the range-growth figures (bnfold.fold.ranges).
    channel_scales: list[np.ndarray] = field(default_factory=list)
    # _folded_block_maxima() for as many scales as were pending when it ran (fp16 reductions are slow)
    _blocks: tuple[int, np.ndarray] | None = field(default=None, repr=False)

    @property
    def op(self) -> str:
        return self.node.op_type

    @property
    def touched(self) -> bool:
        return bool(self.scales)

    @property
    def group(self) -> int:
        return int(_attr(self.node, "group", 1))

    def output_layout(self) -> Layout:
        shape = self.shape
        if self.op == "Conv":
            return Layout(len(shape), 1, shape[0])
        if self.op == "ConvTranspose":
            return Layout(len(shape), 1, shape[1] * self.group)
        if self.op == "Gemm":
            return Layout(2, 1, shape[0] if _attr(self.node, "transB", 0) else shape[1])
        rank = self.ranks[1]
        return Layout(rank, -1 if rank is None else rank - 1, shape[1])

    def input_layout(self) -> Layout:
        shape = self.shape
        if self.op == "Conv":
            return Layout(len(shape), 1, shape[1] * self.group)
        if self.op == "Gemm":
            if _attr(self.node, "transA", 0):
                raise Refusal(R.CHANNEL_AXIS_MISMATCH, "Gemm with transA=1 reads its features from axis 0")
            return Layout(2, 1, shape[1] if _attr(self.node, "transB", 0) else shape[0])
        if self.op == "MatMul":
            rank = self.ranks[0]
            return Layout(rank, -1 if rank is None else rank - 1, shape[0])
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
            raise Refusal(R.PADDING_FORWARD, f"Conv '{node_label(self.node)}' pads its input "
                          f"(pads={list(pads)}, auto_pad={auto_pad})")

    def weight64(self) -> np.ndarray:
        """The folded weight so far, in float64 (a fresh array)."""
        weight = self.weight.array.astype(np.float64)
        for scale in self.scales:
            weight *= scale
        return weight

    def folded_weight(self) -> np.ndarray:
        """The folded weight in the weight's dtype: one float64 multiply by the combined per-channel scale,
        rounded once on the way out, with no full-size float64 temporary."""
        scale = self.scales[0]
        for more in self.scales[1:]:
            scale = scale * more
        out = np.empty(self.shape, dtype=self.dtype.numpy())
        with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes Inf; overflow() reports it
            return np.multiply(self.weight.array, scale, out=out, dtype=np.float64, casting="unsafe")

    def _folded_block_maxima(self) -> np.ndarray:
        """The largest |w * s| of each block of weights that share one combined scale (an output channel, or
        an output x input channel pair), in float64, without computing the folded weight: |s| times the
        block's largest |w|. NaN propagates."""
        if self._blocks is not None and self._blocks[0] == len(self.scales):
            return self._blocks[1]
        weight = self.weight.array
        combined = np.abs(reduce(np.multiply, self.scales))
        scale = combined.reshape((1,) * (weight.ndim - combined.ndim) + combined.shape)
        axes = tuple(k for k in range(weight.ndim) if scale.shape[k] == 1 and weight.shape[k] > 1)
        block = np.maximum(weight.max(axis=axes, keepdims=True).astype(np.float64),
                           -weight.min(axis=axes, keepdims=True).astype(np.float64))
        with np.errstate(over="ignore", invalid="ignore"):
            self._blocks = len(self.scales), scale * block
        return self._blocks[1]

    def folded_magnitude(self) -> float:
        """max |folded_weight()| without computing it: the same float64 product as the fold, rounded once to the
        weight's dtype (rounding is monotonic, so the largest block maximum rounds to the largest value)."""
        if self.weight.array.size == 0:
            return 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            return float(np.asarray(np.max(self._folded_block_maxima())).astype(self.dtype.numpy()))

    def _out_scale(self, s: np.ndarray) -> np.ndarray:
        """`s` along the output channels, shaped to broadcast against the weight."""
        shape = self.shape
        if self.op == "Conv":
            return s.reshape((-1,) + (1,) * (len(shape) - 1))
        if self.op == "ConvTranspose":
            cin, cout_g = shape[0], shape[1]
            scale = s.reshape(self.group, cout_g)[np.arange(cin) // (cin // self.group)]
            return scale.reshape(scale.shape + (1,) * (len(shape) - 2))
        if self.op == "Gemm" and _attr(self.node, "transB", 0):
            return s[:, None]
        return s[None, :]

    def _in_scale(self, s: np.ndarray) -> np.ndarray:
        """`s` along the input channels, shaped to broadcast against the weight."""
        shape = self.shape
        if self.op == "Conv":
            cout, cin_g = shape[0], shape[1]
            scale = s.reshape(self.group, cin_g)[np.arange(cout) // (cout // self.group)]
            return scale.reshape(scale.shape + (1,) * (len(shape) - 2))
        if self.op == "Gemm" and _attr(self.node, "transB", 0):
            return s[None, :]
        return s[:, None]

    def fold_backward(self, s: np.ndarray, t: np.ndarray) -> None:
        """Apply y' = s * y + t, s and t along the output channels."""
        self.scales.append(self._out_scale(s))
        self.channel_scales.append(s)
        self.bias = t if self.bias is None else self.bias * s + t

    def fold_forward(self, s: np.ndarray, t: np.ndarray) -> None:
        """Absorb x' = s * x + t applied to the input, s and t along the input channels."""
        w = self.weight64()
        if self.op == "Conv":
            shift = (w * self._in_scale(t)).sum(axis=tuple(range(1, w.ndim)))
        elif self.op == "Gemm":
            b = w.T if _attr(self.node, "transB", 0) else w
            shift = _attr(self.node, "alpha", 1.0) * (t @ b)
        else:
            shift = t @ w
        del w
        self.scales.append(self._in_scale(s))
        self.channel_scales.append(s)
        self.bias = shift if self.bias is None else self.bias + shift

    def overflow(self, magnitude: float) -> str | None:
        """Why the folded weight (of this largest |value|, in the weight dtype) and bias do not fit that
        dtype, or None."""
        limit = float(ml_dtypes.finfo(self.dtype.numpy()).max)
        weight_ok = bool(np.isfinite(magnitude))
        bias_ok = self.bias is None or bool((np.abs(self.bias) <= limit).all())
        if weight_ok and bias_ok:
            return None
        return (f"the folded {'weight' if not weight_ok else 'bias'} of '{node_label(self.node)}' exceeds the "
                f"{self.dtype.name} range ({limit:g})")

    def underflow(self) -> str | None:
        """Why rounding the folded weight to its dtype would lose precision the original keeps, or None.

        Rounding a normal number costs at most u (the unit roundoff) of it, so a folded weight whose values
        stay normal is as precise as the original's own rounding of the op's output (RMS error u/sqrt(3) of
        each value, at most u). Below the normal range the spacing is fixed (fp16: 6e-8) and small values
        keep a few bits (a BN scale of 1e-4 on fp16 weights of 0.3). The fold is refused when the whole
        weight's rounding error is more than twice the normal-range figure: a few dead channels (network
        slimming drives gamma to 1e-6) cost nothing, since their values and errors are small next to the
        others'. Only half-precision dtypes are measured: float32's normal range reaches 1e-38."""
        numpy_dtype = self.dtype.numpy()
        if np.dtype(numpy_dtype).itemsize > 2 or not self.scales or self.weight.array.size == 0:
            return None
        info = ml_dtypes.finfo(numpy_dtype)
        u, tiny = float(info.eps) / 2, float(info.smallest_normal)
        # Without looking at every value: a normal value's error is at most u of it, a subnormal one's at most
        # u * tiny, so the error energy is at most u^2 (S + n tiny^2) for signal energy S, and the ratio
        # below at most sqrt(3 + 3 n tiny^2 / S). S is at least the sum of the blocks' squared maxima: when
        # that reaches 3 n tiny^2 the ratio cannot pass 2 (every trained layer; it saves the float64 pass).
        with np.errstate(over="ignore", invalid="ignore"):
            lower = float(np.sum(np.square(np.nan_to_num(self._folded_block_maxima(), posinf=0.0))))
        if lower >= 3 * self.weight.array.size * tiny * tiny:
            return None
        scale = reduce(np.multiply, self.scales)
        weight = self.weight.array
        scale = scale.reshape((1,) * (weight.ndim - scale.ndim) + scale.shape)
        error = signal = 0.0
        below = 0
        rows = max(1, (4 << 20) // max(1, weight[:1].size))
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, weight.shape[0], rows):
                exact = weight[start:start + rows].astype(np.float64) * (scale if scale.shape[0] == 1
                                                                          else scale[start:start + rows])
                exact[~np.isfinite(exact)] = 0.0
                error += float(np.square(exact.astype(numpy_dtype).astype(np.float64) - exact).sum())
                signal += float(np.square(exact).sum())
                below += int(np.count_nonzero((exact != 0) & (np.abs(exact) < tiny)))
        loss = np.sqrt(error / (signal * u * u / 3)) if signal > 0 else 0.0
        if loss <= 2.0:
            return None
        return (f"rounding the folded weight of {self.op} '{node_label(self.node)}' to {self.dtype.name.lower()} "
                f"would cost {loss:.1f}x the error of its normal range: {below} of {weight.size} values fall "
                f"below {tiny:.4g}")


def make_partner(node: ir.Node, consts: ConstantResolver, rank_of: Callable[[ir.Value], int | None]) -> Partner:
    """The node as a fold partner, or a Refusal saying why its weights cannot be rewritten."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or op not in LINEAR_OPS:
        raise Refusal(R.UNSUPPORTED_PARTNER, f"{op} is not a linear op bnfold can rewrite")
    weight = consts.resolve(node.inputs[1] if len(node.inputs) > 1 else None)
    if weight is None:
        raise Refusal(R.NON_CONSTANT_PARAMETERS, f"the weight of {op} '{node_label(node)}' is computed at run time")
    if op in ("MatMul", "Gemm") and len(weight.shape) != 2:
        raise Refusal(R.UNSUPPORTED_PARTNER, f"{op} '{node_label(node)}' has a {len(weight.shape)}-D weight")
    dtype = weight.dtype
    if dtype not in FLOAT_TYPES:
        raise Refusal(R.UNSUPPORTED_DTYPE, f"{op} '{node_label(node)}' has {dtype} weights")
    overridable = weight.overridable
    bias = None
    if op != "MatMul" and len(node.inputs) > 2 and node.inputs[2] is not None:
        b = consts.resolve(node.inputs[2])
        if b is None:
            raise Refusal(R.NON_CONSTANT_PARAMETERS, f"the bias of {op} '{node_label(node)}' is computed at run time")
        overridable = overridable or b.overridable
        bias = b.array.astype(np.float64)
        if op == "Gemm":
            bias = bias * float(_attr(node, "beta", 1.0))
    ranks = (rank_of(node.inputs[0]), rank_of(node.outputs[0])) if op == "MatMul" else (None, None)
    partner = Partner(node, weight, weight.shape, bias, dtype, overridable, ranks)
    _check_geometry(partner)
    return partner


def _check_geometry(partner: Partner) -> None:
    """The weight and bias shapes the fold's arithmetic relies on (load-time validation sees only
    initializers; these may be computed). A model that breaks them does not run in onnxruntime either."""
    shape, op, label = partner.shape, partner.op, node_label(partner.node)
    if op in ("Conv", "ConvTranspose"):
        group = partner.group
        if len(shape) < 3 or group < 1 or shape[0] % group:
            raise Refusal(R.MALFORMED, f"{op} '{label}' has a weight of shape {list(shape)} with group={group}")
    if partner.bias is None:
        return
    channels = partner.output_layout().channels
    bias = partner.bias.shape
    if op in ("Conv", "ConvTranspose"):
        fits = bias == (channels,)
    else:  # Gemm's C broadcasts against [M, N]
        fits = len(bias) <= 2 and (not bias or bias[-1] in (1, channels))
    if not fits:
        raise Refusal(R.MALFORMED, f"the bias of {op} '{label}' has shape {list(bias)}; the weight makes {channels} "
                      "channels")

"""A deep ResNet-like network built in code, with BatchNormalization statistics measured on a batch the way
training leaves them, and deliberately wrong folds of it — the models verification must judge right.

    conv0 -> bn0 -> relu0 -> [conv -> bn -> relu -> conv -> bn -> (+ skip) -> relu] x ... -> pool -> fc -> y

Statistics come from a float64 forward pass over a calibration batch, so every BN normalizes what it really
sees; that is what makes a deep network amplify rounding as real ones do (an uncalibrated stack drifts to
huge or tiny activations instead).
"""

from __future__ import annotations

import numpy as np
import onnx
from helpers import FLOAT, GraphBuilder, elem_type

EPSILON = 1e-5


def deep_model(layers: int = 100, *, channels: int = 16, side: int = 8, classes: int = 100,
               dtype=np.float32, seed: int = 0) -> onnx.ModelProto:
    """`layers` Conv+BN layers (an odd one in front, then residual pairs); fp16 keeps BN parameters fp32."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder("deep")
    g.input("x", elem_type(dtype), [1, channels, side, side])
    act = rng.standard_normal((8, channels, side, side))  # the calibration batch, float64
    x, skip, skip_act = "x", None, None
    for i in range(layers):
        # a tenth of He's scale: the BN after it restores the activations, and its variances are 0.01-0.1,
        # small enough for the epsilon to matter, as in trained networks with weight decay
        w = rng.normal(0.0, 0.1 * np.sqrt(2.0 / (channels * 9)), (channels, channels, 3, 3)).astype(dtype)
        conv = _conv3x3(act, w.astype(np.float64))
        stats = {"mean": conv.mean(axis=(0, 2, 3)), "var": conv.var(axis=(0, 2, 3)),
                 "scale": rng.uniform(0.5, 1.5, channels), "bias": rng.normal(0.0, 0.1, channels)}
        stats = {k: v.astype(np.float32 if dtype == np.float16 else dtype) for k, v in stats.items()}
        normed = _bn(conv, stats)
        c = g.node("Conv", [x, g.init(f"conv{i}_w", w)], name=f"conv{i}", pads=[1, 1, 1, 1])
        y = g.bn(c, stats, name=f"bn{i}", epsilon=EPSILON)
        residual = i % 2 == 0 and i > 0
        if residual:
            y = g.node("Add", [y, skip], name=f"add{i}")
            normed = normed + skip_act
        x, act = g.node("Relu", [y], name=f"relu{i}"), np.maximum(normed, 0.0)
        if i % 2 == 0:
            skip, skip_act = x, act
    p = g.node("GlobalAveragePool", [x], name="pool")
    f = g.node("Flatten", [p], name="flatten")
    fc_w = rng.normal(0.0, 1.0 / np.sqrt(channels), (channels, classes)).astype(dtype)
    g.node("Gemm", [f, g.init("fc_w", fc_w), g.init("fc_b", rng.normal(0, 0.1, classes).astype(dtype))], "y",
           name="fc")
    g.output("y", elem_type(dtype), [1, classes])
    return g.model()


def miswrite(folded: onnx.ModelProto, original: onnx.ModelProto, layer: int, kind: str) -> onnx.ModelProto:
    """A copy of `folded` whose conv`layer` is folded wrongly:
    - "scale": output channel 0's weights off by 1e4 units in the last place
    - "epsilon": weight and bias folded with epsilon 1e-3 (Keras' default) instead of the model's 1e-5
    - "swap": output channels 0 and 1 of the weight swapped (the bias left in place)"""
    wrong = onnx.ModelProto()
    wrong.CopyFrom(folded)
    conv = next(n for n in wrong.graph.node if n.name == f"conv{layer}")
    weight, bias = _initializer(wrong, conv.input[1]), _initializer(wrong, conv.input[2])
    w = onnx.numpy_helper.to_array(weight).copy()
    b = onnx.numpy_helper.to_array(bias).copy()
    if kind == "scale":
        w[0] = (w[0].astype(np.float64) * (1.0 + 1e4 * np.finfo(w.dtype).eps)).astype(w.dtype)
    elif kind == "swap":
        w[[0, 1]] = w[[1, 0]]
    elif kind == "epsilon":
        raw = onnx.numpy_helper.to_array(_initializer(original, f"conv{layer}_w")).astype(np.float64)
        p = {k: onnx.numpy_helper.to_array(_initializer(original, f"bn{layer}_{k}")).astype(np.float64)
             for k in ("scale", "bias", "mean", "var")}
        s = p["scale"] / np.sqrt(p["var"] + 1e-3)
        w = (raw * s[:, None, None, None]).astype(w.dtype)
        b = (p["bias"] - p["mean"] * s).astype(b.dtype)
    else:
        raise ValueError(kind)
    weight.CopyFrom(onnx.numpy_helper.from_array(w, weight.name))
    bias.CopyFrom(onnx.numpy_helper.from_array(b, bias.name))
    return wrong


def _initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _conv3x3(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # N, C, H, W, 3, 3
    return np.einsum("nchwij,ocij->nohw", windows, w)


def _bn(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    shape = (1, -1, 1, 1)
    scale = p["scale"].astype(np.float64) / np.sqrt(p["var"].astype(np.float64) + EPSILON)
    return (x - p["mean"].astype(np.float64).reshape(shape)) * scale.reshape(shape) + \
        p["bias"].astype(np.float64).reshape(shape)


__all__ = ["FLOAT", "deep_model", "miswrite"]

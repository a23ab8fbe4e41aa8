"""What a fold's range growth costs per-tensor int8 quantization, measured on real folds, in one run.

    python bench/quantization_bench.py

A Conv (32 output channels, 16 inputs, 3x3, seeded random weights) -> BatchNormalization -> Relu model,
with running variances drawn from [0.5, 1.5] and one channel's variance set lower per row. Each model is
folded by bnfold (`fold_model`), and the folded Conv weight is quantized to int8 with one scale for the
tensor and with one scale per output channel (symmetric, 127 levels). The quality is the weight SQNR in dB
over the *other* channels (those the low-variance channel does not set the range of), next to the
`range_growth` bnfold reports for the fold and whether lint rule BN015 fires.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from bnfold.fold import fold_model
from bnfold.lint import lint_model

CHANNELS, LOW = 32, 3
VARIANCES = (None, 0.1, 0.03, 0.01, 1e-3, 1e-4)


def conv_bn(low_variance: float | None) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = (0.1 * rng.standard_normal((CHANNELS, 16, 3, 3))).astype(np.float32)
    var = rng.uniform(0.5, 1.5, CHANNELS)
    if low_variance is not None:
        var[LOW] = low_variance
    stats = {"gamma": rng.uniform(0.8, 1.2, CHANNELS), "beta": rng.normal(0, 0.1, CHANNELS),
             "mean": rng.normal(0, 0.1, CHANNELS), "var": var}
    inits = [numpy_helper.from_array(weight, "w")]
    inits += [numpy_helper.from_array(v.astype(np.float32), k) for k, v in stats.items()]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", *stats], ["n"], name="bn"),
             helper.make_node("Relu", ["n"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "conv_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CHANNELS, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def int8(weight: np.ndarray, per_channel: bool) -> np.ndarray:
    rows = weight.reshape(weight.shape[0], -1)
    scale = np.abs(rows).max(axis=1, keepdims=True) if per_channel else np.abs(rows).max()
    return (np.clip(np.round(rows / scale * 127), -127, 127) * scale / 127).reshape(weight.shape)


def sqnr_db(weight: np.ndarray, quantized: np.ndarray, channels: np.ndarray) -> float:
    w, q = weight[channels].astype(np.float64), quantized[channels]
    return float(10 * np.log10((w ** 2).sum() / ((w - q) ** 2).sum()))


def row(low_variance: float | None) -> str:
    model = ir.from_proto(conv_bn(low_variance))
    bn015 = any(f.code == "BN015" for f in lint_model(model, "m.onnx"))
    (decision,) = fold_model(model).decisions
    weight = next(v for v in model.graph.initializers.values() if v.const_value.shape[0] == CHANNELS
                  and len(v.const_value.shape) == 4).const_value.numpy()
    others = np.arange(CHANNELS) != LOW
    per_tensor, per_channel = (sqnr_db(weight, int8(weight, pc), others) for pc in (False, True))
    label = "none (all in [0.5, 1.5])" if low_variance is None else f"{low_variance:g}"
    return (f"| {label} | {decision.range_growth:.1f} | {'yes' if bn015 else 'no'} | {per_tensor:.1f} | "
            f"{per_channel:.1f} |")


def main() -> None:
    print(f"| channel {LOW}'s running variance | range_growth | BN015 | per-tensor int8 SQNR, other channels (dB) "
          "| per-channel int8 SQNR, other channels (dB) |")
    print("|---|---:|---|---:|---:|")
    for variance in VARIANCES:
        print(row(variance))


if __name__ == "__main__":
    main()

"""Build the small ONNX sample models that show bnfold's lint rules and fold patterns.

Run it as ``python sample_models/make_samples.py [--out DIR]``. By default the models are written
next to this script. The output is deterministic: every model uses its own fixed-seed
``numpy.random.RandomState``, producer_name is fixed and nothing depends on time or the machine,
so a re-run gives byte-identical files (tests/test_sample_models.py checks this).

Only onnx and numpy are needed.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PRODUCER_NAME = "bnfold-samples"
PRODUCER_VERSION = "1"
IR_VERSION = 8

HERE = os.path.dirname(os.path.abspath(__file__))

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16


class Builder:
    """Collects nodes and initializers for one graph; all random draws come from one seeded stream."""

    def __init__(self, seed: int):
        self.rng = np.random.RandomState(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    # -- tensors -------------------------------------------------------------------------------
    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def weight(self, name: str, shape: tuple[int, ...], fan_in: int, dtype=np.float32) -> str:
        """He-style normal init, like a trained-from-scratch network's scale."""
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
        return self.init(name, w.astype(dtype))

    def bias(self, name: str, n: int, dtype=np.float32) -> str:
        return self.init(name, self.rng.normal(0.0, 0.1, size=(n,)).astype(dtype))

    def bn_stats(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Realistic trained statistics (never the untrained 0/1 defaults)."""
        gamma = self.rng.uniform(0.5, 1.5, size=(n,))
        beta = self.rng.normal(0.0, 0.1, size=(n,))
        mean = self.rng.normal(0.0, 0.5, size=(n,))
        var = self.rng.uniform(0.5, 2.0, size=(n,))
        return gamma, beta, mean, var

    # -- nodes ---------------------------------------------------------------------------------
    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))
        return outputs[0]

    def bn(
        self,
        name: str,
        x: str,
        n: int,
        epsilon: float = 1e-5,
        momentum: float = 0.9,
        param_dtype=np.float32,
        out: str | None = None,
        **attrs,
    ) -> str:
        gamma, beta, mean, var = self.bn_stats(n)
        inputs = [
            self.init(f"{name}.weight", gamma.astype(param_dtype)),
            self.init(f"{name}.bias", beta.astype(param_dtype)),
            self.init(f"{name}.running_mean", mean.astype(param_dtype)),
            self.init(f"{name}.running_var", var.astype(param_dtype)),
        ]
        return self.node(
            "BatchNormalization",
            [x] + inputs,
            [out or name],
            name,
            epsilon=epsilon,
            momentum=momentum,
            **attrs,
        )

    def conv(
        self,
        name: str,
        x: str,
        c_in: int,
        c_out: int,
        k: int,
        *,
        stride: int = 1,
        pad: int = 0,
        group: int = 1,
        bias: bool = False,
        dtype=np.float32,
    ) -> str:
        w = self.weight(f"{name}.weight", (c_out, c_in // group, k, k), (c_in // group) * k * k, dtype)
        inputs = [x, w]
        if bias:
            inputs.append(self.bias(f"{name}.bias", c_out, dtype))
        return self.node(
            "Conv",
            inputs,
            [name],
            name,
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad, pad, pad, pad],
            dilations=[1, 1],
            group=group,
        )

    def gemm(self, name: str, x: str, n_in: int, n_out: int, *, trans_b: int = 1) -> str:
        shape = (n_out, n_in) if trans_b else (n_in, n_out)
        w = self.weight(f"{name}.weight", shape, n_in)
        b = self.bias(f"{name}.bias", n_out)
        return self.node("Gemm", [x, w, b], [name], name, alpha=1.0, beta=1.0, transA=0, transB=trans_b)

    def relu(self, name: str, x: str, out: str | None = None) -> str:
        return self.node("Relu", [x], [out or name], name)

    # -- model ---------------------------------------------------------------------------------
    def model(
        self,
        graph_name: str,
        doc: str,
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
        opset: int = 17,
    ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, initializer=self.inits)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", opset)],
            producer_name=PRODUCER_NAME,
            producer_version=PRODUCER_VERSION,
            ir_version=IR_VERSION,
            doc_string=doc,
        )
        return model


def vi(name: str, elem_type: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


# ---------------------------------------------------------------------------------------------
# 1. ResNet basic block + downsampling block with a grouped 1x1 stride-2 projection shortcut
# ---------------------------------------------------------------------------------------------
RESNET_BN_COUNT = 5


def resnet_block() -> onnx.ModelProto:
    b = Builder(seed=1)
    # Block 1: identity shortcut, 16 channels, 32x32.
    t = b.conv("conv1", "x", 16, 16, 3, pad=1, bias=True)  # bias before BN: redundant (BN001)
    t = b.bn("bn1", t, 16)
    t = b.relu("relu1", t)
    t = b.conv("conv2", t, 16, 16, 3, pad=1)
    t = b.bn("bn2", t, 16)
    t = b.node("Add", [t, "x"], ["add1"], "add1")
    block1 = b.relu("relu2", t)
    # Block 2: downsampling to 32 channels, 16x16.
    t = b.conv("conv3", block1, 16, 32, 3, stride=2, pad=1)
    t = b.bn("bn3", t, 32)
    t = b.relu("relu3", t)
    t = b.conv("conv4", t, 32, 32, 3, pad=1)
    t = b.bn("bn4", t, 32)
    s = b.conv("conv_down", block1, 16, 32, 1, stride=2, group=4)  # grouped 1x1 projection
    s = b.bn("bn_down", s, 32, epsilon=1e-3, momentum=0.99)
    t = b.node("Add", [t, s], ["add2"], "add2")
    b.relu("relu4", t, out="y")
    assert sum(n.op_type == "BatchNormalization" for n in b.nodes) == RESNET_BN_COUNT
    return b.model(
        "resnet_block",
        "ResNet basic block (identity shortcut) followed by a downsampling block whose shortcut is "
        "a grouped (group=4) 1x1 stride-2 Conv + BN. Every BN follows a Conv directly.",
        [vi("x", FLOAT, ["N", 16, 32, 32])],
        [vi("y", FLOAT, ["N", 32, 16, 16])],
    )


# ---------------------------------------------------------------------------------------------
# 2. Grouped ConvTranspose -> BN -> Relu
# ---------------------------------------------------------------------------------------------
def convtranspose_bn() -> onnx.ModelProto:
    b = Builder(seed=2)
    c_in, c_out, group, k = 8, 16, 2, 3
    # ConvTranspose weight layout is [C_in, C_out / group, kH, kW].
    w = b.weight("deconv1.weight", (c_in, c_out // group, k, k), c_in * k * k // group)
    bias = b.bias("deconv1.bias", c_out)
    t = b.node(
        "ConvTranspose",
        ["x", w, bias],
        ["deconv1"],
        "deconv1",
        kernel_shape=[k, k],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        output_padding=[1, 1],
        dilations=[1, 1],
        group=group,
    )
    t = b.bn("bn1", t, c_out)
    b.relu("relu1", t, out="y")
    # out = (16 - 1) * 2 - 2 * 1 + 3 + 1 = 32
    return b.model(
        "convtranspose_bn",
        "Grouped (group=2) stride-2 ConvTranspose with bias and output_padding, then BN and Relu.",
        [vi("x", FLOAT, ["N", c_in, 16, 16])],
        [vi("y", FLOAT, ["N", c_out, 32, 32])],
    )


# ---------------------------------------------------------------------------------------------
# 3. Gemm -> BN -> Relu
# ---------------------------------------------------------------------------------------------
def gemm_bn() -> onnx.ModelProto:
    b = Builder(seed=3)
    t = b.gemm("fc1", "x", 64, 32, trans_b=1)
    t = b.bn("bn1", t, 32, epsilon=1e-3)
    b.relu("relu1", t, out="y")
    return b.model(
        "gemm_bn",
        "Gemm (transB=1, alpha=1, beta=1, C of shape [32]) then BN (epsilon 1e-3) on [N, C] and Relu.",
        [vi("x", FLOAT, ["N", 64])],
        [vi("y", FLOAT, ["N", 32])],
    )


# ---------------------------------------------------------------------------------------------
# 4. MatMul -> Add(bias) -> BN -> Relu
# ---------------------------------------------------------------------------------------------
def matmul_bn() -> onnx.ModelProto:
    b = Builder(seed=4)
    w = b.weight("fc1.weight", (64, 32), 64)
    t = b.node("MatMul", ["x", w], ["matmul1"], "matmul1")
    bias = b.bias("fc1.bias", 32)
    t = b.node("Add", [t, bias], ["add1"], "add1")
    t = b.bn("bn1", t, 32)
    b.relu("relu1", t, out="y")
    return b.model(
        "matmul_bn",
        "MatMul with a constant [64, 32] weight, Add of a [32] bias, then BN and Relu.",
        [vi("x", FLOAT, ["N", 64])],
        [vi("y", FLOAT, ["N", 32])],
    )


# ---------------------------------------------------------------------------------------------
# 5. MLP with BN after the activation (forward folding)
# ---------------------------------------------------------------------------------------------
def mlp_bn_after_relu() -> onnx.ModelProto:
    b = Builder(seed=5)
    t = b.gemm("fc1", "x", 64, 48, trans_b=1)
    t = b.relu("relu1", t)
    t = b.bn("bn1", t, 48)
    t = b.gemm("fc2", t, 48, 32, trans_b=0)
    t = b.relu("relu2", t)
    t = b.bn("bn2", t, 32, epsilon=1e-3)
    t = b.gemm("fc3", t, 32, 10, trans_b=1)
    b.node("Softmax", [t], ["y"], "softmax", axis=-1)
    return b.model(
        "mlp_bn_after_relu",
        "MLP with BN placed after the Relu: each BN can only be folded forward into the next Gemm "
        "(fc2 has transB=0, fc3 has transB=1).",
        [vi("x", FLOAT, ["N", 64])],
        [vi("y", FLOAT, ["N", 10])],
    )


# ---------------------------------------------------------------------------------------------
# 6. Depthwise Conv -> Mul -> Add (BN decomposed by a Keras/TF export) -> Relu -> pointwise Conv
# ---------------------------------------------------------------------------------------------
def depthwise_mul_add() -> onnx.ModelProto:
    b = Builder(seed=6)
    c = 32
    t = b.conv("dw_conv", "x", c, c, 3, pad=1, group=c)
    gamma, beta, mean, var = b.bn_stats(c)
    eps = 1e-3  # Keras' BatchNormalization default
    scale = gamma / np.sqrt(var + eps)
    shift = beta - mean * scale
    mul_c = b.init("bn.mul", scale.astype(np.float32).reshape(1, c, 1, 1))
    add_c = b.init("bn.add", shift.astype(np.float32).reshape(1, c, 1, 1))
    t = b.node("Mul", [t, mul_c], ["bn_mul"], "bn_mul")
    t = b.node("Add", [t, add_c], ["bn_add"], "bn_add")
    t = b.relu("relu1", t)
    b.node(
        "Conv",
        [t, b.weight("pw_conv.weight", (64, c, 1, 1), c), b.bias("pw_conv.bias", 64)],
        ["y"],
        "pw_conv",
        kernel_shape=[1, 1],
        strides=[1, 1],
        pads=[0, 0, 0, 0],
        dilations=[1, 1],
        group=1,
    )
    return b.model(
        "depthwise_mul_add",
        "Depthwise Conv (group=32) followed by BN already decomposed into Mul and Add by [1, 32, 1, 1] "
        "constants (as a Keras/TF export leaves it), Relu, and a pointwise 1x1 Conv.",
        [vi("x", FLOAT, [1, c, 28, 28])],
        [vi("y", FLOAT, [1, 64, 28, 28])],
    )


# ---------------------------------------------------------------------------------------------
# 7. BN in training mode (opset 15) -- must never be folded
# ---------------------------------------------------------------------------------------------
def training_mode_bn() -> onnx.ModelProto:
    b = Builder(seed=7)
    t = b.conv("conv1", "x", 3, 8, 3, pad=1)
    gamma, beta, mean, var = b.bn_stats(8)
    b.node(
        "BatchNormalization",
        [
            t,
            b.init("bn1.weight", gamma.astype(np.float32)),
            b.init("bn1.bias", beta.astype(np.float32)),
            b.init("bn1.running_mean", mean.astype(np.float32)),
            b.init("bn1.running_var", var.astype(np.float32)),
        ],
        ["bn1", "bn1.running_mean_out", "bn1.running_var_out"],
        "bn1",
        epsilon=1e-5,
        momentum=0.9,
        training_mode=1,
    )
    b.relu("relu1", "bn1", out="y")
    return b.model(
        "training_mode_bn",
        "Conv then BatchNormalization with training_mode=1 whose updated running mean and variance are "
        "graph outputs: a training graph, not an inference graph.",
        [vi("x", FLOAT, ["N", 3, 16, 16])],
        [
            vi("y", FLOAT, ["N", 8, 16, 16]),
            vi("bn1.running_mean_out", FLOAT, [8]),
            vi("bn1.running_var_out", FLOAT, [8]),
        ],
        opset=15,
    )


# ---------------------------------------------------------------------------------------------
# 8. fp16 Conv with fp32 BN parameters (BatchNormalization-15: T1/T2 may differ from T)
# ---------------------------------------------------------------------------------------------
def fp16_conv_bn() -> onnx.ModelProto:
    b = Builder(seed=8)
    t = b.conv("conv1", "x", 8, 16, 3, pad=1, dtype=np.float16)
    t = b.bn("bn1", t, 16, param_dtype=np.float32)
    b.relu("relu1", t, out="y")
    return b.model(
        "fp16_conv_bn",
        "fp16 input and fp16 Conv weights; the following BN keeps fp32 scale, bias, mean and var "
        "(mixed types allowed since BatchNormalization-15).",
        [vi("x", FLOAT16, ["N", 8, 16, 16])],
        [vi("y", FLOAT16, ["N", 16, 16, 16])],
        opset=15,
    )


SAMPLES = {
    "resnet_block.onnx": resnet_block,
    "convtranspose_bn.onnx": convtranspose_bn,
    "gemm_bn.onnx": gemm_bn,
    "matmul_bn.onnx": matmul_bn,
    "mlp_bn_after_relu.onnx": mlp_bn_after_relu,
    "depthwise_mul_add.onnx": depthwise_mul_add,
    "training_mode_bn.onnx": training_mode_bn,
    "fp16_conv_bn.onnx": fp16_conv_bn,
}


def build_all(out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for filename, fn in SAMPLES.items():
        model = fn()
        onnx.checker.check_model(model, full_check=True)
        path = os.path.join(out_dir, filename)
        data = model.SerializeToString(deterministic=True)
        with open(path, "wb") as f:
            f.write(data)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=HERE, help="output directory (default: next to this script)")
    args = parser.parse_args(argv)
    for path in build_all(args.out):
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

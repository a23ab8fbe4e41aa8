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
        stats: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
        **attrs,
    ) -> str:
        gamma, beta, mean, var = self.bn_stats(n) if stats is None else stats
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

    def gemm(self, name: str, x: str, n_in: int, n_out: int, *, trans_b: int = 1, bias: bool = True) -> str:
        shape = (n_out, n_in) if trans_b else (n_in, n_out)
        w = self.weight(f"{name}.weight", shape, n_in)
        inputs = [x, w]
        if bias:
            inputs.append(self.bias(f"{name}.bias", n_out))
        return self.node("Gemm", inputs, [name], name, alpha=1.0, beta=1.0, transA=0, transB=trans_b)

    def relu(self, name: str, x: str, out: str | None = None) -> str:
        return self.node("Relu", [x], [out or name], name)

    def meta(self, node_name: str, key: str, value: str) -> None:
        """Set a metadata_props entry on an already added node (e.g. `bnfold.keras_layer`)."""
        node = next(n for n in self.nodes if n.name == node_name)
        entry = node.metadata_props.add()
        entry.key, entry.value = key, value

    # -- model ---------------------------------------------------------------------------------
    def model(
        self,
        graph_name: str,
        doc: str,
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
        opset: int = 17,
        initializers_as_inputs: bool = False,
    ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, initializer=self.inits)
        if initializers_as_inputs:  # what torch.onnx.export(..., keep_initializers_as_inputs=True) writes
            for init in self.inits:
                graph.input.append(vi(init.name, init.data_type, list(init.dims)))
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


# =============================================================================================
# Lint samples (written to lint/): the classic Keras MLP, and one small model per lint rule.
# =============================================================================================
KERAS_LAYER = "bnfold.keras_layer"


def _tanh(b: Builder, name: str, x: str) -> str:
    return b.node("Tanh", [x], [name], name)


def _dropout(b: Builder, name: str, x: str) -> str:
    # No ratio input: the default 0.5; Dropout is the identity at inference.
    return b.node("Dropout", [x], [name], name)


def _softmax(b: Builder, x: str, out: str = "y", name: str = "softmax") -> str:
    return b.node("Softmax", [x], [out], name, axis=-1)


def classic_mlp() -> onnx.ModelProto:
    """The classic Keras example with BN kept, as tf2onnx-style Gemm (Dense kernel + bias C) nodes:

    Dense(64) -> BatchNormalization -> Activation("tanh") -> Dropout -> Dense(64) -> BatchNormalization ->
    Activation("tanh") -> Dropout -> Dense(2) -> BatchNormalization -> Activation("softmax").
    """
    b = Builder(seed=101)
    t = b.gemm("fc1", "x", 20, 64)
    t = b.bn("bn1", t, 64, epsilon=1e-3, momentum=0.99)  # Keras' BatchNormalization defaults
    t = _tanh(b, "tanh1", t)
    t = _dropout(b, "dropout1", t)
    t = b.gemm("fc2", t, 64, 64)
    t = b.bn("bn2", t, 64, epsilon=1e-3, momentum=0.99)
    t = _tanh(b, "tanh2", t)
    t = _dropout(b, "dropout2", t)
    t = b.gemm("fc3", t, 64, 2)
    t = b.bn("bn3", t, 2, epsilon=1e-3, momentum=0.99)
    _softmax(b, t)
    keras_names = {
        "fc1": "dense", "bn1": "batch_normalization", "tanh1": "activation", "dropout1": "dropout",
        "fc2": "dense_1", "bn2": "batch_normalization_1", "tanh2": "activation_1", "dropout2": "dropout_1",
        "fc3": "dense_2", "bn3": "batch_normalization_2", "softmax": "activation_2",
    }
    for node_name, layer in keras_names.items():
        b.meta(node_name, KERAS_LAYER, layer)
    return b.model(
        "classic_mlp",
        "The classic Keras MLP with BatchNormalization kept: Dense(64, use_bias=True) -> BN -> tanh -> "
        "Dropout, twice, then Dense(2) -> BN -> softmax. Dense is a Gemm with bias C; every node carries "
        "its Keras layer name in metadata_props['bnfold.keras_layer'].",
        [vi("x", FLOAT, ["N", 20])],
        [vi("y", FLOAT, ["N", 2])],
    )


def bn001_redundant_bias() -> onnx.ModelProto:
    b = Builder(seed=111)
    t = b.conv("conv1", "x", 3, 8, 3, pad=1, bias=True)  # the bias BN's beta makes redundant
    t = b.bn("bn1", t, 8)
    b.relu("relu1", t, out="y")
    return b.model(
        "bn001_redundant_bias",
        "BN001: conv1 has a bias and feeds bn1 directly; BN subtracts the mean, so the bias does nothing.",
        [vi("x", FLOAT, ["N", 3, 16, 16])],
        [vi("y", FLOAT, ["N", 8, 16, 16])],
    )


def bn002_batchnorm_before_softmax() -> onnx.ModelProto:
    b = Builder(seed=112)
    t = b.gemm("fc1", "x", 32, 16, bias=False)
    t = b.bn("bn1", t, 16)
    t = b.relu("relu1", t)
    t = b.gemm("fc2", t, 16, 4, bias=False)
    t = b.bn("bn2", t, 4)  # normalizes the logits
    _softmax(b, t)
    return b.model(
        "bn002_batchnorm_before_softmax",
        "BN002: the output layer fc2 -> bn2 -> softmax normalizes the logits with BatchNormalization.",
        [vi("x", FLOAT, ["N", 32])],
        [vi("y", FLOAT, ["N", 4])],
    )


def bn003_missing_batchnorm() -> onnx.ModelProto:
    b = Builder(seed=113)
    t = b.conv("conv1", "x", 3, 8, 3, pad=1)
    t = b.bn("bn1", t, 8)
    t = b.relu("relu1", t)
    t = b.conv("conv2", t, 8, 8, 3, pad=1, bias=True)  # the one block without BN
    t = b.relu("relu2", t)
    t = b.conv("conv3", t, 8, 8, 3, pad=1)
    t = b.bn("bn3", t, 8)
    t = b.relu("relu3", t)
    t = b.node("GlobalAveragePool", [t], ["gap"], "gap")
    t = b.node("Flatten", [t], ["flatten"], "flatten", axis=1)
    t = b.gemm("fc", t, 8, 10)  # output head: exempt
    _softmax(b, t)
    return b.model(
        "bn003_missing_batchnorm",
        "BN003: conv1 and conv3 are followed by BatchNormalization, conv2 -> relu2 is not. The fc -> softmax "
        "head has no BN either, which is right (exempt).",
        [vi("x", FLOAT, ["N", 3, 16, 16])],
        [vi("y", FLOAT, ["N", 10])],
    )


def bn004_inconsistent_placement() -> onnx.ModelProto:
    b = Builder(seed=114)
    t = b.gemm("fc1", "x", 32, 32, bias=False)
    t = b.bn("bn1", t, 32)  # before the activation
    t = b.relu("relu1", t)
    t = b.gemm("fc2", t, 32, 32, bias=False)
    t = b.bn("bn2", t, 32)  # before the activation
    t = b.relu("relu2", t)
    t = b.gemm("fc3", t, 32, 32)
    t = b.relu("relu3", t)
    t = b.bn("bn3", t, 32)  # after the activation: the odd one out
    t = b.gemm("fc4", t, 32, 10)
    _softmax(b, t)
    return b.model(
        "bn004_inconsistent_placement",
        "BN004: bn1 and bn2 sit between the Gemm and its Relu, bn3 after relu3.",
        [vi("x", FLOAT, ["N", 32])],
        [vi("y", FLOAT, ["N", 10])],
    )


def bn005_dropout_before_batchnorm() -> onnx.ModelProto:
    b = Builder(seed=115)
    t = b.gemm("fc1", "x", 32, 32)
    t = b.relu("relu1", t)
    t = _dropout(b, "dropout1", t)
    t = b.bn("bn1", t, 32)  # sees dropout's extra variance during training only
    t = b.gemm("fc2", t, 32, 10)
    _softmax(b, t)
    return b.model(
        "bn005_dropout_before_batchnorm",
        "BN005: fc1 -> relu1 -> dropout1 -> bn1 -> fc2 -> softmax: Dropout feeds BatchNormalization.",
        [vi("x", FLOAT, ["N", 32])],
        [vi("y", FLOAT, ["N", 10])],
    )


def bn006_batchnorm_in_training_mode() -> onnx.ModelProto:
    b = Builder(seed=116)
    t = b.conv("conv1", "x", 3, 8, 3, pad=1)
    gamma, beta, mean, var = b.bn_stats(8)
    # Exported without model.eval(): training_mode=1 (which needs all three outputs), the updated running
    # mean and variance left unused.
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
        "bn006_batchnorm_in_training_mode",
        "BN006: bn1 has training_mode=1 (a PyTorch export without model.eval()): it normalizes with the "
        "statistics of each batch. Its running mean/var outputs are unused.",
        [vi("x", FLOAT, ["N", 3, 16, 16])],
        [vi("y", FLOAT, ["N", 8, 16, 16])],
        opset=15,
    )


def bn007_untrained_statistics() -> onnx.ModelProto:
    b = Builder(seed=117)
    t = b.gemm("fc1", "x", 32, 16, bias=False)
    gamma, beta, _mean, _var = b.bn_stats(16)
    # gamma/beta were trained, the moving statistics never updated (tf.layers without UPDATE_OPS).
    t = b.bn("bn1", t, 16, epsilon=1e-3, stats=(gamma, beta, np.zeros(16), np.ones(16)))
    t = b.relu("relu1", t)
    t = b.gemm("fc2", t, 16, 4)
    _softmax(b, t)
    return b.model(
        "bn007_untrained_statistics",
        "BN007: bn1 has moving mean exactly 0 and moving variance exactly 1 (trained gamma and beta).",
        [vi("x", FLOAT, ["N", 32])],
        [vi("y", FLOAT, ["N", 4])],
    )


def bn008_degenerate_statistics() -> onnx.ModelProto:
    b = Builder(seed=118)
    t = b.conv("conv1", "x", 3, 8, 3, pad=1)
    gamma, beta, mean, var = b.bn_stats(8)
    var[2] = -0.25  # never valid: onnxruntime computes sqrt(var + eps) = NaN for channel 2
    t = b.bn("bn1", t, 8, stats=(gamma, beta, mean, var))
    b.relu("relu1", t, out="y")
    return b.model(
        "bn008_degenerate_statistics",
        "BN008: bn1's running variance is negative in channel 2, so that channel's output is NaN.",
        [vi("x", FLOAT, ["N", 3, 16, 16])],
        [vi("y", FLOAT, ["N", 8, 16, 16])],
    )


def bn009_unfolded_batchnorm() -> onnx.ModelProto:
    b = Builder(seed=119)
    t = b.conv("conv1", "x", 3, 8, 3, pad=1)
    t = b.bn("bn1", t, 8)
    t = b.relu("relu1", t)
    t = b.conv("conv2", t, 8, 8, 3, pad=1)
    t = b.bn("bn2", t, 8)
    b.relu("relu2", t, out="y")
    return b.model(
        "bn009_unfolded_batchnorm",
        "BN009: two Conv -> BN -> Relu blocks; both BN fold backward into their Conv.",
        [vi("x", FLOAT, ["N", 3, 16, 16])],
        [vi("y", FLOAT, ["N", 8, 16, 16])],
    )


def bn010_consecutive_batchnorm() -> onnx.ModelProto:
    b = Builder(seed=120)
    t = b.conv("conv1", "x", 3, 8, 3, pad=1)
    t = b.bn("bn1", t, 8)
    t = b.bn("bn2", t, 8)  # re-normalizes bn1's output
    b.relu("relu1", t, out="y")
    return b.model(
        "bn010_consecutive_batchnorm",
        "BN010: conv1 -> bn1 -> bn2 -> relu1: two BatchNormalization in a row.",
        [vi("x", FLOAT, ["N", 3, 16, 16])],
        [vi("y", FLOAT, ["N", 8, 16, 16])],
    )


def bn011_batchnorm_on_model_input() -> onnx.ModelProto:
    b = Builder(seed=121)
    t = b.bn("bn_input", "x", 20, epsilon=1e-3, momentum=0.99)  # Keras BatchNormalization as the first layer
    t = b.gemm("fc1", t, 20, 32)
    t = b.relu("relu1", t)
    t = b.gemm("fc2", t, 32, 2)
    _softmax(b, t)
    return b.model(
        "bn011_batchnorm_on_model_input",
        "BN011: bn_input normalizes the model input x with learned statistics (instead of preprocessing).",
        [vi("x", FLOAT, ["N", 20])],
        [vi("y", FLOAT, ["N", 2])],
    )


def bn012_overridable_parameters() -> onnx.ModelProto:
    b = Builder(seed=122)
    t = b.conv("conv1", "x", 3, 8, 3, pad=1)
    t = b.bn("bn1", t, 8)
    b.relu("relu1", t, out="y")
    return b.model(
        "bn012_overridable_parameters",
        "BN012: ir_version 8, but every initializer (conv1.weight and bn1's four parameters) is also listed "
        "as a graph input, as torch.onnx.export(..., keep_initializers_as_inputs=True) writes it.",
        [vi("x", FLOAT, ["N", 3, 16, 16])],
        [vi("y", FLOAT, ["N", 8, 16, 16])],
        initializers_as_inputs=True,
    )


LINT_SAMPLES = {
    "lint/classic_mlp.onnx": classic_mlp,
    "lint/bn001_redundant_bias.onnx": bn001_redundant_bias,
    "lint/bn002_batchnorm_before_softmax.onnx": bn002_batchnorm_before_softmax,
    "lint/bn003_missing_batchnorm.onnx": bn003_missing_batchnorm,
    "lint/bn004_inconsistent_placement.onnx": bn004_inconsistent_placement,
    "lint/bn005_dropout_before_batchnorm.onnx": bn005_dropout_before_batchnorm,
    "lint/bn006_batchnorm_in_training_mode.onnx": bn006_batchnorm_in_training_mode,
    "lint/bn007_untrained_statistics.onnx": bn007_untrained_statistics,
    "lint/bn008_degenerate_statistics.onnx": bn008_degenerate_statistics,
    "lint/bn009_unfolded_batchnorm.onnx": bn009_unfolded_batchnorm,
    "lint/bn010_consecutive_batchnorm.onnx": bn010_consecutive_batchnorm,
    "lint/bn011_batchnorm_on_model_input.onnx": bn011_batchnorm_on_model_input,
    "lint/bn012_overridable_parameters.onnx": bn012_overridable_parameters,
}


SAMPLES = {
    "resnet_block.onnx": resnet_block,
    "convtranspose_bn.onnx": convtranspose_bn,
    "gemm_bn.onnx": gemm_bn,
    "matmul_bn.onnx": matmul_bn,
    "mlp_bn_after_relu.onnx": mlp_bn_after_relu,
    "depthwise_mul_add.onnx": depthwise_mul_add,
    "training_mode_bn.onnx": training_mode_bn,
    "fp16_conv_bn.onnx": fp16_conv_bn,
    **LINT_SAMPLES,
}


def build_all(out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for filename, fn in SAMPLES.items():
        model = fn()
        onnx.checker.check_model(model, full_check=True)
        path = os.path.join(out_dir, *filename.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
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

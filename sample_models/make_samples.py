"""Build the small ONNX sample models that show bnfold's lint rules and fold patterns.

Run it as ``python sample_models/make_samples.py [--out DIR]``. By default the models are written
next to this script. The output is deterministic: every model uses its own fixed-seed
``numpy.random.RandomState``, producer_name is fixed and nothing depends on time or the machine,
so a re-run gives byte-identical files (tests/test_sample_models.py checks this).

Each sample is a function that adds its nodes to a `Builder`; the `@sample` decorator gives it the seed,
the graph input x and output y and the doc string, and registers it in `SAMPLES` under its own name.

Only onnx and numpy are needed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PRODUCER_NAME = "bnfold-samples"
PRODUCER_VERSION = "1"
IR_VERSION = 8

HERE = os.path.dirname(os.path.abspath(__file__))

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16

BN_PARAMS = ("weight", "bias", "running_mean", "running_var")  # initializer suffixes, in input order
KERAS_BN = {"epsilon": 1e-3, "momentum": 0.99}  # Keras' BatchNormalization defaults
KERAS_LAYER = "bnfold.keras_layer"

Stats = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def vi(name: str, elem_type: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


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

    def bn_stats(self, n: int) -> Stats:
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

    def op(self, op: str, name: str, *inputs: str, out: str | None = None, **attrs) -> str:
        """A single-output node whose output is named after the node unless `out` is given."""
        return self.node(op, list(inputs), [out or name], name, **attrs)

    def relu(self, name: str, x: str, out: str | None = None) -> str:
        return self.op("Relu", name, x, out=out)

    def tanh(self, name: str, x: str) -> str:
        return self.op("Tanh", name, x)

    def dropout(self, name: str, x: str) -> str:
        # No ratio input: the default 0.5; Dropout is the identity at inference.
        return self.op("Dropout", name, x)

    def softmax(self, x: str, name: str = "softmax", out: str = "y") -> str:
        return self.op("Softmax", name, x, out=out, axis=-1)

    def add(self, name: str, a: str, b: str) -> str:
        return self.op("Add", name, a, b)

    def bn(
        self,
        name: str,
        x: str,
        n: int,
        *,
        epsilon: float = 1e-5,
        momentum: float = 0.9,
        param_dtype=np.float32,
        out: str | None = None,
        stats: Stats | None = None,
        training_mode: bool = False,
    ) -> str:
        """BatchNormalization with initializers `{name}.weight/.bias/.running_mean/.running_var`.

        stats: (gamma, beta, mean, var); drawn with bn_stats() when not given. training_mode=True is a PyTorch
        export without model.eval(): attribute training_mode=1 and the extra outputs
        `{name}.running_mean_out` and `{name}.running_var_out`.
        """
        stats = self.bn_stats(n) if stats is None else stats
        params = [self.init(f"{name}.{p}", a.astype(param_dtype)) for p, a in zip(BN_PARAMS, stats)]
        outputs = [out or name]
        attrs = {"epsilon": epsilon, "momentum": momentum}
        if training_mode:
            outputs += [f"{name}.running_mean_out", f"{name}.running_var_out"]
            attrs["training_mode"] = 1
        return self.node("BatchNormalization", [x, *params], outputs, name, **attrs)

    def _with_bias(self, name: str, x: str, w: str, n_out: int, bias: bool, dtype=np.float32) -> list[str]:
        """The inputs [x, W] and, if `bias`, a bias `{name}.bias` (drawn after the weight)."""
        return [x, w, self.bias(f"{name}.bias", n_out, dtype)] if bias else [x, w]

    @staticmethod
    def _window(k: int, stride: int, pad: int, group: int) -> dict:
        """The Conv / ConvTranspose attributes, always written out in full."""
        return {
            "kernel_shape": [k, k],
            "strides": [stride, stride],
            "pads": [pad, pad, pad, pad],
            "dilations": [1, 1],
            "group": group,
        }

    def conv(
        self,
        name: str,
        x: str,
        c_in: int,
        c_out: int,
        k: int,
        *,
        stride: int = 1,
        group: int = 1,
        bias: bool = False,
        dtype=np.float32,
        out: str | None = None,
    ) -> str:
        """k x k Conv with "same" padding (k // 2)."""
        w = self.weight(f"{name}.weight", (c_out, c_in // group, k, k), (c_in // group) * k * k, dtype)
        inputs = self._with_bias(name, x, w, c_out, bias, dtype)
        return self.op("Conv", name, *inputs, out=out, **self._window(k, stride, k // 2, group))

    def conv_transpose(self, name: str, x: str, c_in: int, c_out: int, k: int, *, stride: int, pad: int,
                       output_padding: int, group: int) -> str:
        """ConvTranspose with bias; its weight layout is [C_in, C_out / group, kH, kW]."""
        w = self.weight(f"{name}.weight", (c_in, c_out // group, k, k), c_in * k * k // group)
        inputs = self._with_bias(name, x, w, c_out, True)
        window = self._window(k, stride, pad, group)
        return self.op("ConvTranspose", name, *inputs, output_padding=[output_padding] * 2, **window)

    def gemm(self, name: str, x: str, n_in: int, n_out: int, *, trans_b: int = 1, bias: bool = True) -> str:
        shape = (n_out, n_in) if trans_b else (n_in, n_out)
        inputs = self._with_bias(name, x, self.weight(f"{name}.weight", shape, n_in), n_out, bias)
        return self.op("Gemm", name, *inputs, alpha=1.0, beta=1.0, transA=0, transB=trans_b)

    def conv_bn(self, tag: int | str, x: str, c_in: int, c_out: int, k: int = 3, *, stride: int = 1,
                group: int = 1, bias: bool = False, dtype=np.float32, **bn_kwargs) -> str:
        """conv{tag} -> bn{tag} (conv1 -> bn1, conv_down -> bn_down); bn_kwargs go to bn()."""
        t = self.conv(f"conv{tag}", x, c_in, c_out, k, stride=stride, group=group, bias=bias, dtype=dtype)
        return self.bn(f"bn{tag}", t, c_out, **bn_kwargs)

    def gemm_bn(self, tag: int | str, x: str, n_in: int, n_out: int, *, bias: bool = True, **bn_kwargs) -> str:
        """fc{tag} (transB=1) -> bn{tag}; bn_kwargs go to bn()."""
        return self.bn(f"bn{tag}", self.gemm(f"fc{tag}", x, n_in, n_out, bias=bias), n_out, **bn_kwargs)

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
        return helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", opset)],
            producer_name=PRODUCER_NAME,
            producer_version=PRODUCER_VERSION,
            ir_version=IR_VERSION,
            doc_string=doc,
        )


# File name (relative to the output directory) -> function that builds the model, in writing order.
SAMPLES: dict[str, Callable[[], onnx.ModelProto]] = {}


def sample(
    *,
    seed: int,
    doc: str,
    x: list,
    y: list,
    lint: bool = False,
    elem_type: int = FLOAT,
    extra_outputs: tuple[onnx.ValueInfoProto, ...] = (),
    opset: int = 17,
    initializers_as_inputs: bool = False,
):
    """Register `body(b: Builder)` as the sample `[lint/]<name>.onnx`, graph `<name>`, input x, output y."""

    def register(body: Callable[[Builder], None]) -> Callable[[], onnx.ModelProto]:
        def build() -> onnx.ModelProto:
            b = Builder(seed)
            body(b)
            inputs, outputs = [vi("x", elem_type, x)], [vi("y", elem_type, y), *extra_outputs]
            return b.model(body.__name__, doc, inputs, outputs, opset, initializers_as_inputs)

        build.__name__ = build.__qualname__ = body.__name__
        build.__doc__ = body.__doc__
        SAMPLES[("lint/" if lint else "") + body.__name__ + ".onnx"] = build
        return build

    return register


# =============================================================================================
# Fold samples (written next to this script)
# =============================================================================================
RESNET_BN_COUNT = 5


@sample(seed=1, x=["N", 16, 32, 32], y=["N", 32, 16, 16],
        doc="ResNet basic block (identity shortcut) followed by a downsampling block whose shortcut is "
        "a grouped (group=4) 1x1 stride-2 Conv + BN. Every BN follows a Conv directly.")
def resnet_block(b: Builder) -> None:
    # Block 1: identity shortcut, 16 channels, 32x32.
    t = b.conv_bn(1, "x", 16, 16, bias=True)  # bias before BN: redundant (BN001)
    t = b.relu("relu1", t)
    t = b.conv_bn(2, t, 16, 16)
    block1 = b.relu("relu2", b.add("add1", t, "x"))
    # Block 2: downsampling to 32 channels, 16x16.
    t = b.conv_bn(3, block1, 16, 32, stride=2)
    t = b.relu("relu3", t)
    t = b.conv_bn(4, t, 32, 32)
    # Grouped 1x1 projection shortcut.
    s = b.conv_bn("_down", block1, 16, 32, k=1, stride=2, group=4, epsilon=1e-3, momentum=0.99)
    b.relu("relu4", b.add("add2", t, s), out="y")
    assert sum(n.op_type == "BatchNormalization" for n in b.nodes) == RESNET_BN_COUNT


@sample(seed=2, x=["N", 8, 16, 16], y=["N", 16, 32, 32],
        doc="Grouped (group=2) stride-2 ConvTranspose with bias and output_padding, then BN and Relu.")
def convtranspose_bn(b: Builder) -> None:
    # out = (16 - 1) * 2 - 2 * 1 + 3 + 1 = 32
    t = b.conv_transpose("deconv1", "x", 8, 16, 3, stride=2, pad=1, output_padding=1, group=2)
    t = b.bn("bn1", t, 16)
    b.relu("relu1", t, out="y")


@sample(seed=3, x=["N", 64], y=["N", 32],
        doc="Gemm (transB=1, alpha=1, beta=1, C of shape [32]) then BN (epsilon 1e-3) on [N, C] and Relu.")
def gemm_bn(b: Builder) -> None:
    t = b.gemm_bn(1, "x", 64, 32, epsilon=1e-3)
    b.relu("relu1", t, out="y")


@sample(seed=4, x=["N", 64], y=["N", 32],
        doc="MatMul with a constant [64, 32] weight, Add of a [32] bias, then BN and Relu.")
def matmul_bn(b: Builder) -> None:
    t = b.op("MatMul", "matmul1", "x", b.weight("fc1.weight", (64, 32), 64))
    t = b.add("add1", t, b.bias("fc1.bias", 32))
    t = b.bn("bn1", t, 32)
    b.relu("relu1", t, out="y")


# BN after the activation: forward folding only.
@sample(seed=5, x=["N", 64], y=["N", 10],
        doc="MLP with BN placed after the Relu: each BN can only be folded forward into the next Gemm "
        "(fc2 has transB=0, fc3 has transB=1).")
def mlp_bn_after_relu(b: Builder) -> None:
    t = b.relu("relu1", b.gemm("fc1", "x", 64, 48))
    t = b.bn("bn1", t, 48)
    t = b.relu("relu2", b.gemm("fc2", t, 48, 32, trans_b=0))
    t = b.bn("bn2", t, 32, epsilon=1e-3)
    b.softmax(b.gemm("fc3", t, 32, 10))


# BN decomposed into Mul and Add by a Keras/TF export.
@sample(seed=6, x=[1, 32, 28, 28], y=[1, 64, 28, 28],
        doc="Depthwise Conv (group=32) followed by BN already decomposed into Mul and Add by [1, 32, 1, 1] "
        "constants (as a Keras/TF export leaves it), Relu, and a pointwise 1x1 Conv.")
def depthwise_mul_add(b: Builder) -> None:
    c = 32
    t = b.conv("dw_conv", "x", c, c, 3, group=c)
    gamma, beta, mean, var = b.bn_stats(c)
    scale = gamma / np.sqrt(var + KERAS_BN["epsilon"])
    shift = beta - mean * scale
    mul_c = b.init("bn.mul", scale.astype(np.float32).reshape(1, c, 1, 1))
    add_c = b.init("bn.add", shift.astype(np.float32).reshape(1, c, 1, 1))
    t = b.op("Mul", "bn_mul", t, mul_c)
    t = b.relu("relu1", b.add("bn_add", t, add_c))
    b.conv("pw_conv", t, c, 64, 1, bias=True, out="y")


# Must never be folded.
@sample(seed=7, x=["N", 3, 16, 16], y=["N", 8, 16, 16], opset=15,
        extra_outputs=(vi("bn1.running_mean_out", FLOAT, [8]), vi("bn1.running_var_out", FLOAT, [8])),
        doc="Conv then BatchNormalization with training_mode=1 whose updated running mean and variance are "
        "graph outputs: a training graph, not an inference graph.")
def training_mode_bn(b: Builder) -> None:
    b.relu("relu1", b.conv_bn(1, "x", 3, 8, training_mode=True), out="y")


# BatchNormalization-15: T1/T2 may differ from T.
@sample(seed=8, x=["N", 8, 16, 16], y=["N", 16, 16, 16], elem_type=FLOAT16, opset=15,
        doc="fp16 input and fp16 Conv weights; the following BN keeps fp32 scale, bias, mean and var "
        "(mixed types allowed since BatchNormalization-15).")
def fp16_conv_bn(b: Builder) -> None:
    t = b.conv_bn(1, "x", 8, 16, dtype=np.float16, param_dtype=np.float32)
    b.relu("relu1", t, out="y")


# =============================================================================================
# Lint samples (written to lint/): the classic Keras MLP, and one small model per lint rule.
# =============================================================================================
@sample(seed=101, x=["N", 20], y=["N", 2], lint=True,
        doc="The classic Keras MLP with BatchNormalization kept: Dense(64, use_bias=True) -> BN -> tanh -> "
        "Dropout, twice, then Dense(2) -> BN -> softmax. Dense is a Gemm with bias C; every node carries "
        "its Keras layer name in metadata_props['bnfold.keras_layer'].")
def classic_mlp(b: Builder) -> None:
    """The classic Keras example with BN kept, as tf2onnx-style Gemm (Dense kernel + bias C) nodes:

    Dense(64) -> BatchNormalization -> Activation("tanh") -> Dropout -> Dense(64) -> BatchNormalization ->
    Activation("tanh") -> Dropout -> Dense(2) -> BatchNormalization -> Activation("softmax").
    """
    t = b.gemm_bn(1, "x", 20, 64, **KERAS_BN)
    t = b.dropout("dropout1", b.tanh("tanh1", t))
    t = b.gemm_bn(2, t, 64, 64, **KERAS_BN)
    t = b.dropout("dropout2", b.tanh("tanh2", t))
    b.softmax(b.gemm_bn(3, t, 64, 2, **KERAS_BN))
    keras_names = {
        "fc1": "dense", "bn1": "batch_normalization", "tanh1": "activation", "dropout1": "dropout",
        "fc2": "dense_1", "bn2": "batch_normalization_1", "tanh2": "activation_1", "dropout2": "dropout_1",
        "fc3": "dense_2", "bn3": "batch_normalization_2", "softmax": "activation_2",
    }
    for node_name, layer in keras_names.items():
        b.meta(node_name, KERAS_LAYER, layer)


@sample(seed=111, x=["N", 3, 16, 16], y=["N", 8, 16, 16], lint=True,
        doc="BN001: conv1 has a bias and feeds bn1 directly; BN subtracts the mean, so the bias does nothing.")
def bn001_redundant_bias(b: Builder) -> None:
    t = b.conv_bn(1, "x", 3, 8, bias=True)  # the bias BN's beta makes redundant
    b.relu("relu1", t, out="y")


@sample(seed=112, x=["N", 32], y=["N", 4], lint=True,
        doc="BN002: the output layer fc2 -> bn2 -> softmax normalizes the logits with BatchNormalization.")
def bn002_batchnorm_before_softmax(b: Builder) -> None:
    t = b.relu("relu1", b.gemm_bn(1, "x", 32, 16, bias=False))
    b.softmax(b.gemm_bn(2, t, 16, 4, bias=False))  # bn2 normalizes the logits


@sample(seed=113, x=["N", 3, 16, 16], y=["N", 10], lint=True,
        doc="BN003: conv1 and conv3 are followed by BatchNormalization, conv2 -> relu2 is not. The fc -> softmax "
        "head has no BN either, which is right (exempt).")
def bn003_missing_batchnorm(b: Builder) -> None:
    t = b.relu("relu1", b.conv_bn(1, "x", 3, 8))
    t = b.relu("relu2", b.conv("conv2", t, 8, 8, 3, bias=True))  # the one block without BN
    t = b.relu("relu3", b.conv_bn(3, t, 8, 8))
    t = b.op("GlobalAveragePool", "gap", t)
    t = b.op("Flatten", "flatten", t, axis=1)
    b.softmax(b.gemm("fc", t, 8, 10))  # output head: exempt


@sample(seed=114, x=["N", 32], y=["N", 10], lint=True,
        doc="BN004: bn1 and bn2 sit between the Gemm and its Relu, bn3 after relu3.")
def bn004_inconsistent_placement(b: Builder) -> None:
    t = b.relu("relu1", b.gemm_bn(1, "x", 32, 32, bias=False))  # BN before the activation
    t = b.relu("relu2", b.gemm_bn(2, t, 32, 32, bias=False))  # BN before the activation
    t = b.relu("relu3", b.gemm("fc3", t, 32, 32))
    t = b.bn("bn3", t, 32)  # after the activation: the odd one out
    b.softmax(b.gemm("fc4", t, 32, 10))


@sample(seed=115, x=["N", 32], y=["N", 10], lint=True,
        doc="BN005: fc1 -> relu1 -> dropout1 -> bn1 -> fc2 -> softmax: Dropout feeds BatchNormalization.")
def bn005_dropout_before_batchnorm(b: Builder) -> None:
    t = b.relu("relu1", b.gemm("fc1", "x", 32, 32))
    t = b.dropout("dropout1", t)
    t = b.bn("bn1", t, 32)  # sees dropout's extra variance during training only
    b.softmax(b.gemm("fc2", t, 32, 10))


@sample(seed=116, x=["N", 3, 16, 16], y=["N", 8, 16, 16], lint=True, opset=15,
        doc="BN006: bn1 has training_mode=1 (a PyTorch export without model.eval()): it normalizes with the "
        "statistics of each batch. Its running mean/var outputs are unused.")
def bn006_batchnorm_in_training_mode(b: Builder) -> None:
    # training_mode=1 needs all three outputs; the updated running mean and variance are left unused.
    b.relu("relu1", b.conv_bn(1, "x", 3, 8, training_mode=True), out="y")


@sample(seed=117, x=["N", 32], y=["N", 4], lint=True,
        doc="BN007: bn1 has moving mean exactly 0 and moving variance exactly 1 (trained gamma and beta).")
def bn007_untrained_statistics(b: Builder) -> None:
    t = b.gemm("fc1", "x", 32, 16, bias=False)
    gamma, beta, _mean, _var = b.bn_stats(16)
    # gamma/beta were trained, the moving statistics never updated (tf.layers without UPDATE_OPS).
    t = b.bn("bn1", t, 16, epsilon=1e-3, stats=(gamma, beta, np.zeros(16), np.ones(16)))
    t = b.relu("relu1", t)
    b.softmax(b.gemm("fc2", t, 16, 4))


@sample(seed=118, x=["N", 3, 16, 16], y=["N", 8, 16, 16], lint=True,
        doc="BN008: bn1's running variance is negative in channel 2, so that channel's output is NaN.")
def bn008_degenerate_statistics(b: Builder) -> None:
    t = b.conv("conv1", "x", 3, 8, 3)
    gamma, beta, mean, var = b.bn_stats(8)
    var[2] = -0.25  # never valid: onnxruntime computes sqrt(var + eps) = NaN for channel 2
    b.relu("relu1", b.bn("bn1", t, 8, stats=(gamma, beta, mean, var)), out="y")


@sample(seed=119, x=["N", 3, 16, 16], y=["N", 8, 16, 16], lint=True,
        doc="BN009: two Conv -> BN -> Relu blocks; both BN fold backward into their Conv.")
def bn009_unfolded_batchnorm(b: Builder) -> None:
    t = b.relu("relu1", b.conv_bn(1, "x", 3, 8))
    b.relu("relu2", b.conv_bn(2, t, 8, 8), out="y")


@sample(seed=120, x=["N", 3, 16, 16], y=["N", 8, 16, 16], lint=True,
        doc="BN010: conv1 -> bn1 -> bn2 -> relu1: two BatchNormalization in a row.")
def bn010_consecutive_batchnorm(b: Builder) -> None:
    t = b.bn("bn2", b.conv_bn(1, "x", 3, 8), 8)  # bn2 re-normalizes bn1's output
    b.relu("relu1", t, out="y")


@sample(seed=121, x=["N", 20], y=["N", 2], lint=True,
        doc="BN011: bn_input normalizes the model input x with learned statistics (instead of preprocessing).")
def bn011_batchnorm_on_model_input(b: Builder) -> None:
    t = b.bn("bn_input", "x", 20, **KERAS_BN)  # Keras BatchNormalization as the first layer
    t = b.relu("relu1", b.gemm("fc1", t, 20, 32))
    b.softmax(b.gemm("fc2", t, 32, 2))


@sample(seed=122, x=["N", 3, 16, 16], y=["N", 8, 16, 16], lint=True, initializers_as_inputs=True,
        doc="BN012: ir_version 8, but every initializer (conv1.weight and bn1's four parameters) is also listed "
        "as a graph input, as torch.onnx.export(..., keep_initializers_as_inputs=True) writes it.")
def bn012_overridable_parameters(b: Builder) -> None:
    b.relu("relu1", b.conv_bn(1, "x", 3, 8), out="y")


@sample(seed=123, x=["N", 3, 16, 16], y=["N", 8, 16, 16], lint=True,
        doc="BN015: bn1's running variance is 1e-4 in channel 5 (a dead channel): folding it into conv1 "
        "widens the weight's per-tensor range 46x.")
def bn015_batchnorm_inflates_folded_weight_range(b: Builder) -> None:
    t = b.conv("conv1", "x", 3, 8, 3)
    gamma, beta, mean, var = b.bn_stats(8)
    var[5] = 1e-4
    b.relu("relu1", b.bn("bn1", t, 8, stats=(gamma, beta, mean, var)), out="y")


@sample(seed=124, x=["N", 3, 16, 16], y=["N", 8, 16, 16], lint=True,
        doc="BN016: bn1's moving mean is 0.5 and its moving variance 2.0 in all 8 channels (placeholders a "
        "converter filled in), with trained gamma and beta.")
def bn016_placeholder_batchnorm_statistics(b: Builder) -> None:
    t = b.conv("conv1", "x", 3, 8, 3)
    gamma, beta, _mean, _var = b.bn_stats(8)
    b.relu("relu1", b.bn("bn1", t, 8, stats=(gamma, beta, np.full(8, 0.5), np.full(8, 2.0))), out="y")


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

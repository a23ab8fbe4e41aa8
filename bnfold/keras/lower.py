"""Lower a Keras layer graph into the onnx-ir graph the lint rules read, structurally and without running it.

Each layer becomes the ONNX ops it computes (Dense -> Gemm or MatMul+Add, Conv2D -> Conv with its weight in
ONNX's [out, in, k...] layout, DepthwiseConv2D -> Conv(group=C), SeparableConv2D -> depthwise + pointwise
Conv, `activation=` -> a separate activation node, Dropout family -> Dropout, BatchNormalization -> BN with
its four variables). Keras tensors are channels-last; the lowered graph puts channels on axis 1, as ONNX
does, so a BN over Keras' last axis is an ONNX BN and a BN over any other axis is not (it stays a
`keras.BatchNormalization` node with its axis, for the rule that flags it). Anything else — Lambda, custom
and unknown layers, RNNs — becomes an opaque node in the "keras" domain: a barrier to every rule, never
executed. Weights are lazy tensors: read from the file only when a rule asks for their values.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from bnfold.keras.files import KerasFile
from bnfold.keras.graph import Call, LayerGraph
from bnfold.lint.bn013_batchnorm_axis_not_channels import KERAS_DOMAIN as OPAQUE_DOMAIN
from bnfold.lint.context import KERAS_CLASS_KEY, KERAS_FORMAT_KEY, KERAS_LAYER_KEY, SOURCE_KEY

ACTIVATIONS = {
    "relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "softmax": "Softmax", "log_softmax": "LogSoftmax",
    "elu": "Elu", "selu": "Selu", "softplus": "Softplus", "softsign": "Softsign", "gelu": "Gelu",
    "hard_sigmoid": "HardSigmoid", "hard_swish": "HardSwish", "hard_silu": "HardSwish", "leaky_relu": "LeakyRelu",
    "relu6": "Clip", "swish": "Swish", "silu": "Swish", "mish": "Mish", "exponential": "Exp",
}
ACTIVATION_LAYERS = {"ReLU": "Relu", "LeakyReLU": "LeakyRelu", "PReLU": "PRelu", "ELU": "Elu",
                     "Softmax": "Softmax", "ThresholdedReLU": "ThresholdedRelu"}
DROPOUTS = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
            "AlphaDropout", "GaussianNoise", "ActivityRegularization"}
CONVS = {"Conv1D": 1, "Conv2D": 2, "Conv3D": 3, "Convolution1D": 1, "Convolution2D": 2, "Convolution3D": 3}
TRANSPOSED = {"Conv1DTranspose": 1, "Conv2DTranspose": 2, "Conv3DTranspose": 3, "Convolution2DTranspose": 2}
POOLS = {"MaxPooling1D": "MaxPool", "MaxPooling2D": "MaxPool", "MaxPooling3D": "MaxPool", "MaxPool2D": "MaxPool",
         "AveragePooling1D": "AveragePool", "AveragePooling2D": "AveragePool", "AveragePooling3D": "AveragePool",
         "AvgPool2D": "AveragePool"}
GLOBAL_POOLS = {"GlobalAveragePooling1D": "GlobalAveragePool", "GlobalAveragePooling2D": "GlobalAveragePool",
                "GlobalAveragePooling3D": "GlobalAveragePool", "GlobalMaxPooling1D": "GlobalMaxPool",
                "GlobalMaxPooling2D": "GlobalMaxPool", "GlobalMaxPooling3D": "GlobalMaxPool",
                "GlobalAvgPool2D": "GlobalAveragePool", "GlobalMaxPool2D": "GlobalMaxPool"}
LINEAR_LAYERS = {"Dense", *CONVS, *TRANSPOSED, "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
                 "SeparableConv2D", "BatchNormalization"}
MERGES = {"Add": "Add", "Multiply": "Mul", "Subtract": "Sub", "Maximum": "Max", "Minimum": "Min",
          "Average": "Mean", "Concatenate": "Concat"}


def lower(graph: LayerGraph, weights: KerasFile, name: str) -> ir.Model:
    return _Lowering(weights).run(graph, name)


class _Lowering:
    def __init__(self, weights: KerasFile) -> None:
        self.weights = weights
        self.values: dict[str, ir.Value] = {}
        self.ranks: dict[str, int | None] = {}
        self.nodes: list[ir.Node] = []
        self.initializers: list[ir.Value] = []

    def run(self, graph: LayerGraph, name: str) -> ir.Model:
        inputs = []
        for tensor, config in graph.inputs:
            shape = config.get("batch_shape") or config.get("batch_input_shape")
            dims = _channels_first([d if isinstance(d, int) else None for d in shape]) if shape else None
            value = ir.Value(name=tensor.split(":")[0], type=ir.TensorType(ir.DataType.FLOAT),
                             shape=ir.Shape([d if d is not None else "N" for d in dims]) if dims else None)
            self.values[tensor], self.ranks[tensor] = value, len(dims) if dims else None
            inputs.append(value)
        pending = list(graph.calls)
        while pending:  # configs list layers in call order, but do not rely on it
            ready = [c for c in pending if all(t in self.values for t in c.inputs)]
            if not ready:
                raise ValueError(f"layer {pending[0].layer!r} reads a tensor no layer produces")
            for call in ready:
                self._lower(call)
            pending = [c for c in pending if c not in ready]
        outputs = [self.values[t] for t in graph.outputs]
        ir_graph = ir.Graph(inputs, outputs, nodes=self.nodes, initializers=self.initializers,
                            opset_imports={"": 17, OPAQUE_DOMAIN: 1}, name=name)
        return ir.Model(ir_graph, ir_version=8, producer_name="bnfold-keras",
                        metadata_props={SOURCE_KEY: "keras", KERAS_FORMAT_KEY: self.weights.format})

    # -- helpers ---------------------------------------------------------------------------------------

    def _node(self, call: Call, op: str, inputs: list, attrs=(), *, suffix: str = "", domain: str = "",
              out: str | None = None) -> ir.Value:
        node = ir.Node(domain, op, inputs, attributes=list(attrs), name=call.layer + suffix, num_outputs=1,
                       metadata_props={KERAS_LAYER_KEY: call.layer, KERAS_CLASS_KEY: call.cls})
        node.outputs[0].name = out or f"{call.layer}{suffix}:out"
        self.nodes.append(node)
        return node.outputs[0]

    def _weight(self, call: Call, variable: str, transform=None) -> ir.Value | None:
        """A layer variable as a lazy initializer, in ONNX layout (`transform` maps the Keras array)."""
        named = _variable_names(self.weights, call)
        if variable not in named:
            return None
        index, shape = named[variable]
        layer = call.layer
        out_shape = np.empty(shape, dtype=np.uint8)
        out_shape = transform(out_shape).shape if transform is not None else shape

        def load(layer=layer, index=index, transform=transform):
            array = np.asarray(self.weights.read(layer, index), dtype=np.float32)
            return ir.Tensor(np.ascontiguousarray(transform(array) if transform is not None else array))

        value = ir.Value(name=f"{layer}/{variable}", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(out_shape),
                         const_value=ir.LazyTensor(load, ir.DataType.FLOAT, ir.Shape(out_shape)))
        self.initializers.append(value)
        return value

    def _constant(self, name: str, array: np.ndarray) -> ir.Value:
        tensor = ir.Tensor(np.asarray(array))
        value = ir.Value(name=name, type=ir.TensorType(tensor.dtype), shape=tensor.shape, const_value=tensor)
        self.initializers.append(value)
        return value

    def _activation(self, call: Call, x: ir.Value, activation, suffix: str = "/activation") -> ir.Value:
        if isinstance(activation, dict):  # Keras 3 may serialize a function as {"class_name": ..., "config": ...}
            activation = activation.get("config", activation.get("class_name"))
        if activation in (None, "linear"):
            return x
        op = ACTIVATIONS.get(str(activation))
        if op is None:
            return self._node(call, str(activation), [x], suffix=suffix, domain=OPAQUE_DOMAIN)
        if op == "Clip":
            return self._node(call, "Clip", [x, self._constant(f"{call.layer}/min", np.float32(0)),
                                             self._constant(f"{call.layer}/max", np.float32(6))], suffix=suffix)
        return self._node(call, op, [x], suffix=suffix)

    # -- layers ----------------------------------------------------------------------------------------

    def _lower(self, call: Call) -> None:
        xs = [self.values[t] for t in call.inputs]
        rank = self.ranks.get(call.inputs[0]) if call.inputs else None
        cls, cfg = call.cls, call.config
        out_rank = rank
        if cls in LINEAR_LAYERS and not _variable_names(self.weights, call):
            cls = "WeightsMissing"  # a config without its weights file: nothing to lint in this layer
        if cls == "Dense":
            y = self._dense(call, xs[0], rank)
        elif cls in CONVS or cls in TRANSPOSED or cls in ("DepthwiseConv1D", "DepthwiseConv2D",
                                                           "SeparableConv1D", "SeparableConv2D"):
            y = self._conv(call, xs[0])
        elif cls == "BatchNormalization":
            y = self._batchnorm(call, xs[0], rank)
        elif cls == "Activation":
            y = self._activation(call, xs[0], cfg.get("activation"), suffix="")
            if y is xs[0]:
                y = self._node(call, "Identity", [xs[0]])
        elif cls in ACTIVATION_LAYERS:
            op = ACTIVATION_LAYERS[cls]
            if cls == "ReLU" and cfg.get("max_value") is not None:
                y = self._node(call, "Clip", [xs[0], self._constant(f"{call.layer}/min", np.float32(0)),
                                              self._constant(f"{call.layer}/max", np.float32(cfg["max_value"]))])
            elif op == "PRelu":
                y = self._node(call, op, [xs[0], self._weight(call, "alpha")])
            else:
                y = self._node(call, op, [xs[0]])
        elif cls in DROPOUTS:
            y = self._node(call, "Dropout", [xs[0]])
        elif cls == "Flatten":
            y, out_rank = self._node(call, "Flatten", [xs[0]]), 2
        elif cls == "Reshape":
            target = [0, *[int(d) for d in cfg.get("target_shape", [])]]
            y = self._node(call, "Reshape", [xs[0], self._constant(f"{call.layer}/shape", np.array(target))])
            out_rank = len(target)
        elif cls == "Permute":
            y = self._node(call, "Transpose", [xs[0]], [ir.AttrInt64s("perm", [0, *cfg.get("dims", [])])])
        elif cls in POOLS:
            size = _tuple(cfg.get("pool_size", 2), (rank or 4) - 2)
            y = self._node(call, POOLS[cls], [xs[0]], [ir.AttrInt64s("kernel_shape", size)])
        elif cls in GLOBAL_POOLS:
            pooled = self._node(call, GLOBAL_POOLS[cls], [xs[0]])
            y = pooled if cfg.get("keepdims") else self._node(call, "Flatten", [pooled], suffix="/flatten")
            out_rank = rank if cfg.get("keepdims") else 2
        elif cls in ("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D"):
            y = self._node(call, "Pad", [xs[0]])  # zeros around the image: rank and channels stay
        elif cls in MERGES:
            attrs = [ir.AttrInt64("axis", 1)] if cls == "Concatenate" else []
            y = self._node(call, MERGES[cls], xs, attrs)
        elif cls in ("Rescaling",):
            scaled = self._node(call, "Mul", [xs[0], self._constant(f"{call.layer}/scale",
                                                                    np.float32(cfg.get("scale", 1.0)))])
            y = self._node(call, "Add", [scaled, self._constant(f"{call.layer}/offset",
                                                                np.float32(cfg.get("offset", 0.0)))], suffix="/add")
        else:  # Lambda, custom, unknown, recurrent: a barrier, never executed
            y, out_rank = self._node(call, cls, xs, domain=OPAQUE_DOMAIN), None
        tensor = call.outputs[0]
        self.values[tensor], self.ranks[tensor] = y, out_rank

    def _dense(self, call: Call, x: ir.Value, rank: int | None) -> ir.Value:
        kernel = self._weight(call, "kernel")
        bias = self._weight(call, "bias") if call.config.get("use_bias", True) else None
        if rank == 2:
            y = self._node(call, "Gemm", [x, kernel] + ([bias] if bias is not None else []))
        else:
            y = self._node(call, "MatMul", [x, kernel])
            if bias is not None:
                y = self._node(call, "Add", [y, bias], suffix="/bias")
        return self._activation(call, y, call.config.get("activation"))

    def _conv(self, call: Call, x: ir.Value) -> ir.Value:
        cls, cfg = call.cls, call.config
        dims = CONVS.get(cls) or TRANSPOSED.get(cls) or int(cls[-2])
        attrs = _conv_attributes(cfg, dims)
        spatial = tuple(range(dims))
        if cls.startswith("Separable") or cls.startswith("Depthwise"):
            depth = self._weight(call, "depthwise_kernel", _depthwise_layout(dims))
            channels = depth.shape[0] // int(cfg.get("depth_multiplier", 1)) if depth is not None else 1
            group = [ir.AttrInt64("group", channels)]
            if cls.startswith("Depthwise"):
                bias = self._weight(call, "bias") if cfg.get("use_bias", True) else None
                y = self._node(call, "Conv", [x, depth] + ([bias] if bias is not None else []), attrs + group)
            else:
                mid = self._node(call, "Conv", [x, depth], attrs + group, suffix="/depthwise")
                point = self._weight(call, "pointwise_kernel", lambda a: a.transpose(dims + 1, dims, *spatial))
                bias = self._weight(call, "bias") if cfg.get("use_bias", True) else None
                y = self._node(call, "Conv", [mid, point] + ([bias] if bias is not None else []))
        else:
            transposed = cls in TRANSPOSED
            # Keras: [k..., in, out] (transposed: [k..., out, in]); ONNX: [out, in, k...] (transposed: [in, out, k...])
            kernel = self._weight(call, "kernel", lambda a: a.transpose(dims + 1, dims, *spatial))
            bias = self._weight(call, "bias") if cfg.get("use_bias", True) else None
            groups = [ir.AttrInt64("group", int(cfg["groups"]))] if int(cfg.get("groups", 1) or 1) > 1 else []
            y = self._node(call, "ConvTranspose" if transposed else "Conv",
                           [x, kernel] + ([bias] if bias is not None else []), attrs + groups)
        return self._activation(call, y, cfg.get("activation"))

    def _batchnorm(self, call: Call, x: ir.Value, rank: int | None) -> ir.Value:
        cfg = call.config
        if call.input_shape and not isinstance(call.input_shape[0], list):
            rank = len(call.input_shape)
        axis = cfg.get("axis", -1)
        axes = axis if isinstance(axis, list) else [axis]
        gamma = self._weight(call, "gamma")
        beta = self._weight(call, "beta")
        mean, var = self._weight(call, "moving_mean"), self._weight(call, "moving_variance")
        channels = mean.shape[0] if mean is not None else None
        if gamma is None and channels is not None:  # scale=False
            gamma = self._constant(f"{call.layer}/gamma", np.ones(channels, np.float32))
        if beta is None and channels is not None:  # center=False
            beta = self._constant(f"{call.layer}/beta", np.zeros(channels, np.float32))
        attrs = [ir.AttrFloat32("epsilon", float(cfg.get("epsilon", 1e-3))),
                 ir.AttrFloat32("momentum", float(cfg.get("momentum", 0.99)))]
        # With the rank unknown (after a layer bnfold cannot see through) a positive axis cannot be proved wrong.
        on_channels = len(axes) == 1 and (axes[0] == -1 or rank is None or axes[0] == rank - 1)
        if call.kwargs.get("training") is True:
            attrs.append(ir.AttrInt64("training_mode", 1))
        if not on_channels or None in (gamma, beta, mean, var):
            attrs.append(ir.AttrInt64s("axis", [int(a) for a in axes]))
            return self._node(call, "BatchNormalization", [x, gamma, beta, mean, var], attrs, domain=OPAQUE_DOMAIN)
        return self._node(call, "BatchNormalization", [x, gamma, beta, mean, var], attrs)


def _variable_names(weights: KerasFile, call: Call) -> dict[str, tuple[int, tuple[int, ...]]]:
    """A layer's variables by name. Legacy files store the names; Keras 3 files number them in the order
    the layer creates them, which depends on its config (BN without `scale` has no gamma)."""
    stored = weights.variables(call.layer)
    if weights.format == "legacy":
        return {name: (i, shape) for i, (name, shape) in enumerate(stored)}
    cfg, cls = call.config, call.cls
    if cls == "BatchNormalization":
        order = (["gamma"] if cfg.get("scale", True) else []) + (["beta"] if cfg.get("center", True) else []) + \
            ["moving_mean", "moving_variance"]
    elif cls.startswith("Separable"):
        order = ["depthwise_kernel", "pointwise_kernel", "bias"]
    elif cls.startswith("Depthwise"):
        order = ["depthwise_kernel", "bias"]
    elif cls == "PReLU":
        order = ["alpha"]
    else:
        order = ["kernel", "bias"]
    return {name: (i, shape) for i, (name, (_, shape)) in enumerate(zip(order, stored))}


def _depthwise_layout(dims: int):
    """Keras depthwise [k..., in, multiplier] -> ONNX grouped Conv [in * multiplier, 1, k...]."""
    def transform(a):
        spatial = a.shape[:dims]
        moved = a.transpose(dims, dims + 1, *range(dims))  # [in, mult, k...]
        return moved.reshape(-1, 1, *spatial)
    return transform


def _conv_attributes(cfg: dict, dims: int) -> list:
    kernel = _tuple(cfg.get("kernel_size", 1), dims)
    attrs = [ir.AttrInt64s("kernel_shape", kernel), ir.AttrInt64s("strides", _tuple(cfg.get("strides", 1), dims)),
             ir.AttrInt64s("dilations", _tuple(cfg.get("dilation_rate", 1), dims))]
    padding = cfg.get("padding", "valid")
    if padding == "same":
        attrs.append(ir.AttrString("auto_pad", "SAME_UPPER"))
    elif padding == "causal":
        attrs.append(ir.AttrInt64s("pads", [(kernel[0] - 1) * _tuple(cfg.get("dilation_rate", 1), 1)[0], 0]))
    else:
        attrs.append(ir.AttrInt64s("pads", [0] * (2 * dims)))
    return attrs


def _tuple(value, n: int) -> list[int]:
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)] * n


def _channels_first(dims: list) -> list:
    return [dims[0], dims[-1], *dims[1:-1]] if len(dims) >= 3 else dims

"""Shared builders and assertions for the fold tests.

Models are built with ``onnx.helper`` and numpy (seeded), checked with ``onnx.checker`` (full check) and run
in onnxruntime with every graph optimization disabled: at the default level onnxruntime fuses Conv+BN by
itself, which would make a before/after comparison circular.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from bnfold.fold.result import FOLDED, SKIPPED

OPSET = 17
IR_VERSION = 8

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
DOUBLE = TensorProto.DOUBLE
BOOL = TensorProto.BOOL
INT64 = TensorProto.INT64

# (rtol, atol) per output dtype.
TOLERANCES = {
    np.dtype(np.float16): (1e-2, 1e-3),
    np.dtype(np.float32): (1e-4, 1e-5),
    np.dtype(np.float64): (1e-7, 1e-9),
}

LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


# --------------------------------------------------------------------------------------------------------
# numbers


def make_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def bn_stats(rng: np.random.Generator, channels: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """Realistic inference statistics: gamma U(0.5,1.5), beta N(0,.1), mean N(0,.5), var U(0.5,2)."""
    return {
        "scale": rng.uniform(0.5, 1.5, channels).astype(dtype),
        "bias": rng.normal(0.0, 0.1, channels).astype(dtype),
        "mean": rng.normal(0.0, 0.5, channels).astype(dtype),
        "var": rng.uniform(0.5, 2.0, channels).astype(dtype),
    }


def weights(rng: np.random.Generator, shape: Sequence[int], dtype=np.float32, fan_in: int | None = None):
    """He-style weights so activations stay O(1) whatever the layer size."""
    if fan_in is None:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return (rng.normal(0.0, 1.0, shape) * np.sqrt(1.0 / max(fan_in, 1))).astype(dtype)


def np_dtype(elem_type: int) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def elem_type(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


# --------------------------------------------------------------------------------------------------------
# building graphs


class GraphBuilder:
    """Collects nodes, initializers and graph inputs/outputs; `model()` makes a checked ModelProto."""

    def __init__(self, name: str = "g"):
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.value_info: list[onnx.ValueInfoProto] = []

    def input(self, name: str, elem: int, shape: Sequence[int | str] | None) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))
        return name

    def init(self, name: str, array) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str] | str | None = None,
             name: str | None = None, domain: str = "", **attrs) -> str:
        """Add a node; returns its first output. Output defaults to `<name>_out`."""
        if name is None:
            name = f"{op_type.lower()}{len(self.nodes)}"
        if outputs is None:
            outputs = [f"{name}_out"]
        elif isinstance(outputs, str):
            outputs = [outputs]
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=name, domain=domain,
                                           **attrs))
        return outputs[0]

    def output(self, name: str, elem: int | None = None, shape: Sequence[int | str] | None = None) -> str:
        """Declare a graph output; elem/shape left None are filled in by shape inference in `model()`."""
        self.outputs.append(helper.make_tensor_value_info(name, elem or TensorProto.UNDEFINED, shape))
        return name

    def vinfo(self, name: str, elem: int, shape: Sequence[int] | None) -> None:
        self.value_info.append(helper.make_tensor_value_info(name, elem, shape))

    # convenience blocks --------------------------------------------------------------------------------

    def bn(self, x: str, stats: dict[str, np.ndarray], name: str = "bn", out: str | None = None,
           epsilon: float | None = None, **attrs) -> str:
        """BatchNormalization with its four parameters as initializers `<name>_scale` etc."""
        params = [self.init(f"{name}_{k}", stats[k]) for k in ("scale", "bias", "mean", "var")]
        if epsilon is not None:
            attrs["epsilon"] = epsilon
        return self.node("BatchNormalization", [x, *params], out or f"{name}_out", name=name, **attrs)

    def graph(self) -> onnx.GraphProto:
        return helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers,
                                 value_info=self.value_info)

    def model(self, opset: int = OPSET, ir_version: int = IR_VERSION,
              initializers_as_inputs: bool = False) -> onnx.ModelProto:
        graph = self.graph()
        if initializers_as_inputs:
            for init in graph.initializer:
                graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, init.dims))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  ir_version=ir_version, producer_name="bnfold-tests")
        return finish_model(model)


def finish_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fill in missing graph-output types from shape inference (in every subgraph too), then full-check."""
    inferred = onnx.shape_inference.infer_shapes(model)
    _copy_output_types(inferred.graph, model.graph)
    onnx.checker.check_model(model, full_check=True)
    return model


def _copy_output_types(src: onnx.GraphProto, dst: onnx.GraphProto) -> None:
    for s, d in zip(src.output, dst.output):
        tt = d.type.tensor_type
        if tt.elem_type == TensorProto.UNDEFINED or not tt.HasField("shape"):
            d.type.CopyFrom(s.type)
    for s_node, d_node in zip(src.node, dst.node):
        for s_attr, d_attr in zip(s_node.attribute, d_node.attribute):
            if d_attr.type == onnx.AttributeProto.GRAPH:
                _copy_output_types(s_attr.g, d_attr.g)


def conv_out(size: int, k: int, stride: int = 1, pad: int = 0, dilation: int = 1) -> int:
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


# --------------------------------------------------------------------------------------------------------
# running


def ort_session(model: onnx.ModelProto | str | os.PathLike) -> ort.InferenceSession:
    """A CPU session with ORT_DISABLE_ALL for a ModelProto or a model file path."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else os.fspath(model)
    return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])


def ort_run(model: onnx.ModelProto | str | os.PathLike, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run with ORT_DISABLE_ALL on the CPU provider; returns every graph output in order."""
    return ort_session(model).run(None, feeds)


def initializer_names(graph: onnx.GraphProto) -> set[str]:
    return {init.name for init in graph.initializer}


def real_inputs(graph: onnx.GraphProto) -> list[str]:
    """Graph inputs that are not initializers (what a caller must feed)."""
    inits = initializer_names(graph)
    return [i.name for i in graph.input if i.name not in inits]


def random_feeds(model: onnx.ModelProto, seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Seeded random values for every real graph input (symbolic dims -> 1; bool -> True)."""
    rng = make_rng(seed)
    inits = initializer_names(model.graph)
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim]
        dtype = np_dtype(tt.elem_type)
        if dtype == np.bool_:
            feeds[vi.name] = np.ones(shape, dtype=bool)
        else:
            feeds[vi.name] = (rng.normal(0.0, 1.0, shape) * scale).astype(dtype)
    return feeds


def check_reference(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The un-folded model must itself be valid and runnable, or the test is wrong, not the engine."""
    onnx.checker.check_model(proto, full_check=True)
    return ort_run(proto, feeds)


# --------------------------------------------------------------------------------------------------------
# folding


def fold_copy(proto: onnx.ModelProto, **kwargs):
    """Fold a deep copy of `proto` through onnx-ir; returns (folded ModelProto, FoldResult)."""
    import onnx_ir as ir

    from bnfold.fold import fold_model

    model = ir.from_proto(copy.deepcopy(proto))
    result = fold_model(model, **kwargs)
    return ir.to_proto(model), result


def analyze_copy(proto: onnx.ModelProto, **kwargs):
    import onnx_ir as ir

    from bnfold.fold import analyze_model

    return analyze_model(ir.from_proto(copy.deepcopy(proto)), **kwargs)


def all_graphs(graph: onnx.GraphProto) -> Iterable[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from all_graphs(g)


def all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    return [n for g in all_graphs(graph) for n in g.node]


def count_op(model: onnx.ModelProto, op_type: str) -> int:
    return sum(n.op_type == op_type for n in all_nodes(model.graph))


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def dead_initializers(model: onnx.ModelProto) -> list[str]:
    """Initializers (in any graph) that no node in any graph reads and that are not a graph output."""
    used: set[str] = set()
    for g in all_graphs(model.graph):
        used.update(i for n in g.node for i in n.input if i)
        used.update(o.name for o in g.output)
    return [init.name for g in all_graphs(model.graph) for init in g.initializer if init.name not in used]


def find_node(model_or_graph, name: str) -> onnx.NodeProto:
    graph = model_or_graph.graph if isinstance(model_or_graph, onnx.ModelProto) else model_or_graph
    hits = [n for n in all_nodes(graph) if n.name == name]
    assert len(hits) == 1, f"expected one node named {name!r}, found {len(hits)}"
    return hits[0]


def nodes_of(model: onnx.ModelProto, op_type: str) -> list[onnx.NodeProto]:
    return [n for n in all_nodes(model.graph) if n.op_type == op_type]


def constant_value(model: onnx.ModelProto, name: str) -> np.ndarray:
    """Value of `name` if it is an initializer (any graph) or the output of a Constant node."""
    for g in all_graphs(model.graph):
        for init in g.initializer:
            if init.name == name:
                return numpy_helper.to_array(init)
        for n in g.node:
            if n.op_type == "Constant" and n.output[0] == name:
                return numpy_helper.to_array(n.attribute[0].t)
    raise AssertionError(f"{name!r} is not a constant")


def constant_elem_type(model: onnx.ModelProto, name: str) -> int:
    for g in all_graphs(model.graph):
        for init in g.initializer:
            if init.name == name:
                return init.data_type
        for n in g.node:
            if n.op_type == "Constant" and n.output[0] == name:
                return n.attribute[0].t.data_type
    raise AssertionError(f"{name!r} is not a constant")


def _io_signature(values) -> list[tuple[str, int]]:
    return [(v.name, v.type.tensor_type.elem_type) for v in values]


def assert_outputs_close(expected: list[np.ndarray], actual: list[np.ndarray], rtol=None, atol=None,
                         what: str = "folded") -> None:
    assert len(expected) == len(actual)
    for i, (e, a) in enumerate(zip(expected, actual)):
        assert e.dtype == a.dtype, f"output {i}: dtype {a.dtype} != {e.dtype}"
        assert e.shape == a.shape, f"output {i}: shape {a.shape} != {e.shape}"
        r, t = TOLERANCES.get(e.dtype, (1e-4, 1e-5))
        r = r if rtol is None else rtol
        t = t if atol is None else atol
        np.testing.assert_allclose(a, e, rtol=r, atol=t, equal_nan=True,
                                   err_msg=f"{what} output {i} differs (rtol={r}, atol={t})")


def assert_fold_equal(proto: onnx.ModelProto, feeds: dict[str, np.ndarray] | Sequence[dict], *,
                      bn_left: int = 0, rtol: float | None = None, atol: float | None = None,
                      **fold_kwargs):
    """Fold a copy of `proto` and check it computes the same function and is still a clean model.

    `feeds` may be one feed dict or several (e.g. both branches of an If). Returns (folded, result).
    """
    feed_list = [feeds] if isinstance(feeds, dict) else list(feeds)
    references = [check_reference(proto, f) for f in feed_list]
    original = copy.deepcopy(proto)

    folded, result = fold_copy(proto, **fold_kwargs)

    assert proto == original, "fold_copy mutated the caller's proto"
    assert count_op(folded, "BatchNormalization") == bn_left, (
        f"{count_op(folded, 'BatchNormalization')} BatchNormalization left, expected {bn_left}; "
        f"decisions: {result.decisions}")
    onnx.checker.check_model(folded, full_check=True)

    # Interface: real inputs, outputs (names, order, elem types), opset, ir_version.
    assert real_inputs(folded.graph) == real_inputs(proto.graph)
    if not (initializer_names(proto.graph) & {i.name for i in proto.graph.input}):
        assert _io_signature(folded.graph.input) == _io_signature(proto.graph.input)
    else:
        folded_inits = initializer_names(folded.graph)
        for vi in folded.graph.input:
            if vi.name not in real_inputs(proto.graph):
                assert vi.name in folded_inits, f"graph input {vi.name!r} lost its initializer"
    assert _io_signature(folded.graph.output) == _io_signature(proto.graph.output)
    assert {(o.domain, o.version) for o in folded.opset_import} == {
        (o.domain, o.version) for o in proto.opset_import}
    assert folded.ir_version == proto.ir_version

    assert dead_initializers(folded) == [], f"dead initializers left: {dead_initializers(folded)}"

    for f, ref in zip(feed_list, references):
        assert_outputs_close(ref, ort_run(folded, f), rtol=rtol, atol=atol)
    return folded, result


def assert_fold_refused(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], node: str, reason: str, *,
                        bn_left: int | None = None, **fold_kwargs):
    """The decision for `node` is a skip with `reason`, BN stays, and outputs are unchanged."""
    reference = check_reference(proto, feeds)
    folded, result = fold_copy(proto, **fold_kwargs)
    d = decision(result, node)
    assert d.outcome == SKIPPED, f"{node}: expected skip ({reason}), got {d}"
    assert d.reason == reason, f"{node}: reason {d.reason!r}, expected {reason!r} ({d})"
    expected_bn = count_op(proto, "BatchNormalization") if bn_left is None else bn_left
    assert count_op(folded, "BatchNormalization") == expected_bn, result.decisions
    onnx.checker.check_model(folded, full_check=True)
    assert _io_signature(folded.graph.output) == _io_signature(proto.graph.output)
    assert real_inputs(folded.graph) == real_inputs(proto.graph)
    assert_outputs_close(reference, ort_run(folded, feeds), rtol=1e-6, atol=1e-7, what="refused")
    return folded, result


# --------------------------------------------------------------------------------------------------------
# decisions


def decision(result_or_list, node: str):
    """The single Decision for `node` (from a FoldResult or a list of Decisions)."""
    decisions = getattr(result_or_list, "decisions", result_or_list)
    hits = [d for d in decisions if d.node == node]
    assert len(hits) == 1, f"expected one decision for {node!r}, got {hits} (all: {decisions})"
    return hits[0]


def assert_folded(result, node: str, *, direction: str, partner: str, partner_op: str, op_type=None):
    d = decision(result, node)
    assert d.outcome == FOLDED, f"{node}: expected folded, got {d}"
    assert (d.direction, d.partner, d.partner_op) == (direction, partner, partner_op), d
    if op_type is not None:
        assert d.op_type == op_type, d
    return d


# --------------------------------------------------------------------------------------------------------
# standard "linear op -> BatchNormalization" models (shared by the pattern and property tests)


def _pads(pad, dims: int) -> list[int]:
    if isinstance(pad, int):
        return [pad] * (2 * dims)
    assert len(pad) == 2 * dims
    return list(pad)


def conv_bn_model(*, dims: int = 2, cin: int = 4, cout: int = 6, group: int = 1, kernel: int = 3,
                  stride: int = 1, dilation: int = 1, pad=0, bias: bool = True, batch: int = 2,
                  size: int = 7, seed: int = 0, dtype=np.float32, epsilon: float | None = None,
                  transpose: bool = False, output_padding: int = 0, opset: int = OPSET):
    """X -> Conv|ConvTranspose (node "conv"/"convt") -> BN (node "bn") -> Y. Returns (model, feeds).

    Conv weight is [cout, cin/group, k...]; ConvTranspose weight is [cin, cout/group, k...].
    """
    rng = make_rng(seed)
    ks = [kernel] * dims
    pads = _pads(pad, dims)
    if transpose:
        w = weights(rng, [cin, cout // group, *ks], dtype, fan_in=cin // group * kernel ** dims)
        out_sp = [stride * (size - 1) + output_padding + (kernel - 1) * dilation + 1 - pads[i] - pads[i + dims]
                  for i in range(dims)]
    else:
        w = weights(rng, [cout, cin // group, *ks], dtype)
        out_sp = [(size + pads[i] + pads[i + dims] - dilation * (kernel - 1) - 1) // stride + 1
                  for i in range(dims)]
    assert all(s > 0 for s in out_sp), out_sp
    elem = elem_type(dtype)
    gb = GraphBuilder()
    x = gb.input("X", elem, [batch, cin, *[size] * dims])
    ins = [x, gb.init("W", w)]
    if bias:
        ins.append(gb.init("B", rng.normal(0.0, 0.1, cout).astype(dtype)))
    attrs = dict(kernel_shape=ks, strides=[stride] * dims, dilations=[dilation] * dims, pads=pads, group=group)
    if transpose and output_padding:
        attrs["output_padding"] = [output_padding] * dims
    name = "convt" if transpose else "conv"
    y = gb.node("ConvTranspose" if transpose else "Conv", ins, "lin_out", name=name, **attrs)
    gb.bn(y, bn_stats(rng, cout, dtype), out="Y", epsilon=epsilon)
    gb.output("Y", elem, [batch, cout, *out_sp])
    model = gb.model(opset=opset)
    feeds = {"X": rng.normal(0.0, 1.0, [batch, cin, *[size] * dims]).astype(dtype)}
    return model, feeds


GEMM_C_SHAPES = {"none": None, "N": "N", "1xN": "1N", "MxN": "MN", "scalar": "", "Mx1": "M1"}


def gemm_bn_model(*, m: int = 3, k: int = 5, n: int = 4, trans_a: int = 0, trans_b: int = 0,
                  alpha: float | None = None, beta: float | None = None, c_shape: str | None = None,
                  seed: int = 0, dtype=np.float32, epsilon: float | None = None):
    """X -> Gemm (node "gemm") -> BN (node "bn") -> Y; c_shape in None, "N", "1N", "MN", "", "M1"."""
    rng = make_rng(seed)
    elem = elem_type(dtype)
    gb = GraphBuilder()
    a_shape = [k, m] if trans_a else [m, k]
    x = gb.input("X", elem, a_shape)
    ins = [x, gb.init("W", weights(rng, [n, k] if trans_b else [k, n], dtype, fan_in=k))]
    if c_shape is not None:
        shape = {"N": [n], "1N": [1, n], "MN": [m, n], "": [], "M1": [m, 1]}[c_shape]
        ins.append(gb.init("C", rng.normal(0.0, 0.5, shape).astype(dtype)))
    attrs = {"transA": trans_a, "transB": trans_b}
    if alpha is not None:
        attrs["alpha"] = alpha
    if beta is not None:
        attrs["beta"] = beta
    y = gb.node("Gemm", ins, "lin_out", name="gemm", **attrs)
    gb.bn(y, bn_stats(rng, n, dtype), out="Y", epsilon=epsilon)
    gb.output("Y", elem, [m, n])
    feeds = {"X": rng.normal(0.0, 1.0, a_shape).astype(dtype)}
    return gb.model(), feeds


def matmul_bn_model(*, m: int = 3, k: int = 5, n: int = 4, add: bool = False, bias_first: bool = False,
                    seed: int = 0, dtype=np.float32, epsilon: float | None = None):
    """X[m,k] -> MatMul (node "matmul") [-> Add(bias[n]) (node "bias_add")] -> BN (node "bn") -> Y."""
    rng = make_rng(seed)
    elem = elem_type(dtype)
    gb = GraphBuilder()
    x = gb.input("X", elem, [m, k])
    y = gb.node("MatMul", [x, gb.init("W", weights(rng, [k, n], dtype, fan_in=k))], "mm_out", name="matmul")
    if add:
        b = gb.init("Bias", rng.normal(0.0, 0.1, n).astype(dtype))
        y = gb.node("Add", [b, y] if bias_first else [y, b], "lin_out", name="bias_add")
    gb.bn(y, bn_stats(rng, n, dtype), out="Y", epsilon=epsilon)
    gb.output("Y", elem, [m, n])
    feeds = {"X": rng.normal(0.0, 1.0, [m, k]).astype(dtype)}
    return gb.model(), feeds

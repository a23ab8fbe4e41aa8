"""Property tests for FORWARD folds (BN after the activation, folded into the consumer), for decomposed
per-channel Mul/Add/Sub/Div chains (and the constants that must never fold), and for folds that land on one
linear op from both sides.

Structure and shapes are drawn by hypothesis; every number comes from a seeded numpy generator. Each model is
full-checked and run in onnxruntime (ORT_DISABLE_ALL) before folding (helpers.assert_fold_equal), outputs are
compared at fp32 tolerance, and every decision is asserted exactly: op, outcome, direction, partner, reason.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from helpers import (
    FLOAT,
    GEMM_C_SHAPES,
    GraphBuilder,
    assert_fold_equal,
    assert_outputs_close,
    bn_stats,
    conv_out,
    fold_copy,
    make_rng,
    op_types,
    ort_run,
    weights,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper
from test_fold_property import conv_specs, gemm_specs, matmul_specs

from bnfold.fold.result import (
    BACKWARD,
    CHANNEL_AXIS_MISMATCH,
    FOLDED,
    FORWARD,
    NON_POSITIVE_SCALE,
    SKIPPED,
)

RTOL, ATOL = 1e-4, 1e-5
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
EPSILONS = st.floats(1e-5, 1e-1)
SEEDS = st.integers(0, 2**16)
# What may sit between the BN and its forward partner: nothing, Identity, or an inference-mode Dropout.
VIA = st.sampled_from([None, "Identity", "Dropout", "Dropout-inference"])
ALPHAS = st.sampled_from([None, 0.5, 2.0, -1.5])
BETAS = st.sampled_from([None, 0.5, 2.0])
C_SHAPES = st.sampled_from(list(GEMM_C_SHAPES.values()))


# ---------------------------------------------------------------------------------------------------------
# building blocks


def decided(result) -> list[tuple]:
    """Every decision, in graph order, as (node, op_type, outcome, direction, partner, partner_op, reason)."""
    return [(d.node, d.op_type, d.outcome, d.direction, d.partner, d.partner_op, d.reason) for d in result.decisions]


def folded_into(node, op_type, direction, partner, partner_op) -> tuple:
    return (node, op_type, FOLDED, direction, partner, partner_op, None)


def skipped(node, op_type, reason) -> tuple:
    return (node, op_type, SKIPPED, None, None, None, reason)


def fold_and_compare(model, feeds, *, bn_left: int = 0):
    return assert_fold_equal(model, feeds, bn_left=bn_left, rtol=RTOL, atol=ATOL)


def assert_ops_after(folded, expected: list[str], *, matmul_bias: bool = False) -> None:
    """The folded graph's op types; a MatMul that absorbed a shift gets an Add right after it."""
    got = op_types(folded)
    if matmul_bias and got != expected:
        i = expected.index("MatMul") + 1
        expected = expected[:i] + ["Add"] + expected[i:]
    assert got == expected, (got, expected)


def pass_through(gb: GraphBuilder, x: str, kind: str | None, name: str) -> str:
    if kind is None:
        return x
    if kind == "Identity":
        return gb.node("Identity", [x], f"{name}_out", name=name)
    ins = [x]
    if kind == "Dropout-inference":
        ins += [gb.init(f"{name}_ratio", np.array(0.3, np.float32)), gb.init(f"{name}_training", np.array(False))]
    return gb.node("Dropout", ins, f"{name}_out", name=name)


def relu_bn(gb: GraphBuilder, rng, x: str, channels: int, epsilon: float, *, signed: bool, name: str = "bn") -> str:
    """X -> Relu -> BN (realistic stats; gamma signs random per channel when `signed`)."""
    h = gb.node("Relu", [x], f"{name}_relu_out", name=f"{name}_relu")
    stats = bn_stats(rng, channels)
    if signed:
        stats["scale"] = stats["scale"] * rng.choice(np.array([-1.0, 1.0], np.float32), channels)
    return gb.bn(h, stats, name=name, epsilon=epsilon)


def signed_bn(gb: GraphBuilder, rng, x: str, channels: int, epsilon: float, name: str) -> str:
    stats = bn_stats(rng, channels)
    stats["scale"] = stats["scale"] * rng.choice(np.array([-1.0, 1.0], np.float32), channels)
    return gb.bn(x, stats, name=name, epsilon=epsilon)


def divisors(n: int) -> list[int]:
    return [g for g in range(1, n + 1) if n % g == 0]


@st.composite
def unpadded_conv(draw, cin: int, dims: int):
    """A Conv a forward fold may enter: no padding (pads absent, explicit zeros, or auto_pad=VALID)."""
    group = draw(st.sampled_from(divisors(cin)))
    return dict(dims=dims, cin=cin, cout=group * draw(st.integers(1, 3)), group=group,
                kernel=draw(st.integers(1, 3)), stride=draw(st.integers(1, 2)), dilation=draw(st.integers(1, 2)),
                padding=draw(st.sampled_from(["absent", "zeros", "VALID"])), pad=0, bias=draw(st.booleans()))


def extent(conv: dict) -> int:
    return conv["dilation"] * (conv["kernel"] - 1) + 1


def conv_node(gb: GraphBuilder, rng, x: str, spec: dict, *, name: str, out: str, transpose: bool = False) -> str:
    dims, k, group = spec["dims"], spec["kernel"], spec["group"]
    ks = [k] * dims
    if transpose:
        w = weights(rng, [spec["cin"], spec["cout"] // group, *ks], fan_in=spec["cin"] // group * k ** dims)
    else:
        w = weights(rng, [spec["cout"], spec["cin"] // group, *ks])
    ins = [x, gb.init(f"{name}_W", w)]
    if spec["bias"]:
        ins.append(gb.init(f"{name}_B", rng.normal(0.0, 0.1, spec["cout"]).astype(np.float32)))
    attrs = dict(kernel_shape=ks, group=group, strides=[spec["stride"]] * dims,
                 dilations=[spec["dilation"]] * dims)
    padding = spec.get("padding", "pads")
    if padding == "zeros":
        attrs["pads"] = [0] * (2 * dims)
    elif padding == "VALID":
        attrs["auto_pad"] = "VALID"
    elif padding == "pads":
        attrs["pads"] = [spec["pad"]] * (2 * dims)
    if transpose and spec.get("output_padding"):
        attrs["output_padding"] = [spec["output_padding"]] * dims
    return gb.node("ConvTranspose" if transpose else "Conv", ins, out, name=name, **attrs)


def conv_out_sizes(spec: dict, sizes: list[int], transpose: bool = False) -> list[int]:
    k, s, d, p = spec["kernel"], spec["stride"], spec["dilation"], spec.get("pad", 0)
    if transpose:
        return [s * (n - 1) + spec.get("output_padding", 0) + (k - 1) * d + 1 - 2 * p for n in sizes]
    return [conv_out(n, k, s, p, d) for n in sizes]


def gemm_node(gb: GraphBuilder, rng, x: str, spec: dict, *, name: str, out: str) -> str:
    """Gemm reading [m, k] (or [k, m] with transA) and writing [m, n]; attributes left out when None."""
    m, k, n = spec["m"], spec["k"], spec["n"]
    ins = [x, gb.init(f"{name}_W", weights(rng, [n, k] if spec["trans_b"] else [k, n], fan_in=k))]
    if spec["c_shape"] is not None:
        shape = {"N": [n], "1N": [1, n], "MN": [m, n], "": [], "M1": [m, 1]}[spec["c_shape"]]
        ins.append(gb.init(f"{name}_C", rng.normal(0.0, 0.5, shape).astype(np.float32)))
    attrs = {key: spec[field] for key, field in (("transA", "trans_a"), ("transB", "trans_b"), ("alpha", "alpha"),
                                                   ("beta", "beta")) if spec.get(field) is not None}
    return gb.node("Gemm", ins, out, name=name, **attrs)


def input_feed(rng, shape) -> dict[str, np.ndarray]:
    return {"X": rng.normal(0.0, 1.0, shape).astype(np.float32)}


# ---------------------------------------------------------------------------------------------------------
# 1. forward: X -> Relu -> BN -> [Identity/Dropout] -> partner; the BN folds into the partner's input side


gemm_forward_specs = st.fixed_dictionaries(dict(
    m=st.integers(1, 4), k=st.integers(1, 6), n=st.integers(1, 6),
    trans_a=st.sampled_from([None, 0]), trans_b=st.sampled_from([None, 0, 1]),
    alpha=ALPHAS, beta=BETAS, c_shape=C_SHAPES,
))


@SETTINGS
@given(spec=gemm_forward_specs, epsilon=EPSILONS, via=VIA, seed=SEEDS)
def test_relu_bn_gemm_forward(spec, epsilon, via, seed):
    rng = make_rng(seed)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [spec["m"], spec["k"]])
    h = pass_through(gb, relu_bn(gb, rng, x, spec["k"], epsilon, signed=True), via, "via")
    gemm_node(gb, rng, h, spec, name="gemm", out="Y")
    gb.output("Y")
    model = gb.model()
    folded, result = fold_and_compare(model, input_feed(rng, [spec["m"], spec["k"]]))
    assert decided(result) == [folded_into("bn", "BatchNormalization", FORWARD, "gemm", "Gemm")]
    assert_ops_after(folded, [t for t in op_types(model) if t != "BatchNormalization"])


matmul_forward_specs = st.fixed_dictionaries(dict(
    m=st.integers(1, 4), k=st.integers(1, 6), n=st.integers(1, 6), add=st.booleans(), bias_first=st.booleans(),
))


@SETTINGS
@given(spec=matmul_forward_specs, epsilon=EPSILONS, via=VIA, seed=SEEDS)
def test_relu_bn_matmul_forward(spec, epsilon, via, seed):
    m, k, n = spec["m"], spec["k"], spec["n"]
    rng = make_rng(seed)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [m, k])
    h = pass_through(gb, relu_bn(gb, rng, x, k, epsilon, signed=True), via, "via")
    y = gb.node("MatMul", [h, gb.init("W", weights(rng, [k, n], fan_in=k))], "mm_out" if spec["add"] else "Y",
                name="matmul")
    if spec["add"]:
        b = gb.init("Bias", rng.normal(0.0, 0.1, n).astype(np.float32))
        gb.node("Add", [b, y] if spec["bias_first"] else [y, b], "Y", name="bias_add")
    gb.output("Y")
    model = gb.model()
    folded, result = fold_and_compare(model, input_feed(rng, [m, k]))
    # The MatMul's own bias Add is not an affine to fold (it gets no decision) and stays.
    assert decided(result) == [folded_into("bn", "BatchNormalization", FORWARD, "matmul", "MatMul")]
    assert_ops_after(folded, [t for t in op_types(model) if t != "BatchNormalization"], matmul_bias=True)


@st.composite
def conv_forward_cases(draw):
    dims = draw(st.integers(1, 2))
    conv = draw(unpadded_conv(draw(st.integers(1, 6)), dims))
    sizes = [draw(st.integers(extent(conv), extent(conv) + 4)) for _ in range(dims)]
    return dict(conv=conv, shape=[draw(st.integers(1, 2)), conv["cin"], *sizes])


@SETTINGS
@given(case=conv_forward_cases(), epsilon=EPSILONS, via=VIA, seed=SEEDS)
def test_relu_bn_conv_forward(case, epsilon, via, seed):
    conv, shape = case["conv"], case["shape"]
    rng = make_rng(seed)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, shape)
    h = pass_through(gb, relu_bn(gb, rng, x, conv["cin"], epsilon, signed=True), via, "via")
    conv_node(gb, rng, h, conv, name="conv", out="Y")
    gb.output("Y")
    model = gb.model()
    folded, result = fold_and_compare(model, input_feed(rng, shape))
    assert decided(result) == [folded_into("bn", "BatchNormalization", FORWARD, "conv", "Conv")]
    assert_ops_after(folded, [t for t in op_types(model) if t != "BatchNormalization"])


@st.composite
def flatten_gemm_cases(draw):
    dims = draw(st.integers(1, 2))
    c = draw(st.integers(1, 4))
    sizes = [draw(st.integers(1, 4)) for _ in range(dims)]
    batch = draw(st.integers(1, 3))
    features = c * int(np.prod(sizes))
    gemm = dict(m=batch, k=features, n=draw(st.integers(1, 5)), trans_a=None, trans_b=draw(st.sampled_from([0, 1])),
                alpha=draw(ALPHAS), beta=draw(BETAS), c_shape=draw(C_SHAPES))
    return dict(shape=[batch, c, *sizes], gemm=gemm,
                reshape=draw(st.sampled_from(["Flatten", "Flatten-axis1", "Reshape-batch", "Reshape-zero"])),
                via=draw(VIA), via_after=draw(st.booleans()))


@SETTINGS
@given(case=flatten_gemm_cases(), epsilon=EPSILONS, seed=SEEDS)
def test_relu_bn_flatten_gemm_forward(case, epsilon, seed):
    shape, reshape = case["shape"], case["reshape"]
    rng = make_rng(seed)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, shape)
    h = relu_bn(gb, rng, x, shape[1], epsilon, signed=True)
    if not case["via_after"]:
        h = pass_through(gb, h, case["via"], "via")
    if reshape.startswith("Flatten"):
        h = gb.node("Flatten", [h], "flat", name="flatten", **({"axis": 1} if reshape == "Flatten-axis1" else {}))
    else:
        target = [shape[0] if reshape == "Reshape-batch" else 0, -1]
        h = gb.node("Reshape", [h, gb.init("flat_shape", np.array(target, np.int64))], "flat", name="reshape")
    if case["via_after"]:
        h = pass_through(gb, h, case["via"], "via")
    gemm_node(gb, rng, h, case["gemm"], name="gemm", out="Y")
    gb.output("Y")
    model = gb.model()
    folded, result = fold_and_compare(model, input_feed(rng, shape))
    assert decided(result) == [folded_into("bn", "BatchNormalization", FORWARD, "gemm", "Gemm")]
    assert_ops_after(folded, [t for t in op_types(model) if t != "BatchNormalization"])


@st.composite
def maxpool_conv_cases(draw):
    dims = draw(st.integers(1, 2))
    conv = draw(unpadded_conv(draw(st.integers(1, 6)), dims))
    kp = draw(st.integers(1, 3))
    pool = dict(kernel=kp, stride=draw(st.integers(1, 2)), pad=draw(st.integers(0, kp - 1)),
                indices=draw(st.booleans()))
    # The pooled size must cover the Conv's kernel extent.
    least = max(1, (extent(conv) - 1) * pool["stride"] + kp - 2 * pool["pad"])
    sizes = [least + draw(st.integers(0, 3)) for _ in range(dims)]
    return dict(conv=conv, pool=pool, shape=[draw(st.integers(1, 2)), conv["cin"], *sizes], via=draw(VIA),
                flip=draw(st.sampled_from([None] + list(range(conv["cin"])))))


@SETTINGS
@given(case=maxpool_conv_cases(), epsilon=EPSILONS, seed=SEEDS)
def test_relu_bn_maxpool_conv_forward(case, epsilon, seed):
    """gamma > 0: the BN commutes with MaxPool and folds into the Conv after it. With one gamma flipped
    negative (case["flip"]) it must not: max(s*x) != s*max(x) for s < 0."""
    conv, pool, shape = case["conv"], case["pool"], case["shape"]
    dims = conv["dims"]
    rng = make_rng(seed)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, shape)
    h = gb.node("Relu", [x], "relu_out", name="relu")
    stats = bn_stats(rng, shape[1])
    assert (stats["scale"] > 0).all()
    if case["flip"] is not None:
        stats["scale"][case["flip"]] *= -1
    h = gb.bn(h, stats, name="bn", epsilon=epsilon)
    h = pass_through(gb, h, case["via"], "via")
    outs = ["pooled", "pool_indices"] if pool["indices"] else ["pooled"]
    h = gb.node("MaxPool", [h], outs, name="maxpool", kernel_shape=[pool["kernel"]] * dims,
                strides=[pool["stride"]] * dims, pads=[pool["pad"]] * (2 * dims))
    conv_node(gb, rng, h, conv, name="conv", out="Y")
    gb.output("Y")
    model = gb.model()
    feeds = input_feed(rng, shape)
    if case["flip"] is None:
        folded, result = fold_and_compare(model, feeds)
        assert decided(result) == [folded_into("bn", "BatchNormalization", FORWARD, "conv", "Conv")]
        assert_ops_after(folded, [t for t in op_types(model) if t != "BatchNormalization"])
    else:
        folded, result = fold_and_compare(model, feeds, bn_left=1)
        assert decided(result) == [skipped("bn", "BatchNormalization", NON_POSITIVE_SCALE)]
        assert_ops_after(folded, op_types(model))


# ---------------------------------------------------------------------------------------------------------
# 2. decomposed: linear op -> chain of per-channel Mul/Add/Sub/Div -> Relu (and the mirror image, forward)


OPS = ("Mul", "Add", "Sub", "Div")


def channel_shapes(rank: int, c: int) -> list[tuple[int, ...]]:
    """Broadcast shapes of a constant that varies only along axis 1 of rank-`rank` data with c channels."""
    full = [1] * rank
    full[1] = c
    return [tuple(full), tuple(full[1:]), (), (1,), (1,) * rank]


@st.composite
def affine_op(draw, name: str, shape: tuple[int, ...], ok: bool = True) -> dict:
    op = draw(st.sampled_from(OPS))
    # Div folds only as data / constant; constant / data is not affine in the data.
    const_first = op != "Div" and draw(st.booleans())
    return dict(name=name, op=op, const_first=const_first, shape=tuple(shape), ok=ok)


@st.composite
def affine_chain(draw, rank: int, c: int, low: int, high: int, start: int = 0) -> list[dict]:
    count = draw(st.integers(low, high))
    return [draw(affine_op(f"op{start + i}", draw(st.sampled_from(channel_shapes(rank, c))))) for i in range(count)]


def constant(rng, op: str, shape) -> np.ndarray:
    if op in ("Mul", "Div"):
        low, high = (0.5, 1.5) if op == "Mul" else (0.5, 2.0)
        return np.asarray(rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape), np.float32)
    return np.asarray(rng.normal(0.0, 0.5, shape), np.float32)


def add_chain(gb: GraphBuilder, rng, x: str, ops: list[dict]) -> str:
    for o in ops:
        k = gb.init(f"{o['name']}_k", constant(rng, o["op"], o["shape"]))
        x = gb.node(o["op"], [k, x] if o["const_first"] else [x, k], f"{o['name']}_out", name=o["name"])
    return x


PARTNER_NAMES = {"conv": ("conv", "Conv"), "convtranspose": ("convt", "ConvTranspose"), "gemm": ("gemm", "Gemm"),
                 "matmul": ("matmul", "MatMul")}


def linear_output_shape(kind: str, spec: dict) -> list[int]:
    if kind in ("conv", "convtranspose"):
        sizes = spec.get("sizes") or [spec["size"]] * spec["dims"]
        return [spec["batch"], spec["cout"], *conv_out_sizes(spec, sizes, transpose=kind == "convtranspose")]
    return [spec["m"], spec["n"]]


def build_backward_context(gb: GraphBuilder, rng, kind: str, spec: dict) -> tuple[str, list[int], list[dict]]:
    """X -> linear op (-> its own bias Add for a MatMul with spec["add"]). Returns the output, the input
    shape, and the ops in front of the chain that join it (the MatMul's bias Add)."""
    name, _ = PARTNER_NAMES[kind]
    if kind in ("conv", "convtranspose"):
        sizes = spec.get("sizes") or [spec["size"]] * spec["dims"]
        x_shape = [spec["batch"], spec["cin"], *sizes]
        y = conv_node(gb, rng, gb.input("X", FLOAT, x_shape), spec, name=name, out="lin_out",
                      transpose=kind == "convtranspose")
        return y, x_shape, []
    if kind == "gemm":
        x_shape = [spec["k"], spec["m"]] if spec["trans_a"] else [spec["m"], spec["k"]]
        return gemm_node(gb, rng, gb.input("X", FLOAT, x_shape), spec, name=name, out="lin_out"), x_shape, []
    x_shape = [spec["m"], spec["k"]]
    y = gb.node("MatMul", [gb.input("X", FLOAT, x_shape), gb.init("W", weights(rng, [spec["k"], spec["n"]],
                                                                                    fan_in=spec["k"]))],
                "lin_out", name=name)
    if not spec["add"]:
        return y, x_shape, []
    b = gb.init("Bias", rng.normal(0.0, 0.1, spec["n"]).astype(np.float32))
    y = gb.node("Add", [b, y] if spec["bias_first"] else [y, b], "bias_add_out", name="bias_add")
    return y, x_shape, [dict(name="bias_add", op="Add", ok=True)]


def expected_backward(kind: str, chain: list[dict]) -> tuple[list[tuple], set[str]]:
    """Decisions for `chain` (graph order, after a linear op and before a Relu) and the nodes that go away.

    Ops fold backward up to the first one whose constant is not per-channel; that one and every later op are
    skipped (channel-axis-mismatch), as a Relu follows. The engine's one convention: an Add by a per-feature
    constant right after a MatMul is that MatMul's bias, so it gets no decision, and folds (silently) only with
    a later op. An Add whose constant is not per-feature is no bias: it is skipped like any other op."""
    name, op_name = PARTNER_NAMES[kind]
    bad = [i for i, o in enumerate(chain) if not o["ok"]]
    n_back = bad[0] if bad else len(chain)
    silent = kind == "matmul" and chain[0]["op"] == "Add" and chain[0]["ok"]
    if silent and n_back <= 1:
        n_back = 0
    decisions = []
    for i, o in enumerate(chain):
        if i == 0 and silent:
            continue
        if i < n_back:
            decisions.append(folded_into(o["name"], o["op"], BACKWARD, name, op_name))
        else:
            assert bad, "a chain without a bad constant always folds past the bias Add"
            decisions.append(skipped(o["name"], o["op"], CHANNEL_AXIS_MISMATCH))
    return decisions, {o["name"] for o in chain[:n_back]}


LINEAR_SPECS = {"conv": conv_specs(transpose=False), "convtranspose": conv_specs(transpose=True), "gemm": gemm_specs,
                "matmul": matmul_specs}
# Each partner kind is its own parametrized property (40 examples each): drawn inside one property, a partner
# kind can get one example in 40.
BACKWARD_KINDS = list(LINEAR_SPECS)
FORWARD_KINDS = ["conv", "gemm", "matmul"]


@st.composite
def decomposed_backward_cases(draw, kind: str):
    spec = draw(LINEAR_SPECS[kind])
    shape = linear_output_shape(kind, spec)
    return spec, draw(affine_chain(len(shape), shape[1], 1, 3))


def check_backward_chain(kind: str, spec: dict, ops: list[dict], seed: int) -> None:
    """linear op -> ops -> Relu: the decisions are exactly expected_backward's, outputs equal."""
    rng = make_rng(seed)
    gb = GraphBuilder()
    y, x_shape, head = build_backward_context(gb, rng, kind, spec)
    gb.node("Relu", [add_chain(gb, rng, y, ops)], "Y", name="relu")
    gb.output("Y")
    model = gb.model()
    folded, result = fold_and_compare(model, input_feed(rng, x_shape))
    decisions, gone = expected_backward(kind, head + ops)
    bad = [o for o in ops if not o["ok"]]
    if bad:
        assert bad[0]["name"] not in gone
        assert skipped(bad[0]["name"], bad[0]["op"], CHANNEL_AXIS_MISMATCH) in decided(result), decided(result)
    assert decided(result) == decisions
    assert_ops_after(folded, [n.op_type for n in model.graph.node if n.name not in gone], matmul_bias=True)


@pytest.mark.parametrize("kind", BACKWARD_KINDS)
@SETTINGS
@given(data=st.data(), seed=SEEDS)
def test_decomposed_chain_folds_backward(kind, data, seed):
    """linear op -> 1..3 of Mul/Add/Sub/Div by per-channel constants -> Relu: every op folds backward."""
    spec, ops = data.draw(decomposed_backward_cases(kind), label="spec, ops")
    check_backward_chain(kind, spec, ops, seed)


@pytest.mark.parametrize("ops", [
    [dict(name="op0", op="Add", const_first=True, shape=(4,), ok=True)],
    [dict(name="op0", op="Add", const_first=True, shape=(4,), ok=True),
     dict(name="op1", op="Mul", const_first=False, shape=(1, 4), ok=True)],
], ids=["add", "add-mul"])
def test_add_after_matmul_is_its_bias(ops):
    """MatMul -> Add: the Add is the MatMul's bias, with no decision of its own; it folds (silently) along
    with a later op of the chain."""
    check_backward_chain("matmul", dict(m=2, k=3, n=4, add=False, bias_first=False), ops, seed=0)


@st.composite
def forward_linear(draw, kind: str, negative: bool = False):
    """The input shape X and the linear op that consumes the chain: an unpadded Conv, Gemm(transA=0) or MatMul.
    `negative`: make sure some non-channel axis has size > 1, and often make the last axis as long as the
    channel axis (so a [C] constant broadcasts along the wrong axis)."""
    same = negative and draw(st.booleans())
    if kind == "conv":
        dims = draw(st.integers(1, 2))
        cin = draw(st.integers(2 if same else 1, 6))
        conv = draw(unpadded_conv(cin, dims))
        if same and extent(conv) > cin:
            conv.update(dilation=1, kernel=min(conv["kernel"], cin))
        sizes = [draw(st.integers(extent(conv), extent(conv) + 3)) for _ in range(dims)]
        if same:
            sizes[-1] = cin
        shape = [draw(st.integers(1, 2)), cin, *sizes]
        if negative and max([shape[0], *sizes]) == 1:
            shape[0] = 2
        return conv, shape
    m, k = draw(st.integers(2 if negative else 1, 4)), draw(st.integers(1, 6))
    if same:
        k = m
    spec = dict(m=m, k=k, n=draw(st.integers(1, 5)), trans_a=draw(st.sampled_from([None, 0])),
                trans_b=draw(st.sampled_from([None, 0, 1])), alpha=draw(ALPHAS), beta=draw(BETAS),
                c_shape=draw(C_SHAPES))
    return spec, [m, k]


def build_forward_partner(gb: GraphBuilder, rng, kind: str, spec: dict, h: str) -> None:
    name, _ = PARTNER_NAMES[kind]
    if kind == "conv":
        conv_node(gb, rng, h, spec, name=name, out="Y")
    elif kind == "gemm":
        gemm_node(gb, rng, h, spec, name=name, out="Y")
    else:
        gb.node("MatMul", [h, gb.init("W", weights(rng, [spec["k"], spec["n"]], fan_in=spec["k"]))], "Y", name=name)


def expected_forward(kind: str, chain: list[dict]) -> tuple[list[tuple], set[str]]:
    """Decisions for `chain` (after a Relu, before a linear op): ops after the last bad constant fold forward;
    that one and every op before it are skipped (channel-axis-mismatch)."""
    name, op_name = PARTNER_NAMES[kind]
    bad = [i for i, o in enumerate(chain) if not o["ok"]]
    start = bad[-1] + 1 if bad else 0
    decisions = [folded_into(o["name"], o["op"], FORWARD, name, op_name) if i >= start
                 else skipped(o["name"], o["op"], CHANNEL_AXIS_MISMATCH) for i, o in enumerate(chain)]
    return decisions, {o["name"] for o in chain[start:]}


def check_forward_chain(kind: str, spec: dict, shape: list[int], ops: list[dict], seed: int) -> None:
    """X -> Relu -> ops -> unpadded linear op: the decisions are exactly expected_forward's, outputs equal."""
    rng = make_rng(seed)
    gb = GraphBuilder()
    h = gb.node("Relu", [gb.input("X", FLOAT, shape)], "relu_out", name="relu")
    build_forward_partner(gb, rng, kind, spec, add_chain(gb, rng, h, ops))
    gb.output("Y")
    model = gb.model()
    folded, result = fold_and_compare(model, input_feed(rng, shape))
    decisions, gone = expected_forward(kind, ops)
    bad = [o for o in ops if not o["ok"]]
    if bad:
        assert bad[-1]["name"] not in gone
        assert skipped(bad[-1]["name"], bad[-1]["op"], CHANNEL_AXIS_MISMATCH) in decided(result), decided(result)
    assert decided(result) == decisions
    assert_ops_after(folded, [n.op_type for n in model.graph.node if n.name not in gone], matmul_bias=True)


@pytest.mark.parametrize("kind", FORWARD_KINDS)
@SETTINGS
@given(data=st.data(), seed=SEEDS)
def test_decomposed_chain_folds_forward(kind, data, seed):
    """The mirror image: X -> Relu -> chain -> unpadded Conv / Gemm / MatMul, every op folds forward."""
    spec, shape = data.draw(forward_linear(kind), label="spec, shape")
    ops = data.draw(affine_chain(len(shape), shape[1], 1, 3), label="ops")
    check_forward_chain(kind, spec, shape, ops, seed)


@st.composite
def bad_shape(draw, data: list[int], width_is_channels: bool) -> tuple[int, ...]:
    """A constant shape that broadcasts against `data` and varies along some non-channel axis (size > 1)."""
    if width_is_channels:
        assert data[-1] == data[1] and len(data) > 2
        return (data[1],)
    rank = len(data)
    candidates = [i for i in range(rank) if i != 1 and data[i] > 1]
    assert candidates, data
    vary = set(draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=len(candidates), unique=True)))
    with_channel = draw(st.booleans())
    full = [data[i] if i in vary or (i == 1 and with_channel) else 1 for i in range(rank)]
    leading = next(i for i, d in enumerate(full) if d != 1)
    return tuple(full[draw(st.integers(0, leading)):])


@st.composite
def negative_chain(draw, shape: list[int], width_is_channels: bool) -> list[dict]:
    """0..2 per-channel ops, one op whose constant varies along a non-channel axis, 0..1 per-channel ops."""
    rank, c = len(shape), shape[1]
    before = draw(affine_chain(rank, c, 0, 2))
    bad = draw(affine_op(f"op{len(before)}", draw(bad_shape(shape, width_is_channels)), ok=False))
    return before + [bad] + draw(affine_chain(rank, c, 0, 1, start=len(before) + 1))


@st.composite
def negative_backward_cases(draw, kind: str):
    spec = dict(draw(LINEAR_SPECS[kind]))
    same = kind == "conv" and draw(st.booleans())
    if same:
        # Make the output width equal the channel count: a [C] constant then broadcasts along W.
        group = spec["group"]
        spec["cout"] = group * max(spec["cout"] // group, 2 if group == 1 else 1)
        spec["pad"] = 0
        width = (spec["cout"] - 1) * spec["stride"] + spec["dilation"] * (spec["kernel"] - 1) + 1
        spec["sizes"] = [spec["size"]] * (spec["dims"] - 1) + [width]
    if kind in ("gemm", "matmul"):
        spec["m"] = max(spec["m"], 2)
        if draw(st.booleans()):
            spec["m"] = spec["n"] = max(spec["n"], 2)
    shape = linear_output_shape(kind, spec)
    if all(d == 1 for i, d in enumerate(shape) if i != 1):
        spec["batch"] = 2
        shape = linear_output_shape(kind, spec)
    assert not same or shape[-1] == shape[1], (shape, spec)
    return spec, draw(negative_chain(shape, same))


@pytest.mark.parametrize("kind", BACKWARD_KINDS)
@SETTINGS
@given(data=st.data(), seed=SEEDS)
def test_non_channel_constant_never_folds_backward(kind, data, seed):
    """linear op -> [per-channel ops] -> op by a constant varying along a non-channel axis -> [...] -> Relu:
    that op is skipped (channel-axis-mismatch), never folded; the per-channel ops before it still fold."""
    spec, ops = data.draw(negative_backward_cases(kind), label="spec, ops")
    check_backward_chain(kind, spec, ops, seed)


@pytest.mark.parametrize("kind", FORWARD_KINDS)
@SETTINGS
@given(data=st.data(), seed=SEEDS)
def test_non_channel_constant_never_folds_forward(kind, data, seed):
    """Relu -> [...] -> op by a constant varying along a non-channel axis -> [per-channel ops] -> unpadded
    linear op: that op is skipped (channel-axis-mismatch); the per-channel ops after it still fold forward."""
    spec, shape = data.draw(forward_linear(kind, negative=True), label="spec, shape")
    same = kind == "conv" and shape[-1] == shape[1] and data.draw(st.booleans(), label="[C] constant")
    ops = data.draw(negative_chain(shape, same), label="ops")
    check_forward_chain(kind, spec, shape, ops, seed)


def test_constant_along_width_equal_to_channels_is_skipped():
    """Conv output [1, 3, 2, 3] (W == C) -> Mul by a [3] constant: it broadcasts along W, not C."""
    spec = dict(dims=2, cin=2, cout=3, group=1, kernel=1, stride=1, dilation=1, pad=0, bias=True, sizes=[2, 3],
                batch=1)
    check_backward_chain("conv", spec, [dict(name="op0", op="Mul", const_first=False, shape=(3,), ok=False)], 0)


def test_per_row_add_after_matmul_is_skipped():
    """MatMul [3, 4] -> Add by a [3, 1] constant (one value per row, not per feature) -> Relu."""
    check_backward_chain("matmul", dict(m=3, k=4, n=4, add=False, bias_first=False),
                         [dict(name="op0", op="Add", const_first=False, shape=(3, 1), ok=False)], 0)


# ---------------------------------------------------------------------------------------------------------
# 3. mixed: lin1 -> BN1 -> Relu -> BN2 -> lin2 (no padding) -> BN3; BN2 forward and BN3 backward both into lin2


@st.composite
def mixed_cases(draw, kind: str):
    if kind == "conv":
        first = dict(draw(conv_specs(transpose=False)))
        second = draw(unpadded_conv(first["cout"], first["dims"]))
        # The first Conv's output must cover the second's kernel extent.
        least = ((extent(second) - 1) * first["stride"] + first["dilation"] * (first["kernel"] - 1) + 1
                 - 2 * first["pad"])
        first["size"] = max(first["size"], least)
    else:
        m, k, n1 = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
        first = dict(m=m, k=k, n=n1, trans_a=draw(st.sampled_from([None, 0, 1])), trans_b=draw(st.sampled_from([0, 1])),
                     alpha=draw(ALPHAS), beta=draw(BETAS), c_shape=draw(C_SHAPES))
        second = dict(m=m, k=n1, n=draw(st.integers(1, 6)), trans_a=None, trans_b=draw(st.sampled_from([0, 1])),
                      alpha=draw(ALPHAS), beta=draw(BETAS), c_shape=draw(C_SHAPES))
    return first, second, draw(VIA), draw(VIA)


@pytest.mark.parametrize("kind", ["conv", "gemm"])
@SETTINGS
@given(data=st.data(), epsilons=st.tuples(EPSILONS, EPSILONS, EPSILONS), seed=SEEDS)
def test_backward_and_forward_folds_share_a_partner(kind, data, epsilons, seed):
    """lin1 -> BN1 -> Relu -> BN2 -> lin2 -> BN3: BN1 backward into lin1; BN2 forward and BN3 backward, both
    into lin2 (any padding on lin1, none on lin2; gamma signs random)."""
    first, second, via1, via2 = data.draw(mixed_cases(kind), label="first, second, via1, via2")
    rng = make_rng(seed)
    gb = GraphBuilder()
    op_name = "Conv" if kind == "conv" else "Gemm"
    if kind == "conv":
        x_shape = [first["batch"], first["cin"], *[first["size"]] * first["dims"]]
        h = conv_node(gb, rng, gb.input("X", FLOAT, x_shape), first, name="lin1", out="lin1_out")
        c1, c2 = first["cout"], second["cout"]
    else:
        x_shape = [first["k"], first["m"]] if first["trans_a"] else [first["m"], first["k"]]
        h = gemm_node(gb, rng, gb.input("X", FLOAT, x_shape), first, name="lin1", out="lin1_out")
        c1, c2 = first["n"], second["n"]
    h = pass_through(gb, h, via1, "via1")
    h = signed_bn(gb, rng, h, c1, epsilons[0], "bn1")
    h = gb.node("Relu", [h], "relu_out", name="relu")
    h = signed_bn(gb, rng, h, c1, epsilons[1], "bn2")
    h = pass_through(gb, h, via2, "via2")
    h = (conv_node if kind == "conv" else gemm_node)(gb, rng, h, second, name="lin2", out="lin2_out")
    signed_bn(gb, rng, h, c2, epsilons[2], "bn3")
    gb.output("bn3_out")
    model = gb.model()
    folded, result = fold_and_compare(model, input_feed(rng, x_shape))
    bn = "BatchNormalization"
    assert decided(result) == [folded_into("bn1", bn, BACKWARD, "lin1", op_name),
                               folded_into("bn2", bn, FORWARD, "lin2", op_name),
                               folded_into("bn3", bn, BACKWARD, "lin2", op_name)]
    assert_ops_after(folded, [t for t in op_types(model) if t != bn])


# ---------------------------------------------------------------------------------------------------------
# the comparison has teeth


def test_comparison_catches_a_wrong_fold():
    """A folded Conv whose folded scale has the wrong sign, or whose bias is off by 1e-3, fails the comparison
    the properties use (so a passing property means something)."""
    rng = make_rng(1)
    conv = dict(dims=2, cin=4, cout=5, group=1, kernel=3, stride=1, dilation=1, padding="absent", pad=0, bias=True)
    gb = GraphBuilder()
    x = gb.input("X", FLOAT, [2, 4, 6, 6])
    conv_node(gb, rng, relu_bn(gb, rng, x, 4, 1e-3, signed=True), conv, name="conv", out="Y")
    gb.output("Y")
    model = gb.model()
    feeds = input_feed(rng, [2, 4, 6, 6])
    reference = ort_run(model, feeds)
    folded, _ = fold_copy(model)
    assert_outputs_close(reference, ort_run(folded, feeds), rtol=RTOL, atol=ATOL)
    for name, change in (("conv_W", lambda w: -w), ("conv_B", lambda b: b + 1e-3)):
        broken = copy.deepcopy(folded)
        init = next(i for i in broken.graph.initializer if i.name == name)
        init.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(init)), name))
        with pytest.raises(AssertionError):
            assert_outputs_close(reference, ort_run(broken, feeds), rtol=RTOL, atol=ATOL)

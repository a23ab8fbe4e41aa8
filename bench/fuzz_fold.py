"""Mutation fuzzer for `bnfold lint` and `bnfold fold`: malformed and hostile models must get a clean
one-line error (or a correct result), never a crash, a hang, an unbounded allocation or a wrong fold.

    python bench/fuzz_fold.py --minutes 10 [--seed 0] [--jobs 2] [--out-dir bench/out/fuzz]
    python bench/fuzz_fold.py --cases 200            # a fixed number of cases instead of a time budget

Seeds are the shipped ONNX samples (single-file, < 2 MiB) and a few models built here (fp16 Conv3d, Conv ->
Mul -> Add, a RepVGG block whose branches merge). Each case applies one to three structural mutations (attributes, dtypes, dims, NaN/Inf/huge/
zero data, truncated or padded tensor data, typed fields of the wrong count, dropped / duplicated / rewired
nodes, swapped inputs, changed op types, cycles, huge ConstantOfShape weights, odd opsets and IR versions)
or flips / truncates the serialized bytes. A worker process runs, through the CLI entry point:

- `lint CASE --isolated --format json` and `lint CASE --format sarif` (every reporter writes the names);
- `fold CASE OUT --no-verify`, and when it wrote a folded model that onnxruntime can run next to the
  original: the outputs on seeded random inputs must agree (fp32 rtol 1e-4 / atol 1e-5 of the output's
  scale, fp16 / bf16 1e-2), a half-precision fold must stay within 3x the original's RMS distance from
  a float32 evaluation of the same model, and OUT must pass the onnx checker when CASE does.

Outcomes: `ok` (a result), `error` (a clean BnfoldError / usage error), `within-noise` (a folded model
beyond the fixed tolerance but within the original's own rounding noise, as `bnfold verify` judges it),
`original-overflows` (a difference where the original itself computes Inf/NaN inside), `crash` (any other exception; its
signature is the exception type and the innermost bnfold frame), `hang` (no answer within --timeout; the
worker is restarted), `wrong-fold`, `less-accurate` (a half-precision fold further from float32 than
the original's rounding explains), `invalid-output`. The worker runs under an address-space limit
(--max-mem-gb), so an allocation a tiny file asks for is a MemoryError crash, not a stalled machine. One
example of every signature is kept in OUT-DIR/crashes/. The report is printed and written to
OUT-DIR/fuzz_results.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import random
import resource
import select
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SEED_LIMIT = 2 << 20
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
ODD_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.INT8,
             TensorProto.STRING, TensorProto.BFLOAT16, TensorProto.BOOL, TensorProto.UINT8, TensorProto.INT4,
             TensorProto.COMPLEX64, TensorProto.UNDEFINED, 999)
OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "Mul", "Add", "Identity", "Relu", "Flatten",
       "Reshape", "Dropout", "Softmax", "Transpose")


# --------------------------------------------------------------------------------------------------------
# seeds


def _conv3d_fp16() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    c = 4
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (c, 3, 3, 3, 3)).astype(np.float16), "W"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float16), "s"),
             numpy_helper.from_array(rng.normal(0, 0.1, c).astype(np.float16), "b"),
             numpy_helper.from_array(rng.normal(0, 0.5, c).astype(np.float16), "m"),
             numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(np.float16), "v")]
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1] * 6),
             helper.make_node("BatchNormalization", ["y", "s", "b", "m", "v"], ["z"], name="bn")]
    graph = helper.make_graph(nodes, "conv3d", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 3, 5, 5, 5])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT16, [1, c, 5, 5, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _conv_mul_add() -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    c = 5
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (c, 2, 3, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, (1, c, 1, 1)).astype(np.float32), "mul_k"),
             numpy_helper.from_array(rng.normal(0, 0.1, (1, c, 1, 1)).astype(np.float32), "add_k")]
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv"),
             helper.make_node("Mul", ["y", "mul_k"], ["y2"], name="mul"),
             helper.make_node("Add", ["y2", "add_k"], ["z"], name="add")]
    graph = helper.make_graph(nodes, "conv_mul_add", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 6, 6])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, c, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _repvgg_block() -> onnx.ModelProto:
    """3x3 Conv + BN, 1x1 Conv + BN and an identity BN summed: the branch merge (bnfold.fold.branches)."""
    rng = np.random.default_rng(3)
    c = 4

    def bn(name):
        return [numpy_helper.from_array(a.astype(np.float32), f"{name}_{k}") for k, a in (
            ("s", rng.uniform(0.5, 1.5, c)), ("b", rng.normal(0, 0.1, c)), ("m", rng.normal(0, 0.5, c)),
            ("v", rng.uniform(0.5, 2, c)))]

    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (c, c, 3, 3)).astype(np.float32), "W3"),
             numpy_helper.from_array(rng.normal(0, 0.3, (c, c, 1, 1)).astype(np.float32), "W1"),
             *bn("bn3"), *bn("bn1"), *bn("bnid")]
    nodes = [helper.make_node("Conv", ["x", "W3"], ["y3"], name="conv3", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["y3", "bn3_s", "bn3_b", "bn3_m", "bn3_v"], ["z3"], name="bn3"),
             helper.make_node("Conv", ["x", "W1"], ["y1"], name="conv1"),
             helper.make_node("BatchNormalization", ["y1", "bn1_s", "bn1_b", "bn1_m", "bn1_v"], ["z1"], name="bn1"),
             helper.make_node("BatchNormalization", ["x", "bnid_s", "bnid_b", "bnid_m", "bnid_v"], ["zid"],
                              name="bnid"),
             helper.make_node("Add", ["z3", "z1"], ["s1"], name="add1"),
             helper.make_node("Add", ["s1", "zid"], ["s2"], name="add2"),
             helper.make_node("Relu", ["s2"], ["out"], name="relu")]
    graph = helper.make_graph(nodes, "repvgg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 6, 6])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, c, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def seeds() -> list[tuple[str, onnx.ModelProto]]:
    found = []
    for path in sorted((ROOT / "sample_models").rglob("*.onnx")):
        if path.stat().st_size > SEED_LIMIT or Path(f"{path}.data").exists():
            continue
        model = onnx.load(str(path), load_external_data=False)
        if any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer):
            continue
        found.append((str(path.relative_to(ROOT / "sample_models")), model))
    return found + [("built/conv3d_fp16", _conv3d_fp16()), ("built/conv_mul_add", _conv_mul_add()),
                    ("built/repvgg_block", _repvgg_block())]


# --------------------------------------------------------------------------------------------------------
# mutations: each takes (model, rng) and changes the model in place, returning what it did


def _pick(rng: random.Random, items):
    items = list(items)
    return rng.choice(items) if items else None


def m_attribute(model, rng):
    node = _pick(rng, [n for n in model.graph.node if n.attribute] or model.graph.node)
    if node is None:
        return "no node"
    if not node.attribute or rng.random() < 0.2:
        name = rng.choice(["group", "transB", "transA", "axis", "epsilon", "alpha", "training_mode", "pads"])
        value = rng.choice([0, 1, 2, 3, -1, 7, 1 << 40]) if name != "epsilon" else rng.choice([0.0, -1.0, 1e30])
        node.attribute.append(helper.make_attribute(name, [value] * 4 if name == "pads" else value))
        return f"add {name}={value} on {node.op_type}"
    attr = rng.choice(list(node.attribute))
    if rng.random() < 0.2:
        node.attribute.remove(attr)
        return f"drop {attr.name} of {node.op_type}"
    if attr.type == onnx.AttributeProto.INT:
        attr.i = rng.choice([0, 1, 2, 3, -1, -7, 1 << 40, attr.i * 2, attr.i + 1])
    elif attr.type == onnx.AttributeProto.FLOAT:
        attr.f = rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e-30, 1e30, -attr.f])
    elif attr.type == onnx.AttributeProto.INTS and attr.ints:
        values = list(attr.ints)
        choice = rng.random()
        if choice < 0.3:
            values.pop()
        elif choice < 0.6:
            values[rng.randrange(len(values))] = rng.choice([0, -1, 5, 1 << 40])
        else:
            values = values * 2
        del attr.ints[:]
        attr.ints.extend(values)
    elif attr.type == onnx.AttributeProto.STRING:
        attr.s = rng.choice([b"SAME_UPPER", b"VALID", b"bogus", b"\xff\xfe", b""])
    return f"change {attr.name} of {node.op_type}"


def _initializer(model, rng, floats_only=False):
    inits = [t for t in model.graph.initializer if not floats_only or t.data_type in FLOAT_TYPES]
    return _pick(rng, inits)


def m_dtype(model, rng):
    init = _initializer(model, rng)
    if init is None:
        return "no initializer"
    init.data_type = rng.choice(ODD_TYPES)
    return f"dtype of {init.name} -> {init.data_type}"


def m_dims(model, rng):
    init = _initializer(model, rng)
    if init is None:
        return "no initializer"
    dims = list(init.dims)
    choice = rng.random()
    if choice < 0.25:
        dims.append(rng.choice([1, 2]))
    elif choice < 0.45 and dims:
        dims.pop()
    elif choice < 0.65 and dims:
        dims[rng.randrange(len(dims))] *= -1
    elif choice < 0.85 and dims:
        dims[rng.randrange(len(dims))] *= rng.choice([2, 1 << 20])
    else:
        dims = []
    del init.dims[:]
    init.dims.extend(dims)
    return f"dims of {init.name} -> {dims}"


def m_values(model, rng):
    init = _initializer(model, rng, floats_only=True)
    if init is None:
        return "no float initializer"
    array = numpy_helper.to_array(init).copy()
    if array.size == 0:
        return "empty"
    flat = array.reshape(-1)
    value = rng.choice([np.nan, np.inf, -np.inf, 1e30, 0.0, -0.0, -1.0, 6.5e4, 1e-40])
    count = rng.choice([1, flat.size])
    with np.errstate(over="ignore", invalid="ignore"):
        flat[rng.sample(range(flat.size), min(count, flat.size))] = value
    init.CopyFrom(numpy_helper.from_array(array, init.name))
    return f"{count} values of {init.name} -> {value}"


def m_raw_length(model, rng):
    init = _pick(rng, [t for t in model.graph.initializer if t.raw_data])
    if init is None:
        return "no raw data"
    data = init.raw_data
    init.raw_data = data[:rng.randrange(len(data))] if rng.random() < 0.6 else data + bytes(rng.choice([1, 4, 64]))
    return f"raw_data of {init.name}: {len(data)} -> {len(init.raw_data)} bytes"


def m_typed_field(model, rng):
    init = _initializer(model, rng, floats_only=True)
    if init is None or init.data_type != TensorProto.FLOAT:
        return "no fp32 initializer"
    values = numpy_helper.to_array(init).reshape(-1).tolist()
    init.ClearField("raw_data")
    del init.float_data[:]
    init.float_data.extend(values[:-1] if values and rng.random() < 0.5 else values + [1.0])
    return f"float_data of {init.name}: {len(values)} -> {len(init.float_data)}"


def m_drop_node(model, rng):
    if not model.graph.node:
        return "no node"
    index = rng.randrange(len(model.graph.node))
    op = model.graph.node[index].op_type
    del model.graph.node[index]
    return f"drop {op}"


def m_duplicate_node(model, rng):
    node = _pick(rng, model.graph.node)
    if node is None:
        return "no node"
    model.graph.node.insert(rng.randrange(len(model.graph.node) + 1), copy.deepcopy(node))
    return f"duplicate {node.op_type}"


def m_swap_inputs(model, rng):
    node = _pick(rng, [n for n in model.graph.node if len(n.input) > 1])
    if node is None:
        return "no node"
    names = list(node.input)
    rng.shuffle(names)
    del node.input[:]
    node.input.extend(names)
    return f"shuffle inputs of {node.op_type}"


def _value_names(model):
    names = [i.name for i in model.graph.input] + [t.name for t in model.graph.initializer]
    return names + [o for n in model.graph.node for o in n.output]


def m_rewire(model, rng):
    node = _pick(rng, [n for n in model.graph.node if n.input])
    if node is None:
        return "no node"
    k = rng.randrange(len(node.input))
    node.input[k] = rng.choice(_value_names(model) + ["", "nowhere"])
    return f"rewire input {k} of {node.op_type} -> {node.input[k]!r}"


def m_op_type(model, rng):
    node = _pick(rng, model.graph.node)
    if node is None:
        return "no node"
    old, node.op_type = node.op_type, rng.choice(OPS)
    return f"{old} -> {node.op_type}"


def m_cycle(model, rng):
    node = _pick(rng, [n for n in model.graph.node if n.input])
    if node is None:
        return "no node"
    a, b = f"cyc_a{rng.randrange(1000)}", f"cyc_b{rng.randrange(1000)}"
    model.graph.node.extend([helper.make_node("Identity", [b], [a], name=a), helper.make_node("Identity", [a], [b], name=b)])
    node.input[0] = a
    return f"{node.op_type} reads an Identity cycle"


def m_huge_constant(model, rng):
    node = _pick(rng, [n for n in model.graph.node if len(n.input) > 1 and n.op_type in
                       ("Conv", "Gemm", "MatMul", "BatchNormalization", "ConvTranspose", "Mul")])
    if node is None:
        return "no node"
    shape = rng.choice([[1536, 1024, 32, 32], [1 << 31], [1 << 20, 1 << 20], [64, 64, 1024, 1024]])
    name = f"huge{rng.randrange(1000)}"
    model.graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), f"{name}_shape"))
    op = rng.choice(["ConstantOfShape", "Expand"])
    if op == "ConstantOfShape":
        made = helper.make_node("ConstantOfShape", [f"{name}_shape"], [name], name=name,
                                value=numpy_helper.from_array(np.ones([1], np.float32)))
    else:
        model.graph.initializer.append(numpy_helper.from_array(np.ones([1], np.float32), f"{name}_one"))
        made = helper.make_node("Expand", [f"{name}_one", f"{name}_shape"], [name], name=name)
    model.graph.node.insert(0, made)
    k = rng.randrange(1, len(node.input))
    node.input[k] = name
    return f"{op} {shape} as input {k} of {node.op_type}"


def m_versions(model, rng):
    if rng.random() < 0.5:
        model.ir_version = rng.choice([0, 1, 3, 4, 99])
        return f"IR {model.ir_version}"
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = rng.choice([1, 6, 9, 99])
            return f"opset {opset.version}"
    return "no opset"


def m_graph_io(model, rng):
    value = _pick(rng, list(model.graph.input) + list(model.graph.output))
    if value is None or not value.type.tensor_type.HasField("shape"):
        return "no shaped io"
    dims = value.type.tensor_type.shape.dim
    if not dims:
        return "scalar io"
    dim = dims[rng.randrange(len(dims))]
    choice = rng.random()
    if choice < 0.3:
        dim.dim_value = rng.choice([0, -3, 1 << 40])
    elif choice < 0.6:
        dim.dim_param = rng.choice(["N", "", "\xff"])
    else:
        value.type.tensor_type.elem_type = rng.choice(ODD_TYPES)
    return f"io {value.name} changed"


def m_name(model, rng):
    node = _pick(rng, model.graph.node)
    if node is None:
        return "no node"
    node.name = rng.choice(["", "a/b/c" * 50, "\u202e", "x\ny", "name with spaces", "\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace")])
    return f"rename {node.op_type}"


# Mutations that keep a model well formed (it reaches the analysis, not just validation) come twice.
STRUCTURAL = [m_attribute, m_dtype, m_dims, m_values, m_raw_length, m_typed_field, m_drop_node, m_duplicate_node,
              m_swap_inputs, m_rewire, m_op_type, m_cycle, m_huge_constant, m_versions, m_graph_io, m_name,
              m_attribute, m_values, m_values, m_swap_inputs, m_op_type, m_rewire]


def mutate(seed_model: onnx.ModelProto, rng: random.Random) -> tuple[bytes, str]:
    """One case: the model's bytes and what was done to it."""
    model = copy.deepcopy(seed_model)
    if rng.random() < 0.12:
        data = bytearray(model.SerializeToString())
        if rng.random() < 0.5 and data:
            cut = rng.randrange(len(data))
            return bytes(data[:cut]), f"truncated at {cut} of {len(data)}"
        for _ in range(rng.choice([1, 2, 8, 32])):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data), "flipped bytes"
    done = []
    for mutation in rng.sample(STRUCTURAL, rng.choice([1, 1, 2, 3])):
        try:
            done.append(mutation(model, rng))
        except Exception as exc:  # noqa: BLE001 - an earlier mutation can leave data a later one cannot read
            done.append(f"{mutation.__name__} not applied ({type(exc).__name__})")
    return model.SerializeToString(), "; ".join(done)


# --------------------------------------------------------------------------------------------------------
# the worker: runs the CLI in-process on each case


def _signature(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/bnfold/" in f.filename]
    where = f"{Path(frames[-1].filename).name}:{frames[-1].name}" if frames else "outside bnfold"
    return f"{type(exc).__name__} in {where}"


def _cli(args: list[str]) -> tuple[str, str]:
    """(outcome, detail) of one CLI run."""
    import click

    from bnfold.cli import cli

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main(args, prog_name="bnfold", standalone_mode=False)
    except click.ClickException as exc:
        return "error", exc.format_message()[:200]
    except SystemExit as exc:
        return ("ok", "") if exc.code in (0, 1, None) else ("error", f"exit {exc.code}")
    except BaseException as exc:  # noqa: BLE001 - every other exception is what the fuzzer looks for
        return "crash", _signature(exc)
    return "ok", ""


def _tolerance(elem: np.dtype) -> tuple[float, float]:
    return (1e-2, 1e-2) if elem.itemsize <= 2 else (1e-4, 1e-5)


def _same_outputs(original: Path, folded: Path) -> str | None:
    """Why the folded model's outputs differ from the original's, or None (also when ORT cannot run it)."""
    import onnxruntime as ort

    from bnfold.verify.inputs import make_inputs

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    try:
        ref = ort.InferenceSession(str(original), options, providers=["CPUExecutionProvider"])
        feeds = make_inputs(ref, {}, 0, 0, {})
        if sum(a.nbytes for a in feeds.values()) > 64 << 20:
            return None
        want = ref.run(None, feeds)
    except Exception:  # noqa: BLE001 - the original itself does not run: nothing to compare
        return None
    try:
        got = ort.InferenceSession(str(folded), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception as exc:  # noqa: BLE001
        return f"the folded model does not run: {str(exc).splitlines()[0][:120]}"
    for k, (a, b) in enumerate(zip(want, got)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return f"output {k}: shape {a.shape} -> {b.shape}"
        if a.dtype.kind != "f":
            if not np.array_equal(a, b):
                return f"output {k} differs"
            continue
        rtol, atol = _tolerance(a.dtype)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        finite = np.isfinite(a64)
        scale = float(np.max(np.abs(a64[finite]), initial=0.0))
        # Where the original overflowed it is already wrong: a fold that stays finite there (its partial sums
        # are scaled, not its result) is no worse. Where the original is finite the fold must be too.
        if not np.isfinite(b64[finite]).all():
            return f"output {k}: not finite where the original is"
        error = float(np.max(np.abs(a64[finite] - b64[finite]), initial=0.0))
        if error > atol * max(scale, 1.0) + rtol * scale:
            return f"output {k}: max abs error {error:.3g} at scale {scale:.3g}"
    return None


def _within_noise(original: Path, folded: Path) -> bool:
    """A difference beyond the fixed tolerance that is no larger than what rounding the original's weights
    once more does to it (bnfold's own criterion, bnfold/verify/criterion.py), or where that noise is itself
    too large to judge by: an ill-conditioned model (a softmax over logits of 65000) amplifies any rounding,
    the fold's and the original's alike."""
    from bnfold.verify import CEILING, verify_models
    from bnfold.verify.criterion import NOISE_FACTOR

    try:
        result = verify_models(original, folded)
    except Exception:  # noqa: BLE001 - it cannot judge: the difference stands
        return False
    # passed, or failed only because the original's own noise is past what any fold could be judged by
    return all(c.ok or (c.noise is not None and NOISE_FACTOR * c.noise >= CEILING.get(c.dtype, 0.0))
               for c in result.outputs)


def _overflows_inside(original: Path) -> bool:
    """Whether the original already computes Inf/NaN in an intermediate tensor on the fuzzer's inputs (a BN
    scale of 1e30): its outputs are then an accident of where the overflow went, and a fold that moves the
    overflow elsewhere is not comparable with it."""
    import onnxruntime as ort

    from bnfold.verify.inputs import make_inputs

    model = onnx.load(str(original))
    names = [o for n in model.graph.node for o in n.output if o]
    del model.graph.output[:]
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        values = session.run(None, make_inputs(session, {}, 0, 0, {}))
    except Exception:  # noqa: BLE001 - it cannot tell: the difference stands
        return False
    return any(np.asarray(v).dtype.kind == "f" and not np.isfinite(v).all() for v in values)


_HALF = (TensorProto.FLOAT16, TensorProto.BFLOAT16)


def _in_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every half-precision tensor, type and Cast in float32: the reference a half-precision
    model's accuracy is measured against."""
    model = copy.deepcopy(model)

    def widen(tensor: TensorProto) -> None:
        if tensor.data_type in _HALF:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))

    for init in model.graph.initializer:
        widen(init)
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if value.type.tensor_type.elem_type in _HALF:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                widen(attr.t)
            elif attr.name == "to" and attr.i in _HALF:
                attr.i = TensorProto.FLOAT
    return model


def _less_accurate(original: Path, folded: Path) -> str | None:
    """For a half-precision model: why the folded model lies further from a float32 evaluation than the
    original's own rounding explains, or None. A fold rounds each weight once where the original rounds the
    op's output: 1.3-1.7x the original's RMS error (tests/test_fold_refusals.py), up to 2.5x after a Relu
    that zeroes most of the output when BN's parameters were float32 (the fold rounds its bias to fp16);
    weights pushed below the normal range cost 4.6-58x. Past 3x the fold lost precision the original keeps."""
    import onnxruntime as ort

    from bnfold.verify.inputs import make_inputs

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    try:
        model = onnx.load(str(original))
        if not any(v.type.tensor_type.elem_type in _HALF for v in model.graph.output):
            return None
        session = ort.InferenceSession(str(original), options, providers=["CPUExecutionProvider"])
        feeds = make_inputs(session, {}, 0, 0, {})
        wide = ort.InferenceSession(_in_float32(model).SerializeToString(), options,
                                    providers=["CPUExecutionProvider"])
        reference = wide.run(None, {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in feeds.items()})
        before = session.run(None, feeds)
        after = ort.InferenceSession(str(folded), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception:  # noqa: BLE001 - no float32 reference to judge by
        return None
    for k, (ref, a, b) in enumerate(zip(reference, before, after)):
        if np.asarray(a).dtype.kind != "f" or np.shape(ref) != np.shape(a) or np.size(a) == 0:
            continue
        # by channel (axis 1 of an N x C x ... output; a flat output is one): a channel that reaches past the
        # dtype's range overflows either way, and what stays finite of it is its top binade, where one rounding
        # of the weights costs most, so such channels are not compared. Errors are RMS over the rest, at the
        # scale of the whole output (a channel a Relu almost zeroes has no scale of its own to judge by).
        rows = np.shape(a)[1] if np.ndim(a) >= 3 else 1
        ref64, a64, b64 = (np.moveaxis(np.asarray(v, dtype=np.float64), 1 if rows > 1 else 0, 0).reshape(rows, -1)
                           for v in (ref, a, b))
        limit = float(ml_dtypes.finfo(np.asarray(a).dtype).max)
        valid = (np.abs(ref64) <= limit) & np.isfinite(a64) & np.isfinite(b64)
        valid &= valid.all(axis=1, keepdims=True)
        if not valid.any():
            continue
        err_a, err_b = (float(np.sqrt(np.mean((v[valid] - ref64[valid]) ** 2))) for v in (a64, b64))
        if err_b > 3 * err_a and err_b > 1e-30:
            return f"output {k}: RMS error against float32 {err_b:.3g}, the original's {err_a:.3g}"
    return None


def run_case(path: Path, out: Path) -> dict:
    result = {}
    result["lint"] = _cli(["lint", str(path), "--isolated", "--format", "json", "-o", str(out.with_suffix(".json"))])
    result["lint-sarif"] = _cli(["lint", str(path), "--isolated", "--format", "sarif",
                                 "-o", str(out.with_suffix(".sarif"))])
    fold = _cli(["fold", str(path), str(out), "--no-verify", "--quiet"])
    if fold[0] == "ok" and out.exists() and out.read_bytes() != path.read_bytes():
        wrong = _same_outputs(path, out)
        if wrong is not None and _within_noise(path, out):
            fold = ("within-noise", wrong)
        elif wrong is not None and _overflows_inside(path):
            fold = ("original-overflows", wrong)
        elif wrong is not None:
            fold = ("wrong-fold", wrong)
        elif (lost := _less_accurate(path, out)) is not None:
            fold = ("less-accurate", lost)
        else:
            try:
                onnx.checker.check_model(str(path))
            except Exception:  # noqa: BLE001 - an invalid input need not give a valid output
                pass
            else:
                try:
                    onnx.checker.check_model(str(out))
                except Exception as exc:  # noqa: BLE001
                    fold = ("invalid-output", str(exc).splitlines()[0][:160])
    result["fold"] = fold
    return result


def worker(max_mem_gb: float) -> None:
    limit = int(max_mem_gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from bnfold.deferred import defer

    defer("sympy")
    for line in sys.stdin:
        job = json.loads(line)
        path, out = Path(job["path"]), Path(job["out"])
        try:
            result = run_case(path, out)
        except BaseException as exc:  # noqa: BLE001 - the harness itself must keep going
            result = {"harness": ("crash", _signature(exc))}
        for leftover in (out, out.with_suffix(".json"), out.with_suffix(".sarif"), Path(f"{out}.data")):
            leftover.unlink(missing_ok=True)
        print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------------------
# the driver


class Worker:
    def __init__(self, max_mem_gb: float) -> None:
        self.max_mem_gb = max_mem_gb
        self.proc = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        self.proc = subprocess.Popen([sys.executable, __file__, "_worker", str(self.max_mem_gb)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)

    def run(self, path: Path, out: Path, timeout: float) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.proc.stdin.write(json.dumps({"path": str(path), "out": str(out)}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            died = self.proc.poll() is not None
            self.stop()
            return {"harness": ("crash", "worker died") if died else ("hang", f"no answer in {timeout:g} s")}
        return json.loads(line)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def fuzz(*, seed: int, cases: int | None, minutes: float | None, timeout: float, max_mem_gb: float,
         out_dir: Path, log=print) -> dict:
    rng = random.Random(seed)
    pool = seeds()
    crashes = out_dir / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    worker_ = Worker(max_mem_gb)
    outcomes: dict[str, Counter] = {}
    signatures: dict[str, dict] = {}
    deadline = time.monotonic() + minutes * 60 if minutes else None
    done = 0
    with tempfile.TemporaryDirectory(prefix="bnfold-fuzz-") as scratch:
        try:
            while (cases is None or done < cases) and (deadline is None or time.monotonic() < deadline):
                name, model = rng.choice(pool)
                data, what = mutate(model, rng)
                path, out = Path(scratch) / "case.onnx", Path(scratch) / "case.out.onnx"
                path.write_bytes(data)
                result = worker_.run(path, out, timeout)
                done += 1
                for command, (outcome, detail) in result.items():
                    outcomes.setdefault(command, Counter())[outcome] += 1
                    if outcome in ("crash", "hang", "wrong-fold", "less-accurate", "invalid-output"):
                        key = f"{command}: {outcome}: {detail if outcome == 'crash' else detail.split(':')[0]}"
                        entry = signatures.setdefault(key, {"count": 0, "example": None, "seed": name, "what": what})
                        entry["count"] += 1
                        if entry["example"] is None:
                            example = crashes / f"{len(signatures):03d}.onnx"
                            example.write_bytes(data)
                            entry["example"] = str(example)
                            entry["detail"] = detail
                if done % 100 == 0:
                    log(f"{done} cases, {sum(e['count'] for e in signatures.values())} bad results, "
                        f"{len(signatures)} signatures")
        finally:
            worker_.stop()
    return {"cases": done, "outcomes": {k: dict(v) for k, v in outcomes.items()}, "signatures": signatures}


OUTCOMES = ("ok", "error", "within-noise", "original-overflows", "crash", "hang", "wrong-fold", "less-accurate",
            "invalid-output")


def render(report: dict, command: str) -> str:
    lines = [f"`{command}`: {report['cases']} cases.", "", "| command | " + " | ".join(
        OUTCOMES) + " |", "|---|" + "---:|" * len(OUTCOMES)]
    for name, counts in sorted(report["outcomes"].items()):
        lines.append(f"| {name} | " + " | ".join(str(counts.get(k, 0)) for k in
                                                  OUTCOMES) + " |")
    lines += ["", f"{len(report['signatures'])} distinct signatures" + (":" if report["signatures"] else ".")]
    for key, entry in sorted(report["signatures"].items(), key=lambda kv: -kv[1]["count"]):
        lines.append(f"- {key} — {entry['count']}x, e.g. {entry['seed']} with {entry['what']} ({entry['example']})")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if argv[:1] == ["_worker"]:
        worker(float(argv[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, help="run this many cases (default: until --minutes)")
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--jobs", type=int, default=1, help="parallel workers, each with its own seed stream")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--max-mem-gb", type=float, default=4.0, help="address-space limit of a worker")
    parser.add_argument("--out-dir", type=Path, default=HERE / "out" / "fuzz")
    args = parser.parse_args(argv)
    if args.cases is None and args.minutes is None:
        args.minutes = 10.0
    command = "python bench/fuzz_fold.py " + " ".join(argv)
    reports = _parallel(args) if args.jobs > 1 else [fuzz(
        seed=args.seed, cases=args.cases, minutes=args.minutes, timeout=args.timeout, max_mem_gb=args.max_mem_gb,
        out_dir=args.out_dir)]
    report = _merge(reports)
    text = render(report, command)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "fuzz_results.md").write_text(text)
    (args.out_dir / "fuzz_results.json").write_text(json.dumps(report, indent=1))
    print(text)
    return 0


def _parallel(args) -> list[dict]:
    from concurrent.futures import ThreadPoolExecutor

    per = None if args.cases is None else -(-args.cases // args.jobs)
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(fuzz, seed=args.seed * 1000 + k, cases=per, minutes=args.minutes, timeout=args.timeout,
                               max_mem_gb=args.max_mem_gb, out_dir=args.out_dir / f"job{k}") for k in range(args.jobs)]
        return [f.result() for f in futures]


def _merge(reports: list[dict]) -> dict:
    merged = {"cases": 0, "outcomes": {}, "signatures": {}}
    for report in reports:
        merged["cases"] += report["cases"]
        for name, counts in report["outcomes"].items():
            total = Counter(merged["outcomes"].get(name, {}))
            total.update(counts)
            merged["outcomes"][name] = dict(total)
        for key, entry in report["signatures"].items():
            if key in merged["signatures"]:
                merged["signatures"][key]["count"] += entry["count"]
            else:
                merged["signatures"][key] = dict(entry)
    return merged


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

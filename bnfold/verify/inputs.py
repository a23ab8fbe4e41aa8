"""The inputs both models run on: seeded random tensors per dtype and batch, or the arrays of an .npz."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bnfold.errors import InputError

# ORT names the element types after C types; everything else already has its numpy name.
_ORT_ELEMENT_NAMES = {"float": "float32", "double": "float64"}
_RANDOM_TYPES = {"float16", "float32", "float64", "bfloat16", "bool",
                 "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}


# A dynamic spatial dim of an image a Conv reads: big enough for its kernels and a few stride-2 stages, where
# 1 would verify a 1x1 image; a dynamic dim nothing fixes stays 1.
SPATIAL_DEFAULT = 32
# Random inputs of one batch, all inputs together: a --shape typo must not ask numpy for 70 GiB.
INPUT_BUDGET = 2 << 30
INTEGER_HIGH = 10  # random integers are drawn from [0, 10) unless a Gather says how big its table is


@dataclass
class InputHint:
    """What the graph says about an input: dims it fixes (dim index -> (size, why)), and for integer
    indices the size of the table they index."""

    dims: dict[int, tuple[int, str]] = field(default_factory=dict)
    high: tuple[int, str] | None = None


def input_hints(proto) -> dict[str, InputHint]:
    """Hints from the consumers of each graph input: a Conv fixes the channels (its weight's C_in times
    group) and gets image-sized spatial dims; a Gather's indices stay inside its constant table."""
    graph = proto.graph
    dims = {t.name: tuple(t.dims) for t in graph.initializer}
    inputs = {i.name for i in graph.input} - set(dims)
    hints: dict[str, InputHint] = {}
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Conv" and node.input and node.input[0] in inputs and len(node.input) > 1 \
                and node.input[1] in dims and len(dims[node.input[1]]) >= 3:
            weight = dims[node.input[1]]
            group = attrs["group"].i if "group" in attrs else 1
            hint = hints.setdefault(node.input[0], InputHint())
            hint.dims.setdefault(1, (weight[1] * group, f"the channels of Conv '{node.name or node.output[0]}'"))
            for axis in range(2, len(weight)):
                hint.dims.setdefault(axis, (max(SPATIAL_DEFAULT, weight[axis]), "an image size for its Conv"))
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] in inputs and node.input[0] in dims:
            axis = attrs["axis"].i if "axis" in attrs else 0
            table = dims[node.input[0]]
            if table and -len(table) <= axis < len(table):
                hint = hints.setdefault(node.input[1], InputHint())
                hint.high = (int(table[axis]), f"the rows of the table Gather '{node.name or node.output[0]}' reads")
    return hints


def make_inputs(session, shapes: dict[str, tuple[int, ...]], seed: int, batch: int,
                hints: dict[str, InputHint] | None = None) -> dict[str, np.ndarray]:
    """Seeded random values for every input the session needs; each batch gets its own stream."""
    rng = np.random.default_rng([seed, batch])
    feeds, total = {}, 0
    for arg in session.get_inputs():
        dtype = input_dtype(arg)
        if dtype is None or dtype.name not in _RANDOM_TYPES:
            raise InputError(f"cannot make random values for input {arg.name!r} of type {arg.type}; "
                             "pass --inputs FILE.npz")
        hint = (hints or {}).get(arg.name, InputHint())
        shape = _concrete_shape(arg, shapes.get(arg.name), hint)[0]
        total += int(np.prod(shape, dtype=object)) * dtype.itemsize
        if total > INPUT_BUDGET:
            raise InputError(f"input {arg.name!r} of shape {'x'.join(map(str, shape))} brings one batch of random "
                             f"inputs to {total / (1 << 30):.1f} GiB (at most {INPUT_BUDGET >> 30} GiB): "
                             "choose a smaller --shape or pass --inputs")
        if dtype.kind == "b":
            values = rng.random(shape) < 0.5
        elif dtype.kind in "iu":
            values = rng.integers(0, hint.high[0] if hint.high else INTEGER_HIGH, shape)
        else:
            values = rng.standard_normal(shape)
        feeds[arg.name] = np.asarray(values).astype(dtype)  # asarray: rank-0 draws come back as scalars
    return feeds


def describe_inputs(session, shapes: dict[str, tuple[int, ...]], hints: dict[str, InputHint]) -> tuple[
        list[str], list[str]]:
    """(one line per input: its concrete shape, dtype and values; a note per dim that was chosen rather than
    given or declared), so a reader sees what was verified."""
    lines, notes = [], []
    for arg in session.get_inputs():
        dtype = input_dtype(arg)
        hint = hints.get(arg.name, InputHint())
        shape, chosen = _concrete_shape(arg, shapes.get(arg.name), hint)
        if dtype is not None and dtype.kind in "iu":
            high, why = hint.high or (INTEGER_HIGH, "")
            values = f"random integers in [0, {high})" + (f", {why}" if why else "")
        else:
            values = "random booleans" if dtype is not None and dtype.kind == "b" else "random N(0, 1)"
        lines.append(f"{arg.name} {'x'.join(map(str, shape)) or 'scalar'} {dtype.name if dtype else arg.type}: "
                     f"{values}")
        if chosen:
            notes.append(f"input '{arg.name}': dynamic " + ", ".join(chosen)
                         + f" (pass --shape {arg.name}={'x'.join(map(str, shape))} to choose)")
    return lines, notes


def load_npz(path: Path, session, first_line) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as exc:
        raise InputError(f"cannot read {path.name} as .npz: {first_line(exc)}") from None
    feeds = {}
    for arg in session.get_inputs():
        if arg.name not in arrays:
            raise InputError(f"{path.name} has no array named {arg.name!r} (it has: {', '.join(arrays) or 'none'})")
        value, dtype = arrays[arg.name], input_dtype(arg)
        if dtype is not None and value.dtype != dtype:
            try:  # float64 arrays for a float32 model are the common case; casting cannot favour either model
                value = value.astype(dtype, casting="same_kind")
            except TypeError:
                raise InputError(f"{path.name}: array {arg.name!r} is {value.dtype.name}, "
                                 f"the model takes {dtype.name}") from None
        feeds[arg.name] = value
    return feeds


def input_dtype(arg) -> np.dtype | None:
    match = re.fullmatch(r"tensor\((\w+)\)", arg.type)
    if match is None:
        return None
    name = _ORT_ELEMENT_NAMES.get(match.group(1), match.group(1))
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    try:
        return np.dtype(name)
    except TypeError:
        return None


def _concrete_shape(arg, given: tuple[int, ...] | None, hint: InputHint | None = None) -> tuple[
        tuple[int, ...], list[str]]:
    """The shape to feed, and how each dynamic dim was chosen (empty when --shape gave them all)."""
    declared = arg.shape or []
    if given is None:
        shape, chosen = [], []
        for axis, dim in enumerate(declared):
            if isinstance(dim, int):
                shape.append(dim)
                continue
            size, why = (hint.dims.get(axis) if hint else None) or (1, "nothing in the graph fixes it")
            shape.append(size)
            chosen.append(f"{dim or '?'} = {size} ({why})")
        return tuple(shape), chosen
    fixed_mismatch = any(isinstance(d, int) and d != g for d, g in zip(declared, given))
    if len(given) != len(declared) or fixed_mismatch:
        shown = "x".join(str(dim) if isinstance(dim, int) else str(dim or "?") for dim in declared)
        raise InputError(f"--shape {arg.name}={'x'.join(map(str, given))} does not fit its declared shape {shown}")
    return tuple(given), []

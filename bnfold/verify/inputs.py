"""The inputs both models run on: seeded random tensors per dtype and batch, or the arrays of an .npz."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from bnfold.errors import InputError

# ORT names the element types after C types; everything else already has its numpy name.
_ORT_ELEMENT_NAMES = {"float": "float32", "double": "float64"}
_RANDOM_TYPES = {"float16", "float32", "float64", "bfloat16", "bool",
                 "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}


def make_inputs(session, shapes: dict[str, tuple[int, ...]], seed: int, batch: int) -> dict[str, np.ndarray]:
    """Seeded random values for every input the session needs; each batch gets its own stream."""
    rng = np.random.default_rng([seed, batch])
    feeds = {}
    for arg in session.get_inputs():
        dtype = input_dtype(arg)
        if dtype is None or dtype.name not in _RANDOM_TYPES:
            raise InputError(f"cannot make random values for input {arg.name!r} of type {arg.type}; "
                             "pass --inputs FILE.npz")
        shape = _concrete_shape(arg, shapes.get(arg.name))
        if dtype.kind == "b":
            values = rng.random(shape) < 0.5
        elif dtype.kind in "iu":
            values = rng.integers(0, 10, shape)
        else:
            values = rng.standard_normal(shape)
        feeds[arg.name] = np.asarray(values).astype(dtype)  # asarray: rank-0 draws come back as scalars
    return feeds


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


def _concrete_shape(arg, given: tuple[int, ...] | None) -> tuple[int, ...]:
    declared = arg.shape or []
    if given is None:
        return tuple(dim if isinstance(dim, int) else 1 for dim in declared)
    fixed_mismatch = any(isinstance(d, int) and d != g for d, g in zip(declared, given))
    if len(given) != len(declared) or fixed_mismatch:
        shown = "x".join(str(dim) if isinstance(dim, int) else str(dim or "?") for dim in declared)
        raise InputError(f"--shape {arg.name}={'x'.join(map(str, given))} does not fit its declared shape {shown}")
    return tuple(given)

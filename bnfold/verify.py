"""Prove two ONNX models compute the same function by running both in onnxruntime on the same inputs.

onnxruntime is imported inside the functions: `bnfold --help` must not pay for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnfold.errors import InputError, RuntimeUnavailable

_TOLERANCES = {  # (rtol, atol); roughly a few units in the last place of each format after a short op chain
    "float64": (1e-6, 1e-8),
    "float32": (1e-4, 1e-5),
    "float16": (1e-2, 1e-3),
    "bfloat16": (5e-2, 1e-2),
}
# ORT names the element types after C types; everything else already has its numpy name.
_ORT_ELEMENT_NAMES = {"float": "float32", "double": "float64"}
_RANDOM_TYPES = {"float16", "float32", "float64", "bfloat16", "bool",
                 "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (Load model from .*? failed:)?")


@dataclass
class OutputDiff:
    name: str
    dtype: str
    max_abs: float
    max_rel: float
    rtol: float
    atol: float
    ok: bool
    note: str = ""  # why the output failed beyond its numbers (shape or dtype differs)


@dataclass
class VerifyResult:
    outputs: list[OutputDiff]
    batches: int

    @property
    def ok(self) -> bool:
        return all(out.ok for out in self.outputs)

    @property
    def max_abs(self) -> float:
        return max((out.max_abs for out in self.outputs), default=0.0)

    def render(self) -> str:
        width = max((len(out.name) for out in self.outputs), default=0)
        lines = []
        for out in self.outputs:
            verdict = "ok" if out.ok else f"FAIL (rtol {out.rtol:.0e}, atol {out.atol:.0e})"
            if out.note:
                verdict += f": {out.note}"
            lines.append(f"{out.name:<{width}}  max abs {out.max_abs:.1e}  max rel {out.max_rel:.1e}  {verdict}")
        over = f"over {self.batches} batch{'' if self.batches == 1 else 'es'}"
        if self.ok:
            lines.append(f"verified: max abs error {self.max_abs:.1e} {over}")
        else:
            failed = sum(not out.ok for out in self.outputs)
            lines.append(f"MISMATCH: {failed} of {len(self.outputs)} outputs differ "
                         f"(max abs error {self.max_abs:.1e} {over})")
        return "\n".join(lines)


def default_tolerances(dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing outputs of this dtype; integers and bools must match exactly."""
    return _TOLERANCES.get(np.dtype(dtype).name, (0.0, 0.0))


def make_inputs(session, shapes: dict[str, tuple[int, ...]], seed: int, batch: int) -> dict[str, np.ndarray]:
    """Seeded random values for every input the session needs; each batch gets its own stream."""
    rng = np.random.default_rng([seed, batch])
    feeds = {}
    for arg in session.get_inputs():
        dtype = _input_dtype(arg)
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


def verify_models(reference: str | Path, candidate: str | Path, *, shapes: dict[str, tuple[int, ...]] | None = None,
                  inputs_npz: Path | None = None, batches: int = 3, seed: int = 0,
                  rtol: float | None = None, atol: float | None = None) -> VerifyResult:
    """Run both models on the same inputs and compare every output."""
    if batches < 1:
        raise InputError(f"batches must be at least 1, not {batches}")
    ref_path, cand_path = Path(reference), Path(candidate)
    ref, cand = _session(ref_path), _session(cand_path)
    _check_same_signature(ref, cand, ref_path, cand_path)
    shapes = shapes or {}
    unknown = sorted(set(shapes) - {arg.name for arg in ref.get_inputs()})
    if unknown:
        raise InputError(f"--shape names no input of {ref_path.name}: {', '.join(unknown)}")

    if inputs_npz is not None:
        feed_batches = [_load_npz(Path(inputs_npz), ref)]
    else:
        # one batch at a time: large inputs times many batches need not all sit in memory
        feed_batches = (make_inputs(ref, shapes, seed, batch) for batch in range(batches))

    names = [out.name for out in ref.get_outputs()]
    diffs: dict[str, OutputDiff] = {}
    count = 0
    for count, feeds in enumerate(feed_batches, 1):
        ref_values = _run(ref, feeds, ref_path)
        cand_values = dict(zip([out.name for out in cand.get_outputs()], _run(cand, feeds, cand_path)))
        for name, ref_value in zip(names, ref_values):
            diff = compare_output(name, ref_value, cand_values[name], rtol, atol)
            diffs[name] = _worse(diffs[name], diff) if name in diffs else diff
    return VerifyResult([diffs[name] for name in names], count)


def compare_output(name: str, reference, candidate, rtol: float | None = None,
                   atol: float | None = None) -> OutputDiff:
    """Errors of candidate against reference, in float64; a shape or dtype change is a failure."""
    ref, cand = np.asarray(reference), np.asarray(candidate)
    default_rtol, default_atol = default_tolerances(ref.dtype) if _is_numeric(ref.dtype) else (0.0, 0.0)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    dtype = ref.dtype.name

    def failed(note: str) -> OutputDiff:
        return OutputDiff(name, dtype, float("inf"), float("inf"), rtol, atol, False, note)

    if ref.shape != cand.shape:
        return failed(f"shape {ref.shape} vs {cand.shape}")
    if not (_is_numeric(ref.dtype) and _is_numeric(cand.dtype)):
        # strings, sequences, maps: there is no error size to report, only equal or not
        same = ref.dtype == cand.dtype and bool(np.all(ref == cand))
        return OutputDiff(name, dtype, 0.0, 0.0, rtol, atol, True) if same else failed("values differ")

    a, b = ref.astype(np.float64), cand.astype(np.float64)
    # equal infinities and NaN-at-the-same-place are not errors; a NaN on one side only is an infinite one
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where((a == b) | (np.isnan(a) & np.isnan(b)), 0.0, np.abs(a - b))
        err = np.where(np.isnan(err), np.inf, err)
        # Relative error only where the reference is above atol: near zero only the absolute error means much.
        big = ~(np.abs(a) <= atol)  # a NaN reference counts as big: any error against it is infinite
        rel = np.where(err == 0, 0.0, np.where(big, err / np.where(big, np.abs(a), 1.0), 0.0))
    max_abs = float(err.max(initial=0.0))
    max_rel = float(np.where(np.isnan(rel), np.inf, rel).max(initial=0.0))  # inf/inf: an infinite error
    ok = bool(np.allclose(b, a, rtol=rtol, atol=atol, equal_nan=True))
    if ref.dtype != cand.dtype:
        return OutputDiff(name, dtype, max_abs, max_rel, rtol, atol, False, f"dtype {dtype} vs {cand.dtype.name}")
    return OutputDiff(name, dtype, max_abs, max_rel, rtol, atol, ok)


def _worse(first: OutputDiff, second: OutputDiff) -> OutputDiff:
    return OutputDiff(first.name, first.dtype, max(first.max_abs, second.max_abs),
                      max(first.max_rel, second.max_rel), first.rtol, first.atol,
                      first.ok and second.ok, first.note or second.note)


def _session(path: Path):
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeUnavailable("onnxruntime is not installed") from None
    options = ort.SessionOptions()
    # the default level fuses Conv+BN itself, which would make comparing a folded model circular
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3  # ORT's warnings (e.g. initializers listed as inputs) are lint's job
    try:
        # from the path, not from bytes, so external data next to the model is found
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        if not _has_graph(path):
            raise InputError(f"{path.name} is not an ONNX model") from exc
        raise RuntimeUnavailable(f"onnxruntime cannot run {path.name}: {_first_line(exc)}") from exc


def _has_graph(path: Path) -> bool:
    import onnx

    try:
        return onnx.load_model(str(path), load_external_data=False).HasField("graph")
    except Exception:
        return False


def _first_line(exc: Exception) -> str:
    lines = _ORT_PREFIX.sub("", str(exc).strip()).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def _check_same_signature(ref, cand, ref_path: Path, cand_path: Path) -> None:
    for kind in ("input", "output"):
        ref_args = {arg.name: arg for arg in getattr(ref, f"get_{kind}s")()}
        cand_args = {arg.name: arg for arg in getattr(cand, f"get_{kind}s")()}
        if ref_args.keys() != cand_args.keys():
            only_ref = ", ".join(sorted(ref_args.keys() - cand_args.keys())) or "-"
            only_cand = ", ".join(sorted(cand_args.keys() - ref_args.keys())) or "-"
            raise InputError(f"the models have different {kind}s: only in {ref_path.name}: {only_ref}; "
                             f"only in {cand_path.name}: {only_cand}")
        if kind == "input":  # the same feeds go to both, so they must accept the same types
            for name, arg in ref_args.items():
                if arg.type != cand_args[name].type:
                    raise InputError(f"input {name!r} is {arg.type} in {ref_path.name} "
                                     f"but {cand_args[name].type} in {cand_path.name}")


def _input_dtype(arg) -> np.dtype | None:
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


def _load_npz(path: Path, session) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as exc:
        raise InputError(f"cannot read {path.name} as .npz: {_first_line(exc)}") from None
    feeds = {}
    for arg in session.get_inputs():
        if arg.name not in arrays:
            raise InputError(f"{path.name} has no array named {arg.name!r} (it has: {', '.join(arrays) or 'none'})")
        value, dtype = arrays[arg.name], _input_dtype(arg)
        if dtype is not None and value.dtype != dtype:
            try:  # float64 arrays for a float32 model are the common case; casting cannot favour either model
                value = value.astype(dtype, casting="same_kind")
            except TypeError:
                raise InputError(f"{path.name}: array {arg.name!r} is {value.dtype.name}, "
                                 f"the model takes {dtype.name}") from None
        feeds[arg.name] = value
    return feeds


def _run(session, feeds: dict[str, np.ndarray], path: Path) -> list:
    try:
        if not any(_is_bfloat16(v.dtype) for v in feeds.values()) and not any(
                out.type == "tensor(bfloat16)" for out in session.get_outputs()):
            return session.run(None, feeds)
        return _run_bfloat16(session, feeds)
    except Exception as exc:
        if type(exc).__name__ == "InvalidArgument":
            raise InputError(f"onnxruntime rejected the inputs of {path.name}: {_first_line(exc)}") from exc
        raise RuntimeUnavailable(f"onnxruntime failed to run {path.name}: {_first_line(exc)}; "
                                 "check --shape/--inputs") from exc


def _run_bfloat16(session, feeds: dict[str, np.ndarray]) -> list:
    """ORT's Python API has no numpy type for bfloat16, so those tensors cross as raw 16-bit words."""
    import ctypes

    import ml_dtypes
    import onnxruntime as ort
    from onnx import TensorProto

    values = {name: ort.OrtValue.ortvalue_from_numpy_with_onnx_type(value.view(np.uint16), TensorProto.BFLOAT16)
              if _is_bfloat16(value.dtype) else ort.OrtValue.ortvalue_from_numpy(value)
              for name, value in feeds.items()}
    results = []
    for value in session.run_with_ort_values(None, values):
        if value.data_type() == "tensor(bfloat16)":
            size = value.tensor_size_in_bytes()
            raw = ctypes.string_at(value.data_ptr(), size) if size else b""
            results.append(np.frombuffer(raw, dtype=ml_dtypes.bfloat16).reshape(value.shape()).copy())
        else:
            results.append(value.numpy())
    return results


def _is_bfloat16(dtype: np.dtype) -> bool:
    return dtype.name == "bfloat16"


def _is_numeric(dtype: np.dtype) -> bool:
    return dtype.kind in "biuf" or _is_bfloat16(dtype)

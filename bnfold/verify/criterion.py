"""How far apart is too far: each output's error, judged against the rounding noise the original already has.

For every compared tensor (a graph output, or the output of a folded layer), over every batch:

    scale  = max |A|                          the tensor's own magnitude (finite values)
    error  = max |B - A| / scale              how far the candidate B is from the original A
    noise  = max |A' - A| / scale             A' is the original with every weight rounded once more
    limit  = min(NOISE_FACTOR * noise + FLOOR_ULPS * eps, CEILING)     eps: the tensor dtype's machine epsilon

Why this criterion: folding changes no real-valued function, only which roundings happen — each folded
weight is s·W computed in float64 and rounded once to the weight dtype. So a correct fold moves an output by
about as much as the original's own output moves when its weights are rounded once more, and A' measures
exactly that on this model and these inputs. Deep networks amplify rounding: on ResNeXt-50 it is 2e-5 of the
output's scale (about 170 eps of fp32), so a fixed elementwise tolerance (rtol 1e-4, atol 1e-5) fails correct
folds of deep networks — and passes wrong folds of models whose outputs are small. Measured (see
sample_models/architectures/, bench/verify_bench.py): correct folds of resnext50_32x4d, inception_v3,
res2net50_14w_8s and mobileone_s0 give error/noise 0.50-1.31 at the outputs and at most 1.92 over 974
folded-layer checks; a swapped channel fails by 400-1900x its limit. A float64 copy of the original would be a
more direct reference, but onnxruntime has no float64 Conv, ConvTranspose or AveragePool kernel.

- NOISE_FACTOR gives correct folds a 2x margin over the largest error/noise ratio measured (1.92).
- FLOOR_ULPS is the slack of a shallow model, where noise can be as small as a single rounding.
- CEILING caps the limit: past it the original's own noise is too large to tell a right fold from a wrong
  one (discrete ops such as ArgMax or NonMaxSuppression flip under any perturbation), so the check fails and
  says why; --rtol/--atol then let the user judge. It sits 20x above the largest noise measured inside the
  networks above (res2net50_14w_8s, the output of its last Conv: 4.7e-4).
- An all-zero output must stay all zero; integer, bool and string outputs must match exactly.
- The noise is a maximum over the elements of every batch; an output too small for that maximum to be
  stable (fewer than NOISE_SAMPLES elements over all batches, e.g. a scalar) gets more noise runs, each with
  its own rounding, up to MAX_NOISE_RUNS: with one scalar sample on each side a correct fold would fail
  4x-noise one time in six, with 64 noise samples about never.

Explicit --rtol/--atol replace all of this with an elementwise |B - A| <= atol + rtol·|A|.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NOISE_FACTOR = 4.0
FLOOR_ULPS = 8.0
NOISE_SAMPLES = 64
MAX_NOISE_RUNS = 8
CEILING = {"float64": 1e-6, "float32": 1e-2, "float16": 1e-1, "bfloat16": 2.5e-1}
# Defaults for the elementwise check when only one of --rtol/--atol is given.
TOLERANCES = {"float64": (1e-6, 1e-8), "float32": (1e-4, 1e-5), "float16": (1e-2, 1e-3), "bfloat16": (5e-2, 1e-2)}

NOISE, TOLERANCE, EXACT = "noise", "tolerance", "exact"


def default_tolerances(dtype) -> tuple[float, float]:
    """(rtol, atol) of the elementwise check for this dtype; integers and bools must match exactly."""
    return TOLERANCES.get(np.dtype(dtype).name, (0.0, 0.0))


def machine_epsilon(dtype) -> float:
    dtype = np.dtype(dtype)
    if dtype.name == "bfloat16":
        return 2.0 ** -7
    return float(np.finfo(dtype).eps)


def is_numeric(dtype: np.dtype) -> bool:
    return dtype.kind in "biuf" or dtype.name == "bfloat16"


def is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f" or dtype.name == "bfloat16"


@dataclass
class Comparison:
    """The verdict for one compared tensor (a graph output, or the output of one folded layer)."""

    name: str
    dtype: str
    criterion: str       # NOISE, TOLERANCE or EXACT
    ok: bool
    scale: float         # max |A|
    error: float         # max |B - A| / scale
    noise: float | None  # max |A' - A| / scale (criterion NOISE)
    limit: float         # the largest error that passes (criterion NOISE; 0 for EXACT)
    max_abs: float       # max |B - A|
    max_rel: float       # max |B - A| / |A| where |A| > atol
    rtol: float | None = None  # criterion TOLERANCE
    atol: float | None = None
    note: str = ""       # why it failed beyond its numbers
    original: str = ""   # for a folded layer: the original model's tensor it is compared with

    def to_json(self) -> dict:
        return {key: value for key, value in vars(self).items() if value is not None and value != ""}


class Tally:
    """Running maxima for one tensor over batches; `result()` turns them into a Comparison."""

    def __init__(self, name: str, *, rtol: float | None = None, atol: float | None = None, original: str = ""):
        self.name, self.original = name, original
        self.given = (rtol, atol)
        self.dtype: np.dtype | None = None
        self.note = ""
        self.scale = self.max_abs = self.max_rel = self.max_noise = 0.0
        self.within_tolerance = True

    @property
    def criterion(self) -> str:
        if self.dtype is None or not is_float(self.dtype):
            return EXACT
        return NOISE if self.given == (None, None) else TOLERANCE

    def tolerances(self) -> tuple[float, float]:
        rtol, atol = default_tolerances(self.dtype) if self.criterion == TOLERANCE else (0.0, 0.0)
        return (rtol if self.given[0] is None else self.given[0]), (atol if self.given[1] is None else self.given[1])

    def add(self, reference, candidate) -> None:
        ref, cand = np.asarray(reference), np.asarray(candidate)
        self.dtype = self.dtype or ref.dtype
        if self.note:
            return
        if ref.shape != cand.shape:
            self.note = f"shape {ref.shape} vs {cand.shape}"
        elif ref.dtype != cand.dtype:
            self.note = f"dtype {ref.dtype.name} vs {cand.dtype.name}"
        elif not (is_numeric(ref.dtype) and is_numeric(cand.dtype)):
            # strings, sequences, maps: there is no error size, only equal or not
            if not np.array_equal(ref, cand):
                self.note = "values differ"
        else:
            self._add_numbers(ref.astype(np.float64), cand.astype(np.float64))

    def add_noise(self, reference, noisy) -> None:
        """One noise run's output for the same inputs as the last add()."""
        ref, noisy = np.asarray(reference), np.asarray(noisy)
        if not (is_float(ref.dtype) and ref.shape == noisy.shape):
            return
        a, c = ref.astype(np.float64), noisy.astype(np.float64)
        # The noise run may turn a value non-finite (a perturbation on a knife edge): that says nothing
        # about how large rounding noise is, so only values finite in both count.
        both = np.isfinite(a) & np.isfinite(c)
        self.max_noise = max(self.max_noise, float(np.abs(c[both] - a[both]).max(initial=0.0)))

    def _add_numbers(self, a: np.ndarray, b: np.ndarray) -> None:
        finite = np.isfinite(a)
        self.scale = max(self.scale, float(np.abs(a[finite]).max(initial=0.0)))
        err = _difference(a, b)
        self.max_abs = max(self.max_abs, float(err.max(initial=0.0)))
        rtol, atol = self.tolerances()
        with np.errstate(invalid="ignore", divide="ignore"):
            # relative error only where the reference is above atol: near zero only the absolute error means much
            big = ~(np.abs(a) <= atol)  # a NaN reference counts as big: any error against it is infinite
            rel = np.where(err == 0, 0.0, np.where(big, err / np.where(big, np.abs(a), 1.0), 0.0))
        self.max_rel = max(self.max_rel, float(np.where(np.isnan(rel), np.inf, rel).max(initial=0.0)))
        if self.criterion == TOLERANCE:
            self.within_tolerance &= bool(np.all(err <= atol + rtol * np.abs(np.where(finite, a, 0.0))))

    def result(self) -> Comparison:
        dtype = self.dtype.name if self.dtype is not None else "?"
        criterion = self.criterion
        rtol, atol = self.tolerances() if criterion == TOLERANCE else (None, None)
        error = _relative(self.max_abs, self.scale)
        if criterion == NOISE:
            noise = _relative(self.max_noise, self.scale)
            limit = min(NOISE_FACTOR * noise + FLOOR_ULPS * machine_epsilon(self.dtype), CEILING.get(dtype, 0.0))
            ok = error <= limit
        else:
            noise, limit = None, 0.0
            ok = self.within_tolerance if criterion == TOLERANCE else self.max_abs == 0.0
        note = self.note
        if note:  # a shape, dtype or value mismatch is infinitely wrong
            error, ok = float("inf"), False
        elif criterion == NOISE and not ok and NOISE_FACTOR * noise >= CEILING.get(dtype, 0.0):
            note = (f"the original's own rounding noise ({noise:.1e}) is too large to judge a fold by; "
                    "pass --rtol/--atol to set the tolerance yourself")
        return Comparison(self.name, dtype, criterion, ok, self.scale, error, noise, limit, self.max_abs,
                          self.max_rel, rtol, atol, note, self.original)


def _difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|b - a|, with equal infinities and NaN-at-the-same-place counting as no error, NaN on one side as inf."""
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where((a == b) | (np.isnan(a) & np.isnan(b)), 0.0, np.abs(a - b))
    return np.where(np.isnan(err), np.inf, err)


def _relative(value: float, scale: float) -> float:
    if value == 0.0:
        return 0.0
    return value / scale if scale > 0.0 else float("inf")

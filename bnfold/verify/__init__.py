"""Prove that two ONNX models compute the same function: run both in onnxruntime on the same inputs and
judge every output against the rounding noise the original model already has (see criterion.py).

    result = verify_models("model.onnx", "model.folded.onnx")
    result.ok, result.outputs, result.layers, result.render()

`bnfold fold` also passes checkpoints, one per folded layer: the tensor after the layer in the folded model
and the tensor it replaces in the original. They are judged like outputs, so a fold that is wrong in one
channel of a late layer — below what reaches the logits through the network's own noise — still fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np

from bnfold.errors import InputError
from bnfold.verify.criterion import (CEILING, EXACT, FLOOR_ULPS, MAX_NOISE_RUNS, NOISE, NOISE_FACTOR, NOISE_SAMPLES,
                                     TOLERANCE, Comparison, Tally, default_tolerances)
from bnfold.verify.inputs import describe_inputs, input_hints, load_npz, make_inputs
from bnfold.verify.runtime import OpenModel, first_line, run

__all__ = ["CEILING", "Checkpoint", "Comparison", "VerifyResult", "default_tolerances", "make_inputs",
           "verify_models"]


@dataclass(frozen=True)
class Checkpoint:
    """A tensor of the original (`original`) that the folded model computes as `folded`, after layer `label`."""

    original: str
    folded: str
    label: str


@dataclass
class VerifyResult:
    outputs: list[Comparison]
    batches: int
    layers: list[Comparison] = field(default_factory=list)
    noise_runs: int = 0  # how many runs of the reference with its weights rounded once more
    inputs: list[str] = field(default_factory=list)  # what each input was fed (shape, dtype, values)
    notes: list[str] = field(default_factory=list)  # choices the user did not make (dynamic dims, batches)
    saved: str | None = None  # where --save-inputs put the batch with the largest error

    @property
    def ok(self) -> bool:
        return all(c.ok for c in (*self.outputs, *self.layers))

    @property
    def max_abs(self) -> float:
        return max((out.max_abs for out in self.outputs), default=0.0)

    @property
    def criterion(self) -> str:
        kinds = {c.criterion for c in (*self.outputs, *self.layers)} - {EXACT}
        return kinds.pop() if kinds else EXACT

    def to_json(self) -> dict:
        return {"ok": self.ok, "batches": self.batches, "criterion": self.criterion, "noise_runs": self.noise_runs,
                "inputs": self.inputs, "notes": self.notes, "saved_inputs": self.saved,
                "outputs": [c.to_json() for c in self.outputs], "layers": [c.to_json() for c in self.layers]}

    def render(self) -> str:
        tolerance = self.criterion == TOLERANCE
        if tolerance:
            lines = ["elementwise check: |B - A| <= atol + rtol * |A|  (A: reference, B: candidate)"]
            header = ("max|A|", "max abs", "max rel", "rtol", "atol")
        else:
            lines = [f"error = max|B - A| / max|A| (A: reference, B: candidate); noise: the same for A with its "
                     f"weights rounded once more; limit = {NOISE_FACTOR:g} x noise + {FLOOR_ULPS:g} eps"]
            header = ("max|A|", "error", "noise", "limit")
        lines = [f"input  {line}" for line in self.inputs] + [f"note: {note}" for note in self.notes] + lines
        width = max([len("output"), *(len(c.name) for c in self.outputs)])
        lines.append(f"{'output':<{width}}  " + "  ".join(f"{h:<8}" for h in header).rstrip())
        lines += [f"{c.name:<{width}}  {_row(c)}" for c in self.outputs]
        lines += self._layer_lines()
        if self.saved:
            lines.append(self.saved)
        over = f"over {self.batches} batch{'' if self.batches == 1 else 'es'}"
        layers = f" and {_count(len(self.layers), 'folded layer')}" if self.layers else ""
        if self.ok:
            lines.append(f"verified: {_count(len(self.outputs), 'output')}{layers} within limits {over}")
        else:
            bad_out = sum(not c.ok for c in self.outputs)
            bad_layers = f" and {sum(not c.ok for c in self.layers)} of {len(self.layers)} folded layers" \
                if self.layers else ""
            lines.append(f"MISMATCH: {bad_out} of {_count(len(self.outputs), 'output')}{bad_layers} differ {over}")
        return "\n".join(lines)

    def _layer_lines(self) -> list[str]:
        if not self.layers:
            return []
        failed = [c for c in self.layers if not c.ok]
        if not failed:
            closest = max(self.layers, key=_closeness)
            return [f"folded layers: {len(self.layers)} checked, all within limits; closest to its limit: "
                    f"{closest.name}, {_fields(closest)}"]
        return [f"folded layers: {len(failed)} of {len(self.layers)} beyond their limits:"] + [
            f"  {c.name}: {_fields(c)}  FAIL" + (f": {c.note}" if c.note else "") for c in failed]


def verify_models(reference: str | Path, candidate: str | Path, *, shapes: dict[str, tuple[int, ...]] | None = None,
                  inputs_npz: Path | None = None, batches: int = 3, seed: int = 0,
                  rtol: float | None = None, atol: float | None = None,
                  checkpoints: Sequence[Checkpoint] = (), progress=None,
                  save_inputs: Path | None = None) -> VerifyResult:
    """Run both models on the same inputs and judge every output (and every checkpoint) against the
    reference's own rounding noise, or elementwise when rtol/atol are given. `save_inputs` gets the batch
    whose outputs differ most (as an .npz that `inputs_npz` takes back), to reproduce a mismatch."""
    if batches < 1:
        raise InputError(f"batches must be at least 1, not {batches}")
    ref_path, cand_path = Path(reference), Path(candidate)
    if save_inputs is not None:
        from bnfold import io

        io.check_side_outputs({"--save-inputs": Path(save_inputs)},
                              {ref_path: "the reference model", cand_path: "the candidate model"})
    ref_model = OpenModel(ref_path, [c.original for c in checkpoints])
    cand_model = OpenModel(cand_path, [c.folded for c in checkpoints])
    ref, cand = ref_model.session(), cand_model.session()
    _check_same_signature(ref, cand, ref_model, cand_model)
    cand_model.release()
    by_noise = rtol is None and atol is None
    noisy = [ref_model.session(noise_seed=seed)] if by_noise else []
    shapes = shapes or {}
    unknown = sorted(set(shapes) - {arg.name for arg in ref.get_inputs()})
    if unknown:
        raise InputError(f"--shape names no input of {ref_path.name}: {', '.join(unknown)}")

    if inputs_npz is not None:
        feed_batches = [load_npz(Path(inputs_npz), ref, first_line)]
        described = [f"{name} {'x'.join(map(str, a.shape)) or 'scalar'} {a.dtype.name}: from {Path(inputs_npz).name}"
                     for name, a in feed_batches[0].items()]
        notes = [f"--inputs {Path(inputs_npz).name} is one batch: --batches {batches} does not apply"] \
            if batches > 1 else []
        batches = 1
    else:
        hints = input_hints(ref_model.proto)
        described, notes = describe_inputs(ref, shapes, hints)
        # one batch at a time: large inputs times many batches need not all sit in memory
        feed_batches = (make_inputs(ref, shapes, seed, batch, hints) for batch in range(batches))

    ref_names, cand_names = set(_names(ref)), set(_names(cand))
    outputs = [Tally(name, rtol=rtol, atol=atol) for name in ref_model.output_names]
    layers = [(point, Tally(point.label, rtol=rtol, atol=atol, original=point.original)) for point in checkpoints
              if point.original in ref_names and point.folded in cand_names]
    pairs = [(t.name, t.name, t) for t in outputs] + [(p.original, p.folded, t) for p, t in layers]
    count, worst = 0, (-1.0, 0, {})
    for count, feeds in enumerate(feed_batches, 1):
        want = run(ref, feeds, ref_path)
        got = run(cand, feeds, cand_path)
        if save_inputs is not None:
            worst = max(worst, (_batch_error(want, got, ref_model.output_names), count, feeds), key=lambda w: w[0])
        for ref_name, cand_name, tally in pairs:
            tally.add(want[ref_name], got[cand_name])
        if count == 1 and noisy:
            smallest = min((want[name].size for name, _, t in pairs if t.criterion == NOISE), default=0)
            runs = min(MAX_NOISE_RUNS, -(-NOISE_SAMPLES // max(1, smallest * batches)))
            noisy += [ref_model.session(noise_seed=seed, noise_run=k) for k in range(1, runs)]
            ref_model.release()
        for session in noisy:
            shaken = run(session, feeds, ref_path)
            for ref_name, _, tally in pairs:
                tally.add_noise(want[ref_name], shaken[ref_name])
        if progress is not None:
            progress(f"verifying: batch {count}/{batches} done")
    ref_model.release()
    saved = None
    if save_inputs is not None:
        _save_npz(Path(save_inputs), worst[2])
        saved = (f"saved batch {worst[1]} of {count} (the largest error) to {save_inputs}: "
                 f"rerun with --inputs {save_inputs}")
    return VerifyResult([t.result() for t in outputs], count, [t.result() for _, t in layers],
                        noise_runs=len(noisy), inputs=described, notes=notes, saved=saved)


def _batch_error(want: dict, got: dict, names: list[str]) -> float:
    """The largest max|B - A| / max|A| over the outputs of one batch (inf where it is not finite)."""
    worst = 0.0
    for name in names:
        a, b = np.asarray(want[name]), np.asarray(got[name])
        if a.shape != b.shape or a.dtype.kind not in "fiub":
            return float("inf") if a.shape != b.shape else worst
        a, b = a.astype(np.float64), b.astype(np.float64)
        diff = float(np.max(np.abs(b - a), initial=0.0))
        error = diff / max(float(np.max(np.abs(a), initial=0.0)), np.finfo(np.float64).tiny)
        worst = max(worst, error if np.isfinite(error) else float("inf"))
    return worst


def _save_npz(path: Path, feeds: dict) -> None:
    from bnfold import io

    buffer = BytesIO()
    np.savez(buffer, **feeds)
    io.write_bytes_atomic(path, buffer.getvalue())


def _names(session) -> list[str]:
    return [out.name for out in session.get_outputs()]


def _check_same_signature(ref, cand, ref_model: OpenModel, cand_model: OpenModel) -> None:
    ref_name, cand_name = ref_model.path.name, cand_model.path.name
    if set(ref_model.output_names) != set(cand_model.output_names):
        only_ref = ", ".join(sorted(set(ref_model.output_names) - set(cand_model.output_names))) or "-"
        only_cand = ", ".join(sorted(set(cand_model.output_names) - set(ref_model.output_names))) or "-"
        raise InputError(f"the models have different outputs: only in {ref_name}: {only_ref}; "
                         f"only in {cand_name}: {only_cand}")
    ref_args = {arg.name: arg for arg in ref.get_inputs()}
    cand_args = {arg.name: arg for arg in cand.get_inputs()}
    if ref_args.keys() != cand_args.keys():
        only_ref = ", ".join(sorted(ref_args.keys() - cand_args.keys())) or "-"
        only_cand = ", ".join(sorted(cand_args.keys() - ref_args.keys())) or "-"
        raise InputError(f"the models have different inputs: only in {ref_name}: {only_ref}; "
                         f"only in {cand_name}: {only_cand}")
    for name, arg in ref_args.items():  # the same feeds go to both, so they must accept the same types
        if arg.type != cand_args[name].type:
            raise InputError(f"input {name!r} is {arg.type} in {ref_name} but {cand_args[name].type} in {cand_name}")


def _row(c: Comparison) -> str:
    if c.criterion == TOLERANCE:
        cells = [c.scale, c.max_abs, c.max_rel, c.rtol, c.atol]
    else:
        cells = [c.scale, c.error, "exact" if c.criterion == EXACT else c.noise, c.limit]
    text = "  ".join(f"{_number(v):<8}" for v in cells)
    verdict = "ok" if c.ok else "FAIL"
    return f"{text}  {verdict}" + (f": {c.note}" if c.note else "")


def _fields(c: Comparison) -> str:
    if c.criterion == TOLERANCE:
        return f"max abs {c.max_abs:.1e}, max rel {c.max_rel:.1e}"
    noise = "exact" if c.criterion == EXACT else f"noise {c.noise:.1e}"
    return f"error {c.error:.1e}, {noise}, limit {c.limit:.1e}"


def _number(value) -> str:
    return value if isinstance(value, str) else f"{value:.1e}"


def _closeness(c: Comparison) -> float:
    return c.error / c.limit if c.limit > 0 else (0.0 if c.error == 0 else float("inf"))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"

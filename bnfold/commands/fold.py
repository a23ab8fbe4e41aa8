"""`bnfold fold`: load, fold, stage the result beside OUT, verify it against IN, then move it into place."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from bnfold.errors import OutputError, RuntimeUnavailable
from bnfold.fold.result import FOLDED


def _plan_lines(result) -> list[str]:
    lines = []
    for d in result.decisions:
        where = f"[{d.graph}] " if d.graph else ""
        if d.outcome == FOLDED:
            lines.append(f"  {where}{d.op_type} '{d.node}': {d.detail}")
        else:
            lines.append(f"  {where}{d.op_type} '{d.node}': skipped ({d.reason}): {d.detail}")
    return lines


def run_fold(model_in: Path, model_out: Path, *, in_place: bool, dry_run: bool, report_path: Path | None,
             strict_inputs: bool, verify: bool, force: bool, shapes: dict, inputs_npz: Path | None, batches: int,
             seed: int, rtol: float | None, atol: float | None) -> bool:
    """Returns False when verification failed (exit 1); raises BnfoldError for user errors (exit 2)."""
    from bnfold import io
    from bnfold.keras import refuse_keras

    refuse_keras(model_in, "fold")
    echo = lambda text: click.echo(text, err=True)  # noqa: E731 - the report goes to stderr, data to stdout
    # Progress only for a person watching: CI logs and pipes get the summary alone.
    progress = echo if sys.stderr.isatty() else (lambda text: None)
    progress(f"loading {model_in}")
    for target in ([] if dry_run else [model_out]) + ([report_path] if report_path else []):
        if not target.parent.resolve().is_dir():
            raise OutputError(f"{target}: folder {target.parent} does not exist")
    model, data_files = io.load_model_and_data(model_in)
    if not dry_run:
        io.check_destination(model_in, data_files, model_out, in_place=in_place)
    external = io.has_external_data(model)
    progress("folding")
    # An external-data model may not fit in memory: its folded weights go to a scratch file as computed.
    spill = io.TensorSpill(model_out.parent) if external and not dry_run else contextlib.nullcontext()
    with spill:
        return _fold_and_write(model, model_in, model_out, spill, dry_run=dry_run, report_path=report_path,
                               strict_inputs=strict_inputs, verify=verify, force=force, shapes=shapes,
                               inputs_npz=inputs_npz, batches=batches, seed=seed, rtol=rtol, atol=atol,
                               external=external, progress=progress)


def _fold_and_write(model, model_in: Path, model_out: Path, spill, *, dry_run: bool, report_path: Path | None,
                    strict_inputs: bool, verify: bool, force: bool, shapes: dict, inputs_npz: Path | None,
                    batches: int, seed: int, rtol: float | None, atol: float | None, external: bool,
                    progress) -> bool:
    from bnfold import io
    from bnfold.fold import fold_model

    echo = lambda text: click.echo(text, err=True)  # noqa: E731 - the report goes to stderr, data to stdout
    result = fold_model(model, strict_inputs=strict_inputs, store=getattr(spill, "store", None))
    # Every decision, skips included: a model with nothing to fold is written unchanged and this says why.
    for line in _plan_lines(result):
        echo(line)
    echo(result.summary())
    if result.removed_inputs:
        echo(f"removed {len(result.removed_inputs)} initializer graph inputs that only fed folded ops")
    report = result.to_json()
    report.update({"input": str(model_in), "output": None if dry_run else str(model_out)})
    ok = True
    if not dry_run:
        progress(f"writing {model_out}")
        # Nothing folded: the output is the input, byte for byte.
        staged = io.StagedModel(model, model_out, external_data=external,
                                unchanged_from=None if result.folded else model_in)
        try:
            if verify and result.folded:
                from bnfold.verify import verify_models

                progress(f"verifying with onnxruntime ({batches} batches)")
                try:
                    check = verify_models(model_in, staged.path, shapes=shapes, inputs_npz=inputs_npz,
                                          batches=batches, seed=seed, rtol=rtol, atol=atol,
                                          checkpoints=result.checkpoints)
                except RuntimeUnavailable as exc:
                    raise RuntimeUnavailable(f"{exc}; pass --no-verify to skip verification") from exc
                report["verify"] = check.to_json()
                echo(check.render())
                ok = check.ok
            if ok or force:
                staged.commit()
                echo(f"wrote {model_out}" + ("" if ok else " (verification FAILED, written because of --force)"))
            else:
                echo(f"verification failed: {model_out} not written (--force writes it anyway)")
        finally:
            staged.discard()
    if report_path is not None:
        io.write_text_atomic(report_path, json.dumps(report, indent=2) + "\n")
    return ok

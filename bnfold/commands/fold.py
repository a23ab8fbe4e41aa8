"""`bnfold fold`: load, fold, stage the result beside OUT, verify it against IN, then move it into place."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import click

from bnfold.errors import InputError, OutputError, RuntimeUnavailable
from bnfold.fold.ranges import GROWTH_LIMIT
from bnfold.progress import Progress
from bnfold.fold.result import FOLDED

# What a Keras BatchNormalization becomes in tf2onnx's ONNX (the Transposes around it only borrow its name)
BATCHNORM_OPS = {"BatchNormalization", "Mul", "Add", "Sub", "Div"}


def _plan_lines(result, *, planned: bool = False) -> list[str]:
    lines = []
    for d in result.decisions:
        where = f"[{d.graph}] " if d.graph else ""
        if d.outcome == FOLDED:
            wide = (d.range_growth or 0) >= GROWTH_LIMIT
            note = (f" (widens the weight's per-tensor range {d.range_growth:.0f}x, channel {d.worst_channel}: "
                    "quantize it per channel; BN015)" if wide else "")
            detail = "would fold " + d.detail.removeprefix("folded ") if planned else d.detail
            lines.append(f"  {where}{d.op_type} '{d.node}': {detail}{note}")
        else:
            lines.append(f"  {where}{d.op_type} '{d.node}': skipped ({d.reason}): {d.detail}")
    return lines


def _gate(result, fail_on_skip: frozenset[str]) -> str | None:
    """Why --fail-on-skip stops this fold, or None."""
    hits = Counter(d.reason for d in result.skipped if d.reason in fail_on_skip)
    if not hits:
        return None
    return (f"{sum(hits.values())} skipped for {', '.join(f'{r} ({n})' for r, n in sorted(hits.items()))}, "
            "which --fail-on-skip refuses")


def run_fold(model_in: Path, model_out: Path, *, in_place: bool, dry_run: bool, report_path: Path | None,
             strict_inputs: bool, verify: bool, force: bool, shapes: dict, inputs_npz: Path | None, batches: int,
             seed: int, rtol: float | None, atol: float | None, opset: int = 17, unsafe_keras: bool = False,
             fail_on_skip: frozenset[str] = frozenset(), quiet: bool = False, save_inputs: Path | None = None,
             max_range_growth: float | None = None) -> bool:
    """Returns False when verification failed or --fail-on-skip stopped the fold (exit 1); raises BnfoldError
    for user errors (exit 2)."""
    from bnfold.keras import is_keras_path

    options = dict(in_place=in_place, dry_run=dry_run, report_path=report_path, strict_inputs=strict_inputs,
                   verify=verify, force=force, shapes=shapes, inputs_npz=inputs_npz, batches=batches, seed=seed,
                   rtol=rtol, atol=atol, fail_on_skip=fail_on_skip, quiet=quiet, save_inputs=save_inputs,
                   max_range_growth=max_range_growth)
    if not is_keras_path(model_in):
        return _run_onnx(model_in, model_out, **options)
    if not dry_run and (in_place or model_out.suffix.lower() != ".onnx"):
        raise InputError(f"{model_in.name} is a Keras model: it folds into a new ONNX file, so OUT must end in .onnx")
    from bnfold.keras.convert import worker

    _refuse_layer_code(model_in, unsafe_keras)
    scratch_parent = None if dry_run else model_out.parent
    with tempfile.TemporaryDirectory(prefix=".bnfold-keras-", dir=scratch_parent) as scratch:
        converted = Path(scratch) / f"{model_in.stem}.onnx"
        if sys.stderr.isatty():
            click.echo(f"converting {model_in} with tf2onnx (opset {opset})", err=True)
        worker("convert", str(model_in), str(converted), str(opset), unsafe=unsafe_keras)
        click.echo(f"converted {model_in.name} with tf2onnx", err=True)
        return _run_onnx(converted, model_out, **options, keras_source=(model_in, unsafe_keras))


def _keras_calls(path: Path) -> tuple[dict, list]:
    """A Keras file's model config and its layer calls, read as data."""
    from bnfold.keras import read_keras

    keras_file, graph = read_keras(path)
    return keras_file.config, graph.calls


def _keras_batchnorm_scopes(path: Path) -> dict[str, list[str]]:
    """Each Keras BatchNormalization layer and the name scopes (below the model's) its ops carry in the ONNX."""
    from bnfold.keras.convert import LEGACY_SUFFIXES
    from bnfold.keras.scopes import keras3_scopes

    config, calls = _keras_calls(path)
    if path.suffix.lower() in LEGACY_SUFFIXES:
        scopes = {call.layer: [call.layer] for call in calls}
    else:
        scopes = keras3_scopes(str(config.get("config", {}).get("name", "")), calls)
    return {call.layer: scopes[call.layer] for call in calls if call.cls == "BatchNormalization"}


def keras_layer_outcomes(scopes: dict[str, list[str]], decisions, nodes: list[tuple[str, str]]) -> dict:
    """What became of each Keras BatchNormalization layer. tf2onnx names ops by the TensorFlow scope they were
    traced in (model/batch_normalization_1/batchnorm/mul_1), so a layer's ops are the decisions under one of
    its scopes. A layer with no decision either kept BN ops (op type, name) in the folded model that the
    analysis found no linear partner for, or was merged into its Conv's weights by TensorFlow before the ONNX
    was written."""

    def under(name: str, paths: list[str]) -> bool:
        return any(name.split("/")[1:1 + path.count("/") + 1] == path.split("/") for path in paths)

    outcome = {}
    for layer, paths in scopes.items():
        own = [d for d in decisions if under(d.node, paths)]
        if not own:
            kept = any(op in BATCHNORM_OPS and under(name, paths) for op, name in nodes)
            outcome[layer] = "left: no adjacent linear op" if kept else "merged by TensorFlow"
        elif all(d.outcome == FOLDED for d in own):
            outcome[layer] = "folded"
        else:
            outcome[layer] = "left: " + ", ".join(sorted({d.reason for d in own if d.outcome != FOLDED}))
    return outcome


def _refuse_layer_code(path: Path, allowed: bool) -> None:
    """Loading a Keras model runs its Lambda layers' code (CVE-2024-3660): not without being told."""
    lambdas = [call.layer for call in _keras_calls(path)[1] if call.cls == "Lambda"]
    if lambdas and not allowed:
        raise InputError(f"{path.name} has Lambda layers ({', '.join(lambdas[:3])}"
                         f"{', ...' if len(lambdas) > 3 else ''}) whose code TensorFlow would run to load it; "
                         "pass --unsafe-keras if you trust the file")


def _run_onnx(model_in: Path, model_out: Path, *, in_place: bool, dry_run: bool, report_path: Path | None,
              strict_inputs: bool, verify: bool, force: bool, shapes: dict, inputs_npz: Path | None, batches: int,
              seed: int, rtol: float | None, atol: float | None, fail_on_skip: frozenset[str], quiet: bool = False,
              save_inputs: Path | None = None, keras_source: tuple | None = None,
              max_range_growth: float | None = None) -> bool:
    from bnfold import io

    progress = Progress(quiet=quiet)  # every stage on a terminal; in CI logs only long work (bnfold/progress.py)
    progress(f"loading {model_in}")
    for target in ([] if dry_run else [model_out]) + ([report_path] if report_path else []):
        if not target.parent.resolve().is_dir():
            raise OutputError(f"{target}: folder {target.parent} does not exist")
    if not dry_run and model_out.is_dir():
        raise OutputError(f"{model_out} is a folder: OUT is the file to write (or use --out-dir)")
    model, data_files = io.load_model_and_data(model_in)
    if not dry_run:
        io.check_destination(model_in, data_files, model_out, in_place=in_place)
    protected = {} if dry_run else {model_out: "the output model", model_out.with_name(f"{model_out.name}.data"):
                                    "the output model's external data"}
    protected.update({model_in: "the input model", **{data: f"external data of {model_in.name}" for data in data_files}})
    io.check_side_outputs({"--report": report_path, "--save-inputs": save_inputs}, protected)
    external = io.has_external_data(model)
    progress("folding")
    # An external-data model may not fit in memory: its folded weights go to a scratch file as computed.
    spill = io.TensorSpill(model_out.parent) if external and not dry_run else contextlib.nullcontext()
    with spill:
        return _fold_and_write(model, model_in, model_out, spill, dry_run=dry_run, report_path=report_path,
                               strict_inputs=strict_inputs, verify=verify, force=force, shapes=shapes,
                               inputs_npz=inputs_npz, batches=batches, seed=seed, rtol=rtol, atol=atol,
                               external=external, progress=progress, keras_source=keras_source,
                               fail_on_skip=fail_on_skip, save_inputs=save_inputs, max_range_growth=max_range_growth,
                               # in place, IN's old data goes with the old IN; else it is never touched
                               keep=() if model_out.resolve() == model_in.resolve() else tuple(data_files))


def _fold_and_write(model, model_in: Path, model_out: Path, spill, *, dry_run: bool, report_path: Path | None,
                    strict_inputs: bool, verify: bool, force: bool, shapes: dict, inputs_npz: Path | None,
                    batches: int, seed: int, rtol: float | None, atol: float | None, external: bool,
                    progress, keras_source: tuple | None = None, fail_on_skip: frozenset[str] = frozenset(),
                    save_inputs: Path | None = None, keep: tuple[Path, ...] = (),
                    max_range_growth: float | None = None) -> bool:
    from bnfold import io
    from bnfold.fold import fold_model

    echo = click.echo  # the plan, the verdict and what was written are the results: stdout, like lint's report
    result = fold_model(model, strict_inputs=strict_inputs, store=getattr(spill, "store", None),
                        max_growth=max_range_growth)
    # Every decision, skips included: a model with nothing to fold is written unchanged and this says why.
    for line in _plan_lines(result, planned=dry_run):
        echo(line)
    echo(result.summary(planned=dry_run))
    outcomes = None
    if keras_source is not None:
        outcomes = keras_layer_outcomes(_keras_batchnorm_scopes(keras_source[0]), result.decisions,
                                        [(node.op_type, node.name or "") for node in model.graph])
        counts = sorted(Counter(outcomes.values()).items(), key=lambda kv: -kv[1])
        echo(f"Keras BatchNormalization layers: {len(outcomes)}"
             + (": " + ", ".join(f"{n} {what}" for what, n in counts) if counts else ""))
    if result.removed_inputs:
        echo(f"removed {len(result.removed_inputs)} initializer graph inputs that only fed folded ops")
    report = result.to_json()
    if outcomes is not None:
        report["keras_batchnorm_layers"] = outcomes
    report.update({"input": str(model_in), "output": None if dry_run else str(model_out)})
    ok = True
    gate = _gate(result, fail_on_skip)
    if gate is not None:
        report["fail_on_skip"] = gate
        echo(f"{gate}: {model_out} not written" if not dry_run else gate)
        ok = False
    elif not dry_run:
        progress(f"writing {model_out}")
        # Nothing folded: the output is the input, byte for byte.
        staged = io.StagedModel(model, model_out, external_data=external,
                                unchanged_from=None if result.folded else model_in, keep=keep)
        try:
            if verify and result.folded:
                from bnfold.verify import verify_models

                progress(f"verifying with onnxruntime ({batches} batches)")
                try:
                    check = verify_models(model_in, staged.path, shapes=shapes, inputs_npz=inputs_npz,
                                          batches=batches, seed=seed, rtol=rtol, atol=atol,
                                          checkpoints=result.checkpoints, progress=progress,
                                          save_inputs=save_inputs)
                except RuntimeUnavailable as exc:
                    raise RuntimeUnavailable(f"{exc}; pass --no-verify to skip verification") from exc
                report["verify"] = check.to_json()
                echo(check.render())
                ok = check.ok
            if verify and keras_source is not None and ok:
                from bnfold.verify.keras_reference import verify_against_keras

                progress("verifying against the Keras model in TensorFlow")
                keras_check = verify_against_keras(keras_source[0], staged.path, shapes=shapes, inputs_npz=inputs_npz,
                                                   batches=batches, seed=seed, rtol=rtol, atol=atol,
                                                   unsafe=keras_source[1])
                report["verify_keras"] = keras_check.to_json()
                echo(f"against {keras_source[0].name} in TensorFlow:")
                echo(keras_check.render())
                ok = keras_check.ok
                training = [call.layer for call in _keras_calls(keras_source[0])[1]
                            if call.cls == "BatchNormalization" and call.kwargs.get("training") is True]
                if not ok and training:
                    echo(f"BatchNormalization {', '.join(repr(t) for t in training)} is called with training=True: "
                         "Keras normalizes it with batch statistics, the ONNX with the moving ones (BN006)")
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

"""`bnfold fold PATHS… --out-dir OUT [-j N]`: fold a model zoo, mirroring its tree under OUT, with one line per
model and one summary table.

Each model runs the single-model fold (`run_fold`) in a process of its own under -j (one at a time
otherwise), with what it prints captured: a model that folds and verifies gets its summary line, one that
fails gets its whole log, so a zoo's output stays readable. Discovery is lint's (hidden folders,
virtualenvs, build output and git-ignored files skipped). Exit code: 2 if a model could not be read, else
1 if one failed verification or --fail-on-skip, else 0.
"""

from __future__ import annotations

import contextlib
import io
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import click

from bnfold.errors import BnfoldError, InputError
from bnfold.keras import is_keras_path

WROTE, FAILED, ERROR, PLANNED = "wrote", "FAILED", "error", "dry run"


@dataclass
class Outcome:
    source: Path
    target: Path
    status: str   # WROTE | FAILED | ERROR | PLANNED
    summary: str  # the fold's summary line, or the error
    log: str      # everything the single-model fold printed


def targets(paths: tuple[Path, ...], out_dir: Path) -> list[tuple[Path, Path]]:
    """(model, where its folded model goes): a folder's tree mirrored under out_dir, a file named directly
    at its top; a Keras file becomes NAME.keras.onnx / NAME.h5.onnx (a model saved in both formats would
    collide as NAME.onnx)."""
    from bnfold.discovery import discover

    pairs = []
    for path in paths:
        for model in discover((path,)):
            relative = model.relative_to(path) if path.is_dir() else Path(model.name)
            target = out_dir / relative
            pairs.append((model, target.with_name(target.name + ".onnx") if is_keras_path(model) else target))
    seen: dict[Path, Path] = {}
    for model, target in pairs:
        if target in seen and seen[target] != model:
            raise InputError(f"{seen[target]} and {model} would both be written to {target}")
        seen[target] = model
    out = out_dir.resolve()
    # inside an input folder, a second run would fold the folded models again
    inside = [p for p in paths if p.is_dir() and (out == p.resolve() or p.resolve() in out.parents)]
    if inside:
        raise InputError(f"--out-dir {out_dir} is inside the input folder {inside[0]}: choose a folder outside "
                         "the inputs")
    return pairs


def fold_one(source: Path, target: Path, options: dict) -> Outcome:
    """One model, its output captured (runs in a worker process under -j)."""
    from bnfold.commands.fold import run_fold

    buffer = io.StringIO()
    status, summary = FAILED, ""
    try:
        with contextlib.redirect_stderr(buffer), contextlib.redirect_stdout(buffer):
            if not options["dry_run"]:
                target.parent.mkdir(parents=True, exist_ok=True)
            ok = run_fold(source, target, in_place=False, report_path=None, **options)
        status = (PLANNED if options["dry_run"] else WROTE) if ok else FAILED
    except BnfoldError as exc:
        status, summary = ERROR, str(exc)
    log = buffer.getvalue()
    if not summary:
        summary = next((line for line in log.splitlines() if line.startswith(("folded ", "would fold "))), "")
    return Outcome(source, target, status, summary, log)


def run_fold_many(paths: tuple[Path, ...], out_dir: Path, jobs: int, options: dict) -> int:
    pairs = targets(paths, out_dir)
    echo = click.echo  # one line per model and the table are the results: stdout, as fold's are
    total = len(pairs)
    if jobs > 1 and total > 1:
        with ProcessPoolExecutor(max_workers=min(jobs, os.cpu_count() or 1)) as pool:
            futures = [pool.submit(fold_one, s, t, options) for s, t in pairs]
            outcomes = [_report(future.result(), k, total, echo) for k, future in enumerate(futures, 1)]
    else:
        outcomes = [_report(fold_one(s, t, options), k, total, echo) for k, (s, t) in enumerate(pairs, 1)]
    echo("")
    echo(_table(outcomes))
    counts = {status: sum(o.status == status for o in outcomes) for status in (WROTE, PLANNED, FAILED, ERROR)}
    echo(", ".join(f"{n} {status}" for status, n in counts.items() if n) + f" ({len(outcomes)} models)")
    return 2 if counts[ERROR] else 1 if counts[FAILED] else 0


def _report(outcome: Outcome, index: int, total: int, echo) -> Outcome:
    """A progress line per model as it finishes (also when piped: a zoo takes minutes), with the whole log
    of one that failed; the table at the end has every summary."""
    line = f"[{index}/{total}] {outcome.source} -> {outcome.target}: {outcome.status}"
    echo(line if outcome.status != ERROR else f"{line}: {outcome.summary}")
    if outcome.status == FAILED:
        echo("\n".join(f"  | {text}" for text in outcome.log.rstrip().splitlines()))
    return outcome


def _table(outcomes: list[Outcome]) -> str:
    rows = [("model", "result", "what happened")]
    rows += [(str(o.source), o.status, o.summary) for o in outcomes]
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{a:<{width[0]}}  {b:<{width[1]}}  {c}".rstrip() for a, b, c in rows)

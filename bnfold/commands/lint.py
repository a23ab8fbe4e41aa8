"""`bnfold lint`: find the model files, lint each (in parallel with -j), filter, report, pick the exit code."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click

from bnfold.errors import BnfoldError, InputError
from bnfold.keras import is_keras_path
from bnfold.lint.finding import Finding, severity_rank

def lint_file(path: Path, codes: frozenset[str], options) -> list[Finding]:
    """Lint one model file; runs in a worker process under -j."""
    from bnfold.io import load_model
    from bnfold.lint import lint_model

    if is_keras_path(path):
        from bnfold.keras import load_keras

        return lint_model(load_keras(path), str(path), codes=codes, options=options)
    return lint_model(load_model(path, untype_maps=True), str(path), codes=codes, options=options)


def _lint_all(files: list[Path], codes: frozenset[str], options,
              jobs: int) -> tuple[list[Finding], list[Path], dict[str, str]]:
    """Findings, the files that were actually checked, and the error of each file that could not be."""
    findings: list[Finding] = []
    checked: list[Path] = []
    errors: dict[str, str] = {}
    if jobs > 1 and len(files) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(lint_file, f, codes, options) for f in files]
            outcomes = [_outcome(future.result) for future in futures]
    else:
        outcomes = [_outcome(lambda f=f: lint_file(f, codes, options)) for f in files]
    for path, (result, error) in zip(files, outcomes):
        if error is not None:
            errors[str(path)] = error
        else:
            checked.append(path)
            findings.extend(result)
    return findings, checked, errors


def _outcome(call):
    try:
        return call(), None
    except BnfoldError as exc:
        return None, str(exc)


def _check_side_files(files: list[Path], *, output: Path | None, baseline: Path | None,
                      write_baseline: Path | None) -> None:
    """The report (-o) and the baseline written never replace a model, its data, or the baseline read."""
    from bnfold.io import check_side_outputs

    protected = {target: "a model" for target in (output, write_baseline) if target is not None
                 and target.is_file() and (is_keras_path(target) or target.suffix.lower() == ".onnx")}
    protected.update({f.with_name(f"{f.name}.data"): "a model's external data" for f in files})
    protected.update({f: "a model this lint reads" for f in files})
    # --write-baseline may rewrite the baseline it read (that is how stale entries go); the report may not
    read = {baseline: "the baseline this lint reads (--baseline)"} if baseline is not None else {}
    check_side_outputs({"--output": output}, {**protected, **read})
    written = {output: "also given to --output"} if output is not None else {}
    check_side_outputs({"--write-baseline": write_baseline}, {**protected, **written})


def run_lint(paths: tuple[Path, ...], *, select: tuple[str, ...], ignore: tuple[str, ...],
             extend_select: tuple[str, ...], fmt: str, output: Path | None, fail_on: str | None, exit_zero: bool,
             statistics: bool, jobs: int, config_file: Path | None, isolated: bool, baseline: Path | None,
             write_baseline: Path | None, exclude: tuple[str, ...] = (), extend_exclude: tuple[str, ...] = ()) -> int:
    from bnfold import report
    from bnfold.baseline import load_baseline, write_baseline as save_baseline
    from bnfold.config import apply, load_config
    from bnfold.discovery import discover
    from bnfold.io import write_text_atomic
    from bnfold.lint import RULES

    if statistics and fmt in ("sarif", "github"):
        raise InputError(f"--statistics has no place in the {fmt} format (it applies to text, markdown and json)")
    start = paths[0] if paths[0].is_dir() else paths[0].parent
    config = load_config(start, config_file=config_file, isolated=isolated)
    codes = config.rule_codes(select=list(select) or None, ignore=ignore, extend_select=extend_select)
    files = discover(paths, root=config.root, exclude=tuple(exclude) or config.exclude,
                     extend_exclude=(*config.extend_exclude, *extend_exclude))
    _check_side_files(files, output=output, baseline=baseline, write_baseline=write_baseline)
    findings, checked, errors = _lint_all(files, codes, config.options(), jobs)
    findings = apply(findings, config, codes)
    hidden = 0
    stale: list = []
    if baseline is not None:
        findings, hidden, stale = load_baseline(baseline).match(findings, [str(f) for f in checked])
    if write_baseline is not None:
        save_baseline(write_baseline, findings)
        click.echo(f"wrote {len(findings)} findings to baseline {write_baseline}", err=True)
    # every format names the files that could not be read (and never says "all checks passed" then)
    text = report.render(findings, fmt, rules=RULES, files=[str(f) for f in checked], statistics=statistics,
                         errors=errors)
    if output is not None:
        write_text_atomic(output, text)
    else:
        click.echo(text, nl=not text.endswith("\n"))
    if hidden:
        click.echo(f"{hidden} findings hidden by baseline {baseline}", err=True)
    if stale:
        shown = ", ".join(f"{code} on {node} in {path}" for code, path, _graph, node in stale[:3])
        click.echo(f"{len(stale)} baseline entries match no finding any more ({shown}"
                   f"{', ...' if len(stale) > 3 else ''}): fixed; `--write-baseline {baseline}` drops them",
                   err=True)
    for error in errors.values():
        click.echo(f"error: {error}", err=True)
    if errors:
        return 2
    threshold = severity_rank(fail_on or config.fail_on or "warning")
    if not exit_zero and write_baseline is None and any(severity_rank(f.severity) >= threshold for f in findings):
        return 1
    return 0

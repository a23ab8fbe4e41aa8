"""The bnfold command line. Thin: parse, call the library, print, set the exit code.

Heavy modules (onnx_ir, onnxruntime) are imported inside the commands so `bnfold --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bnfold import __version__
from bnfold.errors import BnfoldError
from bnfold.report import FORMATS

EXIT_FAILED = 1
EXIT_ERROR = 2


def _parse_shapes(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for item in values:
        name, sep, dims = item.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise click.BadParameter(
                f"{item!r} is not NAME=DIMS, e.g. input=1x3x224x224", param_hint="--shape"
            ) from None
    return shapes


def _verify_options(func):
    options = [
        click.option("--shape", "shapes", multiple=True, metavar="NAME=DIMS",
                     help="Concrete shape for an input with dynamic dims, e.g. input=1x3x224x224 "
                          "(dynamic dims default to 1)."),
        click.option("--inputs", "inputs_npz", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Feed these inputs (.npz keyed by input name) instead of random ones."),
        click.option("--save-inputs", type=click.Path(dir_okay=False, path_type=Path),
                     help="Save the random batch whose outputs differ most as .npz, to rerun with --inputs."),
        click.option("--batches", default=3, show_default=True, type=click.IntRange(1),
                     help="Number of random input batches to compare."),
        click.option("--seed", default=0, show_default=True, type=int, help="Seed for random inputs."),
        click.option("--rtol", type=float,
                     help="Compare elementwise with this relative tolerance instead of against the original's "
                          "own rounding noise (the other defaults to 1e-4/1e-5 for fp32, dtype-aware)."),
        click.option("--atol", type=float,
                     help="Compare elementwise with this absolute tolerance (see --rtol)."),
        click.option("--quiet", "-q", is_flag=True,
                     help="No progress lines (shown on a terminal, and every 2 s of long work elsewhere)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _check_save_inputs(inputs_npz: Path | None, save_inputs: Path | None) -> None:
    if inputs_npz is not None and save_inputs is not None:
        raise click.UsageError("--save-inputs saves random inputs; with --inputs they are already in a file")


class _Group(click.Group):
    """Every error is one line, `error: ...`, on stderr: a BnfoldError (exit 2; the traceback only with
    --debug), and click's usage errors too (exit 2, pointing at --help instead of printing the usage)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else (prog_name or "bnfold")
            click.echo(f"error: {exc.format_message().rstrip('.')} (see `{where} --help`)", err=True)
            sys.exit(EXIT_ERROR)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BnfoldError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise _UserError(str(exc)) from None


class _UserError(click.ClickException):
    exit_code = EXIT_ERROR


@click.group(name="bnfold", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bnfold")
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Lint, fold and verify BatchNormalization in ONNX models."""
    ctx.obj = {"debug": debug}
    if debug:
        from bnfold.verify import runtime

        runtime.log_severity = runtime.LOG_SEVERITY["debug"]


@cli.command(short_help="Fold BatchNormalization into its neighbours; write the verified model.")
@click.argument("paths", metavar="IN [OUT]", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Fold every model of the IN files and folders into this folder, mirroring their tree.")
@click.option("-j", "--jobs", default=1, show_default=True, type=click.IntRange(1),
              help="With --out-dir: fold this many models at once.")
@click.option("--in-place", is_flag=True, help="Allow OUT to be IN (or omit OUT) and overwrite it.")
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a JSON report of every BatchNormalization and affine op.")
@click.option("--strict-inputs", is_flag=True,
              help="Refuse to fold parameters that are also graph inputs (overridable at run time).")
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime comparison.")
@click.option("--force", is_flag=True, help="Write OUT even if verification fails.")
@click.option("--opset", default=17, show_default=True, type=click.IntRange(9),
              help="Keras input: the ONNX opset tf2onnx converts to.")
@click.option("--unsafe-keras", is_flag=True, help="Keras input: allow loading Lambda layers (runs their code).")
@click.option("--max-range-growth", type=click.FloatRange(min=1.0), default=None, metavar="X",
              help="Refuse (reason range-growth) folds that widen a weight's per-tensor range more than X times, "
                   "so per-tensor int8 keeps its levels (10 keeps ~21 dB; see BN015).")
@click.option("--fail-on-skip", multiple=True, metavar="REASONS",
              help="Exit 1 and write nothing when a BatchNormalization is skipped for one of these reason codes "
                   "(e.g. degenerate-statistics,training-mode), so fold can gate CI.")
@_verify_options
def fold(paths: tuple[Path, ...], out_dir: Path | None, jobs: int, in_place: bool, dry_run: bool,
         report_path: Path | None, strict_inputs: bool, no_verify: bool, force: bool, opset: int, unsafe_keras: bool,
         max_range_growth: float | None, fail_on_skip: tuple[str, ...], shapes: tuple[str, ...],
         inputs_npz: Path | None, save_inputs: Path | None,
         batches: int, seed: int, rtol: float | None, atol: float | None, quiet: bool) -> None:
    """Fold inference-mode BatchNormalization in IN into its neighbours and write OUT.

    The result is verified against IN with onnxruntime; a model that fails verification is not written.
    With --out-dir, every IN is a model file or a folder of them, each folded into OUT-DIR.
    """
    from bnfold.fold.result import REASONS
    from bnfold.lint.select import split_selectors

    _check_save_inputs(inputs_npz, save_inputs)
    gates = frozenset(split_selectors(fail_on_skip))
    unknown = sorted(gates - set(REASONS))
    if unknown:
        raise click.BadParameter(f"unknown reason {', '.join(unknown)} (one of {', '.join(REASONS)})",
                                 param_hint="--fail-on-skip")
    options = dict(dry_run=dry_run, strict_inputs=strict_inputs, verify=not no_verify, force=force,
                   shapes=_parse_shapes(shapes), inputs_npz=inputs_npz, save_inputs=save_inputs, batches=batches,
                   seed=seed, rtol=rtol, atol=atol, opset=opset, unsafe_keras=unsafe_keras, fail_on_skip=gates, quiet=quiet,
                   max_range_growth=max_range_growth)
    if not paths:
        raise click.UsageError("Missing argument 'IN'")
    for path in paths if out_dir is not None else paths[:1]:  # without --out-dir the second path is OUT
        if not path.exists():
            raise click.BadParameter(f"{path} does not exist", param_hint="'IN'")
    if out_dir is not None:
        if in_place or report_path is not None or save_inputs is not None:
            raise click.UsageError("--out-dir folds many models: --in-place, --report and --save-inputs apply to one "
                                   "IN OUT")
        from bnfold.commands.fold_many import run_fold_many

        code = run_fold_many(paths, out_dir, jobs, options)
        if code:
            sys.exit(code)
        return
    if len(paths) > 2 or paths[0].is_dir():
        raise click.UsageError("a folder or several models need --out-dir OUT (IN [OUT] folds one file)")
    model_in, model_out = paths[0], (paths[1] if len(paths) == 2 else None)
    if model_out is None and not (in_place or dry_run):
        raise click.UsageError("missing OUT (or pass --in-place to overwrite IN)")
    from bnfold.commands.fold import run_fold

    if not run_fold(model_in, model_out or model_in, in_place=in_place, report_path=report_path, **options):
        sys.exit(EXIT_FAILED)


@cli.command(short_help="Check that two models compute the same outputs in onnxruntime.")
@click.argument("reference", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("candidate", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_verify_options
def verify(reference: Path, candidate: Path, shapes: tuple[str, ...], inputs_npz: Path | None,
           save_inputs: Path | None, batches: int, seed: int, rtol: float | None, atol: float | None,
           quiet: bool) -> None:
    """Run REFERENCE and CANDIDATE in onnxruntime on the same inputs and compare every output.

    Each output passes when its error, max |CANDIDATE - REFERENCE| / max |REFERENCE|, is within 4x the
    rounding noise REFERENCE already has (the same distance with its weights rounded once more) plus
    8 eps of its dtype.
    """
    from bnfold.keras import is_keras_path, refuse_keras

    refuse_keras(candidate, "verify")
    _check_save_inputs(inputs_npz, save_inputs)
    options = dict(shapes=_parse_shapes(shapes), inputs_npz=inputs_npz, batches=batches, seed=seed, rtol=rtol,
                   atol=atol)
    if is_keras_path(reference):  # the ONNX candidate against the Keras model it came from, in TensorFlow
        from bnfold.verify.keras_reference import verify_against_keras

        result = verify_against_keras(reference, candidate, **options)
    else:
        from bnfold.progress import Progress
        from bnfold.verify import verify_models

        result = verify_models(reference, candidate, progress=Progress(quiet=quiet), save_inputs=save_inputs,
                               **options)
    click.echo(result.render())
    if not result.ok:
        sys.exit(EXIT_FAILED)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--select", multiple=True, metavar="CODES",
              help="Only these rules (code prefixes, comma-separated or repeated; ALL for every rule).")
@click.option("--ignore", multiple=True, metavar="CODES", help="Skip these rules (code prefixes).")
@click.option("--extend-select", multiple=True, metavar="CODES", help="Add rules to the selection.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here.")
@click.option("--fail-on", type=click.Choice(["error", "warning", "info"]),
              help="Exit 1 when a finding has at least this severity (default: warning).")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even with findings.")
@click.option("--statistics", is_flag=True, help="Count findings per rule.")
@click.option("-j", "--jobs", default=1, show_default=True, type=click.IntRange(1), help="Lint files in parallel.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Read [tool.bnfold] from this pyproject.toml instead of the nearest one.")
@click.option("--isolated", is_flag=True, help="Ignore every configuration file.")
@click.option("--baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Hide the findings recorded in this baseline file.")
@click.option("--write-baseline", type=click.Path(dir_okay=False, path_type=Path),
              help="Record the current findings as the baseline (exit 0).")
@click.option("--exclude", multiple=True, metavar="GLOBS",
              help="Skip these files and folders in directories, instead of the default folders (build, dist, "
                   "venv, ...); hidden folders are always skipped.")
@click.option("--extend-exclude", multiple=True, metavar="GLOBS", help="Skip these as well as the defaults.")
def lint(paths: tuple[Path, ...], select: tuple[str, ...], ignore: tuple[str, ...], extend_select: tuple[str, ...],
         fmt: str, output: Path | None, fail_on: str | None, exit_zero: bool, statistics: bool, jobs: int,
         config_file: Path | None, isolated: bool, baseline: Path | None, write_baseline: Path | None,
         exclude: tuple[str, ...], extend_exclude: tuple[str, ...]) -> None:
    """Check models for BatchNormalization placement and state problems.

    PATHS are model files or directories, searched for *.onnx, *.keras, *.h5 and *.hdf5 (skipping hidden
    folders, virtualenvs, build output and what git ignores). Exit code: 0 clean, 1 findings at or above
    --fail-on, 2 usage or input error (also when no model is found).
    """
    from bnfold.commands.lint import run_lint
    from bnfold.lint.select import split_selectors as split

    code = run_lint(paths, select=tuple(split(select)), ignore=tuple(split(ignore)),
                    extend_select=tuple(split(extend_select)),
                    fmt=fmt, output=output, fail_on=fail_on, exit_zero=exit_zero, statistics=statistics,
                    jobs=jobs, config_file=config_file, isolated=isolated, baseline=baseline,
                    write_baseline=write_baseline, exclude=tuple(split(exclude)),
                    extend_exclude=tuple(split(extend_exclude)))
    if code:
        sys.exit(code)


@cli.command(short_help="List the lint rules, or print one rule's page.")
@click.argument("rule_id", metavar="[RULE]", required=False)
def rule(rule_id: str | None) -> None:
    """List the lint rules, or print the page of one, by code or name (`bnfold rule BN009`, `bnfold rule
    unfolded-batchnorm`)."""
    from bnfold.commands.rule import print_rule

    print_rule(rule_id)


def main() -> None:
    """Console-script entry point."""
    from bnfold.deferred import defer

    defer("sympy")
    defer("onnx_ir._symbolic_shapes")  # uses sympy at its top; onnx-ir needs it only to parse "N+1" dims
    cli(prog_name="bnfold")

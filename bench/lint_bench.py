"""Time `bnfold lint` and `bnfold --help` against the cost of just reading the model, in one run.

    python bench/lint_bench.py [--size-mb 100] [--repeat 5] [--keras] [--huge-mb 2200]

Budgets: `bnfold --help` and `bnfold rule BN001` < 0.3 s; lint of a 100 MB ONNX < 1 s. Each number is the median of
--repeat runs of a fresh subprocess (interpreter start included), next to `python -c "import onnx;
onnx.load(...)"` — the least any tool that reads the file pays — so the ratio survives a noisy machine.
bnfold's modules are byte-compiled first, as `pip install` does (fold_bench.compile_bnfold).

--keras (needs `pip install '.[keras]'`) also times `bnfold lint` of keras.applications.ResNet50
(weights=None) saved as .keras (Keras 3) and .h5 (tf_keras), next to Keras' own `keras.saving.load_model`.

--huge-mb N also times `bnfold lint` of the same ResNet-like model at N MiB with external data (budget: a
> 2 GB model lints in < 2 s); it is built in OUT-DIR/models and removed afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fold_bench import MiB, build_resnet, compile_bnfold

HERE = Path(__file__).resolve().parent


def timed(argv: list[str], repeat: int) -> tuple[float, str]:
    """Median wall seconds of `argv` over `repeat` runs, and the last run's stdout."""
    times, out = [], ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if done.returncode not in (0, 1):
            raise SystemExit(f"{argv} failed ({done.returncode}): {done.stderr.strip()}")
        out = done.stdout
    return statistics.median(times), out


def in_process(model: Path, repeat: int) -> float:
    """Median seconds of load_model + lint_model inside this process (imports already paid)."""
    from bnfold.io import load_model
    from bnfold.lint import lint_model

    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        lint_model(load_model(model), str(model))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


KERAS_MODEL = """
import os, sys
if sys.argv[2] == "legacy":
    import tf_keras as keras
else:
    import keras
keras.utils.set_random_seed(0)
keras.applications.ResNet50(weights=None).save(sys.argv[1])
"""


def keras_rows(models: Path, py: str, bnfold: str) -> list[tuple[str, list[str]]]:
    import os

    rows = []
    for suffix, flavour in ((".keras", "keras3"), (".h5", "legacy")):
        path = models / f"resnet50{suffix}"
        if not path.exists():
            env = dict(os.environ, TF_USE_LEGACY_KERAS="1" if flavour == "legacy" else "0")
            subprocess.run([py, "-c", KERAS_MODEL, str(path), flavour], check=True, env=env, capture_output=True)
        rows.append((f"bnfold lint resnet50{suffix} ({path.stat().st_size / MiB:.0f} MiB)",
                     [bnfold, "lint", "--isolated", "--format", "json", str(path)]))
    keras_file = models / "resnet50.keras"
    rows.append(("keras.saving.load_model(resnet50.keras)",
                 [py, "-c", f"import keras; keras.saving.load_model({str(keras_file)!r})"]))
    rows.append(("lint_file(resnet50.keras), exits 1 if tensorflow stayed unimported",
                 [py, "-c", "import sys; from bnfold.commands.lint import lint_file; from pathlib import Path; "
                            f"lint_file(Path({str(keras_file)!r}), None, None); "
                            "sys.exit(0 if 'tensorflow' in sys.modules else 1)"]))
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out-dir", type=Path, default=HERE / "out")
    parser.add_argument("--keras", action="store_true", help="also lint ResNet50 as .keras and .h5")
    parser.add_argument("--huge-mb", type=float, default=None, help="also lint an external-data model this large")
    args = parser.parse_args(argv)
    models = args.out_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    model = models / f"resnet_{args.size_mb:g}mb.onnx"
    if not model.exists():
        build_resnet(model, args.size_mb, external=False)
    py = sys.executable
    compile_bnfold()
    bnfold = str(Path(py).with_name("bnfold"))  # the console script of the Python running this bench
    rows = [
        ("python -c pass (interpreter start)", [py, "-c", "pass"]),
        ("bnfold --help", [bnfold, "--help"]),
        ("bnfold rule BN001", [bnfold, "rule", "BN001"]),
        ("onnx.load (read floor)", [py, "-c", f"import onnx; onnx.load({str(model)!r})"]),
        ("bnfold lint --format json", [bnfold, "lint", "--isolated", "--format", "json", str(model)]),
        ("import bnfold.lint (onnx-ir with sympy, numpy, onnx; the CLI defers sympy)", [py, "-c", "import bnfold.lint"]),
    ]
    if args.keras:
        rows += keras_rows(models, py, bnfold)
    huge = models / f"resnet_{args.huge_mb:g}mb_external.onnx" if args.huge_mb else None
    if huge is not None:
        build_resnet(huge, args.huge_mb, external=True)
        size_gib = sum(f.stat().st_size for f in (huge, Path(f"{huge}.data"))) / (1 << 30)
        rows.append((f"bnfold lint, {size_gib:.1f} GiB external-data model",
                     [bnfold, "lint", "--isolated", "--format", "json", str(huge)]))
    results = {}
    for label, command in rows:
        results[label], out = timed(command, args.repeat)
        if label == "bnfold lint --format json":
            findings = out.count('"code":')
    results["load + lint, in-process, imports excluded"] = in_process(model, args.repeat)
    if huge is not None:
        for f in (huge, Path(f"{huge}.data")):
            f.unlink(missing_ok=True)
    floor = results["onnx.load (read floor)"]
    size = model.stat().st_size / MiB
    huge_arg = f" --huge-mb {args.huge_mb:g}" if huge is not None else ""
    lines = [f"`python bench/lint_bench.py --size-mb {args.size_mb:g} --repeat {args.repeat}{huge_arg}` on "
             f"`{model.name}` ({size:.1f} MiB); median of {args.repeat} fresh processes each.", "",
             "| command | seconds | × read floor |", "|---|---:|---:|"]
    lines += [f"| {label} | {secs:.2f} | {secs / floor:.2f} |" for label, secs in results.items()]
    quick = max(results["bnfold --help"], results["bnfold rule BN001"])
    lines += ["", f"lint found {findings} findings; budgets: --help and rule < 0.3 s → "
              f"{'PASS' if quick < 0.3 else 'FAIL'}; lint < 1 s → "
              f"{'PASS' if results['bnfold lint --format json'] < 1 else 'FAIL'}"
              + "".join(f"; {label} < 2 s → {'PASS' if secs < 2 else 'FAIL'}" for label, secs in results.items()
                        if "external-data model" in label)]
    text = "\n".join(lines) + "\n"
    (args.out_dir / "lint_results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

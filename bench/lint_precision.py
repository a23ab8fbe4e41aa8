"""Lint's precision on the real models this project builds or ships: findings per rule, and the share of
them pinned as correct in the tests, in one run.

    python bench/lint_precision.py [--keras] [--torch] [--corpus DIR]

Every model of the test tables is linted with default options: the ONNX samples and the PyTorch / tf2onnx
exports in sample_models/ (tests/test_sample_models.py), the Keras files (tests/test_keras_lint.py), the
third-party corpus (tests/test_corpus.py, skipped when the folder is absent), with --keras the tf2onnx
export of every Keras sample (tests/test_tf2onnx_lint.py; needs `pip install '.[keras]'`), and with --torch
the deep torchvision/timm exports (tests/test_architectures.py; needs torch, torchvision, timm). A finding
counts as pinned when the test table of its model lists it (code and node, or code and Keras layer): each
table entry was read against the graph as a reviewer would, so the share is the precision the tests hold
lint to, and a finding that is not pinned is one nobody has vetted.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bnfold.io import load_model  # noqa: E402
from bnfold.keras import load_keras  # noqa: E402
from bnfold.lint import RULES, lint_model  # noqa: E402


def _onnx(path: Path):
    return lint_model(load_model(path), str(path))


def _keras(path: Path):
    return lint_model(load_keras(path), str(path))


def sample_cases():
    """(source, findings as (code, key), pinned as (code, key)) per shipped model."""
    from test_keras_lint import EXPECTED as KERAS
    from test_sample_models import EXPORT_LINT, EXPECTED_LINT, SAMPLES_DIR

    for table, source in ((EXPECTED_LINT, "sample_models (ONNX)"), (EXPORT_LINT, "sample_models exports")):
        for name, pinned in table.items():
            yield source, [(f.code, f.node) for f in _onnx(SAMPLES_DIR / name)], pinned
    for name, pinned in KERAS.items():
        for suffix in (".keras", ".h5"):
            found = _keras(SAMPLES_DIR / "keras" / f"{name}{suffix}")
            yield "Keras files", [(f.code, f.node, f.keras_layer) for f in found], sorted(pinned)


def corpus_cases(corpus: Path):
    from test_corpus import CORPUS_LINT

    for name, pinned in CORPUS_LINT.items():
        yield "corpus", [(f.code, f.node) for f in _onnx(corpus / name)], pinned


def tf2onnx_cases(work: Path):
    from test_tf2onnx_lint import PINNED, SAMPLES, pinned

    from bnfold.keras.convert import worker

    for name in PINNED:
        for suffix in (".keras", ".h5"):
            out = work / f"{name}{suffix}.onnx"
            worker("convert", str(SAMPLES / f"{name}{suffix}"), str(out), "17")
            yield "tf2onnx exports", [(f.code, f.keras_layer) for f in _onnx(out)], pinned(name, suffix)


def torch_cases(work: Path):
    from test_architectures import LINT, SCRIPT

    export = runpy.run_path(str(SCRIPT), run_name="export_architectures")["export"]
    for name, pinned in LINT.items():
        yield "torchvision/timm exports", [(f.code, f.node) for f in _onnx(export(name, work))], pinned


def tally(cases) -> tuple[Counter, Counter, Counter]:
    """Findings and pinned findings per rule, and the number of models per source."""
    found, held, models = Counter(), Counter(), Counter()
    for source, findings, pinned in cases:
        models[source] += 1
        left = Counter(map(tuple, pinned))
        for finding in findings:
            found[finding[0]] += 1
            if left[tuple(finding)] > 0:
                left[tuple(finding)] -= 1
                held[finding[0]] += 1
    return found, held, models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keras", action="store_true", help="also the tf2onnx export of every Keras sample")
    parser.add_argument("--torch", action="store_true", help="also the deep torchvision/timm exports")
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = list(sample_cases())
        if args.corpus.is_dir():
            cases += list(corpus_cases(args.corpus))
        if args.keras:
            cases += list(tf2onnx_cases(Path(tmp)))
        if args.torch:
            cases += list(torch_cases(Path(tmp)))
        found, held, models = tally(cases)
    print("models: " + ", ".join(f"{n} {source}" for source, n in models.items()))
    print("\n| rule | name | default | findings | pinned as correct in tests | share |")
    print("|---|---|---|---:|---:|---:|")
    for code, rule in RULES.items():
        if found[code]:
            print(f"| {code} | {rule.name} | {rule.severity} | {found[code]} | {held[code]} | "
                  f"{held[code] / found[code]:.0%} |")
    total, pinned = sum(found.values()), sum(held.values())
    print(f"| all | | | {total} | {pinned} | {pinned / total:.0%} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""What folding leaves of re-parameterizable networks — bnfold and its peers — and what it buys in latency.

    pip install -e '.[bench]' torch==2.14.1 torchvision==0.29.1 timm
    python bench/reparam_bench.py [--models DIR] [--out-dir bench/out] [--runs 30]

The models are timm's repvgg_a0, mobileone_s0 and mixnet_s (random weights, BN kept, exported by
sample_models/architectures/export_architectures.py into OUT/architectures unless DIR has them): RepVGG and
MobileOne train with parallel branches their authors merge by hand (RepVGG's get_equivalent_kernel_bias,
timm's reparameterize), MixNet puts one BN after a Concat of per-group Convs. For each tool: the BN and the
nodes left, the output's error against the original (max abs), and onnxruntime's latency (CPU provider,
default optimizations, 2 threads, batch 1, median of --runs after 3 warm-up runs), next to the original's —
all in one run, since this machine is noisy.
"""

from __future__ import annotations

import argparse
import runpy
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(HERE))

import fold_bench  # noqa: E402 - the peer tools, run the same way as in the fold bench

MODELS = ("repvgg_a0", "mobileone_s0", "mixnet_s")
TOOLS = ("bnfold", "onnxoptimizer", "onnxslim", "ort-basic")


def latency(path: Path, feeds: dict, runs: int) -> tuple[float, list]:
    """Median seconds of one run, and the outputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(3):
        out = session.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bench(src: Path, work: Path, runs: int) -> list[str]:
    import onnxruntime as ort

    bn, nodes = fold_bench.graph_stats(src)[:2]
    session = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.normal(0, 1, [d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
             for i in session.get_inputs()}
    base, want = latency(src, feeds, runs)
    rows = [f"| {src.stem} | original | {bn} | {nodes} | — | {base * 1e3:.2f} | 1.00 |"]
    for tool in TOOLS:
        dst = work / f"{src.stem}.{tool}.onnx"
        try:
            if tool == "bnfold":
                from bnfold.fold import fold_model
                from bnfold.io import StagedModel, load_model

                model = load_model(src)
                fold_model(model)
                StagedModel(model, dst, external_data=False).commit()
            else:
                fold_bench.WORKERS[tool]()(src, dst, False)
        except Exception as exc:  # a peer that crashes is a row, not the end of the bench
            rows.append(f"| {src.stem} | {tool} | failed: {fold_bench._first_line(exc)} |||||")
            continue
        left, after = fold_bench.graph_stats(dst)[:2]
        seconds, got = latency(dst, feeds, runs)
        error = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                    for a, b in zip(want, got))
        rows.append(f"| {src.stem} | {tool} | {left} | {after} | {error:.1e} | {seconds * 1e3:.2f} | "
                    f"{seconds / base:.2f} |")
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="folder holding repvgg_a0.onnx, mobileone_s0.onnx, mixnet_s.onnx")
    parser.add_argument("--out-dir", type=Path, default=HERE / "out")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    work = args.out_dir / "reparam"
    work.mkdir(parents=True, exist_ok=True)
    script = runpy.run_path(str(PROJECT / "sample_models" / "architectures" / "export_architectures.py"),
                            run_name="export_architectures")
    models = script["exported"](MODELS, args.models or args.out_dir / "architectures")
    lines = ["| model | tool | BN left | nodes | max abs error | latency ms | × original |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for src in models:
        print(f"{src.name} ...", file=sys.stderr)
        lines += bench(src, work, args.runs)
    text = "\n".join(lines) + "\n"
    (args.out_dir / "reparam_results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

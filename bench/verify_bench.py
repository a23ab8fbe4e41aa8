#!/usr/bin/env python
"""How bnfold's verification judges folds of deep networks — bnfold's own and the peers' — in one run.

    pip install -e '.[bench]' torch==2.14.1 torchvision==0.29.1 timm
    python bench/verify_bench.py [--models DIR] [--out-dir bench/out] [--tools bnfold,onnxoptimizer,...]

DIR holds the models to judge; by default the deep architectures of
sample_models/architectures/export_architectures.py are exported into OUT/architectures (random weights,
nothing downloaded). For each model and tool the table gives the BN left, the error against the original,
bnfold's verdict under the noise criterion and under the old fixed tolerance (rtol 1e-4, atol 1e-5), and
the time of `bnfold fold IN OUT` with its verification next to `--no-verify`. See bench/README.md.
"""

from __future__ import annotations

import argparse
import runpy
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(HERE))

import fold_bench  # noqa: E402 - the peer tools, run the same way as in the fold bench

PEERS = ("onnxoptimizer", "onnxslim", "ort-basic")


def bnfold_cli(src: Path, dst: Path, *extra: str) -> tuple[float, int, str]:
    argv = [str(Path(sys.executable).parent / "bnfold"), "fold", str(src), str(dst), *extra]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    return time.perf_counter() - start, proc.returncode, proc.stderr


def judge(src: Path, out: Path) -> dict:
    from bnfold.verify import verify_models

    new = verify_models(src, out).outputs[0]
    old = verify_models(src, out, rtol=1e-4, atol=1e-5).outputs[0]
    return {"max_abs": new.max_abs, "error": new.error, "noise": new.noise, "limit": new.limit,
            "new": "pass" if new.ok else "FAIL", "old": "pass" if old.ok else "FAIL"}


def bench(src: Path, tools: list[str], work: Path) -> list[str]:
    bn_total = fold_bench.graph_stats(src)[0]
    rows = []
    for tool in tools:
        dst = work / f"{src.stem}.{tool}.onnx"
        timing = ""
        if tool == "bnfold":
            verified, code, stderr = bnfold_cli(src, dst)
            if code != 0:
                rows.append(f"| {src.stem} | {tool} | exit {code}: {stderr.strip().splitlines()[-1]} |||||||")
                continue
            unverified, _, _ = bnfold_cli(src, work / "unverified.onnx", "--no-verify")
            timing = f"{verified:.1f} s ({verified / unverified:.1f}x --no-verify {unverified:.1f} s)"
        else:
            try:
                fold_bench.WORKERS[tool]()(src, dst, False)
            except Exception as exc:  # a peer that crashes is a row, not the end of the bench
                rows.append(f"| {src.stem} | {tool} | failed: {fold_bench._first_line(exc)} |||||||")
                continue
        j = judge(src, dst)
        left = fold_bench.graph_stats(dst)[0]
        rows.append(f"| {src.stem} | {tool} | {left}/{bn_total} | {j['max_abs']:.1e} | {j['error']:.1e} | "
                    f"{j['noise']:.1e} | {j['error'] / j['noise']:.2f} | {j['new']} | {j['old']} | {timing} |")
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="folder of .onnx models (default: export the architectures)")
    parser.add_argument("--out-dir", type=Path, default=HERE / "out")
    parser.add_argument("--tools", default=",".join(("bnfold", *PEERS)))
    args = parser.parse_args(argv)
    work = args.out_dir / "verify"
    work.mkdir(parents=True, exist_ok=True)
    if args.models is None:
        script = runpy.run_path(str(PROJECT / "sample_models" / "architectures" / "export_architectures.py"),
                                run_name="export_architectures")
        models = script["exported"](script["ARCHITECTURES"], args.out_dir / "architectures")
    else:
        models = sorted(args.models.glob("*.onnx"))
    lines = ["| model | tool | BN left | max abs error | error (of scale) | noise | error/noise | "
             "verdict | verdict at rtol 1e-4, atol 1e-5 | bnfold fold time |",
             "|---|---|---:|---:|---:|---:|---:|---|---|---|"]
    for src in models:
        print(f"{src.name} ...", file=sys.stderr)
        lines += bench(src, args.tools.split(","), work)
    text = "\n".join(lines) + "\n"
    (args.out_dir / "verify_results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

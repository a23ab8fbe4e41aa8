#!/usr/bin/env python
"""Benchmark `bnfold fold` against the onnx I/O floor and peer tools, all numbers from one run.

    python bench/fold_bench.py [--size-mb 100] [--huge] [--out-dir bench/out] [--corpus ../shared/corpus]

Every tool runs in its own subprocess (this script re-invoked as `fold_bench.py _worker TOOL ...`), so the
peak RSS reported for it is that process's own (from os.wait4). See bench/README.md for the columns.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
MiB = 1 << 20
WRONG_REL = 1e-3  # a tool's output is "wrong" when max |out - ref| > WRONG_REL * max |ref|
SEED = 0


# ---------------------------------------------------------------------------------------------------------
def compile_bnfold() -> None:
    """Byte-compile bnfold as `pip install` does. An editable checkout run under PYTHONDONTWRITEBYTECODE
    (as on this project's CI machine) would otherwise compile it from source in every process (~0.1 s)."""
    import compileall

    import bnfold

    compileall.compile_dir(Path(bnfold.__file__).parent, quiet=1)


# The tools. Each returns the timed operation after doing its imports (imports are not part of "op s").
# run(src, dst, external) reads src, writes dst; `external` says the input keeps its weights in external data.
# ---------------------------------------------------------------------------------------------------------

def _save(model, dst: Path, external: bool) -> None:
    import onnx

    if external:
        onnx.save(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=dst.name + ".data")
    else:
        onnx.save(model, str(dst))


def tool_io_floor():
    import onnx

    def run(src, dst, external):
        _save(onnx.load(str(src)), dst, external)
    return run


def tool_bnfold_lib():
    from bnfold import io
    from bnfold.fold import fold_model

    def run(src, dst, external):  # the same calls as bnfold/commands/fold.py with --no-verify
        model = io.load_model(src)
        keep_external = io.has_external_data(model)
        spill = io.TensorSpill(dst.parent) if keep_external else contextlib.nullcontext()
        with spill:
            result = fold_model(model, store=getattr(spill, "store", None))
            io.StagedModel(model, dst, external_data=keep_external).commit()
        return {"summary": result.summary()}
    return run


def tool_onnxoptimizer():
    import onnx
    import onnxoptimizer

    def run(src, dst, external):
        _save(onnxoptimizer.optimize(onnx.load(str(src)), ["fuse_bn_into_conv"]), dst, external)
    return run


def tool_onnxslim():
    import onnx
    import onnxslim

    def run(src, dst, external):
        _save(onnxslim.slim(onnx.load(str(src))), dst, external)
    return run


def tool_onnxsim():
    import onnx
    import onnxsim

    def run(src, dst, external):
        model, check = onnxsim.simplify(onnx.load(str(src)))
        _save(model, dst, external)
        return {"check": bool(check)}
    return run


def tool_ort_basic():
    import onnxruntime as ort

    def run(src, dst, external):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(dst)
        if external:
            so.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                        dst.name + ".data")
            so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    return run


WORKERS = {
    "io-floor": tool_io_floor,
    "bnfold-lib": tool_bnfold_lib,
    "onnxoptimizer": tool_onnxoptimizer,
    "onnxslim": tool_onnxslim,
    "onnxsim": tool_onnxsim,
    "ort-basic": tool_ort_basic,
}
# "bnfold-cli" is not a worker: the console script itself is the subprocess.
TOOLS = ["io-floor", "bnfold-lib", "bnfold-cli", "onnxoptimizer", "onnxslim", "onnxsim", "ort-basic"]
PEER_MODULES = {"onnxoptimizer": "onnxoptimizer", "onnxslim": "onnxslim", "onnxsim": "onnxsim"}
DESCRIPTIONS = {
    "io-floor": "onnx.load + onnx.save",
    "bnfold-lib": "io.load_model, fold_model, StagedModel.commit",
    "bnfold-cli": "bnfold fold IN OUT --no-verify",
    "onnxoptimizer": 'optimize(m, ["fuse_bn_into_conv"])',
    "onnxslim": "slim(m)",
    "onnxsim": "simplify(m)",
    "ort-basic": "ORT_ENABLE_BASIC + optimized_model_filepath",
}


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker_main(tool: str, src: str, dst: str, result: str, external: bool) -> None:
    t0 = time.perf_counter()
    run = WORKERS[tool]()
    import_s = time.perf_counter() - t0
    rss_after_imports = _rss_mib()
    t0 = time.perf_counter()
    extra = run(Path(src), Path(dst), external) or {}
    op_s = time.perf_counter() - t0
    Path(result).write_text(json.dumps({"op_s": op_s, "import_s": import_s, "rss_after_imports_mib":
                                        rss_after_imports, "vmhwm_mib": _hwm_mib(os.getpid()), **extra}))


# ---------------------------------------------------------------------------------------------------------
# Running one tool: a subprocess under GNU time, its wall time and peak RSS, a timeout / memory watchdog.
# ---------------------------------------------------------------------------------------------------------

@dataclass
class Run:
    tool: str
    ok: bool = False
    error: str = ""
    op_s: float | None = None       # timed inside the worker (imports excluded); CLI: = process_s
    process_s: float | None = None  # whole subprocess, interpreter start included
    import_s: float | None = None
    peak_mib: float | None = None
    anon_peak_mib: float | None = None  # polled every 5 ms: approximate
    baseline_mib: float | None = None  # RSS after imports, before the operation
    extra: dict = field(default_factory=dict)


def _gnu_time() -> str | None:
    """/usr/bin/time if it is GNU time (it reports its child's peak RSS with -f %M)."""
    path = "/usr/bin/time"
    try:
        ok = os.access(path, os.X_OK) and subprocess.run([path, "-f", "%M", "-o", os.devnull, "true"],
                                                         capture_output=True).returncode == 0
    except OSError:
        ok = False
    return path if ok else None


GNU_TIME = _gnu_time()


def _hwm_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(ln.split()[1]) / 1024 for ln in fh if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def _tree_memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, RssAnon) in MiB, summed over pid and its descendants (GNU time + the tool)."""
    rss = anon = 0.0
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) / 1024
                elif line.startswith("RssAnon:"):
                    anon += int(line.split()[1]) / 1024
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            children = [int(c) for c in fh.read().split()]
    except (OSError, ValueError):
        return rss, anon
    for child in children:
        child_rss, child_anon = _tree_memory_mib(child)
        rss, anon = rss + child_rss, anon + child_anon
    return rss, anon


@dataclass
class Spawned:
    code: int | None  # None: killed (timeout or memory watchdog)
    wall: float
    peak_mib: float | None  # the tool process's peak RSS (GNU time %M, else polled)
    anon_peak_mib: float | None  # largest RssAnon seen while polling: memory not backed by a mapped file
    last_stderr: str
    killed: str = ""


def _spawn(argv: list[str], timeout: float, log_stem: Path, max_mem_gib: float | None = None) -> Spawned:
    """Run argv as its own process group, poll its memory, kill it on timeout or RSS over max_mem_gib.

    Peak RSS is not os.wait4's ru_maxrss of our own child: Linux carries the parent's RSS high-water mark
    across fork/vfork + exec into it, and this process holds the model and a reference session. So the
    tool runs under GNU time (a tiny parent) and its %M is used; without GNU time, VmRSS is polled.
    """
    rss_file = Path(f"{log_stem}.rss")
    rss_file.unlink(missing_ok=True)
    if GNU_TIME:
        argv = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *argv]
    polled_rss = anon_peak = 0.0
    killed = ""
    with open(f"{log_stem}.out", "w") as out, open(f"{log_stem}.err", "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, start_new_session=True)
        code = None
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(status)
                break
            rss, anon = _tree_memory_mib(proc.pid)
            polled_rss, anon_peak = max(polled_rss, rss), max(anon_peak, anon)
            if time.perf_counter() - t0 > timeout:
                killed = f"timeout after {timeout:.0f} s"
            elif max_mem_gib and rss > max_mem_gib * 1024:
                killed = f"killed: RSS {rss:.0f} MiB over --max-mem-gb {max_mem_gib:g}"
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)  # the process group we started, by its id
                os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
    proc.returncode = code if code is not None else -9
    peak = polled_rss or None
    if GNU_TIME and rss_file.is_file():
        numbers = [ln for ln in rss_file.read_text().split() if ln.isdigit()]
        peak = int(numbers[-1]) / 1024 if numbers else peak
    lines = [ln.strip() for ln in Path(f"{log_stem}.err").read_text(errors="replace").splitlines() if ln.strip()]
    return Spawned(code, wall, peak, anon_peak or None, lines[-1] if lines else "", killed)


def run_tool(tool: str, src: Path, dst: Path, external: bool, timeout: float, logdir: Path,
             max_mem_gib: float | None = None) -> Run:
    for stale in (dst, dst.with_name(dst.name + ".data")):
        stale.unlink(missing_ok=True)
    stem = logdir / f"{src.stem}.{tool}"
    result_json = Path(f"{stem}.json")
    result_json.unlink(missing_ok=True)
    if tool == "bnfold-cli":
        argv = [str(Path(sys.executable).parent / "bnfold"), "fold", str(src), str(dst), "--no-verify"]
    else:
        argv = [sys.executable, str(Path(__file__).resolve()), "_worker", tool, str(src), str(dst),
                str(result_json)] + (["--external"] if external else [])
    done = _spawn(argv, timeout, stem, max_mem_gib)
    run = Run(tool, process_s=done.wall, peak_mib=done.peak_mib, anon_peak_mib=done.anon_peak_mib)
    if done.code is None:
        run.error = done.killed
    elif done.code != 0:
        run.error = f"exit {done.code}: {done.last_stderr}" if done.last_stderr else f"exit {done.code}"
    elif not dst.is_file():
        run.error = "no output written"
    else:
        run.ok = True
        if result_json.is_file():
            data = json.loads(result_json.read_text())
            run.op_s, run.import_s = data.pop("op_s"), data.pop("import_s")
            run.baseline_mib = data.pop("rss_after_imports_mib")
            run.extra = data
        else:
            run.op_s = done.wall
    return run


def available_tools() -> dict[str, str]:
    """tool -> reason it is skipped (peers that do not import)."""
    skipped = {}
    for tool, module in PEER_MODULES.items():
        proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            skipped[tool] = f"`import {module}` fails: {lines[-1] if lines else proc.returncode}"
    if not (Path(sys.executable).parent / "bnfold").is_file():
        skipped["bnfold-cli"] = f"no bnfold console script beside {sys.executable}"
    return skipped


# ---------------------------------------------------------------------------------------------------------
# Checking an output: BN left, nodes, and max error against the original run with ORT_DISABLE_ALL.
# ---------------------------------------------------------------------------------------------------------

def graph_stats(path: Path) -> tuple[int, int, bool]:
    """(BatchNormalization nodes, all nodes, weights in external data), subgraphs and functions included."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    bn = nodes = 0
    external = False

    def walk(graph):
        nonlocal bn, nodes, external
        external |= any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer)
        for node in graph.node:
            nodes += 1
            bn += node.op_type == "BatchNormalization" and node.domain in ("", "ai.onnx")
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    walk(sub)

    walk(model.graph)
    for function in model.functions:
        for node in function.node:
            nodes += 1
            bn += node.op_type == "BatchNormalization" and node.domain in ("", "ai.onnx")
    return bn, nodes, external


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


_NP_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
             "tensor(bool)": "bool"}


def make_feeds(session) -> dict:
    import numpy as np

    rng = np.random.default_rng(SEED)
    feeds = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        dtype = _NP_TYPES.get(inp.type)
        if dtype is None:
            raise RuntimeError(f"input {inp.name} has unsupported type {inp.type}")
        if dtype.startswith("float"):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == "bool":
            feeds[inp.name] = rng.random(shape) < 0.5
        else:
            feeds[inp.name] = rng.integers(0, 4, shape).astype(dtype)
    return feeds


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


@dataclass
class Reference:
    feeds: dict | None = None
    outputs: list | None = None
    names: list | None = None
    error: str = ""


def reference(path: Path) -> Reference:
    try:
        session = _session(path)
        feeds = make_feeds(session)
        names = [o.name for o in session.get_outputs()]
        return Reference(feeds, session.run(None, feeds), names)
    except Exception as exc:  # noqa: BLE001 - the reason goes into the table
        return Reference(error=_first_line(exc))


@dataclass
class Check:
    bn: int | None = None
    nodes: int | None = None
    max_abs: float | None = None
    rel: float | None = None
    error: str = ""  # the output does not load/run, or differs in shape

    @property
    def wrong(self) -> bool:
        return self.rel is not None and not self.rel <= WRONG_REL


def check_output(path: Path, ref: Reference) -> Check:
    import numpy as np

    check = Check()
    try:
        check.bn, check.nodes, _ = graph_stats(path)
    except Exception as exc:  # noqa: BLE001
        check.error = f"unreadable: {_first_line(exc)}"
        return check
    if ref.outputs is None:
        return check
    try:
        session = _session(path)
        wanted = {i.name for i in session.get_inputs()}
        missing = wanted - set(ref.feeds)
        if missing:
            raise RuntimeError(f"output model wants inputs the original does not have: {sorted(missing)}")
        outs = session.run(None, {k: v for k, v in ref.feeds.items() if k in wanted})
        by_name = dict(zip([o.name for o in session.get_outputs()], outs))
        outs = [by_name[n] for n in ref.names] if set(ref.names) <= set(by_name) else outs
    except Exception as exc:  # noqa: BLE001
        check.error = f"does not run: {_first_line(exc)}"
        return check
    if len(outs) != len(ref.outputs):
        check.error = f"{len(outs)} outputs, the original has {len(ref.outputs)}"
        return check
    worst_abs = worst_rel = 0.0
    for got, want in zip(outs, ref.outputs):
        got, want = np.asarray(got), np.asarray(want)
        if got.shape != want.shape:
            check.error = f"output shape {list(got.shape)} != original {list(want.shape)}"
            return check
        if want.dtype.kind not in "fc":
            diff = float(np.max(got != want)) if want.size else 0.0
            worst_abs, worst_rel = max(worst_abs, diff), max(worst_rel, diff)
            continue
        g, w = got.astype(np.float64), want.astype(np.float64)
        nan_mismatch = bool(np.any(np.isnan(g) != np.isnan(w)))
        diff = np.abs(np.nan_to_num(g - w, nan=0.0, posinf=np.inf, neginf=np.inf))
        err = math.inf if nan_mismatch else (float(diff.max()) if diff.size else 0.0)
        scale = float(np.nanmax(np.abs(w))) if w.size else 0.0
        worst_abs = max(worst_abs, err)
        worst_rel = max(worst_rel, err / scale if scale > 0 else err)
    check.max_abs, check.rel = worst_abs, worst_rel
    return check


# ---------------------------------------------------------------------------------------------------------
# The synthetic ResNet-like model.
# ---------------------------------------------------------------------------------------------------------

BLOCKS = 24  # residual blocks of two 3x3 Conv+BN; with the stem, projection and head: 51 BN


def build_resnet(path: Path, size_mib: float, *, external: bool) -> dict:
    """A deterministic ResNet-like fp32 model of about size_mib MiB of weights; input 1x3x64x64."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(SEED)
    # Weights are ~ (2 * BLOCKS * 9 + 1) * C^2 floats: choose the width C (a multiple of 8).
    width = max(8, int(round(math.sqrt(size_mib * MiB / 4 / (2 * BLOCKS * 9 + 1)) / 8)) * 8)
    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def conv(x, name, cin, cout, k, stride):
        w = rng.standard_normal((cout, cin, k, k), dtype=np.float32) * np.float32(math.sqrt(2.0 / (cin * k * k)))
        b = rng.standard_normal(cout, dtype=np.float32) * np.float32(0.01)
        nodes.append(helper.make_node("Conv", [x, const(f"{name}.weight", w), const(f"{name}.bias", b)], [name],
                                      name=name, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        return name

    def bn(x, name, ch, gamma=(0.5, 1.5)):
        params = [const(f"{name}.scale", rng.uniform(*gamma, ch)), const(f"{name}.bias", rng.normal(0, 0.1, ch)),
                  const(f"{name}.mean", rng.normal(0, 0.5, ch)), const(f"{name}.var", rng.uniform(0.5, 2.0, ch))]
        nodes.append(helper.make_node("BatchNormalization", [x, *params], [name], name=name, epsilon=1e-5))
        return name

    def op(op_type, inputs, name, **attrs):
        nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    x = op("Relu", [bn(conv("input", "stem", 3, width, 7, 2), "stem_bn", width)], "stem_relu")
    x = op("MaxPool", [x], "pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 16x16
    for i in range(BLOCKS):
        stride = 2 if i == 0 else 1  # block 0 downsamples to 8x8 with a projection shortcut
        y = op("Relu", [bn(conv(x, f"b{i}_conv1", width, width, 3, stride), f"b{i}_bn1", width)], f"b{i}_relu1")
        y = bn(conv(y, f"b{i}_conv2", width, width, 3, 1), f"b{i}_bn2", width, gamma=(0.1, 0.3))
        short = bn(conv(x, "proj", width, width, 1, 2), "proj_bn", width) if i == 0 else x
        x = op("Relu", [op("Add", [y, short], f"b{i}_add")], f"b{i}_relu2")
    x = op("Flatten", [op("GlobalAveragePool", [x], "gap")], "flatten")
    fc_w = rng.standard_normal((1000, width), dtype=np.float32) * np.float32(math.sqrt(1.0 / width))
    x = op("Gemm", [x, const("fc.weight", fc_w), const("fc.bias", rng.normal(0, 0.01, 1000))], "fc", transB=1)
    bn(x, "logits", 1000)  # BN on [N, C] after the Gemm head

    graph = helper.make_graph(nodes, "bench_resnet",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bnfold-bench")
    model.ir_version = 8
    weights = sum(t.ByteSize() for t in inits)
    del inits
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in (path, path.with_name(path.name + ".data")):
        old.unlink(missing_ok=True)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save(model, str(path))
    return {"width": width, "weights_mib": weights / MiB}


def model_bytes(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


# ---------------------------------------------------------------------------------------------------------
# Benchmarks and tables.
# ---------------------------------------------------------------------------------------------------------

def _fmt(value, spec=".2f", none="—"):
    return none if value is None else format(value, spec)


def _err_cell(check: Check, ref: Reference) -> str:
    if check.error:
        return check.error
    if ref.outputs is None:
        return "n/a"
    text = f"{check.max_abs:.2e} ({check.rel:.1e} rel)"
    return f"**wrong** {text}" if check.wrong else text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def bench_model(path: Path, tools: list[str], skipped: dict, args, workdir: Path, logdir: Path,
                repeat: int) -> tuple[list[str], dict]:
    """Time every tool on one big model, `repeat` times each; the table rows and the raw numbers."""
    size_mib = model_bytes(path) / MiB
    bn0, nodes0, external = graph_stats(path)
    print(f"  reference run of {path.name} (ORT_DISABLE_ALL) ...", flush=True)
    ref = reference(path)
    rows, raw, floor = [], {}, None
    for tool in tools:
        if tool in skipped:
            rows.append(f"| {tool} | skipped: {_cell(skipped[tool])} |" + " |" * 11)
            continue
        runs = []
        for i in range(repeat):
            print(f"  {tool} [{i + 1}/{repeat}] ...", end=" ", flush=True)
            runs.append(run_tool(tool, path, workdir / f"{tool}.onnx", external, args.timeout, logdir,
                                 args.max_mem_gb))
            r = runs[-1]
            print(f"{_fmt(r.op_s)} s, peak {_fmt(r.peak_mib, '.0f')} MiB" if r.ok else r.error, flush=True)
            if not r.ok:
                break
        last = runs[-1]
        check = check_output(workdir / f"{tool}.onnx", ref) if last.ok else Check()
        if not args.keep_outputs:
            for f in (workdir / f"{tool}.onnx", workdir / f"{tool}.onnx.data"):
                f.unlink(missing_ok=True)
        ok_runs = [r for r in runs if r.ok]
        op_s = statistics.median(r.op_s for r in ok_runs) if len(ok_runs) == len(runs) else None
        proc_s = statistics.median(r.process_s for r in ok_runs) if op_s is not None else None
        peaks = [r.peak_mib for r in runs if r.peak_mib is not None]
        peak = max(peaks) if peaks else None
        anons = [r.anon_peak_mib for r in runs if r.anon_peak_mib is not None]
        anon = max(anons) if anons else None
        base = last.baseline_mib
        if tool == "io-floor" and op_s is not None:
            floor = (op_s, proc_s)
        x_op = op_s / floor[0] if floor and op_s is not None and tool != "bnfold-cli" else None
        x_proc = proc_s / floor[1] if floor and proc_s is not None else None
        growth = peak - base if base is not None and peak is not None else None
        status = "ok" if last.ok else f"**failed**: {_cell(last.error)}"
        if last.ok and check.error:
            status = f"output: {_cell(check.error)}"
        elif check.wrong:
            status = "**wrong output**"
        if tool == "onnxsim" and last.extra.get("check") is False:
            status += " (onnxsim's own check: False)"
        rows.append(
            f"| {tool} | {_fmt(op_s if tool != 'bnfold-cli' else None)} | {_fmt(x_op)} | {_fmt(proc_s)} "
            f"| {_fmt(x_proc)} | {_fmt(peak, '.0f')} | {_fmt(growth, '.0f')} | {_fmt(anon, '.0f')} | {_fmt(peak / size_mib if peak else None)} "
            f"| {_fmt(check.bn, 'd')} | {_fmt(check.nodes, 'd')} "
            f"| {_err_cell(check, ref) if last.ok and not check.error else '—'} | {status} |")
        raw[tool] = {"runs": [vars(r) for r in runs], "check": vars(check), "op_s_median": op_s,
                     "process_s_median": proc_s, "peak_mib": peak, "growth_mib": growth, "anon_peak_mib": anon,
                     "op_s_min": min(r.op_s for r in ok_runs) if op_s is not None else None,
                     "process_s_min": min(r.process_s for r in ok_runs) if op_s is not None else None}
    header = [
        f"Model `{path.name}`: {size_mib:.1f} MiB{' (external data)' if external else ' (single file)'}, "
        f"{bn0} BatchNormalization, {nodes0} nodes. "
        + (f"Reference: original in onnxruntime, ORT_DISABLE_ALL, seed {SEED}."
           if ref.outputs is not None else f"No reference: the original does not run ({ref.error})."),
        f"Times are the median of {repeat} run(s); peak RSS is the largest of them.",
        "",
        "| tool | op s | ×floor (op) | process s | ×floor (process) | peak RSS MiB | RSS growth MiB "
        "| peak anon MiB | peak / model size | BN left | nodes after | max abs err (relative) | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    return header + rows, {"model": str(path), "size_mib": size_mib, "bn_before": bn0, "nodes_before": nodes0,
                           "external": external, "reference_error": ref.error, "tools": raw}


def budget_lines(raw: dict, huge: bool = False) -> list[str]:
    tools, size = raw["tools"], raw["size_mib"]
    lines = []
    floor, lib, cli = tools.get("io-floor", {}), tools.get("bnfold-lib", {}), tools.get("bnfold-cli", {})
    if floor.get("op_s_median") and lib.get("op_s_median"):
        ratio = lib["op_s_median"] / floor["op_s_median"]
        best = lib["op_s_min"] / floor["op_s_min"]
        lines.append(f"- fold time ≤ 1.5 × I/O floor: library {ratio:.2f}× "
                     f"(median {lib['op_s_median']:.2f} s vs {floor['op_s_median']:.2f} s) → "
                     f"{'PASS' if ratio <= 1.5 else 'FAIL'}; fastest runs {best:.2f}× "
                     f"({lib['op_s_min']:.2f} s vs {floor['op_s_min']:.2f} s)")
    for other, label, limit in ((floor, "whole I/O-floor process", 1.5),
                                (tools.get("ort-basic", {}), "onnxruntime's offline optimizer (ort-basic) as a "
                                                             "whole process", 1.0)):
        if other.get("process_s_median") and cli.get("process_s_median"):
            ratio = cli["process_s_median"] / other["process_s_median"]
            best = cli["process_s_min"] / other["process_s_min"]
            lines.append(f"- CLI, whole process vs {label}: {ratio:.2f}× (median {cli['process_s_median']:.2f} s "
                         f"vs {other['process_s_median']:.2f} s) → {'PASS' if ratio <= limit else 'FAIL'}; "
                         f"fastest runs {best:.2f}×")
    if lib.get("growth_mib") is not None:
        g, p = lib["growth_mib"], lib["peak_mib"]
        lines.append(f"- fold peak memory ≤ 2 × model size ({size:.0f} MiB): library RSS growth {g:.0f} MiB "
                     f"= {g / size:.2f}× → {'PASS' if g <= 2 * size else 'FAIL'}; whole-process peak {p:.0f} MiB "
                     f"= {p / size:.2f}× → {'PASS' if p <= 2 * size else 'FAIL'}")
    if cli.get("peak_mib"):
        p = cli["peak_mib"]
        lines.append(f"- CLI whole-process peak {p:.0f} MiB = {p / size:.2f}× model size")
    if huge and lib:
        p, a = lib.get("peak_mib"), lib.get("anon_peak_mib")
        ok = lib["check"].get("bn") == 0 and a is not None and a < size
        lines.append(f"- > 2 GB external-data model folds without loading it whole (anonymous memory < model "
                     f"size): {'PASS' if ok else 'FAIL'} (peak anon {_fmt(a, '.0f')} MiB, peak RSS incl. mapped "
                     f"file pages {_fmt(p, '.0f')} MiB, BN left {lib['check'].get('bn')}"
                     f"{', ' + lib['runs'][-1]['error'] if lib['runs'][-1]['error'] else ''})")
    return lines


def corpus_models(corpus: Path | None) -> list[Path]:
    models = []
    if corpus is not None and corpus.is_dir():
        models += sorted(p for p in (corpus / "ultraface").glob("*.onnx") if not p.stem.endswith("_simplified"))
        models += sorted((corpus / "ort-fusion").glob("*.onnx"))
    models += sorted((PROJECT / "sample_models").glob("*.onnx"))
    return models


def bench_corpus(models: list[Path], tools: list[str], skipped: dict, args, workdir: Path,
                 logdir: Path) -> tuple[list[str], dict]:
    tools = [t for t in tools if t != "io-floor"]
    bn_rows, err_rows, failures, raw = [], [], [], {}

    def failure(text: str) -> str:
        failures.append(text)
        return f"F{len(failures)}"

    for path in models:
        label = f"{path.parent.name}/{path.name}"
        print(f"  {label}", flush=True)
        try:
            bn0, nodes0, external = graph_stats(path)
        except Exception as exc:  # noqa: BLE001
            bn_rows.append(f"| {label} | unreadable: {_cell(_first_line(exc))} |" + " |" * len(tools))
            continue
        ref = reference(path)
        bn_cells, err_cells, raw[label] = [], [], {"bn_before": bn0, "nodes_before": nodes0,
                                                   "reference_error": ref.error, "tools": {}}
        for tool in tools:
            if tool in skipped:
                bn_cells.append("skipped")
                err_cells.append("skipped")
                continue
            out = workdir / f"{path.stem}.{tool}.onnx"
            run = run_tool(tool, path, out, external, args.timeout, logdir, args.max_mem_gb)
            check = check_output(out, ref) if run.ok else Check()
            if not args.keep_outputs:
                for f in (out, out.with_name(out.name + ".data")):
                    f.unlink(missing_ok=True)
            raw[label]["tools"][tool] = {"run": vars(run), "check": vars(check)}
            if not run.ok:
                ref_id = failure(f"{tool} on {label}: {run.error}")
                bn_cells.append(f"crash ({ref_id})")
                err_cells.append(f"crash ({ref_id})")
                continue
            bn_cells.append(f"{check.bn} ({check.nodes})" if check.bn is not None else "?")
            if check.error:
                err_cells.append(f"{'does not run' if check.error.startswith('does not run') else 'bad output'}"
                                 f" ({failure(f'{tool} on {label}: {check.error}')})")
            else:
                err_cells.append(_cell(_err_cell(check, ref)))
        bn_rows.append(f"| {label} | {bn0} ({nodes0}) | " + " | ".join(bn_cells) + " |")
        ref_note = "runs" if ref.outputs is not None else f"does not run ({failure(f'original {label}: {ref.error}')})"
        err_rows.append(f"| {label} | {ref_note} | " + " | ".join(err_cells) + " |")
    head = " | ".join(tools)
    lines = [
        "BatchNormalization nodes left (all nodes after, in parentheses):",
        "",
        f"| model | before | {head} |",
        "|---|---:|" + "---:|" * len(tools),
        *bn_rows,
        "",
        f"Max abs error of each tool's output vs the original (ORT_DISABLE_ALL, seed {SEED}); "
        f"**wrong** = error > {WRONG_REL:g} × max |original output|:",
        "",
        f"| model | original | {head} |",
        "|---|---|" + "---|" * len(tools),
        *err_rows,
    ]
    if failures:
        lines += ["", "Failures:", ""] + [f"- F{i}: {_cell(text)}" for i, text in enumerate(failures, 1)]
    return lines, raw


def machine_lines(argv: list[str]) -> list[str]:
    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or "?")
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    except OSError:
        nproc = str(os.cpu_count())
    mem = next((int(ln.split()[1]) // 1024 for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal")), 0)
    packages = ["bnfold", "onnx", "onnxruntime", "onnx-ir", "numpy", "protobuf", "onnxoptimizer", "onnxslim",
                "onnxsim", "psutil"]
    return [
        f"- command: `{shlex.join([sys.executable, *argv])}` (run in `{os.getcwd()}`)",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: nproc {nproc}, {cpu}, {mem} MiB RAM, {platform.platform()}",
        f"- python {platform.python_version()} ({sys.executable})",
        "- packages: " + ", ".join(f"{p} {version(p)}" for p in packages),
    ]


def main(argv: list[str]) -> int:
    if argv[:1] == ["_worker"]:
        p = argparse.ArgumentParser(prog="fold_bench.py _worker")
        p.add_argument("tool", choices=sorted(WORKERS))
        p.add_argument("src"), p.add_argument("dst"), p.add_argument("result")
        p.add_argument("--external", action="store_true")
        a = p.parse_args(argv[1:])
        worker_main(a.tool, a.src, a.dst, a.result, a.external)
        return 0

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=100, help="weights of the synthetic model, MiB")
    parser.add_argument("--huge", action="store_true", help="also build and bench a > 2 GiB external-data model")
    parser.add_argument("--huge-mb", type=float, default=2200, help="weights of the --huge model, MiB")
    parser.add_argument("--out-dir", type=Path, default=HERE / "out")
    parser.add_argument("--corpus", type=Path, default=PROJECT.parent / "shared" / "corpus")
    parser.add_argument("--no-corpus", action="store_true", help="skip the corpus and sample models")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per tool on the synthetic models")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before a tool run is killed")
    parser.add_argument("--max-mem-gb", type=float, default=None,
                        help="kill a tool process whose RSS goes over this many GiB (polled every 5 ms)")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    parser.add_argument("--keep-outputs", action="store_true", help="keep every tool's output model")
    args = parser.parse_args(argv)
    tools = [t for t in args.tools.split(",") if t]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools: {sorted(unknown)}")

    compile_bnfold()
    out = args.out_dir.resolve()
    models_dir, work, logs = out / "models", out / "work", out / "logs"
    for d in (models_dir, work, logs):
        d.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    lines = ["# bnfold fold benchmark", "", *machine_lines(sys.argv), ""]
    skipped = available_tools()
    for tool, reason in skipped.items():
        print(f"skipping {tool}: {reason}", flush=True)
        lines.append(f"- skipped {tool}: {reason}")
    raw = {}

    name = f"resnet_{args.size_mb:g}mb.onnx"
    print(f"building {name} ...", flush=True)
    t0 = time.perf_counter()
    info = build_resnet(models_dir / name, args.size_mb, external=False)
    print(f"  built in {time.perf_counter() - t0:.1f} s (width {info['width']})", flush=True)
    table, raw["synthetic"] = bench_model(models_dir / name, tools, skipped, args, work, logs, args.repeat)
    lines += ["", f"## Synthetic ResNet-like model, {args.size_mb:g} MiB requested (width {info['width']})", "",
              *table, "", "Budgets:", "", *budget_lines(raw["synthetic"])]

    if args.huge:
        name = f"resnet_{args.huge_mb:g}mb_external.onnx"
        print(f"building {name} (external data) ...", flush=True)
        t0 = time.perf_counter()
        info = build_resnet(models_dir / name, args.huge_mb, external=True)
        print(f"  built in {time.perf_counter() - t0:.1f} s (width {info['width']})", flush=True)
        table, raw["huge"] = bench_model(models_dir / name, tools, skipped, args, work, logs, 1)
        lines += ["", f"## Huge model, {args.huge_mb:g} MiB with external data (width {info['width']})", "",
                  *table, "", "Budgets:", "", *budget_lines(raw["huge"], huge=True)]
        if not args.keep_outputs:
            for f in (models_dir / name, models_dir / (name + ".data")):
                f.unlink(missing_ok=True)

    if not args.no_corpus:
        models = corpus_models(args.corpus)
        note = "" if args.corpus.is_dir() else f" (corpus folder {args.corpus} absent: sample models only)"
        print(f"corpus: {len(models)} models{note}", flush=True)
        table, raw["corpus"] = bench_corpus(models, tools, skipped, args, work, logs)
        lines += ["", f"## Corpus: {args.corpus}/ultraface (not *_simplified), {args.corpus}/ort-fusion, "
                      f"sample_models{note}", "", *table]

    lines += ["", f"Total bench time {time.perf_counter() - started:.0f} s. Logs of every tool run: `{logs}`."]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

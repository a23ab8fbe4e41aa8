"""Lint (and `analyze_model`) decide without materializing folded weights; `fold_model` computes them.
Both must reach the same decisions — outcome, reason, detail, range growth, worst channel — on every
shipped sample and on the dtype-range boundaries where an overflow refusal flips."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest

from bnfold.io import load_model
from helpers import analyze_copy, conv_bn_model, fold_copy, gemm_bn_model, matmul_bn_model

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
ONNX_SAMPLES = sorted(p for p in SAMPLES.rglob("*.onnx"))


def summarize(decisions):
    return sorted((d.graph, d.node, d.op_type, d.outcome, d.direction, d.partner, d.reason, d.detail,
                   d.range_growth, d.worst_channel) for d in decisions)


@pytest.mark.parametrize("path", ONNX_SAMPLES, ids=[str(p.relative_to(SAMPLES)) for p in ONNX_SAMPLES])
def test_samples(path):
    from bnfold.fold import analyze_model, fold_model

    assert summarize(analyze_model(load_model(path))) == summarize(fold_model(load_model(path)).decisions)


FP16_MAX = 65504.0
BUILDERS = {
    "conv": lambda: conv_bn_model(dtype=np.float16, seed=3)[0],
    "convtranspose": lambda: conv_bn_model(dtype=np.float16, seed=4, transpose=True)[0],
    "gemm_transb": lambda: gemm_bn_model(dtype=np.float16, trans_b=1, seed=5)[0],
    "matmul": lambda: matmul_bn_model(dtype=np.float16, seed=6)[0],
}


def _near_the_limit(model: onnx.ModelProto, ratio: float) -> onnx.ModelProto:
    """The model with its weight W scaled so that the folded weight's largest |value| is about `ratio` times
    the fp16 maximum (the fold rounds it to Inf from 65520 up)."""
    model = copy.deepcopy(model)
    for init in model.graph.initializer:
        if init.name == "bn_var":  # every |s| >= 1, so the scaled weight itself stays inside fp16
            init.CopyFrom(onnx.numpy_helper.from_array(np.full(init.dims, 0.2, np.float16), "bn_var"))
    inits = {i.name: onnx.numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    s = inits["bn_scale"] / np.sqrt(inits["bn_var"] + 1e-5)
    w = inits["W"]
    axis = 1 if model.graph.node[0].op_type == "ConvTranspose" or w.ndim == 2 else 0
    if model.graph.node[0].op_type == "Gemm":
        axis = 0  # transB: W is [n, k]
    folded = np.abs(np.moveaxis(w, axis, 0).reshape(len(s), -1)).max(axis=1) * np.abs(s)
    scaled = (w * ratio * FP16_MAX / folded.max()).astype(np.float16)
    for init in model.graph.initializer:
        if init.name == "W":
            init.CopyFrom(onnx.numpy_helper.from_array(scaled, "W"))
    return model


@pytest.mark.parametrize("ratio", [0.5, 0.999, 0.9995, 1.0, 1.0002, 1.0005, 1.001, 1.002, 1.01, 2.0])
@pytest.mark.parametrize("build", sorted(BUILDERS))
def test_fp16_near_the_range_limit(build, ratio):
    model = _near_the_limit(BUILDERS[build](), ratio)
    assert summarize(analyze_copy(model)) == summarize(fold_copy(model)[1].decisions)


@pytest.mark.parametrize("build", sorted(BUILDERS))
def test_the_boundary_cases_include_both_outcomes(build):
    outcomes = [{d.reason for d in analyze_copy(_near_the_limit(BUILDERS[build](), r))} for r in (0.999, 1.01)]
    assert outcomes == [{None}, {"overflow"}]

"""Property test: any single linear op followed by BN folds completely and computes the same function."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    GEMM_C_SHAPES,
    assert_fold_equal,
    conv_bn_model,
    decision,
    gemm_bn_model,
    matmul_bn_model,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnfold.fold.result import BACKWARD, FOLDED


@st.composite
def conv_specs(draw, transpose: bool):
    dims = draw(st.integers(1, 2))
    group = draw(st.sampled_from([1, 2, 3]))
    cin = group * draw(st.integers(1, 3))
    cout = group * draw(st.integers(1, 3))
    kernel = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 2))
    bias = draw(st.booleans())
    if transpose:
        dilation = 1
        output_padding = draw(st.integers(0, stride - 1))
        size = draw(st.integers(2, 5))
        # keep the output non-empty: stride*(size-1) + output_padding + kernel - 2*pad >= 1
        pad = draw(st.integers(0, min(kernel - 1, (stride * (size - 1) + output_padding + kernel - 1) // 2)))
    else:
        dilation = draw(st.integers(1, 2))
        pad = draw(st.integers(0, (kernel - 1) * dilation))
        output_padding = 0
        size = draw(st.integers((kernel - 1) * dilation + 1, 8))
    return dict(dims=dims, cin=cin, cout=cout, group=group, kernel=kernel, stride=stride, dilation=dilation,
                pad=pad, bias=bias, size=size, transpose=transpose, output_padding=output_padding,
                batch=draw(st.integers(1, 2)))


gemm_specs = st.fixed_dictionaries(dict(
    m=st.integers(1, 4),
    k=st.integers(1, 6),
    n=st.integers(1, 6),
    trans_a=st.sampled_from([0, 1]),
    trans_b=st.sampled_from([0, 1]),
    alpha=st.sampled_from([None, 0.5, 2.0, -1.5]),
    beta=st.sampled_from([None, 0.5, 2.0]),
    c_shape=st.sampled_from(list(GEMM_C_SHAPES.values())),
))

matmul_specs = st.fixed_dictionaries(dict(
    m=st.integers(1, 4),
    k=st.integers(1, 6),
    n=st.integers(1, 6),
    add=st.booleans(),
    bias_first=st.booleans(),
))

# Each partner kind is its own case so every kind gets its share of examples. onnxruntime's CPU provider has
# no fp64 Conv/ConvTranspose kernel, so fp64 is drawn for Gemm/MatMul only; it has an fp16 Conv.
CASES = {
    "conv": (conv_specs(transpose=False), [np.float32, np.float16]),
    "convtranspose": (conv_specs(transpose=True), [np.float32]),
    "gemm": (gemm_specs, [np.float32, np.float64]),
    "matmul": (matmul_specs, [np.float32, np.float64]),
}

PARTNERS = {"conv": ("conv", "Conv"), "convtranspose": ("convt", "ConvTranspose"), "gemm": ("gemm", "Gemm"),
            "matmul": ("matmul", "MatMul")}


@pytest.mark.parametrize("kind", CASES)
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), epsilon=st.floats(1e-5, 1e-1), seed=st.integers(0, 2**16))
def test_linear_then_bn_always_folds(kind, data, epsilon, seed):
    specs, dtypes = CASES[kind]
    spec, dtype = data.draw(specs, label="spec"), data.draw(st.sampled_from(dtypes), label="dtype")
    if kind in ("conv", "convtranspose"):
        model, feeds = conv_bn_model(**spec, seed=seed, dtype=dtype, epsilon=epsilon)
    elif kind == "gemm":
        model, feeds = gemm_bn_model(**spec, seed=seed, dtype=dtype, epsilon=epsilon)
    else:
        model, feeds = matmul_bn_model(**spec, seed=seed, dtype=dtype, epsilon=epsilon)

    rtol, atol = {np.float32: (1e-4, 1e-5), np.float64: (1e-7, 1e-9), np.float16: (1e-2, 1e-3)}[dtype]
    _, result = assert_fold_equal(model, feeds, bn_left=0, rtol=rtol, atol=atol)
    bns = result.of_op("BatchNormalization")
    assert bns and all(d.outcome == FOLDED for d in bns), result.decisions
    partner, partner_op = PARTNERS[kind]
    d = decision(result, "bn")
    assert (d.direction, d.partner, d.partner_op) == (BACKWARD, partner, partner_op), d

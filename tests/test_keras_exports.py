"""Models tf2onnx exported from Keras (sample_models/keras/, made by export_keras.py): Keras 2 with its
BatchNormalization kept, and Keras 3, whose export has no BatchNormalization node — every BN is a Mul+Add
that bnfold folds as a decomposed BN, backward into Conv/Gemm and forward into the head's Gemm."""

from __future__ import annotations

import copy
import runpy
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from helpers import ort_run

from bnfold.fold import fold_model

FOLDER = Path(__file__).resolve().parents[1] / "sample_models" / "keras"
NAMES = ("tf_keras_bn_kept.onnx", "keras3.onnx")
EXPECTED = {  # (op_type, direction, partner_op) of every decision
    "tf_keras_bn_kept.onnx": Counter({("BatchNormalization", "backward", "Conv"): 3, ("Mul", "backward", "Gemm"): 1,
                                      ("Add", "backward", "Gemm"): 1, ("Mul", "forward", "Gemm"): 1,
                                      ("Add", "forward", "Gemm"): 1}),
    "keras3.onnx": Counter({("Mul", "backward", "Conv"): 2, ("Add", "backward", "Conv"): 2,
                            ("Mul", "backward", "Gemm"): 1, ("Add", "backward", "Gemm"): 1,
                            ("Mul", "forward", "Gemm"): 1, ("Add", "forward", "Gemm"): 1}),
}


def test_the_export_script_lists_the_shipped_files():
    script = runpy.run_path(str(FOLDER / "export_keras.py"), run_name="export_keras")  # imports no TensorFlow
    assert script["FILES"] == NAMES
    assert sorted(p.name for p in FOLDER.glob("*.onnx")) == sorted(NAMES)


def with_logits_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """The softmax of a barely trained head is ~0.1 everywhere; compare the logits feeding it as well."""
    model = copy.deepcopy(model)
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    model.graph.output.append(onnx.helper.make_tensor_value_info(softmax.input[0], onnx.TensorProto.FLOAT, None))
    return model


@pytest.mark.parametrize("name", NAMES)
def test_every_batchnorm_folds_and_logits_match(name):
    original = with_logits_output(onnx.load(FOLDER / name))
    model = ir.from_proto(original)
    result = fold_model(model)
    folded = ir.to_proto(model)
    assert all(d.outcome == "folded" for d in result.decisions), result.skipped
    assert Counter((d.op_type, d.direction, d.partner_op) for d in result.decisions) == EXPECTED[name]
    left = Counter(n.op_type for n in folded.graph.node)
    assert (left["BatchNormalization"], left["Mul"], left["Add"]) == (0, 0, 0)
    x = {"x": np.random.default_rng(9).normal(size=(1, 32, 32, 3)).astype(np.float32)}
    for want, got in zip(ort_run(original, x), ort_run(folded, x)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

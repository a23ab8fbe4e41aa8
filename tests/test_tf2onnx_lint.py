"""Lint of real tf2onnx exports, where TensorFlow writes BatchNormalization as `<layer>/batchnorm/mul_1` +
`add_1`: the same findings as the Keras file, named by the Keras layer tf2onnx's op paths carry. The exports
are made here from the shipped Keras samples by bnfold's own conversion worker (TensorFlow in a process of
its own); skips without `pip install '.[keras]'`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bnfold.io import load_model
from bnfold.keras.convert import worker
from bnfold.lint import lint_model

_missing = [m for m in ("tensorflow", "tf2onnx", "tf_keras") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"needs {', '.join(_missing)} (pip install '.[keras]')")

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models" / "keras"


def exported_findings(tmp_path: Path, sample: str):
    out = tmp_path / "export.onnx"
    worker("convert", str(SAMPLES / sample), str(out), "17")
    return [(f.code, f.node, f.keras_layer) for f in lint_model(load_model(out), str(out))]


@pytest.mark.parametrize("sample, model, trace", [("seed_mlp.h5", "seed_mlp", ""),
                                                  ("seed_mlp.keras", "seed_mlp_1", "_1")])
def test_seed_mlp_findings_name_its_keras_layers(tmp_path, sample, model, trace):
    # Keras 3 traces each layer in a scope TensorFlow uniquifies (layer dense_1 runs in dense_1_1):
    # keras_layer is the layer's own name in both formats
    assert exported_findings(tmp_path, sample) == [
        ("BN001", f"{model}/dense_1{trace}/MatMul", "dense_1"),
        ("BN001", f"{model}/dense_2{trace}/MatMul", "dense_2"),
        ("BN001", f"{model}/dense_out{trace}/MatMul", "dense_out"),
        ("BN002", f"{model}/bn_out{trace}/batchnorm/mul_1", "bn_out"),
        # TensorFlow writes a Dense's BN as Mul/Add: bnfold fold folds all three into their MatMul
        ("BN009", f"{model}/bn_1{trace}/batchnorm/mul_1", None),
    ]


def test_clean_model_exports_with_only_its_unfolded_batchnorms(tmp_path):
    # the conversion keeps tf_keras' Conv BNs as nodes (so `bnfold fold` reports each): BN009 says fold them;
    # Keras 3's are merged into the Conv weights by TensorFlow already
    assert exported_findings(tmp_path, "clean.h5") == [("BN009", "clean/batch_normalization/FusedBatchNormV3", None)]
    assert exported_findings(tmp_path, "clean.keras") == []


@pytest.mark.parametrize("sample", ["untrained_statistics.h5", "untrained_statistics.keras"])
def test_untrained_dense_bn_written_as_a_lone_mul_is_bn007(tmp_path, sample):
    # gamma 1, mean 0, var 1, beta 0: TensorFlow leaves one Mul by 1/sqrt(1 + 0.001) and drops the zero Add.
    # Keras 3 runs the auto-named layer batch_normalization in scope batch_normalization_1
    found = exported_findings(tmp_path, sample)
    assert [(code, layer) for code, _, layer in found] == [("BN007", "batch_normalization"),
                                                           ("BN009", "batch_normalization")]

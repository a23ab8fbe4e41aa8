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


def test_seed_mlp_from_tf_keras(tmp_path):
    assert exported_findings(tmp_path, "seed_mlp.h5") == [
        ("BN001", "seed_mlp/dense/MatMul", "dense"),
        ("BN001", "seed_mlp/dense_1/MatMul", "dense_1"),
        ("BN001", "seed_mlp/dense_2/MatMul", "dense_2"),
        ("BN002", "seed_mlp/batch_normalization_2/batchnorm/mul_1", "batch_normalization_2"),
        # tf_keras writes a Dense's BN as Mul/Add: bnfold fold folds them into the MatMul
        ("BN009", "seed_mlp/batch_normalization/batchnorm/mul_1", "batch_normalization"),
        ("BN009", "seed_mlp/batch_normalization_1/batchnorm/mul_1", "batch_normalization_1"),
        ("BN009", "seed_mlp/batch_normalization_2/batchnorm/mul_1", "batch_normalization_2"),
    ]


def test_seed_mlp_from_keras3_names_the_traced_scopes(tmp_path):
    # Keras 3 traces each layer in a scope TensorFlow uniquifies: layer dense is dense_1, dense_1 is dense_1_2
    assert exported_findings(tmp_path, "seed_mlp.keras") == [
        ("BN001", "seed_mlp_1/dense_1/MatMul", "dense_1"),
        ("BN001", "seed_mlp_1/dense_1_2/MatMul", "dense_1_2"),
        ("BN001", "seed_mlp_1/dense_2_1/MatMul", "dense_2_1"),
        ("BN002", "seed_mlp_1/batch_normalization_2_1/batchnorm/mul_1", "batch_normalization_2_1"),
        ("BN009", "seed_mlp_1/batch_normalization_1/batchnorm/mul_1", "batch_normalization_1"),
        ("BN009", "seed_mlp_1/batch_normalization_1_2/batchnorm/mul_1", "batch_normalization_1_2"),
        ("BN009", "seed_mlp_1/batch_normalization_2_1/batchnorm/mul_1", "batch_normalization_2_1"),
    ]


def test_clean_model_exports_with_only_its_unfolded_batchnorms(tmp_path):
    # the conversion keeps tf_keras' Conv BNs as nodes (so `bnfold fold` reports each): BN009 says fold them;
    # Keras 3's are merged into the Conv weights by TensorFlow already
    assert exported_findings(tmp_path, "clean.h5") == [
        ("BN009", "clean/batch_normalization/FusedBatchNormV3", "batch_normalization"),
        ("BN009", "clean/batch_normalization_1/FusedBatchNormV3", "batch_normalization_1"),
    ]
    assert exported_findings(tmp_path, "clean.keras") == []


@pytest.mark.parametrize("sample", ["untrained_statistics.h5", "untrained_statistics.keras"])
def test_untrained_dense_bn_written_as_a_lone_mul_is_bn007(tmp_path, sample):
    # gamma 1, mean 0, var 1, beta 0: TensorFlow leaves one Mul by 1/sqrt(1 + 0.001) and drops the zero Add
    codes = [code for code, _, _ in exported_findings(tmp_path, sample)]
    assert codes == ["BN007", "BN009"]

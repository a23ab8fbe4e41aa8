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


def _export(tmp_path: Path, sample: str) -> Path:
    out = tmp_path / "export.onnx"
    worker("convert", str(SAMPLES / sample), str(out), "17")
    return out


def exported_findings(tmp_path: Path, sample: str):
    out = _export(tmp_path, sample)
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


def test_untrained_dense_bn_written_as_a_lone_mul_is_bn007(tmp_path):
    # gamma 1, mean 0, var 1, beta 0: TensorFlow leaves one Mul by 1/sqrt(1 + 0.001) and drops the zero Add.
    # Keras 3 runs the auto-named layer batch_normalization in scope batch_normalization_1
    (bn007, _) = lint_model(load_model(_export(tmp_path, "untrained_statistics.keras")), "m.onnx")
    assert (bn007.code, bn007.node) == ("BN007", "untrained_statistics_1/batch_normalization_1/batchnorm/mul_1")
    assert bn007.message.startswith("BatchNormalization 'untrained_statistics_1/batch_normalization_1' (exported as "
                                    "Mul from 'untrained_statistics_1/batch_normalization_1/batchnorm/mul_1') "
                                    "multiplies all 32 channels by 1/sqrt(1 + 0.001)")


# Every finding on the tf2onnx export of every Keras sample, as (code, Keras layer); each read against the
# export as a reviewer would. Where the formats differ, Keras 3's conversion let TensorFlow merge the BN of
# a Conv into its weights (nothing left to fold), and tf_keras kept it as a BatchNormalization node.
_BN = "batch_normalization"
PINNED = {
    "seed_mlp": [("BN001", "dense_1"), ("BN001", "dense_2"), ("BN001", "dense_out"), ("BN002", "bn_out"),
                 ("BN009", None)],
    "cnn_bn_after_activation": [],  # both BN after a ReLU, before a padded Conv / the pooling: not foldable
    "untrained_statistics": [("BN007", _BN), ("BN009", _BN)],
    "dropout_before_bn": [("BN009", _BN)],  # the export runs inference: its Dropout is gone, and so is BN005
    "bn_on_input": [("BN009", _BN), ("BN011", _BN)],
    "wrong_bn_axis": [],  # the per-row Mul/Add is not on the channel axis: nothing folds (BN013 is Keras-only)
    "pytorch_momentum": {".keras": [], ".h5": [("BN009", _BN)]},  # momentum is gone from an export
    "training_true": {".keras": [], ".h5": [("BN009", _BN)]},  # tf2onnx writes the moving statistics
    "clean": {".keras": [], ".h5": [("BN009", None)]},
}


def test_the_table_covers_every_keras_sample():
    import runpy

    script = runpy.run_path(str(SAMPLES / "make_keras_samples.py"), run_name="make_keras_samples")
    assert sorted(PINNED) == sorted(script["NAMES"])


def pinned(name: str, suffix: str) -> list[tuple[str, str | None]]:
    entry = PINNED[name]
    return entry[suffix] if isinstance(entry, dict) else entry


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("name", sorted(PINNED))
def test_every_export_gives_exactly_its_pinned_findings(tmp_path, name, suffix):
    found = exported_findings(tmp_path, f"{name}{suffix}")
    assert [(code, layer) for code, _, layer in found] == pinned(name, suffix)

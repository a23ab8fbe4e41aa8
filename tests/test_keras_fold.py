"""bnfold fold / verify on Keras files: tf2onnx converts in a process of its own, the core engine folds, and
the result is verified against the Keras model run in TensorFlow. Skips without TensorFlow, tf2onnx and
tf_keras (`pip install '.[keras]'`)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from bnfold.cli import cli
from bnfold.fold import analyze_model
from bnfold.io import load_model

# find_spec, not importorskip: TensorFlow runs in bnfold's worker processes only, never in this one (it
# cannot share a process with PyTorch, which tests/test_architectures.py imports)
_missing = [m for m in ("tensorflow", "tf2onnx", "tf_keras") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"needs {', '.join(_missing)} (pip install '.[keras]')")

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models" / "keras"
NAMES = ("seed_mlp", "cnn_bn_after_activation", "wrong_bn_axis", "clean")
# BatchNormalization nodes tf2onnx keeps from tf_keras that cannot fold, with the reason: BN after a ReLU
# feeding a padded Conv, BN after the last ReLU (nothing linear next to it but a GlobalAveragePool), and the
# height-axis BN (after the Transpose tf2onnx puts in front of it). Keras 3's conversion has none left as BN.
LEFT_IN_H5 = {"cnn_bn_after_activation": 2, "wrong_bn_axis": 1}
# What became of each Keras BatchNormalization layer, as `fold` reports it, per file format
LAYER_OUTCOMES = {
    ("seed_mlp", ".keras"): "3: 3 folded",
    ("seed_mlp", ".h5"): "3: 3 folded",
    ("cnn_bn_after_activation", ".keras"): "2: 1 left: padding-forward, 1 left: no adjacent linear op",
    ("cnn_bn_after_activation", ".h5"): "2: 1 left: padding-forward, 1 left: nonlinearity-between",
    ("wrong_bn_axis", ".keras"): "1: 1 left: unknown-shape",
    ("wrong_bn_axis", ".h5"): "1: 1 left: unknown-shape",
    # Keras 3 through TensorFlow: grappler multiplies the BN into the Conv weights before tf2onnx sees it
    ("clean", ".keras"): "2: 2 merged by TensorFlow",
    ("clean", ".h5"): "2: 2 folded",
}


def batchnorms(path: Path) -> int:
    return sum(n.op_type == "BatchNormalization" for n in onnx.load(path).graph.node)


def nothing_left_to_fold(path: Path) -> None:
    assert [d for d in analyze_model(load_model(path)) if d.outcome == "folded"] == []


def fold(src: Path, out: Path, *args: str):
    return CliRunner().invoke(cli, ["fold", str(src), str(out), *args])


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("name", NAMES)
def test_fold_leaves_nothing_foldable_and_matches_keras(tmp_path, name, suffix):
    src, out = SAMPLES / f"{name}{suffix}", tmp_path / f"{name}.onnx"
    result = fold(src, out)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"converted {src.name} with tf2onnx"]
    lines = result.stdout.splitlines()
    assert f"Keras BatchNormalization layers: {LAYER_OUTCOMES[name, suffix]}" in lines
    keras_part = lines[lines.index(f"against {src.name} in TensorFlow:"):]
    assert keras_part[-2] == "verified: 1 output within limits over 3 batches"
    assert lines[-1] == f"wrote {out}"
    nothing_left_to_fold(out)
    assert batchnorms(out) == (LEFT_IN_H5.get(name, 0) if suffix == ".h5" else 0)
    assert not list(tmp_path.glob(".bnfold-keras-*"))  # the converted model was scratch
    verify = CliRunner().invoke(cli, ["verify", str(src), str(out)])
    assert verify.exit_code == 0, verify.output


def test_verify_against_keras_fails_a_wrong_model(tmp_path):
    out = tmp_path / "m.onnx"
    assert fold(SAMPLES / "seed_mlp.keras", out).exit_code == 0
    model = onnx.load(out)
    weight = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    array = onnx.numpy_helper.to_array(weight).copy()
    array[0] *= 1.01
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    onnx.save(model, out)
    result = CliRunner().invoke(cli, ["verify", str(SAMPLES / "seed_mlp.keras"), str(out)])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == "MISMATCH: 1 of 1 output differ over 3 batches"


def test_legacy_h5_keeps_batchnorm_through_the_conversion_and_reports_it(tmp_path):
    out, report = tmp_path / "clean.onnx", tmp_path / "report.json"
    result = fold(SAMPLES / "clean.h5", out, "--report", str(report))
    assert result.exit_code == 0, result.output
    assert "folded 2/2 BatchNormalization: 2 backward into Conv" in result.stdout
    import json

    document = json.loads(report.read_text())
    assert document["verify_keras"]["ok"] is True and document["verify"]["ok"] is True
    assert document["keras_batchnorm_layers"] == {"batch_normalization": "folded", "batch_normalization_1": "folded"}
    assert "Keras BatchNormalization layers: 2: 2 folded" in result.stdout


MOBILENET = """
import sys
import numpy as np
if sys.argv[1].endswith(".h5"):
    import tf_keras as keras
else:
    import keras
keras.utils.set_random_seed(0)
model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
rng = np.random.default_rng(0)
for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
        gamma, beta, mean, var = layer.get_weights()
        layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                           rng.normal(0, 0.1, beta.shape).astype("float32"),
                           rng.normal(0, 0.5, mean.shape).astype("float32"),
                           rng.uniform(0.5, 2.0, var.shape).astype("float32")])
model.save(sys.argv[1])
"""


# Keras 3 through TensorFlow: grappler multiplies every BN that follows a plain Conv into its weights, and
# leaves the depthwise ones as Mul/Add for bnfold; tf_keras keeps every BN (tf2onnx's own fusion is off).
MOBILENET_OUTCOMES = {".keras": "52: 35 merged by TensorFlow, 17 folded", ".h5": "52: 52 folded"}


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_mobilenetv2_keras_folds_everything_and_matches_keras(tmp_path, suffix):
    src, out = tmp_path / f"mobilenetv2{suffix}", tmp_path / "mobilenetv2.onnx"
    subprocess.run([sys.executable, "-c", MOBILENET, str(src)], check=True, capture_output=True)
    result = fold(src, out)
    assert result.exit_code == 0, result.output
    assert f"Keras BatchNormalization layers: {MOBILENET_OUTCOMES[suffix]}" in result.stdout.splitlines()
    assert result.stdout.splitlines()[-2] == "verified: 1 output within limits over 3 batches"
    nothing_left_to_fold(out)
    assert batchnorms(out) == 0


def test_a_tf_keras_bn_fixed_in_training_mode_fails_against_keras_and_says_why(tmp_path):
    out = tmp_path / "m.onnx"
    result = fold(SAMPLES / "training_true.h5", out)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[-3] == "MISMATCH: 1 of 1 output differ over 3 batches"
    assert lines[-2] == ("BatchNormalization 'batch_normalization' is called with training=True: Keras normalizes "
                         "it with batch statistics, the ONNX with the moving ones (BN006)")
    assert lines[-1] == f"verification failed: {out} not written (--force writes it anyway)"
    assert not out.exists()


CONV_TRANSPOSE = """
import sys
import numpy as np
if sys.argv[1].endswith(".h5"):
    import tf_keras as keras
else:
    import keras
keras.utils.set_random_seed(0)
x = inputs = keras.Input((8, 8, 3), name="image")
x = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same")(x)
x = keras.layers.BatchNormalization()(x)
model = keras.Model(inputs, keras.layers.ReLU()(x), name="ct")
model.compile("sgd", "mse")
rng = np.random.default_rng(0)
model.fit(rng.random((8, 8, 8, 3)), rng.random((8, 16, 16, 4)), verbose=0)
model.save(sys.argv[1])
"""


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_conv2d_transpose_bn_folds_into_the_convtranspose(tmp_path, suffix):
    src, out = tmp_path / f"ct{suffix}", tmp_path / "ct.onnx"
    subprocess.run([sys.executable, "-c", CONV_TRANSPOSE, str(src)], check=True, capture_output=True)
    result = fold(src, out)
    assert result.exit_code == 0, result.output
    assert "Keras BatchNormalization layers: 1: 1 folded" in result.stdout.splitlines()
    assert [n.op_type for n in onnx.load(out).graph.node if n.op_type != "Transpose"] == ["ConvTranspose", "Relu"]
    lint = CliRunner().invoke(cli, ["lint", "--isolated", "--format", "json", str(src)])
    assert lint.exit_code == 1
    import json

    assert [(f["code"], f["node"]) for f in json.loads(lint.stdout)["findings"]] == [("BN001", "conv2d_transpose")]

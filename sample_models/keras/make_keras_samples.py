"""Small Keras models that show the BatchNormalization questions, saved as Keras 3 `.keras` and legacy `.h5`.

    pip install tensorflow-cpu tf_keras     # not needed to run the lint tests
    python sample_models/keras/make_keras_samples.py [OUT_DIR]

Each model is built twice from the same description: with Keras 3 (saved as NAME.keras) and with tf_keras,
the Keras 2 of TF_USE_LEGACY_KERAS=1 (saved as NAME.h5, in its own process, because a process imports one
Keras). Every model but untrained_statistics is trained for one epoch on seeded random data, so its moving
statistics are real ones. The expected findings are in sample_models/README.md and tests/test_keras_lint.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NAMES = ("seed_mlp", "cnn_bn_after_activation", "untrained_statistics", "dropout_before_bn", "bn_on_input",
         "wrong_bn_axis", "pytorch_momentum", "training_true", "clean")


def build(keras, name: str):
    L = keras.layers
    if name in ("seed_mlp", "untrained_statistics", "dropout_before_bn", "bn_on_input"):
        x = inputs = keras.Input((20,), name="features")
    else:
        x = inputs = keras.Input((16, 16, 3), name="image")
    if name == "seed_mlp":  # the classic MLP: every Dense keeps its bias, and BN sits on the logits
        for k in (1, 2):
            x = L.Dense(64, name=f"dense_{k}")(x)
            x = L.BatchNormalization(name=f"bn_{k}")(x)
            x = L.Activation("tanh")(x)
            x = L.Dropout(0.5)(x)
        x = L.Dense(2, name="dense_out")(x)
        x = L.BatchNormalization(name="bn_out")(x)
        x = L.Activation("softmax")(x)
    elif name == "cnn_bn_after_activation":
        for filters in (8, 16):
            x = L.Conv2D(filters, 3, padding="same", activation="relu")(x)
            x = L.BatchNormalization()(x)
        x = L.GlobalAveragePooling2D()(x)
        x = L.Dense(10, activation="softmax")(x)
    elif name == "untrained_statistics":
        x = L.Dense(32, use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.Dense(2, activation="softmax")(x)
    elif name == "dropout_before_bn":
        x = L.Dense(32, activation="relu")(x)
        x = L.Dropout(0.3)(x)
        x = L.BatchNormalization()(x)
        x = L.Dense(2, activation="softmax")(x)
    elif name == "bn_on_input":
        x = L.BatchNormalization()(x)
        x = L.Dense(32, activation="relu")(x)
        x = L.Dense(2, activation="softmax")(x)
    elif name == "wrong_bn_axis":  # axis=1 of a channels-last image is the height
        x = L.Conv2D(8, 3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization(axis=1)(x)
        x = L.Activation("relu")(x)
        x = L.GlobalAveragePooling2D()(x)
        x = L.Dense(10, activation="softmax")(x)
    elif name == "pytorch_momentum":  # momentum=0.1 is PyTorch's default, meant as 1 - Keras' momentum
        x = L.Conv2D(8, 3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization(momentum=0.1)(x)
        x = L.Activation("relu")(x)
        x = L.GlobalAveragePooling2D()(x)
        x = L.Dense(10, activation="softmax")(x)
    elif name == "training_true":  # training=True fixed in the graph: batch statistics in predict too
        x = L.Conv2D(8, 3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x, training=True)
        x = L.Activation("relu")(x)
        x = L.GlobalAveragePooling2D()(x)
        x = L.Dense(10, activation="softmax")(x)
    elif name == "clean":
        for filters in (8, 16):
            x = L.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = L.BatchNormalization()(x)
            x = L.Activation("relu")(x)
        x = L.GlobalAveragePooling2D()(x)
        x = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, x, name=name)


def make(keras, name: str, path: Path) -> None:
    import numpy as np

    keras.backend.clear_session()  # layer names start again at dense, dense_1, ... in every model
    keras.utils.set_random_seed(0)
    model = build(keras, name)
    if name != "untrained_statistics":
        model.compile("sgd", "sparse_categorical_crossentropy")
        shape = (64, *model.input_shape[1:])
        classes = model.output_shape[-1]
        rng = np.random.default_rng(0)
        model.fit(rng.standard_normal(shape).astype("float32"), rng.integers(0, classes, 64), batch_size=16,
                  epochs=1, verbose=0)
    model.save(path)


def main(out: Path, legacy: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if legacy:
        import tf_keras as keras

        for name in NAMES:
            make(keras, name, out / f"{name}.h5")
        return
    import keras

    for name in NAMES:
        make(keras, name, out / f"{name}.keras")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    subprocess.run([sys.executable, __file__, str(out), "--legacy"], check=True, env=env)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--legacy"]
    main(Path(args[0]) if args else Path(__file__).resolve().parent, "--legacy" in sys.argv[1:])

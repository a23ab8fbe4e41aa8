"""Export one small Keras network with tf2onnx, the two ways Keras models reach bnfold.

    pip install tensorflow-cpu tf2onnx tf_keras     # not needed to run the tests
    python sample_models/keras/export_keras.py

The network: Conv2D(use_bias=False)+BN+ReLU, DepthwiseConv2D+BN+ReLU6, SeparableConv2D+BN+ReLU, Dense+BN+ReLU,
a BN after that ReLU, and a Dense softmax head; trained for one epoch so the moving statistics are not 0/1.

- tf_keras_bn_kept.onnx: Keras 2 (TF_USE_LEGACY_KERAS=1) through tf2onnx with its own Conv+BN fusion switched
  off: BatchNormalization nodes after the Convs, and Dense's BN already decomposed into Mul+Add.
- keras3.onnx: Keras 3 through tf2onnx: no BatchNormalization node at all, every BN is Mul+Add.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FILES = ("tf_keras_bn_kept.onnx", "keras3.onnx")


def export(legacy: bool, path: Path) -> None:
    import numpy as np
    import tensorflow as tf
    import tf2onnx

    if legacy:
        import tf2onnx.optimizer.back_to_back_optimizer as back_to_back
        import tf_keras as keras

        # tf2onnx's Conv+BN fusion is the only step that removes BatchNormalization from the export.
        back_to_back._func_map.pop(("Conv", "BatchNormalization"), None)
    else:
        import keras
    np.random.seed(0)
    tf.random.set_seed(0)
    layers = keras.layers
    inputs = keras.Input((32, 32, 3), batch_size=1, name="x")
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)))
    x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)))
    x = layers.Activation("relu")(layers.BatchNormalization()(layers.SeparableConv2D(32, 3, padding="same")(x)))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.BatchNormalization()(layers.Activation("relu")(layers.BatchNormalization()(layers.Dense(64)(x))))
    outputs = layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "mse")
    model.fit(np.random.rand(16, 32, 32, 3), np.random.rand(16, 10), epochs=1, verbose=0)
    if not legacy:
        model.output_names = ["out"]
    spec = (tf.TensorSpec((1, 32, 32, 3), tf.float32, name="x"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(path))


def main(out: Path) -> None:
    # TF_USE_LEGACY_KERAS must be set before TensorFlow is imported: one process per export.
    for name, legacy in zip(FILES, (True, False)):
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1" if legacy else "0"}
        subprocess.run([sys.executable, __file__, "--one", name, str(out)], env=env, check=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        export(sys.argv[2] == FILES[0], Path(sys.argv[3]) / sys.argv[2])
    else:
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)

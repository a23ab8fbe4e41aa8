"""Keras through TensorFlow, in a process of its own: convert a Keras file to ONNX with tf2onnx, or run it.

    python -m bnfold.keras.convert convert MODEL OUT.onnx OPSET
    python -m bnfold.keras.convert run MODEL INPUTS.npz OUTPUTS.npz SEED

A process imports one Keras: `.keras` files load with Keras 3, `.h5`/`.hdf5` with tf_keras
(TF_USE_LEGACY_KERAS=1, set by `worker()` before TensorFlow is imported). Models load in Keras' safe mode and
without compiling. `run` writes the model's outputs (out0, out1, ...) and the same for the model with every
weight moved by one unit in the last place (noise0, ...): the rounding noise verification judges against.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bnfold.errors import InputError, RuntimeUnavailable

LEGACY_SUFFIXES = (".h5", ".hdf5")


def worker(*args: str, unsafe: bool = False) -> None:
    """Run this module's command in a fresh Python with the Keras the file needs; errors become one line."""
    model = Path(args[1])
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1" if model.suffix.lower() in LEGACY_SUFFIXES else "0",
               TF_CPP_MIN_LOG_LEVEL="3", BNFOLD_KERAS_UNSAFE="1" if unsafe else "0")
    proc = subprocess.run([sys.executable, "-m", "bnfold.keras.convert", *args], capture_output=True, text=True,
                          env=env)
    if proc.returncode == 0:
        return
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit code {proc.returncode}"
    if "No module named" in last:
        raise RuntimeUnavailable(f"{model.name}: converting Keras needs TensorFlow and tf2onnx "
                                 f"(pip install 'bnfold[keras]' tf_keras): {last}")
    raise RuntimeUnavailable(f"{model.name}: Keras/TensorFlow failed: {last}")


def _load(path: str):
    if Path(path).suffix.lower() in LEGACY_SUFFIXES:
        import tf_keras as keras

        return keras, keras.models.load_model(path, compile=False)
    import keras

    safe = os.environ.get("BNFOLD_KERAS_UNSAFE") != "1"
    return keras, keras.saving.load_model(path, compile=False, safe_mode=safe)


def _convert(path: str, out: str, opset: int) -> None:
    import tensorflow as tf
    import tf2onnx

    keras, model = _load(path)
    if Path(path).suffix.lower() in LEGACY_SUFFIXES:
        import tf2onnx.optimizer.back_to_back_optimizer as back_to_back

        # tf2onnx fuses Conv+BN itself and reports nothing: keep the BN so bnfold folds and reports each one
        back_to_back._func_map.pop(("Conv", "BatchNormalization"), None)
    else:
        model.output_names = [f"out{i}" for i in range(len(model.outputs))]
    spec = tuple(tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=_input_name(t, i))
                 for i, t in enumerate(model.inputs))
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, output_path=out)


def _run(path: str, inputs: str, outputs: str, seed: int) -> None:
    """Every batch of INPUTS.npz ("<batch>/<input name>") through the model, then again with its weights
    rounded once more; OUTPUTS.npz gets "<batch>/out<i>" and "<batch>/noise<i>"."""
    import numpy as np

    keras, model = _load(path)
    with np.load(inputs) as npz:
        arrays = {key: npz[key] for key in npz.files}
    batches = sorted({int(key.split("/")[0]) for key in arrays})
    results = {}

    def predict(prefix: str) -> None:
        for batch in batches:
            feeds = [arrays[f"{batch}/{_input_name(t, i)}"] for i, t in enumerate(model.inputs)]
            values = model(feeds if len(feeds) > 1 else feeds[0], training=False)
            for i, value in enumerate(values if isinstance(values, (list, tuple)) else [values]):
                results[f"{batch}/{prefix}{i}"] = np.asarray(value)

    predict("out")
    rng = np.random.default_rng([seed, 0x6E6F697365])
    weights = []
    for w in model.get_weights():
        if w.dtype.kind == "f":
            eps = np.finfo(w.dtype).eps
            w = (w * (1 + eps * (rng.integers(0, 2, w.shape) * 2 - 1))).astype(w.dtype)
        weights.append(w)
    model.set_weights(weights)
    predict("noise")
    np.savez(outputs, **results)


def _input_name(tensor, index: int) -> str:
    name = getattr(tensor, "name", "") or f"input_{index}"
    return name.split(":")[0]


def main(argv: list[str]) -> None:
    command, *rest = argv
    if command == "convert":
        _convert(rest[0], rest[1], int(rest[2]))
    elif command == "run":
        _run(rest[0], rest[1], rest[2], int(rest[3]))
    else:
        raise InputError(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Time `bnfold fold` of a Keras MobileNetV2 against loading it in Keras and converting it with tf2onnx alone.

    python bench/keras_fold_bench.py [--repeat 3] [--out-dir bench/out]

Needs `pip install '.[keras]'`. keras.applications.MobileNetV2(weights=None, 224x224) with random BN
statistics, saved as .keras (Keras 3) and .h5 (tf_keras). Per format, the median wall seconds of --repeat
fresh processes of:

- Keras' own load_model (the least any tool that opens the file with Keras pays);
- a plain tf2onnx conversion (tf2onnx.convert.from_keras, its defaults);
- `bnfold fold --no-verify` (conversion in a worker process, the fold, the write);
- `bnfold fold` (the same, then verification with onnxruntime and against the Keras model in TensorFlow).

The ratios divide by Keras' load time measured in the same run, so they survive a noisy machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lint_bench import timed

HERE = Path(__file__).resolve().parent

MODEL = """
import sys
import numpy as np
if sys.argv[2] == "legacy":
    import tf_keras as keras
else:
    import keras
keras.utils.set_random_seed(0)
model = keras.applications.MobileNetV2(weights=None)
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

LOAD = """
import sys
if sys.argv[2] == "legacy":
    import tf_keras as keras
else:
    import keras
keras.models.load_model(sys.argv[1], compile=False)
"""

TF2ONNX = LOAD.replace("keras.models.load_model(sys.argv[1], compile=False)", """
import tensorflow as tf
import tf2onnx
model = keras.models.load_model(sys.argv[1], compile=False)
spec = (tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32, name="input"),)
tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=sys.argv[3])
""")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out-dir", type=Path, default=HERE / "out")
    args = parser.parse_args(argv)
    models = args.out_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    bnfold = str(Path(py).with_name("bnfold"))
    lines = [f"`python bench/keras_fold_bench.py --repeat {args.repeat}`: keras.applications.MobileNetV2 "
             f"(weights=None, 224x224, random BN statistics); median of {args.repeat} fresh processes each.", "",
             "| format | command | seconds | × Keras load |", "|---|---|---:|---:|"]
    for suffix, flavour in ((".keras", "keras3"), (".h5", "legacy")):
        path = models / f"mobilenetv2{suffix}"
        if not path.exists():
            timed([py, "-c", MODEL, str(path), flavour], 1)
        out = args.out_dir / f"mobilenetv2{suffix}.onnx"
        rows = [("Keras load_model", [py, "-c", LOAD, str(path), flavour]),
                ("tf2onnx.convert.from_keras", [py, "-c", TF2ONNX, str(path), flavour, str(out)]),
                ("bnfold fold --no-verify", [bnfold, "fold", "--no-verify", str(path), str(out)]),
                ("bnfold fold (verified with onnxruntime and against Keras)", [bnfold, "fold", str(path), str(out)])]
        results = {label: timed(command, args.repeat)[0] for label, command in rows}
        floor = results["Keras load_model"]
        lines += [f"| {suffix} | {label} | {secs:.2f} | {secs / floor:.2f} |" for label, secs in results.items()]
    text = "\n".join(lines) + "\n"
    (args.out_dir / "keras_fold_results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Verify an ONNX model against the Keras model it came from, run in TensorFlow on the same inputs.

The criterion is verify's (criterion.py): error against the Keras output's scale, judged against the noise
of the Keras model with its weights rounded once more. The inputs are the ONNX model's (channels-last, as
tf2onnx keeps them), generated as `bnfold verify` generates them, and TensorFlow runs in its own process
(bnfold.keras.convert).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bnfold.verify import VerifyResult
from bnfold.verify.criterion import Tally
from bnfold.verify.inputs import load_npz, make_inputs
from bnfold.verify.runtime import OpenModel, first_line, run


def verify_against_keras(keras_path: Path, onnx_path: Path, *, shapes: dict | None = None,
                         inputs_npz: Path | None = None, batches: int = 3, seed: int = 0,
                         rtol: float | None = None, atol: float | None = None, unsafe: bool = False) -> VerifyResult:
    from bnfold.keras.convert import worker

    session = OpenModel(onnx_path).session()
    if inputs_npz is not None:
        feeds = [load_npz(Path(inputs_npz), session, first_line)]
    else:
        feeds = [make_inputs(session, shapes or {}, seed, batch) for batch in range(batches)]
    names = [out.name for out in session.get_outputs()]
    tallies = [Tally(name, rtol=rtol, atol=atol) for name in names]
    with tempfile.TemporaryDirectory(prefix="bnfold-keras-") as scratch:
        ins, outs = Path(scratch) / "inputs.npz", Path(scratch) / "outputs.npz"
        np.savez(ins, **{f"{b}/{name}": value for b, batch in enumerate(feeds) for name, value in batch.items()})
        worker("run", str(keras_path), str(ins), str(outs), str(seed), unsafe=unsafe)
        with np.load(outs) as npz:
            keras_values = {key: npz[key] for key in npz.files}
    for b, batch in enumerate(feeds):
        got = run(session, batch, onnx_path)
        for i, (name, tally) in enumerate(zip(names, tallies)):
            tally.add(keras_values[f"{b}/out{i}"], got[name])
            if rtol is None and atol is None:
                tally.add_noise(keras_values[f"{b}/out{i}"], keras_values[f"{b}/noise{i}"])
    return VerifyResult([t.result() for t in tallies], len(feeds), noise_runs=1 if rtol is None and atol is None
                        else 0)

"""Keras model files (.keras, .h5, .hdf5) read as data and lowered into the IR the lint rules use.

    model = load_keras(Path("model.keras"))    # an onnx_ir.Model; no TensorFlow, no Keras, no layer code run

Importing this package is cheap: the reader and the lowering (h5py, onnx-ir) load inside load_keras.
"""

from __future__ import annotations

from pathlib import Path

from bnfold.errors import InputError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")

__all__ = ["KERAS_SUFFIXES", "is_keras_path", "load_keras", "read_keras", "refuse_keras"]


def is_keras_path(path: Path) -> bool:
    return Path(path).suffix.lower() in KERAS_SUFFIXES


def refuse_keras(path: Path, command: str) -> None:
    """One message wherever a Keras file is given where only ONNX can go."""
    if is_keras_path(path):
        name = Path(path).name
        raise InputError(f"{name} is a Keras model: `bnfold {command}` needs ONNX here "
                         f"(`bnfold fold {name} OUT.onnx` converts and folds it)")


_CONFIG_ERRORS = (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError)


def load_keras(path: Path):
    from bnfold.keras.lower import lower

    keras_file, graph = read_keras(path)
    try:
        return lower(graph, keras_file, str(keras_file.config.get("config", {}).get("name", path.stem)))
    except _CONFIG_ERRORS as exc:
        raise _config_error(path, exc) from None


def read_keras(path: Path):
    """The file (config and variables, as data) and its parsed layer graph; InputError for a config that is
    not a model."""
    from bnfold.keras.files import KerasFile
    from bnfold.keras.graph import parse

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    keras_file = KerasFile(path)
    try:
        return keras_file, parse(keras_file.config)
    except _CONFIG_ERRORS as exc:
        raise _config_error(path, exc) from None


def _config_error(path: Path, exc: Exception) -> InputError:
    return InputError(f"{path.name}: cannot read the Keras model config ({type(exc).__name__}: {exc})")

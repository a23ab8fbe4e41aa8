"""Read a Keras file as data: its model config (JSON) and its weights (HDF5), never its code.

- `.keras` (Keras 3): a zip of config.json, model.weights.h5 and metadata.json. A layer's variables are at
  layers/<key>/vars/0..n, <key> the snake_case class name with a counter; the group's `name` attribute
  (Keras >= 3.6) is the layer's own name. Nested models nest: layers/<model key>/layers/<key>/vars.
- `.h5` / `.hdf5` (tf.keras 2.x, tf_keras, Keras 2): the `model_config` attribute, and model_weights/<layer>/
  with a `weight_names` attribute listing <layer>/<variable>:0 datasets in order.

Only core dependencies (zipfile, json, h5py, numpy): no TensorFlow, no Keras, nothing executed.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from bnfold.errors import InputError


class KerasFile:
    """The config of a Keras model file and lazy access to its variables, by layer name."""

    def __init__(self, path: Path) -> None:
        import h5py

        self.path = path
        self._h5 = None
        try:
            if path.suffix.lower() == ".keras":
                self._archive = zipfile.ZipFile(path)
                _check_members(path, self._archive)
                self.config = json.loads(self._archive.read("config.json"))
                self.format = "keras3"
                if "model.weights.h5" in self._archive.namelist():
                    self._h5 = h5py.File(_member(path, self._archive, "model.weights.h5"), "r")
                self._paths = _keras3_variables(self._h5) if self._h5 is not None else {}
            else:
                self._h5 = h5py.File(path, "r")
                raw = self._h5.attrs.get("model_config")
                if raw is None:
                    raise InputError(f"{path.name} has no model_config: it holds weights only, not a model")
                self.config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
                self.format = "legacy"
                group = self._h5["model_weights"] if "model_weights" in self._h5 else self._h5
                self._paths = _legacy_variables(group)
        except InputError:
            raise
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise InputError(f"{path.name} is not a readable Keras model ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})".replace(": )", ")")) from None

    def variables(self, layer: str) -> list[tuple[str, tuple[int, ...]]]:
        """(variable name, shape) of a layer's stored variables, in order; legacy files name them, Keras 3
        files number them."""
        return [(name, tuple(self._h5[path].shape)) for name, path in self._paths.get(layer, [])]

    def read(self, layer: str, index: int) -> np.ndarray:
        return np.asarray(self._h5[self._paths[layer][index][1]])


# A model config is JSON text: even a very large model's is a few MB. More is a zip bomb, not a model.
CONFIG_LIMIT = 64 << 20


def _check_members(path: Path, archive: zipfile.ZipFile) -> None:
    """Refuse an archive Keras would unpack outside its folder, or whose config would not fit in memory."""
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        if name.startswith("/") or ".." in name.split("/") or ":" in name.split("/")[0]:
            raise InputError(f"{path.name}: archive member {info.filename!r} points outside the archive; refusing it")
    if "config.json" in archive.namelist() and archive.getinfo("config.json").file_size > CONFIG_LIMIT:
        size = archive.getinfo("config.json").file_size
        raise InputError(f"{path.name}: config.json unpacks to {size >> 20} MiB (at most {CONFIG_LIMIT >> 20} MiB "
                         "for a model config); refusing it")


class _Window(io.RawIOBase):
    """A read-only view of bytes [start, start + size) of a file: h5py reads a stored zip member in place,
    seeking to just the variables a rule asks for, instead of the whole member being read into memory."""

    def __init__(self, path: Path, start: int, size: int) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - lives as long as the h5py.File reading it
        self._start, self._size, self._pos = start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        count = max(0, min(len(buffer), self._size - self._pos))
        self._file.seek(self._start + self._pos)
        data = self._file.read(count)
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._file.close()
        super().close()


def _member(path: Path, archive: zipfile.ZipFile, name: str):
    """A seekable file object for one zip member: in place when stored (Keras does not compress it)."""
    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        return io.BytesIO(archive.read(name))
    with open(path, "rb") as raw:
        raw.seek(info.header_offset)
        header = raw.read(30)
        if header[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"bad local header for {name}")
        name_length, extra_length = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
    return _Window(path, info.header_offset + 30 + name_length + extra_length, info.file_size)


def _keras3_variables(h5, prefix: str = "", group=None) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    group = h5 if group is None else group
    layers = group.get("layers")
    if layers is None:
        return found
    for key in layers:
        child = layers[key]
        variables = child.get("vars")
        name = variables.attrs.get("name", key) if variables is not None else key
        name = name.decode() if isinstance(name, bytes) else str(name)
        if variables is not None and len(variables):
            order = sorted(variables, key=int)
            found[prefix + name] = [(str(i), variables[i].name) for i in order]
        found.update(_keras3_variables(h5, f"{prefix}{name}/", child))
    return found


def _legacy_variables(group) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for layer in group:
        names = group[layer].attrs.get("weight_names", [])
        for raw in names:
            weight = raw.decode() if isinstance(raw, bytes) else str(raw)
            owner, _, variable = weight.rpartition("/")
            # a nested model stores its layers' weights under its own group: <model>/<layer>/<var>:0
            key = layer if owner in ("", layer) else f"{layer}/{owner.split('/')[-1]}"
            found.setdefault(key, []).append((variable.split(":")[0], group[layer][weight].name))
    return found

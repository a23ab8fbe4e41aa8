"""Load and save ONNX models safely: clear errors for bad input, atomic writes, layout kept.

A model whose weights live in external data is written with external data again (the data file named
after the output), and a single-file model stays a single file.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
from pathlib import Path

import onnx

from bnfold.errors import InputError, OutputError
from bnfold.self_mapped import read_self_mapped
from bnfold.single_file import save_single_file
from bnfold.validate import validate


def _tensors(proto: onnx.ModelProto):
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(proto)


def _check_external_data(proto: onnx.ModelProto, path: Path) -> list[Path]:
    """The external data files the model reads, each confined to the model's folder."""
    folder = path.parent.resolve()
    files = []
    for tensor in _tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not location or os.path.isabs(location) or not target.is_relative_to(folder):
            raise InputError(f"{path}: tensor '{tensor.name}' points at external data outside the model's "
                             f"folder ({location!r}); refusing to read it")
        if not target.is_file():
            raise InputError(f"{path}: external data file {location!r} of tensor '{tensor.name}' is missing")
        files.append(target)
    return files


def read_proto(path: Path, *, map_weights: bool = False) -> tuple[onnx.ModelProto, list[Path]]:
    """The ModelProto without its external data loaded, and the external data files it uses (never the
    model's own file). `map_weights`: a single file's large initializers become external data pointing into
    the file itself (bnfold.self_mapped), so they are memory-mapped like external data, not held in memory."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    proto = read_self_mapped(path) if map_weights else None
    if proto is None:
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf raises several unrelated types for a corrupt file
            raise InputError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    if not proto.HasField("graph"):
        raise InputError(f"{path}: not an ONNX model (no graph)")
    files = [f for f in dict.fromkeys(_check_external_data(proto, path)) if f != path.resolve()]
    validate(proto, path)
    return proto, files


def load_model(path: Path, *, untype_maps: bool = False):
    """The model as an onnx_ir.Model; external data is memory-mapped, not read. `untype_maps` drops the
    type of map-typed values (an ONNX-ML classifier's ZipMap output), which onnx-ir cannot represent: fine
    for reading the graph (lint), not for writing it back."""
    return load_model_and_data(path, untype_maps=untype_maps)[0]


def _untype_maps(graph: onnx.GraphProto) -> None:
    def has_map(tp: onnx.TypeProto) -> bool:
        kind = tp.WhichOneof("value")
        if kind == "map_type":
            return True
        inner = {"sequence_type": lambda: tp.sequence_type.elem_type,
                 "optional_type": lambda: tp.optional_type.elem_type}.get(kind)
        return inner is not None and has_map(inner())

    for info in (*graph.input, *graph.output, *graph.value_info):
        if info.HasField("type") and has_map(info.type):
            info.ClearField("type")
    for node in graph.node:
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                _untype_maps(sub)


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def load_model_and_data(path: Path, *, untype_maps: bool = False):
    """The model, and the external data files it reads."""
    import onnx_ir as ir

    proto, data_files = read_proto(path, map_weights=True)
    if untype_maps:
        _untype_maps(proto.graph)
    try:
        model = ir.serde.deserialize_model(proto)
    except Exception as exc:
        raise InputError(f"{path}: cannot be read as an ONNX graph: {_root_cause(exc)}") from None
    ir.external_data.set_base_dir(model.graph, str(path.parent))
    model.meta[_SOURCE] = str(path.resolve())
    return model, data_files


# model.meta key: the file the model was loaded from, whose own bytes its mapped initializers read
_SOURCE = "bnfold.source"


def has_external_data(model) -> bool:
    """Whether the model was loaded with weights in other files than its own (an initializer mapped from
    the single file itself does not count: that model is written as a single file again)."""
    import onnx_ir as ir

    source = model.meta.get(_SOURCE)
    return any(isinstance(v.const_value, ir.ExternalTensor) and str(Path(v.const_value.path).resolve()) != source
               for g in model.graphs() for v in g.initializers.values())


def _release_previous():
    """An ir.save callback (called before each tensor is written) that unmaps the tensor written before it:
    saving a model larger than memory then keeps one tensor's pages resident, not the whole file's."""
    import onnx_ir as ir

    previous = []

    def callback(tensor, _info) -> None:
        if previous and isinstance(previous[0], ir.ExternalTensor):
            previous[0].release()
        previous[:] = [tensor]

    return callback


class StagedModel:
    """A model written beside its destination, moved into place by commit() or deleted by discard()."""

    def __init__(self, model, destination: Path, *, external_data: bool, unchanged_from: Path | None = None,
                 keep: tuple[Path, ...] = ()) -> None:
        """`unchanged_from`: the single-file model `model` was loaded from, left as it was: copy its bytes.
        `keep`: files (the input's data) that commit() must not remove even if they are named after OUT."""
        import onnx_ir as ir

        self.destination = destination
        folder = destination.parent
        if not folder.is_dir():
            raise OutputError(f"{destination}: folder {folder} does not exist")
        self._dir = _scratch_dir(f".{destination.name}.", folder)
        self.path = self._dir / destination.name
        # A data file name no file has: publishing it cannot touch the data an existing OUT (or IN, in place)
        # reads, and the model's rename is the one step that switches from the old files to the new.
        self.data_name = claim_data_name(destination) if external_data else None
        self._committed = False
        self._keep = {path.resolve() for path in keep}
        try:
            if unchanged_from is not None and not external_data:
                shutil.copyfile(unchanged_from, self.path)
            elif external_data:
                ir.save(model, self.path, external_data=self.data_name, callback=_release_previous())
            else:
                save_single_file(model, self.path)
        except Exception:
            self.discard()
            raise

    def commit(self) -> None:
        # Data first, under its new name: a reader that sees the new model file finds the data it points at,
        # and one that still sees the old model file still finds the old data.
        if self.data_name and (self._dir / self.data_name).exists():
            _publish(self._dir / self.data_name, self.destination.parent / self.data_name)
        _publish(self.path, self.destination)
        # What the old OUT read, and what a killed run published but never switched to, goes now.
        for old in _own_data_files(self.destination):
            if old.name != self.data_name and old.resolve() not in self._keep:
                old.unlink(missing_ok=True)
        self._committed = True
        self.discard()

    def discard(self) -> None:
        if self.data_name and not self._committed:  # the claimed name, still an empty placeholder
            (self.destination.parent / self.data_name).unlink(missing_ok=True)
        _release_scratch(self._dir)


def claim_data_name(destination: Path) -> str:
    """`OUT.data`, or `OUT.1.data`, `OUT.2.data`... : the first name no file in OUT's folder has, claimed by
    creating it empty, so a concurrent fold into the same OUT picks another."""
    for name in [f"{destination.name}.data"] + [f"{destination.name}.{k}.data" for k in range(1, 1000)]:
        try:
            os.close(os.open(destination.parent / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"{destination.parent}: cannot write there ({exc.strerror})") from None
        return name
    raise OutputError(f"{destination}: 1000 data files named after it already exist; remove them")


def _own_data_files(destination: Path) -> list[Path]:
    """The data files bnfold names after OUT (OUT.data, OUT.<k>.data) that exist. Any other file an old OUT
    read may be shared with other models, and is left alone."""
    own = re.compile(re.escape(destination.name) + r"(\.[1-9][0-9]{0,2})?\.data")
    try:
        names = os.listdir(destination.parent)
    except OSError:
        return []
    return [destination.parent / name for name in sorted(names) if own.fullmatch(name)
            and (destination.parent / name).is_file()]


try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: scratch folders are not locked, abandoned ones stay
    fcntl = None

# The scratch folders of runs in progress, each held by an exclusive lock on its LOCK file (path -> handle).
_HELD: dict[Path, object] = {}
LOCK = ".lock"


def _scratch_dir(prefix: str, folder: Path) -> Path:
    """A private folder beside the output, so the final rename stays on one file system. It is locked while
    this run uses it; one a killed run left behind (its lock free) is removed first."""
    _remove_abandoned(folder, prefix)
    try:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=folder))
        handle = open(path / LOCK, "w")  # noqa: SIM115 - held until the folder is released
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write there ({exc.strerror})") from None
    if fcntl is not None:
        fcntl.flock(handle, fcntl.LOCK_EX)
    _HELD[path] = handle
    return path


def _release_scratch(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    handle = _HELD.pop(path, None)
    if handle is not None:
        handle.close()


def _remove_abandoned(folder: Path, prefix: str) -> None:
    """Scratch folders with this prefix whose lock no process holds: what a killed run left (a concurrent
    run holds its lock, so its folder stays). Without flock (Windows) nothing is removed."""
    if fcntl is None:
        return
    for candidate in folder.glob(f"{glob.escape(prefix)}*"):
        lock = candidate / LOCK
        if not candidate.is_dir() or not lock.is_file():
            continue
        try:
            with open(lock, "r+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(candidate, ignore_errors=True)
        except OSError:
            continue


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(staged: Path, destination: Path) -> None:
    """Rename into place with the mode the file had, or else the one a plainly created file would get
    (temp files are private)."""
    mode = destination.stat().st_mode & 0o7777 if destination.exists() else 0o666 & ~_umask()
    os.chmod(staged, mode)
    os.replace(staged, destination)


def check_destination(model_in: Path, external_files: list[Path], model_out: Path, *, in_place: bool) -> None:
    """Refuse an OUT (or its OUT.data) that would clobber IN or IN's external data."""
    out, data = model_out.resolve(), model_out.resolve().with_name(f"{model_out.name}.data")
    inputs = {model_in.resolve(), *external_files}
    replacing_input = out == model_in.resolve()
    if replacing_input and in_place:
        # IN and its data are staged and renamed over only after the new files are complete.
        inputs -= {out, data}
    for target in (out, data):
        if target in inputs:
            hint = " (or pass --in-place)" if replacing_input else ""
            raise OutputError(f"writing {model_out} would overwrite {target.name}, which {model_in.name} reads; "
                              f"choose another OUT{hint}")


def check_side_outputs(outputs: dict[str, Path | None], protected: dict[Path, str]) -> None:
    """Refuse a report or other side file (`outputs`: option -> path) that would replace a file bnfold reads or
    writes as a model (`protected`: path -> what it is), or another side file."""
    claimed: dict[Path, str] = {}
    for path, what in protected.items():  # the last description of a path wins
        claimed[path.resolve()] = what
    for option, path in outputs.items():
        if path is None:
            continue
        what = claimed.get(path.resolve())
        if what is not None:
            raise OutputError(f"{option} {path} is {what}: choose another file")
        claimed[path.resolve()] = f"also given to {option}"


class TensorSpill:
    """A scratch data file beside the output for folded weights of an external-data model: each one is
    written out as soon as it is computed and read back (memory-mapped) only while the output is saved,
    so a model larger than memory folds in memory proportional to its largest tensor."""

    # Smaller tensors (biases) are not worth a file round trip.
    MIN_BYTES = 1 << 20

    def __init__(self, folder: Path) -> None:
        self._dir = _scratch_dir(".bnfold-spill.", folder)
        self._path = self._dir / "folded.data"
        self._file = open(self._path, "wb")

    def store(self, array, name: str, dtype):
        import onnx_ir as ir

        if array.nbytes < self.MIN_BYTES:
            return ir.Tensor(array, dtype=dtype, name=name)
        offset = self._file.tell()
        array.tofile(self._file)
        self._file.flush()
        return ir.ExternalTensor(self._path.name, offset, array.nbytes, dtype, shape=ir.Shape(array.shape),
                                 name=name, base_dir=str(self._dir))

    def close(self) -> None:
        self._file.close()
        _release_scratch(self._dir)

    def __enter__(self) -> "TensorSpill":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        _publish(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

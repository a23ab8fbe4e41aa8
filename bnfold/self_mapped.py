"""Read a single-file model without holding its weights in memory: large initializers become external data
that points into the .onnx file itself.

`onnx.load` reads the whole file and then parses it, so for a while the process holds the file's bytes and
a protobuf copy of every weight (2x the model), and the copy stays for as long as the model does. Here the
file is memory-mapped and only the protobuf framing is walked: every top-level initializer whose raw data
is at least MIN_BYTES is rewritten as a TensorProto with `data_location: EXTERNAL`, location = the model's
own file name and the offset/length of its raw bytes in it. onnx-ir then maps each such tensor when it is
read and unmaps it when released, as it does for external data, and the graph skeleton parsed by protobuf
is small. A file whose framing this walk does not follow (groups, a length past the end) is left to
`onnx.load`, whose error the caller reports.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import onnx

from bnfold.single_file import varint

# Smaller tensors (biases, BN vectors) stay inline: not worth a mapping each.
MIN_BYTES = 1 << 20

# Field numbers: ModelProto.graph, GraphProto.initializer, TensorProto.raw_data / external_data /
# data_location, StringStringEntryProto.key / value.
_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5
_TENSOR_RAW_DATA, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 9, 13, 14


_T = onnx.TensorProto
# Element sizes of the types mapped; any other type (strings, packed 4-bit, float8) stays inline.
_ITEMSIZE = {_T.FLOAT: 4, _T.DOUBLE: 8, _T.FLOAT16: 2, _T.BFLOAT16: 2, _T.INT8: 1, _T.UINT8: 1, _T.INT16: 2,
             _T.UINT16: 2, _T.INT32: 4, _T.UINT32: 4, _T.INT64: 8, _T.UINT64: 8}


class _Unfollowed(Exception):
    """The framing is not what this walk handles; onnx.load decides."""


def _varint(data, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Unfollowed
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data, start: int, end: int):
    """(field number, wire type, field start, value start, value end) of each field in data[start:end]."""
    pos = start
    while pos < end:
        first = pos
        tag, pos = _varint(data, pos, end)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, value_end = _varint(data, pos, end)
        elif wire == 1:
            value_end = pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            value_end = pos + length
        elif wire == 5:
            value_end = pos + 4
        else:
            raise _Unfollowed
        if value_end > end or field == 0:
            raise _Unfollowed
        yield field, wire, first, pos, value_end
        pos = value_end


def _delimited(field: int, payload: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def _entry(key: str, value: str) -> bytes:
    return _delimited(_TENSOR_EXTERNAL_DATA, _delimited(1, key.encode()) + _delimited(2, value.encode()))


def _tensor(data, start: int, end: int, location: str) -> tuple[bytes, bool]:
    """The TensorProto in data[start:end], its large raw data replaced by a reference into the file."""
    raw = None
    kept = bytearray()
    for field, wire, first, value_start, value_end in _fields(data, start, end):
        if field == _TENSOR_RAW_DATA and wire == 2 and value_end - value_start >= MIN_BYTES:
            raw = (value_start, value_end)
        elif field in (_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION):
            return bytes(data[start:end]), False  # already external (or odd): as it is
        else:
            kept += data[first:value_end]
    if raw is None:
        return bytes(data[start:end]), False
    header = onnx.TensorProto.FromString(bytes(kept))
    count = 1
    for dim in header.dims:
        count *= dim
    if header.HasField("segment") or min(header.dims, default=0) < 0 \
            or count * _ITEMSIZE.get(header.data_type, 0) != raw[1] - raw[0]:
        return bytes(data[start:end]), False  # validation reports it as the raw data it is
    kept += _entry("location", location) + _entry("offset", str(raw[0])) + _entry("length", str(raw[1] - raw[0]))
    kept += varint(_TENSOR_DATA_LOCATION << 3) + varint(onnx.TensorProto.EXTERNAL)
    return bytes(kept), True


def _graph(data, start: int, end: int, location: str) -> tuple[bytes, bool]:
    out = bytearray()
    mapped = False
    for field, wire, first, value_start, value_end in _fields(data, start, end):
        if field == _GRAPH_INITIALIZER and wire == 2:
            tensor, hit = _tensor(data, value_start, value_end, location)
            out += _delimited(_GRAPH_INITIALIZER, tensor)
            mapped = mapped or hit
        else:
            out += data[first:value_end]
    return bytes(out), mapped


def read_self_mapped(path: Path) -> onnx.ModelProto | None:
    """The model with its large initializers pointing into `path` itself, or None when none is large
    enough or the framing is not followed (the caller then uses onnx.load)."""
    with open(path, "rb") as handle:
        try:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):  # an empty file cannot be mapped
            return None
    try:
        out = bytearray()
        mapped = False
        for field, wire, first, value_start, value_end in _fields(data, 0, len(data)):
            if field == _MODEL_GRAPH and wire == 2:
                graph, hit = _graph(data, value_start, value_end, path.name)
                out += _delimited(_MODEL_GRAPH, graph)
                mapped = mapped or hit
            else:
                out += data[first:value_end]
        if not mapped:
            return None
        proto = onnx.ModelProto()
        proto.ParseFromString(bytes(out))
        return proto
    except _Unfollowed:
        return None
    except Exception:  # noqa: BLE001 - protobuf raises several types for bytes it rejects: onnx.load decides
        return None
    finally:
        data.close()

"""Write an onnx_ir.Model as one .onnx file holding one tensor's bytes in memory at a time.

onnx.save(ir.to_proto(model)) keeps the loaded weights, a protobuf copy of all of them and the serialized
bytes alive together; this writer frames the protobuf by hand instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx


def varint(number: int) -> bytes:
    """A protobuf varint (also used by bnfold.self_mapped to re-frame what it reads)."""
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | (0x80 if number else 0))
        if not number:
            return bytes(out)


# Wire tags (field number << 3 | length-delimited) of ModelProto.graph and GraphProto.initializer.
_MODEL_GRAPH_TAG = varint(7 << 3 | 2)
_GRAPH_INITIALIZER_TAG = varint(5 << 3 | 2)


# TensorProto.raw_data's wire tag; float tensors computed by the fold are framed around their own buffer.
_RAW_DATA_TAG = varint(9 << 3 | 2)


def _tensor_chunks(value) -> list:
    """The serialized TensorProto of an initializer, as byte chunks to write in order: an unchanged tensor is
    re-emitted as read, a folded float tensor's raw data is its numpy buffer itself (no copy)."""
    import onnx_ir as ir

    tensor = value.const_value
    if isinstance(tensor, ir.serde.TensorProtoTensor) and tensor.raw.name == value.name \
            and not tensor.metadata_props:
        return [tensor.raw.SerializeToString()]
    if isinstance(tensor, ir.Tensor) and sys.byteorder == "little" and not tensor.metadata_props \
            and tensor.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE):
        header = onnx.TensorProto(name=value.name, data_type=tensor.dtype.value, dims=tensor.shape.numpy())
        data = memoryview(np.ascontiguousarray(tensor.numpy())).cast("B")
        return [header.SerializeToString(), _RAW_DATA_TAG, varint(data.nbytes), data]
    if isinstance(tensor, ir.ExternalTensor):
        # A single file holds every byte: external data (or the input's own mapped bytes) is copied in from
        # the mapping, which the caller releases once written.
        header = onnx.TensorProto(name=value.name, data_type=tensor.dtype.value, dims=tensor.shape.numpy())
        plain = sys.byteorder == "little" and tensor.dtype.bitwidth >= 8 and tensor.dtype != ir.DataType.STRING
        data = memoryview(tensor.numpy()).cast("B") if plain else tensor.tobytes()
        return [header.SerializeToString(), _RAW_DATA_TAG, varint(len(data)), data]
    proto = ir.serde.serialize_tensor(tensor)
    proto.name = value.name
    return [proto.SerializeToString()]


def save_single_file(model, path: Path) -> None:
    """onnx.save(ir.to_proto(model)) without a second in-memory copy of every weight.

    The graph is serialized without its initializers, then each initializer is appended as its own
    ModelProto{graph{initializer}} fragment, hand-framed: protobuf merges a repeated message field's repeated
    fields by appending, so the file parses to the same model while one tensor at a time is serialized.
    """
    import onnx_ir as ir

    graph = model.graph
    initializers = list(graph.initializers.values())
    graph.initializers.clear()
    try:
        skeleton = ir.to_proto(model).SerializeToString()
    finally:
        for value in initializers:
            graph.register_initializer(value)
    with open(path, "wb") as handle:
        handle.write(skeleton)
        for value in initializers:
            _write_initializer(handle, value)
            if isinstance(value.const_value, ir.ExternalTensor):
                value.const_value.release()  # its pages leave RSS: one tensor's resident at a time


def _write_initializer(handle, value) -> None:
    """One ModelProto{graph{initializer}} fragment (the views of a mapped tensor end with this call)."""
    chunks = _tensor_chunks(value)
    tensor_size = sum(len(c) if isinstance(c, bytes) else c.nbytes for c in chunks)
    size = varint(tensor_size)
    handle.write(_MODEL_GRAPH_TAG)
    handle.write(varint(len(_GRAPH_INITIALIZER_TAG) + len(size) + tensor_size))
    handle.write(_GRAPH_INITIALIZER_TAG)
    handle.write(size)
    for chunk in chunks:
        handle.write(chunk)

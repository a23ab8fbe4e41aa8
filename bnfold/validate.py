"""What every command checks on a model before anything reads it as a graph: a malformed or hostile file
gets one line naming the file, the node or tensor, and the problem (exit 2), never a traceback, a hang or an
allocation it asks for.

- versions: an IR version and a default-domain opset that onnx defines (opset 7 on: BatchNormalization
  before it had other attributes and semantics);
- tensors (initializers, Constant values, tensor attributes, in every graph): a known data type,
  non-negative dims, and data whose length matches dims and dtype (raw bytes, typed fields, or the external
  file's range);
- graphs: names that are UTF-8 text, no value produced twice, no input that nothing produces (outer scopes count for a subgraph), no
  graph output that nothing produces, no cycle;
- every attribute typed (onnx-ir cannot write an untyped one back); each op of the default domain as its schema
  at the model's opset has it: attributes of the right type,
  required inputs present;
- parameters an op needs (when they are initializers): BatchNormalization's four vectors 1-D, of one length
  and of a float type; a Conv / ConvTranspose weight of rank >= 3 whose channels divide by `group`, and a
  bias of the matching length; a Gemm weight of rank 2;
- memory: a ConstantOfShape or Expand with a constant shape that would make a tensor over
  MATERIALIZE_LIMIT bytes (a 300-byte file can ask for 64 GiB).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import onnx
from onnx import TensorProto

from bnfold.errors import InputError

MIN_OPSET = 7
MATERIALIZE_LIMIT = 1 << 30

# The typed field each data type stores its values in, and how many values one element takes there.
_FIELDS = {
    TensorProto.FLOAT: ("float_data", 1), TensorProto.COMPLEX64: ("float_data", 2),
    TensorProto.DOUBLE: ("double_data", 1), TensorProto.COMPLEX128: ("double_data", 2),
    TensorProto.INT64: ("int64_data", 1), TensorProto.UINT32: ("uint64_data", 1),
    TensorProto.UINT64: ("uint64_data", 1), TensorProto.STRING: ("string_data", 1),
}
_ATTR_TYPES = frozenset(onnx.AttributeProto.AttributeType.values())
_FLOATS = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16})


def validate(proto: onnx.ModelProto, path: Path) -> None:
    """Raise InputError naming `path` and the problem; None when the model is well formed."""
    try:
        _Validator(proto, path).run()
    except _Invalid as exc:
        raise InputError(f"{path}: {exc}") from None


class _Invalid(Exception):
    pass


def _bitwidth(data_type: int) -> int | None:
    """Bits per element, None for strings; raises _Invalid for an unknown type."""
    import onnx_ir as ir

    try:
        dtype = ir.DataType(data_type)
    except ValueError:
        raise _Invalid(f"unknown data type {data_type}") from None
    if dtype == ir.DataType.UNDEFINED:
        raise _Invalid("data type UNDEFINED")
    return None if dtype == ir.DataType.STRING else dtype.bitwidth


class _Validator:
    def __init__(self, proto: onnx.ModelProto, path: Path) -> None:
        self.proto = proto
        self.path = path

    def run(self) -> None:
        _text(self.proto, "the model")
        self._versions()
        self._graph(self.proto.graph, frozenset(), "main graph")

    def _versions(self) -> None:
        ir_version = self.proto.ir_version
        if not 3 <= ir_version <= onnx.IR_VERSION:
            raise _Invalid(f"IR version {ir_version} is not one onnx {onnx.__version__} reads (3 to {onnx.IR_VERSION})")
        newest = onnx.defs.onnx_opset_version()
        self.opset = newest
        for opset in self.proto.opset_import:
            if opset.domain in ("", "ai.onnx"):
                if not MIN_OPSET <= opset.version <= newest:
                    raise _Invalid(f"opset {opset.version} of the default domain is outside {MIN_OPSET} to {newest}")
                self.opset = opset.version

    # ---------------------------------------------------------------------------------------------------
    # tensors

    def _tensor(self, tensor: TensorProto, what: str) -> None:
        dims = tuple(tensor.dims)
        if any(d < 0 for d in dims):
            raise _Invalid(f"{what} has negative dims {list(dims)}")
        if tensor.HasField("segment"):
            raise _Invalid(f"{what} is segmented, which bnfold does not read")
        bits = _bitwidth(tensor.data_type)
        count = math.prod(dims)
        if tensor.data_location == TensorProto.EXTERNAL:
            self._external(tensor, what, count, bits)
        elif tensor.HasField("raw_data"):
            if bits is None:
                raise _Invalid(f"{what} is a string tensor with raw data")
            expected = -(-count * bits // 8)
            if len(tensor.raw_data) != expected:
                raise _Invalid(f"{what} has {len(tensor.raw_data)} bytes of data; its dims {list(dims)} need "
                               f"{expected}")
        else:
            field, per = _FIELDS.get(tensor.data_type, ("int32_data", 1))
            # 4-bit and 2-bit types are packed, one byte per int32_data entry
            expected = -(-count * bits // 8) if bits is not None and bits < 8 else count * per
            got = len(getattr(tensor, field))
            if got != expected:
                raise _Invalid(f"{what} has {got} values in {field}; its dims {list(dims)} need {expected}")

    def _external(self, tensor: TensorProto, what: str, count: int, bits: int | None) -> None:
        info = {e.key: e.value for e in tensor.external_data}
        try:
            offset, length = int(info.get("offset", 0)), info.get("length")
            length = None if length is None else int(length)
        except ValueError:
            raise _Invalid(f"{what} has a non-numeric external data offset or length") from None
        expected = None if bits is None else -(-count * bits // 8)
        if length is not None and expected is not None and length != expected:
            raise _Invalid(f"{what} says its external data is {length} bytes; its dims {list(tensor.dims)} need "
                           f"{expected}")
        target = self.path.parent / info.get("location", "")
        size = os.path.getsize(target) if target.is_file() else None
        need = length if length is not None else expected
        if offset < 0 or (size is not None and need is not None and offset + need > size):
            raise _Invalid(f"{what} reads bytes {offset} to {offset + (need or 0)} of {info.get('location')!r}, "
                           f"which has {size}")

    # ---------------------------------------------------------------------------------------------------
    # graphs

    def _graph(self, graph: onnx.GraphProto, outer: frozenset[str], label: str) -> None:
        produced: dict[str, str] = {}

        def claim(name: str, by: str) -> None:
            if not name:
                return
            if name in produced:
                raise _Invalid(f"{label}: value {name!r} is produced twice ({produced[name]} and {by})")
            produced[name] = by

        for value in graph.input:
            claim(value.name, "a graph input")
        for init in graph.initializer:
            if init.name in produced:  # IR < 4: initializers are listed as inputs too
                produced.pop(init.name)
            claim(init.name, "an initializer")
            self._tensor(init, f"initializer {init.name!r}")
        inits = {i.name: i for i in graph.initializer}
        for node in graph.node:
            where = f"{node.op_type} {node.name!r}" if node.name else f"{node.op_type} (unnamed)"
            for attr in node.attribute:
                if attr.type not in _ATTR_TYPES or attr.type == onnx.AttributeProto.UNDEFINED:
                    raise _Invalid(f"{where}: attribute {attr.name!r} has no type")
                if attr.HasField("t"):
                    self._tensor(attr.t, f"{where} attribute {attr.name!r}")
                for t in attr.tensors:
                    self._tensor(t, f"{where} attribute {attr.name!r}")
            for output in node.output:
                claim(output, where)
        known = outer | produced.keys()
        for node in graph.node:
            where = f"{node.op_type} {node.name!r}" if node.name else f"{node.op_type} (unnamed)"
            for name in node.input:
                if name and name not in known:
                    raise _Invalid(f"{label}: {where} reads {name!r}, which nothing produces")
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    self._graph(sub, frozenset(known), f"subgraph {sub.name or attr.name!r} of {where}")
            if node.domain in ("", "ai.onnx"):
                self._schema(node, where)
                self._parameters(node, where, inits)
        for output in graph.output:
            if output.name not in known:
                raise _Invalid(f"{label}: graph output {output.name!r} is produced by nothing")
        self._acyclic(graph, label)

    def _acyclic(self, graph: onnx.GraphProto, label: str) -> None:
        producer = {o: k for k, n in enumerate(graph.node) for o in n.output if o}
        waiting = [0] * len(graph.node)
        users: dict[int, list[int]] = {}
        for k, node in enumerate(graph.node):
            for name in set(node.input) | _captured(node):
                if name in producer:
                    waiting[k] += 1
                    users.setdefault(producer[name], []).append(k)
        ready = [k for k, n in enumerate(waiting) if n == 0]
        seen = 0
        while ready:
            k = ready.pop()
            seen += 1
            for user in users.get(k, ()):
                waiting[user] -= 1
                if waiting[user] == 0:
                    ready.append(user)
        if seen != len(graph.node):
            # Nodes left waiting are on a cycle or below one: walk up through waiting producers to the cycle.
            k, visited = next(k for k, n in enumerate(waiting) if n > 0), set()
            while k not in visited:
                visited.add(k)
                k = next(producer[name] for name in [*graph.node[k].input, *sorted(_captured(graph.node[k]))]
                         if name in producer and waiting[producer[name]] > 0)
            stuck = graph.node[k]
            raise _Invalid(f"{label}: the graph has a cycle through {stuck.op_type} {stuck.name or stuck.output[0]!r}")

    def _schema(self, node: onnx.NodeProto, where: str) -> None:
        """Attributes of the type the op's schema gives them, and every required input present. An op onnx
        does not know at this opset is left to the runtime (lint and fold treat it as a barrier)."""
        try:
            schema = onnx.defs.get_schema(node.op_type, self.opset, "")
        except onnx.defs.SchemaError:
            return
        for attr in node.attribute:
            expected = schema.attributes.get(attr.name)
            if expected is not None and attr.type != int(expected.type):
                kind = onnx.AttributeProto.AttributeType.Name(attr.type) if attr.type in _ATTR_TYPES else attr.type
                raise _Invalid(f"{where}: attribute {attr.name!r} is of type {kind}, not {expected.type.name}")
        for k, formal in enumerate(schema.inputs):
            if formal.option == onnx.defs.OpSchema.FormalParameterOption.Single and (
                    k >= len(node.input) or not node.input[k]):
                raise _Invalid(f"{where} lacks its required input {formal.name!r}")

    # ---------------------------------------------------------------------------------------------------
    # parameters

    def _parameters(self, node: onnx.NodeProto, where: str, inits: dict[str, TensorProto]) -> None:
        def init(k: int) -> TensorProto | None:
            return inits.get(node.input[k]) if len(node.input) > k else None

        def shape(k: int) -> tuple[int, ...] | None:
            return None if init(k) is None else tuple(init(k).dims)

        def dtype(k: int) -> int | None:
            return None if init(k) is None else init(k).data_type

        op = node.op_type
        if op == "BatchNormalization":
            if len(node.input) < 5:
                raise _Invalid(f"{where} has {len(node.input)} inputs; it needs X, scale, B, mean and var")
            params = [(name, shape(k), dtype(k)) for k, name in enumerate(("scale", "B", "mean", "var"), 1)]
            known = [(name, s, t) for name, s, t in params if s is not None]
            for name, s, t in known:
                if len(s) != 1:
                    raise _Invalid(f"{where}: {name} has shape {list(s)}; it must be one value per channel")
                if t not in _FLOATS:
                    raise _Invalid(f"{where}: {name} is not a floating-point tensor")
            if len({s for _, s, _ in known}) > 1:
                raise _Invalid(f"{where}: scale, B, mean and var differ in length "
                               f"({', '.join(f'{n} {s[0]}' for n, s, _ in known)})")
        elif op in ("Conv", "ConvTranspose"):
            weight = shape(1)
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if group < 1:
                raise _Invalid(f"{where} has group={group}")
            if weight is None:
                return
            if len(weight) < 3:
                raise _Invalid(f"{where}: the weight has shape {list(weight)}; it needs rank 3 or more")
            outputs = weight[0] if op == "Conv" else weight[1] * group
            if (weight[0] % group) != 0:
                raise _Invalid(f"{where}: the weight's {weight[0]} channels do not divide into group={group}")
            bias = shape(2)
            if bias is not None and bias != (outputs,):
                raise _Invalid(f"{where}: the bias has shape {list(bias)}; the weight makes {outputs} channels")
        elif op == "Gemm":
            weight = shape(1)
            if weight is not None and len(weight) != 2:
                raise _Invalid(f"{where}: the weight has shape {list(weight)}; Gemm needs a matrix")
        elif op in ("ConstantOfShape", "Expand"):
            self._materialize(node, where, init(0 if op == "ConstantOfShape" else 1))

    def _materialize(self, node: onnx.NodeProto, where: str, shape: TensorProto | None) -> None:
        if shape is None or shape.data_type != TensorProto.INT64:
            return
        dims = onnx.numpy_helper.to_array(shape).reshape(-1).tolist()
        if any(not isinstance(d, int) or d < 0 for d in dims):
            return  # onnxruntime rejects it; lint and fold leave a non-constant shape alone
        itemsize = 4
        if node.op_type == "ConstantOfShape":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            itemsize = max(1, (_bitwidth(value.data_type) or 8) // 8) if value is not None else 4
        size = math.prod(dims) * itemsize
        if size > MATERIALIZE_LIMIT:
            raise _Invalid(f"{where} would make a {size / (1 << 30):.1f} GiB tensor of shape {dims}; "
                           f"bnfold evaluates constants up to {MATERIALIZE_LIMIT >> 30} GiB")


def _text(message, where: str) -> None:
    """Every string field, recursively, is text: protobuf hands back bytes for one that is not UTF-8, and
    every name ends up in a report, a JSON document or a written model."""
    from google.protobuf.descriptor import FieldDescriptor

    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_STRING:
            for text in (value if _repeated(field) else [value]):
                if not isinstance(text, str):
                    raise _Invalid(f"{where}: {field.name} {text[:40]!r} is not valid UTF-8")
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in (value if _repeated(field) else [value]):
                _text(item, f"{where}, {getattr(item, 'name', '') or field.name}"
                      if field.name in ("graph", "node", "g", "graphs") else where)


def _repeated(field) -> bool:
    # FieldDescriptor.label is deprecated in newer protobuf releases; is_repeated replaces it
    repeated = getattr(field, "is_repeated", None)
    return repeated if isinstance(repeated, bool) else field.label == field.LABEL_REPEATED


def _captured(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs read from the enclosing graph (they order the node after their producers)."""
    names: set[str] = set()
    for attr in node.attribute:
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            inner = {o for n in sub.node for o in n.output} | {i.name for i in sub.input} | \
                {t.name for t in sub.initializer}
            for n in sub.node:
                names |= {i for i in n.input if i and i not in inner}
                names |= _captured(n) - inner
    return names

"""What every rule sees: the model, its constants, the fold analysis, and graph-walking helpers.

Rules are written against the onnx-ir graph only, so the Keras frontend (which lowers layers into the same
IR, with the layer name in node metadata) reuses them unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import onnx_ir as ir

from bnfold.fold import analyze_model
from bnfold.fold.analysis import node_label
from bnfold.fold.constants import ConstantResolver
from bnfold.fold.result import Decision
from bnfold.fold.shapes import ShapeOracle
from bnfold.lint.finding import Finding, RuleInfo
from bnfold.lint.forms import BatchNorm, batchnorms

KERAS_LAYER_KEY = "bnfold.keras_layer"
KERAS_CLASS_KEY = "bnfold.keras_class"
SOURCE_KEY = "bnfold.source"  # "keras" on a model bnfold.keras lowered from a Keras file
KERAS_FORMAT_KEY = "bnfold.keras_format"  # its file's format: "keras3" or "legacy" (.h5/.hdf5)
IGNORE_KEY = "bnfold.ignore"

# Ops that move or relabel values without changing them (Dropout is the identity at inference).
LAYOUT_NEUTRAL = frozenset({"Reshape", "Transpose", "Flatten", "Identity", "Squeeze", "Unsqueeze", "Dropout"})
LINEAR = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
SOFTMAX = frozenset({"Softmax", "LogSoftmax"})
ACTIVATIONS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "Tanh", "Softplus",
    "Softsign", "Gelu", "HardSwish", "Mish", "Clip", "ThresholdedRelu", "Swish",
}) | SOFTMAX


@dataclass
class LintOptions:
    placement: str | None = None  # "before" | "after": BN004 becomes a preference check
    # BN003 needs this share of the model's linear->activation blocks to be normalized already.
    min_normalized_fraction: float = 0.5


@dataclass
class LintContext:
    model: ir.Model
    path: str
    options: LintOptions = field(default_factory=LintOptions)

    @property
    def from_keras(self) -> bool:
        return self.model.metadata_props.get(SOURCE_KEY) == "keras"

    @property
    def keras_format(self) -> str | None:
        return self.model.metadata_props.get(KERAS_FORMAT_KEY)

    @cached_property
    def shapes(self) -> ShapeOracle:
        return ShapeOracle(self.model)

    @cached_property
    def consts(self) -> ConstantResolver:
        return ConstantResolver(self.model.ir_version, self.shapes)

    @cached_property
    def decisions(self) -> dict[tuple[str, str], Decision]:
        """The fold analysis, keyed by (graph label, node label): one source of truth with `bnfold fold`."""
        return {(d.graph, d.node): d for d in analyze_model(self.model)}

    def decision(self, graph_label: str, node: ir.Node) -> Decision | None:
        return self.decisions.get((graph_label, node_label(node)))

    def graphs(self) -> Iterator[tuple[str, ir.Graph]]:
        for graph in self.model.graphs():
            yield ("" if graph is self.model.graph else (graph.name or "subgraph")), graph

    def nodes(self, *op_types: str) -> Iterator[tuple[str, ir.Node]]:
        for label, graph in self.graphs():
            for node in graph:
                if node.domain in ("", "ai.onnx") and (not op_types or node.op_type in op_types):
                    yield label, node

    @cached_property
    def batchnorms(self) -> list[tuple[str, ir.Node]]:
        return list(self.nodes("BatchNormalization"))

    @cached_property
    def batchnorm_forms(self) -> list[BatchNorm]:
        """Every BatchNormalization, as a node or decomposed into Mul/Add (bnfold.lint.forms)."""
        return batchnorms(self.graphs(), self.consts)

    def bn_label(self, bn: BatchNorm) -> str:
        return bn.label if bn.decomposed else self.layer_label(bn.node)

    @cached_property
    def _node_ignores(self) -> dict[tuple[str, str], tuple[str, ...]]:
        ignores = {}
        for label, node in self.nodes():
            codes = node.metadata_props.get(IGNORE_KEY)
            if codes:
                ignores[(label, node_label(node))] = tuple(c.strip().upper() for c in codes.split(",") if c.strip())
        return ignores

    def suppressed(self, finding: Finding) -> bool:
        """Whether the node's `bnfold.ignore` metadata (comma-separated codes or prefixes) covers the finding."""
        codes = self._node_ignores.get((finding.graph, finding.node), ())
        return any(code == "ALL" or finding.code.startswith(code) for code in codes)

    def layer_label(self, node: ir.Node) -> str:
        """How a message names the op: its Keras layer ("Dense 'dense_1'") when it came from one."""
        layer, cls = node.metadata_props.get(KERAS_LAYER_KEY), node.metadata_props.get(KERAS_CLASS_KEY)
        if layer and cls:
            return f"{cls} '{layer}'"
        return f"{node.op_type} '{node_label(node)}'"

    def keras_layer(self, node: ir.Node) -> str | None:
        """The Keras layer an op came from: bnfold's own Keras lowering records it; tf2onnx names every op by
        its TensorFlow scope, `<model>/<layer>/.../<op>` (SavedModels add a StatefulPartitionedCall/ root)."""
        layer = node.metadata_props.get(KERAS_LAYER_KEY)
        if layer or self.model.producer_name != "tf2onnx":
            return layer
        scopes = _scopes(node)
        if scopes is None:
            return None
        return _TRACE_SUFFIX.sub("", scopes[1]) if self._keras3_traced else scopes[1]

    @cached_property
    def _keras3_traced(self) -> bool:
        """Whether the op paths are Keras 3 traces. Keras 3 enters each layer's (and the model's) scope twice
        and TensorFlow uniquifies the second entry into `<name>_<k>`, where the ops land: layer `dense` reads
        `dense_1`, a layer named `dense_1` reads `dense_1_2`. So every model and layer scope of such a graph
        ends in `_<k>`; tf_keras' first layer of a kind (`dense`, `activation`) does not. A tf_keras model
        built late in a session has suffixes everywhere too, so Keras 3's own way of reading a kernel must
        be there as well: through a dtype-policy `Cast` (Dense) or `tf.nn.convolution` (Conv)."""
        nodes = [n for _, n in self.nodes()]
        scopes = [s for s in map(_scopes, nodes) if s is not None]
        reads = {v.name for n in nodes for v in n.inputs if v is not None and v.name}
        keras3_reads = any(marker in name for name in reads for marker in _KERAS3_READS)
        return keras3_reads and all(_TRACE_SUFFIX.search(part) for s in scopes for part in s)

    def finding(self, rule: RuleInfo, graph_label: str, node: ir.Node, message: str, fix: str) -> Finding:
        return Finding(path=self.path, code=rule.code, name=rule.name, severity=rule.severity,
                       node=node_label(node), op_type=node.op_type, message=message, fix=fix,
                       keras_layer=self.keras_layer(node), graph=graph_label)


_TRACE_SUFFIX = re.compile(r"_\d+$")
_KERAS3_READS = ("/Cast/ReadVariableOp", "/convolution/ReadVariableOp")


def _scopes(node: ir.Node) -> tuple[str, str] | None:
    """(model scope, layer scope) of a tf2onnx op path, or None when the name is no such path."""
    parts = (node.name or "").split("/")
    if parts and parts[0] == "StatefulPartitionedCall":
        parts = parts[1:]
    return (parts[0], parts[1]) if len(parts) >= 3 else None


def is_op(node: ir.Node | None, ops: frozenset[str]) -> bool:
    return node is not None and node.domain in ("", "ai.onnx") and node.op_type in ops


def upstream(value: ir.Value, *, exclusive: bool = False) -> ir.Node | None:
    """The first producer above `value` that is not layout-neutral. With `exclusive`, every value on the way
    must feed only the next op (so a change there reaches nothing else)."""
    while True:
        if exclusive and (len(value.uses()) != 1 or value.is_graph_output()):
            return None
        node = value.producer()
        if not is_op(node, LAYOUT_NEUTRAL) or not node.inputs or node.inputs[0] is None:
            return node
        value = node.inputs[0]


def downstream(value: ir.Value) -> list[ir.Node]:
    """The first consumers below `value` that are not layout-neutral (following every branch)."""
    found, stack, seen = [], [value], set()
    while stack:
        current = stack.pop()
        for use in current.uses():
            node = use.node
            if id(node) in seen:
                continue
            seen.add(id(node))
            if is_op(node, LAYOUT_NEUTRAL) and use.idx == 0:
                stack.extend(node.outputs[:1])
            else:
                found.append(node)
    return found


def reaches_graph_output(value: ir.Value) -> bool:
    """Whether `value`, through layout-neutral ops only, is a graph output."""
    stack = [value]
    while stack:
        current = stack.pop()
        if current.is_graph_output():
            return True
        stack.extend(use.node.outputs[0] for use in current.uses() if is_op(use.node, LAYOUT_NEUTRAL))
    return False

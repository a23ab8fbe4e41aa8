"""What every rule sees: the model, its constants, the fold analysis, and graph-walking helpers.

Rules are written against the onnx-ir graph only, so the Keras frontend (which lowers layers into the same
IR, with the layer name in node metadata) reuses them unchanged.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import onnx_ir as ir

from bnfold.config import node_ignored
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
    # pyproject's per-node-ignores: lint needs them too, so a per-model finding counts only the nodes left
    per_node_ignores: dict[str, list[str]] = field(default_factory=dict)


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

    @property
    def framework(self) -> str | None:
        """"pytorch", "tensorflow" (tf2onnx, a Keras file) or "paddle" (paddle2onnx) by the model's
        producer_name, so a fix can speak the exporter's language; None for any other producer."""
        producer = (self.model.producer_name or "").lower()
        if "pytorch" in producer or producer == "torch":
            return "pytorch"
        if "paddle" in producer:
            return "paddle"
        if self.from_keras or "tf2onnx" in producer or "keras" in producer:
            return "tensorflow"
        return None

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
        """Whether the node's `bnfold.ignore` metadata (comma-separated codes or prefixes) or a per-node-ignores
        glob covers the finding."""
        codes = self._node_ignores.get((finding.graph, finding.node), ())
        return (any(code == "ALL" or finding.code.startswith(code) for code in codes)
                or node_ignored(self.options.per_node_ignores, finding.code, finding.node))

    def layer_label(self, node: ir.Node) -> str:
        """How a message names the op: its Keras layer ("Dense 'dense_1'") when it came from one."""
        layer, cls = node.metadata_props.get(KERAS_LAYER_KEY), node.metadata_props.get(KERAS_CLASS_KEY)
        if layer and cls:
            return f"{cls} '{layer}'"
        return f"{node.op_type} '{display_name(node)}'"

    @cached_property
    def _nodes_by_label(self) -> dict[tuple[str, str], ir.Node]:
        return {(label, node_label(node)): node for label, node in self.nodes()}

    def label_of(self, graph_label: str, label: str, op_type: str) -> str:
        """layer_label of the node a fold decision names by its node label."""
        node = self._nodes_by_label.get((graph_label, label))
        return self.layer_label(node) if node is not None else f"{op_type} '{label}'"

    def per_model(self, rule: RuleInfo, items: list[tuple[str, ir.Node, str]], what: str, fix: str
                  ) -> Iterator[Finding]:
        """One finding for what one export setting causes in many places: `items` are (graph, node, how the
        message names it); nodes whose `bnfold.ignore` covers the rule drop out, the first one left carries
        the finding, and the message counts them and names the first three. `what` is a template with {n}
        and the verb forms {are} and {read}."""
        kept = [item for item in items if not self.suppressed(self.finding(rule, item[0], item[1], "", fix))]
        if not kept:
            return
        names = "; ".join(label for *_, label in kept[:3]) + (f"; and {len(kept) - 3} more" if len(kept) > 3 else "")
        graph, node, _ = kept[0]
        one = len(kept) == 1
        what = what.format(n=len(kept), are="is" if one else "are", read="reads" if one else "read")
        found = self.finding(rule, graph, node, f"{what}: {names}", fix)
        # of several, not the first one's Keras layer: the finding speaks of them all
        yield found if one else dataclasses.replace(found, keras_layer=None)

    def keras_layer(self, node: ir.Node) -> str | None:
        """The Keras layer an op came from: bnfold's own Keras lowering records it; tf2onnx names every op by
        its TensorFlow scope, `<model>/<layer>/.../<op>` (SavedModels add a StatefulPartitionedCall/ root)."""
        layer = node.metadata_props.get(KERAS_LAYER_KEY)
        if layer or self.model.producer_name != "tf2onnx":
            return layer
        # a node tf2onnx made itself (`Conv__14` after merging a BN) is known by its weight's path
        names = [node.name, *(v.name for v in node.inputs[1:] if v is not None and v.producer() is None)]
        scopes = next((found for found in map(_scopes, names) if found is not None), None)
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
        be there as well: through a dtype-policy `Cast` (Dense) or `tf.nn.convolution` (Conv, whose weights
        keep that scope when TensorFlow merges a BN into them)."""
        nodes = [n for _, n in self.nodes()]
        scopes = [s for s in (_scopes(n.name) for n in nodes) if s is not None]
        reads = {v.name for n in nodes for v in n.inputs if v is not None and v.name}
        keras3_reads = any(marker in name for name in reads for marker in _KERAS3_READS)
        return keras3_reads and all(_TRACE_SUFFIX.search(part) for s in scopes for part in s)

    def finding(self, rule: RuleInfo, graph_label: str, node: ir.Node, message: str, fix: str) -> Finding:
        return Finding(path=self.path, code=rule.code, name=rule.name, severity=rule.severity,
                       node=node_label(node), op_type=node.op_type, message=message, fix=fix,
                       keras_layer=self.keras_layer(node), graph=graph_label)


_TRACE_SUFFIX = re.compile(r"_\d+$")
_PARAMETER = re.compile(r"^(.+)\.(weight|bias|running_mean|running_var)$")


def display_name(node: ir.Node) -> str:
    """The name a person knows the op by: its own; for an unnamed node (PyTorch 1.x exports name none), the
    module path its parameters carry (`base_net.0.0` from `base_net.0.0.weight`); else its output's name."""
    if node.name:
        return node.name
    for value in node.inputs[1:]:
        match = _PARAMETER.match(value.name or "") if value is not None and value.producer() is None else None
        if match:
            return match.group(1)
    return node_label(node)
_KERAS3_READS = ("/Cast/ReadVariableOp", "/convolution/")


def _scopes(name: str | None) -> tuple[str, str] | None:
    """(model scope, layer scope) of a tf2onnx op or tensor path, or None when the name is no such path."""
    parts = (name or "").split("/")
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

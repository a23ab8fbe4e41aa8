"""Every form a BatchNormalization reaches lint in: a BatchNormalization node, or the Mul/Add ops TensorFlow
decomposes it into (tf2onnx writes every Keras 3 BN, and tf_keras' BN of a Dense, as
`<layer>/batchnorm/mul_1` and `<layer>/batchnorm/add_1` with constant per-channel operands).

The decomposed form is recognised by TensorFlow's `batchnorm` name scope, not by its arithmetic: a per-channel
Mul/Add is also a Scale layer or a hand-written normalization, and rules such as BN001 ("the bias before BN
is cancelled by its mean subtraction") hold only for a real BatchNormalization.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from bnfold.fold.analysis import node_label
from bnfold.fold.constants import ConstantResolver

DECOMPOSED_OPS = frozenset({"Mul", "Add", "Sub"})
SCOPE = "batchnorm"


@dataclass(frozen=True)
class BatchNorm:
    graph: str
    node: ir.Node      # the op a finding names: the BatchNormalization node, or the first decomposed op
    input: ir.Value
    output: ir.Value
    ops: tuple[ir.Node, ...]

    @property
    def decomposed(self) -> bool:
        return self.node.op_type != "BatchNormalization"

    @property
    def label(self) -> str:
        """How a message names it: the node, or the layer scope of its decomposed ops."""
        if not self.decomposed:
            return f"BatchNormalization '{node_label(self.node)}'"
        scope = node_label(self.node).rsplit("/", 2)[0]
        ops = "+".join(op.op_type for op in self.ops)
        return f"BatchNormalization '{scope}' (exported as {ops} from '{node_label(self.node)}')"


def _scope(node: ir.Node) -> str | None:
    """The `.../batchnorm` scope a decomposed op lives in, or None."""
    parts = (node.name or "").split("/")
    return "/".join(parts[:-1]) if len(parts) >= 2 and parts[-2].lower() == SCOPE else None


def _data_input(node: ir.Node, consts: ConstantResolver) -> ir.Value | None:
    """The one non-constant input of a decomposed op (None unless exactly one input is constant)."""
    if len(node.inputs) != 2 or any(v is None for v in node.inputs):
        return None
    data = [v for v in node.inputs if consts.resolve(v) is None]
    return data[0] if len(data) == 1 else None


def decomposed_batchnorms(graph_label: str, graph: ir.Graph, consts: ConstantResolver) -> list[BatchNorm]:
    groups: dict[str, list[ir.Node]] = {}
    for node in graph:
        if node.domain in ("", "ai.onnx") and node.op_type in DECOMPOSED_OPS:
            scope = _scope(node)
            if scope is not None and _data_input(node, consts) is not None:
                groups.setdefault(scope, []).append(node)
    found = []
    for ops in groups.values():
        chain = _chain(ops, consts)
        if chain:
            found.append(BatchNorm(graph_label, chain[0], _data_input(chain[0], consts), chain[-1].outputs[0],
                                   tuple(chain)))
    return found


def _chain(ops: list[ir.Node], consts: ConstantResolver) -> list[ir.Node] | None:
    """The scope's ops as one straight chain, each feeding only the next, or None."""
    members = {id(op) for op in ops}
    heads = [op for op in ops if id(_data_input(op, consts).producer()) not in members]
    if len(heads) != 1:
        return None
    chain = heads
    while len(chain) < len(ops):
        out = chain[-1].outputs[0]
        uses = list(out.uses())
        if out.is_graph_output() or len(uses) != 1 or id(uses[0].node) not in members:
            return None
        chain.append(uses[0].node)
    return chain


def batchnorms(graphs, consts: ConstantResolver) -> list[BatchNorm]:
    """Every BatchNormalization of the model, nodes and decomposed, in graph order."""
    found = []
    for label, graph in graphs:
        nodes = [BatchNorm(label, node, node.inputs[0], node.outputs[0], (node,)) for node in graph
                 if node.domain in ("", "ai.onnx") and node.op_type == "BatchNormalization" and node.inputs
                 and node.inputs[0] is not None]
        found += nodes + decomposed_batchnorms(label, graph, consts)
    return found

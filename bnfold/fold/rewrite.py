"""Apply an analysis to the graph: write the partners' new weights, remove the folded ops, rewire, and
drop what became dead (BN parameters, old weights, constant-only subgraphs that computed them)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from bnfold.fold.analysis import GraphAnalysis, Plan, finalize
from bnfold.fold.branches import Merge
from bnfold.fold.partners import Partner, node_label
from bnfold.fold.result import BACKWARD
from bnfold.verify import Checkpoint


class Names:
    """Fresh value names that collide with nothing in the model."""

    def __init__(self, model: ir.Model) -> None:
        self._taken = {v.name for g in model.graphs() for v in (*g.inputs, *g.initializers.values())}
        self._taken |= {out.name for g in model.graphs() for node in g for out in node.outputs}

    def fresh(self, base: str) -> str:
        name, i = f"{base}_bnfold", 1
        while name in self._taken:
            i += 1
            name = f"{base}_bnfold{i}"
        self._taken.add(name)
        return name


class Rewriter:
    def __init__(self, names: Names, model: ir.Model, store=None, max_growth: float | None = None) -> None:
        self.names = names
        self.max_growth = max_growth
        # Where new tensors live: in memory by default, or a TensorSpill's file for huge models.
        self._store = store or (lambda array, name, dtype: ir.Tensor(array, dtype=dtype, name=name))
        self.main = model.graph
        # IR < 4: every initializer of the main graph must also be a graph input.
        self.legacy_inputs = model.ir_version < 4
        self.removed_inputs: list[str] = []
        self.checkpoints: list[Checkpoint] = []
        self._maybe_dead: list[ir.Value] = []

    def apply(self, analysis: GraphAnalysis) -> None:
        partners = finalize(analysis, self._write_weights, self.max_growth)
        places = self._places_after_partners(analysis)
        for plan in analysis.plans:
            self._remove_chain(plan)
        for partner in partners:
            if partner.op == "MatMul" and partner.bias is not None and partner.bias.any():
                self._add_bias_after(partner.node, partner.bias.astype(partner.dtype.numpy()), partner.dtype)
        self._drop_dead()
        self.checkpoints.extend(filter(None, (place.checkpoint(self.main) for place in places)))

    def merge(self, merges: list[Merge]) -> None:
        """Give each merged kernel to its keeper Conv; the other branches and the Adds go."""
        for merge in merges:
            keeper, graph = merge.keeper.node, merge.add.graph
            self._set_constant(keeper, 1, merge.weight, merge.keeper.dtype)
            self._set_constant(keeper, 2, merge.bias, merge.keeper.dtype)
            keeper.attributes["kernel_shape"] = ir.AttrInt64s("kernel_shape", list(merge.kernel))
            keeper.attributes["pads"] = ir.AttrInt64s("pads", [b for b, _ in merge.pads] + [e for _, e in merge.pads])
            keeper.attributes.pop("auto_pad", None)
            removed = [*merge.adds, *(b.node for b in merge.others), *(n for i in merge.identities for n in i.nodes)]
            # a branch's own checkpoint (its BN folded into it) names a value that is gone or now means the sum
            gone = {keeper.outputs[0].name} | {out.name for n in removed for out in n.outputs}
            self.checkpoints = [c for c in self.checkpoints if c.folded not in gone]
            original = merge.add.outputs[0].name
            _take_over(merge.add.outputs[0], keeper.outputs[0])
            self._maybe_dead.extend(v for n in removed for v in n.inputs if v is not None)
            graph.remove(removed, safe=True)
            if graph is self.main:
                self.checkpoints.append(Checkpoint(original, keeper.outputs[0].name, f"Conv '{node_label(keeper)}'"))
        self._drop_dead()

    def _places_after_partners(self, analysis: GraphAnalysis) -> list[_Place]:
        """Where each main-graph partner's folded result will stand: after the BN chain it absorbs backward,
        else right after the partner (a forward fold leaves the partner's output meaning what it meant)."""
        targets: dict[int, tuple[Partner, ir.Value]] = {}
        for plan in analysis.plans:
            if plan.partner.node.graph is not self.main:
                continue  # a subgraph's values cannot be graph outputs of the model
            if plan.direction == BACKWARD:
                targets[id(plan.partner)] = (plan.partner, plan.chain[-1].output)
            else:
                targets.setdefault(id(plan.partner), (plan.partner, plan.partner.node.outputs[0]))
        return [_Place(partner, value, self.main) for partner, value in targets.values()]

    def _remove_chain(self, plan: Plan) -> None:
        head, tail = plan.chain[0], plan.chain[-1]
        graph = head.node.graph
        # Backward and forward alike, what fed the chain takes its place (Identity/Dropout before it stay).
        _take_over(tail.output, head.data)
        nodes = [a.node for a in plan.chain]
        self._maybe_dead.extend(v for n in nodes for v in n.inputs if v is not None)
        graph.remove(nodes, safe=True)

    def _write_weights(self, partner: Partner, weight: np.ndarray) -> None:
        """The folded weight, and the bias where the op has a slot for it (a MatMul's comes after rewiring)."""
        node, dtype = partner.node, partner.dtype
        self._set_constant(node, 1, weight, dtype)
        if partner.bias is None or partner.op == "MatMul":
            return
        self._set_constant(node, 2, partner.bias, dtype)
        if partner.op == "Gemm":
            node.attributes["beta"] = ir.AttrFloat32("beta", 1.0)

    def _set_constant(self, node: ir.Node, index: int, array: np.ndarray, dtype: ir.DataType) -> None:
        tensor_array = np.asarray(array, dtype=dtype.numpy())
        old = node.inputs[index] if index < len(node.inputs) else None
        if (old is not None and old.is_initializer() and not old.is_graph_output() and len(old.uses()) == 1
                and old.graph is node.graph and (self.legacy_inputs or not old.is_graph_input())):
            old.const_value = self._store(tensor_array, old.name, dtype)
            if old.shape is not None:
                old.shape = ir.Shape(tensor_array.shape)
            return
        base = old.name if old is not None and old.name else f"{node.name or node.op_type}.{index}"
        name = self.names.fresh(base)
        new = self._initializer(node.graph, name, tensor_array, dtype)
        if index >= len(node.inputs):
            node.resize_inputs(index + 1)
        node.replace_input_with(index, new)
        if old is not None:
            self._maybe_dead.append(old)

    def _initializer(self, graph: ir.Graph, name: str, array: np.ndarray, dtype: ir.DataType) -> ir.Value:
        value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(dtype),
                         const_value=self._store(array, name, dtype))
        graph.register_initializer(value)
        if self.legacy_inputs and graph is self.main:
            graph.inputs.append(value)
        return value

    def _add_bias_after(self, node: ir.Node, bias: np.ndarray, dtype: ir.DataType) -> None:
        out = node.outputs[0]
        name = self.names.fresh(f"{node.name or 'MatMul'}.bias")
        const = self._initializer(node.graph, name, bias, dtype)
        uses = list(out.uses())
        add = ir.Node("", "Add", [out, const], name=self.names.fresh(f"{node.name or 'MatMul'}.add"),
                      num_outputs=1)
        added = add.outputs[0]
        added.type, added.shape = out.type, out.shape
        node.graph.insert_after(node, add)
        for use in uses:
            use.node.replace_input_with(use.idx, added)
        if out.is_graph_output():
            _rename_graph_output(out, added, self.names.fresh(out.name))
        else:
            added.name = self.names.fresh(out.name or "MatMul")

    def _drop_dead(self) -> None:
        work = self._maybe_dead
        while work:
            value = work.pop()
            if value.uses() or value.is_graph_output():
                continue
            if value.is_initializer():
                graph = value.graph
                if value.is_graph_input():
                    graph.inputs.remove(value)
                    if not self.legacy_inputs:
                        self.removed_inputs.append(value.name)
                graph.initializers.pop(value.name, None)
                continue
            node = value.producer()
            if node is None or node.graph is None:
                continue
            if any(out.uses() or out.is_graph_output() for out in node.outputs):
                continue
            work.extend(v for v in node.inputs if v is not None)
            node.graph.remove(node, safe=True)


class _Place:
    """A value of the original graph, remembered by where it is used, so that after the rewrite we can name the
    value standing in its place (the rewrite rewires uses and may rename graph outputs)."""

    def __init__(self, partner: Partner, value: ir.Value, graph: ir.Graph) -> None:
        node = partner.node
        self.label = f"{node.op_type} '{node_label(node)}'"
        self.original = value.name
        self.uses = [(use.node, use.idx) for use in value.uses()]
        self.output_index = next((i for i, out in enumerate(graph.outputs) if out is value), None)

    def checkpoint(self, graph: ir.Graph) -> Checkpoint | None:
        if self.output_index is not None:
            return Checkpoint(self.original, graph.outputs[self.output_index].name, self.label)
        for node, index in self.uses:
            if node.graph is graph:
                return Checkpoint(self.original, node.inputs[index].name, self.label)
        return None  # nothing read the value


def _take_over(old: ir.Value, new: ir.Value) -> None:
    """Make `new` stand where `old` was: its uses and, keeping the name, its place in the graph outputs."""
    for use in list(old.uses()):
        use.node.replace_input_with(use.idx, new)
    if old.is_graph_output():
        _rename_graph_output(old, new, None)


def _rename_graph_output(old: ir.Value, new: ir.Value, old_new_name: str | None) -> None:
    """Put `new` in `old`'s graph-output slot under `old`'s name (graph output names are the interface)."""
    name = old.name
    outputs = old.graph.outputs
    for i, value in enumerate(outputs):
        if value is old:
            outputs[i] = new
    old.name = old_new_name
    new.name = name
    new.type, new.shape = old.type, old.shape

"""Decide, for every BatchNormalization and decomposed affine op, whether and where it folds.

Affine ops are grouped into chains (each output used once, by the next op's data input). A chain folds
backward into the linear op that produces its input as far as its ops map onto that op's output
channels (looking through Identity/inference Dropout, and through Reshape/Transpose while the channel axis
maps element for element); what is left folds forward into the linear op that consumes its output,
optionally through Identity/Dropout, Flatten/Reshape (channel -> feature) and MaxPool (every scale > 0).
The ops looked through stay in the graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from bnfold.fold import result as R
from bnfold.fold.affine import Affine, Refusal, as_affine, compose
from bnfold.fold.constants import ConstantResolver
from bnfold.fold.layout import follow_channels, is_identity, is_op
from bnfold.fold.partners import LINEAR_OPS, Layout, Partner, make_partner, node_label
from bnfold.fold.ranges import magnitude, range_growth
from bnfold.fold.shapes import ShapeOracle

PASSTHROUGH_FORWARD = frozenset({"Flatten", "Reshape", "MaxPool", "Identity", "Dropout"})
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Identity", "Squeeze", "Unsqueeze"})
# Reasons that say only "nothing linear nearby"; any other reason on the other side is more useful.
_GENERIC = (R.NO_LINEAR_NEIGHBOUR, R.NONLINEARITY_BETWEEN, R.LAYOUT_OP_BETWEEN)


@dataclass
class Plan:
    """One fold: `chain` (in graph order) goes away; `partner` absorbs it."""

    direction: str
    partner: Partner
    chain: list[Affine]
    # The ops between the chain and a forward partner (Flatten, Reshape, MaxPool, ...); they stay.
    via: list[ir.Node]
    # Where the chain's channels are, and how many partner features each one spreads over (Flatten).
    layout: Layout
    spread: int = 1
    decisions: list[R.Decision] = field(default_factory=list)
    # Backward through a Concat: each input's producer and the channels [start, stop) it makes; `partner`
    # is the first of them. Empty for a single partner.
    slices: list[tuple[Partner, int, int]] = field(default_factory=list)

    @property
    def partners(self) -> list[Partner]:
        return [p for p, _, _ in self.slices] or [self.partner]


@dataclass
class GraphAnalysis:
    plans: list[Plan] = field(default_factory=list)
    decisions: list[R.Decision] = field(default_factory=list)
    partners: dict[int, Partner] = field(default_factory=dict)


class _Analyzer:
    def __init__(self, graph: ir.Graph, label: str, consts: ConstantResolver, shapes: ShapeOracle,
                 strict_inputs: bool):
        self.graph = graph
        self.label = label
        self.consts = consts
        self.shapes = shapes
        self.strict_inputs = strict_inputs
        self.out = GraphAnalysis()
        self.pending_slices: list[tuple[Partner, int, int]] = []

    # -- building blocks -------------------------------------------------------------------------

    def partner(self, node: ir.Node) -> Partner:
        key = id(node)
        if key not in self.out.partners:
            partner = make_partner(node, self.consts, self.shapes.rank)
            if partner.overridable and self.strict_inputs:
                raise Refusal(R.OVERRIDABLE_PARAMETERS,
                              f"the weights of {node.op_type} '{node_label(node)}' are also graph inputs")
            self.out.partners[key] = partner
        return self.out.partners[key]

    def single_consumer(self, value: ir.Value) -> ir.Node:
        if value.is_graph_output():
            raise Refusal(R.GRAPH_OUTPUT, f"'{value.name}' is a graph output")
        uses = list(value.uses())
        if len(uses) != 1:
            raise Refusal(R.SHARED_OUTPUT, f"'{value.name}' is used by {len(uses)} nodes")
        return uses[0].node

    def no_partner(self, neighbour: ir.Node | None, onward: list[ir.Node]) -> Refusal:
        if neighbour is not None and any(n.op_type in LINEAR_OPS for n in onward):
            reason = R.LAYOUT_OP_BETWEEN if neighbour.op_type in LAYOUT_OPS else R.NONLINEARITY_BETWEEN
            return Refusal(reason, f"{neighbour.op_type} '{node_label(neighbour)}' sits between it and the "
                           "linear op")
        return Refusal(R.NO_LINEAR_NEIGHBOUR)

    # -- backward --------------------------------------------------------------------------------

    def backward(self, chain: list[Affine]) -> tuple[int, Partner | None, Refusal | None, Layout | None]:
        """How many leading chain ops fold into the producer, the producer, why the next op does not, and the
        layout the chain's ops are mapped in."""
        value, moved = chain[0].data, []
        try:
            # Identity/Dropout change nothing and Reshape/Transpose only move elements: look through them
            # (they stay in the graph) as long as the channel axis can be followed.
            while is_identity(value.producer()) or is_op(value.producer(), ("Reshape", "Transpose")):
                self.single_consumer(value)
                moved.append(value.producer())
                value = value.producer().inputs[0]
        except Refusal as refusal:
            return 0, None, refusal, None
        producer = value.producer()
        if is_op(producer, ("Concat",)) and not moved:
            return self.through_concat(chain, producer)
        if producer is None or producer.op_type not in LINEAR_OPS:
            onward = [] if producer is None else [v.producer() for v in producer.inputs if v is not None]
            return 0, None, self.no_partner(producer, [n for n in onward if n is not None]), None
        try:
            if producer.outputs[0] is not value or producer.graph is not self.graph:
                raise Refusal(R.UNSUPPORTED_PARTNER, f"{producer.op_type} '{node_label(producer)}' is in another "
                              "graph or produces it as a secondary output")
            self.single_consumer(value)
            partner = self.partner(producer)
            layout = partner.output_layout()
            if any(not is_identity(n) for n in moved):
                layout = follow_channels(self.shapes, chain[0].data, moved, layout)
        except Refusal as refusal:
            return 0, None, refusal, None
        count, refusal = self.fit(chain, layout)
        return count, partner, refusal, layout

    def through_concat(self, chain: list[Affine], concat: ir.Node):
        """Backward into every producer of a Concat along the channel axis (MixConv: per-group Convs, then
        one BN): each gets its own slice of the channels. Every input must come from its own linear op, used
        by nothing else. Returns what backward() returns, the partner being the first producer (the plan's
        slices are in self.pending_slices)."""
        value = chain[0].data
        try:
            self.single_consumer(value)
            rank = self.shapes.rank(value)
            axis = concat.attributes["axis"].value if "axis" in concat.attributes else None
            if rank is None or axis is None:
                raise Refusal(R.UNKNOWN_SHAPE, f"the rank of Concat '{node_label(concat)}' is not known")
            axis %= rank
            slices, start = [], 0
            for k, piece in enumerate(concat.inputs):
                producer = piece.producer() if piece is not None else None
                if producer is None or producer.op_type not in LINEAR_OPS or producer.outputs[0] is not piece \
                        or producer.graph is not self.graph:
                    what = "a graph input" if producer is None else f"{producer.op_type} '{node_label(producer)}'"
                    raise Refusal(R.CONCAT_NOT_LINEAR, f"input {k} of Concat '{node_label(concat)}' is {what}, "
                                  "not the output of its own linear op")
                self.single_consumer(piece)
                partner = self.partner(producer)
                layout = partner.output_layout()
                if layout.rank != rank or layout.axis % rank != axis:
                    raise Refusal(R.CHANNEL_AXIS_MISMATCH, f"Concat '{node_label(concat)}' joins axis {axis}, "
                                  f"{partner.op} '{node_label(producer)}' makes its channels on axis {layout.axis}")
                slices.append((partner, start, start + layout.channels))
                start += layout.channels
        except Refusal as refusal:
            return 0, None, refusal, None
        layout = Layout(rank, axis, start)
        count, refusal = self.fit(chain, layout)
        self.pending_slices = slices
        return count, slices[0][0], refusal, layout

    def fit(self, chain: list[Affine], layout: Layout) -> tuple[int, Refusal | None]:
        """Length of the chain prefix whose ops map onto `layout`, and why the next one does not."""
        for i, affine in enumerate(chain):
            try:
                affine.per_channel(layout.rank, layout.axis, layout.channels)
            except Refusal as refusal:
                return i, refusal
        return len(chain), None

    def check_entry(self, affine: Affine, layout: Layout) -> None:
        """Refuse the first op of a forward chain when its constant could broadcast the data it meets to a
        larger shape: a [C] constant against a channel axis of size 1 makes C copies, which removing the op
        undoes. Backward, the data is the partner's output, whose channels the partner's weight fixes, and each
        op the chain keeps passes the channel axis on unchanged."""
        if affine.is_bn or (affine.s.size == 1 and affine.t.size == 1):
            return
        rank = self.shapes.rank(affine.data)
        dims = affine.data.shape
        dim = dims[layout.axis] if dims is not None and rank and -rank <= layout.axis < rank else None
        if not isinstance(dim, int):
            raise Refusal(R.UNKNOWN_SHAPE, f"the size of the channel axis of {affine.node.op_type} "
                          f"'{node_label(affine.node)}''s input is not known, so its constant might broadcast it")
        if dim != layout.channels:
            raise Refusal(R.CHANNEL_AXIS_MISMATCH, f"{affine.node.op_type} '{node_label(affine.node)}' broadcasts "
                          f"its input's channel axis from {dim} to {layout.channels}")

    # -- forward ---------------------------------------------------------------------------------

    def forward_target(self, tail: Affine) -> tuple[Partner, list[ir.Node], Layout, int]:
        """The consumer that absorbs the chain, the pass-through ops on the way, the chain's layout there
        and how many consumer features each chain channel spreads over (Flatten/Reshape)."""
        value, via = tail.output, []
        while True:
            if value.is_graph_output():
                raise Refusal(R.NO_LINEAR_NEIGHBOUR, f"'{value.name}' is a graph output, with no linear op after it")
            consumer = self.single_consumer(value)
            if consumer.op_type not in PASSTHROUGH_FORWARD or consumer.domain not in ("", "ai.onnx"):
                break
            if consumer.op_type == "Dropout" and not is_identity(consumer):
                break
            if consumer.inputs[0] is not value or (consumer.op_type == "MaxPool" and len(consumer.outputs) > 1
                                                   and consumer.outputs[1].uses()):
                raise Refusal(R.UNSUPPORTED_PARTNER, f"{consumer.op_type} '{node_label(consumer)}' uses it oddly")
            via.append(consumer)
            value = consumer.outputs[0]
        if consumer.op_type not in LINEAR_OPS:
            raise self.no_partner(consumer, [u.node for out in consumer.outputs for u in out.uses()])
        if consumer.inputs[0] is not value:
            raise Refusal(R.UNSUPPORTED_PARTNER,
                          f"it feeds the weight input of {consumer.op_type} '{node_label(consumer)}'")
        if consumer.graph is not self.graph:
            raise Refusal(R.UNSUPPORTED_PARTNER, f"{consumer.op_type} '{node_label(consumer)}' is in a subgraph")
        partner = self.partner(consumer)
        partner.check_forward()
        layout = partner.input_layout()
        reshapes = [n for n in via if n.op_type in ("Flatten", "Reshape")]
        if not reshapes:
            return partner, via, layout, 1
        shape = self.shapes.static_shape(tail.output)
        out_shape = self.shapes.static_shape(reshapes[-1].outputs[0])
        if shape is None or out_shape is None:
            raise Refusal(R.UNKNOWN_SHAPE, f"the shape around {reshapes[0].op_type} is not known")
        spread = int(np.prod(shape[2:], dtype=np.int64))
        if (len(shape) < 2 or len(out_shape) != 2 or out_shape[0] != shape[0]
                or out_shape[1] != shape[1] * spread or layout.channels != out_shape[1]):
            raise Refusal(R.CHANNEL_AXIS_MISMATCH,
                          f"{list(shape)} -> {list(out_shape)} does not keep channels as contiguous features")
        return partner, via, Layout(len(shape), 1, shape[1]), spread

    def forward(self, chain: list[Affine]) -> tuple[int, Plan | None, Refusal | None]:
        """Index of the first op of the suffix that folds forward, its plan, and why the op before it
        does not fold forward."""
        try:
            partner, via, layout, spread = self.forward_target(chain[-1])
        except Refusal as refusal:
            return len(chain), None, refusal
        start = len(chain)
        refusal = None
        for i in range(len(chain) - 1, -1, -1):
            try:
                chain[i].per_channel(layout.rank, layout.axis, layout.channels)
            except Refusal as exc:
                refusal = exc
                break
            start = i
        while start < len(chain):
            try:
                self.check_entry(chain[start], layout)
                break
            except Refusal as exc:
                refusal, start = exc, start + 1
        if any(n.op_type == "MaxPool" for n in via) and start < len(chain):
            s, _ = compose([a.per_channel(layout.rank, layout.axis, layout.channels) for a in chain[start:]],
                           layout.channels)
            if (s <= 0).any():
                return len(chain), None, Refusal(R.NON_POSITIVE_SCALE)
        if start == len(chain):
            return start, None, refusal
        return start, Plan(R.FORWARD, partner, chain[start:], via, layout, spread), refusal

    # -- one chain -------------------------------------------------------------------------------

    def chain(self, chain: list[Affine]) -> None:
        n_back, back_partner, back_refusal, back_layout = self.backward(chain)
        # An Add right after a MatMul is its bias only if it fits the MatMul's features; a per-row Add is
        # reported like any other op that does not fold.
        bias_add = (back_partner is not None and back_partner.op == "MatMul" and not chain[0].is_bn
                    and chain[0].node.op_type == "Add" and n_back >= 1)
        if bias_add and n_back <= 1:
            # MatMul + Add(bias) alone is an ordinary linear layer, not something to fold.
            n_back, back_refusal = 0, back_refusal or Refusal(R.NO_LINEAR_NEIGHBOUR)
        back_plan = None
        slices, self.pending_slices = self.pending_slices, []
        if n_back:
            back_plan = Plan(R.BACKWARD, back_partner, chain[:n_back], [], back_layout, slices=slices)
            self.apply(back_plan)
        start, fwd_plan, fwd_refusal = self.forward(chain[n_back:]) if n_back < len(chain) else (0, None, None)
        start += n_back
        if fwd_plan is not None:
            self.apply(fwd_plan)
        for i, affine in enumerate(chain):
            if i == 0 and bias_add:
                continue
            if i < n_back:
                back_plan.decisions.append(self.decide(affine, R.FOLDED, R.BACKWARD, back_partner, slices=slices))
            elif i >= start:
                fwd_plan.decisions.append(self.decide(affine, R.FOLDED, R.FORWARD, fwd_plan.partner))
            else:
                refusal = _pick(back_refusal, fwd_refusal)
                if chain_has_bn(chain) or refusal.reason not in _GENERIC + (R.NON_CONSTANT_PARAMETERS,):
                    self.decide(affine, R.SKIPPED, refusal=refusal)

    def apply(self, plan: Plan) -> None:
        """Fold the plan into the partner (pending until finalize checks the result fits the dtype)."""
        layout = plan.layout
        pairs = [a.per_channel(layout.rank, layout.axis, layout.channels) for a in plan.chain]
        s, t = compose(pairs, layout.channels)
        if plan.spread > 1:
            s, t = np.repeat(s, plan.spread), np.repeat(t, plan.spread)
        if plan.slices:
            for partner, start, stop in plan.slices:
                partner.fold_backward(s[start:stop], t[start:stop])
        else:
            (plan.partner.fold_backward if plan.direction == R.BACKWARD else plan.partner.fold_forward)(s, t)
        self.out.plans.append(plan)

    def decide(self, affine: Affine, outcome: str, direction: str | None = None, partner: Partner | None = None,
               refusal: Refusal | None = None, slices: list | None = None) -> R.Decision:
        detail = _describe(outcome, direction, partner) if refusal is None else refusal.detail
        if slices:
            detail = (f"{outcome} {direction} into " + ", ".join(f"{p.op} '{node_label(p.node)}'" for p, _, _ in slices)
                      + " (each its channels of the Concat)")
        decision = R.Decision(
            node=node_label(affine.node), op_type=affine.node.op_type, outcome=outcome, direction=direction,
            partner=None if partner is None else node_label(partner.node),
            partner_op=None if partner is None else partner.op,
            reason=None if refusal is None else refusal.reason,
            detail=detail, graph=self.label, overridable=affine.overridable or bool(partner and partner.overridable),
        )
        self.out.decisions.append(decision)
        return decision

    # -- the graph -------------------------------------------------------------------------------

    def run(self) -> GraphAnalysis:
        affines: dict[int, Affine] = {}
        for node in self.graph:
            try:
                affine = as_affine(node, self.consts)
                if affine is not None and affine.overridable and self.strict_inputs:
                    raise Refusal(R.OVERRIDABLE_PARAMETERS,
                                  "a parameter is an initializer that is also a graph input")
            except Refusal as refusal:
                self.out.decisions.append(R.Decision(
                    node=node_label(node), op_type=node.op_type, outcome=R.SKIPPED, reason=refusal.reason,
                    detail=refusal.detail, graph=self.label,
                    overridable=refusal.reason == R.OVERRIDABLE_PARAMETERS))
                continue
            if affine is not None:
                affines[id(node)] = affine
        for chain in _chains(self.graph, affines):
            self.chain(chain)
        order = {node_label(node): i for i, node in enumerate(self.graph)}
        self.out.decisions.sort(key=lambda d: order.get(d.node, len(order)))
        return self.out


def chain_has_bn(chain: list[Affine]) -> bool:
    return any(a.is_bn for a in chain)


def _next_in_chain(affine: Affine, affines: dict[int, Affine]) -> Affine | None:
    out = affine.output
    if out.is_graph_output():
        return None
    uses = list(out.uses())
    if len(uses) != 1:
        return None
    successor = affines.get(id(uses[0].node))
    if successor is None or successor.data_index != uses[0].idx:
        return None
    return successor


def _chains(graph: ir.Graph, affines: dict[int, Affine]) -> list[list[Affine]]:
    successors = {}
    for key, affine in affines.items():
        nxt = _next_in_chain(affine, affines)
        if nxt is not None:
            successors[key] = nxt
    heads_excluded = {id(a.node) for a in successors.values()}
    chains = []
    for node in graph:
        key = id(node)
        if key in affines and key not in heads_excluded:
            chain = [affines[key]]
            while id(chain[-1].node) in successors:
                chain.append(successors[id(chain[-1].node)])
            chains.append(chain)
    return chains


def _pick(back: Refusal | None, fwd: Refusal | None) -> Refusal:
    candidates = [r for r in (back, fwd) if r is not None]
    specific = [r for r in candidates if r.reason not in _GENERIC]
    if specific:
        return specific[0]
    for reason in (R.NONLINEARITY_BETWEEN, R.LAYOUT_OP_BETWEEN):
        if any(r.reason == reason for r in candidates):
            return next(r for r in candidates if r.reason == reason)
    return candidates[0] if candidates else Refusal(R.NO_LINEAR_NEIGHBOUR)


def _describe(outcome: str, direction: str | None, partner: Partner | None) -> str:
    if partner is None:
        return outcome
    return f"{outcome} {direction} into {partner.op} '{node_label(partner.node)}'"


def finalize(analysis: GraphAnalysis, write: Callable[[Partner, np.ndarray], None] | None = None,
             max_growth: float | None = None) -> list[Partner]:
    """Refuse the plans of any touched partner whose folded weight overflows its dtype or loses precision
    below its normal range, and hand the others' folded weights to `write`, each materialized once. Without
    `write` (an analysis) no folded weight is materialized: the largest |value| decides overflow and range
    growth alike. `max_growth`: refuse folds that widen a weight's per-tensor range more than this (an
    int8-friendly model; bnfold.fold.ranges). Returns the partners whose folds stand."""
    touched = [p for p in analysis.partners.values() if p.touched]
    bad, magnitudes = {}, {}

    def refusal(partner: Partner, after: float) -> tuple[str, str] | None:
        detail, reason = partner.overflow(after), R.OVERFLOW
        if detail is None:
            detail, reason = partner.underflow(), R.UNDERFLOW
        if detail is None and max_growth is not None:
            growth = range_growth(magnitude(partner.weight.array), after, partner.scales, partner.channel_scales)
            if growth is not None and growth.growth > max_growth:
                detail, reason = (f"folding widens the per-tensor weight range of {partner.op} "
                                  f"'{node_label(partner.node)}' {growth.growth:.0f}x (BN channel "
                                  f"{growth.worst_channel}), over --max-range-growth {max_growth:g}"), R.RANGE_GROWTH
        return None if detail is None else (reason, detail)

    # A plan across a Concat's producers stands or falls with all of them: a partner that keeps a refused
    # plan's scale pending cannot be written, and its other plans go too. So those partners are judged
    # first, without materializing anything; every other partner's plans are its own.
    spanning = {id(p): p for plan in analysis.plans if plan.slices for p in plan.partners}
    for partner in spanning.values():
        magnitudes[id(partner)] = partner.folded_magnitude()
        hit = refusal(partner, magnitudes[id(partner)])
        partner.weight.release()  # a mapped weight's pages leave RSS until it is read again to be written
        if hit is not None:
            bad[id(partner)] = hit
    spread = True
    while spread:
        spread = False
        for plan in analysis.plans:
            hit = next((bad[id(p)] for p in plan.partners if id(p) in bad), None)
            for partner in plan.partners if hit is not None else ():
                if id(partner) not in bad:
                    bad[id(partner)], spread = hit, True
    good, growths = [], {}
    for partner in touched:
        if id(partner) in bad:
            continue
        weight = partner.folded_weight() if write is not None else None
        after = magnitude(weight) if weight is not None else magnitudes.get(id(partner))
        after = partner.folded_magnitude() if after is None else after
        hit = refusal(partner, after) if id(partner) not in spanning else None
        if hit is None:
            growths[id(partner)] = range_growth(magnitude(partner.weight.array), after, partner.scales,
                                                partner.channel_scales)
        partner.weight.release()
        if hit is not None:
            bad[id(partner)] = hit
        else:
            good.append(partner)
            if write is not None:
                write(partner, weight)
        del weight
    kept = []
    for plan in analysis.plans:
        hit = next((bad[id(p)] for p in plan.partners if id(p) in bad), None)
        if hit is None:
            kept.append(plan)
            continue
        for decision in plan.decisions:
            decision.outcome = R.SKIPPED
            decision.reason, decision.detail = hit
            decision.direction = decision.partner = decision.partner_op = None
    analysis.plans = kept
    for plan in analysis.plans:
        # the widest partner's figures; its worst channel counted in the Concat's channels
        found = [(growths[id(p)], start) for p, start in ((p, s[1]) for s in plan.slices for p in [s[0]])
                 if growths.get(id(p)) is not None] if plan.slices else \
            [(growths[id(plan.partner)], 0)] if growths.get(id(plan.partner)) is not None else []
        growth, offset = max(found, key=lambda g: g[0].growth, default=(None, 0))
        for decision in plan.decisions if growth is not None else ():
            decision.range_growth = round(growth.growth, 4)
            decision.worst_channel = growth.worst_channel + offset
    return good


def analyze_graph(graph: ir.Graph, label: str, consts: ConstantResolver, shapes: ShapeOracle,
                  strict_inputs: bool) -> GraphAnalysis:
    return _Analyzer(graph, label, consts, shapes, strict_inputs).run()

"""Fold inference-mode BatchNormalization (and decomposed per-channel affine ops) into linear ops.

    result = fold_model(model)          # an onnx_ir.Model, rewritten in place
    decisions = analyze_model(model)    # the same decisions, the model untouched
"""

from __future__ import annotations

import onnx_ir as ir

from bnfold.fold.analysis import GraphAnalysis, analyze_graph, finalize
from bnfold.fold.branches import plan_merges, record_merges
from bnfold.fold.constants import ConstantResolver
from bnfold.fold.result import BACKWARD, Decision, FoldResult
from bnfold.fold.rewrite import Names, Rewriter
from bnfold.fold.shapes import ShapeOracle

__all__ = ["Decision", "FoldResult", "analyze_model", "fold_model"]


def _analyze(model: ir.Model, strict_inputs: bool) -> tuple[list[GraphAnalysis], ShapeOracle]:
    shapes = ShapeOracle(model)
    consts = ConstantResolver(model.ir_version, shapes)
    analyses = [analyze_graph(graph, _label(model, graph), consts, shapes, strict_inputs) for graph in model.graphs()]
    return analyses, shapes


def _label(model: ir.Model, graph: ir.Graph) -> str:
    """Decisions name the subgraph they are in; the main graph is the unnamed default."""
    return "" if graph is model.graph else (graph.name or "subgraph")


def _count_nodes(model: ir.Model) -> int:
    return sum(1 for graph in model.graphs() for _ in graph)


def analyze_model(model: ir.Model, *, strict_inputs: bool = False, max_growth: float | None = None) -> list[Decision]:
    """What fold_model would do to each BatchNormalization and affine op, without changing the model."""
    analyses, shapes = _analyze(model, strict_inputs)
    shapes.restore()
    consts = ConstantResolver(model.ir_version)
    for graph, analysis in zip(model.graphs(), analyses):
        finalize(analysis, max_growth=max_growth)
        # the Convs the BNs will have folded into, seen through those BNs: the merges fold_model will make
        through = {id(plan.chain[-1].output): plan.partner for plan in analysis.plans
                   if plan.direction == BACKWARD and plan.partner.op == "Conv"}
        folded = frozenset(id(affine.node) for plan in analysis.plans for affine in plan.chain)
        merges, refusals = plan_merges(graph, consts, strict_inputs, through, folded)
        record_merges(analysis.decisions, merges, refusals, _label(model, graph))
    return [d for a in analyses for d in a.decisions]


def fold_model(model: ir.Model, *, strict_inputs: bool = False, store=None,
               max_growth: float | None = None) -> FoldResult:
    """Fold every foldable BatchNormalization / affine op in `model` (in place) and say what happened.

    `store(array, name, dtype) -> tensor` makes the new weight tensors (default: in memory; bnfold.io's
    TensorSpill keeps them in a file for models larger than memory). `max_growth`: refuse folds that widen a
    weight's per-tensor range more than this (reason range-growth), keeping the model int8-friendly."""
    before = _count_nodes(model)
    analyses, shapes = _analyze(model, strict_inputs)
    # Shapes inferred for the analysis go before rewriting: values the rewrite moves keep their own info.
    shapes.restore()
    rewriter = Rewriter(Names(model), model, store, max_growth)
    for analysis in analyses:
        rewriter.apply(analysis)
    # Parallel branches merge once their BNs are in their Convs; constants are read afresh (weights changed).
    consts = ConstantResolver(model.ir_version)
    for graph, analysis in zip(model.graphs(), analyses):
        merges, refusals = plan_merges(graph, consts, strict_inputs)
        rewriter.merge(merges)
        record_merges(analysis.decisions, merges, refusals, _label(model, graph))
    return FoldResult(
        decisions=[d for a in analyses for d in a.decisions],
        nodes_before=before,
        nodes_after=_count_nodes(model),
        removed_inputs=rewriter.removed_inputs,
        checkpoints=rewriter.checkpoints,
    )

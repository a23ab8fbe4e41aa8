"""BN012: initializers of a BatchNormalization (or of the layer before it) are also graph inputs, so a caller
may override them and runtimes cannot treat them as constants. One finding per model: one export setting
(PyTorch's keep_initializers_as_inputs, or IR < 4 habits kept by old exporters) causes it everywhere."""

from __future__ import annotations

from bnfold.lint.context import LINEAR, LintContext, is_op, upstream
from bnfold.lint.finding import WARNING, RuleInfo

RULE = RuleInfo("BN012", "overridable-batchnorm-parameters", WARNING,
                "BatchNormalization initializers (or the weights before it) are also graph inputs")

FIX_PYTORCH = ("re-export without keep_initializers_as_inputs=True, or drop these initializers from graph.input "
               "(onnxruntime's tools/python/remove_initializer_from_input.py)")
FIX_OTHER = "drop these initializers from graph.input (onnxruntime's tools/python/remove_initializer_from_input.py)"


def _layer_parameters(value) -> list:
    """The weight/bias inputs of the linear layer feeding `value`, including a bias Add after a MatMul."""
    node, extra = upstream(value), []
    if is_op(node, frozenset({"Add"})):
        for operand in node.inputs:
            producer = upstream(operand) if operand is not None else None
            if is_op(producer, LINEAR):
                node, extra = producer, [v for v in node.inputs if v is not operand]
                break
    if not is_op(node, LINEAR):
        return []
    return [v for v in (*node.inputs[1:], *extra) if v is not None]


def check(ctx: LintContext):
    if ctx.model.ir_version < 4:  # IR < 4 had to list every initializer as an input: no override meant
        return
    overridable = []
    for bn in ctx.batchnorm_forms:
        own = [v for op in bn.ops for v in op.inputs[1:] if v is not None and v is not bn.input]
        # a plain graph input (no initializer) is a run-time value by design: fold reports it, not this rule
        params = [v for v in (*own, *_layer_parameters(bn.input)) if v.is_graph_input() and v.is_initializer()]
        if params:
            overridable.append((bn.graph, bn.node, f"{ctx.bn_label(bn)} ('{params[0].name}'"
                                + (f" and {len(params) - 1} more)" if len(params) > 1 else ")")))
    yield from ctx.per_model(
        RULE, overridable,
        "{n} BatchNormalization {read} initializers that are also graph inputs, which a caller may override, so "
        "runtimes cannot fold or constant-fold them",
        FIX_PYTORCH if ctx.framework == "pytorch" else FIX_OTHER)

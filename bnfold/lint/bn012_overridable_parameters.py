"""BN012: BatchNormalization parameters (or the weights before it) are graph inputs that can be overridden."""

from __future__ import annotations

from bnfold.fold.analysis import node_label
from bnfold.lint.context import LINEAR, LintContext, is_op, upstream
from bnfold.lint.finding import WARNING, RuleInfo

RULE = RuleInfo("BN012", "overridable-batchnorm-parameters", WARNING,
                "BatchNormalization parameters or the weights before it are graph inputs")


def _layer_parameters(bn) -> list:
    """The weight/bias inputs of the linear layer feeding `bn`, including a bias Add after a MatMul."""
    node, extra = upstream(bn.inputs[0]), []
    if is_op(node, frozenset({"Add"})):
        for value in node.inputs:
            producer = upstream(value) if value is not None else None
            if is_op(producer, LINEAR):
                node, extra = producer, [v for v in node.inputs if v is not value]
                break
    if not is_op(node, LINEAR):
        return []
    return [v for v in (*node.inputs[1:], *extra) if v is not None]


def check(ctx: LintContext):
    for graph, bn in ctx.batchnorms:
        params = [v for v in bn.inputs[1:5] if v is not None and v.is_graph_input()]
        params += [v for v in _layer_parameters(bn) if v.is_graph_input()]
        if ctx.model.ir_version < 4:
            params = [v for v in params if not v.is_initializer()]
        if params:
            names = ", ".join(f"'{v.name}'" for v in params[:4]) + (" ..." if len(params) > 4 else "")
            yield ctx.finding(
                RULE, graph, bn,
                f"BatchNormalization '{node_label(bn)}' reads {names} from graph inputs: runtimes treat them "
                "as values that may change per run, so they cannot fold or constant-fold them",
                "export without keep_initializers_as_inputs (PyTorch) so parameters are plain initializers",
            )

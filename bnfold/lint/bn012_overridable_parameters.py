"""BN012: BatchNormalization parameters (or the weights before it) are graph inputs that can be overridden."""

from __future__ import annotations

from bnfold.fold.analysis import node_label
from bnfold.lint.context import LintContext, upstream
from bnfold.lint.finding import WARNING, RuleInfo

RULE = RuleInfo("BN012", "overridable-batchnorm-parameters", WARNING,
                "BatchNormalization parameters or the weights before it are graph inputs")


def check(ctx: LintContext):
    for graph, bn in ctx.batchnorms:
        params = [v for v in bn.inputs[1:5] if v is not None and v.is_graph_input()]
        producer = upstream(bn.inputs[0])
        if producer is not None:
            params += [v for v in producer.inputs[1:] if v is not None and v.is_graph_input()]
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

"""BN009: BatchNormalization that `bnfold fold` would fold is still in the model (one finding per model)."""

from __future__ import annotations

from bnfold.fold.result import FOLDED
from bnfold.lint.context import LintContext
from bnfold.lint.finding import INFO, RuleInfo

# info, not warning: onnxruntime fuses Conv+BatchNormalization itself, so an unfolded model runs right and
# nearly as fast there; folding matters for runtimes and quantizers that do not fuse (see the rule page)
RULE = RuleInfo("BN009", "unfolded-batchnorm", INFO,
                "BatchNormalization that `bnfold fold` would fold is still in the model")


def check(ctx: LintContext):
    if ctx.from_keras:  # a Keras file is not deployed as is: `bnfold fold` folds its ONNX conversion
        return
    foldable = []
    for bn in ctx.batchnorm_forms:
        # a decomposed BN counts when every one of its ops folds (fold decides op by op)
        decisions = [ctx.decision(bn.graph, op) for op in bn.ops]
        if all(d is not None and d.outcome == FOLDED for d in decisions):
            first = decisions[0]
            partner = ctx.label_of(bn.graph, first.partner, first.partner_op)
            foldable.append((bn.graph, bn.node, f"{ctx.bn_label(bn)} {first.direction} into {partner}"))
    # one cause (the model was not folded before shipping): one finding, however many BN it leaves
    yield from ctx.per_model(RULE, foldable, "{n} BatchNormalization {are} foldable but still in the model",
                             "run `bnfold fold IN OUT` before deploying")

"""BN006: BatchNormalization left in training mode: outputs depend on the batch they are computed with."""

from __future__ import annotations

from bnfold.fold.affine import batchnorm_training
from bnfold.fold.analysis import node_label
from bnfold.lint.context import LintContext
from bnfold.lint.finding import ERROR, RuleInfo

RULE = RuleInfo("BN006", "batchnorm-in-training-mode", ERROR,
                "BatchNormalization runs in training mode (training_mode=1 or running-stat outputs used)")


def check(ctx: LintContext):
    for graph, bn in ctx.batchnorms:
        if batchnorm_training(bn):
            attr = bn.attributes.get("training_mode")
            why = "training_mode=1" if attr is not None and attr.value else "its running mean/var outputs are used"
            yield ctx.finding(
                RULE, graph, bn,
                f"BatchNormalization '{node_label(bn)}' runs in training mode ({why}): it normalizes with the "
                "statistics of each batch, so a sample's output depends on the rest of its batch",
                "export in inference mode (PyTorch: model.eval() before torch.onnx.export; Keras: training=False)",
            )

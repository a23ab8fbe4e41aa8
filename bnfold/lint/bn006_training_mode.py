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
            label = node_label(bn)
            if ctx.from_keras:  # the lowering sets training_mode from the call's fixed training=True
                when = ("in predict too: tf_keras lets it win over training=False, and the ONNX tf2onnx writes "
                        "(moving statistics) will not match the model" if ctx.keras_format == "legacy" else
                        "whenever the model is called without training= (predict and export pass False)")
                message = (f"BatchNormalization '{label}' is called with training=True: it normalizes with the "
                           f"statistics of each batch {when}")
                fix = (f"drop training=True from the call of '{label}': Keras passes training itself "
                       "(True in fit, False in predict and export)")
            else:
                attr = bn.attributes.get("training_mode")
                why = "training_mode=1" if attr is not None and attr.value else "its running mean/var outputs are used"
                message = (f"BatchNormalization '{label}' runs in training mode ({why}): it normalizes with the "
                           "statistics of each batch, so a sample's output depends on the rest of its batch")
                fix = "export in inference mode (PyTorch: model.eval() before torch.onnx.export; Keras: training=False)"
            yield ctx.finding(RULE, graph, bn, message, fix)

"""BN006: BatchNormalization left in training mode: outputs depend on the batch they are computed with."""

from __future__ import annotations

from bnfold.fold.affine import batchnorm_training
from bnfold.lint.context import LintContext
from bnfold.lint.finding import ERROR, RuleInfo

RULE = RuleInfo("BN006", "batchnorm-in-training-mode", ERROR,
                "BatchNormalization runs in training mode (training_mode=1 or running-stat outputs used)")


FIXES = {
    "pytorch": "export in inference mode: model.eval() before torch.onnx.export (or training=TrainingMode.EVAL)",
    "tensorflow": "export in inference mode: convert with training=False and no training=True in BN calls",
    None: "export the model in inference mode (PyTorch: model.eval(); Keras: training=False)",
}


def _keras_call(ctx: LintContext, graph: str, bn):
    """A Keras BN called with training=True: a choice made per call, so a finding per layer."""
    label = ctx.layer_label(bn)
    when = ("in predict too: tf_keras lets it win over training=False, and the ONNX tf2onnx writes "
            "(moving statistics) will not match the model" if ctx.keras_format == "legacy" else
            "whenever the model is called without training= (predict and export pass False)")
    return ctx.finding(
        RULE, graph, bn,
        f"{label} is called with training=True: it normalizes with the statistics of each batch {when}",
        f"drop training=True from the call of '{ctx.keras_layer(bn)}': Keras passes training itself (True in fit, "
        "False in predict and export)")


def check(ctx: LintContext):
    training = [(graph, bn) for graph, bn in ctx.batchnorms if batchnorm_training(bn)]
    if ctx.from_keras:  # the lowering sets training_mode from the call's fixed training=True
        yield from (_keras_call(ctx, graph, bn) for graph, bn in training)
        return
    items = []
    for graph, bn in training:
        attr = bn.attributes.get("training_mode")
        why = "training_mode=1" if attr is not None and attr.value else "its running mean/var outputs are used"
        items.append((graph, bn, f"{ctx.layer_label(bn)} ({why})"))
    # an export in training mode puts every BN there: one finding with the count
    yield from ctx.per_model(
        RULE, items,
        "{n} BatchNormalization {are} in training mode, normalizing with the statistics of each batch (a "
        "sample's output depends on the rest of its batch)",
        FIXES[ctx.framework])

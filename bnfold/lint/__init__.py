"""BatchNormalization lint rules. One module per rule; ALL_RULES is the registry (no import side effects).

    findings = lint_model(model, "model.onnx")   # every rule, unfiltered; selection is the caller's job
"""

from __future__ import annotations

from bnfold.lint import (
    bn001_redundant_bias,
    bn002_batchnorm_before_softmax,
    bn003_missing_batchnorm,
    bn004_inconsistent_placement,
    bn005_dropout_before_batchnorm,
    bn006_training_mode,
    bn007_untrained_statistics,
    bn008_degenerate_statistics,
    bn009_unfolded_batchnorm,
    bn010_consecutive_batchnorm,
    bn011_batchnorm_on_input,
    bn012_overridable_parameters,
    bn013_batchnorm_axis_not_channels,
    bn014_momentum_convention,
    bn015_folded_range_growth,
    bn016_placeholder_statistics,
)
from bnfold.lint.finding import Finding, RuleInfo

ALL_RULES = (
    bn001_redundant_bias,
    bn002_batchnorm_before_softmax,
    bn003_missing_batchnorm,
    bn004_inconsistent_placement,
    bn005_dropout_before_batchnorm,
    bn006_training_mode,
    bn007_untrained_statistics,
    bn008_degenerate_statistics,
    bn009_unfolded_batchnorm,
    bn010_consecutive_batchnorm,
    bn011_batchnorm_on_input,
    bn012_overridable_parameters,
    bn013_batchnorm_axis_not_channels,
    bn014_momentum_convention,
    bn015_folded_range_growth,
    bn016_placeholder_statistics,
)

RULES: dict[str, RuleInfo] = {module.RULE.code: module.RULE for module in ALL_RULES}

__all__ = ["ALL_RULES", "RULES", "Finding", "RuleInfo", "lint_model"]


def lint_model(model, path: str, *, codes: frozenset[str] | None = None, options=None) -> list[Finding]:
    """Findings of the rules in `codes` (all when None) on an onnx_ir.Model, in rule then graph order."""
    from bnfold.lint.context import LintContext, LintOptions

    ctx = LintContext(model, path, options or LintOptions())
    findings = []
    try:
        for module in ALL_RULES:
            if codes is None or module.RULE.code in codes:
                findings.extend(f for f in module.check(ctx) if not ctx.suppressed(f))
    finally:
        ctx.shapes.restore()  # linting leaves the model as it found it
    return findings

"""What the fold analysis decided for each BatchNormalization / affine op, and the totals."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

FOLDED = "folded"
SKIPPED = "skipped"

BACKWARD = "backward"
FORWARD = "forward"
# into the one Conv that parallel branches of the same input merge into (bnfold.fold.branches)
MERGED = "merged"

# Reason codes for a skip. Stable: the JSON report and lint rule BN009 use them.
TRAINING_MODE = "training-mode"
NON_CONSTANT_PARAMETERS = "non-constant-parameters"
OVERRIDABLE_PARAMETERS = "overridable-parameters"
SHARED_OUTPUT = "shared-output"
GRAPH_OUTPUT = "graph-output"
NONLINEARITY_BETWEEN = "nonlinearity-between"
LAYOUT_OP_BETWEEN = "layout-op-between"
NO_LINEAR_NEIGHBOUR = "no-linear-neighbour"
PADDING_FORWARD = "padding-forward"
CHANNEL_AXIS_MISMATCH = "channel-axis-mismatch"
UNKNOWN_SHAPE = "unknown-shape"
UNSUPPORTED_DTYPE = "unsupported-dtype"
UNSUPPORTED_PARTNER = "unsupported-partner"
NON_POSITIVE_SCALE = "non-positive-scale"
DEGENERATE_STATISTICS = "degenerate-statistics"
OVERFLOW = "overflow"
UNDERFLOW = "underflow"
RANGE_GROWTH = "range-growth"
MALFORMED = "malformed-parameters"
BRANCHES_MISALIGNED = "branches-misaligned"
CONCAT_NOT_LINEAR = "concat-not-linear"

REASONS = {
    TRAINING_MODE: "BatchNormalization runs in training mode (training_mode=1 or running-stat outputs used)",
    NON_CONSTANT_PARAMETERS: "a parameter is computed at run time (graph input or input-dependent op)",
    OVERRIDABLE_PARAMETERS: "a parameter is an initializer that is also a graph input (--strict-inputs)",
    SHARED_OUTPUT: "an intermediate output is used by another node",
    GRAPH_OUTPUT: "an intermediate output is a graph output",
    NONLINEARITY_BETWEEN: "a nonlinearity sits between it and the nearest linear op",
    LAYOUT_OP_BETWEEN: "a layout op (Reshape, Transpose, ...) sits between it and the nearest linear op",
    NO_LINEAR_NEIGHBOUR: "no Conv/ConvTranspose/Gemm/MatMul next to it",
    PADDING_FORWARD: "the next Conv pads its input, and zero padding is not an affine image of the input",
    CHANNEL_AXIS_MISMATCH: "its channel axis is not the linear op's channel/feature axis",
    UNKNOWN_SHAPE: "a shape needed to map channels is not known statically",
    UNSUPPORTED_DTYPE: "the weight or parameter dtype cannot be folded",
    UNSUPPORTED_PARTNER: "the neighbouring op cannot absorb it exactly",
    NON_POSITIVE_SCALE: "a scale is <= 0, so it does not commute with MaxPool",
    DEGENERATE_STATISTICS: "variance + epsilon <= 0, or a parameter is NaN/Inf",
    OVERFLOW: "the folded weights overflow the weight dtype",
    RANGE_GROWTH: "the fold would widen the weight's per-tensor range past --max-range-growth (int8-friendly)",
    UNDERFLOW: "rounding the folded weights costs more than twice their dtype's normal-range error (values pushed "
               "below the normal range lose the precision the original keeps)",
    MALFORMED: "a parameter's shape or dtype does not fit the op (onnxruntime would reject the model)",
    CONCAT_NOT_LINEAR: "it follows a Concat with an input that is not the output of its own linear op",
    BRANCHES_MISALIGNED: "parallel Conv branches of one input differ in strides, dilations, groups, channels or "
                         "padding, so their kernels cannot be summed",
}


@dataclass
class Decision:
    """The outcome for one BatchNormalization or decomposed affine op (Mul/Add/Sub/Div by a constant)."""

    node: str
    op_type: str
    outcome: str
    direction: str | None = None
    partner: str | None = None
    partner_op: str | None = None
    reason: str | None = None
    detail: str = ""
    graph: str = ""
    overridable: bool = False
    # folded only: how much the fold widened the partner's per-tensor weight range (bnfold.fold.ranges), and
    # the channel of the BatchNormalization(s) folded into it with the largest scale over the median
    range_growth: float | None = None
    worst_channel: int | None = None
    # an Add of parallel branches (bnfold.fold.branches): how many branches it summed, merged or not
    branches: int = 0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class FoldResult:
    decisions: list[Decision] = field(default_factory=list)
    nodes_before: int = 0
    nodes_after: int = 0
    removed_inputs: list[str] = field(default_factory=list)
    # One per folded main-graph layer: the tensor after it, in the folded and in the original model.
    checkpoints: list = field(default_factory=list)

    def of_op(self, op_type: str) -> list[Decision]:
        return [d for d in self.decisions if d.op_type == op_type]

    @property
    def folded(self) -> list[Decision]:
        return [d for d in self.decisions if d.outcome == FOLDED]

    @property
    def skipped(self) -> list[Decision]:
        return [d for d in self.decisions if d.outcome == SKIPPED]

    def summary(self, *, planned: bool = False) -> str:
        """One line of totals; `planned` words it as a plan (a dry run folds nothing)."""
        bns = self.of_op("BatchNormalization")
        folded_bn = [d for d in bns if d.outcome == FOLDED]
        into = Counter(f"{d.direction} into {d.partner_op}" for d in folded_bn)
        parts = ", ".join(f"{n} {k}" for k, n in sorted(into.items(), key=lambda kv: -kv[1]))
        line = f"{'would fold' if planned else 'folded'} {len(folded_bn)}/{len(bns)} BatchNormalization"
        if parts:
            line += f": {parts}"
        others = [d for d in self.decisions if d.op_type != "BatchNormalization" and not d.branches]
        if others:
            line += f"; {sum(d.outcome == FOLDED for d in others)}/{len(others)} affine Mul/Add/Sub/Div"
        sums = [d for d in self.decisions if d.branches]
        if sums:
            line += (f"; {sum(d.outcome == FOLDED for d in sums)}/{len(sums)} sums of parallel branches "
                     f"{'would be ' if planned else ''}merged into one Conv")
        skipped = Counter(d.reason for d in self.skipped)
        line += f"; {len(self.skipped)} {'would be ' if planned else ''}skipped"
        if skipped:
            line += " (" + ", ".join(f"{n} {r}" for r, n in skipped.most_common()) + ")"
        line += f"; {self.nodes_before} nodes {'would become' if planned else 'become'} {self.nodes_after}"
        if planned:
            line += "; nothing written (--dry-run)"
        return line

    def to_json(self) -> dict:
        return {
            "version": 2,  # 2: verify judges against rounding noise (scale, error, noise, limit; per folded layer)
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "removed_initializer_inputs": self.removed_inputs,
            "decisions": [d.to_json() for d in self.decisions],
        }

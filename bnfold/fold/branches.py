"""Merge parallel branches into one Conv: Add(Conv_a(x), Conv_b(x), ..., s*x + t) -> Conv(x).

This is structural re-parameterization (RepVGG, MobileOne, ACNet) done on the ONNX graph, after the BN folds
have put each branch's BatchNormalization into its Conv. Convolution is linear in its kernel, so branches
that read the same x with the same strides, dilations and group sum to one Conv whose kernel is the sum of
theirs, each placed where its padding puts it:

- along each spatial axis, a k-tap kernel padded (p_begin, p_end) inside the merged K-tap kernel padded
  (P_begin, P_end) sits at tap o = (P_begin - p_begin) / dilation and needs P_end - p_end == (K - k - o) *
  dilation: then both read the same input pixels for every output pixel (a 1x1 Conv padded 0 is the centre of
  a 3x3 padded 1; a 1x3 padded (0, 1) is the middle row of a 3x3 padded (1, 1));
- an identity branch (x itself, or an inference BN / per-channel Mul/Add chain on x: RepVGG's and
  MobileOne's BN-only branch) is a kernel with s at the tap that reads the output's own pixel, per group: it
  needs stride 1, as many output channels as input channels, and that tap inside the merged kernel.

A branch set that does not line up (strides, dilations, groups, channels or paddings differ) is refused with
the reason `branches-misaligned`, and the graph is left as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import ml_dtypes
import numpy as np
import onnx_ir as ir

from bnfold.fold import result as R
from bnfold.fold.affine import FLOAT_TYPES, Refusal, as_affine, compose
from bnfold.fold.constants import ConstantResolver
from bnfold.fold.partners import Partner, node_label


@dataclass
class _Branch:
    node: ir.Node
    shape: tuple[int, ...]    # the weight's: [C_out, C_in / group, k...]
    weight: Callable[[], np.ndarray]  # float64, made only once the branches line up
    bias: np.ndarray          # float64, [C_out]
    dtype: ir.DataType
    pads: tuple[tuple[int, int], ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    group: int


@dataclass
class _Identity:
    nodes: list[ir.Node]      # the affine ops of the branch, in graph order (none for x itself)
    s: np.ndarray
    t: np.ndarray


@dataclass
class Merge:
    add: ir.Node                  # the Add whose output the merged Conv replaces
    adds: list[ir.Node]           # every Add of the tree, the root last
    keeper: _Branch               # the Conv that takes the merged kernel
    others: list[_Branch]
    identities: list[_Identity]
    weight: np.ndarray            # merged, in the Conv's dtype
    bias: np.ndarray
    kernel: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]


def _ints(node: ir.Node, name: str, default: list[int]) -> tuple[int, ...]:
    attr = node.attributes.get(name)
    return tuple(int(v) for v in attr.value) if attr is not None else tuple(default)


def _conv_branch(value: ir.Value, consts: ConstantResolver, strict_inputs: bool,
                 through: dict[int, Partner]) -> _Branch | None:
    """The Conv producing `value` alone for this Add, with constant weights and explicit padding, or None.
    `through`: values that a planned fold will make a Conv's output (the BN after it folds backward), with
    that Conv as a fold partner (its weight and bias as folded) — how an analysis sees the merge ahead."""
    if value.is_graph_output() or len(list(value.uses())) != 1:
        return None
    partner = through.get(id(value))
    if partner is not None:
        node, shape, dtype = partner.node, tuple(partner.shape), partner.dtype
        weight, bias = partner.weight64, partner.bias
    else:
        node = value.producer()
        if node is None or node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            return None
        const = consts.resolve(node.inputs[1])
        if const is None or const.dtype not in FLOAT_TYPES:
            return None
        has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
        b = consts.resolve(node.inputs[2]) if has_bias else None
        if (has_bias and b is None) or (strict_inputs and (const.overridable or (b is not None and b.overridable))):
            return None
        node, shape, dtype = node, tuple(const.shape), const.dtype
        bias = b.array.astype(np.float64).reshape(-1) if b is not None else None
        weight = lambda: const.array.astype(np.float64)  # noqa: E731 - deferred like Partner.weight64
    if node.op_type != "Conv" or len(shape) < 3:
        return None
    auto_pad = node.attributes.get("auto_pad")
    auto_pad = auto_pad.value if auto_pad is not None else "NOTSET"
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad not in ("NOTSET", "VALID"):
        return None
    spatial = len(shape) - 2
    if _ints(node, "kernel_shape", list(shape[2:])) != tuple(shape[2:]):
        return None
    pads = _ints(node, "pads", [0] * 2 * spatial) if auto_pad == "NOTSET" else (0,) * 2 * spatial
    bias = np.zeros(shape[0]) if bias is None else bias
    if len(pads) != 2 * spatial or bias.shape != (shape[0],):
        return None
    return _Branch(node, shape, weight, bias, dtype, tuple(zip(pads[:spatial], pads[spatial:])),
                   _ints(node, "strides", [1] * spatial), _ints(node, "dilations", [1] * spatial),
                   int(node.attributes["group"].value) if "group" in node.attributes else 1)


def _identity_branch(value: ir.Value, x: ir.Value, channels: int, rank: int,
                     consts: ConstantResolver) -> _Identity | None:
    """`value` as s * x + t per channel: x itself, or a chain of single-use affine ops from x."""
    nodes = []
    while value is not x:
        node = value.producer()
        if node is None or value.is_graph_output() or len(list(value.uses())) != 1:
            return None
        try:
            affine = as_affine(node, consts)
        except Refusal:
            return None
        if affine is None:
            return None
        nodes.append(affine)
        value = affine.data
    try:
        pairs = [a.per_channel(rank, 1, channels) for a in reversed(nodes)]
    except Refusal:
        return None
    s, t = compose(pairs, channels) if pairs else (np.ones(channels), np.zeros(channels))
    return _Identity([a.node for a in reversed(nodes)], s, t)


def _is_add(node: ir.Node) -> bool:
    return node.op_type == "Add" and node.domain in ("", "ai.onnx") and len(node.inputs) == 2


def _summands(add: ir.Node, folded: frozenset[int] = frozenset()) -> tuple[list[ir.Value], list[ir.Node]]:
    """The leaves of the tree of Adds rooted at `add` (inner Adds used only by the tree, and not an Add of a
    constant that a planned fold removes: ids in `folded`), and its Adds."""
    leaves, adds, work = [], [], [add]
    while work:
        node = work.pop()
        adds.append(node)
        for value in node.inputs:
            inner = value.producer() if value is not None else None
            if (inner is not None and id(inner) not in folded and _is_add(inner) and not value.is_graph_output()
                    and len(list(value.uses())) == 1):
                work.append(inner)
            else:
                leaves.append(value)
    return leaves, adds[::-1]


def plan_merge(add: ir.Node, consts: ConstantResolver, strict_inputs: bool = False,
               order: dict[int, int] | None = None, through: dict[int, Partner] | None = None,
               folded: frozenset[int] = frozenset()) -> Merge | None:
    """The merge of the branches summed by `add`, None when they are not parallel linear branches of one input
    (most Adds: a residual, a bias), or a Refusal when they are but do not line up."""
    leaves, adds = _summands(add, folded)
    if len(leaves) < 2 or any(v is None for v in leaves):
        return None
    branches = [_conv_branch(v, consts, strict_inputs, through or {}) for v in leaves]
    convs = [b for b in branches if b is not None]
    convs.sort(key=lambda b: (order or {}).get(id(b.node), 0))  # graph order: the first largest Conv keeps
    if not convs:
        return None
    x = convs[0].node.inputs[0]
    if any(b.node.inputs[0] is not x for b in convs):
        return None
    rest = [v for v, b in zip(leaves, branches) if b is None]
    channels = convs[0].shape[0]
    rank = len(convs[0].shape)
    identities = [_identity_branch(v, x, channels, rank, consts) for v in rest]
    if any(i is None for i in identities):
        return None
    label = f"the branches summed by Add '{node_label(add)}'"
    first = convs[0]
    for b in convs[1:]:
        for what, mine, theirs in (("strides", b.strides, first.strides), ("dilations", b.dilations, first.dilations),
                                   ("group", b.group, first.group), ("output channels", b.shape[0], channels),
                                   ("input channels", b.shape[1], first.shape[1]),
                                   ("dtype", b.dtype, first.dtype), ("rank", len(b.shape), rank)):
            if mine != theirs:
                raise Refusal(R.BRANCHES_MISALIGNED, f"{label} differ in {what} (Conv '{node_label(b.node)}' "
                              f"{mine}, Conv '{node_label(first.node)}' {theirs})")
    spatial = rank - 2
    kernel = tuple(max(b.shape[2 + d] for b in convs) for d in range(spatial))
    begin = tuple(max(b.pads[d][0] for b in convs) for d in range(spatial))
    dil = first.dilations
    offsets, end = [], []
    for b in convs:
        taps = []
        for d in range(spatial):
            shift = begin[d] - b.pads[d][0]
            if shift % dil[d]:
                raise Refusal(R.BRANCHES_MISALIGNED, f"{label}: Conv '{node_label(b.node)}' is padded "
                              f"{b.pads[d][0]} on axis {d + 2}, not a whole tap from the others' {begin[d]}")
            tap = shift // dil[d]
            if tap + b.shape[2 + d] > kernel[d]:
                raise Refusal(R.BRANCHES_MISALIGNED, f"{label}: Conv '{node_label(b.node)}' does not fit inside "
                              f"the merged {'x'.join(map(str, kernel))} kernel at its padding")
            taps.append(tap)
        offsets.append(taps)
        end.append(tuple(b.pads[d][1] + (kernel[d] - b.shape[2 + d] - taps[d]) * dil[d]
                         for d in range(spatial)))
    if len(set(end)) != 1:
        raise Refusal(R.BRANCHES_MISALIGNED, f"{label} read different pixels: their paddings "
                      f"({', '.join(f'{node_label(b.node)} {list(b.pads)}' for b in convs)}) do not centre their "
                      "kernels alike")
    pads = tuple(zip(begin, end[0]))
    weight = np.zeros((channels, first.shape[1], *kernel))
    bias = np.zeros(channels)
    for b, taps in zip(convs, offsets):
        place = (slice(None), slice(None), *(slice(o, o + k) for o, k in zip(taps, b.shape[2:])))
        weight[place] += b.weight()
        bias += b.bias
    if identities:
        cin_g = first.shape[1]
        if cin_g * first.group != channels:
            raise Refusal(R.BRANCHES_MISALIGNED, f"{label}: an identity branch needs as many output channels as "
                          f"input channels ({channels} out, {cin_g * first.group} in)")
        if any(s != 1 for s in first.strides):
            raise Refusal(R.BRANCHES_MISALIGNED, f"{label}: an identity branch needs stride 1, the Convs have "
                          f"{list(first.strides)}")
        centre = []
        for d in range(spatial):
            if begin[d] % dil[d] or begin[d] // dil[d] >= kernel[d] \
                    or end[0][d] != (kernel[d] - 1 - begin[d] // dil[d]) * dil[d]:
                raise Refusal(R.BRANCHES_MISALIGNED, f"{label}: the merged kernel does not read each output's own "
                              f"pixel on axis {d + 2} (pads {list(pads[d])}, kernel {kernel[d]}), which the "
                              "identity branch adds")
            centre.append(begin[d] // dil[d])
        rows = np.arange(channels)
        for identity in identities:
            weight[(rows, rows % cin_g, *centre)] += identity.s
            bias += identity.t
    keeper = max(convs, key=lambda b: (int(np.prod(b.shape[2:])), -convs.index(b)))
    dtype = keeper.dtype.numpy()
    limit = float(ml_dtypes.finfo(dtype).max)
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = weight.astype(dtype)
    if not np.isfinite(rounded).all() or (np.abs(bias) > limit).any():
        raise Refusal(R.OVERFLOW, f"the merged weight or bias of {label} exceeds the {keeper.dtype.name} range")
    return Merge(add, adds, keeper, [b for b in convs if b is not keeper], [i for i in identities if i is not None],
                 rounded, bias, kernel, pads)


def plan_merges(graph: ir.Graph, consts: ConstantResolver, strict_inputs: bool = False,
                through: dict[int, Partner] | None = None,
                folded: frozenset[int] = frozenset()) -> tuple[list[Merge], list[tuple[ir.Node, Refusal, int]]]:
    """Every tree of Adds in `graph` that sums parallel branches: the merges, and the refusals. A tree is
    tried whole from its root first; when the whole is no merge (a residual joins the sum), its inner Adds
    are tried on their own. An analysis, which rewrites nothing, passes `through` (see _conv_branch) and
    `folded`, the ids of the affine ops its plans remove (an Add of a constant is no branch sum)."""
    merges, refusals, taken = [], [], set()
    nodes = list(graph)
    order = {id(node): k for k, node in enumerate(nodes)}
    for node in reversed(nodes):  # roots come after their inner Adds
        if id(node) in taken or id(node) in folded or not _is_add(node):
            continue
        try:
            merge = plan_merge(node, consts, strict_inputs, order, through, folded)
        except Refusal as refusal:
            leaves, adds = _summands(node, folded)
            refusals.append((node, refusal, len(leaves)))
            taken.update(id(add) for add in adds)
            continue
        if merge is not None:
            merges.append(merge)
            taken.update(id(add) for add in merge.adds)
    return merges[::-1], refusals[::-1]


def record_merges(decisions: list[R.Decision], merges: list[Merge],
                  refusals: list[tuple[ir.Node, Refusal, int]], graph: str) -> None:
    """One decision per merged (or refused) Add; an identity branch's affine ops become folded into the Conv."""
    by_node = {(d.node, d.graph): d for d in decisions}
    for merge in merges:
        keeper = node_label(merge.keeper.node)
        for identity in merge.identities:
            for node in identity.nodes:
                decision = by_node.get((node_label(node), graph))
                if decision is None:
                    continue
                decision.outcome, decision.direction, decision.reason = R.FOLDED, R.MERGED, None
                decision.partner, decision.partner_op = keeper, "Conv"
                decision.detail = f"{R.FOLDED} {R.MERGED} into Conv '{keeper}' (an identity branch of Add " \
                                  f"'{node_label(merge.add)}')"
        parts = [f"{'x'.join(map(str, b.shape[2:]))} Conv '{node_label(b.node)}'"
                 for b in (merge.keeper, *merge.others)]
        parts += ["identity" if not i.nodes else f"identity {i.nodes[-1].op_type} '{node_label(i.nodes[-1])}'"
                  for i in merge.identities]
        decisions.append(R.Decision(
            node=node_label(merge.add), op_type="Add", outcome=R.FOLDED, direction=R.MERGED, partner=keeper,
            partner_op="Conv", graph=graph, branches=len(parts),
            detail=f"merged {len(parts)} branches ({', '.join(parts)}) into one "
                   f"{'x'.join(map(str, merge.kernel))} Conv '{keeper}'"))
    for add, refusal, branches in refusals:
        decisions.append(R.Decision(node=node_label(add), op_type="Add", outcome=R.SKIPPED, reason=refusal.reason,
                                    detail=refusal.detail, graph=graph, branches=branches))

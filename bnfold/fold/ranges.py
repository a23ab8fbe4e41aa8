"""How much a fold widens a weight's per-tensor range: what per-tensor int8 quantization pays for it.

Folding multiplies each channel of the weight by s = gamma / sqrt(var + eps). A scale common to all channels
costs a per-tensor quantizer nothing (its step grows with the range); a channel whose s is far above the
others' (a near-zero running variance) stretches the range, and every other channel gets that many times
fewer int8 levels. `growth` compares the folded range with what a uniform scale (the median |s|) would
give: 1 for a uniform fold, 71 when one channel's tiny variance makes the range 71 times wider.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

import numpy as np

# Flag (BN015, the fold report's note) from here: the other channels keep 1/10 of their int8 levels; measured
# by bench/quantization_bench.py, per-tensor int8 SQNR 38.7 dB at growth 1.4, 20.9 dB at 10.7, 2.0 dB at 102.
GROWTH_LIMIT = 10.0


@dataclass(frozen=True)
class RangeGrowth:
    growth: float        # folded max|W| / (median |s| * original max|W|)
    worst_channel: int   # the BatchNormalization channel with the largest |s| / median |s|
    worst_ratio: float   # that channel's |s| / median |s|


def magnitude(array: np.ndarray) -> float:
    """max |array| without a full-size temporary (weights can be hundreds of MB); NaN propagates."""
    return max(float(array.max()), -float(array.min())) if array.size else 0.0


def range_growth(before: float, after: float, scales: list[np.ndarray],
                 channel_scales: list[np.ndarray]) -> RangeGrowth | None:
    """The growth of the weight's largest |value| from `before` to `after` (folded), given the pending
    `scales` (shaped to broadcast against the weight) and the per-channel scales of the BatchNormalizations
    folded in. None when a range is zero or not finite (nothing to compare)."""
    typical = float(np.median(np.abs(reduce(np.multiply, scales))))
    if not all(np.isfinite(v) and v > 0 for v in (typical, before, after)):
        return None
    ratios = [np.abs(s) / np.median(np.abs(s)) for s in channel_scales if s.size and np.median(np.abs(s)) > 0]
    worst = max(ratios, key=lambda r: float(r.max()), default=None)
    channel = int(np.argmax(worst)) if worst is not None else 0
    return RangeGrowth(after / (typical * before), channel, float(worst[channel]) if worst is not None else 1.0)

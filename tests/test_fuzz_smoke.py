"""A short seeded run of the mutation fuzzer (bench/fuzz_fold.py): no mutated model may crash or hang lint
or fold, or be folded into a model whose outputs differ. The long runs are in the bench."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_seeded_fuzz_run_finds_no_crash_hang_or_wrong_fold(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        from fuzz_fold import fuzz
    finally:
        sys.path.remove(str(BENCH))
    report = fuzz(seed=7, cases=40, minutes=None, timeout=60, max_mem_gb=4.0, out_dir=tmp_path, log=lambda _: None)
    assert report["cases"] == 40
    assert report["signatures"] == {}
    assert sum(report["outcomes"]["fold"].values()) == 40
    assert report["outcomes"]["fold"].get("ok", 0) > 0  # the run reached the fold analysis, not only validation

"""Models PyTorch itself exported (sample_models/pytorch/, made by export_pytorch.py): every BatchNormalization
folds and the folded model computes the same outputs, whichever exporter wrote it."""

from __future__ import annotations

import runpy
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import ort_run

from bnfold.cli import cli
from bnfold.fold import analyze_model
from bnfold.io import load_model

FOLDER = Path(__file__).resolve().parents[1] / "sample_models" / "pytorch"
NAMES = ("resnetish_legacy.onnx", "resnetish_legacy_inputs.onnx", "resnetish_dynamo.onnx")
EXPECTED = Counter({("backward", "Conv"): 7, ("backward", "ConvTranspose"): 1, ("backward", "Gemm"): 1,
                    ("forward", "Gemm"): 1})


def test_the_export_script_lists_the_shipped_files():
    script = runpy.run_path(str(FOLDER / "export_pytorch.py"), run_name="export_pytorch")  # imports no torch
    assert script["FILES"] == NAMES
    assert sorted(p.name for p in FOLDER.glob("*.onnx")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_batchnorm_folds(name):
    decisions = [d for d in analyze_model(load_model(FOLDER / name)) if d.op_type == "BatchNormalization"]
    assert all(d.outcome == "folded" for d in decisions), [d for d in decisions if d.outcome != "folded"]
    assert Counter((d.direction, d.partner_op) for d in decisions) == EXPECTED


@pytest.mark.parametrize("name", NAMES)
def test_fold_cli_matches_onnxruntime(name, tmp_path):
    out = tmp_path / name
    result = CliRunner().invoke(cli, ["fold", str(FOLDER / name), str(out)])
    assert result.exit_code == 0, result.output
    assert "folded 10/10 BatchNormalization" in result.stdout
    folded = onnx.load(out)
    assert not any(n.op_type == "BatchNormalization" for n in folded.graph.node)
    x = {"x": np.random.default_rng(5).normal(size=(1, 3, 32, 32)).astype(np.float32)}
    np.testing.assert_allclose(ort_run(out, x)[0], ort_run(FOLDER / name, x)[0], rtol=1e-4, atol=1e-5)

"""Deep torchvision/timm architectures (random weights, exported by sample_models/architectures/): bnfold fold
writes and verifies every one, and deliberately wrong folds of them fail. Skips without torch, torchvision
and timm (`pip install torch==2.14.1 torchvision==0.29.1 timm`)."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import fold_copy

from bnfold.cli import cli
from bnfold.verify import verify_models

for module in ("torch", "torchvision", "timm"):
    pytest.importorskip(module)

SCRIPT = Path(__file__).resolve().parents[1] / "sample_models" / "architectures" / "export_architectures.py"
# name -> (the fold's summary up to its skip count, folded layers checked). MobileOne's and RepVGG's
# parallel branches (k x k Convs, a 1x1 Conv, an identity BN) merge into one Conv per block, their own
# re-parameterization: every BN goes, and each block is one checked layer. MixNet's BNs after a Concat of
# per-group Convs fold into each group's Conv.
EXPECTED = {
    "resnext50_32x4d": ("folded 53/53 BatchNormalization: 53 backward into Conv; 0 skipped", 53),
    "inception_v3": ("folded 94/94 BatchNormalization: 94 backward into Conv; 0 skipped", 94),
    "res2net50_14w_8s": ("folded 149/149 BatchNormalization: 149 backward into Conv; 0 skipped", 149),
    "mobileone_s0": ("folded 226/226 BatchNormalization: 191 backward into Conv, 35 merged into Conv; 21/21 affine "
                     "Mul/Add/Sub/Div; 43/43 sums of parallel branches merged into one Conv; 0 skipped", 43),
    "repvgg_a0": ("folded 61/61 BatchNormalization: 44 backward into Conv, 17 merged into Conv; 22/22 sums of "
                  "parallel branches merged into one Conv; 0 skipped", 22),
    "mixnet_s": ("folded 49/49 BatchNormalization: 49 backward into Conv; 0 skipped", 49),
}


# Every lint finding on each export: these networks are well built, so only the reminder to fold them
LINT = {
    "resnext50_32x4d": [("BN009", "/bn1/BatchNormalization")],
    "inception_v3": [("BN009", "/Conv2d_1a_3x3/bn/BatchNormalization")],
    "res2net50_14w_8s": [("BN009", "/bn1/BatchNormalization")],
    "mobileone_s0": [("BN009", "/stem/conv_scale/bn/BatchNormalization")],
    "repvgg_a0": [("BN009", "/stem/conv_1x1/bn/BatchNormalization")],
    "mixnet_s": [("BN009", "/bn1/BatchNormalization")],
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("architectures")
    export = runpy.run_path(str(SCRIPT), run_name="export_architectures")["export"]
    return {name: export(name, out) for name in EXPECTED}


@pytest.mark.parametrize("name", EXPECTED)
def test_fold_writes_a_verified_model(exported, tmp_path, name):
    summary, layers = EXPECTED[name]
    out = tmp_path / f"{name}.folded.onnx"
    result = CliRunner().invoke(cli, ["fold", str(exported[name]), str(out)])
    assert result.exit_code == 0, result.output
    assert summary + ";" in result.stdout, result.stdout.splitlines()[-6:]
    assert f"verified: 1 output and {layers} folded layers within limits over 3 batches" in result.stdout
    assert out.is_file()
    verify = CliRunner().invoke(cli, ["verify", str(exported[name]), str(out)])
    assert verify.exit_code == 0, verify.output
    assert verify.stdout.splitlines()[-1] == "verified: 1 output within limits over 3 batches"


def mutate(folded: onnx.ModelProto, conv: str, kind: str) -> onnx.ModelProto:
    wrong = onnx.ModelProto()
    wrong.CopyFrom(folded)
    node = next(n for n in wrong.graph.node if n.name == conv)
    weight = next(t for t in wrong.graph.initializer if t.name == node.input[1])
    w = onnx.numpy_helper.to_array(weight).copy()
    if kind == "scale":  # output channel 0 off by 1e4 units in the last place
        w[0] = (w[0].astype(np.float64) * (1 + 1e4 * np.finfo(np.float32).eps)).astype(np.float32)
    else:
        w[[0, 1]] = w[[1, 0]]
    weight.CopyFrom(onnx.numpy_helper.from_array(w, weight.name))
    return wrong


@pytest.mark.parametrize("name", EXPECTED)
def test_wrong_folds_fail_at_the_wrong_layer(exported, tmp_path, name):
    model = onnx.load(exported[name])
    folded, result = fold_copy(model)
    convs = [c.label for c in result.checkpoints]
    # one channel 1e4 ulp off is caught in the first Conv; in the last, that is within the layer's own
    # rounding noise (0.5-1.6x the limit measured), so only the swapped channel is asserted there
    for label, kind in ((convs[0], "scale"), (convs[0], "swap"), (convs[-1], "swap")):
        path = tmp_path / "wrong.onnx"
        onnx.save(mutate(folded, label.split("'")[1], kind), path)
        check = verify_models(exported[name], path, checkpoints=result.checkpoints)
        failed = [c for c in check.layers if not c.ok]
        assert not check.ok and failed[0].name == label, (kind, label)
        assert failed[0].error > 100 * failed[0].limit


@pytest.mark.parametrize("name", EXPECTED)
def test_lint_findings_are_the_pinned_ones(exported, name):
    from bnfold.io import load_model
    from bnfold.lint import lint_model

    found = lint_model(load_model(exported[name]), name)
    assert [(f.code, f.node) for f in found] == LINT[name]
    foldable = EXPECTED[name][0].split("/")[1].split()[0]  # every BN, merges included
    assert found[0].message.startswith(f"{foldable} BatchNormalization are foldable but still in the model")

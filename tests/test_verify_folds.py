"""Verification of folds: correct folds of deep and shallow networks pass, deliberately wrong ones fail and
name the folded layer that is wrong (bnfold fold checks the tensor after every folded layer, not only the
outputs)."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
from deep_models import deep_model, miswrite
from helpers import fold_copy, gemm_bn_model

from bnfold.verify import Checkpoint, verify_models

SAMPLES = "sample_models"


@functools.lru_cache(maxsize=None)
def folded_pair(layers: int, dtype: str):
    model = deep_model(layers, dtype=np.dtype(dtype).type)
    folded, result = fold_copy(model)
    assert len(result.folded) == layers
    return model, folded, tuple(result.checkpoints)


def save_pair(tmp_path, model, folded):
    onnx.save(model, tmp_path / "model.onnx")
    onnx.save(folded, tmp_path / "folded.onnx")
    return tmp_path / "model.onnx", tmp_path / "folded.onnx"


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("layers", [1, 100])
def test_correct_fold_passes_with_every_layer_checked(tmp_path, layers, dtype):
    model, folded, checkpoints = folded_pair(layers, dtype)
    result = verify_models(*save_pair(tmp_path, model, folded), checkpoints=checkpoints)
    assert result.ok, result.render()
    assert [c.name for c in result.layers] == [f"Conv 'conv{i}'" for i in range(layers)]
    assert [c.original for c in result.layers] == [f"bn{i}_out" for i in range(layers)]
    assert all(c.noise > 0 and c.error <= c.limit for c in (*result.outputs, *result.layers))


# (dtype, layers, wrong layer, kind). Not in fp16: epsilon 1e-3 for 1e-5 deep in the network, where the
# residual stream has grown the variances, moves the scale by less than fp16 rounds the folded weights —
# the wrong fold is as close to the right one as fp16 can tell.
WRONG = [(dtype, 1, 0, kind) for dtype in ("float32", "float16") for kind in ("scale", "epsilon", "swap")] + [
    (dtype, 100, layer, kind) for dtype in ("float32", "float16") for layer in (0, 50, 99)
    for kind in ("scale", "epsilon", "swap") if not (dtype == "float16" and kind == "epsilon" and layer > 0)]


@pytest.mark.parametrize(("dtype", "layers", "layer", "kind"), WRONG)
def test_wrong_fold_fails_at_the_layer_that_is_wrong(tmp_path, dtype, layers, layer, kind):
    model, folded, checkpoints = folded_pair(layers, dtype)
    wrong = miswrite(folded, model, layer, kind)
    result = verify_models(*save_pair(tmp_path, model, wrong), checkpoints=checkpoints)
    assert not result.ok
    failed = [c.name for c in result.layers if not c.ok]
    assert failed[0] == f"Conv 'conv{layer}'"  # nothing before the wrong layer is blamed
    worst = next(c for c in result.layers if c.name == failed[0])
    assert worst.error > 2 * worst.limit
    lines = result.render().splitlines()
    assert f"folded layers: {len(failed)} of {layers} beyond their limits:" in lines
    assert lines[-1] == (f"MISMATCH: {sum(not c.ok for c in result.outputs)} of 1 output and {len(failed)} of "
                         f"{layers} folded layers differ over 3 batches")


def test_wrong_fold_of_the_first_layer_fails_at_the_outputs_alone(tmp_path):
    """Without checkpoints (bnfold verify A B) only the outputs are compared; early errors still reach them."""
    model, folded, _ = folded_pair(100, "float32")
    result = verify_models(*save_pair(tmp_path, model, miswrite(folded, model, 0, "scale")))
    assert not result.ok and result.layers == []
    assert result.outputs[0].error > 10 * result.outputs[0].limit


@pytest.mark.parametrize(("sample", "expected"), [
    ("resnet_block", [("bn1", "conv1", "Conv 'conv1'"), ("bn2", "conv2", "Conv 'conv2'"),
                      ("bn3", "conv3", "Conv 'conv3'"), ("bn4", "conv4", "Conv 'conv4'"),
                      ("bn_down", "conv_down", "Conv 'conv_down'")]),
    # the MatMul's bias comes back as an Add after it: the checkpoint is that Add's output
    ("matmul_bn", [("bn1", "matmul1_bnfold", "MatMul 'matmul1'")]),
    # forward folds leave the partner's output meaning what it meant
    ("mlp_bn_after_relu", [("fc2", "fc2", "Gemm 'fc2'"), ("fc3", "fc3", "Gemm 'fc3'")]),
    ("depthwise_mul_add", [("bn_add", "dw_conv", "Conv 'dw_conv'")]),
])
def test_checkpoints_pair_each_folded_layer_with_the_tensor_it_replaces(tmp_path, sample, expected):
    model = onnx.load(f"{SAMPLES}/{sample}.onnx")
    folded, result = fold_copy(model)
    assert [(c.original, c.folded, c.label) for c in result.checkpoints] == expected
    check = verify_models(*save_pair(tmp_path, model, folded), checkpoints=result.checkpoints)
    assert check.ok and len(check.layers) == len(expected)


def test_checkpoints_naming_no_tensor_are_left_out(tmp_path):
    model = onnx.load(f"{SAMPLES}/gemm_bn.onnx")
    folded, _ = fold_copy(model)
    points = [Checkpoint("bn1", "fc1", "Gemm 'fc1'"), Checkpoint("nope", "fc1", "Gemm 'x'")]
    result = verify_models(*save_pair(tmp_path, model, folded), checkpoints=points)
    assert [c.name for c in result.layers] == ["Gemm 'fc1'"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_gemm_fold_verifies_in_every_float_dtype(tmp_path, dtype):
    """float64 resolves 1e-13: the fold must take BN's default epsilon as the float32 attribute it is."""
    model = gemm_bn_model(dtype=dtype, c_shape="N", m=16, k=32, n=24)[0]
    folded, result = fold_copy(model)
    check = verify_models(*save_pair(tmp_path, model, folded), checkpoints=result.checkpoints)
    assert check.ok, check.render()
    assert check.outputs[0].error <= 4 * float(np.finfo(dtype).eps)

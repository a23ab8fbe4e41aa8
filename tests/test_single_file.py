"""The streamed single-file writer produces the same model as onnx.save(ir.to_proto(model))."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnx_ir as ir
import pytest

from bnfold.fold import fold_model
from bnfold.io import load_model
from bnfold.single_file import save_single_file

ROOT = Path(__file__).resolve().parents[1]
MODELS = [ROOT / "sample_models" / name for name in (
    "resnet_block.onnx", "fp16_conv_bn.onnx", "mlp_bn_after_relu.onnx", "lint/bn012_overridable_parameters.onnx",
    "pytorch/resnetish_legacy_inputs.onnx", "pytorch/resnetish_dynamo.onnx")]


def _without_value_info(proto: onnx.ModelProto) -> bytes:
    # onnx-ir's serializer also writes value_info for initializers; the streamed writer leaves it out (as the
    # input models do). Everything else must be identical.
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    del proto.graph.value_info[:]
    return proto.SerializeToString(deterministic=True)


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
@pytest.mark.parametrize("folded", [False, True], ids=["as-loaded", "folded"])
def test_same_model_as_onnx_save(path, folded, tmp_path):
    model = load_model(path)
    if folded:
        fold_model(model)
    out = tmp_path / "out.onnx"
    save_single_file(model, out)
    # External data (the dynamo export) is written inline: compare with the model with its data loaded.
    expected = ir.to_proto(ir.external_data.load_to_model(model))
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    assert _without_value_info(written) == _without_value_info(expected)


def test_bf16_and_renamed_tensors_take_the_general_path(tmp_path):
    """bf16 has no numpy buffer fast path, and a tensor stored under another name must be renamed."""
    w = ir.Value(name="w", const_value=ir.Tensor(np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16),
                                                 name="old_name"))
    x = ir.val("x", ir.DataType.BFLOAT16, [6])
    node = ir.Node("", "Add", [x, w], num_outputs=1)
    node.outputs[0].name = "y"
    graph = ir.Graph([x], node.outputs, nodes=[node], initializers=[w], opset_imports={"": 17})
    model = ir.Model(graph, ir_version=8)
    save_single_file(model, tmp_path / "bf16.onnx")
    (init,) = onnx.load(tmp_path / "bf16.onnx").graph.initializer
    assert init.name == "w" and init.data_type == onnx.TensorProto.BFLOAT16
    assert onnx.numpy_helper.to_array(init).astype(np.float32).tolist() == [0, 1, 2, 3, 4, 5]

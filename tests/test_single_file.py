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


# --------------------------------------------------------------------------------------------------------
# reading: a single file's large initializers are mapped from the file itself, not held in memory


def _big_conv_bn(path: Path, cout: int = 512) -> onnx.ModelProto:
    """Conv (a 512x64x3x3 fp32 weight: 1.2 MiB, over bnfold.self_mapped.MIN_BYTES) -> BN, one file."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(0, 0.05, (cout, 64, 3, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, cout).astype(np.float32), "s"),
             numpy_helper.from_array(rng.normal(0, 0.1, cout).astype(np.float32), "b"),
             numpy_helper.from_array(rng.normal(0, 0.5, cout).astype(np.float32), "m"),
             numpy_helper.from_array(rng.uniform(0.5, 2, cout).astype(np.float32), "v")]
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv"),
             helper.make_node("BatchNormalization", ["y", "s", "b", "m", "v"], ["z"], name="bn")]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 6, 6])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, cout, 4, 4])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(proto, path)
    return proto


def test_a_large_initializer_is_mapped_from_the_file_itself(tmp_path):
    from bnfold.io import has_external_data, load_model_and_data

    path = tmp_path / "big.onnx"
    proto = _big_conv_bn(path)
    model, data_files = load_model_and_data(path)
    weight = model.graph.initializers["W"].const_value
    assert isinstance(weight, ir.ExternalTensor) and Path(weight.path) == path
    assert np.array_equal(weight.numpy(), onnx.numpy_helper.to_array(proto.graph.initializer[0]))
    assert not isinstance(model.graph.initializers["s"].const_value, ir.ExternalTensor)  # small: inline
    assert data_files == [] and not has_external_data(model)  # written back as one file
    out = tmp_path / "out.onnx"
    save_single_file(model, out)
    written = onnx.load(out)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in written.graph.initializer)
    assert _without_value_info(written) == _without_value_info(proto)


@pytest.mark.parametrize("in_place", [False, True], ids=["to-out", "in-place"])
def test_a_mapped_single_file_folds_into_a_single_file(tmp_path, in_place):
    from click.testing import CliRunner
    from helpers import count_op, ort_run

    from bnfold.cli import cli

    path = tmp_path / "big.onnx"
    proto = _big_conv_bn(path)
    out = path if in_place else tmp_path / "out.onnx"
    args = [str(path), "--in-place"] if in_place else [str(path), str(out)]
    result = CliRunner().invoke(cli, ["fold", *args])
    assert result.exit_code == 0, result.output
    folded = onnx.load(out)
    assert count_op(folded, "BatchNormalization") == 0
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in folded.graph.initializer)
    feeds = {"x": np.random.default_rng(4).normal(0, 1, (1, 64, 6, 6)).astype(np.float32)}
    np.testing.assert_allclose(ort_run(folded, feeds)[0], ort_run(proto, feeds)[0], rtol=1e-4, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["big.onnx"] if in_place else ["big.onnx", "out.onnx"])


def test_a_large_raw_tensor_of_the_wrong_length_is_reported_as_raw_data(tmp_path):
    from bnfold.errors import InputError
    from bnfold.io import load_model_and_data

    path = tmp_path / "big.onnx"
    proto = _big_conv_bn(path)
    proto.graph.initializer[0].raw_data = proto.graph.initializer[0].raw_data[:-4]
    onnx.save(proto, path)
    with pytest.raises(InputError, match=r"initializer 'W' has 1179644 bytes of data; its dims \[512, 64, 3, 3\] "
                                         r"need 1179648"):
        load_model_and_data(path)


@pytest.mark.parametrize("cut", [10, 600_000, -3])
def test_a_truncated_large_model_is_an_input_error(tmp_path, cut):
    from bnfold.errors import InputError
    from bnfold.io import load_model_and_data

    path = tmp_path / "big.onnx"
    _big_conv_bn(path)
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(InputError, match="not a readable ONNX model"):
        load_model_and_data(path)

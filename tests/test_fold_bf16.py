"""bfloat16: folded in float64 and rounded once to bf16. onnxruntime has no bf16 Conv on CPU, so the
outputs are compared by widening both models' bf16 tensors to fp32 (exactly representable) and running
those; and `bnfold fold` refuses to write an unverifiable model unless --no-verify."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnx_ir as ir
from click.testing import CliRunner
from helpers import bn_stats, make_rng, ort_run, weights
from onnx import TensorProto, helper, numpy_helper

from bnfold.cli import cli
from bnfold.fold import fold_model

BF16 = TensorProto.BFLOAT16


def _bf16(array: np.ndarray) -> onnx.TensorProto:
    return array.astype(ml_dtypes.bfloat16)


def bf16_conv_bn() -> onnx.ModelProto:
    rng = make_rng(7)
    stats = bn_stats(rng, 8)
    inits = [numpy_helper.from_array(_bf16(weights(rng, (8, 4, 3, 3))), "W"),
             numpy_helper.from_array(_bf16(rng.normal(0, 0.1, 8)), "B")]
    inits += [numpy_helper.from_array(_bf16(v), k) for k, v in stats.items()]
    nodes = [helper.make_node("Conv", ["X", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["Y"], name="bn",
                              epsilon=1e-3)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", BF16, [1, 4, 6, 6])],
                              [helper.make_tensor_value_info("Y", BF16, [1, 8, 6, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])  # Conv-22 takes bf16
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


def widen(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with every bf16 tensor and type turned into fp32 (bf16 -> fp32 is exact)."""
    wide = onnx.ModelProto()
    wide.CopyFrom(model)
    for init in wide.graph.initializer:
        if init.data_type == BF16:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    for value in (*wide.graph.input, *wide.graph.output, *wide.graph.value_info):
        if value.type.tensor_type.elem_type == BF16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    return wide


def test_bf16_conv_bn_folds_to_bf16_weights_and_matches():
    model = bf16_conv_bn()
    ir_model = ir.from_proto(model)
    result = fold_model(ir_model)
    folded = ir.to_proto(ir_model)
    onnx.checker.check_model(folded, full_check=True)
    assert [(d.node, d.outcome, d.partner) for d in result.decisions] == [("bn", "folded", "conv")]
    assert [n.op_type for n in folded.graph.node] == ["Conv"]
    assert {i.name: i.data_type for i in folded.graph.initializer} == {"W": BF16, "B": BF16}

    x = make_rng(1).normal(size=(1, 4, 6, 6)).astype(ml_dtypes.bfloat16).astype(np.float32)
    expected = ort_run(widen(model), {"X": x})[0]
    actual = ort_run(widen(folded), {"X": x})[0]
    # One bf16 rounding of the folded weights (8 significant bits) against the unfolded bf16 chain.
    np.testing.assert_allclose(actual, expected, rtol=5e-2, atol=5e-2)


def test_cli_refuses_unverifiable_bf16_without_no_verify(tmp_path):
    src, out = tmp_path / "bf16.onnx", tmp_path / "out.onnx"
    onnx.save(bf16_conv_bn(), src)
    refused = CliRunner().invoke(cli, ["fold", str(src), str(out)])
    assert refused.exit_code == 2
    assert "--no-verify" in refused.stderr and "Traceback" not in refused.output
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bf16.onnx"]

    written = CliRunner().invoke(cli, ["fold", str(src), str(out), "--no-verify"])
    assert written.exit_code == 0, written.output
    assert [n.op_type for n in onnx.load(out).graph.node] == ["Conv"]

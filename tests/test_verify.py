"""verify: both models in onnxruntime (ORT_DISABLE_ALL) on the same inputs, every output compared."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from bnfold.cli import cli
from bnfold.errors import BnfoldError, InputError, RuntimeUnavailable
from bnfold.verify import VerifyResult, default_tolerances, make_inputs, verify_models
from bnfold.verify.criterion import Tally

FLOAT = TensorProto.FLOAT


def save_model(path, nodes, inputs, outputs, initializers=(), *, ir_version=8, opsets=(("", 17),)):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets],
                              ir_version=ir_version)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def tensor(name, elem_type, shape):
    return helper.make_tensor_value_info(name, elem_type, shape)


def two_output_model(path, w=2.0, b=1.0):
    """y1 = x * w, y2 = x + b, x: float[2, 3]."""
    return save_model(
        path,
        [helper.make_node("Mul", ["x", "w"], ["y1"]), helper.make_node("Add", ["x", "b"], ["y2"])],
        [tensor("x", FLOAT, [2, 3])],
        [tensor("y1", FLOAT, [2, 3]), tensor("y2", FLOAT, [2, 3])],
        [numpy_helper.from_array(np.full([3], w, np.float32), "w"),
         numpy_helper.from_array(np.full([3], b, np.float32), "b")],
    )


def offset_model(path, elem_type, offset, shape=(4, 3)):
    """y = x + offset; offset 0 is Identity so the pair differs by exactly one constant."""
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    if offset == 0:
        nodes, inits = [helper.make_node("Identity", ["x"], ["y"])], []
    else:
        nodes = [helper.make_node("Add", ["x", "c"], ["y"])]
        inits = [numpy_helper.from_array(np.array([offset], dtype), "c")]
    return save_model(path, nodes, [tensor("x", elem_type, list(shape))], [tensor("y", elem_type, list(shape))], inits)


def custom_op_model(path):
    return save_model(path, [helper.make_node("Foo", ["x"], ["y"], domain="com.example")],
                      [tensor("x", FLOAT, [3])], [tensor("y", FLOAT, [3])],
                      opsets=(("", 17), ("com.example", 1)))


def shape_model(path, constant=None):
    """Outputs Shape(x) of x: float['N', 3], or (with constant) that fixed int64 value instead."""
    if constant is None:
        node = helper.make_node("Shape", ["x"], ["s"])
    else:
        node = helper.make_node("Constant", [], ["s"],
                                value=numpy_helper.from_array(np.array(constant, np.int64)))
    return save_model(path, [node], [tensor("x", FLOAT, ["N", 3])], [tensor("s", TensorProto.INT64, [2])])


def session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# --- library ---------------------------------------------------------------------------------------------

EPS32 = float(np.finfo(np.float32).eps)
LEGEND = ("error = max|B - A| / max|A| (A: reference, B: candidate); noise: the same for A with its weights "
          "rounded once more; limit = 4 x noise + 8 eps")


def test_identical_models_verify_with_zero_error_per_output(tmp_path):
    a = two_output_model(tmp_path / "a.onnx")
    b = two_output_model(tmp_path / "b.onnx")
    result = verify_models(a, b, batches=4)
    assert result.ok and result.criterion == "noise"
    assert result.max_abs == 0.0
    assert result.batches == 4
    assert [(o.name, o.dtype, o.criterion, o.error, o.ok) for o in result.outputs] == [
        ("y1", "float32", "noise", 0.0, True), ("y2", "float32", "noise", 0.0, True)]
    assert all(o.limit == pytest.approx(4 * o.noise + 8 * EPS32) for o in result.outputs)
    assert result.render().splitlines()[-1] == "verified: 2 outputs within limits over 4 batches"


def test_noise_is_how_far_the_original_moves_when_its_weights_are_rounded_once_more(tmp_path):
    """y1 = x * w: moving w by one unit in the last place moves y1 by one part in 2^23, i.e. eps."""
    a = two_output_model(tmp_path / "a.onnx")
    y1, _ = verify_models(a, two_output_model(tmp_path / "b.onnx"), batches=2).outputs
    assert y1.noise == pytest.approx(EPS32, rel=0.5)
    assert y1.limit == pytest.approx(4 * y1.noise + 8 * EPS32)


def test_wrong_weight_is_a_mismatch_of_the_exact_size(tmp_path):
    a = two_output_model(tmp_path / "a.onnx", w=2.0)
    b = two_output_model(tmp_path / "b.onnx", w=2.5)
    npz = tmp_path / "x.npz"
    np.savez(npz, x=np.array([[1, -2, 3], [4, 5, -6]], np.float32))
    result = verify_models(a, b, inputs_npz=npz, batches=7)
    assert not result.ok
    assert result.batches == 1  # an .npz is one batch, whatever --batches says
    y1, y2 = result.outputs
    assert (y1.max_abs, y1.scale, y1.error, y1.max_rel, y1.ok) == (3.0, 12.0, 0.25, 0.25, False)  # 0.5*|-6| of 2*6
    assert (y2.max_abs, y2.ok) == (0.0, True)
    assert result.max_abs == 3.0
    inputs, notes, lines = result.render().splitlines()[:1], result.render().splitlines()[1:2], \
        result.render().splitlines()[2:]
    assert inputs == ["input  x 2x3 float32: from x.npz"]
    assert notes == ["note: --inputs x.npz is one batch: --batches 7 does not apply"]
    assert lines[0] == LEGEND
    assert lines[1] == "output  max|A|    error     noise     limit"
    assert lines[2] == f"y1      1.2e+01   2.5e-01   {y1.noise:.1e}   {y1.limit:.1e}   FAIL"
    assert lines[3].startswith("y2      6.0e+00   0.0e+00   ") and lines[3].endswith("   ok")
    assert lines[4] == "MISMATCH: 1 of 2 outputs differ over 1 batch"


def test_wrong_weight_fails_on_random_inputs_too(tmp_path):
    a = two_output_model(tmp_path / "a.onnx", w=2.0)
    b = two_output_model(tmp_path / "b.onnx", w=2.5)
    result = verify_models(a, b, seed=3)
    x = [make_inputs(session(a), {}, seed=3, batch=i)["x"] for i in range(3)]
    assert result.outputs[0].max_abs == pytest.approx(0.5 * max(np.abs(xi).max() for xi in x), rel=1e-6)
    assert result.outputs[0].error == pytest.approx(0.25, rel=1e-6)
    assert not result.ok


def test_external_data_model_loads_from_its_path(tmp_path):
    a = two_output_model(tmp_path / "a.onnx")
    (tmp_path / "ext").mkdir()
    external = tmp_path / "ext" / "model.onnx"
    onnx.save(onnx.load(a), external, save_as_external_data=True, location="model.data", size_threshold=0)
    assert (tmp_path / "ext" / "model.data").stat().st_size > 0
    result = verify_models(external, a)  # the external model is the reference: its weights are rounded too
    assert result.ok and result.max_abs == 0.0
    assert result.outputs[0].noise == pytest.approx(EPS32, rel=0.5)


@pytest.mark.parametrize("ir_version", [4, 8])
def test_initializer_listed_as_graph_input_is_never_fed_random_values(tmp_path, ir_version):
    def model(path, w):
        return save_model(path, [helper.make_node("Mul", ["x", "w"], ["y"])],
                          [tensor("x", FLOAT, [2, 3]), tensor("w", FLOAT, [3])], [tensor("y", FLOAT, [2, 3])],
                          [numpy_helper.from_array(np.full([3], w, np.float32), "w")], ir_version=ir_version)

    a, b = model(tmp_path / "a.onnx", 2.0), model(tmp_path / "b.onnx", 3.0)
    assert set(make_inputs(session(a), {}, seed=0, batch=0)) == {"x"}
    result = verify_models(a, b)
    assert not result.ok
    assert result.outputs[0].max_abs > 0.0
    same = verify_models(a, model(tmp_path / "c.onnx", 2.0))
    assert same.ok and same.outputs[0].noise == pytest.approx(EPS32, rel=0.5)  # rounded though it is an input


def test_dynamic_dims_come_from_shapes_else_one(tmp_path):
    ref = shape_model(tmp_path / "shape.onnx")
    assert verify_models(ref, shape_model(tmp_path / "4x3.onnx", [4, 3]), shapes={"x": (4, 3)}).ok
    assert verify_models(ref, shape_model(tmp_path / "1x3.onnx", [1, 3])).ok
    result = verify_models(ref, shape_model(tmp_path / "4x3b.onnx", [4, 3]))
    assert not result.ok
    out = result.outputs[0]
    assert (out.dtype, out.criterion, out.max_abs, out.limit) == ("int64", "exact", 3.0, 0.0)
    assert make_inputs(session(ref), {"x": (4, 3)}, seed=0, batch=0)["x"].shape == (4, 3)


def test_shape_that_contradicts_the_model_or_names_no_input_is_an_input_error(tmp_path):
    ref = shape_model(tmp_path / "shape.onnx")
    with pytest.raises(InputError, match=r"does not fit its declared shape Nx3"):
        verify_models(ref, ref, shapes={"x": (4, 5)})
    with pytest.raises(InputError, match=r"--shape names no input of shape.onnx: y"):
        verify_models(ref, ref, shapes={"y": (4, 3)})


def test_make_inputs_per_dtype_and_batch(tmp_path):
    types = {"f16": TensorProto.FLOAT16, "f64": TensorProto.DOUBLE, "i64": TensorProto.INT64,
             "u8": TensorProto.UINT8, "b": TensorProto.BOOL}
    path = save_model(tmp_path / "m.onnx",
                      [helper.make_node("Identity", [name], [name + "_out"]) for name in types],
                      [tensor(name, t, [50]) for name, t in types.items()],
                      [tensor(name + "_out", t, [50]) for name, t in types.items()])
    sess = session(path)
    first = make_inputs(sess, {}, seed=0, batch=0)
    assert {k: v.dtype.name for k, v in first.items()} == {
        "f16": "float16", "f64": "float64", "i64": "int64", "u8": "uint8", "b": "bool"}
    assert all(v.shape == (50,) for v in first.values())
    assert first["i64"].min() >= 0 and first["i64"].max() < 10
    assert first["b"].any() and not first["b"].all()
    again = make_inputs(sess, {}, seed=0, batch=0)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    other = make_inputs(sess, {}, seed=0, batch=1)
    assert not np.array_equal(first["f64"], other["f64"])


def test_default_tolerances_per_dtype():
    assert default_tolerances(np.float32) == (1e-4, 1e-5)
    assert default_tolerances(np.dtype("float64")) == (1e-6, 1e-8)
    assert default_tolerances(np.float16) == (1e-2, 1e-3)
    assert default_tolerances(ml_dtypes.bfloat16) == (5e-2, 1e-2)
    assert default_tolerances(np.int64) == (0.0, 0.0)
    assert default_tolerances(np.uint8) == (0.0, 0.0)
    assert default_tolerances(np.bool_) == (0.0, 0.0)


def test_fp16_pair_differing_by_1e_4_passes_within_eight_fp16_eps_of_the_scale(tmp_path):
    a = offset_model(tmp_path / "a.onnx", TensorProto.FLOAT16, 0)
    b = offset_model(tmp_path / "b.onnx", TensorProto.FLOAT16, 1e-4)
    result = verify_models(a, b)  # x ~ N(0, 1): 1e-4 is 3e-5 of the scale, far below 8 fp16 eps (7.8e-3)
    assert result.ok
    out = result.outputs[0]
    assert (out.dtype, out.criterion, out.noise) == ("float16", "noise", 0.0)  # an Identity has no weights
    assert out.limit == 8 * float(np.finfo(np.float16).eps)


def test_an_all_zero_output_must_stay_all_zero(tmp_path):
    a = offset_model(tmp_path / "a.onnx", TensorProto.FLOAT16, 0)
    b = offset_model(tmp_path / "b.onnx", TensorProto.FLOAT16, 1e-4)
    npz = tmp_path / "x.npz"
    np.savez(npz, x=np.zeros([4, 3], np.float16))
    result = verify_models(a, b, inputs_npz=npz)
    assert not result.ok
    assert (result.outputs[0].scale, result.outputs[0].error) == (0.0, float("inf"))
    assert verify_models(a, a, inputs_npz=npz).ok


def test_fp32_pair_differing_by_1e_3_fails_by_default_and_passes_with_given_tolerances(tmp_path):
    a = offset_model(tmp_path / "a.onnx", FLOAT, 0)
    b = offset_model(tmp_path / "b.onnx", FLOAT, 1e-3)
    assert not verify_models(a, b).ok
    assert verify_models(a, b, atol=2e-3).ok
    result = verify_models(a, b, rtol=0.0, atol=2e-3)
    assert result.ok and result.criterion == "tolerance"
    out = result.outputs[0]
    assert (out.criterion, out.rtol, out.atol, out.noise) == ("tolerance", 0.0, 2e-3, None)
    assert out.max_abs == pytest.approx(1e-3, rel=1e-3)
    lines = result.render().splitlines()
    assert lines[0] == "input  x 4x3 float32: random N(0, 1)"  # a fixed shape: nothing chosen, no note
    lines = lines[1:]
    assert lines[:2] == ["elementwise check: |B - A| <= atol + rtol * |A|  (A: reference, B: candidate)",
                         "output  max|A|    max abs   max rel   rtol      atol"]
    assert lines[2].startswith("y       ") and lines[2].endswith("0.0e+00   2.0e-03   ok")
    assert verify_models(a, b, atol=2e-3).outputs[0].rtol == 1e-4  # the other one keeps its dtype default


def test_weights_computed_by_constant_of_shape_are_rounded_too(tmp_path):
    path = save_model(tmp_path / "a.onnx", [
        helper.make_node("ConstantOfShape", ["shape"], ["w"],
                         value=numpy_helper.from_array(np.array([2.0], np.float32))),
        helper.make_node("Mul", ["x", "w"], ["y"])],
        [tensor("x", FLOAT, [4, 3])], [tensor("y", FLOAT, [4, 3])],
        [numpy_helper.from_array(np.array([3], np.int64), "shape")])
    out = verify_models(path, path).outputs[0]
    assert out.ok and out.noise == pytest.approx(EPS32, rel=0.5)


def test_small_outputs_get_more_noise_runs(tmp_path):
    """A scalar output gives one noise sample per batch: too few for a stable maximum, so up to 8 runs."""
    def model(path, w):
        return save_model(path, [helper.make_node("Mul", ["x", "w"], ["t"]),
                                 helper.make_node("ReduceSum", ["t"], ["y"], keepdims=0)],
                          [tensor("x", FLOAT, [16])], [tensor("y", FLOAT, [])],
                          [numpy_helper.from_array(np.full([16], w, np.float32), "w")])

    scalar = verify_models(model(tmp_path / "a.onnx", 0.5), model(tmp_path / "b.onnx", 0.5))
    assert scalar.ok and scalar.noise_runs == 8 and scalar.to_json()["noise_runs"] == 8
    assert verify_models(two_output_model(tmp_path / "c.onnx"), two_output_model(tmp_path / "d.onnx"),
                         batches=2).noise_runs == 6  # 6 elements x 2 batches: 64 samples need 6 runs
    assert verify_models(two_output_model(tmp_path / "c.onnx"), two_output_model(tmp_path / "d.onnx"),
                         atol=1e-5).noise_runs == 0


def test_discrete_model_is_too_noisy_to_judge_and_says_so(tmp_path):
    """y = sin(x * 1e7): one unit in the last place of the weight moves x * w by about a radian."""
    def model(path, w):
        return save_model(path, [helper.make_node("Mul", ["x", "w"], ["t"]), helper.make_node("Sin", ["t"], ["y"])],
                          [tensor("x", FLOAT, [64])], [tensor("y", FLOAT, [64])],
                          [numpy_helper.from_array(np.array([w], np.float32), "w")])

    a = model(tmp_path / "a.onnx", 1e7)
    assert verify_models(a, model(tmp_path / "same.onnx", 1e7)).ok
    result = verify_models(a, model(tmp_path / "b.onnx", 1e7 * (1 + 1e-6)))
    out = result.outputs[0]
    assert not result.ok and out.limit == 1e-2 and out.noise > 0.1
    assert out.note == (f"the original's own rounding noise ({out.noise:.1e}) is too large to judge a fold by; "
                        "pass --rtol/--atol to set the tolerance yourself")


def test_bfloat16_inputs_and_outputs_cross_into_onnxruntime(tmp_path):
    def model(path, scale):
        bf16 = TensorProto.BFLOAT16
        return save_model(path, [
            helper.make_node("Cast", ["x"], ["xf"], to=FLOAT),
            helper.make_node("Mul", ["xf", "s"], ["yf"]),
            helper.make_node("Cast", ["yf"], ["y"], to=bf16),
        ], [tensor("x", bf16, [2, 8])], [tensor("y", bf16, [2, 8])],
            [numpy_helper.from_array(np.array([scale], np.float32), "s")])

    a, b, c = model(tmp_path / "a.onnx", 1.0), model(tmp_path / "b.onnx", 1.0), model(tmp_path / "c.onnx", 2.0)
    same = verify_models(a, b)
    assert same.ok and same.max_abs == 0.0
    assert (same.outputs[0].dtype, same.outputs[0].criterion, same.outputs[0].limit) == (
        "bfloat16", "noise", 8 * 2.0 ** -7)
    x = make_inputs(session(a), {}, seed=0, batch=0)["x"]
    assert x.dtype == ml_dtypes.bfloat16
    differ = verify_models(a, c, batches=1)
    assert not differ.ok
    assert differ.max_abs == float(np.abs(x.astype(np.float64)).max())  # 2x - x, exact in bfloat16


def test_output_shape_change_is_a_failure_not_a_crash(tmp_path):
    a = offset_model(tmp_path / "a.onnx", FLOAT, 0)
    b = save_model(tmp_path / "b.onnx", [helper.make_node("Reshape", ["x", "shape"], ["y"])],
                   [tensor("x", FLOAT, [4, 3])], [tensor("y", FLOAT, [3, 4])],
                   [numpy_helper.from_array(np.array([3, 4], np.int64), "shape")])
    result = verify_models(a, b)
    assert not result.ok
    assert (result.outputs[0].error, result.outputs[0].note) == (float("inf"), "shape (4, 3) vs (3, 4)")
    assert result.render().splitlines()[3] == (
        "y       0.0e+00   inf       0.0e+00   9.5e-07   FAIL: shape (4, 3) vs (3, 4)")


def tally(reference, candidate, noisy=None, **tolerances):
    t = Tally("y", **tolerances)
    t.add(np.asarray(reference), np.asarray(candidate))
    if noisy is not None:
        t.add_noise(np.asarray(reference), np.asarray(noisy))
    return t.result()


def test_tally_nan_and_inf():
    nan, inf = float("nan"), float("inf")
    ref = np.array([1.0, nan, inf, -inf], np.float32)
    same = tally(ref, ref.copy())
    assert (same.ok, same.max_abs, same.error, same.scale) == (True, 0.0, 0.0, 1.0)  # the scale ignores non-finite
    one_sided = tally(ref, np.array([1.0, 0.0, inf, -inf], np.float32))
    assert (one_sided.ok, one_sided.max_abs, one_sided.error) == (False, inf, inf)
    sign = tally(ref, np.array([1.0, nan, -inf, -inf], np.float32))
    assert (sign.ok, sign.max_abs) == (False, inf)
    # the noise run turning a value NaN says nothing about rounding noise: only values finite in both count
    knife_edge = tally(np.array([1.0, 2.0]), np.array([1.0, 2.0]), np.array([1.0 + 1e-12, nan]))
    assert knife_edge.noise == pytest.approx(5e-13)


def test_tally_relative_to_the_scale_and_dtype_changes():
    near_zero = tally(np.array([0.0, 2.0]), np.array([1e-9, 2.0]))
    assert (near_zero.error, near_zero.max_rel) == (5e-10, 0.0)  # relative to max|A| = 2, not to the 0
    assert not near_zero.ok  # float64: the limit is 8 eps when the noise run is not given
    assert tally(np.array([0.0, 2.0]), np.array([1e-9, 2.0]), np.array([0.0, 2.0 + 2e-9])).ok  # noise 1e-9
    assert tally(np.array([0.5]), np.array([0.75]), rtol=0.0, atol=1e-3).max_rel == 0.5
    dtype_change = tally(np.ones(3, np.float32), np.ones(3, np.float16))
    assert (dtype_change.ok, dtype_change.error, dtype_change.note) == (False, float("inf"), "dtype float32 vs float16")
    assert tally(np.zeros(0, np.float32), np.zeros(0, np.float32)).ok


def test_verify_result_properties_without_outputs():
    empty = VerifyResult([], 3)
    assert empty.ok and empty.max_abs == 0.0 and empty.criterion == "exact"
    good = tally(np.array([1.0]), np.array([1.0]))
    bad = tally(np.array([1.0, 2.0]), np.array([1.0, 4.0]))
    assert not VerifyResult([bad, good], 1).ok and VerifyResult([bad, good], 1).max_abs == 2.0
    assert not VerifyResult([good], 1, layers=[bad]).ok


# --- errors ----------------------------------------------------------------------------------------------


def test_different_input_names_are_an_input_error(tmp_path):
    a = offset_model(tmp_path / "a.onnx", FLOAT, 0)
    b = save_model(tmp_path / "b.onnx", [helper.make_node("Identity", ["z"], ["y"])],
                   [tensor("z", FLOAT, [4, 3])], [tensor("y", FLOAT, [4, 3])])
    with pytest.raises(InputError) as info:
        verify_models(a, b)
    assert str(info.value) == "the models have different inputs: only in a.onnx: x; only in b.onnx: z"


def test_different_output_names_are_an_input_error(tmp_path):
    a = offset_model(tmp_path / "a.onnx", FLOAT, 0)
    b = save_model(tmp_path / "b.onnx", [helper.make_node("Identity", ["x"], ["out"])],
                   [tensor("x", FLOAT, [4, 3])], [tensor("out", FLOAT, [4, 3])])
    with pytest.raises(InputError, match="^the models have different outputs: only in a.onnx: y; only in b.onnx: out$"):
        verify_models(a, b)


def test_different_input_types_are_an_input_error(tmp_path):
    a = offset_model(tmp_path / "a.onnx", FLOAT, 0)
    b = offset_model(tmp_path / "b.onnx", TensorProto.FLOAT16, 0)
    with pytest.raises(InputError, match=r"^input 'x' is tensor\(float\) in a.onnx but tensor\(float16\) in b.onnx$"):
        verify_models(a, b)


def test_custom_op_is_runtime_unavailable_in_one_line(tmp_path):
    a = custom_op_model(tmp_path / "custom.onnx")
    with pytest.raises(RuntimeUnavailable) as info:
        verify_models(a, a)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("onnxruntime cannot run custom.onnx: ")
    assert "com.example:Foo" in message
    assert "--no-verify" not in message  # only `bnfold fold` has that option; it adds the hint itself
    assert isinstance(info.value, BnfoldError) and info.value.exit_code == 2


def test_op_without_cpu_kernel_is_runtime_unavailable(tmp_path):
    bf16 = TensorProto.BFLOAT16
    path = save_model(tmp_path / "bfconv.onnx", [helper.make_node("Conv", ["x", "w"], ["y"])],
                      [tensor("x", bf16, [1, 1, 3, 3])], [tensor("y", bf16, [1, 1, 3, 3])],
                      [helper.make_tensor("w", bf16, [1, 1, 1, 1], [1.0])])
    with pytest.raises(RuntimeUnavailable, match=r"^onnxruntime cannot run bfconv.onnx: [^\n]+$"):
        verify_models(path, path)


@pytest.mark.parametrize("content", [b"", b"hello, not a model"])
def test_file_that_is_not_a_model_is_an_input_error(tmp_path, content):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(content)
    good = offset_model(tmp_path / "a.onnx", FLOAT, 0)
    reason = "not an ONNX model (no graph)" if not content else "not a readable ONNX model (DecodeError)"
    with pytest.raises(InputError) as raised:
        verify_models(good, junk)
    assert str(raised.value) == f"{junk}: {reason}"


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        verify_models(tmp_path / "nope.onnx", tmp_path / "nope.onnx")


def test_npz_without_an_input_is_an_input_error(tmp_path):
    a = offset_model(tmp_path / "a.onnx", FLOAT, 0)
    npz = tmp_path / "in.npz"
    np.savez(npz, other=np.zeros([4, 3], np.float32))
    with pytest.raises(InputError) as info:
        verify_models(a, a, inputs_npz=npz)
    assert str(info.value) == "in.npz has no array named 'x' (it has: other)"


def test_npz_arrays_are_cast_to_the_input_type_within_their_kind(tmp_path):
    a = offset_model(tmp_path / "a.onnx", FLOAT, 0)
    npz = tmp_path / "in.npz"
    np.savez(npz, x=np.ones([4, 3], np.float64))
    assert verify_models(a, a, inputs_npz=npz).ok
    np.savez(npz, x=np.ones([4, 2], np.float32))
    with pytest.raises(InputError, match="^onnxruntime rejected the inputs of a.onnx: "):
        verify_models(a, a, inputs_npz=npz)


# --- CLI -------------------------------------------------------------------------------------------------


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_verify_ok(tmp_path):
    a = two_output_model(tmp_path / "a.onnx")
    result = run_cli("verify", a, two_output_model(tmp_path / "b.onnx"))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "verified: 2 outputs within limits over 3 batches"


def test_cli_verify_mismatch_exits_1(tmp_path):
    result = run_cli("verify", two_output_model(tmp_path / "a.onnx"), two_output_model(tmp_path / "b.onnx", w=3.0))
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == "MISMATCH: 1 of 2 outputs differ over 3 batches"


def test_cli_verify_nonexistent_path_exits_2(tmp_path):
    result = run_cli("verify", two_output_model(tmp_path / "a.onnx"), tmp_path / "missing.onnx")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_cli_verify_custom_op_exits_2_with_one_line(tmp_path):
    a = custom_op_model(tmp_path / "custom.onnx")
    result = run_cli("verify", a, a)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: onnxruntime cannot run custom.onnx: ")
    assert "--no-verify" not in lines[0]


def test_cli_verify_shape_option(tmp_path):
    ref = shape_model(tmp_path / "shape.onnx")
    cand = shape_model(tmp_path / "4x3.onnx", [4, 3])
    assert run_cli("verify", ref, cand, "--shape", "x=4x3").exit_code == 0
    assert run_cli("verify", ref, cand).exit_code == 1
    bad = run_cli("verify", ref, cand, "--shape", "bad")
    assert bad.exit_code == 2
    assert "Traceback" not in bad.output


def test_cli_verify_tolerance_and_inputs_options(tmp_path):
    a = offset_model(tmp_path / "a.onnx", FLOAT, 0)
    b = offset_model(tmp_path / "b.onnx", FLOAT, 1e-3)
    assert run_cli("verify", a, b).exit_code == 1
    assert run_cli("verify", a, b, "--rtol", "0", "--atol", "2e-3").exit_code == 0
    npz = tmp_path / "in.npz"
    np.savez(npz, x=np.zeros([4, 3], np.float32))
    result = run_cli("verify", a, a, "--inputs", npz)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "verified: 1 output within limits over 1 batch"


def test_help_does_not_import_onnxruntime_or_onnx_ir():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from bnfold.cli import cli\n"
        "result = CliRunner().invoke(cli, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "sub = CliRunner().invoke(cli, ['verify', '--help'])\n"
        "assert sub.exit_code == 0, sub.output\n"
        "print('onnxruntime' in sys.modules, 'onnx_ir' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False False"


def _conv_on_a_dynamic_image(path: Path, channels: int = 3) -> Path:
    w = numpy_helper.from_array(np.full((2, channels, 3, 3), 0.1, np.float32), "w")
    return save_model(path, [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
                      [tensor("x", FLOAT, ["N", "C", "H", "W"])], [tensor("y", FLOAT, ["N", 2, "OH", "OW"])], [w])


def test_dynamic_dims_are_inferred_from_the_graph_and_said(tmp_path):
    # every dim symbolic: the channels come from the Conv weight, the image gets a size its kernel fits
    a = _conv_on_a_dynamic_image(tmp_path / "a.onnx")
    result = verify_models(a, a)
    assert result.ok
    assert result.inputs == ["x 1x3x32x32 float32: random N(0, 1)"]
    assert result.notes == ["input 'x': dynamic N = 1 (nothing in the graph fixes it), C = 3 (the channels of Conv "
                            "'conv'), H = 32 (an image size for its Conv), W = 32 (an image size for its Conv) "
                            "(pass --shape x=1x3x32x32 to choose)"]
    given = verify_models(a, a, shapes={"x": (2, 3, 8, 8)})
    assert (given.inputs, given.notes) == (["x 2x3x8x8 float32: random N(0, 1)"], [])


def test_integer_indices_into_a_gather_stay_inside_its_table(tmp_path):
    table = numpy_helper.from_array(np.arange(15, dtype=np.float32).reshape(5, 3), "table")
    a = save_model(tmp_path / "a.onnx", [helper.make_node("Gather", ["table", "ids"], ["y"], name="embed")],
                   [tensor("ids", TensorProto.INT64, [64])], [tensor("y", FLOAT, [64, 3])], [table])
    result = verify_models(a, a, batches=5)
    assert result.ok  # indices from [0, 10) would be out of range for 5 rows: onnxruntime would refuse them
    assert result.inputs == ["ids 64 int64: random integers in [0, 5), the rows of the table Gather 'embed' reads"]


def test_progress_lines_per_batch_when_work_is_slow_and_none_when_quiet(tmp_path, capsys):
    from bnfold.progress import Progress

    a = two_output_model(tmp_path / "a.onnx")
    verify_models(a, a, batches=3, progress=Progress(always=False, every=0.0))  # every batch counts as slow
    assert capsys.readouterr().err.splitlines() == [f"verifying: batch {k}/3 done" for k in (1, 2, 3)]
    verify_models(a, a, batches=3, progress=Progress(always=False))  # a fast run, piped: nothing extra
    verify_models(a, a, batches=3, progress=Progress(quiet=True, always=True))
    assert capsys.readouterr().err == ""


def test_progress_throttles_to_one_line_per_interval(capsys):
    from bnfold.progress import Progress

    ticks = iter([0.0, 0.5, 1.9, 2.1, 2.2, 4.2])  # the start, then one reading per line offered
    progress = Progress(always=False, every=2.0, clock=lambda: next(ticks))
    for k in range(5):
        progress(f"stage {k}")
    assert capsys.readouterr().err.splitlines() == ["stage 2", "stage 4"]


# --------------------------------------------------------------------------------------------------------
# --save-inputs: the batch with the largest error, to rerun with --inputs


def test_save_inputs_keeps_the_worst_batch_and_reproduces_the_mismatch(tmp_path):
    a = two_output_model(tmp_path / "a.onnx", b=1.0)
    b = two_output_model(tmp_path / "b.onnx", b=1.5)  # y2 off by 0.5: worst where max|x + 1| is smallest
    saved = tmp_path / "worst.npz"
    result = run_cli("verify", a, b, "--save-inputs", saved)
    assert result.exit_code == 1, result.output
    xs = [make_inputs(session(a), {}, seed=0, batch=i)["x"] for i in range(3)]
    worst = int(np.argmin([np.abs(x + 1).max() for x in xs]))
    with np.load(saved) as npz:
        assert npz.files == ["x"]
        np.testing.assert_array_equal(npz["x"], xs[worst])
    assert result.stdout.splitlines()[-2] == (
        f"saved batch {worst + 1} of 3 (the largest error) to {saved}: rerun with --inputs {saved}")
    again = run_cli("verify", a, b, "--inputs", saved)
    assert again.exit_code == 1
    assert again.stdout.splitlines()[-1] == "MISMATCH: 1 of 2 outputs differ over 1 batch"


def test_save_inputs_also_on_success_and_from_fold(tmp_path):
    a = two_output_model(tmp_path / "a.onnx")
    saved = tmp_path / "x.npz"
    result = run_cli("verify", a, two_output_model(tmp_path / "b.onnx"), "--save-inputs", saved, "--batches", "1")
    assert result.exit_code == 0, result.output
    assert f"saved batch 1 of 1 (the largest error) to {saved}: rerun with --inputs {saved}" in result.stdout
    with np.load(saved) as npz:
        np.testing.assert_array_equal(npz["x"], make_inputs(session(a), {}, seed=0, batch=0)["x"])
    gemm = Path(__file__).parent.parent / "sample_models" / "gemm_bn.onnx"
    folded = run_cli("fold", gemm, tmp_path / "out.onnx", "--save-inputs", tmp_path / "fold.npz")
    assert folded.exit_code == 0, folded.output
    with np.load(tmp_path / "fold.npz") as npz:
        assert npz.files == [i.name for i in onnx.load(str(gemm)).graph.input]


@pytest.mark.parametrize("which", ["reference", "candidate"])
def test_save_inputs_never_replaces_a_model(tmp_path, which):
    a, b = two_output_model(tmp_path / "a.onnx"), two_output_model(tmp_path / "b.onnx")
    before = (a.read_bytes(), b.read_bytes())
    target = a if which == "reference" else b
    result = run_cli("verify", a, b, "--save-inputs", target)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: --save-inputs {target} is the {which} model: choose another file"]
    assert (a.read_bytes(), b.read_bytes()) == before


def test_save_inputs_with_inputs_is_refused(tmp_path):
    a = two_output_model(tmp_path / "a.onnx")
    npz = tmp_path / "x.npz"
    np.savez(npz, x=np.ones((2, 3), np.float32))
    result = run_cli("verify", a, a, "--inputs", npz, "--save-inputs", tmp_path / "y.npz")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: --save-inputs saves random inputs; with --inputs they are already in a file (see `bnfold verify --help`)"]
    assert not (tmp_path / "y.npz").exists()


# --------------------------------------------------------------------------------------------------------
# onnxruntime's own log and messages, as the user's terminal sees them (its C++ log writes to fd 2)


def opset99_model(path):
    return save_model(path, [helper.make_node("Relu", ["x"], ["y"])], [tensor("x", FLOAT, [2])],
                      [tensor("y", FLOAT, [2])], opsets=(("", 99),))


@pytest.mark.parametrize("build", ["custom-op", "opset-99"])
def test_an_onnxruntime_failure_is_one_clean_line_in_a_real_process(tmp_path, build):
    model = (custom_op_model if build == "custom-op" else opset99_model)(tmp_path / "m.onnx")
    proc = subprocess.run([sys.executable, "-m", "bnfold", "verify", str(model), str(model)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    expected = {"custom-op": "error: onnxruntime cannot run m.onnx: Fatal error: com.example:Foo(-1) is not a "
                             "registered function/op",
                "opset-99": f"error: {model}: opset 99 of the default domain is outside 7 to "
                            f"{onnx.defs.onnx_opset_version()}"}[build]
    assert proc.stderr.splitlines()[0].startswith(expected), proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "\x1b" not in proc.stderr and "onnxruntime_src" not in proc.stderr


def test_onnxruntime_warnings_stay_quiet_unless_debug(tmp_path):
    """Initializers listed as graph inputs (as IR 3 exporters wrote them): onnxruntime warns about each one."""
    a = two_output_model(tmp_path / "a.onnx")
    legacy = onnx.load(str(a))
    legacy.ir_version = 8
    legacy.graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, i.dims)
                              for i in legacy.graph.initializer)
    onnx.save(legacy, str(tmp_path / "legacy.onnx"))
    quiet = subprocess.run([sys.executable, "-m", "bnfold", "verify", str(tmp_path / "legacy.onnx"),
                            str(tmp_path / "legacy.onnx")], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    loud = subprocess.run([sys.executable, "-m", "bnfold", "--debug", "verify", str(tmp_path / "legacy.onnx"),
                           str(tmp_path / "legacy.onnx")], capture_output=True, text=True, timeout=120)
    assert loud.returncode == 0, loud.stderr
    assert "initializer" in loud.stderr.lower() and "w" in loud.stderr

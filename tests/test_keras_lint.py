"""Lint of Keras files read as data (bnfold/keras/): the shipped samples in both formats, hand-made configs in
both dialects, and proof that nothing is imported or executed."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from bnfold.cli import cli
from bnfold.errors import InputError
from bnfold.keras import load_keras
from bnfold.lint import lint_model

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models" / "keras"
# sample -> every finding with default options, as (code, node, Keras layer)
EXPECTED = {
    "seed_mlp": {("BN001", "dense_1", "dense_1"), ("BN001", "dense_2", "dense_2"),
                 ("BN001", "dense_out", "dense_out"), ("BN002", "bn_out", "bn_out")},
    "cnn_bn_after_activation": set(),
    "untrained_statistics": {("BN007", "batch_normalization", "batch_normalization")},
    "dropout_before_bn": {("BN005", "batch_normalization", "batch_normalization")},
    "bn_on_input": {("BN011", "batch_normalization", "batch_normalization")},
    "wrong_bn_axis": {("BN013", "batch_normalization", "batch_normalization")},
    "pytorch_momentum": {("BN014", "batch_normalization", "batch_normalization")},
    "training_true": {("BN006", "batch_normalization", "batch_normalization")},
    "clean": set(),
}


def findings(path: Path):
    return lint_model(load_keras(path), str(path))


def test_the_sample_script_lists_the_shipped_files():
    import runpy

    script = runpy.run_path(str(SAMPLES / "make_keras_samples.py"), run_name="make_keras_samples")
    assert set(script["NAMES"]) == set(EXPECTED)
    assert sorted(p.name for p in SAMPLES.glob("*.keras")) == sorted(f"{n}.keras" for n in EXPECTED)
    assert sorted(p.name for p in SAMPLES.glob("*.h5")) == sorted(f"{n}.h5" for n in EXPECTED)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_sample_gives_exactly_its_findings(name, suffix):
    assert {(f.code, f.node, f.keras_layer) for f in findings(SAMPLES / f"{name}{suffix}")} == EXPECTED[name]


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_seed_mlp_findings_give_keras_fixes(suffix):
    by_node = {f.node: f for f in findings(SAMPLES / f"seed_mlp{suffix}") if f.code == "BN001"}
    assert by_node["dense_1"].fix == "set use_bias=False on Dense 'dense_1'"
    assert by_node["dense_1"].message.startswith(
        "Dense 'dense_1' has a bias that BatchNormalization 'bn_1' cancels")


def test_cli_lint_of_the_seed_mlp_without_tensorflow():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from bnfold.cli import cli\n"
        f"r = CliRunner().invoke(cli, ['lint', '--isolated', '--format', 'json', {str(SAMPLES / 'seed_mlp.keras')!r},"
        f" {str(SAMPLES / 'seed_mlp.h5')!r}])\n"
        "print(r.exit_code, r.stdout.count('\"BN001\"'), r.stdout.count('\"BN002\"'))\n"
        "print([m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines() == ["1 6 2", "[]"]


def test_verify_candidate_must_be_onnx(tmp_path):
    result = CliRunner().invoke(cli, ["verify", str(SAMPLES / "seed_mlp.keras"), str(SAMPLES / "seed_mlp.h5")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: seed_mlp.h5 is a Keras model: `bnfold verify` needs ONNX here "
        "(`bnfold fold seed_mlp.h5 OUT.onnx` converts and folds it)"]


def test_keras_fold_writes_onnx_only(tmp_path):
    result = CliRunner().invoke(cli, ["fold", str(SAMPLES / "seed_mlp.keras"), str(tmp_path / "out.keras")])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: seed_mlp.keras is a Keras model: it folds into a new ONNX file, "
                                     "so OUT must end in .onnx")


# --- hand-made files: both dialects, nested models, shared layers, code that must not run ------------------

def keras3_tensor(layer, node=0, index=0):
    return {"class_name": "__keras_tensor__", "config": {"shape": [None], "dtype": "float32",
                                                           "keras_history": [layer, node, index]}}


def keras3_layer(cls, name, inputs, config=None, kwargs=None, input_shape=None):
    args = [inputs[0]] if len(inputs) == 1 else [inputs]
    layer = {"class_name": cls, "name": name, "config": {"name": name, **(config or {})},
             "inbound_nodes": [{"args": args, "kwargs": kwargs or {}}] if inputs else []}
    if input_shape is not None:  # Keras 3 records the shape each layer was built for
        layer["build_config"] = {"input_shape": input_shape}
    return layer


def write_keras3(path: Path, config: dict, variables: dict[str, list[np.ndarray]],
                 compression=zipfile.ZIP_STORED) -> Path:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        for key, arrays in variables.items():
            group = h5.create_group(f"layers/{key}/vars")
            group.attrs["name"] = key.split("/layers/")[-1]
            for i, array in enumerate(arrays):
                group.create_dataset(str(i), data=array)
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


def bn_vars(n, mean=None, var=None):
    """gamma 1, beta 0 and per-channel statistics (distinct per channel unless `mean`/`var` fix them)."""
    spread = np.linspace(0.0, 0.1, n, dtype=np.float32)
    mean = np.full(n, mean, np.float32) if mean is not None else 0.5 + spread
    var = np.full(n, var, np.float32) if var is not None else 2.0 + spread
    return [np.ones(n, np.float32), np.zeros(n, np.float32), mean, var]


def functional(name, layers, inputs, outputs):
    return {"class_name": "Functional", "config": {"name": name, "layers": layers, "input_layers": inputs,
                                                   "output_layers": outputs}}


def input_layer(name, shape):
    return {"class_name": "InputLayer", "name": name, "config": {"name": name, "batch_shape": [None, *shape]},
            "inbound_nodes": []}


def test_lambda_layer_code_is_never_run(tmp_path):
    marker = tmp_path / "ran.txt"
    code = f"lambda x: (open({str(marker)!r}, 'w').write('ran'), x)[1]"
    layers = [input_layer("x", [4]),
              keras3_layer("Lambda", "evil", [keras3_tensor("x")], {"function": {"class_name": "__lambda__",
                                                                               "config": {"code": code}}}),
              keras3_layer("Dense", "dense", [keras3_tensor("evil")], {"units": 3, "use_bias": True}),
              keras3_layer("BatchNormalization", "bn", [keras3_tensor("dense")], {"axis": -1})]
    path = write_keras3(tmp_path / "lambda.keras", functional("m", layers, ["x", 0, 0], ["bn", 0, 0]),
                        {"dense": [np.ones((4, 3), np.float32), np.ones(3, np.float32)], "bn": bn_vars(3)})
    model = load_keras(path)
    assert [(n.op_type, n.domain) for n in model.graph][:1] == [("Lambda", "keras")]
    assert {(f.code, f.node) for f in lint_model(model, str(path))} == {("BN001", "dense")}
    # fold would load the model in TensorFlow, which runs the code: refused before anything is imported
    result = CliRunner().invoke(cli, ["fold", str(path), str(tmp_path / "out.onnx")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: lambda.keras has Lambda layers (evil) whose code TensorFlow would run to load it; "
        "pass --unsafe-keras if you trust the file")
    assert not marker.exists() and not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_weights_read_in_place_or_from_a_compressed_member(tmp_path, compression):
    """Keras stores model.weights.h5 uncompressed, and bnfold reads it in place; a deflated one is read whole."""
    layers = [input_layer("x", [4]),
              keras3_layer("Dense", "dense", [keras3_tensor("x")], {"units": 3, "use_bias": False}),
              keras3_layer("BatchNormalization", "bn", [keras3_tensor("dense")], {"axis": -1})]
    path = write_keras3(tmp_path / "m.keras", functional("m", layers, ["x", 0, 0], ["bn", 0, 0]),
                        {"dense": [np.ones((4, 3), np.float32)], "bn": bn_vars(3, mean=0.0, var=1.0)}, compression)
    assert [(f.code, f.node) for f in findings(path)] == [("BN007", "bn")]


def test_nested_model_shared_layer_and_training_true(tmp_path):
    inner = functional("block", [
        input_layer("block_in", [4]),
        keras3_layer("Dense", "fc", [keras3_tensor("block_in")], {"units": 4, "use_bias": False}),
        keras3_layer("BatchNormalization", "bn", [keras3_tensor("fc")], {"axis": -1}, {"training": True}),
    ], ["block_in", 0, 0], ["bn", 0, 0])
    inner.update(name="block", inbound_nodes=[{"args": [keras3_tensor("a")], "kwargs": {}}])
    shared = keras3_layer("Dense", "shared", [keras3_tensor("x")], {"units": 4, "use_bias": True})
    shared["inbound_nodes"].append({"args": [keras3_tensor("y")], "kwargs": {}})
    layers = [input_layer("x", [4]), input_layer("y", [4]), shared,
              keras3_layer("Add", "a", [keras3_tensor("shared", 0), keras3_tensor("shared", 1)]), inner,
              keras3_layer("Activation", "out", [keras3_tensor("block")], {"activation": "softmax"})]
    variables = {"shared": [np.ones((4, 4), np.float32), np.zeros(4, np.float32)],
                 "block/layers/fc": [np.eye(4, dtype=np.float32)], "block/layers/bn": bn_vars(4)}
    path = write_keras3(tmp_path / "nested.keras",
                        functional("m", layers, [["x", 0, 0], ["y", 0, 0]], [["out", 0, 0]]), variables)
    model = load_keras(path)
    assert [v.name for v in model.graph.inputs] == ["x", "y"]
    ops = [(n.name, n.op_type) for n in model.graph]
    assert ops == [("shared", "Gemm"), ("shared", "Gemm"), ("a", "Add"), ("block/fc", "Gemm"),
                   ("block/bn", "BatchNormalization"), ("out", "Softmax")]
    found = lint_model(model, str(path))
    assert {(f.code, f.node) for f in found} == {("BN002", "block/bn"), ("BN006", "block/bn")}
    training = next(f for f in found if f.code == "BN006")
    assert training.message == ("BatchNormalization 'block/bn' is called with training=True: it normalizes with "
                                "the statistics of each batch whenever the model is called without training= "
                                "(predict and export pass False)")
    assert training.fix.startswith("drop training=True from the call of 'block/bn'")


def test_legacy_dialect_from_h5_attributes(tmp_path):
    config = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"class_name": "Dense", "config": {"name": "d", "units": 3, "use_bias": True, "activation": "relu",
                                           "batch_input_shape": [None, 5]}},
        {"class_name": "BatchNormalization", "config": {"name": "b", "axis": [1], "epsilon": 0.001}},
    ]}}
    path = tmp_path / "seq.hdf5"
    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = json.dumps(config)
        weights = h5.create_group("model_weights")
        for layer, names in (("d", ["kernel", "bias"]), ("b", ["gamma", "beta", "moving_mean", "moving_variance"])):
            group = weights.create_group(layer)
            group.attrs["weight_names"] = [f"{layer}/{n}:0".encode() for n in names]
            for n in names:
                value = -1.0 if n == "moving_variance" else 0.5
                data = np.full((5, 3) if n == "kernel" else 3, value, np.float32) + np.float32(0.01) * np.arange(3)
                group.create_dataset(f"{layer}/{n}:0", data=data)
    model = load_keras(path)
    assert [(n.name, n.op_type) for n in model.graph] == [("d", "Gemm"), ("d/activation", "Relu"),
                                                          ("b", "BatchNormalization")]
    # a negative moving variance: BN008; the Relu sits between d's bias and b, so no BN001
    assert {f.code for f in lint_model(model, str(path))} == {"BN008"}


def test_legacy_tf_op_lambda_is_an_opaque_barrier(tmp_path):
    """tf_keras writes `x + 3` (MobileNetV3's hard-swish) as a TFOpLambda whose inbound node is one flat ref."""
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "name": "x", "config": {"name": "x", "batch_input_shape": [None, 4]},
         "inbound_nodes": []},
        {"class_name": "TFOpLambda", "name": "tf.__operators__.add", "config": {"name": "tf.__operators__.add",
                                                                               "function": "__operators__.add"},
         "inbound_nodes": [["x", 0, 0, {"y": 3.0, "name": None}]]},
    ], "input_layers": [["x", 0, 0]], "output_layers": [["tf.__operators__.add", 0, 0]]}}
    path = tmp_path / "op.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = json.dumps(config)
    model = load_keras(path)
    assert [(n.op_type, n.domain) for n in model.graph] == [("TFOpLambda", "keras")]
    assert lint_model(model, str(path)) == []


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04broken"])
def test_unreadable_keras_file_is_an_input_error(tmp_path, content):
    path = tmp_path / "m.keras"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"^m.keras is not a readable Keras model"):
        load_keras(path)


def test_h5_with_weights_only_says_so(tmp_path):
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as h5:
        h5.create_group("dense")
    with pytest.raises(InputError, match=r"^w.h5 has no model_config: it holds weights only, not a model$"):
        load_keras(path)


def test_explicit_channel_axis_is_the_channel_axis(tmp_path):
    """keras.applications write BatchNormalization(axis=3) for channels-last images, often after a
    ZeroPadding2D; with the rank unknown (after a Lambda, no build_config) a positive axis cannot be proved
    wrong either; the build_config's shape can."""
    layers = [input_layer("x", [8, 8, 3]),
              keras3_layer("ZeroPadding2D", "pad", [keras3_tensor("x")], {"padding": [[1, 1], [1, 1]]}),
              keras3_layer("Conv2D", "conv", [keras3_tensor("pad")], {"filters": 4, "kernel_size": [3, 3],
                                                                       "use_bias": False}),
              keras3_layer("BatchNormalization", "bn", [keras3_tensor("conv")], {"axis": 3}),
              keras3_layer("Lambda", "opaque", [keras3_tensor("bn")]),
              keras3_layer("BatchNormalization", "bn_after", [keras3_tensor("opaque")], {"axis": 2}),
              keras3_layer("Conv2D", "conv2", [keras3_tensor("bn_after")], {"filters": 4, "kernel_size": [1, 1],
                                                                             "use_bias": False}),
              keras3_layer("BatchNormalization", "bn_height", [keras3_tensor("conv2")], {"axis": 1},
                           input_shape=[None, 10, 10, 4])]
    variables = {"conv": [np.ones((3, 3, 3, 4), np.float32)], "bn": bn_vars(4), "bn_after": bn_vars(4),
                 "conv2": [np.ones((1, 1, 4, 4), np.float32)], "bn_height": bn_vars(10)}
    path = write_keras3(tmp_path / "axes.keras", functional("m", layers, ["x", 0, 0], ["bn_height", 0, 0]),
                        variables)
    model = load_keras(path)
    assert [(n.name, n.op_type, n.domain) for n in model.graph if "bn" in n.name] == [
        ("bn", "BatchNormalization", ""), ("bn_after", "BatchNormalization", ""),
        ("bn_height", "BatchNormalization", "keras")]
    assert [f.node for f in lint_model(model, str(path)) if f.code == "BN013"] == ["bn_height"]


def test_momentum_rule_is_for_keras_files_only():
    """In an ONNX model the statistics are already fixed: the momentum it carries is history, not a bug."""
    import onnx.parser
    import onnx_ir as ir

    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 2, 4, 4] x) => (float[1, 2, 4, 4] y)
        <float[2] s = {1.0, 1.0}, float[2] b = {0.0, 0.0}, float[2] m = {0.5, 0.5}, float[2] v = {2.0, 2.0},
         float[2, 2, 1, 1] w = {1.0, 0.0, 0.0, 1.0}>
        {
            c = Conv (x, w)
            y = BatchNormalization <momentum = 0.1> (c, s, b, m, v)
        }""")
    assert "BN014" not in {f.code for f in lint_model(ir.from_proto(proto), "m.onnx")}


def test_keras_layer_outcomes_follow_tf2onnx_op_names():
    from bnfold.commands.fold import keras_layer_outcomes
    from bnfold.fold.result import Decision

    decisions = [
        Decision("m/batch_normalization/FusedBatchNormV3", "BatchNormalization", "folded", "backward", "c", "Conv"),
        Decision("m/batch_normalization_1/batchnorm/mul_1", "Mul", "skipped", reason="padding-forward"),
        Decision("m/batch_normalization_1/batchnorm/add_1", "Add", "skipped", reason="padding-forward"),
    ]
    scopes = {"batch_normalization": ["batch_normalization"], "batch_normalization_1": ["batch_normalization_1"],
              "batch_normalization_2": ["batch_normalization_2"], "batch_normalization_3": ["batch_normalization_3"]}
    nodes = [("Transpose", "m/batch_normalization_2/batchnorm/mul_1__6"),  # a layout Transpose borrows the name
             ("Mul", "m/batch_normalization_3/batchnorm/mul_1"), ("Add", "m/batch_normalization_3/batchnorm/add_1")]
    assert keras_layer_outcomes(scopes, decisions, nodes) == {
        "batch_normalization": "folded", "batch_normalization_1": "left: padding-forward",
        "batch_normalization_2": "merged by TensorFlow", "batch_normalization_3": "left: no adjacent linear op"}


def test_training_true_in_tf_keras_also_breaks_predict_and_the_export():
    path = SAMPLES / "training_true.h5"
    (finding,) = findings(path)
    assert finding.code == "BN006"
    assert "in predict too: tf_keras lets it win over training=False" in finding.message

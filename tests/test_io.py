"""Reading and writing models on disk: external data, confinement of data paths, atomic writes, in-place.

Driven through `bnfold fold` (CliRunner), because that is where the guarantees matter: the input and its
data are never modified unless --in-place, OUT gets its own data file, and nothing is left half-written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from bnfold import io
from bnfold.cli import cli
from bnfold.errors import InputError

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
FP16 = SAMPLES / "fp16_conv_bn.onnx"


# --------------------------------------------------------------------------------------------------------
# helpers


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def run_model(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def assert_outputs_equal(got: list[np.ndarray], want: list[np.ndarray], rtol=1e-4, atol=1e-5) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def conv_bn_model(seed: int = 0) -> onnx.ModelProto:
    """x[1,8,12,12] -> conv1 (16x8x3x3, pad 1, bias) -> bn1 -> relu1 -> y. Weights large enough (4.6 KB) to be
    written as external data by any sensible size threshold."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.standard_normal((16, 8, 3, 3)) / np.sqrt(72)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(0.0, 0.1, 16).astype(np.float32), "B"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 16).astype(np.float32), "bn_scale"),
        numpy_helper.from_array(rng.normal(0.0, 0.1, 16).astype(np.float32), "bn_bias"),
        numpy_helper.from_array(rng.normal(0.0, 0.5, 16).astype(np.float32), "bn_mean"),
        numpy_helper.from_array(rng.uniform(0.5, 2.0, 16).astype(np.float32), "bn_var"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["n"], name="bn1"),
        helper.make_node("Relu", ["n"], ["y"], name="relu1"),
    ]
    graph = helper.make_graph(nodes, "conv_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 12, 12])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def feeds() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(11).standard_normal((1, 8, 12, 12)).astype(np.float32)}


def save_external(model: onnx.ModelProto, path: Path, location: str | None = None) -> Path:
    location = location or f"{path.name}.data"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location,
              size_threshold=0)
    return path.parent / location


def external_locations(path: Path) -> dict[str, str]:
    """tensor name -> external data location, for every external tensor of the model at path."""
    proto = onnx.load(str(path), load_external_data=False)
    return {t.name: next(e.value for e in t.external_data if e.key == "location")
            for t in proto.graph.initializer if t.data_location == TensorProto.EXTERNAL}


def bn_count(path: Path) -> int:
    return sum(n.op_type == "BatchNormalization" for n in onnx.load(str(path), load_external_data=False).graph.node)


# --------------------------------------------------------------------------------------------------------
# external data


def test_external_data_model_folds_into_its_own_data_file(tmp_path):
    src_dir, out_dir = tmp_path / "src", tmp_path / "dst"
    src_dir.mkdir()
    out_dir.mkdir()
    model = src_dir / "m.onnx"
    data = save_external(conv_bn_model(), model, "m.onnx.data")
    model_hash, data_hash = sha256(model), sha256(data)
    expected = run_model(model, feeds())
    out = out_dir / "folded.onnx"

    result = invoke("fold", model, out)

    assert result.exit_code == 0, result.output
    assert "folded 1/1 BatchNormalization" in result.stdout
    assert listing(out_dir) == ["folded.onnx", "folded.onnx.data"]
    locations = external_locations(out)
    assert "W" in locations or any("W" in name for name in locations), locations  # the big weight is external
    assert set(locations.values()) == {"folded.onnx.data"}
    assert bn_count(out) == 0
    assert_outputs_equal(run_model(out, feeds()), expected)
    # the input model and its data are untouched, and nothing was added next to them
    assert listing(src_dir) == ["m.onnx", "m.onnx.data"]
    assert (sha256(model), sha256(data)) == (model_hash, data_hash)
    # OUT is self-contained in its folder: it still loads after the source folder is gone
    shutil.rmtree(src_dir)
    onnx.checker.check_model(str(out), full_check=True)
    assert_outputs_equal(run_model(out, feeds()), expected)


def test_external_data_model_folds_in_place(tmp_path):
    model = tmp_path / "m.onnx"
    data = save_external(conv_bn_model(), model)
    original_data = data.read_bytes()
    expected = run_model(model, feeds())
    (tmp_path / "saved").mkdir()
    shutil.copy(model, tmp_path / "saved" / "m.onnx")
    shutil.copy(data, tmp_path / "saved" / data.name)

    result = invoke("fold", model, "--in-place")

    assert result.exit_code == 0, result.output
    # the new weights went to a new name, switched to by the model's one rename; the old data file went after
    assert listing(tmp_path) == ["m.onnx", "m.onnx.1.data", "saved"]
    assert bn_count(model) == 0
    assert (tmp_path / "m.onnx.1.data").read_bytes() != original_data
    assert set(external_locations(model).values()) == {"m.onnx.1.data"}
    assert_outputs_equal(run_model(model, feeds()), expected)
    assert_outputs_equal(run_model(tmp_path / "saved" / "m.onnx", feeds()), expected)
    # and back: the names alternate
    assert invoke("fold", model, "--in-place").exit_code == 0
    assert listing(tmp_path) == ["m.onnx", "m.onnx.data", "saved"]
    assert_outputs_equal(run_model(model, feeds()), expected)


def test_refolding_into_an_existing_external_data_out_leaves_one_data_file(tmp_path):
    model, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    save_external(conv_bn_model(), model)
    expected = run_model(model, feeds())
    for data_name in ("out.onnx.data", "out.onnx.1.data", "out.onnx.data"):
        assert invoke("fold", model, out).exit_code == 0
        assert listing(tmp_path) == sorted(["m.onnx", "m.onnx.data", "out.onnx", data_name])
        assert set(external_locations(out).values()) == {data_name}
        assert_outputs_equal(run_model(out, feeds()), expected)


def test_a_data_file_out_shares_with_other_models_is_left_alone(tmp_path):
    model, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    save_external(conv_bn_model(), model)
    save_external(conv_bn_model(), out, "shared.data")
    assert invoke("fold", model, out).exit_code == 0
    assert "shared.data" in listing(tmp_path) and set(external_locations(out).values()) == {"out.onnx.data"}


# A fold killed (SIGKILL) right after the k-th rename it publishes, or while it writes its staging files.
KILLED_FOLD = """
import os, signal, sys
import bnfold.io as io
point, calls = sys.argv[1], []
publish, save = io._publish, io.StagedModel.__init__
def killing_publish(staged, destination):
    publish(staged, destination)
    calls.append(destination)
    if point == f"after-rename-{len(calls)}":
        os.kill(os.getpid(), signal.SIGKILL)
def killing_init(self, *args, **kwargs):
    save(self, *args, **kwargs)
    if point == "after-staging":
        os.kill(os.getpid(), signal.SIGKILL)
io._publish, io.StagedModel.__init__ = killing_publish, killing_init
from bnfold.cli import main
sys.argv = ["bnfold", "fold", *sys.argv[2:], "--no-verify"]
main()
"""


@pytest.mark.parametrize("point", ["after-staging", "after-rename-1", "after-rename-2"])
@pytest.mark.parametrize("mode", ["into-existing-out", "in-place"])
def test_a_killed_fold_leaves_the_old_or_the_new_model_never_a_mix(tmp_path, point, mode):
    import subprocess
    import sys

    model = tmp_path / "m.onnx"
    save_external(conv_bn_model(), model)
    expected = run_model(model, feeds())
    args = [str(model), "--in-place"] if mode == "in-place" else [str(model), str(tmp_path / "out.onnx")]
    target = model if mode == "in-place" else tmp_path / "out.onnx"
    if mode == "into-existing-out":
        assert invoke("fold", model, target, "--no-verify").exit_code == 0  # OUT and OUT.data exist
    before = {name: (tmp_path / name).read_bytes() for name in listing(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", KILLED_FOLD, point, *args], capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    # the target loads and computes what the original computes: the old files or the new, never a mix
    assert_outputs_equal(run_model(target, feeds()), expected)
    if mode == "into-existing-out":
        assert model.read_bytes() == before["m.onnx"] and (tmp_path / "m.onnx.data").read_bytes() == \
            before["m.onnx.data"]
    # the next run cleans what the killed one left, and leaves one model with one data file
    assert invoke("fold", *args, "--no-verify").exit_code == 0
    names = listing(tmp_path)
    assert not [n for n in names if n.startswith(".")], names
    assert len([n for n in names if n.startswith(target.name) and n.endswith(".data")]) == 1, names
    assert_outputs_equal(run_model(target, feeds()), expected)


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, where):
    folder = tmp_path / "models"
    folder.mkdir()
    model = folder / "m.onnx"
    data = save_external(conv_bn_model(), model)
    outside = tmp_path / "outside.bin"
    shutil.move(data, outside)  # the data really is there: the refusal is about the path, not a missing file
    location = "../outside.bin" if where == "parent" else str(outside)
    proto = onnx.load(str(model), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, str(model))
    out = folder / "out.onnx"

    result = invoke("fold", model, out)

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "outside" in lines[0], result.stderr
    assert listing(folder) == ["m.onnx"]
    with pytest.raises(InputError, match="outside"):
        io.load_model(model)


def test_missing_external_data_file(tmp_path):
    model = tmp_path / "m.onnx"
    save_external(conv_bn_model(), model).unlink()
    out = tmp_path / "out.onnx"

    result = invoke("fold", model, out)

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing" in lines[0] and "m.onnx.data" in lines[0], result.stderr
    assert listing(tmp_path) == ["m.onnx"]


@pytest.mark.parametrize("case", ["data-named-like-out", "out-is-the-data-file"])
def test_fold_never_overwrites_the_inputs_external_data(tmp_path, case):
    """Without --in-place the input must survive, including its external data file (CLI contract). Here OUT
    (or OUT's data file) has the same path as the data file the input reads: refused like OUT == IN."""
    model = tmp_path / "a.onnx"
    if case == "data-named-like-out":
        data = save_external(conv_bn_model(), model, "b.onnx.data")  # `fold a.onnx b.onnx` writes b.onnx.data
        out = tmp_path / "b.onnx"
    else:
        data = save_external(conv_bn_model(), model, "a.onnx.data")
        out = tmp_path / "a.onnx.data"
    model_bytes, data_bytes = model.read_bytes(), data.read_bytes()
    expected = run_model(model, feeds())

    result = invoke("fold", model, out)

    assert model.read_bytes() == model_bytes
    assert data.read_bytes() == data_bytes, f"{data.name} (the input's weights) was overwritten"
    assert_outputs_equal(run_model(model, feeds()), expected)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and data.name in lines[0], result.stderr
    assert listing(tmp_path) == sorted([model.name, data.name])


def test_in_place_with_another_out_does_not_break_the_input(tmp_path):
    """--in-place allows replacing IN, not leaving IN behind pointing at weights that now belong to OUT:
    `fold a.onnx b.onnx --in-place`, where a.onnx reads b.onnx.data, must either refuse or keep a.onnx working."""
    model = tmp_path / "a.onnx"
    data = save_external(conv_bn_model(), model, "b.onnx.data")
    expected = run_model(model, feeds())

    result = invoke("fold", model, tmp_path / "b.onnx", "--in-place")

    assert result.exit_code in (0, 2), result.output
    assert_outputs_equal(run_model(model, feeds()), expected)
    if result.exit_code == 2:
        assert listing(tmp_path) == ["a.onnx", data.name]


def test_verification_failure_leaves_no_external_data(tmp_path):
    model = tmp_path / "in.onnx"
    data = save_external(onnx.load(str(FP16)), model)
    out = tmp_path / "out.onnx"

    result = invoke("fold", model, out, "--atol", "0", "--rtol", "0")

    assert result.exit_code == 1, result.output
    assert listing(tmp_path) == ["in.onnx", data.name]


# --------------------------------------------------------------------------------------------------------
# atomic writes


@pytest.mark.parametrize("external", [False, True], ids=["single-file", "external-data"])
def test_no_temp_files_left_after_a_successful_fold(tmp_path, external):
    model = tmp_path / "in.onnx"
    if external:
        save_external(conv_bn_model(), model)
    else:
        onnx.save(conv_bn_model(), str(model))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "model.onnx"

    result = invoke("fold", model, out, "--report", out_dir / "report.json")

    assert result.exit_code == 0, result.output
    names = listing(out_dir)
    assert not [n for n in names if n.startswith(".")], names  # no .model.onnx.* staging dir, no .report.json.*
    assert names == (["model.onnx", "model.onnx.data", "report.json"] if external else ["model.onnx", "report.json"])


def test_single_file_model_stays_single_file(tmp_path):
    model = tmp_path / "in.onnx"
    onnx.save(conv_bn_model(), str(model))
    out = tmp_path / "out.onnx"
    result = invoke("fold", model, out)
    assert result.exit_code == 0, result.output
    assert external_locations(out) == {}
    assert listing(tmp_path) == ["in.onnx", "out.onnx"]


def test_written_files_get_ordinary_permissions(tmp_path):
    """The model and the JSON report are created like any file the user writes (mode from the umask); a temp
    file + rename must not leave them private (0600)."""
    old_umask = os.umask(0o022)
    try:
        reference = tmp_path / "reference.txt"
        reference.write_text("x")
        model = tmp_path / "in.onnx"
        onnx.save(conv_bn_model(), str(model))
        out, report = tmp_path / "out.onnx", tmp_path / "report.json"

        result = invoke("fold", model, out, "--report", report)
    finally:
        os.umask(old_umask)

    assert result.exit_code == 0, result.output
    want = stat.S_IMODE(reference.stat().st_mode)
    assert want == 0o644
    assert oct(stat.S_IMODE(out.stat().st_mode)) == oct(want)
    assert oct(stat.S_IMODE(report.stat().st_mode)) == oct(want)


# --------------------------------------------------------------------------------------------------------
# the library entry points


def test_load_model_rejects_non_models(tmp_path):
    text = tmp_path / "x.onnx"
    text.write_text("not a model\n")
    with pytest.raises(InputError, match="not a readable ONNX model"):
        io.load_model(text)
    empty = tmp_path / "e.onnx"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="no graph"):
        io.load_model(empty)
    with pytest.raises(InputError, match="no such file"):
        io.load_model(tmp_path / "missing.onnx")


def test_load_model_keeps_external_data_lazy(tmp_path):
    model = tmp_path / "m.onnx"
    save_external(conv_bn_model(), model)
    loaded = io.load_model(model)
    assert io.has_external_data(loaded)
    single = tmp_path / "s.onnx"
    onnx.save(conv_bn_model(), str(single))
    assert not io.has_external_data(io.load_model(single))


def test_large_external_weights_are_spilled_and_folded(tmp_path):
    """A weight above TensorSpill.MIN_BYTES goes through the scratch file: same outputs, no scratch left."""
    rng = np.random.default_rng(3)
    cin, cout = 256, 256  # 256*256*3*3 fp32 = 2.25 MiB
    w = (rng.normal(size=(cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
    stats = [rng.uniform(0.5, 1.5, cout), rng.normal(0, 0.1, cout), rng.normal(0, 0.5, cout),
             rng.uniform(0.5, 2.0, cout)]
    inits = [numpy_helper.from_array(w, "W")] + [
        numpy_helper.from_array(a.astype(np.float32), n) for a, n in zip(stats, ["s", "b", "m", "v"])]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    src = tmp_path / "big.onnx"
    save_external(model, src)
    out = tmp_path / "big.folded.onnx"

    result = invoke("fold", src, out)

    assert result.exit_code == 0, result.output
    assert bn_count(out) == 0
    assert external_locations(out)["W"] == "big.folded.onnx.data"
    x = {"x": rng.normal(size=(1, cin, 4, 4)).astype(np.float32)}
    assert_outputs_equal(run_model(out, x), run_model(src, x))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bnfold-spill")]

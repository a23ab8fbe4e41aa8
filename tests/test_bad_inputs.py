"""Malformed and hostile inputs: for `lint`, `fold` and `verify` each, one `error: …` line naming the problem,
exit 2, no traceback, nothing written, nothing read outside the model's folder (bnfold/validate.py and the
readers behind it)."""

from __future__ import annotations

import json
import os
import random
import zipfile
from pathlib import Path

import h5py
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from bnfold.cli import cli
from helpers import conv_bn_model

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"


def good() -> onnx.ModelProto:
    return conv_bn_model()[0]


def _init(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _edited(edit):
    def build(folder: Path) -> Path:
        model = good()
        edit(model, folder)
        path = folder / "m.onnx"
        path.write_bytes(model.SerializeToString())
        return path
    return build


def _raw(data: bytes):
    def build(folder: Path) -> Path:
        (folder / "m.onnx").write_bytes(data)
        return folder / "m.onnx"
    return build


def _truncated(fraction: float):
    data = good().SerializeToString()
    return _raw(data[:max(1, int(len(data) * fraction))])


def _external(location: str, *, offset: int = 0, make=None):
    def edit(model, folder):
        weight = _init(model, "W")
        raw = weight.raw_data
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
            weight.external_data.add(key=key, value=value)
        if make is not None:
            make(folder, raw)
    return _edited(edit)


def _outside_secret(folder: Path, raw: bytes) -> None:
    (folder.parent / "secret.data").write_bytes(raw)


def _symlink_outside(folder: Path, raw: bytes) -> None:
    _outside_secret(folder, raw)
    (folder / "link.data").symlink_to(folder.parent / "secret.data")


def _short_data(folder: Path, raw: bytes) -> None:
    (folder / "w.data").write_bytes(raw[: len(raw) // 2])


def _set(attr: str, value):
    return _edited(lambda model, folder: setattr(model, attr, value) if attr != "opset" else
                   model.opset_import[0].__setattr__("version", value))


def _bn_param(name: str, array: np.ndarray):
    return _edited(lambda model, folder: _init(model, name).CopyFrom(numpy_helper.from_array(array, name)))


def _string_param(model, folder):
    _init(model, "bn_var").CopyFrom(helper.make_tensor("bn_var", TensorProto.STRING, [6], [b"x"] * 6))


def _negative_dims(model, folder):
    weight = _init(model, "W")
    weight.dims[0] = -6


def _raw_length(delta: int):
    def edit(model, folder):
        weight = _init(model, "W")
        weight.raw_data = weight.raw_data[:delta] if delta < 0 else weight.raw_data + bytes(delta)
    return _edited(edit)


def _float_data_count(model, folder):
    weight = _init(model, "bn_scale")
    values = numpy_helper.to_array(weight).tolist()
    weight.ClearField("raw_data")
    weight.float_data.extend(values[:-1])


def _huge(op: str):
    def edit(model, folder):
        shape = [64, 1024, 512, 512] if op == "ConstantOfShape" else [1 << 31]
        model.graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), "huge_shape"))
        if op == "ConstantOfShape":
            made = helper.make_node("ConstantOfShape", ["huge_shape"], ["huge"], name="huge",
                                    value=numpy_helper.from_array(np.ones([1], np.float32)))
        else:
            model.graph.initializer.append(numpy_helper.from_array(np.ones([1], np.float32), "one"))
            made = helper.make_node("Expand", ["one", "huge_shape"], ["huge"], name="huge")
        model.graph.node.insert(0, made)
        bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
        bn.input[1 if op == "Expand" else 4] = "huge"
    return _edited(edit)


def _identity_cycle(model, folder):
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    model.graph.node.extend([helper.make_node("Identity", ["loop_b"], ["loop_a"], name="loop_a"),
                             helper.make_node("Identity", ["loop_a"], ["loop_b"], name="loop_b")])
    bn.input[0] = "loop_a"


def _produced_twice(model, folder):
    model.graph.node.append(helper.make_node("Identity", ["X"], [model.graph.node[0].output[0]], name="again"))


def _dangling(model, folder):
    model.graph.node[0].input[0] = "nowhere"


def _untyped_attribute(model, folder):
    """A flipped byte in `transA` (the fuzzer's find): a name the op does not have, and no type."""
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    conv.attribute.append(onnx.AttributeProto(name="tranrA", i=0))


def _not_utf8(folder: Path) -> Path:
    model = good()
    model.graph.node[0].name = "NAMEX"
    (folder / "m.onnx").write_bytes(model.SerializeToString().replace(b"NAMEX", b"N\xff\xfeMX"))
    return folder / "m.onnx"


def _directory(folder: Path) -> Path:
    (folder / "m.onnx").mkdir()
    return folder / "m.onnx"


# (build, a fragment the one error line carries)
ONNX_CASES = {
    "empty": (_raw(b""), "not an ONNX model (no graph)"),
    "random-bytes": (_raw(random.Random(0).randbytes(4096)), "ONNX model"),
    "truncated-10%": (_truncated(0.1), "ONNX model"),
    "truncated-50%": (_truncated(0.5), "ONNX model"),
    "truncated-99%": (_truncated(0.99), "ONNX model"),
    "text": (_raw(b"this is a text file, not a model\n"), "ONNX model"),
    "a-directory": (_directory, "m.onnx"),
    "missing": (lambda folder: folder / "m.onnx", "m.onnx"),
    "external-traversal": (_external("../secret.data", make=_outside_secret), "outside the model's folder"),
    "external-absolute": (_external("/etc/hostname"), "outside the model's folder"),
    "external-symlink-out": (_external("link.data", make=_symlink_outside), "outside the model's folder"),
    "external-missing": (_external("w.data"), "is missing"),
    "external-too-short": (_external("w.data", make=_short_data), "reads bytes 0 to"),
    "opset-1": (_set("opset", 1), "opset 1 of the default domain is outside"),
    "opset-99": (_set("opset", 99), "opset 99 of the default domain is outside"),
    "ir-0": (_set("ir_version", 0), "IR version 0 is not one"),
    "ir-99": (_set("ir_version", 99), "IR version 99 is not one"),
    "bn-param-length": (_bn_param("bn_mean", np.zeros(4, np.float32)), "scale, B, mean and var differ in length"),
    "bn-param-string": (_edited(_string_param), "var is not a floating-point tensor"),
    "negative-dims": (_edited(_negative_dims), "initializer 'W' has negative dims"),
    "raw-data-short": (_raw_length(-4), "initializer 'W' has 860 bytes of data; its dims [6, 4, 3, 3] need 864"),
    "raw-data-long": (_raw_length(8), "initializer 'W' has 872 bytes of data"),
    "float-data-count": (_edited(_float_data_count), "initializer 'bn_scale' has 5 values in float_data"),
    "constant-of-shape-64GiB": (_huge("ConstantOfShape"), "would make a 64.0 GiB tensor"),
    "expand-2^31": (_huge("Expand"), "would make a 8.0 GiB tensor"),
    "identity-cycle": (_edited(_identity_cycle), "the graph has a cycle through Identity"),
    "produced-twice": (_edited(_produced_twice), "is produced twice"),
    "dangling-input": (_edited(_dangling), "reads 'nowhere', which nothing produces"),
    "not-utf8-name": (_not_utf8, "is not valid UTF-8"),
    "untyped-attribute": (_edited(_untyped_attribute), "attribute 'tranrA' has no type"),
}

COMMANDS = {
    "lint": lambda case, folder: ["lint", case, "--isolated", "--format", "json"],
    "fold": lambda case, folder: ["fold", case, folder / "out.onnx"],
    "verify": lambda case, folder: ["verify", case, case],
}


def run(args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_refused(result, fragment: str, folder: Path, before: set[str]) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    assert fragment in errors[0], errors[0]
    assert set(os.listdir(folder)) == before  # nothing written


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("case", sorted(ONNX_CASES))
def test_bad_onnx_input(tmp_path, case, command):
    folder = tmp_path / "models"
    folder.mkdir()
    build, fragment = ONNX_CASES[case]
    path = build(folder)
    before = set(os.listdir(folder))
    if case == "a-directory":  # lint walks a folder (this one has no models); fold takes one with --out-dir
        fragment = {"lint": "no model files in", "fold": "need --out-dir", "verify": "is a directory"}[command]
    assert_refused(run(COMMANDS[command](path, folder)), fragment, folder, before)


# --------------------------------------------------------------------------------------------------------
# Keras files (read as data; nothing executed, nothing unpacked)


def _zip(members: dict[str, bytes | str]):
    def build(folder: Path) -> Path:
        with zipfile.ZipFile(folder / "m.keras", "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        return folder / "m.keras"
    return build


def _h5_without_config(folder: Path) -> Path:
    with h5py.File(folder / "m.h5", "w") as handle:
        handle.attrs["keras_version"] = "2.15.0"
    return folder / "m.h5"


SEQUENTIAL = json.dumps({"class_name": "Sequential", "config": {"name": "s", "layers": []}})
KERAS_CASES = {
    "zip-without-config": (_zip({"metadata.json": "{}"}), "no item named 'config.json'"),
    "zip-bomb": (_zip({"config.json": b"[" + b" " * (80 << 20) + b"]"}), "config.json unpacks to 80 MiB"),
    "member-escaping": (_zip({"config.json": SEQUENTIAL, "../../evil": "x"}), "'../../evil' points outside"),
    "config-not-json": (_zip({"config.json": "not json"}), "JSONDecodeError"),
    "config-a-list": (_zip({"config.json": "[1, 2]"}), "cannot read the Keras model config"),
    "h5-without-model-config": (_h5_without_config, "has no model_config"),
    "not-a-zip": (_raw(b"PK\x03\x04 this is not really a zip"), "not a readable Keras model"),
}


def _keras(build):
    def wrapped(folder):
        path = build(folder)
        return path if path.suffix in (".keras", ".h5") else path.rename(folder / "m.keras")
    return wrapped


@pytest.mark.parametrize("command", ["lint", "fold"])
@pytest.mark.parametrize("case", sorted(KERAS_CASES))
def test_bad_keras_input(tmp_path, case, command):
    folder = tmp_path / "models"
    folder.mkdir()
    build, fragment = KERAS_CASES[case]
    path = _keras(build)(folder)
    before = set(os.listdir(folder))
    assert_refused(run(COMMANDS[command](path, folder)), fragment, folder, before)
    assert not (tmp_path / "evil").exists()


# --------------------------------------------------------------------------------------------------------
# outputs and options


def test_out_in_a_missing_folder_or_a_folder(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(good(), str(model))
    assert_refused(run(["fold", model, tmp_path / "nope" / "o.onnx"]), "does not exist", tmp_path, {"m.onnx"})
    (tmp_path / "o.onnx").mkdir()
    assert_refused(run(["fold", model, tmp_path / "o.onnx"]), "is a folder", tmp_path, {"m.onnx", "o.onnx"})


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(good(), str(model))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert_refused(run(["fold", model, locked / "o.onnx"]), "cannot write there", locked, set())
    finally:
        locked.chmod(0o755)


def test_a_huge_shape_is_refused_before_any_allocation(tmp_path):
    model = good()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert_refused(run(["verify", path, path, "--shape", "X=50000000x4x7x7"]),
                   "input 'X' of shape 50000000x4x7x7 brings one batch of random inputs to 36.5 GiB", tmp_path,
                   {"m.onnx"})


def test_a_deeply_nested_config_is_one_line(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.bnfold.lint]\nselect = " + "[" * 5000 + "]" * 5000 + "\n")
    onnx.save(good(), str(tmp_path / "m.onnx"))
    assert_refused(run(["lint", tmp_path / "m.onnx"]), "invalid TOML (nested too deeply)", tmp_path,
                   {"m.onnx", "pyproject.toml"})


@pytest.mark.parametrize("option", ["-o", "--write-baseline"])
def test_lint_never_writes_over_a_model(tmp_path, option):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    for name in ("a.onnx", "b.onnx"):
        onnx.save(good(), str(zoo / name))
    before = {name: (zoo / name).read_bytes() for name in ("a.onnx", "b.onnx")}
    result = run(["lint", zoo, "--format", "sarif", option, zoo / "b.onnx"])
    flag = "--output" if option == "-o" else "--write-baseline"
    assert_refused(result, f"{flag} {zoo / 'b.onnx'} is a model this lint reads", zoo, set(before))
    assert {name: (zoo / name).read_bytes() for name in before} == before
    other = tmp_path / "other.onnx"
    onnx.save(good(), str(other))
    assert_refused(run(["lint", zoo / "a.onnx", option, other]), f"{flag} {other} is a model", zoo, set(before))
    assert other.read_bytes() == good().SerializeToString()


def test_the_report_never_replaces_the_baseline_it_reads_but_a_new_baseline_may(tmp_path):
    onnx.save(good(), str(tmp_path / "m.onnx"))
    baseline = tmp_path / "baseline.json"
    assert run(["lint", tmp_path / "m.onnx", "--write-baseline", baseline]).exit_code == 0
    kept = baseline.read_bytes()
    assert_refused(run(["lint", tmp_path / "m.onnx", "--baseline", baseline, "-o", baseline]),
                   "is the baseline this lint reads", tmp_path, {"m.onnx", "baseline.json"})
    assert baseline.read_bytes() == kept
    assert run(["lint", tmp_path / "m.onnx", "--baseline", baseline, "--write-baseline", baseline]).exit_code == 0

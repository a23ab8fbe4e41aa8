"""Which files `bnfold lint DIR` checks (ruff's rules: hidden folders, virtualenvs, build output, git-ignored
and excluded paths are skipped), what it says when it finds none, and how every format reports a model it
could not read."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from bnfold.cli import cli

SAMPLE = Path(__file__).resolve().parents[1] / "sample_models" / "lint" / "bn001_redundant_bias.onnx"


def lint(*args, cwd: Path | None = None):
    import os

    old = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        return CliRunner().invoke(cli, ["lint", "--isolated", *map(str, args)])
    finally:
        os.chdir(old)


def files_of(result) -> list[str]:
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)["files"]


def place(root: Path, *relative: str) -> None:
    for rel in relative:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE, root / rel)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    place(tmp_path, "models/a.onnx", ".venv/lib/x.onnx", ".cache/y.onnx", "env/z.onnx", "build/b.onnx",
          "out/o.onnx", "legacy/l.onnx")
    (tmp_path / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n", encoding="utf-8")
    return tmp_path


def test_hidden_folders_virtualenvs_and_build_output_are_skipped(project):
    assert files_of(lint("--format", "json", ".", cwd=project)) == ["legacy/l.onnx", "models/a.onnx", "out/o.onnx"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_what_git_ignores_is_skipped(project):
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    (project / ".gitignore").write_text("out/\n", encoding="utf-8")
    assert files_of(lint("--format", "json", ".", cwd=project)) == ["legacy/l.onnx", "models/a.onnx"]


def test_exclude_and_extend_exclude_on_the_command_line(project):
    assert files_of(lint("--format", "json", "--extend-exclude", "legacy,o.onnx", ".", cwd=project)) == [
        "models/a.onnx"]
    # --exclude replaces the default folders (build is linted again); hidden folders and venvs stay skipped
    assert files_of(lint("--format", "json", "--exclude", "models/*", ".", cwd=project)) == [
        "build/b.onnx", "legacy/l.onnx", "out/o.onnx"]


def test_a_file_named_on_the_command_line_is_always_linted(project):
    assert files_of(lint("--format", "json", "--extend-exclude", "models", "models/a.onnx", cwd=project)) == [
        "models/a.onnx"]


def test_exclude_patterns_in_config_are_relative_to_the_config_folder(project, tmp_path):
    (project / "pyproject.toml").write_text('[tool.bnfold.lint]\nextend-exclude = ["legacy/*", "out"]\n',
                                            encoding="utf-8")
    result = CliRunner().invoke(cli, ["lint", "--format", "json", str(project / "models"), str(project)])
    assert json.loads(result.stdout)["files"] == [str(project / "models" / "a.onnx")]


def test_no_model_found_is_an_error_not_a_pass(tmp_path):
    (tmp_path / "empty").mkdir()
    result = lint(tmp_path / "empty")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: no model files in {tmp_path / 'empty'} (looked for *.onnx, *.keras, *.h5, *.hdf5, skipping "
        "hidden folders, virtualenvs, build output, git-ignored and excluded paths)"]


@pytest.fixture
def one_good_one_broken(tmp_path: Path) -> Path:
    place(tmp_path, "a.onnx")
    (tmp_path / "b.onnx").write_bytes(b"\x08\x07garbage that is not a protobuf")
    return tmp_path


def test_an_unreadable_model_is_in_every_format(one_good_one_broken):
    folder = one_good_one_broken
    text = lint(".", cwd=folder)
    assert text.exit_code == 2
    assert "Found 2 findings (1 warning, 1 info) in 1 of 2 files; 1 could not be read." in text.stdout
    assert text.stderr == "error: b.onnx: not a readable ONNX model (DecodeError)\n"
    document = json.loads(lint("--format", "json", ".", cwd=folder).stdout)
    assert document["files"] == ["a.onnx", "b.onnx"]
    assert document["summary"]["unreadable"] == 1
    assert document["errors"] == [{"path": "b.onnx", "message": "not a readable ONNX model (DecodeError)"}]
    run = json.loads(lint("--format", "sarif", ".", cwd=folder).stdout)["runs"][0]
    (invocation,) = run["invocations"]
    assert invocation["executionSuccessful"] is False
    (note,) = invocation["toolExecutionNotifications"]
    assert (note["level"], note["message"]["text"]) == (
        "error", "could not read this model: not a readable ONNX model (DecodeError)")
    assert note["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "b.onnx"
    github = lint("--format", "github", ".", cwd=folder).stdout.splitlines()
    assert github[-1] == ("::error file=b.onnx,title=bnfold could not read this model::not a readable ONNX model "
                          "(DecodeError)")
    markdown = lint("--format", "markdown", ".", cwd=folder).stdout
    assert "**Could not read** `b.onnx`: not a readable ONNX model (DecodeError)" in markdown


def test_only_unreadable_models_never_read_as_passed(tmp_path):
    (tmp_path / "b.onnx").write_bytes(b"\x08\x07garbage")
    result = lint(".", cwd=tmp_path)
    assert result.exit_code == 2
    assert result.stdout == "No findings; 1 of 1 file could not be read.\n"


def _zipmap_classifier(path: Path) -> Path:
    """An ONNX-ML model whose output is a sequence of maps (skl2onnx classifiers end so), no BN at all."""
    node = helper.make_node("ZipMap", ["x"], ["y"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])
    out_type = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_value_info("y", out_type)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def test_an_onnx_ml_model_lints_clean_and_fold_says_why_it_cannot(tmp_path):
    model = _zipmap_classifier(tmp_path / "classifier.onnx")
    result = lint(model)
    assert (result.exit_code, result.stdout) == (0, "All checks passed (1 file).\n")
    folded = CliRunner().invoke(cli, ["fold", str(model), str(tmp_path / "out.onnx")])
    assert folded.exit_code == 2
    assert folded.output.strip().splitlines() == [
        f"error: {model}: cannot be read as an ONNX graph: Map types are not supported yet. Please contribute by "
        "creating a PR at https://github.com/onnx/onnx-ir."]
    assert not (tmp_path / "out.onnx").exists()

"""`bnfold fold PATHS… --out-dir OUT [-j N]`: a model zoo folded into a mirrored tree, one summary table,
exit codes that gate CI."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from bnfold.cli import cli
from bnfold.commands.fold_many import targets
from bnfold.errors import InputError

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


def zoo(root: Path, **files: str) -> Path:
    """Copies of sample models at the given relative paths (keys use __ for /)."""
    for rel, sample in files.items():
        dest = root / rel.replace("__", "/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLES / sample, dest)
    return root


def fold(*args):
    return CliRunner().invoke(cli, ["fold", *map(str, args)])


def bn_count(path: Path) -> int:
    return sum(n.op_type == "BatchNormalization" for n in onnx.load(path).graph.node)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_folder_folds_into_a_mirrored_tree_with_one_summary(tmp_path, jobs):
    models = zoo(tmp_path / "models", **{"resnet_block.onnx": "resnet_block.onnx",
                                        "heads__gemm_bn.onnx": "gemm_bn.onnx",
                                        "heads__deep__mlp.onnx": "mlp_bn_after_relu.onnx"})
    out = tmp_path / "out"
    result = fold(models, "--out-dir", out, "-j", jobs)
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.onnx"))
    assert written == ["heads/deep/mlp.onnx", "heads/gemm_bn.onnx", "resnet_block.onnx"]
    assert [bn_count(out / w) for w in written] == [0, 0, 0]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[1/3] ") and lines[0].endswith(": wrote")
    assert lines[-1] == "3 wrote (3 models)"
    table = [re.split(r"  +", row) for row in lines[lines.index("") + 1:-1]]
    assert table[0] == ["model", "result", "what happened"]
    assert [str(models / "resnet_block.onnx"), "wrote",
            "folded 5/5 BatchNormalization: 5 backward into Conv; 0 skipped; 16 nodes become 11"] in table


def test_a_gated_model_fails_the_run_and_is_not_written_while_the_others_are(tmp_path):
    models = zoo(tmp_path / "models", **{"a.onnx": "gemm_bn.onnx", "b.onnx": "lint/bn008_degenerate_statistics.onnx"})
    out = tmp_path / "out"
    result = fold(models, "--out-dir", out, "--fail-on-skip", "degenerate-statistics")
    assert result.exit_code == 1, result.output
    assert (out / "a.onnx").is_file() and not (out / "b.onnx").exists()
    assert f"[2/2] {models / 'b.onnx'} -> {out / 'b.onnx'}: FAILED" in result.stdout
    assert "  | 1 skipped for degenerate-statistics (1), which --fail-on-skip refuses" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 wrote, 1 FAILED (2 models)"


def test_an_unreadable_model_is_exit_2_and_the_rest_still_fold(tmp_path):
    models = zoo(tmp_path / "models", **{"a.onnx": "gemm_bn.onnx"})
    (models / "broken.onnx").write_bytes(b"\x08\x07garbage")
    out = tmp_path / "out"
    result = fold(models, "--out-dir", out)
    assert result.exit_code == 2
    assert (out / "a.onnx").is_file()
    assert f"{models / 'broken.onnx'} -> {out / 'broken.onnx'}: error: {models / 'broken.onnx'}: not a readable ONNX " \
           "model (DecodeError)" in result.stdout


def test_out_dir_inside_the_inputs_is_refused(tmp_path):
    models = zoo(tmp_path / "models", **{"a.onnx": "gemm_bn.onnx"})
    result = fold(models, "--out-dir", models / "folded")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: --out-dir {models / 'folded'} is inside the input folder {models}: choose a folder outside the inputs"]


def test_a_folder_without_out_dir_is_a_usage_error(tmp_path):
    models = zoo(tmp_path / "models", **{"a.onnx": "gemm_bn.onnx"})
    result = fold(models)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: a folder or several models need --out-dir OUT (IN [OUT] folds one file) (see `bnfold fold --help`)"]


def test_keras_files_saved_in_both_formats_do_not_collide(tmp_path):
    for name in ("net.keras", "net.h5", "net.onnx"):
        (tmp_path / "zoo" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "zoo" / name).write_bytes(b"")
    pairs = targets((tmp_path / "zoo",), tmp_path / "out")
    assert sorted(t.name for _, t in pairs) == ["net.h5.onnx", "net.keras.onnx", "net.onnx"]
    (tmp_path / "zoo" / "net.keras.onnx").write_bytes(b"")
    with pytest.raises(InputError, match="would both be written to"):
        targets((tmp_path / "zoo",), tmp_path / "out")

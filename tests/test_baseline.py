"""Baseline files: write -> load -> filter hides exactly the recorded findings, from any working directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnfold.baseline import Baseline, fingerprint, load_baseline, write_baseline
from bnfold.errors import InputError
from bnfold.lint.finding import Finding


def finding(code="BN001", path="models/a.onnx", node="conv1", graph="", message="m") -> Finding:
    return Finding(path=path, code=code, name="rule", severity="warning", node=node, op_type="Conv",
                   message=message, fix="f", graph=graph)


def test_write_format_sorted_and_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ci").mkdir()
    found = [finding("BN009", "models/b.onnx", "bn2"), finding("BN001", "models/a.onnx", "conv1"),
             finding("BN010", str(tmp_path / "models" / "a.onnx"), "bn", graph="loop_body")]
    assert write_baseline(Path("ci/baseline.json"), found) == 3
    text = (tmp_path / "ci" / "baseline.json").read_text(encoding="utf-8")
    assert text.endswith("}\n")
    data = json.loads(text)
    assert data == {"version": 1, "findings": [
        {"code": "BN001", "path": "../models/a.onnx", "graph": "", "node": "conv1",
         "fingerprint": fingerprint("BN001", "../models/a.onnx", "", "conv1")},
        {"code": "BN009", "path": "../models/b.onnx", "graph": "", "node": "bn2",
         "fingerprint": fingerprint("BN009", "../models/b.onnx", "", "bn2")},
        {"code": "BN010", "path": "../models/a.onnx", "graph": "loop_body", "node": "bn",
         "fingerprint": fingerprint("BN010", "../models/a.onnx", "loop_body", "bn")},
    ]}
    assert len({e["fingerprint"] for e in data["findings"]}) == 3
    assert all(len(e["fingerprint"]) == 16 for e in data["findings"])
    assert sorted(p.name for p in (tmp_path / "ci").iterdir()) == ["baseline.json"]  # no temp file left


def test_roundtrip_hides_recorded_keeps_new(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = [finding("BN001", "models/a.onnx", "conv1"), finding("BN009", "models/a.onnx", "bn1"),
           finding("BN007", "models/b.onnx", "bn3", graph="then_branch")]
    write_baseline(tmp_path / "bnfold-baseline.json", old)
    baseline = load_baseline(Path("bnfold-baseline.json"))
    assert isinstance(baseline, Baseline)
    assert len(baseline) == 3
    assert baseline.path == tmp_path / "bnfold-baseline.json"

    new = finding("BN001", "models/a.onnx", "conv2")
    renamed = finding("BN009", "models/a.onnx", "bn1_renamed")  # a renamed node is a new finding
    other_graph = finding("BN007", "models/b.onnx", "bn3")  # same node name, main graph: new
    other_code = finding("BN010", "models/a.onnx", "conv1")
    changed_message = finding("BN001", "models/a.onnx", "conv1", message="different numbers")
    current = [old[0], new, renamed, old[1], other_graph, old[2], other_code]
    assert baseline.filter(current) == ([new, renamed, other_graph, other_code], 3)
    assert baseline.filter([changed_message]) == ([], 1)
    assert baseline.filter([]) == ([], 0)


def test_paths_match_from_another_working_directory(tmp_path, monkeypatch):
    (tmp_path / "zoo" / "models").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "zoo")
    recorded = [finding("BN001", "models/a.onnx"), finding("BN002", "./models/b.onnx", "sm")]
    write_baseline(Path("baseline.json"), recorded)

    # from inside models/, with paths given relative to there
    monkeypatch.chdir(tmp_path / "zoo" / "models")
    baseline = load_baseline(Path("../baseline.json"))
    here = [finding("BN001", "a.onnx"), finding("BN002", "b.onnx", "sm"), finding("BN001", "c.onnx")]
    assert baseline.filter(here) == ([here[2]], 2)

    # from the filesystem root side, with absolute paths
    monkeypatch.chdir(tmp_path)
    baseline = load_baseline(tmp_path / "zoo" / "baseline.json")
    absolute = [finding("BN001", str(tmp_path / "zoo" / "models" / "a.onnx")),
                finding("BN002", "zoo/models/b.onnx", "sm")]
    assert baseline.filter(absolute) == ([], 2)

    # the whole tree moved elsewhere: relative entries still match
    moved = tmp_path / "moved"
    (tmp_path / "zoo").rename(moved)
    monkeypatch.chdir(moved)
    baseline = load_baseline(Path("baseline.json"))
    assert baseline.filter([finding("BN001", "models/a.onnx")]) == ([], 1)


def test_duplicate_identities_are_counted(tmp_path):
    path = tmp_path / "b.json"
    twice = [finding("BN008", str(tmp_path / "m.onnx"), "bn", message="negative variance"),
             finding("BN008", str(tmp_path / "m.onnx"), "bn", message="scale overflows fp16")]
    write_baseline(path, twice)
    assert len(json.loads(path.read_text())["findings"]) == 2
    baseline = load_baseline(path)
    third = finding("BN008", str(tmp_path / "m.onnx"), "bn", message="NaN gamma")
    assert baseline.filter([*twice, third]) == ([third], 2)
    # filtering does not consume the baseline
    assert baseline.filter(twice) == ([], 2)


def test_empty_baseline(tmp_path):
    path = tmp_path / "b.json"
    assert write_baseline(path, []) == 0
    assert json.loads(path.read_text()) == {"version": 1, "findings": []}
    assert load_baseline(path).filter([finding()]) == ([finding()], 0)


def test_overwrite_existing_baseline(tmp_path):
    path = tmp_path / "b.json"
    write_baseline(path, [finding("BN001", str(tmp_path / "a.onnx"))])
    write_baseline(path, [finding("BN002", str(tmp_path / "a.onnx"))])
    assert [e["code"] for e in json.loads(path.read_text())["findings"]] == ["BN002"]


def test_missing_baseline(tmp_path):
    with pytest.raises(InputError) as info:
        load_baseline(tmp_path / "nope.json")
    assert str(info.value) == f"{tmp_path / 'nope.json'}: baseline file not found"


@pytest.mark.parametrize(("text", "problem"), [
    ('{"version": 1, "findings": [', "invalid baseline file (not JSON: Expecting value: line 1 column 29 (char 28))"),
    ("[]", 'invalid baseline file (no "version")'),
    ('{"findings": []}', 'invalid baseline file (no "version")'),
    ('{"version": 2, "findings": []}', "unsupported baseline version 2 (expected 1)"),
    ('{"version": "1", "findings": []}', "unsupported baseline version '1' (expected 1)"),
    ('{"version": 1}', 'invalid baseline file ("findings" must be a list)'),
    ('{"version": 1, "findings": {}}', 'invalid baseline file ("findings" must be a list)'),
    ('{"version": 1, "findings": [{"code": "BN001", "path": "a.onnx", "graph": ""}]}',
     "invalid baseline file (entry 0 needs string code, path, graph, node)"),
    ('{"version": 1, "findings": [{"code": "BN001", "path": "a", "graph": "", "node": "n"}, 3]}',
     "invalid baseline file (entry 1 needs string code, path, graph, node)"),
])
def test_invalid_baseline(tmp_path, text, problem):
    path = tmp_path / "b.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_baseline(path)
    assert str(info.value) == f"{path}: {problem}"


def test_fingerprint_optional_on_load(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"version": 1, "findings": [
        {"code": "BN001", "path": "a.onnx", "graph": "", "node": "conv1"}]}), encoding="utf-8")
    assert load_baseline(path).filter([finding("BN001", str(tmp_path / "a.onnx"))]) == ([], 1)


def test_write_into_missing_folder_is_an_output_error(tmp_path):
    from bnfold.errors import OutputError

    with pytest.raises(OutputError):
        write_baseline(tmp_path / "missing" / "b.json", [finding()])

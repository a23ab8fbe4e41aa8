"""Rule selection (ruff-style prefixes), [tool.bnfold] config discovery and validation, and applying the
config to findings (per-file/per-node ignores, severity overrides)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bnfold.config import Config, apply, load_config
from bnfold.errors import InputError
from bnfold.lint import RULES
from bnfold.lint.context import LintOptions
from bnfold.lint.finding import Finding
from bnfold.lint.select import layer_codes, resolve_codes, split_selectors

CODES = tuple(f"BN{i:03d}" for i in range(1, 13))


def codes(*numbers: int) -> frozenset[str]:
    return frozenset(f"BN{n:03d}" for n in numbers)


def finding(code="BN001", path="model.onnx", node="conv1", severity="warning", graph="") -> Finding:
    return Finding(path=path, code=code, name="rule", severity=severity, node=node, op_type="Conv",
                   message="m", fix="f", graph=graph)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ selection


def test_rules_registry_is_bn001_to_bn016():
    # CODES: the universe the selector tests use
    assert tuple(sorted(RULES)) == (*CODES, "BN013", "BN014", "BN015", "BN016")


def test_default_select_is_all():
    assert resolve_codes(CODES) == frozenset(CODES)
    assert resolve_codes(CODES, ["ALL"]) == frozenset(CODES)


@pytest.mark.parametrize(("selector", "expected"), [
    ("ALL", frozenset(CODES)),
    ("BN", frozenset(CODES)),
    ("BN0", codes(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)),
    ("BN00", codes(1, 2, 3, 4, 5, 6, 7, 8, 9)),
    ("BN01", codes(10, 11, 12)),
    ("BN001", codes(1)),
    ("bn01", codes(10, 11, 12)),  # case-insensitive
])
def test_select_prefixes(selector, expected):
    assert resolve_codes(CODES, [selector]) == expected


def test_ignore_and_extend_select():
    assert resolve_codes(CODES, ignore=["BN00"]) == codes(10, 11, 12)
    assert resolve_codes(CODES, ["BN001"], extend_select=["BN01"]) == codes(1, 10, 11, 12)
    assert resolve_codes(CODES, ["BN001"], ignore=["BN002"]) == codes(1)
    assert resolve_codes(CODES, []) == frozenset()
    assert resolve_codes(CODES, [], extend_select=["BN012"]) == codes(12)


def test_more_specific_selector_wins():
    # a more specific select beats a less specific ignore, and vice versa
    assert resolve_codes(CODES, ["BN001"], ignore=["BN0"]) == codes(1)
    assert resolve_codes(CODES, ["BN00"], ignore=["BN0"]) == codes(*range(1, 10))
    assert resolve_codes(CODES, ["BN0"], ignore=["BN00"]) == codes(10, 11, 12)
    assert resolve_codes(CODES, ignore=["ALL"], extend_select=["BN009"]) == codes(9)
    assert resolve_codes(CODES, ignore=["BN"], extend_select=["BN009"]) == codes(9)


def test_ties_go_to_ignore():
    assert resolve_codes(CODES, ["BN001"], ignore=["BN001"]) == frozenset()
    assert resolve_codes(CODES, ["BN00"], ignore=["BN00"]) == frozenset()
    assert resolve_codes(CODES, ["ALL"], ignore=["ALL"]) == frozenset()


@pytest.mark.parametrize("kwargs", [
    {"select": ["BN99"]}, {"ignore": ["BN99"]}, {"extend_select": ["BN99"]}, {"select": ["BN001", "BN99"]},
])
def test_unknown_selector(kwargs):
    with pytest.raises(InputError) as info:
        resolve_codes(CODES, **kwargs)
    assert str(info.value) == "unknown rule selector 'BN99'"


@pytest.mark.parametrize("selector", ["", "X", "BN0010", "BN013", "AL"])
def test_selectors_matching_nothing(selector):
    with pytest.raises(InputError, match=f"^unknown rule selector '{selector}'$"):
        resolve_codes(CODES, [selector])


def test_split_selectors():
    assert split_selectors(["BN001,BN002", " BN01 ", "", "BN003,"]) == ["BN001", "BN002", "BN01", "BN003"]


def test_layering_cli_over_config():
    base = {"select": ["BN00"], "ignore": ["BN003"], "extend_select": ["BN010"]}
    assert layer_codes(CODES, base, {}) == codes(1, 2, 4, 5, 6, 7, 8, 9, 10)
    # CLI select starts afresh: config ignore/extend-select are dropped
    assert layer_codes(CODES, base, {"select": ["BN003", "BN012"]}) == codes(3, 12)
    # without CLI select, CLI extend-select / ignore decide the codes they match
    assert layer_codes(CODES, base, {"extend_select": ["BN003"], "ignore": ["BN001"]}) == codes(
        2, 3, 4, 5, 6, 7, 8, 9, 10)
    assert layer_codes(CODES, base, {"ignore": ["BN01"]}) == codes(1, 2, 4, 5, 6, 7, 8, 9)


def test_config_rule_codes():
    config = Config(select=["BN00"], ignore=["BN009"])
    assert config.rule_codes() == codes(*range(1, 9))
    assert config.rule_codes(select=["BN009"]) == codes(9)
    assert config.rule_codes(extend_select=["BN011"], ignore=["BN001"]) == codes(2, 3, 4, 5, 6, 7, 8, 11)
    assert Config().rule_codes() == frozenset(RULES)
    with pytest.raises(InputError, match="^unknown rule selector 'BN77'$"):
        config.rule_codes(ignore=["BN77"])


# ------------------------------------------------------------------------------------------------ discovery


def test_nearest_pyproject_upward(tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.bnfold]\nselect = ["BN001"]\n')
    write(tmp_path / "sub" / "pyproject.toml", '[tool.bnfold]\nselect = ["BN002"]\n')
    model = write(tmp_path / "sub" / "deep" / "er" / "model.onnx", "")
    config = load_config(model)
    assert config.select == ["BN002"]
    assert config.root == (tmp_path / "sub").resolve()
    assert config.source == (tmp_path / "sub" / "pyproject.toml")
    # a folder as start works too
    assert load_config(tmp_path / "sub" / "deep").select == ["BN002"]
    assert load_config(tmp_path).select == ["BN001"]
    assert load_config(tmp_path / "other.onnx").select == ["BN001"]  # a file that need not exist


def test_pyproject_without_tool_bnfold_is_skipped(tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.bnfold.lint]\nignore = ["BN004"]\n')
    write(tmp_path / "pkg" / "pyproject.toml", '[project]\nname = "x"\n\n[tool.ruff]\nline-length = 100\n')
    config = load_config(tmp_path / "pkg" / "model.onnx")
    assert config.ignore == ["BN004"]
    assert config.root == tmp_path.resolve()


def test_no_config_found_gives_defaults(tmp_path):
    (tmp_path / "a").mkdir()
    config = load_config(tmp_path / "a")
    # tmp_path's parents hold no pyproject.toml with [tool.bnfold] in a sane test environment
    assert config == Config()
    assert config.root is None


def test_explicit_config_file(tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.bnfold]\nselect = ["BN001"]\n')
    other = write(tmp_path / "conf" / "pyproject.toml", '[tool.bnfold]\nselect = ["BN005"]\n')
    config = load_config(tmp_path / "model.onnx", config_file=other)
    assert config.select == ["BN005"]
    assert config.root == other.parent.resolve()


def test_explicit_pyproject_without_table_gives_defaults(tmp_path):
    other = write(tmp_path / "conf" / "pyproject.toml", '[project]\nname = "x"\n')
    config = load_config(tmp_path, config_file=other)
    assert config.select is None and config.ignore == [] and config.root == other.parent.resolve()


def test_explicit_standalone_toml(tmp_path):
    other = write(tmp_path / "bnfold.toml", 'select = ["BN0"]\nfail-on = "info"\n[lint]\nignore = ["BN004"]\n')
    config = load_config(tmp_path, config_file=other)
    assert (config.select, config.ignore, config.fail_on) == (["BN0"], ["BN004"], "info")
    with pytest.raises(InputError) as info:
        load_config(tmp_path, config_file=write(tmp_path / "bad.toml", "selct = []\n"))
    assert str(info.value) == f"unknown key 'selct' in the top level of {tmp_path / 'bad.toml'}"
    with pytest.raises(InputError) as info:
        load_config(tmp_path, config_file=write(tmp_path / "bad2.toml", "[lint]\nselct = []\n"))
    assert str(info.value) == f"unknown key 'selct' in [lint] of {tmp_path / 'bad2.toml'}"


def test_explicit_config_missing(tmp_path):
    with pytest.raises(InputError) as info:
        load_config(tmp_path, config_file=tmp_path / "nope.toml")
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: config file not found"


def test_isolated_ignores_everything(tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.bnfold]\nselect = ["BN001"]\n')
    assert load_config(tmp_path, isolated=True) == Config()
    assert load_config(tmp_path, config_file=tmp_path / "pyproject.toml", isolated=True) == Config()


# ------------------------------------------------------------------------------------------------ keys


FULL = """\
[tool.bnfold.lint]
select = ["BN0"]
ignore = ["BN004"]
extend-select = ["BN012"]
per-file-ignores = { "legacy/*.onnx" = ["BN001", "BN003"] }
per-node-ignores = { "stem*" = ["BN011"] }
severity = { BN009 = "error", BN004 = "warning" }
placement = "after"
min-normalized-fraction = 0.75
fail-on = "warning"
"""


def test_all_kebab_keys(tmp_path):
    config = load_config(write(tmp_path / "pyproject.toml", FULL))
    assert config == Config(
        select=["BN0"], ignore=["BN004"], extend_select=["BN012"],
        per_file_ignores={"legacy/*.onnx": ["BN001", "BN003"]}, per_node_ignores={"stem*": ["BN011"]},
        severity={"BN009": "error", "BN004": "warning"}, placement="after", min_normalized_fraction=0.75,
        fail_on="warning", root=tmp_path.resolve(), source=tmp_path / "pyproject.toml")
    assert config.options() == LintOptions(placement="after", min_normalized_fraction=0.75,
                                           per_node_ignores={"stem*": ["BN011"]})
    assert Config().options() == LintOptions()


def test_tool_bnfold_and_lint_tables_merged_lint_wins(tmp_path):
    write(tmp_path / "pyproject.toml", """\
[tool.bnfold]
select = ["BN001"]
ignore = ["BN002"]
min-normalized-fraction = 1

[tool.bnfold.lint]
select = ["BN00"]
placement = "before"
""")
    config = load_config(tmp_path)
    assert config.select == ["BN00"]
    assert config.ignore == ["BN002"]
    assert config.placement == "before"
    assert config.min_normalized_fraction == 1.0
    assert isinstance(config.min_normalized_fraction, float)


def test_selectors_normalized_to_upper_case(tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.bnfold]\nselect = ["bn00", "all"]\n')
    assert load_config(tmp_path).select == ["BN00", "ALL"]


@pytest.mark.parametrize(("table", "key"), [("[tool.bnfold]", "selct"), ("[tool.bnfold.lint]", "selct"),
                                            ("[tool.bnfold]", "extend_select"),
                                            ("[tool.bnfold.lint]", "lint")])
def test_unknown_key(tmp_path, table, key):
    path = write(tmp_path / "pyproject.toml", f"{table}\n{key} = []\n")
    with pytest.raises(InputError) as info:
        load_config(tmp_path)
    assert str(info.value) == f"unknown key '{key}' in {table} of {path}"


@pytest.mark.parametrize(("line", "message"), [
    ('select = "BN001"', "'select' in [tool.bnfold.lint] of {p}: expected an array of rule selectors, got string"),
    ("ignore = [1]",
     "'ignore' in [tool.bnfold.lint] of {p}: expected an array of rule selectors, got an array with a non-string "
     "item"),
    ('extend-select = ["BN99"]', "'extend-select' in [tool.bnfold.lint] of {p}: unknown rule selector 'BN99'"),
    ('select = ["BN001", "XX"]', "'select' in [tool.bnfold.lint] of {p}: unknown rule selector 'XX'"),
    ('per-file-ignores = ["a"]',
     "'per-file-ignores' in [tool.bnfold.lint] of {p}: expected a table of glob = [selectors], got array"),
    ('per-file-ignores = { "a/*" = "BN001" }',
     "'per-file-ignores' in [tool.bnfold.lint] of {p}: expected an array of rule selectors for 'a/*', got string"),
    ('per-node-ignores = { "n*" = ["BN66"] }',
     "'per-node-ignores' in [tool.bnfold.lint] of {p}: unknown rule selector 'BN66' for 'n*'"),
    ('severity = "error"',
     "'severity' in [tool.bnfold.lint] of {p}: expected a table of rule code = severity, got string"),
    ('severity = { BN0 = "error" }', "'severity' in [tool.bnfold.lint] of {p}: unknown rule code 'BN0'"),
    ('severity = { BN099 = "error" }', "'severity' in [tool.bnfold.lint] of {p}: unknown rule code 'BN099'"),
    ('severity = { BN001 = "fatal" }',
     "'severity' in [tool.bnfold.lint] of {p}: invalid value 'fatal' for 'BN001' "
     '(expected "error", "warning" or "info")'),
    ('severity = { BN001 = 2 }',
     "'severity' in [tool.bnfold.lint] of {p}: invalid value integer for 'BN001' "
     '(expected "error", "warning" or "info")'),
    ('placement = "middle"',
     "'placement' in [tool.bnfold.lint] of {p}: invalid value 'middle' (expected \"before\" or \"after\")"),
    ("placement = true",
     "'placement' in [tool.bnfold.lint] of {p}: invalid value boolean (expected \"before\" or \"after\")"),
    ('fail-on = "never"',
     "'fail-on' in [tool.bnfold.lint] of {p}: invalid value 'never' (expected \"error\", \"warning\" or \"info\")"),
    ("min-normalized-fraction = 0",
     "'min-normalized-fraction' in [tool.bnfold.lint] of {p}: expected a number in (0, 1], got 0"),
    ("min-normalized-fraction = 1.5",
     "'min-normalized-fraction' in [tool.bnfold.lint] of {p}: expected a number in (0, 1], got 1.5"),
    ("min-normalized-fraction = -0.1",
     "'min-normalized-fraction' in [tool.bnfold.lint] of {p}: expected a number in (0, 1], got -0.1"),
    ('min-normalized-fraction = "0.5"',
     "'min-normalized-fraction' in [tool.bnfold.lint] of {p}: expected a number in (0, 1], got string"),
    ("min-normalized-fraction = true",
     "'min-normalized-fraction' in [tool.bnfold.lint] of {p}: expected a number in (0, 1], got boolean"),
])
def test_bad_values(tmp_path, line, message):
    path = write(tmp_path / "pyproject.toml", f"[tool.bnfold.lint]\n{line}\n")
    with pytest.raises(InputError) as info:
        load_config(tmp_path)
    assert str(info.value) == message.format(p=path)


def test_bad_value_in_top_table_names_that_table(tmp_path):
    path = write(tmp_path / "pyproject.toml", '[tool.bnfold]\nfail-on = "x"\n')
    with pytest.raises(InputError) as info:
        load_config(tmp_path)
    assert str(info.value) == (f"'fail-on' in [tool.bnfold] of {path}: invalid value 'x' "
                               '(expected "error", "warning" or "info")')


def test_tables_that_are_not_tables(tmp_path):
    path = write(tmp_path / "pyproject.toml", "[tool]\nbnfold = 3\n")
    with pytest.raises(InputError) as info:
        load_config(tmp_path)
    assert str(info.value) == f"[tool.bnfold] of {path} must be a table"
    write(path, "[tool.bnfold]\nlint = 3\n")
    with pytest.raises(InputError) as info:
        load_config(tmp_path)
    assert str(info.value) == f"[tool.bnfold.lint] of {path} must be a table"


def test_invalid_toml_is_one_line(tmp_path):
    path = write(tmp_path / "pyproject.toml", "[tool.bnfold\nselect = \n")
    with pytest.raises(InputError) as info:
        load_config(tmp_path / "model.onnx")
    message = str(info.value)
    assert message.startswith(f"{path}: invalid TOML (")
    assert "line 1" in message
    assert "\n" not in message


def test_invalid_unrelated_toml_during_discovery_is_reported(tmp_path):
    # the nearest pyproject.toml cannot be read, so whether it configures bnfold is unknown: an error
    write(tmp_path / "pyproject.toml", '[tool.bnfold]\nselect = ["BN001"]\n')
    path = write(tmp_path / "sub" / "pyproject.toml", "x = = 1\n")
    with pytest.raises(InputError, match="invalid TOML"):
        load_config(tmp_path / "sub")
    assert path.is_file()


# ------------------------------------------------------------------------------------------------ apply


def test_apply_drops_unselected_codes():
    found = [finding("BN001"), finding("BN002"), finding("BN003")]
    assert apply(found, Config(), codes(1, 3)) == [found[0], found[2]]


def test_per_file_ignores_relative_to_root(tmp_path, monkeypatch):
    write(tmp_path / "pyproject.toml", FULL)
    config = load_config(tmp_path)
    all_codes = frozenset(CODES)
    legacy = str(tmp_path / "legacy" / "old.onnx")  # absolute path: matched relative to root
    other = str(tmp_path / "models" / "new.onnx")
    found = [finding("BN001", legacy), finding("BN003", legacy), finding("BN002", legacy),
             finding("BN001", other)]
    assert apply(found, config, all_codes) == [found[2], found[3]]
    # relative paths: from a cwd inside the root, "old.onnx" is <root>/legacy/old.onnx -> ignored
    (tmp_path / "legacy").mkdir()
    monkeypatch.chdir(tmp_path / "legacy")
    assert apply([finding("BN001", "old.onnx"), finding("BN001", "./old.onnx")], config, all_codes) == []
    assert apply([finding("BN001", "../models/x.onnx")], config, all_codes) == [finding("BN001", "../models/x.onnx")]


def test_per_file_ignores_outside_root_and_basename(tmp_path, monkeypatch):
    config = Config(per_file_ignores={"legacy/*": ["BN0"], "special.onnx": ["ALL"]}, root=tmp_path / "proj")
    monkeypatch.chdir(tmp_path)
    found = [
        finding("BN001", "legacy/a.onnx"),         # matches as given (cwd is not the root)
        finding("BN001", "elsewhere/a.onnx"),      # kept
        finding("BN005", "deep/er/special.onnx"),  # glob without "/" matches the file name
        finding("BN005", "deep/special.onnx.bak"),  # kept
        finding("BN001", "proj/legacy/b.onnx"),    # relative to root: legacy/b.onnx
    ]
    assert apply(found, config, frozenset(CODES)) == [found[1], found[3]]


def test_per_node_ignores():
    config = Config(per_node_ignores={"stem/*": ["BN011"], "conv?": ["BN00"], "Head": ["ALL"]})
    found = [
        finding("BN011", node="stem/bn"),      # ignored
        finding("BN001", node="stem/bn"),      # kept: BN001 not listed for stem/*
        finding("BN001", node="conv1"),        # ignored
        finding("BN010", node="conv1"),        # kept: BN00 does not cover BN010
        finding("BN001", node="conv12"),       # kept: ? is one character
        finding("BN012", node="Head"),         # ignored
        finding("BN012", node="head"),         # kept: case-sensitive
    ]
    assert apply(found, config, frozenset(CODES)) == [found[1], found[3], found[4], found[6]]


def test_severity_override():
    config = Config(severity={"BN009": "error", "BN004": "warning"})
    found = [finding("BN009", severity="warning"), finding("BN004", severity="info"),
             finding("BN001", severity="warning")]
    result = apply(found, config, frozenset(CODES))
    assert [f.severity for f in result] == ["error", "warning", "warning"]
    assert result[0] == Finding(path="model.onnx", code="BN009", name="rule", severity="error", node="conv1",
                                op_type="Conv", message="m", fix="f")
    assert result[2] is found[2]
    assert found[0].severity == "warning"  # the input is not mutated


def test_apply_from_loaded_config_end_to_end(tmp_path):
    write(tmp_path / "pyproject.toml", FULL)
    config = load_config(tmp_path / "m.onnx")
    enabled = config.rule_codes()
    assert enabled == codes(1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)
    found = [finding("BN004"), finding("BN009"), finding("BN011", node="stem1"), finding("BN011", node="x")]
    result = apply(found, config, enabled)
    assert [(f.code, f.node, f.severity) for f in result] == [("BN009", "conv1", "error"), ("BN011", "x", "warning")]

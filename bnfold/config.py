"""Project configuration: `[tool.bnfold]` (and `[tool.bnfold.lint]`) in the nearest pyproject.toml.

    [tool.bnfold.lint]
    select = ["BN"]                      # default: ALL
    ignore = ["BN004"]
    extend-select = []
    per-file-ignores = { "legacy/*.onnx" = ["BN001", "BN003"] }
    per-node-ignores = { "stem/*" = ["BN011"] }
    severity = { BN009 = "error" }
    placement = "before"                 # BN004 becomes a preference check
    min-normalized-fraction = 0.5        # BN003
    fail-on = "warning"
    exclude = ["build", "venv"]          # replaces the default folders skipped (hidden ones always are)
    extend-exclude = ["legacy/*.onnx"]   # adds to them

Keys may live in `[tool.bnfold]` or `[tool.bnfold.lint]`; both are read and `lint` wins for a key set in
both. An explicit `--config FILE` named pyproject.toml is read the same way; any other file name (e.g.
bnfold.toml) holds the same keys at its top level and/or in a `[lint]` table, or in `[tool.bnfold]` tables
as a pyproject.toml does.

Discovery (no `--config`): from the linted file's folder (or the folder itself) upward, the first folder
with a `bnfold.toml` or `.bnfold.toml` (keys at the top level or in `[lint]`), or a pyproject.toml that has a
`[tool.bnfold]` table; a pyproject.toml without one is skipped. None found, or `isolated`: defaults. Globs
(per-file-ignores, exclude) are relative to the folder of the file the settings came from.

Every problem (unreadable file, invalid TOML, unknown key, wrong type or value) is an `InputError` naming
the key and the file, printed as one line.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from bnfold.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

SEVERITY_VALUES = ("error", "warning", "info")
PLACEMENT_VALUES = ("before", "after")
DEFAULT_MIN_NORMALIZED_FRACTION = 0.5  # same as LintOptions

# TOML key -> Config attribute
_KEYS = {
    "select": "select",
    "ignore": "ignore",
    "extend-select": "extend_select",
    "per-file-ignores": "per_file_ignores",
    "per-node-ignores": "per_node_ignores",
    "severity": "severity",
    "placement": "placement",
    "min-normalized-fraction": "min_normalized_fraction",
    "fail-on": "fail_on",
    "exclude": "exclude",
    "extend-exclude": "extend_exclude",
}


@dataclass
class Config:
    select: list[str] | None = None  # None = ALL
    ignore: list[str] = field(default_factory=list)
    extend_select: list[str] = field(default_factory=list)
    per_file_ignores: dict[str, list[str]] = field(default_factory=dict)  # path glob -> selectors
    per_node_ignores: dict[str, list[str]] = field(default_factory=dict)  # node-name glob -> selectors
    severity: dict[str, str] = field(default_factory=dict)  # rule code -> "error" | "warning" | "info"
    placement: str | None = None  # None | "before" | "after"
    min_normalized_fraction: float = DEFAULT_MIN_NORMALIZED_FRACTION
    fail_on: str | None = None  # None = the CLI's default
    exclude: tuple[str, ...] | None = None  # None = bnfold.discovery.DEFAULT_EXCLUDE
    extend_exclude: tuple[str, ...] = ()
    root: Path | None = None  # folder of the config file; per-file-ignores globs are relative to it
    source: Path | None = None  # the file the settings came from (None = defaults)

    def options(self):
        """The LintOptions the rules see."""
        from bnfold.lint.context import LintOptions

        return LintOptions(placement=self.placement, min_normalized_fraction=self.min_normalized_fraction,
                           per_node_ignores=self.per_node_ignores)

    def rule_codes(self, *, select: Iterable[str] | None = None, ignore: Iterable[str] = (),
                   extend_select: Iterable[str] = (), all_codes: Iterable[str] | None = None) -> frozenset[str]:
        """The enabled codes: this config's selection overlaid with command-line selectors (ruff layering:
        a command-line select starts afresh; otherwise CLI ignore/extend-select decide the codes they match
        and the config decides the rest). InputError for an unknown selector."""
        from bnfold.lint.select import layer_codes

        if all_codes is None:
            from bnfold.lint import RULES

            all_codes = RULES
        base = {"select": self.select, "ignore": self.ignore, "extend_select": self.extend_select}
        cli = {"select": None if select is None else list(select), "ignore": list(ignore),
               "extend_select": list(extend_select)}
        return layer_codes(all_codes, base, cli)


# ---------------------------------------------------------------------------------------------------- loading


def load_config(start: Path, *, config_file: Path | None = None, isolated: bool = False) -> Config:
    """The configuration that applies to `start` (a model file or a folder)."""
    if isolated:
        return Config()
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise InputError(f"{path}: config file not found")
        data = _read_toml(path)
        tool = data.get("tool")
        if path.name == "pyproject.toml" or (isinstance(tool, dict) and "bnfold" in tool):
            # a pyproject-style file under another name: its [tool.bnfold] tables
            table = tool.get("bnfold", {}) if isinstance(tool, dict) else {}
            return _parse(table, path, "tool.bnfold")
        return _parse(data, path, None)
    found = find_pyproject(Path(start))
    if found is None:
        return Config()
    path, table, section = found
    return _parse(table, path, section)


# Looked for in each folder, in this order (as ruff prefers ruff.toml / .ruff.toml to pyproject.toml)
CONFIG_NAMES = ("bnfold.toml", ".bnfold.toml", "pyproject.toml")


def find_pyproject(start: Path) -> tuple[Path, object, str | None] | None:
    """The nearest config at or above `start`: a bnfold.toml or .bnfold.toml (its keys at the top level), or a
    pyproject.toml with a [tool.bnfold] table; with the table to read and its section name."""
    folder = Path(os.path.abspath(start))
    if not folder.is_dir():
        folder = folder.parent
    for candidate in (folder, *folder.parents):
        for name in CONFIG_NAMES:
            path = candidate / name
            if not path.is_file():
                continue
            data = _read_toml(path)
            if name != "pyproject.toml":
                return path, data, None
            tool = data.get("tool")
            if isinstance(tool, dict) and "bnfold" in tool:
                return path, tool["bnfold"], "tool.bnfold"
    return None


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        message = " ".join(str(exc).split())
        raise InputError(f"{path}: invalid TOML ({message})") from None
    except RecursionError:  # tomllib recurses per nesting level: a 5000-deep array exhausts the stack
        raise InputError(f"{path}: invalid TOML (nested too deeply)") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"{path}: cannot read config file ({reason})") from None


def _parse(table: object, path: Path, section: str | None) -> Config:
    """Config from the top table (`section`, None for a standalone file's top level) and its `lint` table."""
    top_name = f"[{section}]" if section else "the top level"
    lint_name = f"[{section}.lint]" if section else "[lint]"
    if not isinstance(table, dict):
        raise InputError(f"{top_name} of {path} must be a table")
    values = _check_keys(table, path, top_name, allow_lint=True)
    lint = table.get("lint", {})
    if not isinstance(lint, dict):
        raise InputError(f"{lint_name} of {path} must be a table")
    where = {key: top_name for key in values}
    for key, value in _check_keys(lint, path, lint_name, allow_lint=False).items():
        values[key] = value
        where[key] = lint_name

    from bnfold.lint import RULES

    codes = tuple(RULES)
    config = Config(root=path.parent.resolve(), source=path)
    for key, value in values.items():
        label = f"'{key}' in {where[key]} of {path}"
        setattr(config, _KEYS[key], _convert(key, value, label, codes))
    return config


def _check_keys(table: dict, path: Path, name: str, *, allow_lint: bool) -> dict:
    values = {}
    for key, value in table.items():
        if allow_lint and key == "lint":
            continue
        if key not in _KEYS:
            raise InputError(f"unknown key '{key}' in {name} of {path}")
        values[key] = value
    return values


def _type_name(value: object) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)


def _selectors(value: object, label: str, codes: tuple[str, ...], what: str = "") -> list[str]:
    from bnfold.lint.select import validate_selectors

    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        got = _type_name(value) if not isinstance(value, list) else "an array with a non-string item"
        raise InputError(f"{label}: expected an array of rule selectors{what}, got {got}")
    try:
        return validate_selectors(codes, value)
    except InputError as exc:
        raise InputError(f"{label}: {exc}{what}") from None


def _globs(value: object, label: str, codes: tuple[str, ...]) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise InputError(f"{label}: expected a table of glob = [selectors], got {_type_name(value)}")
    return {glob: _selectors(selectors, label, codes, f" for '{glob}'") for glob, selectors in value.items()}


def _choice(value: object, label: str, choices: tuple[str, ...], what: str = "") -> str:
    if not isinstance(value, str) or value not in choices:
        shown = f"'{value}'" if isinstance(value, str) else _type_name(value)
        raise InputError(f"{label}: invalid value {shown}{what} (expected {_or(choices)})")
    return value


def _or(choices: tuple[str, ...]) -> str:
    quoted = [f'"{c}"' for c in choices]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _convert(key: str, value: object, label: str, codes: tuple[str, ...]):
    if key in ("select", "ignore", "extend-select"):
        return _selectors(value, label, codes)
    if key in ("exclude", "extend-exclude"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputError(f"{label}: expected a list of glob strings, got {_type_name(value)}")
        return tuple(value)
    if key in ("per-file-ignores", "per-node-ignores"):
        return _globs(value, label, codes)
    if key == "severity":
        if not isinstance(value, dict):
            raise InputError(f"{label}: expected a table of rule code = severity, got {_type_name(value)}")
        result = {}
        for code, severity in value.items():
            if code not in codes:
                raise InputError(f"{label}: unknown rule code '{code}'")
            result[code] = _choice(severity, label, SEVERITY_VALUES, f" for '{code}'")
        return result
    if key == "placement":
        return _choice(value, label, PLACEMENT_VALUES)
    if key == "fail-on":
        return _choice(value, label, SEVERITY_VALUES)
    if key == "min-normalized-fraction":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            shown = value if isinstance(value, (int, float)) and not isinstance(value, bool) else _type_name(value)
            raise InputError(f"{label}: expected a number in (0, 1], got {shown}")
        return float(value)
    raise AssertionError(key)  # pragma: no cover - _KEYS and _convert cover the same keys


# ---------------------------------------------------------------------------------------------------- applying


def _path_candidates(path: str, root: Path | None) -> list[str]:
    """The path a glob is matched against: relative to the config file's folder (POSIX separators), so the
    same file matches the same globs from any working directory and spelled any way; as given only for a
    file outside that folder."""
    if root is not None:
        absolute = Path(os.path.realpath(path))
        try:
            return [absolute.relative_to(Path(os.path.realpath(root))).as_posix()]
        except ValueError:
            pass
    return [PurePath(path).as_posix()]


def _path_matches(glob: str, candidates: list[str]) -> bool:
    """A glob without "/" also matches the file name alone (as in ruff: "legacy.onnx" anywhere)."""
    if any(fnmatch.fnmatchcase(c, glob) for c in candidates):
        return True
    return "/" not in glob and fnmatch.fnmatchcase(PurePath(candidates[0]).name, glob)


def _selected(code: str, selectors: Iterable[str]) -> bool:
    from bnfold.lint.select import matches, normalize

    return any(matches(normalize(s), code) for s in selectors)


def node_ignored(per_node_ignores: dict[str, list[str]], code: str, node: str) -> bool:
    """Whether a per-node-ignores glob (tried case-sensitively on the node name) ignores `code` there."""
    return any(_selected(code, selectors) and fnmatch.fnmatchcase(node, glob)
               for glob, selectors in per_node_ignores.items())


def apply(findings, config: Config, codes: Iterable[str]) -> list:
    """Findings after selection (`codes`), per-file-ignores, per-node-ignores and severity overrides.

    per-file-ignores globs are case-sensitive fnmatch patterns (`*` also crosses `/`) tried against the path
    as given and the path relative to `config.root` (POSIX separators); a glob without `/` also matches the
    bare file name; per-node-ignores globs are tried (case-sensitively) on the node name.
    """
    enabled = frozenset(codes)
    kept = []
    path_cache: dict[str, list[str]] = {}
    for finding in findings:
        if finding.code not in enabled:
            continue
        if config.per_file_ignores:
            candidates = path_cache.get(finding.path)
            if candidates is None:
                candidates = path_cache[finding.path] = _path_candidates(finding.path, config.root)
            if any(_selected(finding.code, selectors) and _path_matches(glob, candidates)
                   for glob, selectors in config.per_file_ignores.items()):
                continue
        if node_ignored(config.per_node_ignores, finding.code, finding.node):
            continue
        severity = config.severity.get(finding.code)
        if severity is not None and severity != finding.severity:
            finding = dataclasses.replace(finding, severity=severity)
        kept.append(finding)
    return kept

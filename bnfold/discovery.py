"""Which model files a folder holds, as ruff finds source files: hidden folders, virtualenvs, build output and
what git ignores are skipped; `exclude` replaces the default folder list and `extend-exclude` adds to it.

A pattern without a `/` matches any file or folder name in the tree (`legacy`, `*_fp16.onnx`); one with a
`/` matches the path relative to the project root, the folder of the config file or else the current folder
(`models/legacy/*`). Files named on the command line are always linted.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
from pathlib import Path

from bnfold.errors import InputError
from bnfold.keras import KERAS_SUFFIXES

MODEL_SUFFIXES = (".onnx", *KERAS_SUFFIXES)
# ruff's default exclusions that can hold model files, beyond hidden folders (skipped anyway)
DEFAULT_EXCLUDE = ("__pypackages__", "_build", "build", "buck-out", "dist", "node_modules", "site-packages",
                   "venv")


def _excluded(path: Path, root: Path, patterns: tuple[str, ...]) -> bool:
    try:
        relative = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        relative = None
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        if "/" in pattern:
            if relative is not None and fnmatch.fnmatchcase(relative, pattern.lstrip("./")):
                return True
        elif fnmatch.fnmatchcase(path.name, pattern):
            return True
    return False


def _skipped_folder(folder: Path, root: Path, patterns: tuple[str, ...]) -> bool:
    return (folder.name.startswith(".") or (folder / "pyvenv.cfg").is_file()
            or _excluded(folder, root, patterns))


def _git_ignored(folder: Path, files: list[Path]) -> set[Path]:
    """The files git ignores (.gitignore, .git/info/exclude, the global excludes); none outside a work tree
    or without git."""
    if not files:
        return set()
    try:
        done = subprocess.run(["git", "-C", str(folder), "check-ignore", "--stdin", "-z"],
                              input="\0".join(str(f.resolve()) for f in files), capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    if done.returncode not in (0, 1):  # 128: not a git work tree
        return set()
    ignored = {Path(p) for p in done.stdout.split("\0") if p}
    return {f for f in files if f.resolve() in ignored}


def _walk(folder: Path, root: Path, patterns: tuple[str, ...]) -> list[Path]:
    found = []
    for current, dirs, names in os.walk(folder):
        here = Path(current)
        dirs[:] = sorted(d for d in dirs if not _skipped_folder(here / d, root, patterns))
        found += [here / n for n in sorted(names) if Path(n).suffix.lower() in MODEL_SUFFIXES
                  and not n.startswith(".") and not _excluded(here / n, root, patterns)]
    ignored = _git_ignored(folder, found)
    return [f for f in found if f not in ignored]


def discover(paths: tuple[Path, ...], *, root: Path | None = None, exclude: tuple[str, ...] | None = None,
             extend_exclude: tuple[str, ...] = ()) -> list[Path]:
    """Files as given, and the model files below each folder (sorted, so output order is stable).

    Raises InputError for a path that does not exist, and when nothing was found: a mistyped folder must
    not pass CI as "all checks passed"."""
    patterns = (*(DEFAULT_EXCLUDE if exclude is None else exclude), *extend_exclude)
    root = root or Path.cwd()
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(_walk(path, root, patterns))
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or directory")
    found = list(dict.fromkeys(found))  # a file under two of the paths is linted once
    if not found:
        where = ", ".join(str(p) for p in paths)
        raise InputError(f"no model files in {where} (looked for {', '.join('*' + s for s in MODEL_SUFFIXES)}, "
                         "skipping hidden folders, virtualenvs, build output, git-ignored and excluded paths)")
    return found

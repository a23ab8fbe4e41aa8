"""Baseline file: record today's findings so a team can adopt bnfold on an existing model zoo and fail only
on new ones.

    {"version": 1, "findings": [{"code": "BN001", "path": "models/a.onnx", "graph": "", "node": "conv1",
                                 "fingerprint": "3f2a..."}, ...]}

A finding is identified by rule code + model path + graph + node name (not by message, so a changed
statistic in the message does not make it "new"; a renamed node does). Paths are stored relative to the
baseline file's folder (POSIX separators), so the baseline works from any working directory and the tree
can be moved or checked out elsewhere; a path on another drive is stored absolute. Matching is by count: a
baseline entry hides one finding with the same identity, so a second identical finding shows up as new.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from bnfold.errors import InputError

VERSION = 1
_FIELDS = ("code", "path", "graph", "node")

Key = tuple[str, str, str, str]  # (code, normalized path, graph, node)


def normalize_path(path: str, folder: Path) -> str:
    """`path` (relative to the working directory, or absolute) relative to `folder`, POSIX separators."""
    absolute = os.path.realpath(path)
    try:
        relative = os.path.relpath(absolute, os.path.realpath(folder))
    except ValueError:  # another drive (Windows)
        relative = absolute
    return PurePath(relative).as_posix()


def fingerprint(code: str, path: str, graph: str, node: str) -> str:
    """A stable id of a finding's identity (its normalized path included)."""
    return hashlib.sha256("\0".join((code, path, graph, node)).encode("utf-8")).hexdigest()[:16]


def _key(finding, folder: Path) -> Key:
    return (finding.code, normalize_path(finding.path, folder), finding.graph, finding.node)


def write_baseline(path: Path, findings: Iterable) -> int:
    """Write the baseline of `findings` to `path` atomically; returns how many entries it holds."""
    from bnfold.io import write_text_atomic

    path = Path(path)
    keys = sorted(_key(f, path.parent) for f in findings)
    entries = [dict(zip(_FIELDS, key), fingerprint=fingerprint(*key)) for key in keys]
    text = json.dumps({"version": VERSION, "findings": entries}, indent=2, ensure_ascii=False) + "\n"
    write_text_atomic(path, text)
    return len(entries)


@dataclass
class Baseline:
    path: Path  # absolute; stored paths are relative to its folder
    entries: Counter = field(default_factory=Counter)  # Key -> count

    def __len__(self) -> int:
        return sum(self.entries.values())

    def filter(self, findings: Iterable, checked: Iterable[str] = ()) -> tuple[list, int]:
        """(findings not in the baseline, in order; how many were hidden)."""
        kept, hidden, _ = self.match(findings, checked)
        return kept, hidden

    def match(self, findings: Iterable, checked: Iterable[str] = ()) -> tuple[list, int, list[Key]]:
        """(findings not in the baseline, in order; how many were hidden; the stale entries: those of a file
        in `checked` that no finding matched any more, fixed since the baseline was written)."""
        folder = self.path.parent
        remaining = Counter(self.entries)
        kept, hidden = [], 0
        cache: dict[str, str] = {}
        for finding in findings:
            norm = cache.get(finding.path)
            if norm is None:
                norm = cache[finding.path] = normalize_path(finding.path, folder)
            key = (finding.code, norm, finding.graph, finding.node)
            if remaining[key] > 0:
                remaining[key] -= 1
                hidden += 1
            else:
                kept.append(finding)
        linted = {normalize_path(path, folder) for path in checked}
        stale = sorted(key for key, left in remaining.items() if left > 0 and key[1] in linted
                       for _ in range(left))
        return kept, hidden, stale


def load_baseline(path: Path) -> Baseline:
    """Read a baseline file; InputError (one line) when it is missing, not JSON, or not a version-1 baseline."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: baseline file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"{path}: cannot read baseline file ({reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid baseline file (not JSON: {exc})") from None
    if not isinstance(data, dict) or "version" not in data:
        raise InputError(f"{path}: invalid baseline file (no \"version\")")
    if data["version"] != VERSION:
        raise InputError(f"{path}: unsupported baseline version {data['version']!r} (expected {VERSION})")
    findings = data.get("findings")
    if not isinstance(findings, list):
        raise InputError(f"{path}: invalid baseline file (\"findings\" must be a list)")
    entries: Counter = Counter()
    for index, entry in enumerate(findings):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(name), str) for name in _FIELDS):
            raise InputError(f"{path}: invalid baseline file (entry {index} needs string "
                             f"{', '.join(_FIELDS)})")
        entries[tuple(entry[name] for name in _FIELDS)] += 1
    return Baseline(path=Path(os.path.abspath(path)), entries=entries)

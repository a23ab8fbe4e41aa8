"""Rule selection, ruff style: `--select`, `--extend-select` and `--ignore` take codes or code prefixes.

A selector is "ALL", or any non-empty prefix of a rule code ("BN", "BN0", "BN00", "BN001"); matching is
case-insensitive. A selector that matches no rule is a user error.

Which selector wins (kept deliberately simple, and documented in the CLI help):

    For each rule code, among the selectors of select, extend-select and ignore that match it, the MOST
    SPECIFIC one decides; specificity is the selector's length ("ALL" counts as 0). On a tie, ignore wins.
    A code no selector matches is not selected.

So `--ignore BN0 --select BN001` keeps BN001 (5 > 3), `--select BN00 --ignore BN00` drops BN000-BN009
(tie), and the default select is ALL.

Layering of config and command line (see `layer_codes`) follows ruff: a command-line `--select` starts
afresh (the config's select/ignore/extend-select are dropped); without it, the command-line selectors are
consulted first and the config decides the codes they do not match.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bnfold.errors import InputError

ALL = "ALL"


def normalize(selector: str) -> str:
    return selector.strip().upper()


def specificity(selector: str) -> int:
    """How specific a (normalized) selector is: its length, with ALL the least specific."""
    return 0 if selector == ALL else len(selector)


def matches(selector: str, code: str) -> bool:
    """Whether a (normalized) selector covers a rule code."""
    return selector == ALL or code.startswith(selector)


def split_selectors(values: Iterable[str]) -> list[str]:
    """Command-line values split on commas: ("BN001,BN002", "BN01") -> ["BN001", "BN002", "BN01"]."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def validate_selectors(all_codes: Iterable[str], selectors: Iterable[str]) -> list[str]:
    """The selectors, normalized; InputError "unknown rule selector 'BN99'" for one that matches no code."""
    codes = tuple(all_codes)
    normalized = []
    for selector in selectors:
        norm = normalize(selector)
        if not norm or not any(matches(norm, code) for code in codes):
            raise InputError(f"unknown rule selector '{selector}'")
        normalized.append(norm)
    return normalized


def _decide(code: str, selects: Sequence[str], ignores: Sequence[str]) -> bool | None:
    """True/False when some selector matches `code` (most specific wins, ties to ignore), else None."""
    best_select = max((specificity(s) for s in selects if matches(s, code)), default=-1)
    best_ignore = max((specificity(s) for s in ignores if matches(s, code)), default=-1)
    if best_select < 0 and best_ignore < 0:
        return None
    return best_select > best_ignore


def resolve_codes(all_codes: Iterable[str], select: Iterable[str] | None = None, ignore: Iterable[str] = (),
                  extend_select: Iterable[str] = ()) -> frozenset[str]:
    """The rule codes that are on. `select=None` means ALL; every selector must match some code."""
    codes = tuple(all_codes)
    selects = validate_selectors(codes, [ALL] if select is None else select)
    selects += validate_selectors(codes, extend_select)
    ignores = validate_selectors(codes, ignore)
    return frozenset(code for code in codes if _decide(code, selects, ignores))


def layer_codes(all_codes: Iterable[str], base: dict, cli: dict) -> frozenset[str]:
    """Config selection (`base`) overlaid with command-line selection (`cli`), ruff style.

    Each dict has keys select (list | None), ignore (list), extend_select (list). When the command line
    has a select, it alone decides. Otherwise a code matched by a command-line extend-select/ignore selector
    is decided by those (most specific wins, ties to ignore), and any other code keeps the config's verdict.
    """
    codes = tuple(all_codes)
    if cli.get("select") is not None:
        return resolve_codes(codes, cli["select"], cli.get("ignore", ()), cli.get("extend_select", ()))
    enabled = resolve_codes(codes, base.get("select"), base.get("ignore", ()), base.get("extend_select", ()))
    selects = validate_selectors(codes, cli.get("extend_select", ()))
    ignores = validate_selectors(codes, cli.get("ignore", ()))
    result = set()
    for code in codes:
        verdict = _decide(code, selects, ignores)
        if verdict or (verdict is None and code in enabled):
            result.add(code)
    return frozenset(result)

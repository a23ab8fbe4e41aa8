"""`bnfold rule`: the rule list, or one rule's page, read from the pages alone (no rule module, no onnx)."""

from __future__ import annotations

import sys

import click


def print_rule(rule: str | None) -> None:
    """The rule list, or one rule's page (by code or name), from the pages alone: no rule module loads."""
    from bnfold.rule_pages import catalogue, page_text

    if rule is None:
        rows = catalogue()
        width = max(len(name) for _, name, _, _ in rows)
        for code, name, severity, summary in rows:
            click.echo(f"{code}  {name:<{width}}  {severity:<7}  {summary}")
        return
    click.echo(page_text(rule), nl=False)
    sys.stdout.flush()

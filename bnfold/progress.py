"""Progress lines on stderr for long work, also when piped (CI logs), without flooding short runs.

On a terminal every stage is shown. Elsewhere a line is shown only when `every` seconds have passed since the
last one (or since the start), so a model that folds in a second prints nothing extra and a 60 s
verification prints a line per batch. `quiet` shows none.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import click

THROTTLE_SECONDS = 2.0


class Progress:
    def __init__(self, *, quiet: bool = False, always: bool | None = None, every: float = THROTTLE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet = quiet
        self.always = sys.stderr.isatty() if always is None else always
        self.every = every
        self.clock = clock
        self.last = clock()

    def __call__(self, text: str) -> None:
        if self.quiet:
            return
        now = self.clock()
        if self.always or now - self.last >= self.every:
            click.echo(text, err=True)
            self.last = now

"""Defer a module's import until something reads one of its attributes.

onnx-ir imports sympy at its top, for symbolic shape arithmetic (`SymbolicDim` + 1) that lint and fold never
do; sympy costs about 0.4 s of start-up, most of lint's 1 s budget on a CI runner. The CLI (its own process)
puts a placeholder in `sys.modules` that imports the real module on first use and from then on forwards to
it, so code that does use sympy gets it. The library API leaves `sys.modules` alone.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types


class Placeholder(types.ModuleType):
    """What `defer` puts in sys.modules (`type(module) is Placeholder` tells it apart without loading it)."""

    def __getattr__(self, attr: str):
        # Only attributes the placeholder lacks arrive here: everything but its name and spec.
        if sys.modules.get(self.__name__) is self:
            sys.modules.pop(self.__name__, None)
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def defer(name: str) -> None:
    """Make `import name` cheap until the module is used; nothing when it is imported already or absent.
    A submodule is looked up without importing its package (that would import what is to be deferred)."""
    if name in sys.modules or _find(name) is None:
        return
    placeholder = Placeholder(name)
    # The import system reads __spec__ of a module it finds in sys.modules; a plain spec keeps it quiet.
    placeholder.__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules[name] = placeholder


def _find(name: str) -> importlib.machinery.ModuleSpec | None:
    package, _, leaf = name.rpartition(".")
    if not package:
        return importlib.util.find_spec(name)
    parent = _find(package)
    if parent is None or not parent.submodule_search_locations:
        return None
    return importlib.machinery.PathFinder.find_spec(name, list(parent.submodule_search_locations))

"""bnfold/deferred.py: the CLI defers sympy (imported at onnx-ir's top, unused by lint and fold) until used."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import json, sys
from bnfold.deferred import defer
defer("sympy")
defer("onnx_ir._symbolic_shapes")
defer("no_such_module_for_bnfold")
defer("json")
import onnx_ir as ir
print("before", "sympy.core" in sys.modules, "no_such_module_for_bnfold" in sys.modules, sys.modules["json"] is json)
dim = ir.SymbolicDim("max(N, 3) + 1")
print("expr", dim._expr, dim + 1)
import sympy
print("after", "sympy.core" in sys.modules, sympy.Symbol("x") * 2, sys.modules["sympy"].__name__)
"""


def test_a_deferred_module_loads_on_first_use_and_behaves_as_itself():
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "before False False True",
        "expr Max(3, N) + 1 Max(3, N) + 2",
        "after True 2*x sympy",
    ]

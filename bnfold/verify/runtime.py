"""onnxruntime sessions for verification.

Every session runs with all graph optimizations disabled: at the default level onnxruntime fuses Conv+BN
itself, which would make comparing a folded model circular. A model can be opened with extra outputs (the
tensors after folded layers), and the original can be opened a second time with every weight rounded once
more: that run measures the rounding noise the criterion compares against (bnfold/verify/criterion.py).

onnx and onnxruntime are imported inside the functions: `bnfold --help` must not pay for them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from bnfold.errors import InputError, RuntimeUnavailable
from bnfold.verify.criterion import machine_epsilon

_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (Load model from .*? failed:)?")
# Where in onnxruntime's C++ source the message came from: "/onnxruntime_src/.../x.h:46 void ns::F(int) ".
_ORT_SOURCE = re.compile(r"^\S+\.(?:h|cc|cpp):\d+ [^()]*\([^()]*\) ")
# onnxruntime's own log (severity 0 verbose .. 4 fatal): errors reach the user through the exception, so its
# log shows only warnings and only under `bnfold --debug`.
LOG_SEVERITY = {"quiet": 3, "debug": 2}
log_severity = LOG_SEVERITY["quiet"]
# The initializer inputs a fold rewrites, and the other arithmetic ones: rounding these once more is what
# folding does. Shape-like inputs (Resize scales, Range bounds, thresholds) are left alone, as a fold leaves them.
_WEIGHT_SLOTS = {
    "Conv": {1, 2}, "ConvTranspose": {1, 2}, "Gemm": {0, 1, 2}, "MatMul": {0, 1},
    "BatchNormalization": {1, 2, 3, 4}, "InstanceNormalization": {1, 2}, "LayerNormalization": {1, 2},
    "GroupNormalization": {1, 2}, "Add": {0, 1}, "Sub": {0, 1}, "Mul": {0, 1}, "Div": {0, 1}, "PRelu": {1},
}


def first_line(exc: Exception) -> str:
    lines = _ORT_PREFIX.sub("", str(exc).strip()).strip().splitlines()
    return _ORT_SOURCE.sub("", lines[0].strip()) if lines else type(exc).__name__


class OpenModel:
    """A model file read as a graph (external data stays on disk), ready to become onnxruntime sessions."""

    def __init__(self, path: Path, extra_outputs=()) -> None:
        import onnx

        from bnfold.io import read_proto

        self.path = path
        self.proto = read_proto(path)[0]  # validated, external data confined to the model's folder
        self.output_names = [out.name for out in self.proto.graph.output]
        produced = {name for node in self.proto.graph.node for name in node.output}
        for name in extra_outputs:
            if name in produced and name not in self.output_names:
                self.proto.graph.output.append(onnx.ValueInfoProto(name=name))
        self._bytes = self.proto.SerializeToString()

    def release(self) -> None:
        """Drop the graph and its bytes once the sessions exist: a large model need not be held three times."""
        self.proto = self._bytes = None

    def session(self, noise_seed: int | None = None, noise_run: int = 0):
        """A session of the model; with noise_seed, every weight is moved by one unit in the last place
        (noise_run numbers independent roundings for the same seed)."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeUnavailable("onnxruntime is not installed") from None
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = log_severity  # ORT's warnings (initializers listed as inputs) are lint's job
        # The graph comes from bytes; its external data is found next to the file it came from.
        options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                         str(self.path.resolve().parent))
        graph, keep = self._bytes, []
        if noise_seed is not None:
            rng = np.random.default_rng([noise_seed, noise_run, 0x6E6F697365])
            keep = self._add_rounded_weights(options, rng)
            graph = self._with_computed_weights_rounded(rng) or graph
        try:
            session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise RuntimeUnavailable(f"onnxruntime cannot run {self.path.name}: {first_line(exc)}") from exc
        session.bnfold_keep_alive = keep  # onnxruntime reads the added initializers from these buffers
        return session

    def _weight_slots(self):
        """(node, input index, name) of every weight slot of a main-graph node."""
        for node in self.proto.graph.node:
            slots = _WEIGHT_SLOTS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            for index, name in enumerate(node.input):
                yield node, (slots is not None and index in slots), index, name

    def _with_computed_weights_rounded(self, rng: np.random.Generator) -> bytes | None:
        """The graph with every computed weight multiplied by 1 + eps or every one by 1 - eps, or None if it
        has none. A computed weight is usually one value repeated (ConstantOfShape), so a fold's rounding
        errors on it share a sign across elements and layers and add up; one sign for all of them makes the
        noise run add up the same way. Initializers are rounded element by element (_add_rounded_weights)."""
        import onnx
        from onnx import helper

        computed = _computed_weights(self.proto.graph)
        targets = {name for _, is_weight, _, name in self._weight_slots() if is_weight and name in computed}
        if not targets:
            return None
        graph = onnx.GraphProto()
        graph.CopyFrom(self.proto.graph)
        factors = {}
        sign = rng.choice([-1.0, 1.0])
        for name in sorted(targets):
            dtype = helper.tensor_dtype_to_np_dtype(computed[name])
            factor = np.asarray(1 + sign * machine_epsilon(dtype), dtype=dtype)
            factors[name] = (f"{name}/bnfold_rounded", helper.make_tensor(
                f"{name}/bnfold_round", computed[name], [], [float(factor)]))
        nodes = []
        for node in graph.node:
            node_copy = onnx.NodeProto()
            node_copy.CopyFrom(node)
            slots = _WEIGHT_SLOTS.get(node.op_type) if node.domain in ("", "ai.onnx") else set()
            for index, name in enumerate(node_copy.input):
                if name in factors and index in (slots or ()):
                    node_copy.input[index] = factors[name][0]
            nodes.append(node_copy)
            for name in node.output:
                if name in factors:
                    rounded, factor = factors[name]
                    graph.initializer.append(factor)
                    nodes.append(helper.make_node("Mul", [name, factor.name], [rounded]))
        del graph.node[:]
        graph.node.extend(nodes)
        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        model.graph.CopyFrom(graph)
        return model.SerializeToString()

    def _add_rounded_weights(self, options, rng: np.random.Generator) -> list:
        import onnxruntime as ort
        from onnx import TensorProto, numpy_helper

        floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
        graph = self.proto.graph
        weights = {t.name: t for t in graph.initializer if t.data_type in floats}
        for _, is_weight, _, name in self._weight_slots():
            if not is_weight:
                weights.pop(name, None)
        for node in graph.node:  # a subgraph reads an outer weight by name; leave those alone too
            for attr in node.attribute:
                for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    for inner in sub.node:
                        for name in inner.input:
                            weights.pop(name, None)
        base = str(self.path.resolve().parent)
        keep = []
        for name, tensor in weights.items():
            array = numpy_helper.to_array(tensor, base_dir=base)
            step = np.asarray(machine_epsilon(array.dtype), dtype=array.dtype)
            sign = rng.integers(0, 2, array.shape, dtype=np.int8).astype(array.dtype) * 2 - 1
            rounded = np.ascontiguousarray(array * (np.asarray(1, dtype=array.dtype) + sign * step))
            if rounded.dtype.name == "bfloat16":
                value = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(rounded.view(np.uint16), TensorProto.BFLOAT16)
            else:
                value = ort.OrtValue.ortvalue_from_numpy(rounded)
            options.add_initializer(name, value)
            keep.append((rounded, value))
        return keep


def _computed_weights(graph) -> dict[str, int]:
    """Weight-slot values computed from constants alone (ConstantOfShape, Constant, Cast of an initializer,
    ...), with their float element type: a fold rewrites them like initializers."""
    from onnx import TensorProto

    dtypes = {t.name: t.data_type for t in graph.initializer}
    constant = set(dtypes)  # initializers listed as graph inputs too: the fold takes them as constants
    for node in graph.node:
        if node.op_type.startswith("Random") or any(a.type in (5, 10) for a in node.attribute):
            continue  # random values, or a subgraph: not a constant
        if not all(name in constant for name in node.input if name):
            continue
        value = next((a for a in node.attribute if a.name in ("value", "to")), None)
        if node.op_type in ("Constant", "ConstantOfShape"):
            dtype = value.t.data_type if value is not None else TensorProto.FLOAT
        elif node.op_type == "Cast":
            dtype = value.i
        elif node.op_type == "CastLike":
            dtype = dtypes.get(node.input[1])
        else:
            dtype = dtypes.get(node.input[0]) if node.input else None
        for name in node.output:
            constant.add(name)
            if dtype is not None:
                dtypes[name] = dtype
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    initializers = {t.name for t in graph.initializer}
    return {name: dtypes[name] for name in constant - initializers if dtypes.get(name) in floats}


def run(session, feeds: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    names = [out.name for out in session.get_outputs()]
    try:
        if not any(_is_bfloat16(v.dtype) for v in feeds.values()) and not any(
                out.type == "tensor(bfloat16)" for out in session.get_outputs()):
            return dict(zip(names, session.run(None, feeds)))
        return dict(zip(names, _run_bfloat16(session, feeds)))
    except Exception as exc:
        if type(exc).__name__ == "InvalidArgument":
            raise InputError(f"onnxruntime rejected the inputs of {path.name}: {first_line(exc)}") from exc
        raise RuntimeUnavailable(f"onnxruntime failed to run {path.name}: {first_line(exc)}; "
                                 "check --shape/--inputs") from exc


def _run_bfloat16(session, feeds: dict[str, np.ndarray]) -> list:
    """ORT's Python API has no numpy type for bfloat16, so those tensors cross as raw 16-bit words."""
    import ctypes

    import ml_dtypes
    import onnxruntime as ort
    from onnx import TensorProto

    values = {name: ort.OrtValue.ortvalue_from_numpy_with_onnx_type(value.view(np.uint16), TensorProto.BFLOAT16)
              if _is_bfloat16(value.dtype) else ort.OrtValue.ortvalue_from_numpy(value)
              for name, value in feeds.items()}
    results = []
    for value in session.run_with_ort_values(None, values):
        if value.data_type() == "tensor(bfloat16)":
            size = value.tensor_size_in_bytes()
            raw = ctypes.string_at(value.data_ptr(), size) if size else b""
            results.append(np.frombuffer(raw, dtype=ml_dtypes.bfloat16).reshape(value.shape()).copy())
        else:
            results.append(value.numpy())
    return results


def _is_bfloat16(dtype: np.dtype) -> bool:
    return dtype.name == "bfloat16"

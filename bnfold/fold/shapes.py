"""Static shapes on demand. ONNX shape inference runs at most once, and only if a needed shape is missing;
the shapes it adds are taken back afterwards so the written model carries no value_info it did not have."""

from __future__ import annotations

import logging

import onnx_ir as ir


class ShapeOracle:
    def __init__(self, model: ir.Model) -> None:
        self._model = model
        self._added: list[ir.Value] | None = None

    def static_shape(self, value: ir.Value) -> tuple[int, ...] | None:
        if not _is_static(value.shape) and self._added is None:
            self._infer()
        return tuple(int(d) for d in value.shape) if _is_static(value.shape) else None

    def dtype(self, value: ir.Value) -> ir.DataType | None:
        if value.dtype is None and self._added is None:
            self._infer()
        return value.dtype

    def rank(self, value: ir.Value | None) -> int | None:
        if value is None:
            return None
        if value.shape is None and self._added is None:
            self._infer()
        return None if value.shape is None else len(value.shape)

    def _infer(self) -> None:
        from onnx_ir.passes.common import ShapeInferencePass

        before = {id(v): (v.type, v.shape) for v in _values(self._model)}
        # A model onnx's inference rejects (a type error in an unrelated node) keeps the shapes it declares,
        # and what needed more is refused as unknown-shape; the pass's warning would print a traceback.
        logger = logging.getLogger("onnx_ir.passes.common.shape_inference")
        level = logger.level
        logger.setLevel(logging.ERROR)  # setLevel, not .level =: it clears the loggers' cached levels
        try:
            ShapeInferencePass(strict_mode=False).call(self._model)
        finally:
            logger.setLevel(level)
        self._added = [v for v in _values(self._model) if id(v) in before and before[id(v)] != (v.type, v.shape)]
        self._restore = {id(v): before[id(v)] for v in self._added}

    def restore(self) -> None:
        """Take back what inference added (values that stay in the model keep their original info)."""
        for value in self._added or []:
            value.type, value.shape = self._restore[id(value)]


def _is_static(shape: ir.Shape | None) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


def _values(model: ir.Model):
    for graph in model.graphs():
        yield from graph.inputs
        yield from graph.initializers.values()
        for node in graph:
            yield from node.outputs

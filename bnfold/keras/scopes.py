"""Where a Keras layer's ops land in the ONNX tf2onnx writes: the TensorFlow name scope of each layer call.

tf_keras names a layer's ops `<model>/<layer>/<op>`. Keras 3 enters each layer's name scope twice per call
and puts the ops in the second, and TensorFlow makes every scope name unique within the graph by appending
`_<k>`: the first call of `dense` lands in `dense_1`, and a layer that is itself named `dense_1` then lands in
`dense_1_2`. The scopes are rebuilt here by replaying that uniquing over the layer calls in order.
"""

from __future__ import annotations

from bnfold.keras.graph import Call


class _Names:
    """TensorFlow's Graph.unique_name over full scope paths."""

    def __init__(self) -> None:
        self.used: dict[str, int] = {}

    def unique(self, name: str) -> str:
        count = self.used.get(name, 0)
        self.used[name] = count + 1
        if count == 0:
            return name
        base = name
        while name in self.used:
            name, count = f"{base}_{count}", count + 1
        self.used[name] = 1
        return name

    def enter(self, parent: str, name: str) -> str:
        """A Keras 3 scope: entered twice, the second is the one that holds the ops."""
        full = f"{parent}/{name}" if parent else name
        self.unique(full)
        return self.unique(full)


def keras3_scopes(model_name: str, calls: list[Call]) -> dict[str, list[str]]:
    """Each layer's scope paths (one per call), below the model's own scope: {"dense": ["dense_1"], ...}."""
    names = _Names()
    root = names.enter("", model_name)
    opened: list[tuple[str, str]] = []  # (nested model's name, its traced scope), outermost first
    scopes: dict[str, list[str]] = {}
    for call in calls:
        *models, leaf = call.layer.split("/")
        depth = 0
        while depth < len(opened) and depth < len(models) and opened[depth][0] == models[depth]:
            depth += 1
        del opened[depth:]
        for model in models[depth:]:
            opened.append((model, names.enter(opened[-1][1] if opened else root, model)))
        scope = names.enter(opened[-1][1] if opened else root, leaf)
        scopes.setdefault(call.layer, []).append(scope[len(root) + 1:])
    return scopes

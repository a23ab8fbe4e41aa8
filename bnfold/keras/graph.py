"""A Keras model config as a flat list of layer calls: Sequential and Functional models, nested models
(flattened, their layers named <model>/<layer>), shared layers (one call each), several inputs and outputs,
and both config dialects (Keras 2 `inbound_nodes` lists, Keras 3 `args` with `__keras_tensor__` entries).

A tensor is named "<layer>:<call>:<output>", as Keras' own keras_history names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MODEL_CLASSES = {"Functional", "Model", "Sequential"}


@dataclass
class Call:
    layer: str           # the layer's name (prefixed by its enclosing models' names)
    cls: str             # its class name
    config: dict
    inputs: list[str]    # tensor names
    outputs: list[str]
    kwargs: dict = field(default_factory=dict)
    input_shape: list | None = None  # Keras 3's build_config: the shape the layer was built for


@dataclass
class LayerGraph:
    calls: list[Call]
    inputs: list[tuple[str, dict]]   # (tensor, InputLayer config)
    outputs: list[str]


def parse(config: dict) -> LayerGraph:
    if not isinstance(config, dict) or config.get("class_name") not in MODEL_CLASSES:
        cls = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"the model config is a {cls}, not a Sequential or Functional model")
    builder = _Builder()
    inputs, outputs = builder.model(config, "", None)
    return LayerGraph(builder.calls, [(t, builder.input_configs[t]) for t in inputs],
                      [builder.resolve(t) for t in outputs])


class _Builder:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.alias: dict[str, str] = {}          # a nested model's output tensor -> the inner tensor
        self.input_configs: dict[str, dict] = {}

    def resolve(self, tensor: str) -> str:
        while tensor in self.alias:
            tensor = self.alias[tensor]
        return tensor

    def model(self, config: dict, prefix: str, outer_inputs: list[str] | None) -> tuple[list[str], list[str]]:
        """Add a model's calls; returns its input and output tensors. `outer_inputs` feed a nested model."""
        body = config.get("config", {})
        if config.get("class_name") == "Sequential":
            return self._sequential(body, prefix, outer_inputs)
        layers = body.get("layers", [])
        inputs = [f"{prefix}{ref[0]}:{ref[1]}:{ref[2]}" for ref in _refs(body.get("input_layers", []))]
        outputs = [f"{prefix}{ref[0]}:{ref[1]}:{ref[2]}" for ref in _refs(body.get("output_layers", []))]
        if outer_inputs is not None:  # before the inner layers: they read the outer tensors through these
            for inner, outer in zip(inputs, outer_inputs):
                self.alias[inner] = outer
        for layer in layers:
            name = prefix + str(layer.get("name") or layer.get("config", {}).get("name"))
            if layer.get("class_name") == "InputLayer":
                tensor = f"{name}:0:0"
                if outer_inputs is None:
                    self.input_configs[tensor] = layer.get("config", {})
                continue
            for index, node in enumerate(layer.get("inbound_nodes", [])):
                args, kwargs = _inbound(node)
                ins = [self.resolve(prefix + f"{r[0]}:{r[1]}:{r[2]}") for r in args]
                self._call(layer, name, index, ins, kwargs, prefix)
        return (outer_inputs if outer_inputs is not None else inputs), outputs

    def _sequential(self, body: dict, prefix: str, outer_inputs: list[str] | None):
        layers = list(body.get("layers", []))
        if outer_inputs is not None:
            current = outer_inputs
            inputs = outer_inputs
        else:
            first = layers[0] if layers else {}
            if first.get("class_name") == "InputLayer":
                layers = layers[1:]
                config = first.get("config", {})
            else:  # Keras 2: the first layer carries the input shape
                config = {"batch_input_shape": first.get("config", {}).get("batch_input_shape")
                          or body.get("build_input_shape")}
            name = prefix + str((first.get("config") or {}).get("name", "input")) \
                if first.get("class_name") == "InputLayer" else f"{prefix}input"
            current = inputs = [f"{name}:0:0"]
            self.input_configs[inputs[0]] = config
        for layer in layers:
            name = prefix + str(layer.get("name") or layer.get("config", {}).get("name"))
            current = [self._call(layer, name, 0, current, {}, prefix)]
        return inputs, current

    def _call(self, layer: dict, name: str, index: int, inputs: list[str], kwargs: dict, prefix: str) -> str:
        out = f"{name}:{index}:0"
        if layer.get("class_name") in MODEL_CLASSES:
            _, inner_outputs = self.model(layer, f"{name}/", inputs)
            for i, tensor in enumerate(inner_outputs):
                self.alias[f"{name}:{index}:{i}"] = tensor
            return self.resolve(out)
        build = (layer.get("build_config") or {}).get("input_shape")
        self.calls.append(Call(name, str(layer.get("class_name")), layer.get("config", {}), inputs, [out], kwargs,
                               build if isinstance(build, list) else None))
        return out


def _refs(value) -> list[list]:
    """input_layers/output_layers: [name, node, tensor] for one, a list of those for several."""
    if value and not isinstance(value[0], list):
        return [value]
    return list(value)


def _inbound(node) -> tuple[list[list], dict]:
    """(input refs, call kwargs) of one call, in either dialect."""
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        refs: list[list] = []
        _keras_tensors(node.get("args", []), refs)
        kwargs = {k: v for k, v in node.get("kwargs", {}).items() if not _is_tensor(v)}
        return refs, kwargs
    refs, kwargs = [], {}
    if node and isinstance(node[0], str):  # tf_keras' TFOpLambda: one [name, node, tensor, kwargs], not nested
        node = [node]
    for ref in node:  # Keras 2: [[name, node, tensor, kwargs], ...]
        refs.append(ref[:3])
        if len(ref) > 3 and isinstance(ref[3], dict):
            kwargs.update(ref[3])
    return refs, kwargs


def _keras_tensors(value, refs: list[list]) -> None:
    if _is_tensor(value):
        refs.append(value["config"]["keras_history"])
    elif isinstance(value, (list, tuple)):
        for item in value:
            _keras_tensors(item, refs)


def _is_tensor(value) -> bool:
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"

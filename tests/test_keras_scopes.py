"""The TensorFlow name scopes a Keras 3 model's layers are traced in, rebuilt from the config alone. The
expected scopes are the node paths tf2onnx 1.17 wrote for these models under Keras 3.15 / TensorFlow 2.21."""

from pathlib import Path

from bnfold.keras.files import KerasFile
from bnfold.keras.graph import Call, parse
from bnfold.keras.scopes import keras3_scopes

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models" / "keras"


def test_the_seed_mlp_scopes_are_the_exported_node_paths():
    config = KerasFile(SAMPLES / "seed_mlp.keras").config
    scopes = keras3_scopes(config["config"]["name"], parse(config).calls)
    assert scopes == {
        "dense_1": ["dense_1_1"], "bn_1": ["bn_1_1"], "activation": ["activation_1"], "dropout": ["dropout_1"],
        "dense_2": ["dense_2_1"], "bn_2": ["bn_2_1"], "activation_1": ["activation_1_2"],
        "dropout_1": ["dropout_1_2"], "dense_out": ["dense_out_1"], "bn_out": ["bn_out_1"],
        "activation_2": ["activation_2_1"],
    }


def _calls(*layers: str) -> list[Call]:
    return [Call(layer, "Dense", {}, [], []) for layer in layers]


def test_nested_model_scopes_nest_and_a_layer_named_like_a_suffix_moves_on():
    # outer: dense_1, batch_normalization_1, block(dense, batch_normalization, activation), dense_1_1, ...
    calls = _calls("dense_1", "batch_normalization_1", "block/dense", "block/batch_normalization",
                   "block/activation", "dense_1_1", "batch_normalization_2", "dense_2")
    assert keras3_scopes("outer", calls) == {
        "dense_1": ["dense_1_1"], "batch_normalization_1": ["batch_normalization_1_1"],
        "block/dense": ["block_1/dense_1"], "block/batch_normalization": ["block_1/batch_normalization_1"],
        "block/activation": ["block_1/activation_1"], "dense_1_1": ["dense_1_1_2"],
        "batch_normalization_2": ["batch_normalization_2_1"], "dense_2": ["dense_2_1"],
    }


def test_a_shared_layer_gets_a_scope_per_call():
    assert keras3_scopes("m", _calls("dense", "dense")) == {"dense": ["dense_1", "dense_3"]}

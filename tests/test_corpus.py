"""bnfold on models other people made: ../shared/corpus (ultraface, onnxruntime fusion fixtures, ONNX node tests)
and the model-zoo "light" models shipped in the onnx wheel.

Folding goes through the library (`bnfold.io.load_model` + `bnfold.fold.fold_model`); the result is serialized
with onnx_ir and run next to the original in onnxruntime with graph optimizations disabled (at the default level
onnxruntime folds Conv+BN itself, which would make the comparison circular).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from helpers import ort_session
from onnx import helper, numpy_helper

from bnfold.fold import fold_model
from bnfold.fold.result import FoldResult
from bnfold.io import load_model

CORPUS = (Path(__file__).parents[1] / ".." / "shared" / "corpus").resolve()
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus not present")

ULTRAFACE = CORPUS / "ultraface"
ORT_FUSION = CORPUS / "ort-fusion"
ONNX_NODE = CORPUS / "onnx-node"
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


# --------------------------------------------------------------------------------------------------------
# helpers


def fold_file(path: Path) -> tuple[FoldResult, onnx.ModelProto]:
    model = load_model(path)
    result = fold_model(model)
    return result, ir.to_proto(model)


def run(model: Path | onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort_session(model)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def bn_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in proto.graph.node if n.op_type == "BatchNormalization"]


def decisions_table(result: FoldResult) -> list[tuple]:
    return [(d.op_type, d.node, d.outcome, d.direction, d.partner, d.reason) for d in result.decisions]


def random_feeds(sess: ort.InferenceSession, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    return {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(dtypes[i.type])
            for i in sess.get_inputs()}


def passes_checker(proto: onnx.ModelProto) -> bool:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        return False
    return True


# --------------------------------------------------------------------------------------------------------
# ultraface: trained PyTorch face detectors, every initializer also a graph input (IR 4)

ULTRAFACE_MODELS = {  # file -> (BN count, input shape)
    "version-RFB-320.onnx": (35, (1, 3, 240, 320)),
    "version-RFB-320_without_postprocessing.onnx": (35, (1, 3, 240, 320)),
    "version-RFB-640.onnx": (35, (1, 3, 480, 640)),
    "version-slim-320.onnx": (25, (1, 3, 240, 320)),
    "version-slim-320_without_postprocessing.onnx": (25, (1, 3, 240, 320)),
}


def ultraface_input(shape) -> dict[str, np.ndarray]:
    # only the real input: the 5*N BN/Conv parameters are graph inputs too, and must keep their initializers
    return {"input": np.random.default_rng(2024).standard_normal(shape).astype(np.float32)}


@needs_corpus
def test_ultraface_corpus_is_complete():
    assert sorted(p.name for p in ULTRAFACE.glob("*.onnx") if "_simplified" not in p.name) == sorted(ULTRAFACE_MODELS)


@needs_corpus
@pytest.mark.parametrize("name", sorted(ULTRAFACE_MODELS))
def test_ultraface_folds_every_bn(name):
    path = ULTRAFACE / name
    count, shape = ULTRAFACE_MODELS[name]
    original = onnx.load(str(path))
    assert len(bn_nodes(original)) == count

    result, folded = fold_file(path)

    bns = result.of_op("BatchNormalization")
    assert len(bns) == count
    outcomes = [(d.outcome, d.direction, d.partner_op, d.reason) for d in bns]
    assert outcomes == [("folded", "backward", "Conv", None)] * count
    assert all(d.overridable for d in bns)  # the parameters are initializers listed as graph inputs
    assert len({d.partner for d in bns}) == count
    assert result.skipped == []
    assert bn_nodes(folded) == []
    assert result.nodes_after == result.nodes_before - count
    assert len(result.removed_inputs) == 5 * count  # 4 BN parameters + the Conv weight each
    assert folded.ir_version == original.ir_version == 4
    assert folded.graph.input[0].name == "input"
    assert [o.name for o in folded.graph.output] == [o.name for o in original.graph.output] == ["scores", "boxes"]
    assert passes_checker(folded)

    feeds = ultraface_input(shape)
    want, got = run(path, feeds), run(folded, feeds)
    assert list(got) == list(want)
    for key in want:
        assert got[key].shape == want[key].shape
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5, err_msg=key)


@needs_corpus
@pytest.mark.parametrize("name, simplified, outputs", [
    ("version-RFB-320_without_postprocessing.onnx", "version-RFB-320_simplified.onnx", ["scores", "boxes"]),
    ("version-slim-320_without_postprocessing.onnx", "version-slim-320_simplified.onnx", ["scores", "boxes"]),
    # the post-processing models decode the boxes (priors, exp), the simplified ones do not: scores only
    ("version-RFB-320.onnx", "version-RFB-320_simplified.onnx", ["scores"]),
    ("version-slim-320.onnx", "version-slim-320_simplified.onnx", ["scores"]),
])
def test_ultraface_matches_the_authors_simplified_model(name, simplified, outputs):
    """The authors' own folded export is an independent "after": ours must compute the same thing."""
    simplified_path = ULTRAFACE / simplified
    assert bn_nodes(onnx.load(str(simplified_path))) == []
    _, folded = fold_file(ULTRAFACE / name)
    feeds = ultraface_input((1, 3, 240, 320))
    theirs, ours = run(simplified_path, feeds), run(folded, feeds)
    for key in outputs:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-4, atol=1e-4, err_msg=key)


# --------------------------------------------------------------------------------------------------------
# onnxruntime's fusion fixtures. Nodes without a name are reported by their first output.

CONV_4D = "4d83d4ff-99c9-4ed6-a3f0-ff9c4f860ff7"
ORT_FIXTURES = {
    # Conv -> BN -> Add -> Mul, the Add/Mul constants are [1,1,2,2]: they vary over H and W, so they are not a
    # per-channel affine (the output has 1 channel) and must stay; the BN folds.
    "fuse-conv-bn-add-mul-float16.onnx": dict(runs=True, nodes=(4, 3), decisions=[
        ("BatchNormalization", "NORMALIZED", "folded", "backward", "Y", None),
        ("Add", "ADDED", "skipped", None, None, "channel-axis-mismatch"),
        ("Mul", "PROD", "skipped", None, None, "channel-axis-mismatch"),
    ]),
    # Conv (no bias) -> BN -> Mul/Add by Unsqueeze'd [64] constants -> Flatten: all three fold into the Conv
    "fuse-conv-bn-mul-add-unsqueeze-no-bias.onnx": dict(runs=True, nodes=(7, 2), decisions=[
        ("BatchNormalization", "conv1/bn_1", "folded", "backward", "conv1_1", None),
        ("Mul", "conv1/bn_internal_1", "folded", "backward", "conv1_1", None),
        ("Add", "conv1/bn_2", "folded", "backward", "conv1_1", None),
    ]),
    # Sub(mean image, x) -> Conv(pads 3) -> BN -> Mul -> Add -> Flatten. The Sub cannot go forward into a padded
    # Conv (and its constant is a whole image, not per-channel); the BN/Mul/Add fold backward.
    "fuse-conv-bn-mul-add-unsqueeze.onnx": dict(runs=True, nodes=(8, 3), decisions=[
        ("Sub", "26418c1e-86b1-434b-b298-4b91a4d122d9", "skipped", None, None, "padding-forward"),
        ("BatchNormalization", "7046c678-03a7-4893-8752-3777d4db12d7", "folded", "backward", CONV_4D, None),
        ("Mul", "c2333847-6de4-43ca-945e-2ddbffd73df3", "folded", "backward", CONV_4D, None),
        ("Add", "77e3003e-3a6e-4ac7-902d-cbca38aa6860", "folded", "backward", CONV_4D, None),
    ]),
    "fuse-conv-bn-mul-add-unsqueeze.negative_axes.onnx": dict(runs=True, nodes=(8, 3), decisions=[
        ("Sub", "26418c1e-86b1-434b-b298-4b91a4d122d9", "skipped", None, None, "padding-forward"),
        ("BatchNormalization", "7046c678-03a7-4893-8752-3777d4db12d7", "folded", "backward", CONV_4D, None),
        ("Mul", "c2333847-6de4-43ca-945e-2ddbffd73df3", "folded", "backward", CONV_4D, None),
        ("Add", "77e3003e-3a6e-4ac7-902d-cbca38aa6860", "folded", "backward", CONV_4D, None),
    ]),
    "fuse-conv-bn-no-bias.onnx": dict(runs=True, nodes=(3, 2), decisions=[
        ("BatchNormalization", "conv1/bn_1", "folded", "backward", "conv1_1", None),
    ]),
    # MatMul [1,5]x[5,5] -> BN over the 5 features: folds into the MatMul (+ a new Add)
    "fuse-matmul-bn-directly.onnx": dict(runs=True, nodes=(2, 2), decisions=[
        ("BatchNormalization", "output", "folded", "backward", "matmul_output", None),
    ]),
    # MatMul [1,1,5]x[5,5] -> [1,1,5]: BN normalizes axis 1 (size 1) while its 5 parameters match the MatMul's
    # feature axis 2. Folding per feature would change the function; onnxruntime itself rejects the model.
    "fuse-matmul-bn-directly-dont-fuse.onnx": dict(runs=False, nodes=(2, 2), decisions=[
        ("BatchNormalization", "output", "skipped", None, None, "channel-axis-mismatch"),
    ]),
    # MatMul -> Identity -> BN -> Identity: bnfold looks through the Identity (it stays in the graph); the BN
    # becomes the MatMul's bias Add
    "fuse-matmul-bn-non-ignorable-node.onnx": dict(runs=True, nodes=(4, 4), decisions=[
        ("BatchNormalization", "bn_output", "folded", "backward", "matmul_output", None),
    ]),
    # MatMul -> Reshape [1,1,1,5] -> BN (channel axis of size 1, 5 parameters): not foldable, ORT rejects it
    "fuse-matmul-bn-only-reshape.onnx": dict(runs=False, nodes=(4, 4), decisions=[
        ("BatchNormalization", "bn_output", "skipped", None, None, "channel-axis-mismatch"),
    ]),
    # MatMul -> Transpose [5,1] -> BN (graph output): ORT rejects it
    "fuse-matmul-bn-only-transpose.onnx": dict(runs=False, nodes=(3, 3), decisions=[
        ("BatchNormalization", "output", "skipped", None, None, "channel-axis-mismatch"),
    ]),
    # MatMul [1,5] -> Reshape [1,1,1,5] -> Transpose [1,5,1,1] -> BN -> Identity: BN's axis 1 is, element for
    # element, the MatMul's feature axis, so it folds through both layout ops (which stay)
    "fuse-matmul-bn-with-reshape.onnx": dict(runs=True, nodes=(5, 5), decisions=[
        ("BatchNormalization", "bn_output", "folded", "backward", "matmul_output", None),
    ]),
}


@needs_corpus
def test_ort_fusion_corpus_is_complete():
    assert sorted(p.name for p in ORT_FUSION.glob("*.onnx")) == sorted(ORT_FIXTURES)


@needs_corpus
@pytest.mark.parametrize("name", sorted(ORT_FIXTURES))
def test_ort_fusion_fixture(name):
    path = ORT_FUSION / name
    expected = ORT_FIXTURES[name]
    original = onnx.load(str(path))

    result, folded = fold_file(path)

    assert decisions_table(result) == expected["decisions"]
    assert (result.nodes_before, result.nodes_after) == expected["nodes"]
    assert len(folded.graph.node) == expected["nodes"][1]
    folded_bn = sum(d.outcome == "folded" for d in result.of_op("BatchNormalization"))
    assert len(bn_nodes(folded)) == len(bn_nodes(original)) - folded_bn
    assert [o.name for o in folded.graph.output] == [o.name for o in original.graph.output]
    if passes_checker(original):  # several fixtures are not valid models to begin with
        assert passes_checker(folded)

    if not expected["runs"]:
        return
    sess = ort_session(path)
    feeds = random_feeds(sess)
    want, got = run(path, feeds), run(folded, feeds)
    for key in want:
        tol = dict(rtol=1e-2, atol=1e-3) if want[key].dtype == np.float16 else dict(rtol=1e-4, atol=1e-5)
        assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape
        np.testing.assert_allclose(got[key].astype(np.float64), want[key].astype(np.float64), err_msg=key, **tol)


@needs_corpus
@pytest.mark.parametrize("name", sorted(n for n, e in ORT_FIXTURES.items() if not e["runs"]))
def test_ort_fusion_fixtures_onnxruntime_rejects_are_left_unchanged(name):
    """The refused, unrunnable fixtures come out node for node as they went in."""
    path = ORT_FUSION / name
    original = onnx.load(str(path))
    _, folded = fold_file(path)
    strip = lambda p: [(n.op_type, list(n.input), list(n.output)) for n in p.graph.node]  # noqa: E731
    assert strip(folded) == strip(original)


# --------------------------------------------------------------------------------------------------------
# ONNX conformance tests for BatchNormalization: BN parameters are graph inputs (no initializers)

NODE_TESTS = {
    "test_batchnorm_example": "non-constant-parameters",
    "test_batchnorm_epsilon": "non-constant-parameters",
    "test_batchnorm_example_training_mode": "training-mode",
    "test_batchnorm_epsilon_training_mode": "training-mode",
}


def read_tensor(path: Path) -> np.ndarray:
    tensor = onnx.TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(tensor)


@needs_corpus
@pytest.mark.parametrize("name", sorted(NODE_TESTS))
def test_onnx_node_batchnorm(name):
    folder = ONNX_NODE / name
    path = folder / "model.onnx"
    original = onnx.load(str(path))
    assert [i.name for i in original.graph.input] == ["x", "s", "bias", "mean", "var"]

    result, folded = fold_file(path)

    assert decisions_table(result) == [("BatchNormalization", "y", "skipped", None, None, NODE_TESTS[name])]
    assert len(bn_nodes(folded)) == 1
    assert passes_checker(folded)

    # the official inputs and expected outputs: the corpus is read right and the round trip kept the model
    data = folder / "test_data_set_0"
    inputs = sorted(data.glob("input_*.pb"))
    outputs = sorted(data.glob("output_*.pb"))
    feeds = {i.name: read_tensor(p) for i, p in zip(original.graph.input, inputs)}
    assert len(feeds) == 5
    assert len(outputs) == len(original.graph.output) == (3 if "training" in name else 1)
    for model in (path, folded):
        got = run(model, feeds)
        for out, expected_path in zip(original.graph.output, outputs):
            np.testing.assert_allclose(got[out.name], read_tensor(expected_path), rtol=1e-4, atol=1e-5,
                                       err_msg=out.name)


# --------------------------------------------------------------------------------------------------------
# model-zoo graphs from the onnx wheel; all weights come from ConstantOfShape (every value 0.02), IR 3

LIGHT_MODELS = {  # name -> (BN total, BN folded, affine Mul/Add folded, affine skipped, nodes before -> after)
    "light_resnet50.onnx": (53, 53, 0, 0, (415, 125)),
    # DenseNet is pre-activation: 62 BN sit after a Concat/AveragePool/MaxPool and before Mul->Add->Relu->Conv.
    # Their input is shared and a Relu separates them from the next Conv, so they cannot fold (why: SKIPPED).
    "light_densenet121.onnx": (121, 59, 118, 124, (1746, 1044)),
    "light_inception_v2.onnx": (69, 69, 138, 0, (916, 166)),
    "light_shufflenet.onnx": (49, 49, 0, 0, (446, 156)),
}


# name -> the reasons of the BN it skips, when not all are nonlinearity-between. A DenseNet BN after a Concat
# cannot fold into the Concat's producers: most of them are read by later Concats too (the dense connections),
# and the first inputs of each block come from a pool, not a linear op.
SKIPPED = {"light_densenet121.onnx": {"shared-output": 54, "concat-not-linear": 4, "nonlinearity-between": 4}}


def light_path(name: str) -> Path:
    path = LIGHT / name
    if not path.is_file():
        pytest.skip(f"{name} is not in this onnx wheel")
    return path


def with_extra_outputs(proto: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for name in names:
        copy.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return copy


@pytest.mark.parametrize("name", sorted(LIGHT_MODELS))
def test_light_model_folds(name):
    path = light_path(name)
    total, folded_bn, affine_folded, affine_skipped, nodes = LIGHT_MODELS[name]
    original = onnx.load(str(path))
    assert len(bn_nodes(original)) == total

    result, folded = fold_file(path)

    bns = result.of_op("BatchNormalization")
    assert len(bns) == total
    skipped = SKIPPED.get(name, {"nonlinearity-between": total - folded_bn})
    expected = Counter({("folded", "backward", "Conv", None): folded_bn,
                        **{("skipped", None, None, reason): n for reason, n in skipped.items()}})
    assert Counter((d.outcome, d.direction, d.partner_op, d.reason) for d in bns) == +expected  # + drops zeros
    others = [d for d in result.decisions if d.op_type != "BatchNormalization"]
    assert sum(d.outcome == "folded" for d in others) == affine_folded
    assert sum(d.outcome == "skipped" for d in others) == affine_skipped
    assert len(bn_nodes(folded)) == total - folded_bn
    assert (result.nodes_before, result.nodes_after) == nodes

    if folded_bn < total:  # every refusal is structurally right: no linear producer, a Relu before the next Conv
        producers = {o: n for n in original.graph.node for o in n.output}
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in original.graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        by_label = {n.name or n.output[0]: n for n in original.graph.node}
        for d in bns:
            if d.outcome != "skipped":
                continue
            bn = by_label[d.node]
            assert producers[bn.input[0]].op_type in ("Concat", "AveragePool", "MaxPool")
            chain, value = [], bn.output[0]
            for _ in range(3):
                (nxt,) = consumers[value]
                chain.append(nxt.op_type)
                value = nxt.output[0]
            assert chain == ["Mul", "Add", "Relu"]

    # compare the graph outputs, the pre-softmax logits, and every Relu output that survives the fold (the
    # weights are all 0.02, so the final softmax alone is a flat 0.001 and would prove nothing)
    kept = {o for n in folded.graph.node for o in n.output}
    probes = [n.output[0] for n in original.graph.node if n.op_type == "Relu" and n.output[0] in kept]
    probes += [n.input[0] for n in original.graph.node if n.op_type == "Softmax" and n.input[0] in kept]
    assert len(probes) >= 30
    before, after = with_extra_outputs(original, probes), with_extra_outputs(folded, probes)
    feeds = random_feeds(ort_session(before), seed=1)
    want, got = run(before, feeds), run(after, feeds)
    assert list(got) == list(want)
    for key in want:
        # fp32 tolerance relative to the output's magnitude (ResNet-50's logits reach ~1e19 with these weights)
        scale = max(1.0, float(np.abs(want[key]).max()))
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5 * scale, err_msg=key)


@pytest.mark.parametrize("name", sorted(LIGHT_MODELS))
def test_light_model_folded_passes_checker(name):
    """The fold contract: the result keeps ir_version and passes onnx.checker (full check). These are IR 3 models, where
    every initializer must also be listed as a graph input."""
    path = light_path(name)
    original = onnx.load(str(path))
    assert original.ir_version == 3
    assert passes_checker(original)
    _, folded = fold_file(path)
    assert folded.ir_version == 3
    onnx.checker.check_model(folded, full_check=True)


@pytest.mark.parametrize("name", sorted(LIGHT_MODELS))
def test_light_model_fold_verifies(name, tmp_path):
    """Their weights are ConstantOfShape outputs, one value repeated: the noise run rounds those too."""
    from click.testing import CliRunner

    from bnfold.cli import cli

    result = CliRunner().invoke(cli, ["fold", str(light_path(name)), str(tmp_path / name)])
    assert result.exit_code == 0, result.output
    assert "within limits over 3 batches" in result.stdout.splitlines()[-2]


@needs_corpus
@pytest.mark.parametrize("name", sorted(ULTRAFACE_MODELS))
def test_ultraface_heads_and_extras_are_not_missing_batchnorm(name):
    # classification_headers.*, regression_headers.* and extras.* have no BN by design (SSD): BN003 gave 9 per
    # model when it compared them with the backbone
    from bnfold.lint import lint_model

    assert [f for f in lint_model(load_model(ULTRAFACE / name), name) if f.code == "BN003"] == []


# --------------------------------------------------------------------------------------------------------
# lint: every finding on the corpus, pinned (each read against the graph: all are ones a reviewer acts on)

_UF_RFB = [("BN009", "246"), ("BN012", "246")]  # 35 unfolded BN, parameters kept as inputs: one finding each
_UF_SLIM = [("BN009", "186"), ("BN012", "186")]  # 25 of them
CORPUS_LINT = {
    "onnx-node/test_batchnorm_epsilon/model.onnx": [],  # statistics fed as graph inputs: no BN011
    "onnx-node/test_batchnorm_epsilon_training_mode/model.onnx": [("BN006", "y")],
    "onnx-node/test_batchnorm_example/model.onnx": [],
    "onnx-node/test_batchnorm_example_training_mode/model.onnx": [("BN006", "y")],
    "ort-fusion/fuse-conv-bn-add-mul-float16.onnx": [("BN009", "NORMALIZED")],
    "ort-fusion/fuse-conv-bn-mul-add-unsqueeze-no-bias.onnx": [("BN009", "conv1/bn_1")],
    "ort-fusion/fuse-conv-bn-mul-add-unsqueeze.negative_axes.onnx": [
        ("BN001", "4d83d4ff-99c9-4ed6-a3f0-ff9c4f860ff7"), ("BN009", "7046c678-03a7-4893-8752-3777d4db12d7")],
    "ort-fusion/fuse-conv-bn-mul-add-unsqueeze.onnx": [
        ("BN001", "4d83d4ff-99c9-4ed6-a3f0-ff9c4f860ff7"), ("BN009", "7046c678-03a7-4893-8752-3777d4db12d7")],
    "ort-fusion/fuse-conv-bn-no-bias.onnx": [("BN009", "conv1/bn_1")],
    "ort-fusion/fuse-matmul-bn-directly-dont-fuse.onnx": [],
    "ort-fusion/fuse-matmul-bn-directly.onnx": [("BN009", "output")],
    "ort-fusion/fuse-matmul-bn-non-ignorable-node.onnx": [("BN009", "bn_output")],
    "ort-fusion/fuse-matmul-bn-only-reshape.onnx": [],
    "ort-fusion/fuse-matmul-bn-only-transpose.onnx": [],
    "ort-fusion/fuse-matmul-bn-with-reshape.onnx": [("BN009", "bn_output")],
    "ultraface/version-RFB-320.onnx": _UF_RFB,
    "ultraface/version-RFB-320_simplified.onnx": [],
    "ultraface/version-RFB-320_without_postprocessing.onnx": _UF_RFB,
    "ultraface/version-RFB-640.onnx": _UF_RFB,
    "ultraface/version-slim-320.onnx": _UF_SLIM,
    "ultraface/version-slim-320_simplified.onnx": [],
    "ultraface/version-slim-320_without_postprocessing.onnx": _UF_SLIM,
}


@needs_corpus
def test_the_lint_table_covers_the_corpus():
    assert sorted(str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*.onnx")) == sorted(CORPUS_LINT)


@needs_corpus
@pytest.mark.parametrize("name", sorted(CORPUS_LINT))
def test_corpus_lint_findings(name):
    from bnfold.lint import lint_model

    assert [(f.code, f.node) for f in lint_model(load_model(CORPUS / name), name)] == CORPUS_LINT[name]


@needs_corpus
def test_ultraface_messages_name_the_pytorch_modules_not_the_output_numbers():
    from bnfold.lint import lint_model

    bn009, bn012 = lint_model(load_model(ULTRAFACE / "version-RFB-320.onnx"), "m.onnx")
    assert bn009.message == (
        "35 BatchNormalization are foldable but still in the model: BatchNormalization 'base_net.0.1' backward "
        "into Conv 'base_net.0.0'; BatchNormalization 'base_net.1.1' backward into Conv 'base_net.1.0'; "
        "BatchNormalization 'base_net.1.4' backward into Conv 'base_net.1.3'; and 32 more")
    assert bn012.message.startswith("35 BatchNormalization read initializers that are also graph inputs")
    assert bn012.fix.startswith("re-export without keep_initializers_as_inputs=True")

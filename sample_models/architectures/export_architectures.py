"""Export deep torchvision and timm architectures with random weights, the way issue-sized models reach bnfold.

    pip install torch==2.14.1 torchvision==0.29.1 timm     # not needed to run the rest of the tests
    python sample_models/architectures/export_architectures.py OUT_DIR [NAME ...]

Nothing is downloaded: every network is built with random weights. Each BatchNormalization gets gamma
U(0.5, 1.5) and beta N(0, 0.1), then one training-mode batch sets its running statistics to that batch's
(momentum 1), so the statistics match the activations as a trained network's do. The export is the
TorchScript exporter with BN kept (training=PRESERVE, no constant folding), opset 17.

These models are 20-110 MB each, so they are made into a folder when needed (tests/test_architectures.py
makes them into a temporary one), not shipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

# name -> (library, constructor name, input side)
ARCHITECTURES = {
    "resnext50_32x4d": ("torchvision", "resnext50_32x4d", 224),
    "inception_v3": ("torchvision", "inception_v3", 299),
    "res2net50_14w_8s": ("timm", "res2net50_14w_8s", 224),
    "mobileone_s0": ("timm", "mobileone_s0", 224),
    "repvgg_a0": ("timm", "repvgg_a0", 224),
    "mixnet_s": ("timm", "mixnet_s", 224),
}


def build(name: str):
    import torch

    library, constructor, side = ARCHITECTURES[name]
    torch.manual_seed(0)
    if library == "torchvision":
        import torchvision

        kwargs = {"init_weights": True, "aux_logits": False} if name == "inception_v3" else {}
        model = getattr(torchvision.models, constructor)(weights=None, **kwargs)
    else:
        import timm

        model = timm.create_model(constructor, pretrained=False)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
                module.momentum = 1.0
        model.train()(torch.randn(4, 3, side, side, generator=generator))
    return model.eval(), torch.randn(1, 3, side, side, generator=generator)


def export(name: str, out: Path) -> Path:
    import torch

    model, x = build(name)
    path = out / f"{name}.onnx"
    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    return path


def exported(names, folder: Path) -> list[Path]:
    """`folder/NAME.onnx` for each name, exporting the ones not there yet (the benches share their exports)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [path if path.is_file() else export(name, folder) for name in names for path in [folder / f"{name}.onnx"]]


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for name in argv[1:] or ARCHITECTURES:
        print(export(name, out))


if __name__ == "__main__":
    main(sys.argv[1:])

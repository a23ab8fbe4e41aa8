"""Export one small PyTorch network three ways, the way users' models reach bnfold.

    pip install torch==2.13.0 onnxscript      # a CPU build; not needed to run the tests
    python sample_models/pytorch/export_pytorch.py

The network has every BatchNormalization placement bnfold folds: Conv+BN (ResNet blocks with a projection
shortcut), depthwise Conv+BN+ReLU6, ConvTranspose+BN, Linear+BatchNorm1d, and a BatchNorm1d after a ReLU
feeding a Linear (folded forward). Running statistics are updated on random batches so they are not 0/1.

- resnetish_legacy.onnx: the TorchScript exporter, opset 17, BN kept (training=PRESERVE, no constant folding)
- resnetish_legacy_inputs.onnx: the same with keep_initializers_as_inputs=True, opset 11 (PyTorch 1.x style)
- resnetish_dynamo.onnx: the dynamo exporter (optimize=False), which writes each Conv bias as
  Expand(CastLike(0, activation), Shape(weight))
"""

from __future__ import annotations

import sys
from pathlib import Path

FILES = ("resnetish_legacy.onnx", "resnetish_legacy_inputs.onnx", "resnetish_dynamo.onnx")


def build():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                             if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            return torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))) + self.shortcut(x))

    class ResNetish(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU())
            self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.ReLU6())
            self.l1, self.l2 = Block(16, 32, 2), Block(32, 32, 1)
            self.up = nn.Sequential(nn.ConvTranspose2d(32, 16, 2, 2), nn.BatchNorm2d(16), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc1, self.bn_fc1, self.fc2 = nn.Linear(16, 64), nn.BatchNorm1d(64), nn.Linear(64, 10)
            self.relu_bn, self.fc3 = nn.Sequential(nn.ReLU(), nn.BatchNorm1d(64)), nn.Linear(64, 10)

        def forward(self, x):
            x = torch.flatten(self.pool(self.up(self.l2(self.l1(self.dw(self.stem(x)))))), 1)
            h = self.bn_fc1(self.fc1(x))
            return self.fc2(torch.relu(h)) + self.fc3(self.relu_bn(h))

    torch.manual_seed(0)
    model = ResNetish().train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn(8, 3, 32, 32))
    return model.eval(), torch.randn(1, 3, 32, 32)


def main(out: Path) -> None:
    import torch

    model, x = build()
    common = dict(input_names=["x"], output_names=["y"])
    legacy = dict(dynamo=False, training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False, **common)
    torch.onnx.export(model, (x,), out / FILES[0], opset_version=17, **legacy)
    torch.onnx.export(model, (x,), out / FILES[1], opset_version=11, keep_initializers_as_inputs=True, **legacy)
    torch.onnx.export(model, (x,), out / FILES[2], dynamo=True, optimize=False, **common)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)

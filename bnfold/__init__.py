"""bnfold: lint, fold and verify BatchNormalization in ONNX models."""

__version__ = "0.1.0"

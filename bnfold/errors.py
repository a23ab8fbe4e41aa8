"""User-facing errors: each one is printed as a single line and exits with code 2."""


class BnfoldError(Exception):
    """An error caused by the user's input (bad path, unreadable model, refused write)."""

    exit_code = 2


class InputError(BnfoldError):
    """The model file cannot be read or is not a valid model."""


class OutputError(BnfoldError):
    """The output cannot be written where the user asked."""


class RuntimeUnavailable(BnfoldError):
    """onnxruntime cannot run the model (custom op, unsupported dtype on CPU)."""

"""What the export writers share: their optional packages, imported on demand, and the
data recipe as a deployed model carries it. A module of its own so that engine/export.py
(the formats) and engine/export_onnx.py (the ONNX graph) both depend on it and not on
each other."""
import importlib

INSTALL = {"onnx": "pip install 'bptt[export]'", "safetensors": "pip install 'bptt[export]'",
           "torch": "pip install torch"}
_PACKAGES = {"onnx": "onnx", "safetensors": "safetensors.numpy", "torch": "torch"}


class ExportUnavailable(RuntimeError):
    """The package a format needs is not installed."""


def require(format):
    """Import the package --format `format` needs, or fail with one line saying what to install."""
    module = _PACKAGES[format]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportUnavailable(f"--format {format} needs {module.split('.')[0]}: "
                                f"{INSTALL[format]}") from None


def deployment_recipe(recipe):
    """The data recipe without the training file's path (which may name the user's machine)."""
    return {key: value for key, value in recipe.items() if key != "source"}

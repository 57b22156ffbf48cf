"""Export a trained model for deployment, where this project is not installed.

Formats (FORMATS):
- "onnx": a graph of the standard RNN / LSTM / GRU operators, run by onnxruntime and
  other ONNX runtimes (engine/export_onnx.py); float32 always.
- "safetensors": exactly the state_dict arrays under PyTorch's names, in the checkpoint's
  dtype, with the model config (and the data recipe, if any) as string metadata.
- "torch": the same state_dict as a torch.save file of tensors (.pt), loadable with
  torch.load(path, weights_only=True).

The safetensors and torch files hold the parameters of a module pair: torch.nn.LSTM /
GRU / RNN(input_size, hidden_size, num_layers, nonlinearity for RNN) takes every entry
but "head.weight" and "head.bias", which go to torch.nn.Linear(hidden_size, output_size)
as "weight" and "bias" (see split_state_dict); a bidirectional model's: the module with
bidirectional=True (the *_reverse entries) and nn.Linear(2 * hidden_size, output_size).
A model with the linear path (Model(skip=True)) also holds "skip.weight", which goes to
torch.nn.Linear(input_size, output_size, bias=False) as "weight" (linear_path), its output
added to the head's: y = head(rnn(x)[0]) + skip(x).

Dropout and recurrent dropout act in training only: they are not in the exported model,
which computes what Model.forward does. Zoneout's inference (the expectation h_t = p h_{t-1}
+ (1 - p) h~_t) is in the "onnx" graph (the cell's operator stepped in a Scan,
engine/export_onnx.py); torch's modules cannot hold it, so "torch" refuses a model with
zoneout > 0; "safetensors" carries it in the config.

onnx, safetensors and torch are optional: each is imported only when its format is
written, and a missing one fails with one line saying what to install.
"""
import io
import json

from engine.checkpoint import load, read_metadata
from engine.export_packages import ExportUnavailable, deployment_recipe, require
from engine.files import atomic_write, check_output
from engine.validation import check_choice

FORMATS = ("onnx", "safetensors", "torch")
__all__ = ["FORMATS", "ExportUnavailable", "export_checkpoint", "export_model", "split_state_dict", "linear_path",
           "require", "deployment_recipe"]
HEAD = ("head.weight", "head.bias")
SKIP = "skip.weight"  # the linear path's weight (O, I), in a model with it


def export_checkpoint(checkpoint, output, format, with_normalization=False, force=False):
    """Write the model of `checkpoint` (from engine.save or bptt train) to `output` in
    `format`. with_normalization (onnx only): the checkpoint's data z-score in the graph.
    force: replace an existing output file (never the checkpoint itself, a link or
    anything but a regular file). Returns a one-line summary."""
    _check_request(output, format, with_normalization, force, inputs=[checkpoint])
    model, _ = load(checkpoint)
    _check_exportable(model, format)
    require(format)
    recipe = read_metadata(checkpoint)["user"].get("data")
    if with_normalization and recipe is None:
        raise ValueError(f"{checkpoint}: holds no data recipe (not written by bptt train), so there "
                         "is no normalisation to include; export without --with-normalization")
    return _write(model, recipe, output, format, with_normalization)


def export_model(model, output, format, recipe=None, with_normalization=False, force=False):
    """export_checkpoint for an engine.Model in memory; recipe: its data recipe, if any
    (TrainingData.metadata), needed by with_normalization."""
    _check_request(output, format, with_normalization, force)
    _check_exportable(model, format)
    require(format)
    if with_normalization and recipe is None:
        raise ValueError("with_normalization needs the data recipe (recipe=TrainingData.metadata)")
    return _write(model, recipe, output, format, with_normalization)


def split_state_dict(state_dict):
    """(recurrent, head): the entries for torch.nn.LSTM/GRU/RNN and for torch.nn.Linear
    (the linear path's weight, if any, in neither: linear_path)."""
    recurrent = {name: value for name, value in state_dict.items() if name not in HEAD + (SKIP,)}
    head = {name.removeprefix("head."): state_dict[name] for name in HEAD}
    return recurrent, head


def linear_path(state_dict):
    """The entries for torch.nn.Linear(input_size, output_size, bias=False), the linear
    path of a model with it ({"weight": skip.weight}), or None for a model without it."""
    return {"weight": state_dict[SKIP]} if SKIP in state_dict else None


def _check_request(output, format, with_normalization, force, inputs=()):
    """Everything checkable before reading the model: the format and the output path."""
    check_choice("format", format, FORMATS)
    if with_normalization and format != "onnx":
        raise ValueError("--with-normalization applies to --format onnx only (the safetensors "
                         "metadata holds the normalisation anyway)")
    check_output(output, inputs=inputs, replace=force)


def _check_exportable(model, format):
    """Refuse, in one line, a model whose inference `format` cannot express (zoneout in
    torch's modules): before asking for the format's package, which would not help."""
    if model.zoneout > 0 and format == "torch":
        raise ValueError(f"--format torch cannot express zoneout's inference (h = p h_prev + (1 - p) h_new): "
                         f"torch.nn.LSTM/GRU have no such option and this model has zoneout {model.zoneout:g}; "
                         f"export --format onnx (which computes it) or safetensors (which carries it)")


def _write(model, recipe, output, format, with_normalization):
    data = _WRITERS[format](model, recipe, with_normalization)
    with atomic_write(output) as file:
        file.write(data)
    note = ""
    if format == "onnx":
        note = ", with the normalisation" if with_normalization else ", normalised units"
        if model.dtype != "float32":
            note += f", {model.dtype} parameters rounded to float32"
    return (f"Exported the {model.cell} model ({model.num_layers} x {model.hidden_size}) to {output} "
            f"({format}{note}).")


def _onnx_bytes(model, recipe, with_normalization):
    from engine.export_onnx import onnx_model
    return onnx_model(model, recipe, with_normalization).SerializeToString()


def _safetensors_bytes(model, recipe, with_normalization):
    safetensors_numpy = require("safetensors")
    metadata = {name: str(value) for name, value in model.config.items()}
    if recipe is not None:
        metadata["data"] = json.dumps(deployment_recipe(recipe))
    return safetensors_numpy.save(model.state_dict(), metadata=metadata)


def _torch_bytes(model, recipe, with_normalization):
    torch = require("torch")
    buffer = io.BytesIO()
    torch.save({name: torch.from_numpy(array) for name, array in model.state_dict().items()}, buffer)
    return buffer.getvalue()


_WRITERS = {"onnx": _onnx_bytes, "safetensors": _safetensors_bytes, "torch": _torch_bytes}

"""The ONNX graph of a model: one standard RNN / LSTM / GRU operator per layer, then the
linear head, optionally inside the z-score of the data recipe. Built with onnx.helper
alone (no torch); the `export` extra provides onnx.

Graph inputs x (T, B, I) with T and B dynamic, h0 (L, B, H) and for LSTM c0 (L, B, H);
outputs y (T, B, O), hn (L, B, H) and for LSTM cn: the final state, to pass back as h0
(and c0) with the next piece of the same streams. Always float32: onnxruntime's CPU
recurrent operators implement float32 only, so float64 parameters are rounded.
"""
import json

import numpy as np

from engine.data import Normalizer
from engine.export_packages import deployment_recipe, require

OPSET = 17  # RNN/LSTM/GRU-14 and everything else here: supported by onnxruntime since 1.12
OPERATORS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
# ONNX's gate blocks as indices into PyTorch's: LSTM i, o, f, c from i, f, g, o;
# GRU z, r, h from r, z, n.
GATE_ORDER = {"rnn": (0,), "lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}


def onnx_model(model, recipe=None):
    """An onnx.ModelProto computing `model` (an engine.Model) in float32, checked by
    onnx.checker. recipe: the data recipe of the checkpoint (metadata["data"]) to put its
    z-score in the graph, so x holds raw inputs and y forecasts in original units (see
    UNITS_NOTE); None: x and y in the model's normalised units."""
    onnx = require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    L, H = model.num_layers, model.hidden_size
    state_names = ("h", "c") if model.cell == "lstm" else ("h",)
    initializers, nodes = [], []

    def constant(name, array, dtype=np.float32):
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=dtype), name))
        return name

    x = "x"
    if recipe is not None:
        input_norm, target_norm = _normalizers(model, recipe)
        nodes += [helper.make_node("Sub", ["x", constant("input_mean", input_norm.mean)], ["x_centred"]),
                  helper.make_node("Div", ["x_centred", constant("input_std", input_norm.std)], ["x_scaled"])]
        x = "x_scaled"
    squeeze_axes = constant("direction_axis", [1], np.int64)
    for k in range(L):
        w_ih, w_hh, b_ih, b_hh = model.layer_parameters(k)
        layer = constant(f"layer{k}", [k], np.int64)  # Gather index: keeps the layer axis
        initial = []
        for part in state_names:
            nodes.append(helper.make_node("Gather", [f"{part}0", layer], [f"{part}0_l{k}"], axis=0))
            initial.append(f"{part}0_l{k}")  # (1, B, H)
        weights = [constant(f"W_l{k}", _onnx_gates(w_ih, model)[None]),            # (1, G*H, I_k)
                   constant(f"R_l{k}", _onnx_gates(w_hh, model)[None]),            # (1, G*H, H)
                   constant(f"B_l{k}", np.concatenate([_onnx_gates(b_ih, model),
                                                       _onnx_gates(b_hh, model)])[None])]  # (1, 2*G*H)
        outputs = [f"y_l{k}_directions"] + [f"{part}n_l{k}" for part in state_names]
        nodes.append(helper.make_node(OPERATORS[model.cell], [x, *weights, "", *initial], outputs,
                                      name=f"{model.cell}_l{k}", **_attributes(model)))
        nodes.append(helper.make_node("Squeeze", [outputs[0], squeeze_axes], [f"y_l{k}"]))  # (T, B, H)
        x = f"y_l{k}"
    for part in state_names:
        nodes.append(helper.make_node("Concat", [f"{part}n_l{k}" for k in range(L)], [f"{part}n"], axis=0))
    head_output = "y" if recipe is None else "y_scaled"
    nodes += [helper.make_node("MatMul", [x, constant("head_weight_t", model.views["head.weight"].T)], ["head_matmul"]),
              helper.make_node("Add", ["head_matmul", constant("head_bias", model.views["head.bias"])], [head_output])]
    if recipe is not None:
        nodes += [helper.make_node("Mul", ["y_scaled", constant("target_std", target_norm.std)], ["y_spread"]),
                  helper.make_node("Add", ["y_spread", constant("target_mean", target_norm.mean)], ["y"])]

    def tensor(name, *shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))

    graph = helper.make_graph(
        nodes, f"bptt_{model.cell}",
        [tensor("x", "T", "B", model.input_size)] + [tensor(f"{part}0", L, "B", H) for part in state_names],
        [tensor("y", "T", "B", model.output_size)] + [tensor(f"{part}n", L, "B", H) for part in state_names],
        initializers)
    opset = [helper.make_opsetid("", OPSET)]
    proto = helper.make_model(graph, opset_imports=opset, producer_name="bptt",
                              ir_version=helper.find_min_ir_version_for(opset),
                              doc_string=_description(model, recipe))
    metadata = {"bptt.config": json.dumps(model.config),
                "bptt.normalization": "in the graph" if recipe is not None else "none"}
    if recipe is not None:
        metadata["bptt.data"] = json.dumps(deployment_recipe(recipe))
    helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _onnx_gates(array, model):
    """PyTorch's gate blocks (G*H, ...) reordered to ONNX's, float32."""
    blocks = np.split(np.asarray(array, dtype=np.float32), model.gates, axis=0)
    return np.concatenate([blocks[index] for index in GATE_ORDER[model.cell]], axis=0)


def _attributes(model):
    attributes = {"hidden_size": model.hidden_size}
    if model.cell == "rnn":
        attributes["activations"] = ["Relu" if model.relu else "Tanh"]
    if model.cell == "gru":
        attributes["linear_before_reset"] = 1  # PyTorch's n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    return attributes


def _normalizers(model, recipe):
    """The recipe's input and target z-scores, checked against the model's sizes."""
    if "input_norm" not in recipe or "target_norm" not in recipe:
        raise ValueError("the data recipe holds no single input and target normalisation to put "
                         "in the graph; export without --with-normalization")
    input_norm = Normalizer.from_dict(recipe["input_norm"])
    target_norm = Normalizer.from_dict(recipe["target_norm"])
    if (len(input_norm.mean), len(target_norm.mean)) != (model.input_size, model.output_size):
        raise ValueError(f"the data recipe normalises {len(input_norm.mean)} inputs and "
                         f"{len(target_norm.mean)} targets; the model has {model.input_size} and "
                         f"{model.output_size}")
    return input_norm, target_norm


UNITS_NOTE = (
    "With the normalisation in the graph, x[t] holds the raw input columns {inputs} at "
    "step t (missing values filled by the caller) and y[t] forecasts the targets {targets} "
    "at step t + {horizon} in original units.")
DIFFERENCED_NOTE = (
    " The model was trained with --difference: in x, the target columns among the inputs "
    "are first differences, value[t] - value[t-1]; other inputs are levels. y[t] is the "
    "forecast change level[t + {horizon}] - level[t], where level[t] is the last observed "
    "target value at or before step t: add level[t] to get the forecast level.")


def _description(model, recipe):
    """The graph's doc string: what goes in and what comes out."""
    state = "h0 and c0" if model.cell == "lstm" else "h0"
    text = (f"bptt {model.cell} model, {model.num_layers} layer(s) of {model.hidden_size} units. "
            f"Inputs x (T, B, {model.input_size}) and {state} ({model.num_layers}, B, "
            f"{model.hidden_size}), zeros to start a stream; outputs y (T, B, {model.output_size}) "
            "and the final state, to feed back with the next piece of the same streams.")
    if recipe is None:
        return text + " x and y are in the model's normalised units."
    text += " " + UNITS_NOTE.format(**recipe)
    return text + (DIFFERENCED_NOTE.format(**recipe) if recipe["difference"] else "")

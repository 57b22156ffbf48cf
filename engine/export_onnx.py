"""The ONNX graph of a model: one standard RNN / LSTM / GRU operator per layer (a zoneout
model: the same operator stepped in a Scan, see _zoneout_layer), then the linear head (plus,
for a model with the linear path, a MatMul of x by skip.weight^T and an Add), optionally
inside the z-score of the data recipe. Built with onnx.helper alone (no torch); the
`export` extra provides onnx.

Graph inputs x (T, B, I) with T and B dynamic, h0 (L, B, H) and for LSTM c0 (L, B, H);
outputs y (T, B, O), hn (L, B, H) and for LSTM cn: the final state, to pass back as h0
(and c0) with the next piece of the same streams. A bidirectional model's layers are the
operators with direction="bidirectional" (W, R, B stacked over the two directions, Y
(T, 2, B, H) turned into (T, B, 2H) = [forward, reverse] for the layer above and the
head) and its states have L * 2 rows in torch's order; it runs whole sequences (the
reverse direction starts at the last step given). Always float32: onnxruntime's CPU
recurrent operators implement float32 only, so float64 parameters are rounded.

A forecasting model (a data recipe with "version": 2) outputs P blocks of K = H * O
columns (horizon H, O targets, entry k = (h - 1) * O + o), P set by its loss (OutputLayout);
the graph turns the blocks into what they stand for (a Gaussian's raw scale through
softplus, quantiles sorted) and its metadata names every column.
"""
import json
import numbers
from dataclasses import dataclass
from functools import partial

import numpy as np

from engine.data import Normalizer
from engine.export_packages import deployment_recipe, require
from engine.losses import MIN_SCALE  # a Gaussian's scale is softplus(raw) + MIN_SCALE, in model units

OPSET = 17  # RNN/LSTM/GRU-14 and everything else here: supported by onnxruntime since 1.12
OPERATORS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
# ONNX's gate blocks as indices into PyTorch's: LSTM i, o, f, c from i, f, g, o;
# GRU z, r, h from r, z, n.
GATE_ORDER = {"rnn": (0,), "lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}
# The parameter each output block of a forecasting model holds, per loss (quantile: one
# block per level).
BLOCK_PARAMETERS = {"mse": ("point",), "gaussian": ("mean", "scale"), "quantile": ("quantile",)}


def onnx_model(model, recipe=None, with_normalization=False):
    """An onnx.ModelProto computing `model` (an engine.Model) in float32, checked by
    onnx.checker. recipe: the data recipe of the checkpoint (metadata["data"]) or None; a
    forecasting recipe ("version": 2) shapes the output blocks (see OutputLayout), an older
    one matters only with_normalization. with_normalization: the recipe's z-score in the
    graph, so x holds raw inputs and y forecasts in original units (see UNITS_NOTE);
    otherwise x and y are in the model's normalised units."""
    onnx = require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    if with_normalization and recipe is None:
        raise ValueError("the normalisation in the graph needs the data recipe")
    layout = OutputLayout.from_recipe(recipe, model.output_size) if recipe is not None else None

    L, H, D = model.num_layers, model.hidden_size, model.directions
    state_names = ("h", "c") if model.cell == "lstm" else ("h",)
    initializers, nodes = [], []

    def constant(name, array, dtype=np.float32):
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=dtype), name))
        return name

    x, target_norm = "x", None
    if with_normalization:
        input_norm, target_norm = _normalizers(model, recipe, layout)
        nodes += [helper.make_node("Sub", ["x", constant("input_mean", input_norm.mean)], ["x_centred"]),
                  helper.make_node("Div", ["x_centred", constant("input_std", input_norm.std)], ["x_scaled"])]
        x = "x_scaled"
    model_input = x  # what the first layer and the linear path read
    if D == 1:
        squeeze_axes = constant("direction_axis", [1], np.int64)
    else:
        both_directions = constant("both_directions", [0, 0, 2 * H], np.int64)  # Reshape to (T, B, 2H)
    for k in range(L):
        directions = [model.layer_parameters(k, reverse) for reverse in (False, True)[:D]]
        layer = constant(f"layer{k}", [D * k + d for d in range(D)], np.int64)  # Gather: this layer's state rows
        initial = []
        for part in state_names:
            nodes.append(helper.make_node("Gather", [f"{part}0", layer], [f"{part}0_l{k}"], axis=0))
            initial.append(f"{part}0_l{k}")  # (D, B, H)
        weights = [constant(f"W_l{k}", np.stack([_onnx_gates(w_ih, model) for w_ih, _, _, _ in directions])),  # (D, G*H, I_k)
                   constant(f"R_l{k}", np.stack([_onnx_gates(w_hh, model) for _, w_hh, _, _ in directions])),  # (D, G*H, H)
                   constant(f"B_l{k}", np.stack([np.concatenate([_onnx_gates(b_ih, model), _onnx_gates(b_hh, model)])
                                                 for _, _, b_ih, b_hh in directions]))]  # (D, 2*G*H)
        outputs = [f"y_l{k}_directions"] + [f"{part}n_l{k}" for part in state_names]  # Y (T, D, B, H)
        if model.zoneout:
            nodes += _zoneout_layer(helper, constant, model, k, x, directions, initial, [f"y_l{k}", *outputs[1:]])
        elif D == 1:
            nodes += [helper.make_node(OPERATORS[model.cell], [x, *weights, "", *initial], outputs,
                                       name=f"{model.cell}_l{k}", **_attributes(model)),
                      helper.make_node("Squeeze", [outputs[0], squeeze_axes], [f"y_l{k}"])]  # (T, B, H)
        else:  # (T, 2, B, H) -> (T, B, 2, H) -> (T, B, 2H): [forward, reverse], as the layer above reads it
            nodes += [helper.make_node(OPERATORS[model.cell], [x, *weights, "", *initial], outputs,
                                       name=f"{model.cell}_l{k}", **_attributes(model)),
                      helper.make_node("Transpose", [outputs[0]], [f"y_l{k}_by_stream"], perm=[0, 2, 1, 3]),
                      helper.make_node("Reshape", [f"y_l{k}_by_stream", both_directions], [f"y_l{k}"])]
        x = f"y_l{k}"
    for part in state_names:
        nodes.append(helper.make_node("Concat", [f"{part}n_l{k}" for k in range(L)], [f"{part}n"], axis=0))
    nodes += _output_nodes(helper, constant, model, x, model_input, layout, target_norm)

    def tensor(name, *shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))

    graph = helper.make_graph(
        nodes, f"bptt_{model.cell}",
        [tensor("x", "T", "B", model.input_size)] + [tensor(f"{part}0", L * D, "B", H) for part in state_names],
        [tensor("y", "T", "B", model.output_size)] + [tensor(f"{part}n", L * D, "B", H) for part in state_names],
        initializers)
    opset = [helper.make_opsetid("", OPSET)]
    proto = helper.make_model(graph, opset_imports=opset, producer_name="bptt",
                              ir_version=helper.find_min_ir_version_for(opset),
                              doc_string=_description(model, recipe, layout, with_normalization))
    metadata = {"bptt.config": json.dumps(model.config),
                "bptt.normalization": "in the graph" if with_normalization else "none"}
    if with_normalization:
        metadata["bptt.data"] = json.dumps(deployment_recipe(recipe))
    if layout is not None:
        metadata["bptt.outputs"] = json.dumps(layout.columns())
        if "features" in recipe:
            metadata["bptt.inputs"] = json.dumps(recipe["features"])
    helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _output_nodes(helper, constant, model, x, model_input, layout, target_norm):
    """The head on the top layer's x (T, B, H), or (T, B, 2H) bidirectional, -> (T, B,
    output_size), plus the linear path on model_input (T, B, I) for a model with it, then
    the stages after it, each (source, target) -> nodes, the last one writing y: a
    forecasting layout's parameter nodes, and target_norm's z-score undone (None: none)."""
    stages = []
    if layout is not None and layout.loss in PARAMETER_NODES:
        stages.append(partial(PARAMETER_NODES[layout.loss], helper, constant, layout))
    if target_norm is not None:
        spread, offset = (target_norm.std, target_norm.mean) if layout is None else layout.original_units(target_norm)
        stages.append(lambda source, target: [
            helper.make_node("Mul", [source, constant("target_std", spread)], ["y_spread"]),
            helper.make_node("Add", ["y_spread", constant("target_mean", offset)], [target])])
    source = "y_scaled" if stages else "y"
    head = "head_output" if model.skip else source
    nodes = [helper.make_node("MatMul", [x, constant("head_weight_t", model.views["head.weight"].T)], ["head_matmul"]),
             helper.make_node("Add", ["head_matmul", constant("head_bias", model.views["head.bias"])], [head])]
    if model.skip:
        nodes += [helper.make_node("MatMul", [model_input, constant("skip_weight_t", model.views["skip.weight"].T)],
                                   ["skip_matmul"]),
                  helper.make_node("Add", [head, "skip_matmul"], [source])]
    for index, stage in enumerate(stages):
        target = "y" if index == len(stages) - 1 else "y_parameters"  # only the parameter stage comes first
        nodes += stage(source, target)
        source = target
    return nodes


@dataclass(frozen=True)
class OutputLayout:
    """The output columns of a forecasting model: P blocks of K = horizon * len(targets)
    columns; column p * K + (h - 1) * O + o is parameter p of target o at step t + h.
    loss "mse": one block, the point forecast; "gaussian": the mean, then the raw scale;
    "quantile": one block per level of `quantiles` (increasing)."""
    loss: str
    horizon: int
    targets: tuple
    quantiles: tuple

    @classmethod
    def from_recipe(cls, recipe, output_size):
        """The layout of a forecasting recipe ("version": 2), checked against the model's
        output_size; None for an older recipe (one output column per target)."""
        if "version" not in recipe:
            return None
        if recipe["version"] != 2:
            raise ValueError(f"the data recipe has version {recipe['version']!r}; this export knows "
                             "version 2 (and older recipes without a version)")
        loss, horizon, targets = recipe.get("loss"), recipe.get("horizon"), recipe.get("targets")
        quantiles = recipe.get("quantiles") or []
        if loss not in BLOCK_PARAMETERS:
            raise ValueError(f"the data recipe's loss is {loss!r}; expected one of {', '.join(BLOCK_PARAMETERS)}")
        if isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral) or horizon < 1:
            raise ValueError(f"the data recipe's horizon is {horizon!r}; expected an integer >= 1")
        if not isinstance(targets, list) or not targets or not all(isinstance(name, str) for name in targets):
            raise ValueError("the data recipe's targets must be a non-empty list of column names")
        if loss == "quantile" and not _increasing_levels(quantiles):
            raise ValueError(f"the data recipe's quantiles are {quantiles!r}; a quantile model needs "
                             "increasing levels in (0, 1)")
        layout = cls(loss, int(horizon), tuple(targets), tuple(quantiles) if loss == "quantile" else ())
        if layout.blocks * layout.entries != output_size:
            raise ValueError(f"the data recipe describes {layout.blocks} x {layout.entries} outputs (loss {loss}, "
                             f"horizon {horizon}, {len(targets)} targets); the model has {output_size}")
        return layout

    @property
    def entries(self):
        """K: forecast entries per row."""
        return self.horizon * len(self.targets)

    @property
    def block_parameters(self):
        """The parameter each of the P blocks holds."""
        return ("quantile",) * len(self.quantiles) if self.loss == "quantile" else BLOCK_PARAMETERS[self.loss]

    @property
    def blocks(self):
        """P: parameters per entry."""
        return len(self.block_parameters)

    def columns(self):
        """Every output column, in order: {"column", "target", "step", "parameter", "level"}
        (level: the quantile level, None for other parameters)."""
        columns = []
        for block, parameter in enumerate(self.block_parameters):
            for entry in range(self.entries):
                step, target = divmod(entry, len(self.targets))
                columns.append({"column": len(columns), "target": self.targets[target], "step": step + 1,
                                "parameter": parameter,
                                "level": self.quantiles[block] if parameter == "quantile" else None})
        return columns

    def original_units(self, target_norm):
        """(spread, offset) (P * K,): y * spread + offset maps every column to original
        units. target_norm: one z-score per target (O, tiled over the steps) or per entry
        (K); its std and mean go to every block, but a scale gets no mean."""
        repeats = self.entries // len(target_norm.mean)
        std, mean = np.tile(target_norm.std, repeats), np.tile(target_norm.mean, repeats)  # (K,)
        spread = np.tile(std, self.blocks)
        offset = np.concatenate([np.zeros(self.entries) if parameter == "scale" else mean
                                 for parameter in self.block_parameters])
        return spread, offset


def _increasing_levels(levels):
    return isinstance(levels, list) and len(levels) > 0 and all(
        isinstance(level, numbers.Real) and not isinstance(level, bool) and 0 < level < 1 for level in levels) \
        and all(low < high for low, high in zip(levels, levels[1:]))


def _gaussian_scale_nodes(helper, constant, layout, source, target):
    """(T, B, 2K) mean and raw scale -> mean and scale softplus(raw) + MIN_SCALE."""
    K = layout.entries
    return [helper.make_node("Split", [source, constant("gaussian_split", [K, K], np.int64)],
                             ["gaussian_mean", "gaussian_raw_scale"], axis=2),
            helper.make_node("Softplus", ["gaussian_raw_scale"], ["gaussian_softplus"]),
            helper.make_node("Add", ["gaussian_softplus", constant("min_scale", [MIN_SCALE])], ["gaussian_scale"]),
            helper.make_node("Concat", ["gaussian_mean", "gaussian_scale"], [target], axis=2)]


def _sorted_quantile_nodes(helper, constant, layout, source, target):
    """(T, B, Q K) quantile blocks -> the same, each entry's Q values sorted increasing (so
    quantiles never cross): TopK of all Q along the block axis of (T, B, Q, K)."""
    Q, K = layout.blocks, layout.entries
    return [helper.make_node("Reshape", [source, constant("quantile_blocks_shape", [0, 0, Q, K], np.int64)],
                             ["quantile_blocks"]),
            helper.make_node("TopK", ["quantile_blocks", constant("quantile_count", [Q], np.int64)],
                             ["quantile_sorted", "quantile_order"], axis=2, largest=0, sorted=1),
            helper.make_node("Reshape", ["quantile_sorted", constant("quantile_columns_shape", [0, 0, Q * K], np.int64)],
                             [target])]


PARAMETER_NODES = {"gaussian": _gaussian_scale_nodes, "quantile": _sorted_quantile_nodes}


def _onnx_gates(array, model):
    """PyTorch's gate blocks (G*H, ...) reordered to ONNX's, float32."""
    blocks = np.split(np.asarray(array, dtype=np.float32), model.gates, axis=0)
    return np.concatenate([blocks[index] for index in GATE_ORDER[model.cell]], axis=0)


def _attributes(model, directions=None):
    """The operator's attributes for the model's directions (directions=1: one forward
    direction, a step of the zoneout Scan)."""
    directions = model.directions if directions is None else directions
    attributes = {"hidden_size": model.hidden_size}
    if directions == 2:
        attributes["direction"] = "bidirectional"
    if model.cell == "rnn":
        attributes["activations"] = ["Relu" if model.relu else "Tanh"] * directions  # one per direction
    if model.cell == "gru":
        attributes["linear_before_reset"] = 1  # PyTorch's n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    return attributes


def _zoneout_layer(helper, constant, model, k, x, directions, initial, outputs):
    """Nodes of layer k of a zoneout model at inference: the expectation of zoneout's
    masks, each unit keeping its previous value with weight p, h_t = p h_{t-1} + (1 - p)
    h~_t (and c_t likewise), where h~_t (c~_t) is the plain cell's step. No standard
    operator mixes its state so, so a Scan over time (backwards for a reverse direction)
    runs the standard operator one step at a time and mixes its result with the state.
    x: (T, B, I_k); directions: the (w_ih, w_hh, b_ih, b_hh) of each direction; initial:
    the (D, B, H) initial states; outputs: y (T, B, D*H), then the (D, B, H) final states."""
    from onnx import TensorProto

    p, H = model.zoneout, model.hidden_size
    keep, update = constant(f"zoneout_keep_l{k}", [p]), constant(f"zoneout_update_l{k}", [1.0 - p])
    first_axis = constant(f"zoneout_axis_l{k}", [0], np.int64)
    parts = [name[:1] for name in outputs[1:]]  # "h", and "c" for the LSTM

    def value(name, *shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))

    nodes, ys, finals = [], [], []
    for d, (w_ih, w_hh, b_ih, b_hh) in enumerate(directions):
        tag = f"l{k}_d{d}"
        weights = [constant(f"W_{tag}", _onnx_gates(w_ih, model)[None]),  # (1, G*H, I_k)
                   constant(f"R_{tag}", _onnx_gates(w_hh, model)[None]),  # (1, G*H, H)
                   constant(f"B_{tag}", np.concatenate([_onnx_gates(b_ih, model), _onnx_gates(b_hh, model)])[None])]
        row = constant(f"row_{tag}", [d], np.int64)
        start = [f"{part}0_{tag}" for part in parts]  # (1, B, H): this direction's row of initial
        nodes += [helper.make_node("Gather", [state, row], [name], axis=0) for state, name in zip(initial, start)]
        step_input, y_t = f"x_t_{tag}", f"y_t_{tag}"  # (B, I_k) one step of x; (B, H)
        state_in = [f"{part}_prev_{tag}" for part in parts]  # (1, B, H)
        plain = [f"{part}_plain_{tag}" for part in parts]  # the cell's step without zoneout
        state_out = [f"{part}_next_{tag}" for part in parts]
        body = [helper.make_node("Unsqueeze", [step_input, first_axis], [f"x_step_{tag}"]),  # (1, B, I_k)
                helper.make_node(OPERATORS[model.cell], [f"x_step_{tag}", *weights, "", *state_in],
                                 ["", *plain], name=f"{model.cell}_step_{tag}", **_attributes(model, 1))]
        for previous, step, mixed in zip(state_in, plain, state_out):
            body += [helper.make_node("Mul", [previous, keep], [f"{mixed}_kept"]),
                     helper.make_node("Mul", [step, update], [f"{mixed}_updated"]),
                     helper.make_node("Add", [f"{mixed}_kept", f"{mixed}_updated"], [mixed])]
        body.append(helper.make_node("Squeeze", [state_out[0], first_axis], [y_t]))
        graph = helper.make_graph(body, f"zoneout_step_{tag}",
                                  [value(name, 1, "B", H) for name in state_in] + [value(step_input, "B", None)],
                                  [value(name, 1, "B", H) for name in state_out] + [value(y_t, "B", H)])
        ends, y = [f"{part}n_{tag}" for part in parts], f"y_{tag}"
        nodes.append(helper.make_node("Scan", [*start, x], [*ends, y], name=f"zoneout_{tag}", body=graph,
                                      num_scan_inputs=1, scan_input_directions=[d], scan_output_directions=[d]))
        ys.append(y)
        finals.append(ends)
    nodes.append(helper.make_node("Concat", ys, outputs[:1], axis=2))  # (T, B, D*H): [forward, reverse]
    nodes += [helper.make_node("Concat", list(ends), [name], axis=0) for name, ends in zip(outputs[1:], zip(*finals))]
    return nodes


def _normalizers(model, recipe, layout):
    """The recipe's input and target z-scores, checked against the model's sizes (a
    forecasting layout: a target z-score per target or per forecast entry, whatever the
    blocks)."""
    if "input_norm" not in recipe or "target_norm" not in recipe:
        raise ValueError("the data recipe holds no single input and target normalisation to put "
                         "in the graph; export without --with-normalization")
    input_norm = Normalizer.from_dict(recipe["input_norm"])
    target_norm = Normalizer.from_dict(recipe["target_norm"])
    inputs, targets = len(input_norm.mean), len(target_norm.mean)
    if layout is None and (inputs, targets) != (model.input_size, model.output_size):
        raise ValueError(f"the data recipe normalises {inputs} inputs and {targets} targets; the model "
                         f"has {model.input_size} and {model.output_size}")
    if layout is not None and (inputs != model.input_size or targets not in (len(layout.targets), layout.entries)):
        raise ValueError(f"the data recipe normalises {inputs} inputs and {targets} target columns; the model "
                         f"has {model.input_size} inputs and forecasts {len(layout.targets)} targets at "
                         f"{layout.horizon} steps ({layout.entries} entries)")
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
# A forecasting model's (OutputLayout): the same, for every step h = 1..horizon and block.
LAYOUT_NOTE = (
    "y[t] holds {blocks} block(s) of K = {horizon} steps x {count} targets {targets} columns: column "
    "p * K + (h - 1) * {count} + o is block p for target o at step t + h, h = 1..{horizon}; {meaning}. "
    "The metadata entry bptt.outputs names every column.")
BLOCK_MEANINGS = {
    "mse": "the block is the point forecast",
    "gaussian": ("block 0 is the mean, block 1 the standard deviation (softplus of the model's raw "
                 "scale + 0.001 in the model's units, computed in the graph)"),
    "quantile": ("block j is the quantile at the j-th of the levels {quantiles}, sorted along the blocks in the "
                 "graph so that quantiles never cross")}
FORECAST_UNITS_NOTE = (
    "With the normalisation in the graph, x[t] holds the raw input columns {inputs} at step t "
    "(missing values filled by the caller) and y[t] is in original units: means, point forecasts "
    "and quantiles as values of the targets, standard deviations in the targets' units.")
FORECAST_DIFFERENCED_NOTE = (
    " The model was trained with --difference: in x, the target columns among the past inputs are "
    "first differences, value[t] - value[t-1], and lagged targets are taken relative to level[t]; "
    "other inputs are levels. Every forecast for step t + h is of the change level[t + h] - level[t], "
    "where level[t] is the last observed target value at or before step t: add level[t] to the "
    "means, point forecasts and quantiles (not to the standard deviations) to get forecast levels.")


def _description(model, recipe, layout, with_normalization):
    """The graph's doc string: what goes in and what comes out."""
    state = "h0 and c0" if model.cell == "lstm" else "h0"
    if model.bidirectional:
        text = (f"bptt {model.cell} model, {model.num_layers} bidirectional layer(s) of {model.hidden_size} units "
                f"per direction. Inputs x (T, B, {model.input_size}), whole sequences, and {state} "
                f"({2 * model.num_layers}, B, {model.hidden_size}): rows 2k and 2k + 1 layer k's forward and "
                "reverse directions (the reverse one enters at the last step), zeros to start; outputs y "
                f"(T, B, {model.output_size}) and the final state (the reverse rows after the first step).")
    else:
        text = (f"bptt {model.cell} model, {model.num_layers} layer(s) of {model.hidden_size} units. "
                f"Inputs x (T, B, {model.input_size}) and {state} ({model.num_layers}, B, "
                f"{model.hidden_size}), zeros to start a stream; outputs y (T, B, {model.output_size}) "
                "and the final state, to feed back with the next piece of the same streams.")
    if layout is not None:
        meaning = BLOCK_MEANINGS[layout.loss].format(quantiles=list(layout.quantiles))
        text += " " + LAYOUT_NOTE.format(blocks=layout.blocks, horizon=layout.horizon, count=len(layout.targets),
                                         targets=list(layout.targets), meaning=meaning)
    if not with_normalization:
        return text + " x and y are in the model's normalised units."
    if layout is None:
        text += " " + UNITS_NOTE.format(**recipe)
        return text + (DIFFERENCED_NOTE.format(**recipe) if recipe["difference"] else "")
    text += " " + FORECAST_UNITS_NOTE.format(inputs=recipe.get("features", recipe.get("inputs")))
    return text + (FORECAST_DIFFERENCED_NOTE if recipe.get("difference") else "")

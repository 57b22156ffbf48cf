"""Model-ready arrays from a panel: per series the recipe of engine.data (columns, fill,
differencing, next-step framing), the validation tail of each series, scaling per series
or global, and the series packed into streams with resets (docs/data.md).
And back: running a model over every series of a panel without packing artefacts."""
from typing import NamedTuple

import numpy as np

from engine.data import _features, _positive_int, frame, select_columns, split_validation
from engine.panel.packing import Layout, pack_layout
from engine.panel.scaling import PanelScaler
from engine.panel.sources import Panel, as_panel, frequency
from engine.series import DataError

VAL_WARMUP = 200   # training steps replayed before each validation tail to warm the state up
PANEL_OPTIONS = ("id_column", "series_columns", "time_column")
# the options of prepare_panel_training_data beyond those of engine.data.prepare_training_data
PANEL_DATA_OPTIONS = ("scale", "val_warmup") + PANEL_OPTIONS
_NORMS = {"mean": ["number"], "std": ["number"]}
PANEL_RECIPE_SCHEMA = {  # the data recipe of a panel in a checkpoint (engine.checkpoint schemas)
    "source": "str", "columns": ["str"], "inputs": ["str"], "targets": ["str"], "horizon": "int",
    "fill": ("str", None), "difference": "bool", "streams": "int", "val_fraction": "number",
    "id_column": ("str", None), "series_columns": ("str", ["str"], None), "time_column": ("str", "bool", None),
    "ids": ["str"], "val_warmup": "int", "frequency": ("str", None), "time_zone?": ("str", None), "scale": "str",
    "scaling": {"scale": "str", "inputs": "dict", "targets": "dict"}}


class PanelTrainingData(NamedTuple):
    """x_train (T, B, I), y_train (T, B, O) normalised and packed, resets (T, B) (True at
    every series and piece start), layout: the Layout of the training parts. x_val (V, N,
    I), y_val (V, N, O): the validation tail of each series on its own stream after up to
    `val_warmup` warm-up steps (targets NaN there, so they only warm the state up), or
    None. metadata: the JSON-ready recipe (prepare_panel_training_data)."""
    x_train: np.ndarray
    y_train: np.ndarray
    resets: np.ndarray
    layout: Layout
    x_val: np.ndarray
    y_val: np.ndarray
    metadata: dict


class SeriesFrames(NamedTuple):
    """One series after a recipe: x (T', I) normalised inputs; levels (T', O) targets in
    original units; base (T', O) the last observed level at each row; rows (T',) the row
    of the original series each entry comes from (T' = T, or T - 1 with differencing);
    times (T',) or None."""
    series_id: str
    x: np.ndarray
    levels: np.ndarray
    base: np.ndarray
    rows: np.ndarray
    times: np.ndarray


def prepare_panel_training_data(source, inputs=None, targets=None, horizon=1, streams=1,
                                val_fraction=0.0, fill=None, difference=False, scale=None,
                                val_warmup=VAL_WARMUP, id_column=None, series_columns=None,
                                time_column=None, key=None, scaling=None):
    """Training data from a panel (a Panel or anything engine.panel.as_panel reads with
    id_column / series_columns / time_column).

    Each series goes through the single-series recipe (see
    engine.data.prepare_training_data for inputs, targets, horizon, fill, difference),
    then loses its last round(val_fraction * T_i) steps to validation. Scaling (scale:
    "series", "global", or None for "series" with more than one series) is fitted on
    the training parts. The training parts are packed into `streams` streams
    (engine.panel.pack_layout, cut into pieces when long). Errors name the series.
    Returns PanelTrainingData; its metadata holds the single-series recipe keys, the
    panel options, ids, streams, val_fraction, val_warmup, train_steps, val_steps,
    frequency, time_zone (of dated times, engine/series/zones.py), scale and scaling
    (PanelScaler.to_dict()). scaling: such a record to use
    instead of fitting one (a resumed run keeps its statistics)."""
    horizon = _positive_int("horizon", horizon)
    if isinstance(val_warmup, bool) or not isinstance(val_warmup, (int, np.integer)) or val_warmup < 0:
        raise DataError(f"val_warmup must be an integer >= 0; got {val_warmup!r}")
    panel = as_panel(source, id_column, series_columns, time_column, key)
    first = panel.series[0]
    target_names = select_columns(first, targets, "targets").names
    input_names = target_names if inputs is None else select_columns(first, inputs, "inputs").names
    recipe = {"source": panel.source, "columns": list(panel.names), "inputs": list(input_names),
              "targets": list(target_names), "horizon": horizon, "fill": fill,
              "difference": bool(difference), "id_column": id_column,
              "series_columns": series_columns, "time_column": panel.time_name or time_column}
    train, validation = [], []
    for series_id, one in zip(panel.ids, panel.series):
        features, levels, base = _named(series_id, _features, one, recipe)
        x, y = _named(series_id, frame, features, levels, horizon)
        if difference:
            y = y - base[:len(y)]
        part, tail = _named(series_id, split_validation, x, y, val_fraction)
        train.append(part)
        validation.append(tail)
    return assemble_panel_training_data(panel, recipe, train, validation, streams, val_fraction, val_warmup,
                                        scale, scaling)


def assemble_panel_training_data(panel, recipe, train, validation, streams, val_fraction, val_warmup,
                                 scale=None, scaling=None, statics=None):
    """PanelTrainingData from each series' framed training part (x (N_i, I), y (N_i, K))
    and validation tail (or None): scaling fitted on the training parts (or the `scaling`
    record given), packed into `streams` streams. statics: optional (series, S) values
    appended to every input row of each series after scaling (per-series scaling would
    turn a per-series constant into 0). metadata: the recipe plus the keys of
    prepare_panel_training_data."""
    scaler = (PanelScaler.from_dict(scaling) if scaling is not None
              else PanelScaler.fit(scale, panel.ids, [x for x, _ in train], [y for _, y in train]))
    norms = [scaler.for_series(series_id) for series_id in panel.ids]
    x_parts = [_with_statics(norm_x.transform(x), statics, i) for i, ((x, _), (norm_x, _)) in
               enumerate(zip(train, norms))]
    y_parts = [norm_y.transform(y) for (_, y), (_, norm_y) in zip(train, norms)]
    layout = pack_layout([len(x) for x in x_parts], streams)
    x_val = y_val = None
    if val_fraction > 0:
        x_val, y_val = _validation(train, validation, norms, val_warmup, statics)
    metadata = {**recipe, "ids": list(panel.ids), "streams": int(streams),
                "val_fraction": float(val_fraction), "val_warmup": int(val_warmup),
                "train_steps": sum(len(x) for x in x_parts),
                "val_steps": 0 if x_val is None else sum(len(tail[0]) for tail in validation),
                "frequency": _frequency_label(panel), "time_zone": panel.time_zone, "scale": scaler.scale,
                "scaling": scaler.to_dict()}
    return PanelTrainingData(layout.pack(x_parts, 0.0), layout.pack(y_parts, np.nan),
                             layout.resets, layout, x_val, y_val, metadata)


def _with_statics(x, statics, series):
    """x (n, I) normalised, with row `series` of statics (series, S) appended to every row."""
    if statics is None:
        return x
    return np.concatenate([x, np.broadcast_to(statics[series], (len(x), statics.shape[1]))], axis=1)


def _validation(train, validation, norms, val_warmup, statics=None):
    """Each series' validation tail after its last `val_warmup` training steps (targets
    NaN there), one series per stream: (V, N, I), (V, N, O), padded at the end."""
    xs, ys = [], []
    for i, ((x, y), (x_tail, y_tail), (norm_x, norm_y)) in enumerate(zip(train, validation, norms)):
        warm = min(int(val_warmup), len(x))
        xs.append(_with_statics(norm_x.transform(np.concatenate([x[len(x) - warm:], x_tail])), statics, i))
        ys.append(np.concatenate([np.full((warm, y.shape[1]), np.nan), norm_y.transform(y_tail)]))
    if all(np.isnan(y).all() for y in ys):
        raise DataError("the validation tails hold no observed targets; change --val-fraction or the data")
    layout = pack_layout([len(x) for x in xs], len(xs), cut=False)   # one series per stream
    return layout.pack(xs, 0.0), layout.pack(ys, np.nan)


def prepare_panel_frames(source, metadata, series_id=None, key=None, **panel_options):
    """Every series of a panel (or the one `series_id`) through the recipe of a model
    trained on a panel: list of SeriesFrames. panel_options (id_column, series_columns,
    time_column) default to those of the training data (read from a table or files; a
    Panel takes only those given, engine.panel.as_panel). Returns (frames, panel)."""
    defaults = {} if isinstance(source, Panel) else metadata
    options = {name: panel_options.get(name, defaults.get(name)) for name in PANEL_OPTIONS}
    panel = as_panel(source, key=key, **options)
    if series_id is not None:
        panel = panel.select(series_id)
    scaler = PanelScaler.from_dict(metadata["scaling"])
    frames = []
    for series_id, one, times in zip(panel.ids, panel.series, panel.times):
        features, levels, base = _named(series_id, _features, one, metadata)
        if not len(features):
            raise DataError(f'series "{series_id}" has {len(one.values)} rows, too few to run the model on')
        norm_x, _ = scaler.for_series(series_id)
        rows = np.arange(len(one.values))[len(one.values) - len(features):]
        frames.append(SeriesFrames(series_id, norm_x.transform(features), levels, base, rows,
                                   None if times is None else times[rows]))
    return frames, panel


def forward_series(model, xs):
    """Run `model` over each series of xs (N arrays (T_i, I), T_i >= 1) from a zero state, all side
    by side (one stream each, longest first) in as many calls as there are distinct
    lengths, each call on the streams still running: no padding is ever computed and
    every series ends with its own final state. Returns (outputs: N arrays (T_i, O),
    states: N final states in the model's public form, batch 1)."""
    if not xs or any(len(x) == 0 for x in xs):
        raise DataError("forward_series needs at least one series, each of at least one step")
    order = sorted(range(len(xs)), key=lambda i: -len(xs[i]))   # stream j holds series order[j]
    lengths = np.array([len(xs[i]) for i in order])
    x = np.zeros((lengths[0], len(xs), xs[0].shape[1]), dtype=model.dtype)
    for j, i in enumerate(order):
        x[:lengths[j], j] = xs[i]
    outputs = [None] * len(xs)
    states = [None] * len(xs)
    pieces, state, start = [], None, 0
    for stop in sorted(set(lengths.tolist())):
        running = int(np.sum(lengths >= stop))   # streams 0..running-1 reach `stop`
        state = None if state is None else _streams(state, slice(0, running))
        y_hat, state = model.forward(x[start:stop, :running], state)
        pieces.append(y_hat)
        for j in np.flatnonzero(lengths == stop):
            states[order[j]] = _streams(state, slice(j, j + 1))
        start = stop
    for j, i in enumerate(order):
        outputs[i] = np.concatenate([piece[:, j] for piece in pieces if piece.shape[1] > j])
    return outputs, states


def stack_states(states):
    """N states of batch 1 -> one state of batch N (streams in order)."""
    if isinstance(states[0], tuple):
        return tuple(np.concatenate(parts, axis=1) for parts in zip(*states))
    return np.concatenate(states, axis=1)


def _streams(state, streams):
    """The streams `streams` (a slice) of a state h (L, B, H) or (h, c)."""
    if isinstance(state, tuple):
        return tuple(np.ascontiguousarray(part[:, streams]) for part in state)
    return np.ascontiguousarray(state[:, streams])


def _named(series_id, function, *arguments):
    """function(*arguments), its DataError prefixed with the series id (unless it names it first)."""
    try:
        return function(*arguments)
    except DataError as error:
        name = f'series "{series_id}"'
        raise DataError(str(error) if str(error).startswith(name) else f"{name}: {error}") from None


def _frequency_label(panel):
    for times in panel.times:
        found = frequency(times)
        if found is not None:
            return found[0]
    return None


def is_panel_recipe(recipe):
    """Whether a data recipe (a checkpoint's metadata["data"]) comes from a panel."""
    return "scaling" in recipe

"""Running a forecasting model over the series of a data set: every series framed by its
recipe, scaled as at training, and run from a zero state (all series side by side,
engine.panel.forward_series), giving the model's outputs at every origin."""
from typing import NamedTuple

import numpy as np

from engine.data import Normalizer, select_columns
from engine.forecasting import frames as framing, statics as static_values
from engine.panel.prepare import _named, forward_series
from engine.panel.scaling import PanelScaler
from engine.panel.sources import Panel, as_panel


class SeriesRun(NamedTuple):
    """One series: series_id; frames (engine.forecasting.frames.Frames) of its origins;
    outputs (N, P*K) the model's outputs there (model units); target_norm: the Normalizer
    of its K target entries; stamps (T,) its time stamps or None."""
    series_id: str
    frames: framing.Frames
    outputs: np.ndarray
    target_norm: Normalizer
    stamps: np.ndarray


def read(data, recipe, key=None, series_id=None, **panel_options):
    """The data as a Panel (one series is a panel of one), read as at training: a panel
    model's id_column / series_columns / time_column default to the recipe's."""
    given = {name: value for name, value in panel_options.items() if value is not None}
    defaults = {} if "scaling" not in recipe or isinstance(data, Panel) else \
        {name: recipe.get(name) for name in ("id_column", "series_columns", "time_column")}
    options = {**defaults, **given}
    panel = as_panel(data, key=key, **options)
    return panel.select(series_id) if series_id is not None else panel


def run(model, recipe, panel, end_of):
    """SeriesRun per series of `panel`. end_of(levels (T, O), T) -> the end of the origins
    of a series (engine.forecasting.frames.frame_series's `end`)."""
    frames_list, xs, norms = [], [], []
    statics, _ = static_values.scaled(panel, recipe["static"], recipe.get("static_norm"))
    for i, (series_id, one, stamps) in enumerate(zip(panel.ids, panel.series, panel.times)):
        framed = _framed(series_id if "scaling" in recipe else None, one, recipe, stamps, panel.time_zone, end_of)
        norm_x, norm_y = _norms(recipe, series_id)
        x = norm_x.transform(framed.x)
        if statics is not None:
            x = np.concatenate([x, np.broadcast_to(statics[i], (len(x), statics.shape[1]))], axis=1)
        frames_list.append(framed)
        xs.append(x)
        norms.append(norm_y)
    outputs, _ = forward_series(model, xs)
    return [SeriesRun(series_id, framed, output.astype(np.float64), norm_y, stamps)
            for series_id, framed, output, norm_y, stamps in zip(panel.ids, frames_list, outputs, norms, panel.times)]


def _framed(series_id, one, recipe, stamps, zone, end_of):
    """Frames of one series up to end_of's end; errors named by the series id (in a panel)."""
    def frame():
        framing.check_columns(one, recipe)
        end = end_of(select_columns(one, recipe["targets"], "targets").values, len(one.values))
        return framing.frame_series(one, recipe, stamps, zone, end,
                                    "the series" if series_id is None else f'series "{series_id}"')
    return frame() if series_id is None else _named(series_id, frame)


def _norms(recipe, series_id):
    """(input Normalizer, target Normalizer of the K entries) of one series."""
    if "scaling" in recipe:
        return PanelScaler.from_dict(recipe["scaling"]).for_series(series_id)
    return Normalizer.from_dict(recipe["input_norm"]), Normalizer.from_dict(recipe["target_norm"])


def last_origin_end(levels, length):
    """Origins up to the last row with an observed target (a forecast from there)."""
    return framing.last_observed_row(levels) + 1

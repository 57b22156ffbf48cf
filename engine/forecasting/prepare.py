"""Training data of a forecasting model (docs/forecasting.md): each series framed for a
direct multi-horizon model (engine.forecasting.frames), then split, scaled and cut into
streams as engine.data (one series) and engine.panel (many) do."""
from engine.data import assemble_training_data, select_columns, split_validation
from engine.forecasting import frames, roles, statics as static_values
from engine.panel.prepare import VAL_WARMUP, _frequency_label, _named, assemble_panel_training_data
from engine.panel.sources import as_panel
from engine.series import as_series, times


_NORM = {"mean": ["number"], "std": ["number"]}
# the keys a forecasting recipe adds to a checkpoint's data recipe (engine.checkpoint schemas)
FORECAST_RECIPE_SCHEMA = {
    "version?": "int", "known?": ["str"], "calendar?": ["str"], "lags?": ["int"], "static?": ["str"],
    "features?": ["str"], "loss?": "str", "quantiles?": ["number"], "conformal?": ("dict", None),
    "static_norm?": (_NORM, None), "derived?": ["str"], "k1?": "int"}


# --streams left unset: one stream per STREAM_ROWS training rows of all the series together,
# at least FEWEST_STREAMS (when the rows hold that many k1 steps) and at most MOST_STREAMS.
# Measured on the quality benchmark's panels (docs/performance.md#forecast-quality): a
# 181,594-row panel went from MASE 0.976 at 8 streams to 0.807 at 64, a 11,301-row one
# from 0.764 at 8 to 0.860 at 64 (too few updates per epoch when each stream is short).
STREAM_ROWS = 2000
FEWEST_STREAMS, MOST_STREAMS = 8, 64
# --k1 left unset: the whole number of periods of the data's dominant seasonal lag (the
# shortest the model is given: a day for hourly data, a week for daily, a year for monthly
# or weekly data) nearest K1_AIM steps, at least one, at most K1_MOST; K1_AIM without lags;
# never more than the training rows (one stream then holds one window). Measured on the
# quality benchmark (docs/performance.md#forecast-quality): shorter windows (24 steps)
# helped five members by 2-4% but cost the sensors panel 3.5% and its lead over the
# seasonal naive at steps 1-2; a week of hourly data (168) cost it 5%; on realgdp (149
# training rows) 48 instead of 52 (three streams instead of two) cost 8% over four seeds.
K1_AIM, K1_MOST = 50, 200


def prepare(source, *, panel=False, inputs=None, targets=None, horizon=1, streams=None, val_fraction=0.0,
            fill=None, difference=None, known=None, calendar="auto", lags="auto", static=None, min_steps=1,
            key=None, scale=None, val_warmup=VAL_WARMUP, id_column=None, series_columns=None, time_column=None,
            scaling=None, static_norm=None):
    """TrainingData (one series) or PanelTrainingData (panel True) for a forecasting
    model. The recipe in its metadata holds the resolved roles (engine.forecasting.roles),
    "features", the names of the input columns, and "derived", the options left to the
    data and chosen from it: lags and calendar (its frequency), difference (trending or
    wandering targets), streams (derived_streams: from the training rows of all the series and
    min_steps) and, with min_steps None, k1 (derived_k1; the recipe's "k1", also the
    min_steps of each stream). scaling / static_norm: stored records to use instead of
    fitting (a resumed run)."""
    horizon = roles.check_horizon(horizon)
    if panel:
        data = as_panel(source, id_column, series_columns, time_column, key)
        zone, stamps = data.time_zone, data.times
        members, ids = data.series, data.ids
        frequency = _frequency_label(data) and _iso_frequency(stamps, zone)
    else:
        one = as_series(source, key)
        zone, stamps, members, ids = one.time_zone, [one.time], [one], ["series"]
        frequency = _iso_frequency(stamps, zone)
    recipe = roles.resolve(members[0], targets=targets, inputs=inputs, known=known, calendar=calendar, lags=lags,
                           static=static, horizon=horizon, frequency=frequency,
                           shortest=min(len(one.values) for one in members), panel=panel,
                           has_time=any(frames.is_dated(when) for when in stamps))
    derived = [name for name, given in (("lags", lags), ("calendar", calendar), ("difference", difference),
                                        ("streams", streams), ("k1", min_steps)) if given in (None, "auto")]
    if difference is None:   # changes for trending or wandering targets (columns checked first, by name)
        for series_id, one in zip(ids, members):
            _named(series_id, frames.check_columns, one, recipe) if panel else frames.check_columns(one, recipe)
        difference = (roles.trending(members, recipe["targets"], val_fraction)
                      or roles.wandering(members, recipe["targets"], recipe["lags"], val_fraction))
    recipe.update(horizon=horizon, fill=fill, difference=bool(difference), derived=derived)
    recipe["features"] = frames.feature_names(recipe)
    parts = []
    for series_id, one, when in zip(ids, members, stamps):
        framed = _named(series_id, _training_frames, one, recipe, when, zone, f'series "{series_id}"') \
            if panel else _training_frames(one, recipe, when, zone)
        parts.append(_named(series_id, split_validation, framed.x, framed.y, val_fraction) if panel else framed)
    if not panel:
        recipe = {"source": one.source, "columns": list(one.names), **recipe}
        if one.time is not None:
            recipe["time"] = times.describe(one.time, one.time_name, one.time_zone)
        framed = parts[0]
        streams, min_steps = _streams_and_k1(recipe, len(framed.x) - round(val_fraction * len(framed.x)),
                                             streams, min_steps)
        return assemble_training_data(framed.x, framed.y, recipe, recipe["targets"], streams, val_fraction,
                                      min_steps)
    values, norm = static_values.scaled(data, recipe["static"], static_norm)
    recipe = {"source": data.source, "columns": list(data.names), **recipe, "id_column": id_column,
              "series_columns": series_columns, "time_column": data.time_name or time_column,
              "static_norm": norm}
    streams, _ = _streams_and_k1(recipe, sum(len(x) for (x, _), _ in parts), streams, min_steps)
    return assemble_panel_training_data(data, recipe, [train for train, _ in parts], [tail for _, tail in parts],
                                        streams, val_fraction, val_warmup, scale, scaling, values)


def _streams_and_k1(recipe, rows, streams, min_steps):
    """(streams, min_steps) for `rows` training rows: min_steps None derives k1 (recorded
    as the recipe's "k1", at most the rows of a stream when --streams is given), streams
    None derives the streams from the rows and min_steps."""
    if min_steps is None:
        min_steps = derived_k1(recipe["lags"], rows if streams is None else max(1, rows // streams))
        recipe["k1"] = min_steps
    return (derived_streams(rows, min_steps) if streams is None else streams), min_steps


def derived_k1(lags, rows):
    """--k1 left unset, for a model given the seasonal `lags` (steps) and `rows` training
    rows (all the series together): the whole number of periods of the shortest lag
    nearest K1_AIM (at least one, at most K1_MOST steps; K1_AIM without lags), at most
    `rows` (at least 1)."""
    k1 = K1_AIM
    if lags:
        period = min(lags)
        k1 = min(K1_MOST, period * max(1, int(K1_AIM / period + 0.5)))
    return max(1, min(rows, k1))


def with_derived_k1(data, most=None):
    """Prepared data (TrainingData / PanelTrainingData) whose recipe holds the k1 derived
    for it: as prepared with min_steps None, or derived now from its lags and the rows of
    its streams (data prepared without it, as a sweep prepares), at most a stream's steps;
    at most `most` (a --k2 given)."""
    steps, streams = data.x_train.shape[:2]
    k1 = data.metadata.get("k1") or min(derived_k1(data.metadata.get("lags") or [], steps * streams), steps)
    derived = data.metadata.get("derived", [])
    return data._replace(metadata={**data.metadata, "k1": min(k1, most or k1),
                                   "derived": derived if "k1" in derived else [*derived, "k1"]})


def derived_streams(rows, min_steps=1):
    """--streams left unset, for `rows` training rows (all the series together): one
    stream per STREAM_ROWS rows, FEWEST_STREAMS..MOST_STREAMS, but never more than the rows
    hold min_steps (k1) steps for (at least 1)."""
    wanted = min(MOST_STREAMS, max(FEWEST_STREAMS, rows // STREAM_ROWS))
    return max(1, min(wanted, rows // min_steps))


def _training_frames(series, recipe, stamps, zone, where="the series"):
    """Frames of a series' training origins: each has its step 1 observed, and the rows
    after the last observed target (future rows of known inputs, kept for forecasting)
    are left out."""
    frames.check_columns(series, recipe)
    levels = select_columns(series, recipe["targets"], "targets").values
    end = max(min(len(levels) - recipe["horizon"], frames.last_observed_row(levels)), 0)
    return frames.frame_series(series, recipe, stamps, zone, end, where)


def _iso_frequency(stamps, zone):
    """The ISO 8601 frequency of the first dated series among `stamps`, or None."""
    for when in stamps:
        if frames.is_dated(when):
            found = times.infer_frequency(when, zone)
            if found is not None:
                return found
    return None


def describe_inputs(recipe):
    """A line naming what was chosen from the data (the options left at "auto" or unset):
    the lags and calendar features of its frequency, differencing for trending or wandering
    targets, the number of streams and k1; None when nothing was (or all came out empty)."""
    derived = [name for name in recipe.get("derived") or () if recipe.get(name)]
    if not is_forecasting_recipe(recipe) or not derived:
        return None
    frequency = (recipe.get("time") or {}).get("frequency") or recipe.get("frequency")
    chosen = {"lags": f"lags {', '.join(map(str, recipe['lags']))}",
              "calendar": f"calendar {', '.join(recipe['calendar'])}",
              "difference": "the targets trend or wander: modelled as changes (--no-difference to keep "
                            "levels)",
              "streams": f"{recipe['streams']} streams", "k1": f"k1 {recipe.get('k1')}"}
    return (f"chosen from the data{f' (frequency {frequency})' if frequency else ''}: "
            + "; ".join(chosen[name] for name in derived))


def is_forecasting_recipe(recipe):
    """Whether a checkpoint's data recipe is a forecasting (version 2) recipe."""
    return recipe.get("version") == roles.RECIPE_VERSION




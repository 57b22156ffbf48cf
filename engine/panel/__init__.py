"""Many series in one model (docs/data.md): panel sources, packing into streams
with resets, per-series scaling, per-series evaluation and forecasts.

    from engine.panel import as_panel, prepare_panel_training_data, evaluate_panel

The pieces: sources.py (Panel; long, wide and file sources), packing.py (Layout,
pack_layout), scaling.py (PanelScaler), prepare.py (model-ready arrays, running a model
over every series), evaluate.py (metrics per series, forecasts per (id, time)).
"""
from engine.panel.evaluate import evaluate_panel, forecast_panel, score
from engine.panel.packing import Layout, pack_layout
from engine.panel.prepare import (PANEL_DATA_OPTIONS, PANEL_RECIPE_SCHEMA, PanelTrainingData, SeriesFrames,
                                  forward_series, is_panel_recipe, prepare_panel_frames,
                                  prepare_panel_training_data)
from engine.panel.scaling import SCALES, PanelScaler
from engine.panel.sources import (Panel, as_panel, check_frequencies, file_id, frequency,
                                  from_files, from_long, from_wide, future_times, single,
                                  to_long)

__all__ = ["Panel", "as_panel", "from_long", "from_wide", "from_files", "single", "to_long", "file_id",
           "frequency", "check_frequencies", "future_times", "Layout", "pack_layout",
           "PanelScaler", "SCALES", "PanelTrainingData", "SeriesFrames", "PANEL_DATA_OPTIONS",
           "PANEL_RECIPE_SCHEMA", "is_panel_recipe",
           "prepare_panel_training_data", "prepare_panel_frames", "forward_series",
           "evaluate_panel", "forecast_panel", "score"]

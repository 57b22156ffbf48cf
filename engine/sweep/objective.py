"""What ranks a sweep's configurations (docs/sweeps.md): a trained seed's score.

By default the validation loss averaged over series: each series' mean loss on its own
validation tail (normalised units, the loss the trainer reports), then the mean over the
series, so a short series counts as much as a long one (a single series: its validation
loss). Or a metric (mase, smape, rmse) of the model's forecasts on the validation tails
in original units, per series and then the mean over series, computed by
engine.panel.evaluate_panel (MASE against the seasonal naive forecast of period
`season`). Pruning always uses the per-epoch validation loss; the score ranks only.
"""
import math

import numpy as np

from engine.forecasting.evaluate import evaluate
from engine.forecasting.frames import first_origin
from engine.forecasting.prepare import is_forecasting_recipe
from engine.losses import mean_loss
from engine.panel import PanelTrainingData, evaluate_panel, single

METRICS = ("mase", "smape", "rmse")   # in original units; None: the validation loss


class Objective:
    """metric: None (the validation loss averaged over series) or one of METRICS; season:
    the period of MASE's seasonal naive forecast."""

    def __init__(self, metric=None, season=1):
        self.metric, self.season = metric, season

    def describe(self):
        """The objective in words, for summary.json and the progress output."""
        if self.metric is None:
            return "validation loss, mean over series of each series' loss on its validation tail"
        season = f", seasonal naive of period {self.season}" if self.metric == "mase" else ""
        return f"{self.metric} on the validation tails in original units{season}, mean over series"

    @property
    def label(self):
        """Its short name in the progress lines: val_loss, mase, smape or rmse."""
        return self.metric or "val_loss"

    def score(self, model, data, read, loss="mse", quantiles=None):
        """The score of a trained `model` (trained with `loss`, `quantiles`) on its prepared
        `data` (TrainingData or PanelTrainingData), `read` the sweep's data as read (a
        Series or a Panel); nan when no series can be scored."""
        if self.metric is None:
            return _mean_validation_loss(model, data, loss, quantiles)
        if is_forecasting_recipe(data.metadata):
            return self._forecasting_score(model, data, read, loss, quantiles)
        panel, recipe, tails = _as_panel(data, read)
        starts = {series_id: -count for series_id, count in zip(panel.ids, tails)}
        scores = evaluate_panel(model, {"data": recipe}, panel, season=self.season, start=starts)["series"]
        defined = [record[self.metric] for record in scores if not math.isnan(record[self.metric])]
        return float(np.mean(defined)) if defined else math.nan

    def _forecasting_score(self, model, data, read, loss, quantiles):
        """The metric of a forecasting model over steps 1..H from every origin of each
        series' validation tail (engine.forecasting.evaluate: the start names the first
        origin's step 1), mean over series."""
        recipe = {**data.metadata, "loss": loss, "quantiles": list(quantiles or [])}
        panel = read if isinstance(data, PanelTrainingData) else single(read)
        if isinstance(data, PanelTrainingData):
            starts = {series_id: first_origin(recipe) + trained + 1 for series_id, trained in
                      zip(panel.ids, data.layout.lengths)}
        else:
            starts = {panel.ids[0]: first_origin(recipe) + recipe["train_steps"] + 1}
        scores = evaluate(model, {"data": recipe}, panel, start=starts, season=self.season,
                          levels="none")
        records = scores.get("series") or [scores]
        defined = [record[self.metric] for record in records if not math.isnan(record[self.metric])]
        return float(np.mean(defined)) if defined else math.nan


def _mean_validation_loss(model, data, loss, quantiles):
    """Mean over the validation streams (one series each) of each one's mean loss."""
    y_hat, _ = model.forward(data.x_val)
    losses = [mean_loss(loss, y_hat[:, [stream]], data.y_val[:, [stream]], quantiles)
              for stream in range(y_hat.shape[1])]
    losses = [loss for loss in losses if not math.isnan(loss)]
    return float(np.mean(losses)) if losses else math.nan


def _as_panel(data, read):
    """(panel, panel recipe, validation targets per series) of the data a model was trained
    on. A single series is scored as the panel of one, its normalisation the panel's
    global scaling."""
    recipe = data.metadata
    if not isinstance(data, PanelTrainingData):
        scaling = {"scale": "global", "inputs": {"*": recipe["input_norm"]}, "targets": {"*": recipe["target_norm"]}}
        return single(read), {**recipe, "scaling": scaling}, [recipe["val_steps"]]
    framed = [len(one.values) - int(recipe["difference"]) - recipe["horizon"] for one in read.series]
    return read, recipe, [count - trained for count, trained in zip(framed, data.layout.lengths)]

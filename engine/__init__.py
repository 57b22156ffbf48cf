"""bptt engine: recurrent models trained with (truncated) backpropagation through time.

The public API (README, docs/training.md): Model, loss_and_grad, Trainer, save, load; the
pipeline functions behind the `bptt` command (train_series, forecast_series,
evaluate_series), whose training options engine.options defines; optimizers in
engine.optim and learning-rate schedules in engine.schedules; engine.export writes ONNX,
safetensors and PyTorch files (importing their packages only when used).
"""
from engine import data, export, optim, options, schedules
from engine.bptt import loss_and_grad
from engine.checkpoint import CheckpointError, load, read_metadata, save
from engine.gradcheck import gradient_check
from engine.history import History
from engine.model import Model
from engine.pipeline import backtest_series, evaluate_series, forecast_series, load_for_inference, train_series
from engine.plots import PlotUnavailable, plot_backtest_errors, plot_forecast, plot_training, require_matplotlib
from engine.progress import Progress
from engine.trainer import Trainer, TrainingDiverged

__all__ = ["Model", "loss_and_grad", "Trainer", "TrainingDiverged", "History", "save", "load",
           "read_metadata", "CheckpointError", "optim", "options", "schedules", "data", "export", "train_series",
           "forecast_series", "evaluate_series", "backtest_series", "load_for_inference", "gradient_check",
           "Progress", "PlotUnavailable", "plot_training", "plot_forecast", "plot_backtest_errors",
           "require_matplotlib"]

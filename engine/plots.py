"""Optional plots (matplotlib, the `plot` extra): training curves and forecast against actual."""
import os

import numpy as np

from engine.files import atomic_write


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib(path=None):
    """Import matplotlib with a headless backend, or say how to install it. path: where a
    plot will be saved; its format (by extension, PNG without one) is checked now, so a
    long run does not end in an unsupported format."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'bptt[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if path is not None:
        from matplotlib.backend_bases import FigureCanvasBase
        extension = os.path.splitext(os.fspath(path))[1][1:].lower()
        supported = FigureCanvasBase.get_supported_filetypes()
        if extension and extension not in supported:
            raise ValueError(f"--plot {path}: cannot save a plot as .{extension}; use .png "
                             f"(or one of {', '.join('.' + name for name in sorted(supported))})")
    return plt


def plot_training(history, path):
    """Per-update loss and per-epoch train / validation loss, on a log scale, to `path`."""
    plt = require_matplotlib()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(history.column("loss"), linewidth=0.8)
    axes[0].set(title="loss per update", xlabel="update", yscale="log")
    epochs = [record["epoch"] for record in history.epochs]
    axes[1].plot(epochs, [record["loss"] for record in history.epochs], "o-", label="train")
    if history.epochs and "val_loss" in history.epochs[0]:
        axes[1].plot(epochs, [record["val_loss"] for record in history.epochs], "o-", label="validation")
    axes[1].set(title="loss per epoch", xlabel="epoch", yscale="log")
    axes[1].legend()
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)


def plot_forecast(actual, forecast, names, path, context=500):
    """The last `context` observed steps (T, O) and the forecast after them (N, O), to `path`."""
    plt = require_matplotlib()
    actual = actual[-context:]
    figure, axes = plt.subplots(len(names), 1, figsize=(11, 3 * len(names)), squeeze=False)
    past = np.arange(-len(actual), 0)
    future = np.arange(len(forecast))
    for column, (axis, name) in enumerate(zip(axes[:, 0], names)):
        axis.plot(past, actual[:, column], label="observed", linewidth=0.9)
        axis.plot(future, forecast[:, column], label="forecast", linewidth=1.2)
        axis.axvline(0, color="grey", linewidth=0.6)
        axis.set(title=name, xlabel="steps from the end of the data")
        axis.legend()
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)


def _save(figure, path):
    """figure to `path` through engine.files.atomic_write, in the format of its extension (PNG without one)."""
    extension = os.path.splitext(os.fspath(path))[1][1:].lower()
    with atomic_write(path) as file:
        figure.savefig(file, format=extension or "png", dpi=110)

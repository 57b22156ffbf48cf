"""Optional plots (matplotlib, the `plot` extra): training curves, forecast against actual and
backtest errors per horizon step."""
import contextlib
import os
import warnings

import numpy as np

from engine.files import OutputError, atomic_write


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


def plot_training(history, path, clip_norm=None):
    """Per-update loss and per-epoch train / validation loss, on a log scale, to `path`.

    With diagnostics (epoch records holding "grad_flow", engine/grad_flow.py) a second row
    adds the gradient flow: the top layer's relative norm |dL/dh_(c-k)| / |dL/dh_c| against
    the steps back k, one line per epoch, with the reach threshold; and the pre-clip
    gradient norm per update with `clip_norm` drawn and the clipped updates marked."""
    plt = require_matplotlib()
    flows = [record for record in history.epochs if record.get("grad_flow", {}).get("layers")]
    rows = 2 if flows else 1
    with _figure(plt, path, rows, 2, (11, 4 * rows)) as axes:
        axes[0, 0].plot(history.column("loss"), linewidth=0.8)
        axes[0, 0].set(title="loss per update", xlabel="update", yscale=_scale(history.column("loss")))
        epochs = [record["epoch"] for record in history.epochs]
        losses = [record[key] for record in history.epochs for key in ("loss", "val_loss") if key in record]
        axes[0, 1].plot(epochs, [record["loss"] for record in history.epochs], "o-", label="train")
        if history.epochs and "val_loss" in history.epochs[0]:
            axes[0, 1].plot(epochs, [record["val_loss"] for record in history.epochs], "o-", label="validation")
        axes[0, 1].set(title="loss per epoch", xlabel="epoch", yscale=_scale(losses))
        axes[0, 1].xaxis.get_major_locator().set_params(integer=True)
        axes[0, 1].legend()
        if flows:
            _plot_reach(axes[1, 0], flows, plt)
            _plot_grad_norms(axes[1, 1], history, clip_norm)


def _scale(values):
    """"log" when some value is positive and finite (all a log axis can show), else "linear"."""
    values = np.asarray(values, dtype=np.float64)
    return "log" if np.any(np.isfinite(values) & (values > 0)) else "linear"


def _plot_reach(axis, flows, plt):
    """The top layer's epoch profiles r_k against k, coloured from first to last epoch."""
    from engine.grad_flow import REACH_THRESHOLD

    colours = plt.get_cmap("viridis")(np.linspace(0, 1, len(flows)))
    for colour, record in zip(colours, flows):
        flow = record["grad_flow"]
        axis.plot(flow["layers"][-1]["profile"], color=colour, linewidth=1.2,
                  label=f"epoch {record['epoch']}: reach {flow['reach']}, {flow['verdict']}")
    axis.axhline(REACH_THRESHOLD, color="grey", linestyle="--", linewidth=0.8)
    axis.annotate("reach threshold", (0, REACH_THRESHOLD), textcoords="offset points", xytext=(2, 3),
                  fontsize=8, color="grey")
    origin = "first target" if flows[-1]["grad_flow"]["source"] == "overhang" else "probed loss"
    profiles = [value for record in flows for value in record["grad_flow"]["layers"][-1]["profile"]]
    axis.set(title="gradient flow (top layer): |dL/dh| back through time", yscale=_scale(profiles),
             xlabel=f"steps k before the {origin}", ylabel="|dL/dh| relative to k = 0")
    if len(flows) > 6:  # a legend for the first and last epochs only
        handles, labels = axis.get_legend_handles_labels()
        axis.legend([handles[0], handles[-1]], [labels[0], labels[-1]], fontsize=8)
    else:
        axis.legend(fontsize=8)


def _plot_grad_norms(axis, history, clip_norm):
    """Pre-clip gradient norm per update, the clip threshold and the clipped updates."""
    norms = history.column("grad_norm")
    axis.plot(norms, linewidth=0.6, color="tab:blue", label="pre-clip norm")
    if clip_norm is not None:
        axis.axhline(clip_norm, color="tab:red", linewidth=1.0, label=f"clip_norm {clip_norm:g}")
        clipped = np.flatnonzero(norms > clip_norm)
        axis.plot(clipped, norms[clipped], ".", color="tab:red", markersize=2,
                  label=f"clipped ({len(clipped)} of {len(norms)})")
    axis.set(title="gradient norm per update (before clipping)", xlabel="update", yscale=_scale(norms))
    axis.legend(fontsize=8)


def plot_forecast(actual, forecast, names, path, context=500):
    """The last `context` observed steps (T, O) and the forecast after them (N, O), to `path`."""
    plt = require_matplotlib()
    actual = actual[-context:]
    past = np.arange(-len(actual), 0)
    future = np.arange(len(forecast))
    with _figure(plt, path, len(names), 1, (11, 3 * len(names))) as axes:
        for column, (axis, name) in enumerate(zip(axes[:, 0], names)):
            axis.plot(past, actual[:, column], label="observed", linewidth=0.9)
            axis.plot(future, forecast[:, column], label="forecast", linewidth=1.2)
            axis.axvline(0, color="grey", linewidth=0.6)
            axis.set(title=name, xlabel="steps from the end of the data")
            axis.legend()


def plot_backtest_errors(path, steps, model_mae, naive_mae, title):
    """The backtest's MAE against the horizon step (steps 1..H), the model's beside the
    seasonal naive forecast's, to `path`. A NaN MAE (a step with nothing scored) is a gap."""
    steps, model_mae, naive_mae = (np.asarray(part, dtype=np.float64) for part in (steps, model_mae, naive_mae))
    if not steps.shape == model_mae.shape == naive_mae.shape or steps.ndim != 1:
        raise ValueError(f"steps, model_mae and naive_mae must be equal-length lists; got shapes "
                         f"{steps.shape}, {model_mae.shape} and {naive_mae.shape}")
    plt = require_matplotlib()
    with _figure(plt, path, 1, 1, (9, 4)) as axes:
        axis = axes[0, 0]
        axis.plot(steps, model_mae, "o-", label="model", linewidth=1.2, markersize=3)
        axis.plot(steps, naive_mae, "s--", label="seasonal naive", linewidth=1.0, markersize=3)
        axis.set(title=title, xlabel="horizon step", ylabel="MAE")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_ylim(bottom=0)
        axis.legend()


@contextlib.contextmanager
def _figure(plt, path, rows, columns, size):
    """The axes (rows, columns) of a new figure to draw on in the block; then laid out,
    saved to `path` and closed. matplotlib's warnings (scales, layout, overflow in its
    transforms) stay out of the command's output; values it cannot place on an axis (a
    span beyond the float64 range) are one clear error, and nothing is written."""
    figure, axes = plt.subplots(rows, columns, figsize=size, squeeze=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield axes
            figure.tight_layout()
            _save(figure, path)
    except OutputError:
        raise
    except (ValueError, OverflowError) as error:   # numpy's LinAlgError is a ValueError
        raise ValueError(f"cannot draw the plot {path}: matplotlib failed on these values "
                         f"({type(error).__name__}: {error}); the plot is not written") from None
    finally:
        plt.close(figure)


def _save(figure, path):
    """figure to `path` through engine.files.atomic_write, in the format of its extension (PNG without one)."""
    extension = os.path.splitext(os.fspath(path))[1][1:].lower()
    with atomic_write(path) as file:
        figure.savefig(file, format=extension or "png", dpi=110)

"""Progress of a sweep: one line per finished trial and, on a terminal, an overall bar."""
import math
import time


class SweepProgress:
    """Writes the objective (engine/sweep/objective.py) first, then a line per finished
    trial to `stream` (settings, mean +- spread of the score over seeds under the
    objective's label, or of the best validation loss of a trial stopped before it was
    scored, state, epochs, seconds); on a terminal the last line is a bar of trials done
    with the best score so far, redrawn after each trial."""

    def __init__(self, trials, stream, objective):
        self.trials, self.stream, self.objective = trials, stream, objective
        self.label = objective.label
        self.interactive = stream.isatty()
        self.done = 0
        self.started = time.perf_counter()

    def start(self, done):
        self.done = done
        self.stream.write(f"objective: {self.objective.describe()} (pruning on the validation loss)\n")
        if done:
            self.stream.write(f"resuming: {done} of {self.trials} trials already done\n")
        self._bar(None)

    def on_trial(self, record, best):
        self.done += 1
        settings = "  ".join(f"{name}={_value(value)}" for name, value in record["values"].items())
        rows = record["rows"]
        scored = not math.isnan(record["mean_score"])
        value, spread = (record["mean_score"], record["std_score"]) if scored else (record["mean_val_loss"],
                                                                                    record["std_val_loss"])
        text = "-" if math.isnan(value) else f"{value:.5g}" + (f" +- {spread:.2g}" if len(rows) > 1 else "")
        label = self.label if scored else "val_loss"
        epochs = max(row["epochs"] for row in rows)
        seconds = max(row["seconds"] for row in rows)
        line = (f"trial {record['trial'] + 1:>3} ({self.done}/{self.trials})  {settings}  {label} {text}  "
                f"{record['state']} after {epochs} epoch{'s' if epochs != 1 else ''}  {seconds:.1f}s")
        errors = {row["error"] for row in rows if row["error"]}
        if errors:
            line += f"  ({sorted(errors)[0]})"
        self.stream.write(("\r\x1b[K" if self.interactive else "") + line + "\n")
        self._bar(best)

    def finish(self):
        if self.interactive:
            self.stream.write("\n")
        self.stream.flush()

    def _bar(self, best):
        if self.interactive:
            filled = int(20 * self.done / max(self.trials, 1))
            best_text = "" if best is None else f"  best {self.label} {best['mean_score']:.5g}"
            self.stream.write(f"\r\x1b[K[{'#' * filled:<20}] {self.done}/{self.trials} trials  "
                              f"{time.perf_counter() - self.started:.0f}s{best_text}")
        self.stream.flush()


def _value(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)

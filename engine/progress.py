"""Progress of a training run on a terminal: a one-line bar with loss and steps per second."""
import sys
import time

from engine.grad_flow import describe as describe_grad_flow


class Progress:
    """Redraws one status line on `stream` at most `rate` times a second (a terminal),
    or writes one line per epoch (a pipe or file). Feed it the trainer's callbacks."""

    def __init__(self, stream=None, rate=10.0):
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.interval = 1.0 / rate
        self.epochs = self.epoch = self.updates_per_epoch = self.steps_per_update = 0
        self.update, self.loss = 0, float("nan")
        self.started = self.drawn = time.perf_counter()

    def on_start(self, info):
        """info: {"epochs", "done", "updates_per_epoch", "steps_per_update"} of the run, and
        "inputs" (a line on the model's inputs chosen from the data, shown first) if any."""
        if info.get("inputs"):
            self.stream.write(info["inputs"] + "\n")
        self.epochs, self.epoch = info["epochs"], info["done"]
        self.updates_per_epoch = max(info["updates_per_epoch"], 1)
        self.steps_per_update = info["steps_per_update"]
        self.started = time.perf_counter()

    def on_update(self, record):
        self.update += 1
        self.loss = record["loss"]
        now = time.perf_counter()
        if self.interactive and now - self.drawn >= self.interval:
            self.drawn = now
            self._draw(now)

    def on_epoch(self, record):
        self.epoch, self.update = record["epoch"], 0
        line = f"epoch {record['epoch']}/{self.epochs}  loss {record['loss']:.5g}"
        if "val_loss" in record:
            line += f"  val_loss {record['val_loss']:.5g}"
        line += f"  {record['seconds']:.2f}s"
        if "grad_flow" in record:
            line += f"  {describe_grad_flow(record['grad_flow'])}"
        self.stream.write(("\r\x1b[K" if self.interactive else "") + line + "\n")
        self.stream.flush()
        self.started = time.perf_counter()

    def _draw(self, now):
        fraction = min(self.update / self.updates_per_epoch, 1.0)
        bar = "#" * int(fraction * 20)
        rate = self.update * self.steps_per_update / max(now - self.started, 1e-9)
        self.stream.write(f"\r\x1b[Kepoch {self.epoch + 1}/{self.epochs} [{bar:<20}] "
                          f"loss {self.loss:.5g}  {rate:,.0f} steps/s")
        self.stream.flush()

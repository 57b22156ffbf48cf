"""The Trainer: truncated BPTT(k1, k2) over B parallel streams, clipping, optimizer steps,
streaming updates, divergence handling, early stopping and history (docs/training.md)."""
import copy
import time

import numpy as np

from engine.clip import clip_grad_norm, clip_grad_value
from engine.footprint import available_bytes, chunk_bytes, require, trainer_bytes
from engine.grad_flow import GradFlow
from engine.history import History
from engine.losses import counted, mean_loss
from engine.masks import draw_masks, has_rates
from engine.online import GRADIENTS, online_gradient
from engine.optim import make_optimizer, optimizer_from_config
from engine.plan_probe import candidates, fastest, plan_mode, probe_record, time_plans
from engine.schedules import make_schedule, schedule_from_config
from engine.shards import chunk_for
from engine.split import check_split
from engine.thread_plan import available_cores, model_plan_times, plan_for
from engine.validation import (as_inputs, as_resets, as_targets, check_choice, check_float, check_int,
                               check_loss, check_options_in_dtype)

ON_DIVERGENCE = ("raise", "skip")
HISTORY_UPDATES = 1000  # update records a Trainer keeps by default (the latest)


class TrainingDiverged(RuntimeError):
    """A loss or gradient turned non-finite; the model keeps its last good parameters.

    reason: what happened, without advice (the CLI gives its own, in option names)."""

    def __init__(self, reason):
        super().__init__(f"{reason} Lower the learning rate, clip gradients (clip_norm), "
                         "or pass on_divergence='skip'.")
        self.reason = reason


class Trainer:
    """Trains `model` with truncated BPTT(k1, k2) after Williams & Peng (1990).

    The stream is consumed k1 steps at a time; each update uses the gradient of the mean
    loss over the targets of those k1 steps, backpropagated through the last k2 steps
    (k2 >= k1, default k1; the state k2 steps back is a constant). k1=None: full BPTT,
    one update per sequence. The state is carried from chunk to chunk; `fit` resets it
    at each epoch, `partial_fit` only when asked.

    loss: "mse", "cross_entropy" (y: (T, B) classes), "gaussian" (the model outputs a
    mean and a raw scale per target: output_size = 2K for y (T, B, K)) or "quantile" (one
    output per target and level of `quantiles`, increasing levels in (0, 1), required for
    it and refused for the others: output_size = QK); engine.losses reads such outputs.

    optimizer: "sgd", "adam", "adamw", "rmsprop" or an engine.optim object; lr overrides
    its learning rate. schedule: None (constant), a name ("step", "cosine", ...) or an
    engine.schedules object. clip_norm / clip_value: torch's clip_grad_norm_ /
    clip_grad_value_, or None (the history records the norm before any clipping).
    on_divergence: "raise" stops with TrainingDiverged, "skip" drops the update and
    counts it (streams whose state overflowed restart from zeros at the next chunk).
    diagnostics: record the norm of dL/dh_t for every step of each update's window and
    every layer (History.updates[i]["dh_norms"]), and give each epoch record a
    "grad_flow" summary: reach, decay, clipped_fraction, max_grad_norm, verdict, per-layer
    detail (engine/grad_flow.py defines them; `self.grad_flow` accumulates them). The
    parameters are bit-identical with and without diagnostics.
    shards: split the B streams into this many shards trained in parallel threads
    (default: the thread plan's choice for the shape and core count, engine/thread_plan.py;
    `thread_plan` holds the plan of the longest window); results are bit-reproducible for a
    given count.
    plan: how the thread plan is chosen when neither shards nor split is given: "model"
    (the cost model's best), "auto" (the model's, but measured where it cannot tell: when
    another plan is modelled within 10% of its best, or other processes keep the machine
    busy, and the first fit or partial_fit call trains at least 600 updates, the best few
    plans are timed on its first window before the first update and the fastest kept, recorded in thread_plan with
    chosen_by "measured"; training is then exactly that of the chosen plan given
    explicitly) or "measure" (time them whenever there are two, however short the run);
    None reads the environment variable BPTT_PLAN (default "auto"). engine/plan_probe.py
    has the rules and the probe's cost. A trainer rebuilt with a recorded plan (a
    checkpoint) does not measure again, and keeps a measured plan.
    split: share each step of one shard of all B streams among this many threads, each
    owning H / split hidden units (engine/split.py; H must be a multiple of it). Like
    shards, an explicit choice; the two cannot both exceed 1. Given neither, the thread
    plan chooses between them.
    memory: None keeps every step's activations for the backward pass; "sqrt" keeps the
    state only every ~sqrt(window) steps and recomputes the rest (one more forward pass,
    memory ~sqrt(window)); an int is a byte budget of activation memory per shard.
    gradient: "bptt" (truncated BPTT as above), "rtrl" (exact real-time recurrent
    learning: each update's gradient reaches back through the whole history, no window;
    memory and time grow with state size x parameters) or "uoro" (an unbiased rank-one
    estimate of RTRL's gradient at about a forward pass's cost), engine/online.py. With
    rtrl/uoro an update comes every k1 steps (k1=None: one per sequence), their kernels
    run on `shards` threads (default: engine.online.online_plan's choice), and k2,
    memory, diagnostics and split do not apply (refused).
    seed: of the trainer's numpy Generator `rng`: UORO's random signs, and the masks of the
    model's dropout, recurrent_dropout and zoneout, drawn per update window (all B streams,
    then split among shards, blocks and recomputed segments alike; checkpoints keep its
    state, so a resumed run draws the same masks). Validation and evaluate use none.
    A bidirectional model (Model(bidirectional=True)) reads every step of a sequence at
    once: it trains on whole sequences only, with gradient "bptt" and k1=None (or k1 at
    least the length of the sequences given to fit); partial_fit, memory, split and
    diagnostics do not apply to it (refused); batch shards do.
    history_updates: keep the records of the last N updates in history.updates (default
    HISTORY_UPDATES = 1000, so a streaming loop's memory stays bounded; None keeps all, 0
    none). The counters step and skipped and the epoch records are exact regardless, and
    checkpoints store the records kept.
    """

    def __init__(self, model, loss="mse", optimizer="adam", lr=None, k1=50, k2=None,
                 clip_norm=1.0, clip_value=None, schedule=None, on_divergence="raise",
                 diagnostics=False, shards=None, memory=None, history_updates=HISTORY_UPDATES,
                 split=None, gradient="bptt", seed=0, quantiles=None, plan=None):
        self.model = model
        self.plan = plan_mode(plan)
        self.gradient = check_choice("gradient", gradient, GRADIENTS)
        if self.gradient != "bptt":
            _check_online_options(self.gradient, k2=k2, memory=memory, diagnostics=diagnostics, split=split)
            if has_rates(model):
                raise ValueError(f"dropout, recurrent_dropout and zoneout are not supported with "
                                 f"gradient={self.gradient!r} (only with 'bptt'); set them to 0")
        if model.bidirectional:
            _check_bidirectional_options(gradient=self.gradient, memory=memory, diagnostics=diagnostics,
                                         split=split)
        self.loss, self.quantiles = check_loss(loss, quantiles, model)
        self.k1 = None if k1 is None else check_int("k1", k1)
        self.seed = check_int("seed", seed, minimum=0)
        self.rng = np.random.default_rng(self.seed)
        if self.gradient != "bptt":
            self.k2 = None  # no truncation window
        else:
            self.k2 = self.k1 if k2 is None else check_int("k2", k2)
        if self.k1 is None and k2 is not None:
            raise ValueError("k2 needs k1: with k1=None (full BPTT) there is nothing to truncate")
        if self.k1 is not None and self.k2 is not None and self.k2 < self.k1:
            raise ValueError(f"k2 must be >= k1 (backprop at least over the chunk); got k1={k1}, k2={k2}")
        self.clip_norm = check_float("clip_norm", clip_norm, minimum=0, allow_none=True, strictly_greater=True)
        self.clip_value = check_float("clip_value", clip_value, minimum=0, allow_none=True, strictly_greater=True)
        self.on_divergence = check_choice("on_divergence", on_divergence, ON_DIVERGENCE)
        self.diagnostics = bool(diagnostics)
        self.shards = None if shards is None else check_int("shards", shards)
        self.split = None if split is None else check_split(model, split, self.shards)
        self.memory = memory if memory in (None, "sqrt") else check_int("memory", memory)
        self.grad_flow = (GradFlow(model, self.loss, self.k1, self.k2, self.clip_norm, self.shards, self.memory,
                                   self.split, self.quantiles) if self.diagnostics else None)
        self.history_updates = (None if history_updates is None
                                else check_int("history_updates", history_updates, minimum=0))
        self.optimizer = make_optimizer(optimizer, lr)
        check_options_in_dtype({"clip_norm": self.clip_norm, "clip_value": self.clip_value,
                                **self.optimizer.config}, model.dtype)
        self.schedule = make_schedule(schedule)
        require(trainer_bytes(model.params.nbytes, len(self.optimizer.buffer_names())),
                "the trainer's gradient and optimizer state")  # before allocating them
        self.optimizer_state = self.optimizer.init(model.params)
        self.grad = np.zeros_like(model.params)  # (P,) flat gradient, model.params' layout
        self._last_good = model.params.copy()  # params and optimizer state before a step
        self._last_good_state = {key: buffer.copy() for key, buffer in self.optimizer_state.items()}
        self.history = History()
        self.step = 0          # updates made
        self.epoch = 0         # epochs of fit completed
        self.skipped = 0       # updates dropped as non-finite (on_divergence="skip")
        self.best = None       # early stopping: {"loss", "epoch", "params"}
        self._online = None  # the rtrl/uoro gradient's carried influence (engine/online.py)
        self.reset_state()
        self._chunks = {}
        self.thread_plan = None  # JSON-able plan of the longest window built (engine/thread_plan.py)
        self._measured = None  # the measured plan's record (engine/plan_probe.py), for its batch size
        self._plan_settled = False  # whether the plan was measured, or found not to need it

    @classmethod
    def from_config(cls, model, config):
        """A trainer for `model` with the settings of `config` (see Trainer.config)."""
        settings = dict(config)
        thread_plan = settings.pop("thread_plan", None)
        optimizer = optimizer_from_config(settings.pop("optimizer"))
        schedule = schedule_from_config(settings.pop("schedule"))
        trainer = cls(model, optimizer=optimizer, schedule=schedule, **settings)
        trainer.thread_plan = thread_plan  # a record, replaced by the plan of a window as long or longer
        trainer._plan_settled = thread_plan is not None  # a resumed run is not measured again
        if thread_plan is not None and thread_plan.get("chosen_by") == "measured":
            trainer._measured = thread_plan  # and keeps the plan it measured
        return trainer

    @property
    def lr(self):
        """Learning rate of the next update, after the schedule."""
        return self.schedule(self.step, self.optimizer.lr)

    @property
    def config(self):
        """JSON-able settings, enough to rebuild the trainer around a model, and the
        thread plan of its longest window so far (a record: a rebuilt trainer chooses
        again for each window shape, unless `shards` or `split` fixes it)."""
        return dict(loss=self.loss, k1=self.k1, k2=self.k2, clip_norm=self.clip_norm,
                    clip_value=self.clip_value, on_divergence=self.on_divergence,
                    diagnostics=self.diagnostics, shards=self.shards, split=self.split, memory=self.memory,
                    optimizer=self.optimizer.config, schedule=self.schedule.config,
                    history_updates=self.history_updates, thread_plan=self.thread_plan, gradient=self.gradient,
                    seed=self.seed, quantiles=None if self.quantiles is None else list(self.quantiles))

    def reset_state(self, batch=None):
        """Forget the carried state and history; the next chunk starts from zeros."""
        self.state = None if batch is None else self.model.init_state(batch)
        self._history_x = None       # (n, B, I) inputs before the next chunk (k2 > k1)
        self._history_state = None   # state at the start of _history_x
        self._history_resets = None  # (n, B) resets of _history_x, or None
        if self._online is not None:
            self._online.zero()  # a zero state has no influence

    # ---------------------------------------------------------------- public training

    def fit(self, x, y, epochs=1, validation=None, patience=None, on_update=None,
            on_epoch=None, resets=None):
        """Train for `epochs` more epochs over x (T, B, I), y (T, B, O) or (T, B).

        Each epoch starts from a zero state. resets: optional (T, B) booleans, True where
        stream b starts a new series at step t: its state is zeroed there and no gradient
        crosses it (many series packed end to end in B streams). validation: optional
        (x_val, y_val), whose loss is computed after each epoch from a zero state. patience: stop when the
        validation loss (training loss without validation) has not improved for this
        many epochs, and restore the best parameters. on_update(record) / on_epoch(record)
        are called after each update / epoch. Returns the History."""
        x, y = self._check_data(x, y)
        if self.model.bidirectional and self.k1 is not None and self.k1 < x.shape[0]:
            raise ValueError(f"a bidirectional model trains on whole sequences: k1={self.k1} would cut the "
                             f"{x.shape[0]} steps of x into windows; use k1=None (full BPTT) or k1 >= {x.shape[0]}")
        if not _counts_targets(self.loss, y):  # else every epoch would end with loss nan, 0 updates
            raise ValueError("y has no target to learn from: every entry is missing (NaN or -1)")
        self._check_chunk_memory(x.shape[0], x.shape[1])
        resets = as_resets(resets, *x.shape[:2])
        epochs = check_int("epochs", epochs)
        patience = None if patience is None else check_int("patience", patience)
        if validation is not None:
            if not isinstance(validation, (tuple, list)) or len(validation) != 2:
                raise TypeError("validation must be a pair (x_val, y_val)")
            validation = self._check_data(*validation, name="validation")
        self._settle_plan(x, y, resets, epochs * self._windows(x.shape[0]))
        for _ in range(epochs):
            started = time.perf_counter()
            self.reset_state(x.shape[1])
            if self.grad_flow is not None:
                self.grad_flow.restart()
            losses = self._train_sequence(x, y, on_update, resets=resets)
            record = {"epoch": self.epoch + 1, "loss": _weighted_mean(losses),
                      "updates": len(losses), "seconds": time.perf_counter() - started}
            if validation is not None:
                record["val_loss"] = self.evaluate(*validation)
            if self.grad_flow is not None:
                record["grad_flow"] = self.grad_flow.summary(self.history.epochs[-1].get("grad_flow")
                                                             if self.history.epochs else None)
            self.epoch += 1
            self.history.epochs.append(record)
            stop = patience is not None and self._early_stopping(record, patience)
            if on_epoch is not None:
                on_epoch(record)
            if stop:
                break
        if patience is not None and self.best is not None:
            self.model.params[...] = self.best["params"]
        return self.history

    def partial_fit(self, x, y, reset=None, resets=None):
        """Streaming update: train on the next piece x (T, B, I), y of B streams, carrying
        the state (and, for k2 > k1, the last k2 - k1 inputs) from the previous call.

        resets: optional (T, B) booleans, True where stream b starts a new series at step
        t of this piece (see fit). reset: optional (B,) booleans, the shorthand for
        resets[0]: streams that start a new series with this piece. The carried inputs
        stay: a window reaching back into them stops, for a reset stream, at the reset.
        A piece of another number of streams than the carried state is an error: call
        reset_state() first to start afresh. Returns {"loss", "updates", "steps"}."""
        if self.model.bidirectional:
            raise ValueError("partial_fit does not apply to a bidirectional model: its reverse direction reads "
                             "each sequence from its end, which a stream does not have; use fit on whole sequences")
        x, y = self._check_data(x, y)
        T, B = x.shape[:2]
        resets = as_resets(resets, T, B)
        if reset is not None:
            if resets is not None:
                raise ValueError("pass reset (the shorthand for resets[0]) or resets, not both")
            resets = np.zeros((T, B), dtype=bool)
            resets[0] = _as_reset(reset, B)
        if self.state is None:
            self.reset_state(B)
        elif _batch_of(self.state) != B:
            raise ValueError(f"partial_fit: x has {B} streams but the carried state has "
                             f"{_batch_of(self.state)}; call reset_state() first to drop it and start afresh")
        self._check_chunk_memory(T + (0 if self._history_x is None else len(self._history_x)), B)
        self._settle_plan(x, y, resets, self._windows(T))
        losses = self._train_sequence(x, y, None, streaming=True, resets=resets)
        return {"loss": _weighted_mean(losses), "updates": len(losses), "steps": x.shape[0]}

    def evaluate(self, x, y, state=None, resets=None):
        """Mean loss of the model on x (T, B, I), y from `state` (zeros if None), with
        optional (T, B) resets (see fit)."""
        x, y = self._check_data(x, y, name="evaluate")
        y_hat, _ = self.model.forward(x, state, resets)
        return mean_loss(self.loss, y_hat, y, self.quantiles)

    # ---------------------------------------------------------------- the TBPTT loop

    def _train_sequence(self, x, y, on_update, streaming=False, resets=None):
        """Updates over x (T, B, I) continuing the carried state; returns [(loss, count)].

        Window of an update: [start, end) where [chunk_start, end) holds its k1 new
        steps and start = max(0, chunk_start - (k2 - k1)) reaches back into the inputs
        before them (the carried history, prepended here, when streaming). resets
        (T, B) or None: sliced with the window, the kernels cut it at each reset."""
        if self.gradient != "bptt":
            return self._train_online(x, y, on_update, resets)
        overhang = 0 if self.k1 is None else self.k2 - self.k1
        first = 0
        window_state = self.state
        if streaming and self._history_x is not None:
            first = len(self._history_x)
            x = np.concatenate([self._history_x, x])
            y = np.concatenate([_no_targets(y, first), y])
            resets = _join_resets(self._history_resets, resets, first, len(x) - first, x.shape[1])
            window_state = self._history_state
        T = x.shape[0]
        stride = T if self.k1 is None else self.k1
        losses = []
        start, chunk_start = 0, first
        while chunk_start < T:
            end = min(chunk_start + stride, T)
            chunk = self._chunk(end - start, x.shape[1])
            value, count = self._forward_backward(chunk, x, y, (start, end), window_state,
                                                  chunk_start - start, resets)
            if self.grad_flow is not None and count:
                self.grad_flow.measure(x[start:end], y[start:end], window_state, chunk_start - start,
                                       None if resets is None else resets[start:end])
            next_start = max(start, end - overhang)
            window_state = chunk.state_after(next_start - start)
            self.state = chunk.state_after(end - start)
            if count:
                record = self._update(value, chunk)
                if record is not None:
                    losses.append((value, count))
                    if on_update is not None:
                        on_update(record)
                elif not (_all_finite(self.state) and _all_finite(window_state)):
                    # Skipped because a stream's state overflowed: those streams restart
                    # from zeros and the next window starts after this chunk (replaying
                    # the overlap would overflow again).
                    self.state = _zero_non_finite_streams(self.state)
                    window_state, next_start = self.state, end
            start, chunk_start = next_start, end
        self._history_x = x[start:].copy() if overhang else None
        self._history_state = window_state if overhang else None
        self._history_resets = resets[start:].copy() if overhang and resets is not None else None
        return losses

    def _train_online(self, x, y, on_update, resets):
        """rtrl/uoro: an update every k1 steps of x (T, B, I) with the forward-mode gradient
        of the chunk's mean loss, the state and influence carried; returns [(loss, count)]."""
        T, B = x.shape[:2]
        stride = T if self.k1 is None else self.k1
        online = self._online_for(B, min(stride, T))
        losses = []
        for start in range(0, T, stride):
            end = min(start + stride, T)
            value, count = online.run(x[start:end], y[start:end], self.loss, self.state,
                                      None if resets is None else resets[start:end], self.quantiles)
            self.state = online.state_after(end - start)
            if not count:
                continue
            record = self._update(value, online)
            if record is not None:
                losses.append((value, count))
                if on_update is not None:
                    on_update(record)
            else:  # skipped: streams whose state or influence overflowed restart from zeros
                bad = _non_finite_streams(self.state) | online.non_finite_streams()
                self.state = _zero_streams(self.state, bad)
                online.zero_streams(bad)
        return losses

    def _online_for(self, B, steps):
        """The rtrl/uoro gradient object for B streams, made once: its memory and that of
        chunks of `steps` steps checked first (refused with the figure)."""
        if self._online is None or self._online.batch != B:
            self._online = None  # its buffers go before new ones are made
            self._online = online_gradient(self.gradient, self.model, B, self.grad, steps, self.rng, self.shards)
            self.thread_plan = self._online.plan
        return self._online

    def _forward_backward(self, chunk, x, y, window, state, first_step, resets=None):
        """Gradient of window [start, end) of x, y into self.grad through `chunk`; returns
        (loss, count). The one place the loop hands data to a chunk: the distributed
        trainer (engine/distributed) sends its workers the window's indices instead."""
        start, end = window
        return chunk.forward_backward(x[start:end], y[start:end], self.loss, state, first_step,
                                      **self._window_options(x, window, resets))

    def _window_options(self, x, window, resets, rng=None):
        """The keyword options of chunk.forward_backward for window [start, end): its
        resets, the quantiles, and the masks drawn for it from `rng` (default self.rng;
        each only when given or drawn); draws the masks, so call it once per window."""
        start, end = window
        options = {} if resets is None else {"resets": resets[start:end]}  # only those given
        if self.quantiles is not None:
            options["quantiles"] = self.quantiles
        rng = self.rng if rng is None else rng
        masks = draw_masks(self.model, end - start, x.shape[1], rng)  # None without rates
        if masks is not None:
            options["masks"] = masks
        return options

    def _update(self, loss, chunk):
        """Check, clip, step; returns the update's history record (None if skipped).

        The recorded norm is the raw gradient's, measured before any clipping (value
        clipping would hide an infinite entry). A step that makes the parameters
        non-finite is undone: parameters and optimizer state are restored."""
        if self.clip_value is None:  # one pass: a non-finite norm scales nothing
            norm, clipped = clip_grad_norm(self.grad, self.clip_norm)
        else:
            norm = clip_grad_norm(self.grad, None)[0]
        if not (np.isfinite(loss) and np.isfinite(norm)):
            return self._diverged(loss, norm)
        if self.clip_value is not None:  # clip_grad_value_, then clip_grad_norm_
            clipped = clip_grad_value(self.grad, self.clip_value)
            if self.clip_norm is not None:
                clipped = clip_grad_norm(self.grad, self.clip_norm)[1] or clipped
        lr = self.lr
        self._last_good[...] = self.model.params
        for key, buffer in self.optimizer_state.items():
            self._last_good_state[key][...] = buffer
        self.optimizer.step(self.model.params, self.grad, self.optimizer_state, lr)
        if not np.isfinite(self.model.params).all():
            self.model.params[...] = self._last_good
            for key, buffer in self._last_good_state.items():
                self.optimizer_state[key][...] = buffer
            return self._diverged(loss, norm, "the parameters after the optimizer step")
        self.step += 1
        record = {"step": self.step, "loss": float(loss), "grad_norm": float(norm),
                  "clipped": bool(clipped), "lr": float(lr)}
        if self.diagnostics:
            record["dh_norms"] = chunk.dh_norms()
            self.grad_flow.observe(record)
        self.history.append_update(record, self.history_updates)
        return record

    def _diverged(self, loss, norm, what=None):
        what = what or ("the loss" if not np.isfinite(loss) else "the gradient norm")
        if self.on_divergence == "raise":
            raise TrainingDiverged(f"training diverged at update {self.step + 1}: {what} is not finite "
                                   f"(loss {loss}, gradient norm {norm}); the last good parameters are kept.")
        self.skipped += 1
        return None

    # ---------------------------------------------------------------- helpers

    def _early_stopping(self, record, patience):
        """Track the best epoch; True when `patience` epochs passed without improvement."""
        loss = record.get("val_loss", record["loss"])
        if self.best is None or loss < self.best["loss"]:
            self.best = {"loss": loss, "epoch": record["epoch"], "params": self.model.params.copy()}
            return False
        return record["epoch"] - self.best["epoch"] >= patience

    def _check_chunk_memory(self, steps, B):
        """Before the buffers for the longest window over `steps` steps of B streams are made."""
        window = steps if self.k1 is None else min(self.k2 or self.k1, steps)  # k2 None: rtrl/uoro
        if self.gradient != "bptt":  # the chunk's forward caches and the influence, then made
            self._online_for(B, window)
            return
        if (window, B) in self._chunks:
            return
        require(self._chunk_bytes(self._plan_of(window, B), window, B),
                f"training on windows of {window} steps x {B} streams")

    def _chunk_bytes(self, plan, T, B):
        """Bytes of a chunk of T steps and B streams run by `plan`."""
        model = self.model
        return chunk_bytes(model.cell, model.input_size, model.hidden_size, model.output_size,
                           model.num_layers, T, B, plan["shards"], model.dtype.itemsize,
                           model.params.nbytes, self.memory, plan["split"],
                           (model.dropout > 0, model.recurrent_dropout > 0, model.zoneout > 0),
                           model.bidirectional, model.skip)

    def _windows(self, T):
        """Updates (windows) of one pass of _train_sequence over T steps."""
        return 1 if self.k1 is None else -(-T // self.k1)

    def _settle_plan(self, x, y, resets, updates):
        """Once, before the first update of x (T, B, I), y: when neither shards nor split
        fixes the plan and engine/plan_probe.py's rules (mode self.plan, `updates` the
        call's updates) ask for it, time its candidate plans on the first window of x and
        keep the fastest for B streams. Runs on a scratch gradient, from a zero state, with
        masks from a copy of self.rng: nothing the training reads is touched."""
        if self._plan_settled or self.gradient != "bptt" or self.shards is not None or self.split is not None:
            return
        self._plan_settled = True
        model, (T, B) = self.model, x.shape[:2]
        window = T if self.k1 is None else min(self.k2, T)
        chosen = candidates(self.plan, model_plan_times(model, window, B), updates, available_cores())
        if chosen is None:
            return
        plans, reason, load = chosen
        explicit = {plan: plan_for(model, window, B, plan[0], split=plan[1]) for plan in plans}
        available = available_bytes()
        if available is not None and sum(self._chunk_bytes(plan, window, B) for plan in explicit.values()) > available:
            return  # the candidates' buffers side by side do not fit: the model's plan, unmeasured
        scratch = np.zeros_like(self.grad)
        state = model.init_state(B)
        options = self._window_options(x, (0, window), resets, copy.deepcopy(self.rng))
        x_window, y_window = x[:window], y[:window]
        seconds = time_plans(lambda plan: chunk_for(model, window, B, explicit[plan], scratch, self.memory),
                             lambda chunk: chunk.forward_backward(x_window, y_window, self.loss, state, 0,
                                                                  **options), plans)
        self._measured = {**explicit[fastest(seconds, plans)], **probe_record(plans, seconds, reason, load, B)}

    def _plan_of(self, T, B):
        """The plan of windows of T steps of B streams: the measured one for its batch size,
        else shards/split or the model's (plan_for)."""
        measured = self._measured
        if measured is not None and measured["batch"] == B:
            return {**measured, **plan_for(self.model, T, B, measured["shards"], split=measured["split"]),
                    "chosen_by": "measured"}
        return plan_for(self.model, T, B, self.shards, split=self.split)

    def _chunk(self, T, B):
        """Buffers for a window of T steps of B streams, made once per shape."""
        if (T, B) not in self._chunks:
            plan = self._plan_of(T, B)
            if self.thread_plan is None or T >= self.thread_plan["steps"]:
                self.thread_plan = plan  # the longest window's: k2 steps once streaming
            self._chunks[T, B] = chunk_for(self.model, T, B, plan, self.grad, self.memory)
        return self._chunks[T, B]

    def _check_data(self, x, y, name=None):
        try:
            x = as_inputs(x, self.model)
            y = as_targets(y, self.loss, self.model, x.shape[0], x.shape[1], self.quantiles)
        except (ValueError, TypeError) as error:
            if name is None:
                raise
            raise type(error)(f"{name}: {error}") from None
        return x, y


def _check_online_options(gradient, **options):
    """Refuse, in one line, the options that apply to truncated BPTT only."""
    given = {"k2": "there is no truncation window", "memory": "nothing is stored for a backward pass",
             "diagnostics": "the gradient-flow report measures backpropagation",
             "split": "the streams are split by shards, not hidden blocks"}
    for name, reason in given.items():
        if options[name] not in (None, False):
            raise ValueError(f"{name} does not apply to gradient={gradient!r} ({reason}); leave it unset")


def _check_bidirectional_options(**options):
    """Refuse, in one line, what a bidirectional model does not run."""
    refused = {"gradient": (options["gradient"] != "bptt",
                            "forward-mode gradients run step by step, and the reverse direction starts at the end"),
               "memory": (options["memory"] is not None, "recomputation by segments is one-directional"),
               "split": (options["split"] not in (None, 1), "the hidden-block plan is one-directional; batch shards "
                                                            "run it"),
               "diagnostics": (bool(options["diagnostics"]), "the gradient-flow report measures one direction")}
    for name, (given, reason) in refused.items():
        if given:
            raise ValueError(f"{name}={options[name]!r} does not apply to a bidirectional model ({reason}); "
                             "leave it unset")


def _weighted_mean(losses):
    """Mean of update losses weighted by their target counts (nan when empty)."""
    if not losses:
        return float("nan")
    values, counts = np.array(losses).T
    return float(np.sum(values * counts) / np.sum(counts))


def _no_targets(y, steps):
    """Targets for `steps` history steps that must not count: NaN, or -1 for classes."""
    filler = np.full((steps,) + y.shape[1:], -1 if y.dtype.kind == "i" else np.nan, dtype=y.dtype)
    return filler


def _counts_targets(loss, y):
    """Whether y holds any target the loss counts: a finite value, or a class >= 0."""
    return bool(counted(loss, y).any())


def _as_reset(reset, B):
    """partial_fit's (B,) reset mask as booleans."""
    reset = np.asarray(reset)
    if reset.shape != (B,) or reset.dtype.kind not in "bi" or np.any((reset != 0) & (reset != 1)):
        raise ValueError(f"reset must be {B} booleans, one per stream; got {reset.dtype} array of shape {reset.shape}")
    return reset.astype(bool)


def _join_resets(history, resets, steps, T, B):
    """(steps + T, B): the resets of the `steps` carried history steps, then the piece's
    T steps; either may be None (no reset), and None when both are."""
    if history is None and resets is None:
        return None
    history = np.zeros((steps, B), bool) if history is None else history
    resets = np.zeros((T, B), bool) if resets is None else resets
    return np.concatenate([history, resets])


def _batch_of(state):
    return (state[0] if isinstance(state, tuple) else state).shape[1]


def _zero_non_finite_streams(state):
    """The state with every stream that holds a non-finite value (any layer) zeroed."""
    return _zero_streams(state, _non_finite_streams(state))


def _non_finite_streams(state):
    """(B,) booleans: the streams whose state holds a non-finite value (any layer)."""
    parts = state if isinstance(state, tuple) else (state,)
    bad = np.zeros(parts[0].shape[1], dtype=bool)
    for part in parts:
        bad |= ~np.isfinite(part).all(axis=(0, 2))
    return bad


def _zero_streams(state, streams):
    """The state with the streams where `streams` (B,) is True zeroed."""
    parts = state if isinstance(state, tuple) else (state,)
    parts = tuple(np.where(streams[None, :, None], 0, part).astype(part.dtype) for part in parts)
    return parts if isinstance(state, tuple) else parts[0]


def _all_finite(state):
    parts = state if isinstance(state, tuple) else (state,)
    return all(np.all(np.isfinite(part)) for part in parts)

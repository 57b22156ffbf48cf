"""Gradient flow through time, after Pascanu, Mikolov & Bengio (2013, "On the difficulty
of training recurrent neural networks"): how many steps back the gradient that flows
through the recurrence stays significant, per layer, summarised per epoch with a verdict.

The measure. For one update, let c be a step of its window that carries the loss L and
h_{c-k} the layer's hidden state k steps before it. The relative norm is

    r_k = |dL/dh_{c-k}| / |dL/dh_c|      (k = 0, 1, ..., span; r_0 = 1)

with |.| the Euclidean norm over all streams and hidden units of the layer. Before c
there is no loss, so dL/dh_{c-k} (k >= 1) is what reaches back through the recurrence
(for a lower layer: through its own recurrence and down from the layers above, whose
gradient there came through time too). Where it comes from:

- "overhang" (k2 > k1): c is the window's first target step; its k2 - k1 earlier steps
  carry no target, and their norms are the ones the kernels write anyway
  (diagnostics' dh_norms): span = k2 - k1, and the cost is a few NumPy operations.
  L is the update's loss (the mean over its k1 target steps), so r_0 holds the loss at
  c plus what flows back from the later steps.
- "probe" (k2 == k1, or full BPTT): there are no target-free steps, and the total norms
  mix fresh loss at every step with what comes through time, so their slope says
  nothing about reach. Instead, the first update after each summary and every
  PROBE_EVERY-th after it run one extra forward and backward over the same window, from
  the same state, at the same parameters, with the loss of the window's last target
  step c only: r_k is exactly Pascanu et al.'s |dL_c/dh_{c-k}| / |dL_c/dh_c|, span =
  the window length - 1. The probe has its own buffers and gradient, so training is
  unchanged (bit-identical parameters); it costs one more pass every PROBE_EVERY updates.

Per epoch, `profile` is the geometric mean of r_k over the updates measured (each k over
the updates whose window reaches that far; r_k below FLOOR counts as FLOOR). From it:
- reach: the largest k <= span with r_j >= REACH_THRESHOLD for every j <= k, i.e. how
  many steps back the gradient stays above 1% of its size at c. When it never falls
  below, reach = span (the window is the limit, not the cell) and "capped" is true.
- decay: the per-step factor, the geometric mean of r_{k+1} / r_k over the span,
  (r_span)^(1 / span): below 1 the gradient shrinks going back, above 1 it grows.

Verdict (of the top layer), in this order:
- "exploding": more than half the updates had a pre-clip gradient norm above
  clip_norm (clipping does the work), or the epoch's geometric-mean pre-clip gradient
  norm is more than GROWTH_FACTOR (10) times the previous epoch's (norms grow epoch over
  epoch), or its largest pre-clip norm is more than SPIKE_FACTOR (100) times that
  geometric mean (a spike: a few updates blew up, clipped or not);
- "vanishing": reach < span / VANISHING_FACTOR (a quarter of the span): the gradient
  fades long before the truncation, so the cell, not k2, limits what is learned;
- "healthy" otherwise (also when nothing could be measured: reach and decay are null).
"""
import math

import numpy as np

from engine.losses import counted
from engine.shards import chunk_for
from engine.thread_plan import plan_for

REACH_THRESHOLD = 0.01   # r_k below this no longer counts as reaching
VANISHING_FACTOR = 4     # vanishing: reach < span / VANISHING_FACTOR
CLIPPED_MAJORITY = 0.5   # exploding: more than this share of updates clipped
GROWTH_FACTOR = 10.0     # exploding: typical gradient norm grew this much over the last epoch
SPIKE_FACTOR = 100.0     # exploding: the largest norm this many times the typical one
PROBE_EVERY = 20         # probe source: one probe per this many updates
FLOOR = 1e-30            # relative norms are floored here before their logarithm


class GradFlow:
    """Accumulates the gradient flow of a trainer's updates; `summary()` condenses and
    restarts. The Trainer (diagnostics=True) feeds it: measure() after each window's
    forward-backward (before the parameters change), observe(record) after the update.

    model, loss, shards, memory, split, quantiles: as the trainer's (the probe runs the
    same chunks). k1, k2: the truncation (k1 None: full BPTT). clip_norm: the trainer's, or None."""

    def __init__(self, model, loss, k1, k2, clip_norm, shards=None, memory=None, split=None, quantiles=None):
        self.model, self.loss, self.quantiles = model, loss, quantiles
        self.clip_norm = clip_norm
        self.source = "overhang" if k1 is not None and k2 > k1 else "probe"
        self.shards, self.memory, self.split = shards, memory, split
        self._probe_grad = np.zeros_like(model.params) if self.source == "probe" else None
        self._probe_chunks = {}
        self._first_step = 0  # overhang: the first target step of the window just run
        self._probed = None   # probe: (L, c + 1) relative norms of the window just probed
        self.restart()

    def restart(self):
        """Forget what was accumulated (fit calls it at each epoch's start)."""
        L = self.model.num_layers
        self.updates = 0
        self.clipped = 0
        self.max_grad_norm = 0.0
        self._log_norm_sum = 0.0        # sum of log pre-clip norms (geometric mean)
        self._log_profile = np.zeros((L, 0))  # (L, K) sums of log10 r_k
        self._profile_count = np.zeros((L, 0), dtype=np.int64)  # (L, K) updates summed
        self._profiled = 0              # updates that contributed a profile

    # ---------------------------------------------------------------- feeding

    def measure(self, x, y, state, first_step, resets=None):
        """After the forward-backward over the window x (T, B, I), y from `state` with
        targets from step `first_step` and optional (T, B) resets, before the update: a
        probe, when due, runs here, at the parameters of that gradient (the overhang needs
        the first step only)."""
        self._first_step = first_step
        due = self.source == "probe" and self.updates % PROBE_EVERY == 0
        self._probed = self._probe(x, y, state, resets) if due else None

    def observe(self, record):
        """Count one update's record ({"grad_norm", "dh_norms" (L, T)}) and its profile."""
        norm = record["grad_norm"]
        self.updates += 1
        if self.clip_norm is not None and norm > self.clip_norm:
            self.clipped += 1
        self.max_grad_norm = max(self.max_grad_norm, norm)
        self._log_norm_sum += math.log(max(norm, FLOOR))
        if self.source == "overhang" and self._first_step > 0:
            self._add_profile(_relative(record["dh_norms"], self._first_step))
        elif self._probed is not None:
            self._add_profile(self._probed)
        self._first_step, self._probed = 0, None

    def _add_profile(self, relative):
        """relative: (L, K) r_k of one update, NaN where a layer's reference norm was 0."""
        L, K = relative.shape
        if K > self._log_profile.shape[1]:  # a longer window than any before: widen
            grow = K - self._log_profile.shape[1]
            self._log_profile = np.pad(self._log_profile, ((0, 0), (0, grow)))
            self._profile_count = np.pad(self._profile_count, ((0, 0), (0, grow)))
        valid = np.isfinite(relative)
        logs = np.log10(np.maximum(np.where(valid, relative, 1.0), FLOOR))  # 0 where not valid
        self._log_profile[:, :K] += logs
        self._profile_count[:, :K] += valid
        self._profiled += 1

    def _probe(self, x, y, state, resets):
        """(L, c + 1) relative norms back from the window's last target step c, from an
        extra forward-backward of that step's loss only, in buffers of its own."""
        steps = np.flatnonzero(counted(self.loss, y).reshape(len(y), -1).any(axis=1))
        if len(steps) == 0:
            return None
        last = steps[-1]
        probe_y = np.full_like(y, -1 if self.loss == "cross_entropy" else np.nan)
        probe_y[last] = y[last]
        chunk = self._probe_chunk(*x.shape[:2])
        chunk.forward_backward(x, probe_y, self.loss, state, last, resets, self.quantiles)
        return _relative(chunk.dh_norms(), last)

    def _probe_chunk(self, T, B):
        if (T, B) not in self._probe_chunks:
            plan = plan_for(self.model, T, B, self.shards, split=self.split)  # as the trainer's chunk
            self._probe_chunks[T, B] = chunk_for(self.model, T, B, plan, self._probe_grad, self.memory)
        return self._probe_chunks[T, B]

    # ---------------------------------------------------------------- summary

    def summary(self, previous=None):
        """The gradient flow of the updates since the last summary, then restart.

        previous: the last summary (for the growth rule), or None. Returns a JSON-able
        dict (no NaN or infinity): reach, decay, clipped_fraction, max_grad_norm and
        verdict of the top layer; source, span, updates, profiled, mean_grad_norm (the
        geometric mean of the pre-clip norms); layers: per layer {reach, decay, capped,
        profile} (profile: r_0 .. r_span, the epoch's geometric mean)."""
        layers = []
        counts = self._profile_count
        for k in range(self.model.num_layers):
            measured = int(np.count_nonzero(counts[k]))  # a prefix: every update sums k = 0..K
            profile = 10.0 ** (self._log_profile[k, :measured] / np.maximum(counts[k, :measured], 1))
            layers.append(_layer_summary(profile))
        top = layers[-1]
        span = len(top["profile"]) - 1 if top["profile"] else None
        mean_norm = math.exp(self._log_norm_sum / self.updates) if self.updates else None
        clipped = None if self.clip_norm is None or not self.updates else self.clipped / self.updates
        result = {"reach": top["reach"], "decay": top["decay"], "clipped_fraction": clipped,
                  "max_grad_norm": self.max_grad_norm if self.updates else None,
                  "verdict": None, "source": self.source, "span": span, "updates": self.updates,
                  "profiled": self._profiled, "mean_grad_norm": mean_norm, "layers": layers}
        result["verdict"] = verdict(result, previous)
        self.restart()
        return result


def verdict(summary, previous=None):
    """"exploding", "vanishing" or "healthy" for a summary (rules: the module docstring)."""
    clipped = summary["clipped_fraction"]
    if clipped is not None and clipped > CLIPPED_MAJORITY:
        return "exploding"
    typical, before = summary["mean_grad_norm"], (previous or {}).get("mean_grad_norm")
    if typical and before and typical > GROWTH_FACTOR * before:
        return "exploding"
    if typical and summary["max_grad_norm"] > SPIKE_FACTOR * typical:
        return "exploding"
    if summary["reach"] is not None and summary["reach"] * VANISHING_FACTOR < summary["span"]:
        return "vanishing"
    return "healthy"


def describe(summary):
    """One line for a progress display, e.g. 'reach 7/75 steps, decay 0.52/step, clipped
    3%, max |g| 2.1: vanishing'."""
    parts = []
    if summary["reach"] is not None:
        capped = "+" if summary["layers"][-1]["capped"] else ""
        parts.append(f"reach {summary['reach']}{capped}/{summary['span']} steps, decay {summary['decay']:.3g}/step")
    if summary["clipped_fraction"] is not None:
        parts.append(f"clipped {100 * summary['clipped_fraction']:.0f}%")
    if summary["max_grad_norm"] is not None:
        parts.append(f"max |g| {summary['max_grad_norm']:.3g}")
    return ", ".join(parts) + f": {summary['verdict']}"


def _relative(norms, reference):
    """(L, reference + 1) r_k = norms[:, reference - k] / norms[:, reference] from the
    (L, T) norms of one window; NaN rows where the reference norm is 0 or not finite."""
    back = np.asarray(norms, dtype=np.float64)[:, reference::-1]  # column k: step reference - k
    base = back[:, :1]
    usable = (base > 0) & (base < np.inf)  # (L, 1)
    relative = back / np.where(usable, base, 1.0)
    relative[~usable[:, 0]] = np.nan
    return relative


def _layer_summary(profile):
    """reach, decay, capped and the rounded profile of one layer's (span + 1,) profile."""
    if len(profile) < 2:
        return {"reach": None, "decay": None, "capped": False, "profile": [float(v) for v in profile]}
    span = len(profile) - 1
    below = np.flatnonzero(profile < REACH_THRESHOLD)
    reach = int(below[0]) - 1 if len(below) else span
    decay = float(profile[-1] / profile[0]) ** (1.0 / span)
    return {"reach": reach, "decay": _rounded(decay), "capped": not len(below),
            "profile": [_rounded(value) for value in profile]}


def _rounded(value):
    """A finite float with 4 significant digits (the records stay short and valid JSON)."""
    return float(f"{min(max(value, FLOOR), 1e300):.4g}")

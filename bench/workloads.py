"""One truncated-BPTT training step per implementation, on the same data and weights.

A workload holds a model, one chunk x (T, B, I), y (T, B, O) and the carried state;
`step()` makes one update on that chunk (forward, MSE loss, backward, global-norm
clipping, Adam), carries the final state to the next call and returns the loss.
Every implementation starts from the engine's initial weights, so the first step's
losses must agree. The peers (torch, jax) are optional: `available()` lists those
importable here, and their modules are imported only when asked for.
"""
import importlib
import importlib.util

import numpy as np

from bench.configs import DTYPE, OUTPUT_SIZE
from engine.bptt import backward_chunk, forward_chunk, state_after
from engine.clip import clip_grad_norm
from engine.model import Model
from engine.optim import make_optimizer
from engine.trainer import Trainer
from engine.workspace import Workspace

LR = 1e-3
CLIP_NORM = 1.0
SEED = 0
PEERS = {"torch": "bench.torch_step", "jax": "bench.jax_step"}  # impl -> module with Workload
PEER_PACKAGES = {"torch": ("torch",), "jax": ("jax", "optax")}


def make_data(config, T=None, seed=SEED):
    """x (T, B, I) standard normal inputs and y (T, B, O) noisy targets, float32."""
    T = config.chunk if T is None else T
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, config.batch, config.input_size), dtype=np.float32)
    y = np.tanh(x[..., :1]) + 0.1 * rng.standard_normal((T, config.batch, OUTPUT_SIZE), dtype=np.float32)
    return x, y


def available():
    """Implementations that can run here: the engine, then each peer whose packages import."""
    peers = [impl for impl, packages in PEER_PACKAGES.items()
             if all(importlib.util.find_spec(name) is not None for name in packages)]
    return ["engine"] + peers


def make_workload(impl, config, T=None):
    """The workload of `impl` ("engine", "torch", "jax") for `config`, on make_data's chunk
    of T steps (default config.chunk), starting from the engine's initial weights."""
    x, y = make_data(config, T)
    if impl == "engine":
        return EngineWorkload(config, x, y)
    module = importlib.import_module(PEERS[impl])
    return module.Workload(config, x, y, Model(*config.model_args(), dtype=DTYPE, seed=SEED).state_dict())


class EngineWorkload:
    """The engine's step: Trainer.partial_fit, and the same step taken apart into phases
    (forward, backward incl. loss, clip, optimize) with the engine's building blocks on
    the same model, for timing each phase alone. The phases run the whole batch in the
    calling thread; the Trainer may split the batch into shards run in parallel."""

    impl = "engine"
    phases = ("forward", "backward", "clip", "optimize")

    def __init__(self, config, x, y):
        self.x, self.y = x, y
        T, B = x.shape[:2]
        self.model = Model(*config.model_args(), dtype=DTYPE, seed=SEED)
        self.trainer = Trainer(self.model, loss="mse", optimizer="adam", lr=LR, k1=T,
                               clip_norm=CLIP_NORM, schedule="constant")
        self.workspace = Workspace(self.model, T, B)
        self.state = self.model.init_state(B)
        self.grad = np.zeros_like(self.model.params)  # (P,) flat gradient of the phase path
        self.grad_views = self.model.layout.views(self.grad)
        self.optimizer = make_optimizer("adam", LR)
        self.optimizer_state = self.optimizer.init(self.model.params)

    def step(self):
        return self.trainer.partial_fit(self.x, self.y)["loss"]

    def forward(self):
        """Fill the workspace from the carried state, then carry the final state."""
        forward_chunk(self.model, self.workspace, self.x, self.state)
        self.state = state_after(self.model, self.workspace, self.workspace.shape[0])

    def backward(self):
        """MSE loss and its gradient into self.grad; returns the loss."""
        loss, _ = backward_chunk(self.model, self.workspace, self.x, self.y, "mse", self.grad_views)
        return loss

    def clip(self):
        """Global-norm clipping of self.grad in place; returns the norm before."""
        return clip_grad_norm(self.grad, CLIP_NORM)[0]

    def optimize(self):
        self.optimizer.step(self.model.params, self.grad, self.optimizer_state, LR)

    def phase_step(self):
        """The whole step through the phase functions; returns the loss."""
        self.forward()
        loss = self.backward()
        self.clip()
        self.optimize()
        return loss

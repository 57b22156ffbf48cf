"""The training step in JAX: each cell written in jax.numpy and scanned over time with
lax.scan (input projection hoisted out of the scan), a linear head, MSE, and
optax.chain(clip_by_global_norm, adam); the whole step is one jax.jit-compiled function.
Truncation: the carried state is an argument, so no gradient flows into it."""
import jax
import jax.numpy as jnp
import optax
from jax import lax

from bench.workloads import CLIP_NORM, LR


def lstm_cell(carry, projected, weight_hh, bias_hh):
    """carry (h, c) each (B, H); projected (B, 4H) = W_ih x + b_ih; gate order i, f, g, o."""
    h, c = carry
    i, f, g, o = jnp.split(projected + h @ weight_hh.T + bias_hh, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h


def gru_cell(h, projected, weight_hh, bias_hh):
    """h (B, H); projected (B, 3H); gate order r, z, n; n = tanh(x_n + r * (W_hn h + b_hn))."""
    x_r, x_z, x_n = jnp.split(projected, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(h @ weight_hh.T + bias_hh, 3, axis=-1)
    r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
    h = (1 - z) * jnp.tanh(x_n + r * h_n) + z * h
    return h, h


def rnn_cell(h, projected, weight_hh, bias_hh):
    """h (B, H); projected (B, H); tanh nonlinearity."""
    h = jnp.tanh(projected + h @ weight_hh.T + bias_hh)
    return h, h


CELLS = {"lstm": lstm_cell, "gru": gru_cell, "rnn": rnn_cell}


def mse_loss(params, state, x, y, cell, num_layers):
    """Mean squared error of the model on x (T, B, I), y (T, B, O) from `state` (one carry
    per layer); returns (loss, final state)."""
    layer_input, final = x, []
    for k in range(num_layers):
        projected = layer_input @ params[f"weight_ih_l{k}"].T + params[f"bias_ih_l{k}"]  # (T, B, GH)
        weight_hh, bias_hh = params[f"weight_hh_l{k}"], params[f"bias_hh_l{k}"]
        carry, layer_input = lax.scan(lambda c, p: cell(c, p, weight_hh, bias_hh), state[k], projected)
        final.append(carry)
    y_hat = layer_input @ params["head.weight"].T + params["head.bias"]
    return jnp.mean((y_hat - y) ** 2), tuple(final)


class Workload:
    impl = "jax"

    def __init__(self, config, x, y, state_dict):
        self.params = {name: jnp.asarray(value) for name, value in state_dict.items()}
        self.optimizer = optax.chain(optax.clip_by_global_norm(CLIP_NORM), optax.adam(LR))
        self.optimizer_state = self.optimizer.init(self.params)
        parts = 2 if config.cell == "lstm" else 1  # (h, c) or h, each (B, H), zeros
        carries = [tuple(jnp.zeros((config.batch, config.hidden_size), jnp.float32) for _ in range(parts))
                   for _ in range(config.num_layers)]
        self.state = tuple(carry if parts == 2 else carry[0] for carry in carries)
        self.x, self.y = jnp.asarray(x), jnp.asarray(y)
        cell, num_layers = CELLS[config.cell], config.num_layers

        def train_step(params, optimizer_state, state, x, y):
            (loss, state), grads = jax.value_and_grad(mse_loss, has_aux=True)(
                params, state, x, y, cell, num_layers)
            updates, optimizer_state = self.optimizer.update(grads, optimizer_state, params)
            return optax.apply_updates(params, updates), optimizer_state, state, loss

        self.train_step = jax.jit(train_step, donate_argnums=(0, 1, 2))

    def step(self):
        self.params, self.optimizer_state, self.state, loss = self.train_step(
            self.params, self.optimizer_state, self.state, self.x, self.y)
        return float(loss)  # waits for the result, like the other implementations

"""The standard benchmark configurations (docs/performance.md), their FLOPs and the
minimum activation memory the backward pass needs."""
from dataclasses import asdict, dataclass

from engine.parameters import GATES

DTYPE = "float32"
DTYPE_BYTES = 4
OUTPUT_SIZE = 1  # every configuration regresses one value per step (MSE)

# Values stored per step, stream and layer, in units of H (what backward needs):
# LSTM the activated gates (4H), c and h; GRU the gates (3H), h and W_hn h + b_hn; RNN h.
STORED_PER_STEP = {"lstm": 4 + 1 + 1, "gru": 3 + 1 + 1, "rnn": 1}


@dataclass(frozen=True)
class Config:
    name: str
    cell: str
    input_size: int    # I
    hidden_size: int   # H
    batch: int         # B, parallel streams
    chunk: int         # T of one truncated-BPTT update (k1 = k2 = chunk)
    num_layers: int    # L

    @property
    def steps_per_update(self):
        """Trained timesteps x streams of one training step."""
        return self.chunk * self.batch

    def flops_per_step(self):
        """FLOPs per trained timestep and stream: 6*G*H*(I_k+H) summed over the layers
        (forward 2, backward 4 multiply-adds per weight; the head is left out)."""
        G, H = GATES[self.cell], self.hidden_size
        return sum(6 * G * H * (self._layer_input(k) + H) for k in range(self.num_layers))

    def min_activation_bytes(self, T=None):
        """Bytes backward needs for T steps (default: one chunk), over all layers."""
        T = self.chunk if T is None else T
        per_step = STORED_PER_STEP[self.cell] * self.hidden_size * self.batch * self.num_layers
        return T * per_step * DTYPE_BYTES

    def model_args(self):
        """Positional arguments of engine.Model."""
        return (self.cell, self.input_size, self.hidden_size, OUTPUT_SIZE, self.num_layers)

    def as_dict(self):
        return asdict(self)

    def _layer_input(self, k):
        return self.input_size if k == 0 else self.hidden_size


def _standard():
    rows = [  # name, cell, I, H, B, chunk, L
        ("single", "lstm", 1, 64, 1, 50, 1),
        ("tiny", "lstm", 1, 32, 16, 100, 1),
        ("small", "lstm", 8, 64, 32, 100, 1),
        ("medium", "lstm", 32, 256, 64, 100, 1),
        ("large", "lstm", 256, 512, 64, 50, 1),
        ("deep", "lstm", 8, 128, 32, 100, 2),
    ]
    small_medium = [row for row in rows if row[0] in ("small", "medium")]
    for cell in ("gru", "rnn"):  # gru-small, gru-medium, rnn-small, rnn-medium
        rows += [(f"{cell}-{row[0]}", cell) + row[2:] for row in small_medium]
    return {row[0]: Config(*row) for row in rows}


CONFIGS = _standard()


def get_config(name):
    """The standard configuration called `name` (ValueError naming the choices)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown benchmark configuration {name!r}; choose from {', '.join(CONFIGS)}")
    return CONFIGS[name]

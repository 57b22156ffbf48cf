"""The recurrent model: PyTorch-compatible parameters in one flat buffer."""
import numpy as np

from engine.footprint import model_bytes, require
from engine.initializers import INITS, initialize
from engine.parameters import GATES, ParameterLayout
from engine.validation import (DTYPES, as_inputs, as_numeric_array, as_resets, as_state, check_bool,
                               check_choice, check_float, check_in_dtype, check_int, check_rate)

CELLS = tuple(GATES)
NONLINEARITIES = ("tanh", "relu")
INFERENCE_CHUNK = 1024  # steps per forward call in inference, to bound memory on long series


class Model:
    """A stack of `num_layers` recurrent layers (`cell` "rnn", "lstm" or "gru") and a
    linear head from the top layer's hidden state to `output_size` outputs per step.

    Parameters follow torch.nn.RNN/LSTM/GRU and nn.Linear exactly (names, shapes, gate
    order), so state dicts move between the two without conversion.

    init: "default" PyTorch's U(-1/sqrt(H), 1/sqrt(H)) for everything; "xavier" Glorot
    uniform per gate block and zero biases; "orthogonal" as xavier but orthogonal
    recurrent gate blocks; "identity" as xavier but identity recurrent gate blocks (IRNN,
    for ReLU RNNs). forget_bias: the LSTM forget gate's total bias (bias_ih + bias_hh),
    applied after `init` when non-zero. seed: the initialisation is a function of it.

    bidirectional: each layer runs a second, reverse direction over the time-reversed
    sequence (torch's bidirectional=True: parameters weight_ih_l{k}_reverse, ...; the
    output at step t is [h_forward(t), h_reverse(t)] (2H), which layer k + 1 and the head
    read; the state is (num_layers * 2, B, H), direction-major within each layer as
    torch's h0). Such a model sees every step of a sequence at once: it trains on whole
    sequences only (Trainer k1=None or k1 >= the sequence's length; docs/training.md,
    "Bidirectional layers").

    Regularisation, applied in training only (docs/training.md, "Regularisation"), each
    rate in [0, 1): dropout on each layer's output but the top one's, as
    torch.nn.LSTM(dropout=); recurrent_dropout on h_{t-1} in the recurrent product, one
    mask per stream and update window (variational, Gal & Ghahramani 2016); zoneout (LSTM
    and GRU): each unit keeps its previous value with probability p (Krueger et al.
    2017), at inference h_t = p h_{t-1} + (1 - p) h~_t (and c likewise for the LSTM).
    Bidirectional: dropout on each layer's 2H output but the top one's; recurrent dropout
    and zoneout in each direction, each with its own masks.

    skip: a linear path from the inputs to the outputs beside the recurrent one, y_t =
    head(h_t) + V x_t, with V the parameter "skip.weight" (O, I) trained jointly (as
    LSTNet's autoregressive component, Lai et al. 2018): a linear map from the inputs
    need not be learned through the recurrent layers. V starts at zero, so a new model
    computes what the same model without it does. `bptt train` gives it to models whose
    data has known inputs (docs/forecasting.md, "The linear path"); a Model is made
    without it unless asked.
    """

    def __init__(self, cell="lstm", input_size=1, hidden_size=64, output_size=1, num_layers=1,
                 nonlinearity="tanh", dtype="float32", init="default", forget_bias=0.0, seed=0,
                 bidirectional=False, dropout=0.0, recurrent_dropout=0.0, zoneout=0.0, skip=False):
        self.cell = check_choice("cell", cell, CELLS)
        self.input_size = check_int("input_size", input_size)
        self.hidden_size = check_int("hidden_size", hidden_size)
        self.output_size = check_int("output_size", output_size)
        self.num_layers = check_int("num_layers", num_layers)
        self.nonlinearity = check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
        if cell != "rnn" and nonlinearity != "tanh":
            raise ValueError(f"nonlinearity applies to cell 'rnn' only; got {nonlinearity!r} for {cell!r}")
        self.dtype = np.dtype(check_choice("dtype", str(np.dtype(dtype)) if _is_dtype(dtype) else dtype,
                                           DTYPES))
        self.init = check_choice("init", init, INITS)
        self.forget_bias = check_in_dtype("forget_bias", check_float("forget_bias", forget_bias), self.dtype)
        if self.forget_bias != 0.0 and cell != "lstm":
            raise ValueError(f"forget_bias applies to cell 'lstm' only; got {forget_bias} for {cell!r}")
        self.seed = check_int("seed", seed, minimum=0)
        self.bidirectional = check_bool("bidirectional", bidirectional)
        self.directions = 2 if self.bidirectional else 1
        self.skip = check_bool("skip", skip)
        self.dropout, self.recurrent_dropout, self.zoneout = (
            check_rate(name, value) for name, value in
            (("dropout", dropout), ("recurrent_dropout", recurrent_dropout), ("zoneout", zoneout)))
        if self.zoneout > 0 and cell == "rnn":
            raise ValueError("zoneout applies to cells 'lstm' and 'gru' only (a unit of an RNN has no gate to "
                             "keep its state); got cell 'rnn'")
        self.gates = GATES[cell]
        self.relu = nonlinearity == "relu"
        require(model_bytes(cell, self.input_size, self.hidden_size, self.output_size, self.num_layers,
                            self.dtype.itemsize, self.bidirectional, self.skip),
                f"a model of {self.num_layers} layer(s) x {self.hidden_size} hidden")  # before allocating
        self.layout = ParameterLayout(cell, self.input_size, self.hidden_size,
                                      self.output_size, self.num_layers, self.bidirectional, self.skip)
        self.params = np.zeros(self.layout.size, dtype=self.dtype)  # (P,) flat parameters
        self.views = self.layout.views(self.params)
        rng = np.random.default_rng(self.seed)
        initialize(self.views, self.layout, self.gates, self.hidden_size, self.init,
                   self.forget_bias, cell == "lstm", rng)

    @property
    def config(self):
        """The constructor arguments, enough to rebuild the model (checkpoints store it)."""
        return dict(cell=self.cell, input_size=self.input_size, hidden_size=self.hidden_size,
                    output_size=self.output_size, num_layers=self.num_layers,
                    nonlinearity=self.nonlinearity, dtype=str(self.dtype), init=self.init,
                    forget_bias=self.forget_bias, seed=self.seed, bidirectional=self.bidirectional,
                    dropout=self.dropout, recurrent_dropout=self.recurrent_dropout, zoneout=self.zoneout,
                    skip=self.skip)

    @property
    def num_parameters(self):
        return self.layout.size

    def layer_parameters(self, k, reverse=False):
        """(weight_ih, weight_hh, bias_ih, bias_hh) views of layer k (reverse: of its
        reverse direction)."""
        return tuple(self.views[name] for name in self.layout.layer_names(k, reverse))

    def state_dict(self):
        """Copies of the parameters keyed by PyTorch's names (weight_ih_l0, ..., head.weight;
        skip.weight last when the model has the linear path)."""
        return {name: view.copy() for name, view in self.views.items()}

    def load_state_dict(self, state_dict):
        """Copy parameters in from `state_dict` (every name, exact shapes; cast to dtype)."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict of arrays; got {type(state_dict).__name__}")
        missing = [name for name in self.views if name not in state_dict]
        unexpected = [name for name in state_dict if name not in self.views]
        if missing or unexpected:
            raise ValueError(f"state_dict does not match the model: missing {missing}, unexpected {unexpected}")
        arrays = {}
        for name, view in self.views.items():
            array = as_numeric_array(f"state_dict[{name!r}]", _to_numpy(state_dict[name]))
            if array.shape != view.shape:
                raise ValueError(f"state_dict[{name!r}] must have shape {view.shape}; got {array.shape}")
            if not np.all(np.isfinite(array.astype(self.dtype))):
                raise ValueError(f"state_dict[{name!r}] must be finite in {self.dtype}")
            arrays[name] = array
        for name, array in arrays.items():  # all checked before anything is changed
            self.views[name][...] = array

    def init_state(self, batch):
        """Zero state for `batch` streams: h (L*D, B, H), for LSTM the pair (h, c) (D = 2
        directions when bidirectional, else 1)."""
        batch = check_int("batch", batch)
        shape = (self.num_layers * self.directions, batch, self.hidden_size)
        if self.cell == "lstm":
            return np.zeros(shape, self.dtype), np.zeros(shape, self.dtype)
        return np.zeros(shape, self.dtype)

    def forward(self, x, state=None, resets=None):
        """Outputs y_hat (T, B, O) for inputs x (T, B, I) from `state` (zeros if None),
        and the final state. resets: optional (T, B) booleans, True where stream b starts
        a new series at step t (its state entering step t is zero). Runs in chunks of
        INFERENCE_CHUNK steps, so memory stays bounded on long series; a bidirectional
        model runs x in one piece (its reverse direction starts at the last step, from the
        reverse rows of `state`), and its final state is torch's h_n: the forward rows
        after the last step, the reverse rows after the first."""
        from engine.bptt import forward_chunk, state_after
        from engine.workspace import Workspace

        x = as_inputs(x, self)
        T, B, _ = x.shape
        state = as_state(state, self, B)
        resets = as_resets(resets, T, B)
        y_hat = np.empty((T, B, self.output_size), dtype=self.dtype)
        workspace = None
        piece = T if self.bidirectional else INFERENCE_CHUNK
        for start in range(0, T, piece):
            chunk = x[start:start + piece]
            if workspace is None or workspace.shape[0] != len(chunk):
                workspace = Workspace(self, len(chunk), B, training=False)
            forward_chunk(self, workspace, chunk, state,
                          None if resets is None else resets[start:start + len(chunk)])
            y_hat[start:start + len(chunk)] = workspace.y_hat
            state = state_after(self, workspace, len(chunk))
        return y_hat, state

    def __repr__(self):
        settings = ", ".join(f"{key}={value!r}" for key, value in self.config.items())
        return f"Model({settings})"


def _is_dtype(value):
    if value is None:  # np.dtype(None) would silently mean float64
        return False
    try:
        np.dtype(value)
        return True
    except TypeError:
        return False


def _to_numpy(value):
    """Accept torch tensors too (anything with .detach().cpu().numpy()) without importing torch."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return value

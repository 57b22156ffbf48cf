"""Parameter initialisers; each fills a model's named views in place from one RNG."""
import numpy as np

INITS = ("default", "xavier", "orthogonal", "identity")


def initialize(views, layout, cell_gates, hidden_size, init, forget_bias, is_lstm, rng):
    """Fill `views` (name -> array) according to `init`; see Model for the presets. The
    linear path's skip.weight, when present, is zero under every preset (and draws nothing
    from rng, so the other parameters are those of the same model without it)."""
    for name, view in views.items():
        if name == "skip.weight":
            view[...] = 0
            continue
        # PyTorch's defaults: U(-1/sqrt(H), 1/sqrt(H)) for RNN layers, U(-1/sqrt(fan_in), ..)
        # for nn.Linear(fan_in, O) (fan_in = H, or 2H after bidirectional layers).
        fan_in = views["head.weight"].shape[1] if name.startswith("head.") else hidden_size
        bound = 1.0 / np.sqrt(fan_in)
        view[...] = rng.uniform(-bound, bound, size=view.shape)
    if init != "default":
        for names in layout.direction_names():
            weight_ih, weight_hh, bias_ih, bias_hh = (views[n] for n in names)
            for gate in range(cell_gates):
                rows = slice(gate * hidden_size, (gate + 1) * hidden_size)
                weight_ih[rows] = _xavier_uniform(weight_ih[rows].shape, rng)
                weight_hh[rows] = _recurrent_block(init, hidden_size, rng)
            bias_ih[...] = 0
            bias_hh[...] = 0
        views["head.weight"][...] = _xavier_uniform(views["head.weight"].shape, rng)
        views["head.bias"][...] = 0
    if is_lstm and forget_bias != 0.0:
        # The effective forget-gate bias is bias_ih + bias_hh: put it all in bias_ih.
        for _, _, bias_ih, bias_hh in layout.direction_names():
            views[bias_ih][hidden_size:2 * hidden_size] = forget_bias
            views[bias_hh][hidden_size:2 * hidden_size] = 0


def _xavier_uniform(shape, rng):
    fan_out, fan_in = shape
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def _recurrent_block(init, hidden_size, rng):
    """One (H, H) gate block of weight_hh."""
    if init == "xavier":
        return _xavier_uniform((hidden_size, hidden_size), rng)
    if init == "orthogonal":
        q, r = np.linalg.qr(rng.standard_normal((hidden_size, hidden_size)))
        return q * np.sign(np.diag(r))  # sign fix makes the draw uniform (Haar)
    return np.eye(hidden_size)  # "identity": IRNN (Le et al. 2015)

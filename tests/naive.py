"""A plain NumPy reference for every cell, forward and backward (no Numba).

Slow and obvious on purpose: one Python loop over time, the layers inside it, PyTorch's
formulation written out gate by gate, and the backward pass derived by hand from those
formulas (each backward line quotes the forward line it differentiates). Computes in
float64 whatever the inputs' dtype.

params: a dict keyed like Model.state_dict(): weight_ih_l{k} (G*H, I_k),
weight_hh_l{k} (G*H, H), bias_ih_l{k}, bias_hh_l{k} (G*H,), head.weight (O, H),
head.bias (O,) (bidirectional_forward: also the *_reverse entries, head.weight (O, 2H)). State: h (L, B, H); for "lstm" the pair (h, c). resets: optional (T, B)
booleans, True where stream b starts a new series at step t: the state entering step t
is replaced by zeros (a constant, so no gradient flows back past it).

masks: optional training masks, given as arrays (anything with the fields of
engine.masks.ChunkMasks, None for an option not used): drop (L-1, T, B, H) multiplies
layer k's output where layer k + 1 reads it; keep_prev (L, B, H) multiplies h_{t-1} where
W_hh reads it (the GRU's interpolation with z reads it unmasked); zone_h, zone_c
(L, T, B, H): h_t = m h_{t-1} + (1 - m) h~_t with m = zone_h (the state entering the step,
zero at a reset), and the LSTM's c likewise with zone_c; h~_t = o tanh(c~_t) of the
candidate c~_t = f c_{t-1} + i g.
"""
import numpy as np


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def num_layers(params):
    k = 0
    while f"weight_ih_l{k}" in params:
        k += 1
    return k


def layer_params(params, k, suffix=""):
    """Layer k's four parameters; suffix "_reverse": its reverse direction's."""
    return tuple(np.asarray(params[f"{kind}_l{k}{suffix}"], dtype=np.float64)
                 for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


# --- one step of one layer: forward returns the new state and what backward needs ---

def rnn_step(x, h, W_ih, W_hh, b_ih, b_hh, relu):
    """x (B, I), h (B, H) -> h' (B, H)."""
    a = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh
    h_new = np.maximum(a, 0.0) if relu else np.tanh(a)
    return h_new, dict(x=x, h=h, a=a, h_new=h_new)


def rnn_step_backward(dh_new, cache, W_ih, W_hh, relu):
    """dL/dh' (B, H) -> dict of dx, dh and the step's parameter gradients."""
    # h' = relu(a): dh'/da = [a > 0];  h' = tanh(a): dh'/da = 1 - h'^2
    da = dh_new * (cache["a"] > 0) if relu else dh_new * (1.0 - cache["h_new"] ** 2)
    # a = x W_ih^T + b_ih + h W_hh^T + b_hh
    return dict(dx=da @ W_ih, dh=da @ W_hh, weight_ih=da.T @ cache["x"],
                weight_hh=da.T @ cache["h"], bias_ih=da.sum(0), bias_hh=da.sum(0))


def lstm_step(x, h, c, W_ih, W_hh, b_ih, b_hh):
    """x (B, I), h, c (B, H) -> h', c' (B, H). Gate order i, f, g, o."""
    a = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh
    a_i, a_f, a_g, a_o = np.split(a, 4, axis=1)
    i, f, g, o = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g), sigmoid(a_o)
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    return h_new, c_new, dict(x=x, h=h, c=c, i=i, f=f, g=g, o=o, c_new=c_new)


def lstm_step_backward(dh_new, dc_new, cache, W_ih, W_hh):
    """dL/dh', dL/dc' (B, H) -> dict of dx, dh, dc and the step's parameter gradients."""
    i, f, g, o, c = cache["i"], cache["f"], cache["g"], cache["o"], cache["c"]
    tanh_c = np.tanh(cache["c_new"])
    # h' = o * tanh(c')
    do = dh_new * tanh_c
    dc_total = dc_new + dh_new * o * (1.0 - tanh_c ** 2)
    # c' = f * c + i * g
    di, df, dg, dc = dc_total * g, dc_total * c, dc_total * i, dc_total * f
    # i, f, o = sigmoid(a_.), g = tanh(a_g)
    da = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g ** 2), do * o * (1 - o)],
                        axis=1)
    # a = x W_ih^T + b_ih + h W_hh^T + b_hh
    return dict(dx=da @ W_ih, dh=da @ W_hh, dc=dc, weight_ih=da.T @ cache["x"],
                weight_hh=da.T @ cache["h"], bias_ih=da.sum(0), bias_hh=da.sum(0))


def gru_step(x, h, W_ih, W_hh, b_ih, b_hh, h_rec=None):
    """x (B, I), h (B, H) -> h' (B, H). Gate order r, z, n. h_rec: what W_hh reads
    (recurrent dropout's masked h; default h)."""
    h_rec = h if h_rec is None else h_rec
    x_r, x_z, x_n = np.split(x @ W_ih.T + b_ih, 3, axis=1)
    h_r, h_z, h_n = np.split(h_rec @ W_hh.T + b_hh, 3, axis=1)
    r = sigmoid(x_r + h_r)
    z = sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * h_n)
    h_new = (1 - z) * n + z * h
    return h_new, dict(x=x, h=h, h_rec=h_rec, r=r, z=z, n=n, h_n=h_n)


def gru_step_backward(dh_new, cache, W_ih, W_hh, keep=None):
    """dL/dh' (B, H) -> dict of dx, dh and the step's parameter gradients. keep: recurrent
    dropout's mask (B, H) of h_rec = h * keep, or None."""
    r, z, n, h, h_n = cache["r"], cache["z"], cache["n"], cache["h"], cache["h_n"]
    # h' = (1 - z) * n + z * h
    dn = dh_new * (1 - z)
    dz = dh_new * (h - n)
    dh_direct = dh_new * z
    # n = tanh(x_n + r * h_n)
    da_n = dn * (1 - n ** 2)
    dr = da_n * h_n
    dh_n = da_n * r
    # r = sigmoid(x_r + h_r), z = sigmoid(x_z + h_z)
    da_r = dr * r * (1 - r)
    da_z = dz * z * (1 - z)
    # [x_r, x_z, x_n] = x W_ih^T + b_ih;  [h_r, h_z, h_n] = h W_hh^T + b_hh
    dx_side = np.concatenate([da_r, da_z, da_n], axis=1)
    dh_side = np.concatenate([da_r, da_z, dh_n], axis=1)
    # h_rec = h * keep
    dh_rec = dh_side @ W_hh if keep is None else (dh_side @ W_hh) * keep
    return dict(dx=dx_side @ W_ih, dh=dh_rec + dh_direct,
                weight_ih=dx_side.T @ cache["x"], weight_hh=dh_side.T @ cache["h_rec"],
                bias_ih=dx_side.sum(0), bias_hh=dh_side.sum(0))


# --- the whole model ---

def _initial_state(cell, params, state, B):
    L = num_layers(params)
    H = np.asarray(params["weight_hh_l0"]).shape[1]
    if state is None:
        return [np.zeros((B, H)) for _ in range(L)], [np.zeros((B, H)) for _ in range(L)]
    if cell == "lstm":
        h0, c0 = state
        return ([np.array(h0[k], dtype=np.float64) for k in range(L)],
                [np.array(c0[k], dtype=np.float64) for k in range(L)])
    return [np.array(state[k], dtype=np.float64) for k in range(L)], [None] * L


def _masks(masks):
    """(drop, keep_prev, zone_h, zone_c) of `masks`, each None when not given."""
    return tuple(None if masks is None else getattr(masks, name, None)
                 for name in ("drop", "keep_prev", "zone_h", "zone_c"))


def run(params, x, cell, state=None, nonlinearity="tanh", resets=None, masks=None):
    """Forward over x (T, B, I). Returns y_hat (T, B, O), the final state, the
    per-step caches caches[t][k] and the top layer's outputs h_top (T, B, H)."""
    drop, keep_prev, zone_h, zone_c = _masks(masks)
    x = np.asarray(x, dtype=np.float64)
    T, B, _ = x.shape
    L = num_layers(params)
    relu = nonlinearity == "relu"
    h, c = _initial_state(cell, params, state, B)
    W_head = np.asarray(params["head.weight"], dtype=np.float64)
    b_head = np.asarray(params["head.bias"], dtype=np.float64)
    caches, h_top, y_hat = [], [], []
    for t in range(T):
        layer_input = x[t]
        step_caches = []
        for k in range(L):
            W_ih, W_hh, b_ih, b_hh = layer_params(params, k)
            if resets is not None:  # a new series: the state entering step t is zero
                h[k] = np.where(resets[t][:, None], 0.0, h[k])
                if cell == "lstm":
                    c[k] = np.where(resets[t][:, None], 0.0, c[k])
            h_prev, c_prev = h[k], c[k]
            h_rec = h_prev if keep_prev is None else h_prev * keep_prev[k]  # what W_hh reads
            if cell == "lstm":
                h[k], c[k], cache = lstm_step(layer_input, h_rec, c_prev, W_ih, W_hh, b_ih, b_hh)
            elif cell == "gru":
                h[k], cache = gru_step(layer_input, h_prev, W_ih, W_hh, b_ih, b_hh, h_rec)
            else:
                h[k], cache = rnn_step(layer_input, h_rec, W_ih, W_hh, b_ih, b_hh, relu)
            if zone_h is not None:  # h_t = m h_{t-1} + (1 - m) h~_t; c likewise
                h[k] = zone_h[k, t] * h_prev + (1 - zone_h[k, t]) * h[k]
                if cell == "lstm":
                    c[k] = zone_c[k, t] * c_prev + (1 - zone_c[k, t]) * c[k]
            step_caches.append(cache)
            layer_input = h[k]
            if drop is not None and k < L - 1:  # what layer k + 1 reads
                layer_input = h[k] * drop[k, t]
        caches.append(step_caches)
        h_top.append(layer_input)
        y_hat.append(layer_input @ W_head.T + b_head)  # y = h W^T + b
    final = (np.stack(h), np.stack(c)) if cell == "lstm" else np.stack(h)
    return np.stack(y_hat), final, caches, np.stack(h_top)


def forward(params, x, cell, state=None, nonlinearity="tanh", resets=None, masks=None):
    """y_hat (T, B, O) and the final state."""
    y_hat, final, _, _ = run(params, x, cell, state, nonlinearity, resets, masks)
    return y_hat, final


def bidirectional_forward(params, x, cell, state=None, nonlinearity="tanh", resets=None, masks=None):
    """y_hat (T, B, O) and the final state (2L, B, H) of a bidirectional model (params with
    the *_reverse entries too; state rows 2k, 2k + 1: layer k's forward and reverse
    directions, torch's h0). Layer by layer: the forward direction steps t = 0..T-1, the
    reverse one t = T-1..0, each from its own initial state; a reset at step t (a new
    series) zeroes the forward state entering t and the reverse state entering t - 1
    (the one coming from t). Layer k + 1 and the head read [h_forward(t), h_reverse(t)].
    masks: as run's, with one entry per layer and direction (index 2k + direction; drop's
    2(L-1) entries are the two halves of layer k's 2H output), all in time order t."""
    drop, keep_prev, zone_h, zone_c = _masks(masks)
    x = np.asarray(x, dtype=np.float64)
    T, B, _ = x.shape
    L = num_layers(params)
    H = np.asarray(params["weight_hh_l0"]).shape[1]
    relu = nonlinearity == "relu"
    if state is None:
        h0, c0 = np.zeros((2 * L, B, H)), np.zeros((2 * L, B, H))
    else:
        h0, c0 = (np.asarray(part, dtype=np.float64) for part in (state if cell == "lstm" else (state, state)))
    finals_h, finals_c = [], []
    layer_input = x
    for k in range(L):
        halves = []
        for direction, suffix in enumerate(("", "_reverse")):
            W_ih, W_hh, b_ih, b_hh = layer_params(params, k, suffix)
            index = 2 * k + direction
            h, c = h0[index], c0[index]
            out = np.zeros((T, B, H))
            for t in (range(T) if direction == 0 else range(T - 1, -1, -1)):
                crossed = t if direction == 0 else t + 1  # the step whose reset cuts the state entering t
                if resets is not None and crossed < T:
                    h = np.where(resets[crossed][:, None], 0.0, h)
                    c = np.where(resets[crossed][:, None], 0.0, c)
                h_prev, c_prev = h, c
                h_rec = h_prev if keep_prev is None else h_prev * keep_prev[index]  # what W_hh reads
                if cell == "lstm":
                    h, c, _ = lstm_step(layer_input[t], h_rec, c_prev, W_ih, W_hh, b_ih, b_hh)
                elif cell == "gru":
                    h, _ = gru_step(layer_input[t], h_prev, W_ih, W_hh, b_ih, b_hh, h_rec)
                else:
                    h, _ = rnn_step(layer_input[t], h_rec, W_ih, W_hh, b_ih, b_hh, relu)
                if zone_h is not None:  # h_t = m h_{t-1} + (1 - m) h~_t; c likewise
                    h = zone_h[index, t] * h_prev + (1 - zone_h[index, t]) * h
                    if cell == "lstm":
                        c = zone_c[index, t] * c_prev + (1 - zone_c[index, t]) * c
                out[t] = h
            if drop is not None and k < L - 1:  # what layer k + 1 reads
                out = out * drop[index]
            halves.append(out)
            finals_h.append(h)
            finals_c.append(c)
        layer_input = np.concatenate(halves, axis=2)  # (T, B, 2H)
    W_head = np.asarray(params["head.weight"], dtype=np.float64)
    y_hat = layer_input @ W_head.T + np.asarray(params["head.bias"], dtype=np.float64)
    final = (np.stack(finals_h), np.stack(finals_c)) if cell == "lstm" else np.stack(finals_h)
    return y_hat, final


def rnn_preactivations(params, x, state=None, nonlinearity="tanh"):
    """All RNN pre-activations a (every step, layer, stream, unit) as one flat array."""
    _, _, caches, _ = run(params, x, "rnn", state, nonlinearity)
    return np.concatenate([cache["a"].ravel() for step in caches for cache in step])


def loss_value_and_dy(loss, y_hat, y, quantiles=None):
    """Mean loss over the counted targets and dL/dy_hat (T, B, O).

    mse: y (T, B, O), NaN entries are missing. cross_entropy: y (T, B) classes, -1 ignored.
    gaussian, quantile: y (T, B, K), NaN missing, y_hat (T, B, P*K) in P blocks of K."""
    if loss == "gaussian":
        return _gaussian(y_hat, y)
    if loss == "quantile":
        return _pinball(y_hat, y, quantiles)
    if loss == "mse":
        y = np.asarray(y, dtype=np.float64)
        counted = np.isfinite(y)
        count = counted.sum()
        error = np.where(counted, y_hat - np.where(counted, y, 0.0), 0.0)
        # L = sum(error^2) / count
        return (error ** 2).sum() / count, 2.0 * error / count
    y = np.asarray(y)
    T, B, O = y_hat.shape
    count = (y >= 0).sum()
    total = 0.0
    dy = np.zeros_like(y_hat)
    for t in range(T):
        for b in range(B):
            target = y[t, b]
            if target < 0:
                continue
            logits = y_hat[t, b]
            shifted = logits - logits.max()
            log_sum_exp = logits.max() + np.log(np.exp(shifted).sum())
            # L_tb = log(sum_k exp(logit_k)) - logit_target
            total += log_sum_exp - logits[target]
            dy[t, b] = np.exp(logits - log_sum_exp)
            dy[t, b, target] -= 1.0
    return total / count, dy / count


def _gaussian(y_hat, y):
    """Mean 0.5 * (log sigma^2 + (y - mu)^2 / sigma^2) over the finite targets, written
    out: mu = block 0, sigma = log(1 + exp(r)) + 1e-3 of r = block 1."""
    K = y.shape[-1]
    mu, r = y_hat[..., :K], y_hat[..., K:]
    sigma = np.log(1 + np.exp(r)) + 1e-3
    mask = np.isfinite(y)
    n = mask.sum()
    nll = 0.5 * (np.log(sigma ** 2) + (y - mu) ** 2 / sigma ** 2)
    d_mu = np.where(mask, (mu - y) / sigma ** 2, 0) / n
    d_sigma = np.where(mask, 1 / sigma - (y - mu) ** 2 / sigma ** 3, 0) / n
    return nll[mask].mean(), np.concatenate([d_mu, d_sigma * np.exp(r) / (1 + np.exp(r))], axis=-1)


def _pinball(y_hat, y, levels):
    """Mean of max(q (y - f), (q - 1) (y - f)) over the finite targets and the levels
    (f: block j for level j), and dL/dy_hat with the subgradient of q - 1{y < f}."""
    T, B, K = y.shape
    total, count = 0.0, 0
    grad = np.zeros_like(y_hat)
    for t, b, k in np.ndindex(T, B, K):
        if np.isnan(y[t, b, k]):
            continue
        count += 1
        for j, q in enumerate(levels):
            error = y[t, b, k] - y_hat[t, b, j * K + k]
            total += max(q * error, (q - 1) * error)
            grad[t, b, j * K + k] = (1.0 if y[t, b, k] < y_hat[t, b, j * K + k] else 0.0) - q
    return total / (len(levels) * count), grad / (len(levels) * count)


def loss_and_grad(params, x, y, cell, loss="mse", state=None, nonlinearity="tanh", resets=None, quantiles=None,
                  masks=None):
    """Loss and gradients of full BPTT over x (T, B, I); grads keyed like params plus
    "h_0" (and "c_0" for lstm), the gradients with respect to the initial state."""
    relu = nonlinearity == "relu"
    drop, keep_prev, zone_h, zone_c = _masks(masks)
    y_hat, _, caches, h_top = run(params, x, cell, state, nonlinearity, resets, masks)
    value, dy = loss_value_and_dy(loss, y_hat, y, quantiles)
    T, B, _ = y_hat.shape
    L = num_layers(params)
    W_head = np.asarray(params["head.weight"], dtype=np.float64)
    grads = {name: np.zeros(np.shape(p)) for name, p in params.items()}
    # y_t = h_top_t W^T + b
    for t in range(T):
        grads["head.weight"] += dy[t].T @ h_top[t]
        grads["head.bias"] += dy[t].sum(0)
    H = W_head.shape[1]
    dh_next = [np.zeros((B, H)) for _ in range(L)]  # dL/dh_t carried back through time
    dc_next = [np.zeros((B, H)) for _ in range(L)]
    for t in range(T - 1, -1, -1):
        dh_from_above = dy[t] @ W_head
        for k in range(L - 1, -1, -1):
            W_ih, W_hh, _, _ = layer_params(params, k)
            if drop is not None and k < L - 1:  # layer k + 1 read h * drop
                dh_from_above = dh_from_above * drop[k, t]
            dh = dh_from_above + dh_next[k]
            dc = dc_next[k]
            carry_h = carry_c = 0.0
            if zone_h is not None:  # h_t = m h_{t-1} + (1 - m) h~_t; c likewise
                carry_h, dh = zone_h[k, t] * dh, (1 - zone_h[k, t]) * dh
                if cell == "lstm":
                    carry_c, dc = zone_c[k, t] * dc, (1 - zone_c[k, t]) * dc
            keep = None if keep_prev is None else keep_prev[k]
            cache = caches[t][k]
            if cell == "lstm":
                step = lstm_step_backward(dh, dc, cache, W_ih, W_hh)
                dc_next[k] = step["dc"] + carry_c
            elif cell == "gru":
                step = gru_step_backward(dh, cache, W_ih, W_hh, keep)
            else:
                step = rnn_step_backward(dh, cache, W_ih, W_hh, relu)
            # h_rec = h * keep (the GRU's backward applied it to its recurrent part)
            dh_next[k] = (step["dh"] if keep is None or cell == "gru" else step["dh"] * keep) + carry_h
            if resets is not None:  # h_{t-1}, c_{t-1} of a reset stream were replaced by zeros
                dh_next[k] = np.where(resets[t][:, None], 0.0, dh_next[k])
                if cell == "lstm":
                    dc_next[k] = np.where(resets[t][:, None], 0.0, dc_next[k])
            dh_from_above = step["dx"]
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                grads[f"{kind}_l{k}"] += step[kind]
    grads["h_0"] = np.stack(dh_next)
    if cell == "lstm":
        grads["c_0"] = np.stack(dc_next)
    return float(value), grads


# --- real-time recurrent learning: the influence d state / d params carried forward ---

def parameter_offsets(params):
    """{name: (offset, shape)} of every parameter in the order of `params` (PyTorch's:
    the layers' four, then the head's two), and the total count P."""
    offsets, offset = {}, 0
    for name, value in params.items():
        offsets[name] = (offset, np.shape(value))
        offset += int(np.prod(np.shape(value)))
    return offsets, offset


def _immediate(B, offsets, P, k, x_in, h_prev, rows):
    """d a / d theta with the layer's inputs held fixed, split by side: (B, rows, P) for
    the input side a_x = x W_ih^T + b_ih and for the hidden side a_h = h W_hh^T + b_hh."""
    d_x, d_h = np.zeros((B, rows, P)), np.zeros((B, rows, P))
    for side, name, rows_in in ((d_x, f"weight_ih_l{k}", x_in), (d_h, f"weight_hh_l{k}", h_prev)):
        offset, (_, width) = offsets[name]
        for j in range(rows):  # a_j = sum_i W[j, i] v_i: d a_j / d W[j, i] = v_i
            side[:, j, offset + j * width:offset + (j + 1) * width] = rows_in
    for side, name in ((d_x, f"bias_ih_l{k}"), (d_h, f"bias_hh_l{k}")):
        offset, _ = offsets[name]
        for j in range(rows):
            side[:, j, offset + j] = 1.0
    return d_x, d_h


def rtrl_gradient(params, x, y, cell, loss="mse", nonlinearity="tanh", resets=None):
    """Loss and gradient of the mean loss over x (T, B, I) from a zero state by forward-mode
    RTRL: per stream the influence M_k = d (h_k, c_k) / d theta (B, H, P) of every layer,
    carried step by step (M_t = J_t M_{t-1} + I_t, written out per gate), and the loss
    gradient accumulated per step as dL_t/dh_top M_top plus the head's direct gradient.
    A reset zeroes the state and its influence. Returns (loss, grads keyed like params)."""
    x = np.asarray(x, dtype=np.float64)
    T, B, _ = x.shape
    L = num_layers(params)
    relu = nonlinearity == "relu"
    H = np.asarray(params["weight_hh_l0"]).shape[1]
    offsets, P = parameter_offsets(params)
    W_head = np.asarray(params["head.weight"], dtype=np.float64)
    y_hat, _, caches, h_top = run(params, x, cell, None, nonlinearity, resets)
    value, dy = loss_value_and_dy(loss, y_hat, y)  # dy: the per-step gradient of the mean
    flat = np.zeros(P)
    M_h = [np.zeros((B, H, P)) for _ in range(L)]
    M_c = [np.zeros((B, H, P)) for _ in range(L)]
    for t in range(T):
        for k in range(L):
            W_ih, W_hh, _, _ = layer_params(params, k)
            cache = caches[t][k]
            if resets is not None:  # the state entering step t is a constant zero
                M_h[k] = np.where(resets[t][:, None, None], 0.0, M_h[k])
                M_c[k] = np.where(resets[t][:, None, None], 0.0, M_c[k])
            # a = a_x + a_h; d a_x = W_ih d x_in + immediate, d a_h = W_hh d h_prev + immediate
            d_x, d_h = _immediate(B, offsets, P, k, cache["x"], cache["h"], W_hh.shape[0])
            d_h += np.einsum("gh,bhp->bgp", W_hh, M_h[k])
            if k > 0:
                d_x += np.einsum("gi,bip->bgp", W_ih, M_h[k - 1])
            if cell == "rnn":
                # h' = act(a)
                slope = (cache["a"] > 0).astype(float) if relu else 1.0 - cache["h_new"] ** 2
                M_h[k] = slope[:, :, None] * (d_x + d_h)
            elif cell == "lstm":
                d_a = d_x + d_h
                d_i, d_f, d_g, d_o = np.split(d_a, 4, axis=1)
                i, f, g, o, c = (cache[name][:, :, None] for name in ("i", "f", "g", "o", "c"))
                tanh_c = np.tanh(cache["c_new"])[:, :, None]
                # c' = f c + i g;  i, f, o = sigmoid(a_.), g = tanh(a_g)
                M_c[k] = (f * M_c[k] + c * f * (1 - f) * d_f + g * i * (1 - i) * d_i
                          + i * (1 - g ** 2) * d_g)
                # h' = o tanh(c')
                M_h[k] = tanh_c * o * (1 - o) * d_o + o * (1 - tanh_c ** 2) * M_c[k]
            else:
                r, z, n, h_n, h = (cache[name][:, :, None] for name in ("r", "z", "n", "h_n", "h"))
                dx_r, dx_z, dx_n = np.split(d_x, 3, axis=1)
                dh_r, dh_z, dh_n = np.split(d_h, 3, axis=1)
                # r, z = sigmoid(x_. + h_.);  n = tanh(x_n + r h_n)
                d_r = r * (1 - r) * (dx_r + dh_r)
                d_z = z * (1 - z) * (dx_z + dh_z)
                d_n = (1 - n ** 2) * (dx_n + r * dh_n + h_n * d_r)
                # h' = (1 - z) n + z h
                M_h[k] = (1 - z) * d_n + (h - n) * d_z + z * M_h[k]
        # L_t depends on theta through h_top (y = h_top W^T + b) and directly through the head
        flat += np.einsum("bh,bhp->p", dy[t] @ W_head, M_h[L - 1])
        offset, _ = offsets["head.weight"]
        flat[offset:offset + W_head.size] += (dy[t].T @ h_top[t]).ravel()
        offset, _ = offsets["head.bias"]
        flat[offset:offset + W_head.shape[0]] += dy[t].sum(0)
    grads = {name: flat[offset:offset + int(np.prod(shape))].reshape(shape)
             for name, (offset, shape) in offsets.items()}
    return float(value), grads

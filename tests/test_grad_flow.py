"""Gradient flow (engine/grad_flow.py): the definitions of reach, decay and the verdict;
both sources of the relative norms against a NumPy backward (the overhang steps of a
k2 > k1 window, and the probe when k2 = k1); training bit-identical with and without
diagnostics; and, through the `bptt` command, the issue's cases: a tanh RNN reaches less
far back than an LSTM with --forget-bias 3, an exploding ReLU RNN is reported as such,
advice, the checkpoint and `bptt info`, and the plot."""
import json
import struct

import numpy as np
import pytest
from click.testing import CliRunner

import engine
from cli import main
from engine.grad_flow import PROBE_EVERY, REACH_THRESHOLD, GradFlow, verdict
from test_tbptt import brute_force, brute_force_dh_norms, chunk_ends, make_problem, mask_first, sgd

ROUNDING = 2e-3  # profiles are stored with 4 significant digits


def summary_of(norms_per_update, first_step, grad_norms=None, clip_norm=1.0, previous=None):
    """GradFlow's summary of updates whose windows left these (L, T) norms (overhang source)."""
    flow = GradFlow(engine.Model("rnn", 1, 4, 1, num_layers=np.shape(norms_per_update[0])[0]),
                    "mse", k1=2, k2=10, clip_norm=clip_norm)
    for index, norms in enumerate(norms_per_update):
        flow.measure(None, None, None, first_step)
        flow.observe({"grad_norm": 0.5 if grad_norms is None else grad_norms[index], "dh_norms": norms})
    return flow.summary(previous)


def json_strict(value):
    """json.dumps that refuses NaN and infinity, as a strict JSON reader would."""
    return json.dumps(value, allow_nan=False)


# --------------------------------------------------------------------------- definitions

def test_reach_and_decay_of_a_geometric_decay():
    """r_k = 0.5^k: it stays >= 1% for k <= 6 (0.5^6 = 0.016, 0.5^7 = 0.008), decay 0.5;
    over a span of 40 steps that is vanishing (6 < 40 / 4), over 24 it is not (6 = 24 / 4)."""
    for span, expected in ((40, "vanishing"), (24, "healthy")):
        norms = 3.0 * 0.5 ** np.arange(span, -1, -1.0)  # (T,): the loss at step `span`
        summary = summary_of([norms[None]], first_step=span)
        assert summary["reach"] == 6
        assert summary["decay"] == pytest.approx(0.5, rel=ROUNDING)
        assert summary["span"] == span and summary["source"] == "overhang"
        assert summary["layers"][0]["capped"] is False
        assert np.allclose(summary["layers"][0]["profile"], 0.5 ** np.arange(span + 1), rtol=ROUNDING)
        assert summary["verdict"] == expected


def test_reach_is_capped_by_the_span_and_stops_at_the_first_dip():
    """Never below 1%: reach = span, capped. A dip below 1% ends the reach even if the
    norm comes back further on; a growing norm has decay > 1."""
    flat = summary_of([np.ones((1, 11))], first_step=10)
    assert (flat["reach"], flat["layers"][0]["capped"], flat["decay"]) == (10, True, 1.0)
    dip = np.ones(11)
    dip[10 - 3] = REACH_THRESHOLD / 2  # k = 3
    assert summary_of([dip[None]], first_step=10)["reach"] == 2
    growing = summary_of([1.1 ** np.arange(10, -1, -1.0)[None]], first_step=10)
    assert growing["decay"] == pytest.approx(1.1, rel=ROUNDING) and growing["reach"] == 10


def test_epoch_profile_is_the_geometric_mean_over_the_updates_reaching_each_step():
    """Update 1 reaches 2 steps back (r = 1, 0.5, 0.25), update 2 reaches 4 (r = 1, 0.125,
    ...): k <= 2 averages both, k = 3, 4 only the second; steps after the loss are ignored."""
    first = np.array([[4.0, 8.0, 16.0, 99.0]])             # first_step 2: r_1 = 0.5, r_2 = 0.25
    second = np.array([[0.001, 0.01, 0.1, 1.0, 8.0, 7.0]])  # first_step 4: r_1 = 0.125, ...
    flow = GradFlow(engine.Model("rnn", 1, 4, 1), "mse", k1=2, k2=10, clip_norm=1.0)
    for norms, first_step in ((first, 2), (second, 4)):
        flow.measure(None, None, None, first_step)
        flow.observe({"grad_norm": 2.0, "dh_norms": norms})
    profile = flow.summary()["layers"][0]["profile"]
    expected = [1.0, np.sqrt(0.5 * 0.125), np.sqrt(0.25 * 0.0125), 0.00125, 0.000125]
    assert np.allclose(profile, expected, rtol=ROUNDING)


def test_clipping_counts_and_gradient_norms():
    """clipped_fraction: the share of pre-clip norms above clip_norm (None without
    clipping); max_grad_norm the largest; mean_grad_norm their geometric mean."""
    norms = [np.ones((1, 5))] * 4
    summary = summary_of(norms, 4, grad_norms=[0.5, 2.0, 8.0, 0.125], clip_norm=1.0)
    assert summary["clipped_fraction"] == 0.5
    assert summary["max_grad_norm"] == 8.0
    assert summary["mean_grad_norm"] == pytest.approx(1.0)
    assert summary["updates"] == summary["profiled"] == 4
    assert summary_of(norms, 4, clip_norm=None)["clipped_fraction"] is None


def test_verdict_rules():
    """exploding: most updates clipped, or the typical norm 10x the previous epoch's, or
    one norm 100x the typical; vanishing: reach < span / 4; else healthy."""
    base = {"reach": 30, "span": 75, "clipped_fraction": 0.2, "max_grad_norm": 2.0, "mean_grad_norm": 1.0}
    assert verdict(base) == "healthy"
    assert verdict(dict(base, clipped_fraction=0.6)) == "exploding"
    assert verdict(dict(base, clipped_fraction=0.5)) == "healthy"
    assert verdict(base, previous={"mean_grad_norm": 0.09}) == "exploding"
    assert verdict(base, previous={"mean_grad_norm": 0.11}) == "healthy"
    assert verdict(dict(base, max_grad_norm=101.0)) == "exploding"
    assert verdict(dict(base, reach=18)) == "vanishing"
    assert verdict(dict(base, reach=19)) == "healthy"
    assert verdict(dict(base, reach=3, clipped_fraction=0.9)) == "exploding"  # exploding first
    assert verdict(dict(base, reach=None, span=None)) == "healthy"            # nothing measured
    assert verdict(dict(base, clipped_fraction=None)) == "healthy"            # no clipping


def test_nothing_measurable_gives_nulls_and_valid_json():
    """A zero reference norm (no gradient at the loss step) and windows without target-free
    steps measure nothing: reach and decay are null, the record is still strict JSON."""
    summary = summary_of([np.zeros((2, 6)), np.ones((2, 6))], first_step=0)
    assert summary["reach"] is None and summary["decay"] is None and summary["span"] is None
    assert summary["verdict"] == "healthy" and summary["profiled"] == 0
    zero = summary_of([np.zeros((1, 6))], first_step=5)
    assert zero["reach"] is None and zero["profiled"] == 1
    json_strict(summary), json_strict(zero)


# --------------------------------------------------------------------------- sources

def relative(norms, reference):
    """(L, reference + 1): norms[:, reference - k] / norms[:, reference]."""
    return norms[:, reference::-1] / norms[:, reference:reference + 1]


@pytest.mark.parametrize("shards", [1, 2])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_overhang_profile_matches_a_numpy_backward(cell, shards):
    """k2 > k1: the epoch profile is the geometric mean, over the updates, of the relative
    norms k steps before each window's first target step, as the NumPy reference's
    backward computes them (two layers, float64)."""
    k1, k2 = 3, 7
    model, x, y = make_problem(cell, "tanh", 2, "mse", T=17, B=3, masked=False)
    expected = brute_force(model, x, y, "mse", chunk_ends(17, k1), k2 - k1, sgd())
    trainer = engine.Trainer(model, optimizer=sgd(), k1=k1, k2=k2, clip_norm=None, diagnostics=True,
                             shards=shards)
    trainer.fit(x, y)
    replay = engine.Model(**model.config)
    logs = [[] for _ in range(k2 - k1 + 1)]  # per k: log r_k of every update reaching it
    for reference in expected["updates"]:
        (start, end), chunk_start = reference["window"], reference["chunk_start"]
        if chunk_start == start:
            continue  # the first window has no steps before its targets
        replay.params[...] = reference["params_before"]
        targets = mask_first(y[start:end], chunk_start - start, "mse")
        ratios = relative(brute_force_dh_norms(replay, x[start:end], targets, "mse", reference["state"]),
                          chunk_start - start)
        for k in range(ratios.shape[1]):
            logs[k].append(np.log(ratios[:, k]))
    profile = np.exp([np.mean(values, axis=0) for values in logs]).T  # (L, span + 1)
    flow = trainer.history.epochs[-1]["grad_flow"]
    assert flow["source"] == "overhang" and flow["span"] == k2 - k1
    assert flow["profiled"] == len(expected["updates"]) - 1
    for layer, layer_profile in zip(flow["layers"], profile):
        assert np.allclose(layer["profile"], layer_profile, rtol=ROUNDING)


@pytest.mark.parametrize("memory", [None, "sqrt"])
@pytest.mark.parametrize("shards", [1, 2])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_probe_profile_is_the_last_target_steps_gradient_back_through_the_window(cell, shards, memory):
    """k2 = k1: the first update of the epoch is probed (then every PROBE_EVERY-th): the
    relative norms of dL_c/dh_(c-k), L_c the loss of the window's last target step only,
    as the NumPy reference's backward computes them. Here that step is 3 of the window
    [0, 5): its last step has no target, so the probe uses the one before."""
    k1 = 5
    model, x, y = make_problem(cell, "tanh", 2, "mse", T=13, B=3, masked=False)
    y[4] = np.nan
    initial = engine.Model(**model.config)
    initial.load_state_dict(model.state_dict())
    trainer = engine.Trainer(model, optimizer=sgd(), k1=k1, clip_norm=None, diagnostics=True,
                             shards=shards, memory=memory)
    trainer.fit(x, y)
    probe_targets = np.full_like(y[:k1], np.nan)
    probe_targets[3] = y[3]
    expected = relative(brute_force_dh_norms(initial, x[:k1], probe_targets, "mse", None), 3)
    flow = trainer.history.epochs[-1]["grad_flow"]
    assert flow["source"] == "probe" and flow["span"] == 3 and flow["profiled"] == 1
    for layer, layer_profile in zip(flow["layers"], expected):
        assert np.allclose(layer["profile"], layer_profile, rtol=ROUNDING)


def test_probes_run_every_probe_every_updates_and_restart_each_epoch():
    model = engine.Model("gru", 2, 4, 1, seed=1)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2 * PROBE_EVERY + 1, 2, 2)), rng.standard_normal((2 * PROBE_EVERY + 1, 2, 1))
    trainer = engine.Trainer(model, k1=1, diagnostics=True)
    trainer.fit(x.astype(np.float32), y.astype(np.float32), epochs=2)
    for record in trainer.history.epochs:  # updates 0, 10, 20 of each epoch
        assert (record["grad_flow"]["updates"], record["grad_flow"]["profiled"]) == (2 * PROBE_EVERY + 1, 3)


def test_streaming_accumulates_until_summary_is_asked_for():
    """partial_fit feeds trainer.grad_flow (the carried inputs give every update after
    the first its k2 - k1 target-free steps) until summary() condenses and restarts."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 2, 1)).astype(np.float32)
    y = rng.standard_normal((40, 2, 1)).astype(np.float32)
    trainer = engine.Trainer(engine.Model("lstm", 1, 4, 1, forget_bias=1.0), k1=5, k2=10, diagnostics=True)
    for piece in range(4):
        trainer.partial_fit(x[10 * piece:10 * piece + 10], y[10 * piece:10 * piece + 10])
    streamed = trainer.grad_flow.summary()
    assert streamed["updates"] == 8 and streamed["profiled"] == 7 and streamed["span"] == 5
    assert streamed["reach"] is not None
    json_strict(streamed)
    assert trainer.grad_flow.summary()["updates"] == 0


# --------------------------------------------------------------------------- training unchanged

@pytest.mark.parametrize("k1,k2", [(4, 4), (4, 9), (None, None)], ids=["probe", "overhang", "full"])
@pytest.mark.parametrize("shards,memory", [(1, None), (2, None), (2, "sqrt")])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_parameters_are_bit_identical_with_and_without_diagnostics(cell, shards, memory, k1, k2):
    """Diagnostics (the probe included) never change training: the same parameters, bit
    for bit, the same losses and gradient norms, in float32 with clipping on."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((45, 5, 2)).astype(np.float32)
    y = rng.standard_normal((45, 5, 1)).astype(np.float32)
    runs = []
    for diagnostics in (False, True):
        model = engine.Model(cell, 2, 6, 1, num_layers=2, seed=4)
        trainer = engine.Trainer(model, lr=0.05, k1=k1, k2=k2, clip_norm=0.1, shards=shards,
                                 memory=memory, diagnostics=diagnostics)
        trainer.fit(x, y, epochs=2)
        runs.append((model.params.copy(), trainer.history))
    (params_off, history_off), (params_on, history_on) = runs
    assert np.array_equal(params_off, params_on)
    for field in ("loss", "grad_norm", "clipped"):
        assert np.array_equal(history_off.column(field), history_on.column(field))
    flow = history_on.epochs[-1]["grad_flow"]
    assert flow["profiled"] >= 1 and len(flow["layers"]) == 2
    assert "grad_flow" not in history_off.epochs[-1]


# --------------------------------------------------------------------------- the command

SINE = ["--demo", "sine", "--hidden", "32", "--k1", "25", "--k2", "100", "--diagnostics"]


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="bptt")


def train_json(tmp_path, name, *options, epochs=1):
    """`bptt train --json` on the sine demo with diagnostics: (epoch records, stderr)."""
    result = run("train", *SINE, "--epochs", epochs, "--json", "-o", tmp_path / f"{name}.npz", *options)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


@pytest.fixture(scope="module")
def rnn_and_lstm(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("grad_flow")
    rnn = train_json(tmp_path, "rnn", "--cell", "rnn")
    lstm = train_json(tmp_path, "lstm", "--cell", "lstm", "--forget-bias", "3")
    return tmp_path, rnn, lstm


def test_tanh_rnn_reaches_less_far_back_than_an_lstm_with_forget_bias(rnn_and_lstm):
    """The issue's case: the same demo and truncation (k1 25, k2 100), one epoch. The tanh
    RNN's gradient fades within a quarter of the 75 target-free steps (vanishing); the
    LSTM with forget-gate bias 3 (f = sigmoid(3) = 0.95 per step) carries it further."""
    _, (rnn, _), (lstm, _) = rnn_and_lstm
    rnn_flow, lstm_flow = rnn[-1]["grad_flow"], lstm[-1]["grad_flow"]
    assert rnn_flow["span"] == lstm_flow["span"] == 75
    assert rnn_flow["reach"] < 75 / 4 <= lstm_flow["reach"]
    assert rnn_flow["decay"] < lstm_flow["decay"] < 1
    assert (rnn_flow["verdict"], lstm_flow["verdict"]) == ("vanishing", "healthy")


def test_advice_names_the_options_once_and_only_when_the_last_epoch_is_not_healthy(rnn_and_lstm, tmp_path):
    _, (_, rnn_err), (_, lstm_err) = rnn_and_lstm
    assert rnn_err.count("Advice") == 1
    for option in ("--cell lstm", "--cell gru", "--forget-bias 1", "--init orthogonal", "--k2"):
        assert option in rnn_err
    assert "Advice" not in lstm_err
    records, err = train_json(tmp_path, "explode", "--cell", "rnn", "--nonlinearity", "relu",
                              "--init", "identity", "--optimizer", "sgd", "--lr", "0.5", epochs=2)
    # lr 0.5: 70% or more of the updates clipped in both epochs, whatever the shard count
    # (at lr 0.1 the second epoch sits on the half-clipped boundary).
    assert [record["grad_flow"]["verdict"] for record in records] == ["exploding", "exploding"]
    assert err.count("Advice") == 1  # printed once, not per epoch
    for option in ("--lr", "--clip-norm", "--init orthogonal"):
        assert option in err
    # A tanh RNN that is vanishing in epoch 1 only, healthy by its last: no advice.
    records, err = train_json(tmp_path, "learns", "--cell", "rnn", epochs=4)
    assert records[0]["grad_flow"]["verdict"] == "vanishing" and records[-1]["grad_flow"]["verdict"] == "healthy"
    assert "Advice" not in err


def test_exploding_relu_rnn_is_reported_with_a_high_clipped_fraction(tmp_path):
    """ReLU RNN, identity recurrent weights, SGD at lr 0.1: most updates exceed the clip
    norm and the largest gradient is orders of magnitude above it."""
    records, _ = train_json(tmp_path, "relu", "--cell", "rnn", "--nonlinearity", "relu", "--init", "identity",
                            "--optimizer", "sgd", "--lr", "0.1")
    flow = records[0]["grad_flow"]
    assert flow["verdict"] == "exploding"
    assert flow["clipped_fraction"] > 0.9
    assert flow["max_grad_norm"] > 100


def test_progress_line_checkpoint_and_info_show_the_last_grad_flow(rnn_and_lstm, tmp_path):
    """The epoch line carries the summary; the checkpoint's epoch records hold grad_flow as
    strict JSON (no NaN), equal to what --json printed; `bptt info` shows the last one."""
    directory, (rnn, _), _ = rnn_and_lstm
    metadata = engine.read_metadata(directory / "rnn.npz")
    stored = metadata["trainer"]["epochs"][-1]["grad_flow"]
    assert stored == rnn[-1]["grad_flow"]
    json_strict(metadata)
    result = run("info", directory / "rnn.npz")
    assert result.exit_code == 0
    assert f"gradient flow: reach {stored['reach']}/75 steps" in result.stdout
    assert "vanishing" in result.stdout
    progress = run("train", *SINE, "--cell", "rnn", "--epochs", "1", "-o", tmp_path / "p.npz")
    assert f"reach {stored['reach']}/75 steps" in progress.stderr and ": vanishing" in progress.stderr


def test_resumed_run_reports_the_same_grad_flow_as_an_uninterrupted_one(tmp_path):
    """Epoch 2 after --resume equals epoch 2 of one run (the growth rule reads epoch 1's
    record back from the checkpoint)."""
    whole, _ = train_json(tmp_path, "whole", "--cell", "gru", epochs=2)
    train_json(tmp_path, "parts", "--cell", "gru", epochs=1)
    resumed, _ = train_json(tmp_path, "parts", "--resume", epochs=2)
    assert resumed[-1]["grad_flow"] == whole[-1]["grad_flow"]


def png_size(path):
    with open(path, "rb") as file:
        header = file.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])  # width, height


def test_plot_gains_the_gradient_flow_row_with_diagnostics(tmp_path):
    pytest.importorskip("matplotlib")
    for name, options in (("plain", ["--epochs", "2"]), ("flow", ["--epochs", "2", "--diagnostics"])):
        result = run("train", "--demo", "sine", "--hidden", "8", "--k1", "25", "--k2", "50", "-q",
                     "--plot", tmp_path / f"{name}.png", "-o", tmp_path / f"{name}.npz", *options)
        assert result.exit_code == 0, result.stderr
    (width, height), (flow_width, flow_height) = png_size(tmp_path / "plain.png"), png_size(tmp_path / "flow.png")
    assert flow_width == width and flow_height == 2 * height

"""ONNX export of forecasting models (data recipe "version": 2): H steps x O targets per row
in P blocks set by the loss. onnxruntime's outputs equal Model.forward mapped by a NumPy
reference (a Gaussian's scale through softplus + 1e-3, quantiles sorted along the blocks,
the z-score per target or per entry with --with-normalization); the metadata names every column; older
recipes and models without one export as before; a recipe that does not fit the model is
one clear error."""
import json

import numpy as np
import pytest

import engine
from engine.export import export_checkpoint
from cli_checks import assert_bad_input
from test_cli import assert_nothing_written, assert_ok, run

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

HIDDEN, B, T = 4, 3, 6
STEPS, TARGETS = 3, ["load", "price"]  # H = 3, O = 2
O = len(TARGETS)
K = STEPS * O  # forecast entries per row
LEVELS = [0.1, 0.5, 0.9]
BLOCKS = {"mse": 1, "gaussian": 2, "quantile": len(LEVELS)}  # P per loss
# the past inputs, then the known input for each step ahead
FEATURES = ["load", "price"] + [f"temperature@t+{h}" for h in range(1, STEPS + 1)]
I = len(FEATURES)
INPUT_NORM = {"mean": [1.0, -2.0, 30.0, 31.0, 32.0], "std": [2.0, 0.5, 10.0, 11.0, 12.0]}
# A target z-score per target (O), or per forecast entry (K, step-major) as fitted on direct targets
TARGET_NORMS = {"per-target": {"mean": [100.0, -20.0], "std": [15.0, 0.25]},
                "per-entry": {"mean": [100.0, -20.0, 101.0, -21.0, 102.0, -22.0],
                              "std": [15.0, 0.25, 16.0, 0.5, 17.0, 0.75]}}


def forecasting_recipe(loss, **changes):
    """A version-2 data recipe as bptt train writes it for a direct model (layout of
    issue 29: P blocks of K = H * O columns)."""
    recipe = {"version": 2, "columns": ["load", "price", "temperature"], "inputs": ["load", "price"],
              "features": FEATURES, "targets": TARGETS,
              "horizon": STEPS, "fill": None, "difference": False, "loss": loss,
              "quantiles": LEVELS if loss == "quantile" else [], "known": ["temperature"], "calendar": [],
              "lags": [], "static": [], "conformal": None, "input_norm": INPUT_NORM, "target_norm": TARGET_NORMS["per-entry"],
              "source": "/home/someone/load.csv"}
    return {**recipe, **changes}


def forecasting_model(loss, cell="lstm", skip=False):
    """A model with P * K outputs; head biases set so the raw Gaussian scales reach both
    tails of softplus (-20 .. 20) and the quantile blocks come out in every order: per
    entry, increasing (k % 3 == 0), decreasing (k % 3 == 1) or as the weights make them.
    skip: with the linear path, its weight drawn at random."""
    model = engine.Model(cell, I, HIDDEN, BLOCKS[loss] * K, seed=11, skip=skip)
    if skip:
        model.views["skip.weight"][...] = 0.5 * np.random.default_rng(5).standard_normal((BLOCKS[loss] * K, I))
    bias = model.views["head.bias"]
    if loss == "gaussian":
        bias[K:] = np.linspace(-20.0, 20.0, K)
    if loss == "quantile":
        trend = np.array([1.0, -1.0, 0.0])[np.arange(K) % 3]  # (K,)
        bias[:] = (np.array([-3.0, 0.0, 3.0])[:, None] * trend).ravel()  # block-major (Q, K)
    return model


def export(tmp_path, model, recipe, with_normalization=False):
    """Through a checkpoint, as `bptt export` does; returns (the ONNX proto, an onnxruntime session)."""
    checkpoint = tmp_path / "model.npz"
    engine.save(checkpoint, model, metadata={"data": recipe})
    export_checkpoint(checkpoint, tmp_path / "model.onnx", "onnx", with_normalization, force=True)
    path = str(tmp_path / "model.onnx")
    return onnx.load(path), onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def run_graph(session, cell, x):
    zeros = np.zeros((1, x.shape[1], HIDDEN), np.float32)
    feeds = {"x": x.astype(np.float32), "h0": zeros, **({"c0": zeros} if cell == "lstm" else {})}
    return session.run(None, feeds)[0]


def softplus(raw):
    return np.logaddexp(0.0, raw)


def expected_parameters(y_hat, loss):
    """Model outputs (T, B, P * K) -> what each column stands for, in model units: raw
    scales through softplus + 1e-3, each entry's quantiles sorted over the blocks."""
    blocks = y_hat.reshape(*y_hat.shape[:2], BLOCKS[loss], K).astype(np.float64)  # (T, B, P, K)
    if loss == "gaussian":
        blocks[:, :, 1] = softplus(blocks[:, :, 1]) + 1e-3
    if loss == "quantile":
        blocks = np.sort(blocks, axis=2)
    return blocks


def in_original_units(blocks, loss, target_norm):
    """(T, B, P, K) model units -> original units: value * std + mean, a scale * std only;
    with one z-score per target, entry k is target k % O (entries are step-major)."""
    mean, std = np.array(target_norm["mean"]), np.array(target_norm["std"])
    per_step = blocks.reshape(*blocks.shape[:3], STEPS, O)  # (T, B, P, H, O)
    if len(mean) == K:
        mean, std = mean.reshape(STEPS, O), std.reshape(STEPS, O)
    offsets = np.array([0.0 if loss == "gaussian" and block == 1 else 1.0 for block in range(BLOCKS[loss])])
    return (per_step * std + offsets[:, None, None] * mean).reshape(blocks.shape)


@pytest.mark.parametrize("skip", [False, True], ids=["", "linear-path"])
@pytest.mark.parametrize("normalization", [None, "per-target", "per-entry"],
                         ids=["model-units", "per-target", "per-entry"])
@pytest.mark.parametrize("loss", ["mse", "gaussian", "quantile"])
def test_graph_outputs_the_distribution_parameters(tmp_path, loss, normalization, skip, assert_close):
    """skip: a model with the linear path, which reads the normalised inputs in the graph."""
    model = forecasting_model(loss, skip=skip)
    target_norm = TARGET_NORMS[normalization or "per-entry"]
    recipe = forecasting_recipe(loss, target_norm=target_norm)
    _, session = export(tmp_path, model, recipe, with_normalization=normalization is not None)
    x_model = np.random.default_rng(4).standard_normal((T, B, I))  # normalised inputs
    y_hat, _ = model.forward(x_model.astype(np.float32))
    expected = expected_parameters(y_hat, loss)
    x = x_model
    if normalization:  # the graph takes raw inputs, gives original units
        x = x_model * INPUT_NORM["std"] + np.array(INPUT_NORM["mean"])
        expected = in_original_units(expected, loss, target_norm)
    y = run_graph(session, model.cell, x)
    assert y.shape == (T, B, BLOCKS[loss] * K)
    blocks = y.reshape(T, B, BLOCKS[loss], K)
    for block in range(BLOCKS[loss]):  # each block at its own scale (means ~100, scales ~1e-3 .. 20)
        assert_close(blocks[:, :, block], expected[:, :, block], 1e-5, f"{loss} block {block}")
    if loss == "gaussian":
        assert (blocks[:, :, 1] > 0).all()
        raw = y_hat.reshape(T, B, 2, K)[:, :, 1]
        assert raw.min() < -15 and raw.max() > 15  # both tails of softplus were exercised
    if loss == "quantile":
        raw = y_hat.reshape(T, B, len(LEVELS), K)
        crossed = (np.diff(raw, axis=2) < 0).any(axis=2)
        assert crossed.any() and not crossed.all()  # the sort had work to do, and not everywhere
        assert (np.diff(blocks, axis=2) >= 0).all()


def test_outputs_metadata_names_every_column(tmp_path):
    proto, _ = export(tmp_path, forecasting_model("quantile"), forecasting_recipe("quantile"))
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    columns = json.loads(metadata["bptt.outputs"])
    assert len(columns) == len(LEVELS) * K
    assert columns[0] == {"column": 0, "target": "load", "step": 1, "parameter": "quantile", "level": 0.1}
    assert columns[K - 1] == {"column": K - 1, "target": "price", "step": STEPS, "parameter": "quantile", "level": 0.1}
    assert columns[K + 3] == {"column": K + 3, "target": "price", "step": 2, "parameter": "quantile", "level": 0.5}
    assert [column["column"] for column in columns] == list(range(len(columns)))
    assert [column["level"] for column in columns] == [level for level in LEVELS for _ in range(K)]
    assert [(column["step"], column["target"]) for column in columns[:K]] == \
        [(step, target) for step in range(1, STEPS + 1) for target in TARGETS]
    assert json.loads(metadata["bptt.inputs"]) == FEATURES
    assert metadata["bptt.normalization"] == "none" and "bptt.data" not in metadata

    proto, _ = export(tmp_path, forecasting_model("gaussian"), forecasting_recipe("gaussian"), True)
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    columns = json.loads(metadata["bptt.outputs"])
    assert [column["parameter"] for column in columns] == ["mean"] * K + ["scale"] * K
    assert {column["level"] for column in columns} == {None}
    assert "source" not in json.loads(metadata["bptt.data"])  # the training file's path stays home


def test_recipe_without_features_has_no_inputs_entry(tmp_path):
    recipe = forecasting_recipe("mse")
    del recipe["features"]
    proto, _ = export(tmp_path, forecasting_model("mse"), recipe, with_normalization=True)
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    assert "bptt.inputs" not in metadata
    assert [column["parameter"] for column in json.loads(metadata["bptt.outputs"])] == ["point"] * K
    assert "raw input columns ['load', 'price']" in proto.doc_string  # the recipe's inputs instead


def test_direct_point_model_is_the_plain_graph(tmp_path):
    """Without normalisation a direct mse model needs nothing after the head: the same
    graph as an export without a recipe; only the metadata and the description add to it."""
    model = forecasting_model("mse", cell="gru")
    with_recipe, _ = export(tmp_path, model, forecasting_recipe("mse"))
    engine.save(tmp_path / "bare.npz", model)
    export_checkpoint(tmp_path / "bare.npz", tmp_path / "bare.onnx", "onnx")
    bare = onnx.load(tmp_path / "bare.onnx")
    assert with_recipe.graph.SerializeToString() == bare.graph.SerializeToString()
    assert "bptt.outputs" in {prop.key for prop in with_recipe.metadata_props}
    assert "K = 3 steps x 2 targets" in with_recipe.doc_string


def test_older_recipes_export_as_before(tmp_path):
    """A recipe without "version" (one output per target) is ignored without
    --with-normalization (the same bytes as no recipe) and with it gives the plain z-scored
    graph: no softplus, no sort, no column list."""
    model = engine.Model("lstm", I, HIDDEN, O, num_layers=2, seed=2)
    old = {key: value for key, value in forecasting_recipe("mse").items()
           if key in ("columns", "inputs", "targets", "horizon", "fill", "difference", "input_norm", "target_norm")}
    old["target_norm"] = TARGET_NORMS["per-target"]  # one output per target
    engine.save(tmp_path / "old.npz", model, metadata={"data": old})
    engine.save(tmp_path / "bare.npz", model)
    export_checkpoint(tmp_path / "old.npz", tmp_path / "old.onnx", "onnx")
    export_checkpoint(tmp_path / "bare.npz", tmp_path / "bare.onnx", "onnx")
    assert (tmp_path / "old.onnx").read_bytes() == (tmp_path / "bare.onnx").read_bytes()
    export_checkpoint(tmp_path / "old.npz", tmp_path / "normalised.onnx", "onnx", with_normalization=True)
    proto = onnx.load(tmp_path / "normalised.onnx")
    assert [node.op_type for node in proto.graph.node][-4:] == ["MatMul", "Add", "Mul", "Add"]
    assert not {"Softplus", "TopK", "Split"} & {node.op_type for node in proto.graph.node}
    assert {prop.key for prop in proto.metadata_props} == {"bptt.config", "bptt.normalization", "bptt.data"}
    assert "at step t + 3 in original units" in proto.doc_string


def test_differenced_model_says_what_its_outputs_are(tmp_path):
    proto, _ = export(tmp_path, forecasting_model("gaussian"), forecasting_recipe("gaussian", difference=True), True)
    assert "change level[t + h] - level[t]" in proto.doc_string
    assert "not to the standard deviations" in proto.doc_string
    proto, _ = export(tmp_path, forecasting_model("gaussian"), forecasting_recipe("gaussian"), True)
    assert "level[t]" not in proto.doc_string


# ---------------------------------------------------------------- a recipe that does not fit, through the CLI

@pytest.mark.parametrize("changes, flags, fragments", [
    ({"horizon": 2}, [], ["2 x 4 outputs", "horizon 2", "the model has 12"]),
    ({"loss": "quantile", "quantiles": LEVELS}, [], ["3 x 6 outputs", "loss quantile", "the model has 12"]),
    ({"loss": "quantile", "quantiles": [0.9, 0.1]}, [], ["quantiles are [0.9, 0.1]", "increasing levels in (0, 1)"]),
    ({"loss": "huber"}, [], ["loss is 'huber'", "mse, gaussian, quantile"]),
    ({"version": 3}, [], ["version 3"]),
    ({"target_norm": {"mean": [0.0] * 4, "std": [1.0] * 4}}, ["--with-normalization"],
     ["normalises 5 inputs and 4 target columns", "forecasts 2 targets at 3 steps (6 entries)"]),
], ids=["horizon", "quantile-count", "quantile-order", "loss", "version", "target-norm"])
def test_recipe_that_does_not_fit_the_model(tmp_path, changes, flags, fragments):
    checkpoint = tmp_path / "model.npz"
    recipe = {**forecasting_recipe("gaussian"), **changes}
    engine.save(checkpoint, forecasting_model("gaussian"), metadata={"data": recipe})
    assert_bad_input(run("export", checkpoint, "--format", "onnx", "-o", tmp_path / "out.onnx", *flags), *fragments)
    assert_nothing_written(tmp_path, "out.onnx")


def test_cli_export_of_a_forecasting_checkpoint(tmp_path):
    checkpoint = tmp_path / "model.npz"
    engine.save(checkpoint, forecasting_model("quantile"), metadata={"data": forecasting_recipe("quantile")})
    assert_ok(run("export", checkpoint, "--format", "onnx", "-o", tmp_path / "model.onnx", "--with-normalization"))
    proto = onnx.load(tmp_path / "model.onnx")
    assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim][2] == len(LEVELS) * K
    assert "TopK" in {node.op_type for node in proto.graph.node}

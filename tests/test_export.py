"""engine.export and `bptt export`: the ONNX graph run by onnxruntime equals Model.forward
for every cell and depth, over a long sequence split in two calls with the state carried;
the z-score in the graph maps raw inputs to the pipeline's forecasts in original units;
safetensors and torch files hold the state_dict bit for bit and load into torch modules;
bad input is one clear error (exit 2) and writes nothing."""
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import engine
from engine.data import prepare_forecast_data, to_original_units
from engine.export import export_checkpoint, linear_path, split_state_dict
from cli_checks import assert_bad_input
from test_cli import assert_nothing_written, assert_ok, run

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

EXPORT_GUIDE = (Path(__file__).resolve().parent.parent / "docs" / "export.md").read_text()
I, H, O, B = 3, 5, 2, 4


def make_model(cell="lstm", nonlinearity="tanh", num_layers=1, dtype="float32", seed=3, skip=False):
    """skip: with the linear path, its weight drawn at random (it starts at zero)."""
    model = engine.Model(cell, I, H, O, num_layers=num_layers, nonlinearity=nonlinearity, dtype=dtype, seed=seed,
                         skip=skip)
    if skip:
        model.views["skip.weight"][...] = np.random.default_rng(seed).standard_normal((O, I))
    return model


def saved(tmp_path, model, name="model.npz", **options):
    path = tmp_path / name
    engine.save(path, model, **options)
    return path


def session(path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(session, cell, x, state):
    """Outputs (y, state) of the exported graph, with the state in Model.forward's form."""
    parts = state if cell == "lstm" else (state,)
    feeds = {"x": x, **{f"{part}0": value for part, value in zip("hc", parts)}}
    y, *final = session.run(None, feeds)
    return y, (tuple(final) if cell == "lstm" else final[0])


def random_state(cell, num_layers, rng):
    """A non-zero starting state (L, B, H), so the graph must read h0 (and c0)."""
    parts = tuple((0.5 * rng.standard_normal((num_layers, B, H))).astype(np.float32) for _ in range(2))
    return parts if cell == "lstm" else parts[0]


def assert_states_close(actual, expected, assert_close):
    for part, (a, e) in enumerate(zip(*[s if isinstance(s, tuple) else (s,) for s in (actual, expected)])):
        assert_close(a, e, 1e-5, f"state part {part}")


# ---------------------------------------------------------------- ONNX

def test_onnx_equals_forward_with_state_carried(tmp_path, variant, num_layers, assert_close):
    """A long sequence in two calls, the state passed from the first to the second, equals
    one Model.forward over the whole of it; the final states match too."""
    cell, nonlinearity = variant
    model = make_model(cell, nonlinearity, num_layers)
    export_checkpoint(saved(tmp_path, model), tmp_path / "model.onnx", "onnx")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1500, B, I)).astype(np.float32)
    state = random_state(cell, num_layers, rng)
    expected, expected_state = model.forward(x, state)
    runtime = session(tmp_path / "model.onnx")
    first, carried = run_onnx(runtime, cell, x[:900], state)
    second, final = run_onnx(runtime, cell, x[900:], carried)
    assert np.abs(expected).max() > 0.1  # the outputs are not trivially small
    assert_close(np.concatenate([first, second]), expected, 1e-5, "y")
    assert_states_close(final, expected_state, assert_close)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_onnx_with_the_linear_path_equals_forward(tmp_path, cell, assert_close):
    """The linear path in the graph (MatMul + Add on x): onnxruntime equals Model.forward,
    whose outputs it moves well away from the same model's without it."""
    model = make_model(cell, num_layers=2, skip=True)
    export_checkpoint(saved(tmp_path, model), tmp_path / "model.onnx", "onnx")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((50, B, I)).astype(np.float32)
    state = random_state(cell, 2, rng)
    expected, expected_state = model.forward(x, state)
    without = engine.Model(**{**model.config, "skip": False})
    without.load_state_dict({name: value for name, value in model.state_dict().items() if name != "skip.weight"})
    assert np.abs(expected - without.forward(x, state)[0]).max() > 0.5
    y, final = run_onnx(session(tmp_path / "model.onnx"), cell, x, state)
    assert_close(y, expected, 1e-5, "y")
    assert_states_close(final, expected_state, assert_close)
    proto = onnx.load(tmp_path / "model.onnx")
    config = {prop.key: prop.value for prop in proto.metadata_props}["bptt.config"]
    assert json.loads(config)["skip"] is True


def test_onnx_graph_is_valid_with_dynamic_time_and_batch(tmp_path):
    model = make_model("lstm", num_layers=2)
    export_checkpoint(saved(tmp_path, model), tmp_path / "model.onnx", "onnx")
    proto = onnx.load(tmp_path / "model.onnx")
    onnx.checker.check_model(proto, full_check=True)
    assert [op.version for op in proto.opset_import] == [17]
    assert [node.op_type for node in proto.graph.node].count("LSTM") == 2

    def shapes(values):
        return {value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
                for value in values}
    assert shapes(proto.graph.input) == {"x": ["T", "B", I], "h0": [2, "B", H], "c0": [2, "B", H]}
    assert shapes(proto.graph.output) == {"y": ["T", "B", O], "hn": [2, "B", H], "cn": [2, "B", H]}
    runtime = session(tmp_path / "model.onnx")
    for T, batch in ((1, 1), (7, 3)):  # any length and batch
        zeros = np.zeros((2, batch, H), np.float32)
        y, hn, cn = runtime.run(None, {"x": np.ones((T, batch, I), np.float32), "h0": zeros, "c0": zeros})
        assert y.shape == (T, batch, O) and hn.shape == cn.shape == (2, batch, H)
    config = {prop.key: prop.value for prop in proto.metadata_props}["bptt.config"]
    assert engine.Model(**json.loads(config)).config == model.config


def test_float64_checkpoint_exports_float32(tmp_path, assert_close):
    """onnxruntime runs RNN/LSTM/GRU in float32 only: float64 parameters are rounded."""
    model = make_model("gru", num_layers=2, dtype="float64")
    result = run("export", saved(tmp_path, model), "--format", "onnx", "-o", tmp_path / "model.onnx")
    assert_ok(result)
    assert "float64 parameters rounded to float32" in result.stderr
    proto = onnx.load(tmp_path / "model.onnx")
    assert {tensor.data_type for tensor in proto.graph.initializer} == {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}
    assert {value.type.tensor_type.elem_type for value in [*proto.graph.input, *proto.graph.output]} \
        == {onnx.TensorProto.FLOAT}
    x = np.random.default_rng(1).standard_normal((200, B, I))
    expected, _ = model.forward(x)
    y, _ = run_onnx(session(tmp_path / "model.onnx"), "gru", x.astype(np.float32),
                    np.zeros((2, B, H), np.float32))
    assert_close(y, expected, 1e-5, "y")


@pytest.mark.parametrize("difference", [False, True], ids=["levels", "differenced"])
def test_normalization_in_graph_gives_forecasts_in_original_units(tmp_path, difference, assert_close):
    """With --with-normalization the graph takes raw inputs (the training recipe's columns;
    differenced target columns as changes) and returns what evaluate/forecast compute in
    original units (for a differenced model, after adding the last observed level)."""
    t = np.arange(600)
    series = np.c_[50 + 10 * np.sin(t / 9) + 0.05 * t, 3 * np.cos(t / 5)]  # (T, 2): target, extra input
    checkpoint = tmp_path / "model.npz"
    engine.train_series(series, checkpoint, cell="lstm", hidden=6, k1=20, targets="0", inputs="0,1", streams=2,
                        difference=difference, epochs=1)
    assert_ok(run("export", checkpoint, "--format", "onnx", "-o", tmp_path / "raw.onnx", "--with-normalization"))
    model, metadata = engine.load_for_inference(checkpoint)
    recipe = metadata["data"]
    data = prepare_forecast_data(series, recipe)
    y_hat, _ = model.forward(data.x)
    expected = to_original_units(y_hat[:, 0], data.base, recipe)  # (T', 1) forecast levels
    if difference:  # target column as changes, the other input as levels; y + the last level
        raw, level = np.c_[np.diff(series[:, 0]), series[1:, 1]], series[1:, :1]
    else:
        raw, level = series, 0.0
    zeros = np.zeros((1, 1, 6), np.float32)  # (L, B, H): one stream from the start
    y, _ = run_onnx(session(tmp_path / "raw.onnx"), "lstm", raw[:, None, :].astype(np.float32), (zeros, zeros))
    assert_close(y[:, 0] + level, expected, 1e-5, "forecasts in original units")
    assert expected.mean() > 40  # truly in original units, not z-scores


def test_guide_onnxruntime_example_runs(tmp_path, monkeypatch, assert_close):
    """docs/export.md's deployment example, on a model like the guide's (LSTM 1 -> 16 -> 1):
    the state it carries from one call to the next continues the streams exactly."""
    block = next(block for block in re.findall(r"```python\n(.*?)```", EXPORT_GUIDE, flags=re.S)
                 if "onnxruntime.InferenceSession" in block)
    model = engine.Model("lstm", 1, 16, 1, seed=5)
    engine.save(tmp_path / "sine.npz", model)
    engine.export.export_checkpoint(tmp_path / "sine.npz", tmp_path / "sine.onnx", "onnx")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block, "docs/export.md", "exec"), namespace)
    x = namespace["x"]
    expected, (h, c) = model.forward(np.concatenate([x, x]))
    assert_close(namespace["y"], expected[len(x):], 1e-5, "y of the second call")
    assert_close(namespace["hn"], h, 1e-5, "hn")


def test_import_engine_does_not_import_the_export_packages():
    code = "import sys, engine; print(sorted({'onnx', 'safetensors', 'torch'} & set(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


# ---------------------------------------------------------------- safetensors and torch

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_safetensors_round_trip_bit_for_bit(tmp_path, dtype):
    model = make_model("lstm", num_layers=2, dtype=dtype)
    assert_ok(run("export", saved(tmp_path, model), "--format", "safetensors", "-o", tmp_path / "m.safetensors"))
    loaded = safetensors_numpy.load_file(tmp_path / "m.safetensors")
    expected = model.state_dict()
    assert sorted(loaded) == sorted(expected)
    for name, array in expected.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        assert loaded[name].tobytes() == array.tobytes(), name
    from safetensors import safe_open
    with safe_open(tmp_path / "m.safetensors", "np") as file:
        metadata = file.metadata()
    assert {name: metadata[name] for name in model.config} == {k: str(v) for k, v in model.config.items()}
    assert "data" not in metadata  # engine.save without a data recipe


def test_safetensors_metadata_holds_the_data_recipe(tmp_path):
    model = make_model("gru")
    recipe = {"inputs": ["a", "b", "c"], "targets": ["a", "b"], "horizon": 2, "fill": None,
              "difference": False, "input_norm": {"mean": [1.0] * I, "std": [2.0] * I},
              "target_norm": {"mean": [0.5] * O, "std": [3.0] * O}, "source": "/home/someone/data.csv"}
    checkpoint = saved(tmp_path, model, metadata={"data": recipe})
    export_checkpoint(checkpoint, tmp_path / "m.safetensors", "safetensors")
    from safetensors import safe_open
    with safe_open(tmp_path / "m.safetensors", "np") as file:
        data = json.loads(file.metadata()["data"])
    assert data == {key: value for key, value in recipe.items() if key != "source"}


def torch_modules(torch, model):
    """torch.nn.LSTM/GRU/RNN and nn.Linear shaped like `model`."""
    rnn_class = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[model.cell]
    options = {"nonlinearity": model.nonlinearity} if model.cell == "rnn" else {}
    return rnn_class(I, H, num_layers=model.num_layers, **options), torch.nn.Linear(H, O)


def assert_torch_matches(torch, model, state_dict, assert_close):
    """Load `state_dict` (the exported file's) into torch modules; they compute Model.forward
    (with the linear path: plus torch.nn.Linear(I, O, bias=False) on x)."""
    rnn, head = torch_modules(torch, model)
    recurrent, head_part = split_state_dict(state_dict)
    rnn.load_state_dict(recurrent)  # strict: every name and shape
    head.load_state_dict(head_part)
    x = np.random.default_rng(2).standard_normal((100, B, I)).astype(np.float32)
    with torch.no_grad():
        hidden, _ = rnn(torch.from_numpy(x))
        y = head(hidden)
        if model.skip:
            skip = torch.nn.Linear(I, O, bias=False)
            skip.load_state_dict(linear_path(state_dict))
            y = y + skip(torch.from_numpy(x))
    assert_close(y.numpy(), model.forward(x)[0], 1e-5, "torch modules")


def test_safetensors_loads_into_torch_modules(tmp_path, variant, num_layers, assert_close):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    model = make_model(*variant, num_layers)
    export_checkpoint(saved(tmp_path, model), tmp_path / "m.safetensors", "safetensors")
    assert_torch_matches(torch, model, safetensors_torch.load_file(tmp_path / "m.safetensors"), assert_close)


@pytest.mark.parametrize("format_", ["safetensors", "torch"])
def test_linear_path_exports_as_one_more_tensor(tmp_path, format_, assert_close):
    """A model with the linear path: the file holds skip.weight beside the rest, bit for
    bit, and the config says skip; it loads into the torch modules and a Linear(I, O,
    bias=False) beside, which compute Model.forward."""
    torch = pytest.importorskip("torch")
    model = make_model("gru", num_layers=2, skip=True)
    path = tmp_path / f"m.{format_}"
    assert_ok(run("export", saved(tmp_path, model), "--format", format_, "-o", path))
    if format_ == "safetensors":
        from safetensors import safe_open
        with safe_open(path, "np") as file:
            assert file.metadata()["skip"] == "True"
        state_dict = {name: torch.from_numpy(array) for name, array in safetensors_numpy.load_file(path).items()}
    else:
        state_dict = torch.load(path, weights_only=True)
    assert {name: tensor.numpy().tobytes() for name, tensor in state_dict.items()} == \
        {name: array.tobytes() for name, array in model.state_dict().items()}
    assert state_dict["skip.weight"].shape == (O, I)
    assert_torch_matches(torch, model, state_dict, assert_close)
    assert linear_path(make_model().state_dict()) is None


def test_torch_state_dict_file(tmp_path, assert_close):
    torch = pytest.importorskip("torch")
    model = make_model("rnn", "relu", num_layers=2)
    assert_ok(run("export", saved(tmp_path, model), "--format", "torch", "-o", tmp_path / "m.pt"))
    state_dict = torch.load(tmp_path / "m.pt", weights_only=True)
    assert {name: tensor.numpy().tobytes() for name, tensor in state_dict.items()} == \
        {name: array.tobytes() for name, array in model.state_dict().items()}
    assert_torch_matches(torch, model, state_dict, assert_close)


# ---------------------------------------------------------------- bad input, through the CLI

@pytest.fixture
def checkpoint(tmp_path):
    return saved(tmp_path, make_model("gru"))


@pytest.mark.parametrize("package, format, extra", [("torch", "torch", "pip install torch"),
                                                     ("onnx", "onnx", "pip install 'bptt[export]'"),
                                                     ("safetensors", "safetensors", "pip install 'bptt[export]'")])
def test_missing_package_is_one_line_naming_what_to_install(tmp_path, checkpoint, monkeypatch, package, format, extra):
    for module in (package, f"{package}.numpy"):  # `import module` now raises ImportError
        monkeypatch.setitem(sys.modules, module, None)
    assert_bad_input(run("export", checkpoint, "--format", format, "-o", tmp_path / "out"),
                     f"--format {format} needs {package}", extra)
    assert_nothing_written(tmp_path, "out")


def test_unknown_format(tmp_path, checkpoint):
    assert_bad_input(run("export", checkpoint, "--format", "tflite", "-o", tmp_path / "out"), "--format", "tflite")
    assert_nothing_written(tmp_path, "out")


@pytest.mark.parametrize("content", [b"step,value\n1,2\n", b""], ids=["csv", "empty"])
def test_not_a_checkpoint(tmp_path, content):
    (tmp_path / "notes.npz").write_bytes(content)
    assert_bad_input(run("export", tmp_path / "notes.npz", "--format", "onnx", "-o", tmp_path / "out.onnx"),
                     "notes.npz")
    assert_bad_input(run("export", tmp_path / "missing.npz", "--format", "onnx", "-o", tmp_path / "out.onnx"),
                     "no such checkpoint file")
    assert_nothing_written(tmp_path, "out.onnx")


def test_output_that_is_the_input(tmp_path, checkpoint):
    before = checkpoint.read_bytes()
    for force in ([], ["--force"]):
        assert_bad_input(run("export", checkpoint, "--format", "onnx", "-o", checkpoint, *force),
                         "would overwrite the input")
    assert checkpoint.read_bytes() == before


def test_existing_output_needs_force(tmp_path, checkpoint):
    """An existing output is refused (left as it was); --force replaces a regular file,
    never a link or a directory."""
    output = tmp_path / "model.onnx"
    output.write_bytes(b"an earlier export")
    assert_bad_input(run("export", checkpoint, "--format", "onnx", "-o", output), "exists", "--force")
    assert output.read_bytes() == b"an earlier export"
    assert_ok(run("export", checkpoint, "--format", "onnx", "-o", output, "--force"))
    onnx.checker.check_model(onnx.load(output))
    (tmp_path / "link.onnx").symlink_to(output)
    assert_bad_input(run("export", checkpoint, "--format", "onnx", "-o", tmp_path / "link.onnx", "--force"),
                     "symbolic link")
    (tmp_path / "folder").mkdir()
    assert_bad_input(run("export", checkpoint, "--format", "onnx", "-o", tmp_path / "folder", "--force"),
                     "folder")
    assert_nothing_written(tmp_path)


def test_export_model_writes_what_export_checkpoint_writes(tmp_path, checkpoint):
    """The library call for a model in memory: the same file as from its checkpoint (for
    safetensors the same content: the library orders the metadata at random)."""
    from safetensors import safe_open
    model, _ = engine.load(checkpoint)
    files = {}
    for source, write in (("file", lambda path, format: export_checkpoint(checkpoint, path, format)),
                          ("memory", lambda path, format: engine.export.export_model(model, path, format))):
        for format in ("onnx", "safetensors"):
            write(tmp_path / f"{source}.{format}", format)
        with safe_open(tmp_path / f"{source}.safetensors", "np") as file:
            files[source] = ((tmp_path / f"{source}.onnx").read_bytes(), file.metadata(),
                             {name: file.get_tensor(name).tobytes() for name in file.keys()})
    assert files["file"] == files["memory"]


def test_recipe_without_one_normalisation(tmp_path):
    """A data recipe without input_norm / target_norm (say per-series scaling) cannot go in the graph."""
    checkpoint = saved(tmp_path, make_model("gru"), metadata={"data": {"targets": ["a"], "scaling": {}}})
    assert_bad_input(run("export", checkpoint, "--format", "onnx", "-o", tmp_path / "out.onnx",
                         "--with-normalization"), "no single input and target normalisation")
    assert_ok(run("export", checkpoint, "--format", "onnx", "-o", tmp_path / "out.onnx"))


def test_normalization_needs_a_recipe_and_onnx(tmp_path, checkpoint):
    assert_bad_input(run("export", checkpoint, "--format", "onnx", "-o", tmp_path / "out.onnx",
                         "--with-normalization"), "no data recipe")
    assert_bad_input(run("export", checkpoint, "--format", "safetensors", "-o", tmp_path / "out",
                         "--with-normalization"), "--format onnx only")
    assert_bad_input(run("export", checkpoint, "--format", "onnx", "-o", tmp_path / "no" / "out.onnx"),
                     "does not exist")
    assert_nothing_written(tmp_path, "out.onnx", "out")


def zoneout_expectation(model, x, state):
    """tests/naive.py's forward of a zoneout model at inference, in float64: every unit's
    state is p times its previous value plus 1 - p times the cell's step (h, and c for the
    LSTM), i.e. zoneout's keep arrays all p; y (T, B, O) and the final state."""
    import naive

    rows, (T, B_, _) = model.num_layers * model.directions, x.shape
    keep = np.full((rows, T, B_, model.hidden_size), model.zoneout)
    masks = SimpleNamespace(zone_h=keep, zone_c=keep if model.cell == "lstm" else None)
    reference = naive.bidirectional_forward if model.bidirectional else naive.forward
    return reference(model.state_dict(), x, model.cell, state, masks=masks)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["one-way", "bidirectional"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_onnx_zoneout_graph_is_the_expectation(cell, num_layers, bidirectional, assert_close):
    """With zoneout p, the graph computes the expectation of its masks at every step
    (state = p * previous + (1 - p) * step), as Model.forward does; one-directional, the
    state carried between calls (a bidirectional model reads the whole sequence at once)."""
    from engine.export_onnx import onnx_model

    model = engine.Model(cell, I, H, O, num_layers=num_layers, seed=3, zoneout=0.3, bidirectional=bidirectional)
    runtime = onnxruntime.InferenceSession(onnx_model(model).SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(11)
    x = rng.standard_normal((60, B, I)).astype(np.float32)
    state = random_state(cell, num_layers * model.directions, rng)
    expected, expected_state = zoneout_expectation(model, x, state)
    if bidirectional:
        y, final = run_onnx(runtime, cell, x, state)
    else:
        first, carried = run_onnx(runtime, cell, x[:25], state)
        second, final = run_onnx(runtime, cell, x[25:], carried)
        y = np.concatenate([first, second])
    forward, forward_state = model.forward(x, state)
    plain = engine.Model(cell, I, H, O, num_layers=num_layers, bidirectional=bidirectional)
    plain.load_state_dict(model.state_dict())
    assert np.abs(plain.forward(x, state)[0] - expected).max() > 1e-2  # zoneout changes the outputs
    assert_close(forward, expected, 1e-5, "Model.forward")
    assert_states_close(forward_state, expected_state, assert_close)
    assert_close(y, forward, 1e-5, "y")
    assert_states_close(final, forward_state, assert_close)

"""engine.save / engine.load: exact resume in a fresh process, atomic writes, and a clear
CheckpointError for every file that is not a sound checkpoint of ours."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import engine
from engine.checkpoint import CheckpointError
from engine.optim import Adam
from engine.schedules import make_schedule

# --------------------------------------------------------------------------- helpers


def make_trainer(model, **options):
    settings = dict(optimizer=Adam(lr=0.01, amsgrad=True), k1=4, k2=7, clip_norm=0.5,
                    schedule=make_schedule("cosine", total_steps=30, warmup_steps=3, min_lr=1e-4),
                    on_divergence="skip", shards=2)
    settings.update(options)
    return engine.Trainer(model, **settings)


def make_data(T=30, B=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, 2)).astype(np.float32)
    y = (np.sin(np.cumsum(x[..., :1], axis=0)) + 0.1 * rng.standard_normal((T, B, 1))).astype(np.float32)
    return x, y


def fresh_model():
    return engine.Model(cell="lstm", input_size=2, hidden_size=5, output_size=1, num_layers=2, seed=3)


def without_seconds(epochs):
    return [{key: value for key, value in record.items() if key != "seconds"} for record in epochs]


def states_equal(a, b):
    if a is None or b is None:
        return a is None and b is None
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    return len(a) == len(b) and all(np.array_equal(p, q) and p.dtype == q.dtype for p, q in zip(a, b))


def assert_same_training_state(actual_model, actual, expected_model, expected):
    """Bit for bit: parameters, optimizer state, counters, history, carried state."""
    assert np.array_equal(actual_model.params, expected_model.params)
    assert actual_model.config == expected_model.config
    assert actual.config == expected.config
    assert set(actual.optimizer_state) == set(expected.optimizer_state)
    for key, value in expected.optimizer_state.items():
        assert np.array_equal(actual.optimizer_state[key], value), key
        assert actual.optimizer_state[key].dtype == value.dtype, key
    assert (actual.step, actual.epoch, actual.skipped) == (expected.step, expected.epoch, expected.skipped)
    assert actual.history.updates == expected.history.updates
    assert without_seconds(actual.history.epochs) == without_seconds(expected.history.epochs)
    assert states_equal(actual.state, expected.state)
    assert states_equal(actual._history_state, expected._history_state)
    assert states_equal(actual._history_x, expected._history_x)
    if expected.best is None:
        assert actual.best is None
    else:
        assert {k: actual.best[k] for k in ("loss", "epoch")} == {k: expected.best[k] for k in ("loss", "epoch")}
        assert np.array_equal(actual.best["params"], expected.best["params"])


def assert_checkpoint_error(path, *fragments):
    with pytest.raises(CheckpointError) as caught:
        engine.load(path)
    message = str(caught.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_model_only_round_trip(tmp_path, cell):
    model = engine.Model(cell=cell, input_size=3, hidden_size=4, output_size=2, num_layers=2,
                         dtype="float64", init="orthogonal", seed=7,
                         **({"nonlinearity": "relu"} if cell == "rnn" else {}))
    path = tmp_path / "model.npz"
    engine.save(path, model, metadata={"data": {"mean": [1.5], "note": "z-score"}})
    loaded, trainer = engine.load(path)
    assert trainer is None
    assert loaded.config == model.config
    for name, value in model.state_dict().items():
        assert np.array_equal(loaded.state_dict()[name], value) and loaded.views[name].dtype == value.dtype
    meta = engine.read_metadata(path)
    assert meta["user"] == {"data": {"mean": [1.5], "note": "z-score"}} and meta["trainer"] is None


def test_checkpoint_holds_arrays_only(tmp_path):
    """Every entry is a plain numeric or string array: loadable with allow_pickle=False."""
    model = fresh_model()
    trainer = make_trainer(model)
    x, y = make_data()
    trainer.fit(x, y, validation=(x[:8], y[:8]), patience=2)
    trainer.partial_fit(x[:9], y[:9])
    path = tmp_path / "run.npz"
    engine.save(path, model, trainer)
    with np.load(path, allow_pickle=False) as archive:
        kinds = {name: archive[name].dtype.kind for name in archive.files}
    assert set(kinds.values()) <= set("fiubU"), kinds
    assert {"metadata", "trainer/best_params", "trainer/history_x", "trainer/state_h",
            "trainer/history_state_c", "optimizer/exp_avg", "history/grad_norm"} <= set(kinds)


def test_in_process_round_trip_is_exact(tmp_path):
    model = fresh_model()
    trainer = make_trainer(model)
    x, y = make_data()
    trainer.fit(x, y, epochs=2, validation=(x[:8], y[:8]), patience=5)
    trainer.partial_fit(x[:10], y[:10])
    trainer.skipped = 3  # as if three updates had been skipped as non-finite
    path = tmp_path / "run.npz"
    engine.save(path, model, trainer)
    loaded_model, loaded = engine.load(path)
    assert_same_training_state(loaded_model, loaded, model, trainer)
    assert loaded.model is loaded_model and loaded.optimizer == trainer.optimizer
    assert loaded.schedule == trainer.schedule


# --------------------------------------------------------------------------- exact resume

RESUME_SCRIPT = """
import sys
import numpy as np
import engine

data = np.load(sys.argv[1])
for job in sys.argv[2:]:
    kind, checkpoint, output = job.split(",")
    model, trainer = engine.load(checkpoint)
    if kind == "fit":
        trainer.fit(data["x"], data["y"], epochs=2)
    elif kind == "fit-patience":
        trainer.fit(data["x"], data["y"], epochs=2, validation=(data["x_val"], data["y_val"]),
                    patience=3)
    else:
        trainer.partial_fit(data["x3"], data["y3"], reset=data["reset3"])
        trainer.partial_fit(data["x4"], data["y4"])
    engine.save(output, model, trainer)
"""


@pytest.fixture(scope="module")
def resumed_runs(tmp_path_factory):
    """For each flavour, (one uninterrupted run, the run resumed in a fresh process from
    a checkpoint taken half way): (model, trainer) pairs."""
    directory = tmp_path_factory.mktemp("resume")
    x, y = make_data(T=30)
    x_val, y_val = make_data(T=12, seed=1)
    pieces = [9, 6, 10, 7]  # not multiples of k1 = 4; k2 = 7 carries inputs across calls
    bounds = np.cumsum([0] + pieces)
    x_stream, y_stream = make_data(T=int(bounds[-1]), seed=2)
    xs = [x_stream[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    ys = [y_stream[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    reset3 = np.array([False, True, False])
    np.savez(directory / "data.npz", x=x, y=y, x_val=x_val, y_val=y_val, x3=xs[2], y3=ys[2],
             x4=xs[3], y4=ys[3], reset3=reset3)
    runs, jobs = {}, []

    # fit: 2 epochs, save, 2 more epochs in the new process = 4 epochs in one go.
    whole_model = fresh_model()
    whole = make_trainer(whole_model)
    whole.fit(x, y, epochs=4)
    half_model = fresh_model()
    half = make_trainer(half_model)
    half.fit(x, y, epochs=2)
    engine.save(directory / "fit-half.npz", half_model, half)
    runs["fit"] = (whole_model, whole)
    jobs.append(f"fit,{directory / 'fit-half.npz'},{directory / 'fit-resumed.npz'}")

    # fit with validation and early-stopping bookkeeping, checkpointed after epoch 2 of 4
    # from the on_epoch callback, as `bptt train` does.
    model = fresh_model()
    trainer = make_trainer(model)

    def checkpoint(record):
        if record["epoch"] == 2:
            engine.save(directory / "patience-half.npz", model, trainer)

    trainer.fit(x, y, epochs=4, validation=(x_val, y_val), patience=3, on_epoch=checkpoint)
    assert trainer.best is not None
    runs["fit-patience"] = (model, trainer)
    jobs.append(f"fit-patience,{directory / 'patience-half.npz'},{directory / 'patience-resumed.npz'}")

    # partial_fit mid-stream: state and the last k2 - k1 inputs are carried over.
    model = fresh_model()
    trainer = make_trainer(model)
    for index, (piece_x, piece_y) in enumerate(zip(xs, ys)):
        if index == 2:
            engine.save(directory / "stream-half.npz", model, trainer)
        trainer.partial_fit(piece_x, piece_y, reset=reset3 if index == 2 else None)
    runs["stream"] = (model, trainer)
    jobs.append(f"stream,{directory / 'stream-half.npz'},{directory / 'stream-resumed.npz'}")

    script = directory / "resume.py"
    script.write_text(RESUME_SCRIPT)
    completed = subprocess.run([sys.executable, str(script), str(directory / "data.npz"), *jobs],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    resumed = {"fit": "fit-resumed.npz", "fit-patience": "patience-resumed.npz",
               "stream": "stream-resumed.npz"}
    return {name: (runs[name], engine.load(directory / resumed[name])) for name in runs}


@pytest.mark.parametrize("flavour", ["fit", "fit-patience", "stream"])
def test_resume_in_a_fresh_process_is_bit_exact(resumed_runs, flavour):
    (model, trainer), (resumed_model, resumed) = resumed_runs[flavour]
    assert trainer.step > 8
    assert_same_training_state(resumed_model, resumed, model, trainer)
    if flavour == "stream":
        assert trainer._history_x is not None and len(trainer._history_x) == 3


# --------------------------------------------------------------------------- damaged files

@pytest.fixture
def checkpoint_path(tmp_path):
    model = fresh_model()
    trainer = make_trainer(model)
    x, y = make_data(T=12)
    trainer.partial_fit(x, y)
    path = tmp_path / "good.npz"
    engine.save(path, model, trainer)
    return path


@pytest.mark.parametrize("keep", [0, 0.1, 0.5, 0.9, -1])
def test_truncated_file(checkpoint_path, keep):
    data = checkpoint_path.read_bytes()
    cut = len(data) - 1 if keep == -1 else int(keep * len(data))
    checkpoint_path.write_bytes(data[:cut])
    assert_checkpoint_error(checkpoint_path, "truncated or corrupted")


def test_every_flipped_byte_is_caught_or_harmless(checkpoint_path):
    """Flip bytes all over the file: load either raises CheckpointError or (for bytes
    the zip format does not use, e.g. timestamps) returns exactly the saved content."""
    data = checkpoint_path.read_bytes()
    expected_model, expected = engine.load(checkpoint_path)
    errors = harmless = 0
    for position in range(0, len(data), 19):
        damaged = bytearray(data)
        damaged[position] ^= 0x5A
        checkpoint_path.write_bytes(bytes(damaged))
        try:
            model, trainer = engine.load(checkpoint_path)
        except CheckpointError:
            errors += 1
            continue
        assert_same_training_state(model, trainer, expected_model, expected)
        harmless += 1
    assert errors > 0.7 * (errors + harmless)


def test_flipped_byte_in_the_parameters_is_caught(checkpoint_path):
    data = checkpoint_path.read_bytes()
    with zipfile.ZipFile(checkpoint_path) as archive:
        info = archive.getinfo("model/weight_hh_l0.npy")
    position = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size - 5
    damaged = bytearray(data)
    damaged[position] ^= 0x01
    checkpoint_path.write_bytes(bytes(damaged))
    assert_checkpoint_error(checkpoint_path, "truncated or corrupted", "CRC")


def test_missing_file_and_directory(tmp_path):
    assert_checkpoint_error(tmp_path / "nothing.npz", "no such checkpoint file")
    assert_checkpoint_error(tmp_path, "is a directory")


@pytest.mark.parametrize("content, fragment", [
    (b"", "not a readable checkpoint (truncated or corrupted?): the file is empty"),
    (b"epoch,loss\n1,0.5\n", "not a bptt checkpoint (the file is not an .npz archive)"),
    (bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)), "not a bptt checkpoint"),
    (b"PK\x03\x04garbage", "not a readable checkpoint (truncated or corrupted?)")],
    ids=["empty", "csv", "random-bytes", "fake-zip"])
def test_not_a_zip_file(tmp_path, content, fragment):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    message = assert_checkpoint_error(path, fragment)
    assert "allow_pickle" not in message and "unsafe" not in message  # never advise loading it unsafely


def test_foreign_npz_and_npy(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, weights=np.ones(3), metadata=np.array(json.dumps({"format": "other"})))
    assert_checkpoint_error(path, "not a bptt-checkpoint file")
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.ones(3))
    assert_checkpoint_error(path, "not a bptt-checkpoint file")
    path = tmp_path / "array.npy"
    np.save(path, np.ones(3))
    assert_checkpoint_error(path, "not a bptt-checkpoint file", ".npy")


def rewrite(path, change):
    """Re-save the checkpoint's arrays after change(arrays, meta) (np.savez, not atomic)."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays["metadata"]))
    change(arrays, meta)
    arrays["metadata"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


def test_future_version(checkpoint_path):
    rewrite(checkpoint_path, lambda arrays, meta: meta.update(version=2))
    assert_checkpoint_error(checkpoint_path, "version 2 is not supported", "reads 1")


@pytest.mark.parametrize("change,fragment", [
    (lambda a, m: m["model"].update(hidden_size=6), "weight_ih_l0"),
    (lambda a, m: m["model"].update(cell="gru"), "shape"),
    (lambda a, m: m["model"].update(units=3), "units"),
    (lambda a, m: a.pop("model/head.bias"), "head.bias"),
    (lambda a, m: a.update({"optimizer/exp_avg": a["optimizer/exp_avg"][:-1]}), "optimizer/exp_avg"),
    (lambda a, m: a.pop("optimizer/max_exp_avg_sq"), "max_exp_avg_sq"),
    (lambda a, m: m["trainer"]["config"]["optimizer"].update(name="lion"), "optimizer"),
    (lambda a, m: m["trainer"]["config"].update(k2=2), "k2"),
    (lambda a, m: a.update({"trainer/state_h": a["trainer/state_h"][:, :, :2]}), "trainer/state"),
    (lambda a, m: a.update({"trainer/history_x": a["trainer/history_x"][:, :, :1]}), "history_x"),
    (lambda a, m: a.update({"history/loss": a["history/loss"][:-1]}), "history"),
    (lambda a, m: m["trainer"].update(config=[1, 2]), "does not match"),
], ids=["hidden_size", "cell", "unknown-option", "missing-parameter", "optimizer-shape",
        "optimizer-buffer", "optimizer-name", "k2<k1", "state-shape", "history_x-shape",
        "history-length", "config-type"])
def test_mismatched_content(checkpoint_path, change, fragment):
    rewrite(checkpoint_path, change)
    assert_checkpoint_error(checkpoint_path, "does not match format bptt-checkpoint v1", fragment)


class Payload:
    """Unpickling this would create a file: a checkpoint must never run code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_object_arrays_are_refused_not_run(checkpoint_path, tmp_path):
    marker = tmp_path / "pwned"
    def change(arrays, meta):
        arrays["model/head.bias"] = np.array([Payload(str(marker))], dtype=object)
    with np.load(checkpoint_path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    change(arrays, None)
    np.savez(checkpoint_path, **arrays)  # np.savez pickles the object array
    message = assert_checkpoint_error(checkpoint_path, "not a bptt checkpoint", "pickled Python objects")
    assert "allow_pickle" not in message
    assert not marker.exists()


# --------------------------------------------------------------------------- atomic writes

def test_failed_save_leaves_the_previous_file_and_no_temporary(checkpoint_path, monkeypatch):
    before = checkpoint_path.read_bytes()
    model, trainer = engine.load(checkpoint_path)
    model.params[...] += 1  # a different checkpoint, if it were written
    original = np.savez

    def savez_then_fail(file, **arrays):
        original(file, **arrays)  # a complete temporary file...
        raise OSError("disk full")  # ...and then the failure, before the rename

    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(OSError, match="disk full"):
        engine.save(checkpoint_path, model, trainer)
    assert checkpoint_path.read_bytes() == before
    assert sorted(os.listdir(checkpoint_path.parent)) == ["good.npz"]


def test_interrupted_save_leaves_the_previous_file(checkpoint_path, monkeypatch):
    before = checkpoint_path.read_bytes()
    model, trainer = engine.load(checkpoint_path)

    def savez_interrupted(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", savez_interrupted)
    with pytest.raises(KeyboardInterrupt):
        engine.save(checkpoint_path, model, trainer)
    assert checkpoint_path.read_bytes() == before
    assert sorted(os.listdir(checkpoint_path.parent)) == ["good.npz"]


def test_save_replaces_the_file_and_leaves_nothing_else(checkpoint_path):
    model, trainer = engine.load(checkpoint_path)
    x, y = make_data(T=8)
    trainer.partial_fit(x, y)
    engine.save(checkpoint_path, model, trainer)
    assert sorted(os.listdir(checkpoint_path.parent)) == ["good.npz"]
    assert engine.read_metadata(checkpoint_path)["trainer"]["step"] == trainer.step


def test_unjsonable_metadata_writes_nothing(tmp_path):
    path = tmp_path / "model.npz"
    with pytest.raises(TypeError):
        engine.save(path, fresh_model(), metadata={"when": object()})
    assert os.listdir(tmp_path) == []


def test_saved_file_gets_ordinary_permissions(tmp_path):
    """The temporary file is not left with mkstemp's owner-only mode: the checkpoint is
    readable like any file the user writes (0o666 minus the umask)."""
    umask = os.umask(0o022)
    try:
        path = tmp_path / "model.npz"
        engine.save(path, fresh_model())
    finally:
        os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_save_refuses_a_link_or_a_read_only_file(tmp_path):
    from engine.files import OutputError

    model = engine.Model(hidden_size=3)
    (tmp_path / "real.npz").write_bytes(b"keep")
    (tmp_path / "link.npz").symlink_to("real.npz")
    with pytest.raises(OutputError, match="symbolic link"):
        engine.save(tmp_path / "link.npz", model)
    (tmp_path / "real.npz").chmod(0o444)
    with pytest.raises(OutputError, match="read-only"):
        engine.save(tmp_path / "real.npz", model)
    assert (tmp_path / "link.npz").is_symlink() and (tmp_path / "real.npz").read_bytes() == b"keep"


# --------------------------------------------------------------------------- bounded reading

def add_member(path, name, payload_bytes, compression=zipfile.ZIP_DEFLATED):
    """Append member `name` to the archive: a float64 .npy of payload_bytes zeros."""
    import io
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (payload_bytes // 8,)})
    with zipfile.ZipFile(path, "a", compression=compression) as archive:
        with archive.open(name, "w", force_zip64=True) as member:
            member.write(header.getvalue())
            for _ in range(payload_bytes // 2 ** 20):
                member.write(bytes(2 ** 20))


@pytest.mark.parametrize("name, fragment", [
    ("extra.npy", "unexpected member 'extra'"),
    ("model/weight_ih_l7.npy", "unexpected member 'model/weight_ih_l7'"),     # a layer the model lacks
    ("trainer/history_x.npy", "trainer/history_x.npy is compressed")])          # a known name, compressed
def test_a_member_the_metadata_does_not_describe_is_refused_unread(checkpoint_path, name, fragment):
    import tracemalloc
    if name == "trainer/history_x.npy":
        rewrite(checkpoint_path, lambda arrays, meta: arrays.pop("trainer/history_x"))
    add_member(checkpoint_path, name, 64 * 2 ** 20)   # 64 MiB declared, about 64 KiB stored
    tracemalloc.start()
    try:
        assert_checkpoint_error(checkpoint_path, fragment)
        with pytest.raises(CheckpointError, match="not a bptt-checkpoint file"):
            engine.read_metadata(checkpoint_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2 ** 20, peak


def test_a_header_whose_shape_exceeds_the_members_size_is_refused_before_allocating(checkpoint_path):
    import io
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (10 ** 6, 10 ** 6, 1)})
    rewrite(checkpoint_path, lambda arrays, meta: arrays.pop("trainer/history_x"))
    with zipfile.ZipFile(checkpoint_path, "a") as archive:
        archive.writestr("trainer/history_x.npy", header.getvalue() + bytes(64))
    assert_checkpoint_error(checkpoint_path, "truncated or corrupted", "trainer/history_x.npy declares")


def test_a_member_of_another_shape_than_the_metadata_implies_is_refused_unread(checkpoint_path):
    rewrite(checkpoint_path, lambda arrays, meta: arrays.update({"model/head.weight": np.zeros((300, 4))}))
    assert_checkpoint_error(checkpoint_path, "does not match format bptt-checkpoint v1",
                            "model/head.weight has shape (300, 4), the metadata implies (1, ")


def test_more_history_than_updates_is_refused(checkpoint_path):
    rewrite(checkpoint_path, lambda arrays, meta: meta["trainer"].update(step=1))
    assert_checkpoint_error(checkpoint_path, "history/", "more than the 1 the metadata counts")


def test_deeply_nested_metadata_is_refused_before_parsing(checkpoint_path):
    def nest(arrays, meta):
        meta["user"]["deep"] = json.loads("[" * 100 + "]" * 100)
    rewrite(checkpoint_path, nest)
    assert_checkpoint_error(checkpoint_path, "nests 102 levels deep", "at most 64")
    with np.load(checkpoint_path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["metadata"] = np.array('{"text": "' + "[" * 200_000 + '"}')   # brackets in a string do not nest
    np.savez(checkpoint_path, **arrays)
    assert_checkpoint_error(checkpoint_path, "not a bptt-checkpoint file (no bptt metadata entry)")
    arrays["metadata"] = np.array("[" * 200_000 + "]" * 200_000)
    np.savez(checkpoint_path, **arrays)
    assert_checkpoint_error(checkpoint_path, "nests 200000 levels deep")


def test_metadata_larger_than_the_bound_is_refused_unread(checkpoint_path, monkeypatch):
    monkeypatch.setattr(engine.checkpoint, "MAX_METADATA_BYTES", 1000)
    assert_checkpoint_error(checkpoint_path, "its metadata entry declares", "bptt metadata is at most")


def test_save_to_an_empty_path_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(engine.files.OutputError, match="path is empty"):
        engine.save("", fresh_model())
    assert os.listdir(tmp_path) == []

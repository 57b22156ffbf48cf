"""engine.distributed.RayTrainer on a two-node Ray cluster on loopback: bit-identical to
Trainer(shards=S) for every cell, dtype, TBPTT(k1, k2 > k1) and streaming; a killed
worker is replaced with the same final parameters; a worker that keeps dying ends the
run with one error and a valid last checkpoint; checkpoints move between one machine
and the cluster; the CLI's --ray / --workers."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import engine
import engine.thread_plan
from cli import main

# Read by Ray when it is imported: without them Ray 2.60 rewrites 127.0.0.1 to the
# machine's network address and the test traffic leaves loopback.
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
os.environ.update(LOOPBACK)
ray = pytest.importorskip("ray")
from engine.distributed import ClusterUnavailable, RayTrainer, WorkerFailed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    """Two nodes of one CPU each, every listener on 127.0.0.1; this process connected."""
    from ray.cluster_utils import Cluster

    assert ray._private.ray_constants.ENABLE_RAY_CLUSTER is False, "Ray was imported before LOOPBACK was set"
    head = dict(num_cpus=1, node_ip_address="127.0.0.1", include_dashboard=False)
    nodes = Cluster(initialize_head=True, head_node_args=head)
    try:
        nodes.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        assert nodes.address.startswith("127.0.0.1:"), nodes.address
        ray.init(address=nodes.address, log_to_driver=False)
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


def make_data(cell="lstm", nonlinearity="tanh", dtype="float32", loss="mse", T=30, B=5, seed=0):
    """A fresh model factory and series x (T, B, 2), y with some missing targets."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, 2)).astype(dtype)
    if loss == "mse":
        y = rng.standard_normal((T, B, 2)).astype(dtype)
        y[rng.random(y.shape) < 0.2] = np.nan
    else:
        y = rng.integers(-1, 3, size=(T, B))

    def model():
        return engine.Model(cell=cell, input_size=2, hidden_size=5, output_size=2 if loss == "mse" else 3,
                            num_layers=2, nonlinearity=nonlinearity, dtype=dtype, seed=1)
    return model, x, y


def train(trainer, x, y, **fit_options):
    """Three epochs of fit with early stopping, then two streaming pieces."""
    trainer.fit(x, y, epochs=3, validation=(x[:8], y[:8]), patience=2, **fit_options)
    stream(trainer, x, y, 0)
    stream(trainer, x, y, 1)
    return trainer


def stream(trainer, x, y, piece):
    """partial_fit on piece 0 (steps 0..10) or 1 (the rest, stream 0 starting anew)."""
    if piece == 0:
        return trainer.partial_fit(x[:11], y[:11])
    reset = np.zeros(x.shape[1], dtype=bool)
    reset[0] = True
    return trainer.partial_fit(x[11:], y[11:], reset=reset)


def assert_same_run(distributed, local):
    assert distributed.step == local.step > 0
    assert np.array_equal(distributed.model.params, local.model.params)
    assert _without_seconds(distributed.history.epochs) == _without_seconds(local.history.epochs)
    for name in ("loss", "grad_norm"):
        assert [r[name] for r in distributed.history.updates] == [r[name] for r in local.history.updates]
    assert _state_equal(distributed.state, local.state)


def _without_seconds(records):
    return [{key: value for key, value in record.items() if key != "seconds"} for record in records]


def _state_equal(a, b):
    a, b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
    return all(np.array_equal(p, q) for p, q in zip(a, b))


TBPTT = dict(k1=6, k2=10)


@pytest.mark.parametrize("cell, nonlinearity, dtype, streams, per_worker, options", [
    ("lstm", "tanh", "float32", 5, 1, TBPTT),
    ("lstm", "tanh", "float64", 7, 2, TBPTT),
    ("gru", "tanh", "float32", 5, 2, TBPTT),
    ("gru", "tanh", "float64", 5, 1, dict(loss="cross_entropy", k1=15, memory="sqrt")),
    ("rnn", "tanh", "float32", 3, 2, TBPTT),
    ("rnn", "tanh", "float64", 5, 1, dict(k1=None)),
    ("rnn", "relu", "float32", 5, 1, dict(TBPTT, clip_value=0.05)),
    ("rnn", "relu", "float64", 1, 1, TBPTT)])
def test_bit_identical_to_one_machine(cluster, cell, nonlinearity, dtype, streams, per_worker, options):
    """fit with early stopping, then streaming, with the per-step diagnostics: every
    parameter, loss, norm and state equal bit for bit to Trainer(shards=2 * per_worker).
    TBPTT(6, 10) mostly, also full BPTT, cross-entropy with recomputation and value
    clipping. 3 streams over 2 x 2 shards leaves a shard out; 1 stream, a worker idle."""
    model, x, y = make_data(cell, nonlinearity, dtype, options.get("loss", "mse"), B=streams)
    options = dict(options, lr=0.05, diagnostics=True)
    local = train(engine.Trainer(model(), shards=2 * per_worker, **options), x, y)
    with RayTrainer(model(), workers=2, shards_per_worker=per_worker, cpus_per_worker=1, **options) as distributed:
        train(distributed, x, y)
    assert_same_run(distributed, local)
    for ours, theirs in zip(distributed.history.updates, local.history.updates):
        assert np.array_equal(ours["dh_norms"], theirs["dh_norms"])


@pytest.mark.parametrize("cell, dtype, per_worker", [("lstm", "float64", 1), ("gru", "float32", 2),
                                                     ("rnn", "float64", 1)])
def test_masks_bit_identical_to_one_machine(cluster, cell, dtype, per_worker):
    """Dropout, recurrent dropout and zoneout (not for the RNN): the driver draws each
    window's masks from its generator and each worker runs its streams' slice of them, so
    fit and streaming equal Trainer(shards=2 * per_worker) with the same seed bit for bit."""
    rates = dict(dropout=0.3, recurrent_dropout=0.2, zoneout=0.0 if cell == "rnn" else 0.25)
    _, x, y = make_data(cell, "tanh", dtype, B=5)

    def model(**model_rates):
        return engine.Model(cell=cell, input_size=2, hidden_size=5, output_size=2, num_layers=2, dtype=dtype,
                            seed=1, **model_rates)

    options = dict(TBPTT, lr=0.05, seed=4)
    local = train(engine.Trainer(model(**rates), shards=2 * per_worker, **options), x, y)
    with RayTrainer(model(**rates), workers=2, shards_per_worker=per_worker, cpus_per_worker=1,
                    **options) as distributed:
        train(distributed, x, y)
    assert_same_run(distributed, local)
    plain = train(engine.Trainer(model(), shards=2 * per_worker, **options), x, y)
    assert not np.allclose(plain.model.params, local.model.params, rtol=1e-3)  # the masks act


def test_divergence_skip_and_raise_as_on_one_machine(cluster):
    """A ReLU RNN blown up by a huge learning rate: skipped updates and zeroed streams
    are the driver's business, so they match; "raise" raises TrainingDiverged."""
    model, x, y = make_data("rnn", "relu", "float32")
    options = dict(k1=5, lr=1e4, clip_norm=None, optimizer="sgd", on_divergence="skip")
    local = engine.Trainer(model(), shards=2, **options)
    local.fit(x * 100, y, epochs=2)
    with RayTrainer(model(), workers=2, **options) as distributed:
        distributed.fit(x * 100, y, epochs=2)
        assert local.skipped > 0 and distributed.skipped == local.skipped
        assert np.array_equal(distributed.model.params, local.model.params)
        distributed.on_divergence = "raise"
        with pytest.raises(engine.TrainingDiverged):
            distributed.fit(x * 100, y, epochs=2)


def kill_worker(trainer, index):
    pid = trainer.worker_pids()[index]
    os.kill(pid, signal.SIGKILL)
    return pid


def test_a_killed_worker_is_replaced_and_the_result_unchanged(cluster):
    """SIGKILL worker 1 after update 4 of fit (TBPTT(6, 9): its window reaches back into
    the previous one), then worker 0 between streaming pieces: each is replaced from the
    driver's copy of its streams, state and update, and the run ends exactly where an
    undisturbed one does."""
    model, x, y = make_data("lstm", dtype="float32")
    options = dict(k1=6, k2=9, lr=0.05)
    local = train(engine.Trainer(model(), shards=2, **options), x, y)
    with RayTrainer(model(), workers=2, **options) as distributed:
        killed = []

        def on_update(record):
            if record["step"] == 4:
                killed.append(kill_worker(distributed, 1))
        train(distributed, x, y, on_update=on_update)
        assert len(killed) == 1 and killed[0] not in distributed.worker_pids()
        stream(local, x, y, 0)
        killed.append(kill_worker(distributed, 0))
        stream(distributed, x, y, 0)
        assert killed[1] not in distributed.worker_pids()
    assert_same_run(distributed, local)


def test_a_worker_that_keeps_dying_ends_the_run_with_one_error(cluster, tmp_path):
    """Worker 1 is killed and its replacement dies as soon as it is up: after max_retries
    replacements the run stops with WorkerFailed, the model keeps the parameters of the
    last completed update, and the checkpoint of the last epoch loads and continues."""
    model, x, y = make_data("gru", dtype="float32")
    path = tmp_path / "run.npz"
    with RayTrainer(model(), workers=2, max_retries=1, k1=6, lr=0.05) as distributed:
        distributed.fit(x, y, epochs=1, on_epoch=lambda record: engine.save(path, distributed.model, distributed))
        saved = distributed.model.params.copy()
        group = distributed._group
        start = group._start
        started = []

        def start_and_kill():  # a worker whose process dies as soon as it is up
            actor = start()
            pid = ray.get(actor.pid.remote())
            os.kill(pid, signal.SIGKILL)
            started.append(pid)
            return actor
        group._start = start_and_kill
        kill_worker(distributed, 1)
        began = time.perf_counter()
        with pytest.raises(WorkerFailed, match=r"Ray worker 1 \(streams 2\.\.4\) died 2 times in update 6 "
                                               r".*gave up after 1 replacement, .* parameters of update 5$"):
            distributed.fit(x, y, epochs=1)
        assert time.perf_counter() - began < 60
        assert len(started) == 1
        assert np.array_equal(distributed.model.params, saved) and distributed.step == 5
    model_back, trainer_back = engine.load(path)
    assert np.array_equal(model_back.params, saved) and trainer_back.step == 5
    trainer_back.fit(x, y, epochs=1)  # the checkpoint continues on one machine
    assert trainer_back.step == 10


def test_checkpoints_move_between_the_cluster_and_one_machine(cluster, tmp_path):
    """Saved mid-stream with k2 > k1 (carried inputs and states): engine.load continues
    on one machine and RayTrainer.from_checkpoint on the cluster, both exactly as the
    uninterrupted single-machine run."""
    model, x, y = make_data("lstm", dtype="float64", B=6)
    options = dict(k1=5, k2=8, lr=0.02)
    local = train(engine.Trainer(model(), shards=4, **options), x, y)
    path = tmp_path / "ray.npz"
    with RayTrainer(model(), workers=2, shards_per_worker=2, cpus_per_worker=1, **options) as distributed:
        distributed.fit(x, y, epochs=3, validation=(x[:8], y[:8]), patience=2)
        stream(distributed, x, y, 0)
        engine.save(path, distributed.model, distributed)
    _, on_one_machine = engine.load(path)
    assert type(on_one_machine) is engine.Trainer and on_one_machine.shards == 4
    stream(on_one_machine, x, y, 1)
    assert_same_run(on_one_machine, local)
    _, on_cluster = RayTrainer.from_checkpoint(path, workers=2, cpus_per_worker=1)
    with on_cluster:
        assert on_cluster.shards_per_worker == 2
        stream(on_cluster, x, y, 1)
        assert_same_run(on_cluster, local)
        # An exception inside a worker is not retried: one WorkerFailed naming it.
        on_cluster._group._request = lambda w, state: 10 ** 6  # a state step no worker holds
        with pytest.raises(WorkerFailed, match=r"Ray worker 0 failed in update \d+: KeyError: 1000000$"):
            stream(on_cluster, x, y, 0)


def test_bad_options_and_a_cluster_too_small_fail_at_once(cluster):
    model, _, _ = make_data()
    with pytest.raises(ValueError, match="shards"):
        RayTrainer(model(), workers=2, shards=3)
    with pytest.raises(ValueError, match="workers"):
        RayTrainer(model(), workers=0)
    with pytest.raises(ValueError, match="split"):
        RayTrainer(model(), workers=1, split=2)
    with pytest.raises(ClusterUnavailable, match=r"3 workers need 3 CPUs \(1 each\); the Ray cluster has 2$"):
        RayTrainer(model(), workers=3)


def test_a_trainer_waits_for_workers_that_start_slowly_and_says_so(cluster, monkeypatch, capfd):
    """Workers placed but slow to start (a loaded machine importing the engine) are waited
    for past the fixed timeout, with a line on stderr after a few seconds; the run is as usual."""
    import engine.distributed.group as group
    from engine.distributed.worker import Worker

    class SlowWorker(Worker):  # defined here: Ray ships it to the workers by value
        def __init__(self, *args):
            time.sleep(7)
            super().__init__(*args)

    monkeypatch.setattr(group, "Worker", SlowWorker)
    monkeypatch.setattr(group, "START_TIMEOUT", 1.0)  # what a fixed wait would have allowed
    model, x, y = make_data()
    with RayTrainer(model(), workers=2, k1=6) as distributed:
        distributed.fit(x, y, epochs=1)
        assert distributed.step > 0
    told = capfd.readouterr().err
    assert "waiting for 2 of 2 Ray workers to start: " in told and "placed, starting (importing the engine)" in told


def test_cpus_held_by_another_trainer_fail_at_once_naming_it(cluster, tmp_path):
    """The README's order (train, save, from_checkpoint) with the first trainer still open:
    no wait for CPUs that will not come free, one error saying which trainer holds them."""
    model, x, y = make_data()
    path = tmp_path / "m.npz"
    first = RayTrainer(model(), workers=2, k1=6)
    try:
        first.fit(x, y, epochs=1)
        engine.save(path, first.model, first)
        began = time.perf_counter()
        with pytest.raises(ClusterUnavailable, match=r"^the cluster's 2 CPUs are held by another RayTrainer; "
                                                     r"close\(\) it first"):
            RayTrainer.from_checkpoint(path, workers=2)
        with pytest.raises(ClusterUnavailable, match="held by another RayTrainer"):
            RayTrainer(model(), workers=1, k1=6)
        assert time.perf_counter() - began < 10
    finally:
        first.close()
    with RayTrainer.from_checkpoint(path, workers=2)[1] as second:  # closed: its CPUs are free again
        second.fit(x, y, epochs=1)


def test_cli_trains_on_the_cluster_as_on_one_machine(cluster, tmp_path, monkeypatch):
    """`bptt train --ray ADDRESS --workers 2` (this process is already connected), then
    --resume on the cluster: the checkpoint equals a run on one machine in two shards."""
    common = ["train", "--demo", "sine", "--hidden", "6", "--k1", "20", "--streams", "4", "-q"]
    ray_run = ["-o", tmp_path / "ray.npz", "--ray", cluster.address, "--workers", "2"]
    for args in (["--epochs", "1", *ray_run], ["--epochs", "2", "--resume", *ray_run],
                 ["--epochs", "2", "-o", tmp_path / "local.npz"]):
        planned = engine.thread_plan.plan_for  # the local run's shards: 2, as the cluster's workers
        monkeypatch.setattr(engine.trainer, "plan_for", lambda model, T, B, shards=None, **plan: planned(model, T, B, shards or 2, **plan))
        result = CliRunner().invoke(main, [*common, *map(str, args)])
        assert result.exit_code == 0, result.output
    ours, trainer = engine.load(tmp_path / "ray.npz")
    theirs, _ = engine.load(tmp_path / "local.npz")
    assert trainer.step == 2 * 450 // 2 and np.array_equal(ours.params, theirs.params)


def run_cli(*args, **env):
    """`bptt ARGS` in a fresh interpreter (no Ray connection), with Ray kept on loopback."""
    return subprocess.run([sys.executable, "-c", "import sys\nfrom cli import main\nmain(sys.argv[1:])", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, **LOOPBACK, **env})


def test_cli_without_ray_or_with_an_unreachable_address_says_so_quickly(tmp_path):
    closed = _closed_port()
    began = time.perf_counter()
    result = run_cli("train", "--demo", "sine", "--ray", f"127.0.0.1:{closed}", "-o", str(tmp_path / "m.npz"))
    assert time.perf_counter() - began < 30
    assert result.returncode == 2 and result.stderr.splitlines() == [
        f"Error: cannot reach the Ray cluster at 127.0.0.1:{closed}: Connection refused"], result.stderr
    no_ray = subprocess.run([sys.executable, "-c", "import sys\nsys.modules['ray'] = None\nfrom cli import main\n"
                             "main(['train', '--demo', 'sine', '--ray', '127.0.0.1:6379'])"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, **LOOPBACK})
    assert no_ray.returncode == 2
    assert no_ray.stderr.splitlines() == ["Error: training on a Ray cluster needs Ray: pip install 'bptt[ray]'"]
    assert not (tmp_path / "m.npz").exists()
    result = CliRunner().invoke(main, ["train", "--demo", "sine", "--workers", "2"])
    assert result.exit_code == 2 and "--workers applies to training on a Ray cluster" in result.stderr


def _closed_port():
    import socket

    with socket.socket() as probe:  # bound, then released: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_train_on_a_new_local_ray_instance(tmp_path):
    """--ray local starts a Ray instance of its own (on the calling thread: started from
    another one, Ray's start fails after a minute), trains and checkpoints."""
    command = [sys.executable, "-c", "from cli import main; main()", "train", "--demo", "sine", "--ray", "local",
               "--workers", "2", "--hidden", "4", "--k1", "20", "--epochs", "1", "-q", "-o", str(tmp_path / "r.npz")]
    environment = {**os.environ, **LOOPBACK, "PYTHONPATH": str(ROOT)}
    environment.pop("RAY_ADDRESS", None)
    finished = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stderr
    assert engine.read_metadata(tmp_path / "r.npz")["trainer"]["epoch"] == 1

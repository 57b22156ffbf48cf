"""`bptt sweep --ray` on a two-node Ray cluster on loopback (one CPU per node): the issue's
Done-when command at a small scale, results in the local sweep's format, trials spread
over both nodes, and the best model usable by evaluate."""
import csv
import json
import os

# Before Ray is imported (it reads them then): keep 127.0.0.1 as it is, no auth tokens.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"

import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

import engine  # noqa: E402
from cli import main  # noqa: E402

pytest.importorskip("optuna")
pytest.importorskip("ray.tune")


@pytest.fixture(scope="module")
def cluster():
    """Two nodes of one CPU on 127.0.0.1, the dashboard off; traffic stays on loopback."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_done_when_command_on_a_two_node_cluster(cluster, tmp_path):
    import ray

    out = tmp_path / "sw"
    result = CliRunner().invoke(main, [
        "sweep", "--demo", "mackey-glass", "--space", "lr=1e-3..3e-2:log", "--space", "hidden=8,16",
        "--trials", "4", "--seeds", "2", "--epochs", "3", "--k1", "25", "-o", str(out),
        "--ray", cluster.address], prog_name="bptt")
    assert result.exit_code == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
    assert not ray.is_initialized()  # the sweep disconnected from the cluster it joined
    assert sorted(path.name for path in out.iterdir()) == ["best.npz", "data.json", "results.csv",
                                                          "sensitivity.png", "summary.json"]
    with open(out / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 8
    assert list(rows[0]) == ["trial", "lr", "hidden", "seed", "epochs", "best_val_loss", "score", "state",
                             "seconds", "error"]
    assert sorted(row["trial"] for row in rows) == sorted("00112233")
    assert all(row["state"] in ("complete", "pruned") and 1 <= int(row["epochs"]) <= 3 for row in rows)
    assert len([line for line in result.stderr.splitlines() if line.startswith("trial ")]) == 4

    summary = json.loads((out / "summary.json").read_text())
    best = summary["best"]
    assert best is not None and summary["complete"] >= 1
    best_rows = [row for row in rows if int(row["trial"]) == best["trial"]]
    assert {row["state"] for row in best_rows} == {"complete"}
    assert best["val_loss"] == pytest.approx(sum(float(row["best_val_loss"]) for row in best_rows) / 2)
    # best.npz was retrained on the driver from the winning settings and seed: one shard,
    # the same code, so the same validation loss as on the worker
    model, trainer = engine.load(out / "best.npz")
    seed = engine.read_metadata(out / "best.npz")["user"]["sweep"]["seed"]
    assert model.hidden_size == best["settings"]["hidden"]
    assert min(record["val_loss"] for record in trainer.history.epochs) == pytest.approx(
        best["val_loss_per_seed"][str(seed)], rel=1e-4)
    evaluated = CliRunner().invoke(main, ["evaluate", str(out / "best.npz"), "--demo", "mackey-glass", "--json"])
    assert evaluated.exit_code == 0 and json.loads(evaluated.stdout)["mse"] > 0


def test_cpus_held_by_a_trainer_of_this_process_fail_the_ray_sweep_at_once(cluster, tmp_path):
    """Ray Tune would wait for CPUs that an open RayTrainer holds: one error naming it,
    before the sweep writes anything."""
    import time

    import ray

    import engine.sweep
    from engine.demos import load_demo
    from engine.distributed import RayTrainer

    ray.init(address=cluster.address, log_to_driver=False)
    try:
        model = engine.Model(input_size=1, hidden_size=4, output_size=1)
        with RayTrainer(model, workers=2, k1=10):
            began = time.perf_counter()
            with pytest.raises(engine.sweep.SweepError, match="the cluster's 2 CPUs are held by another RayTrainer"):
                engine.sweep.run(load_demo("sine"), {"lr": [1e-3, 1e-2]}, executor="ray", address=cluster.address,
                                 output_dir=tmp_path / "sw", epochs=1, hidden=4)
            assert time.perf_counter() - began < 10
        assert not (tmp_path / "sw").exists()
    finally:
        ray.shutdown()


def test_a_panel_sweep_on_the_cluster_ships_every_data_setting_prepared(cluster, tmp_path, monkeypatch):
    """A directory panel with --streams swept and --metric: every data setting prepared
    once on the driver before the trials start (the workers get them in one object), the
    rows scored in original units."""
    import numpy as np

    import engine.sweep.trial

    (tmp_path / "files").mkdir()
    for index, length in enumerate((80, 120, 200)):
        np.savetxt(tmp_path / "files" / f"s{index}.csv", (10.0 ** index) * np.sin(np.arange(length) / 4),
                   header="v", comments="")
    prepared = []
    original = engine.sweep.trial.prepare
    monkeypatch.setattr(engine.sweep.trial, "prepare",
                        lambda *args, **options: prepared.append(options["streams"]) or original(*args, **options))
    import engine.sweep.ray_tune

    at_start = []   # the preparations made when the trials start
    run_ray = engine.sweep.ray_tune.run_ray
    monkeypatch.setattr(engine.sweep.ray_tune, "run_ray",
                        lambda *args: at_start.extend(prepared) or run_ray(*args))
    out = tmp_path / "sw"
    result = CliRunner().invoke(main, [
        "sweep", str(tmp_path / "files"), "--space", "streams=2,3", "--space", "lr=1e-3,1e-2", "--sampler", "grid",
        "--trials", "4", "--epochs", "1", "--hidden", "4", "--k1", "5", "--metric", "rmse", "--no-prune",
        "-o", str(out), "--ray", cluster.address], prog_name="bptt")
    assert result.exit_code == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
    assert sorted(at_start) == [2, 3]   # one per data setting before the trials start
    assert sorted(prepared) == [2, 3]   # and none after (best.npz retrained on the driver from them)
    with open(out / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 4 and {row["streams"] for row in rows} == {"2", "3"}
    assert all(row["state"] == "complete" and float(row["score"]) > 0 for row in rows)
    assert json.loads((out / "summary.json").read_text())["objective"]["name"] == "rmse"

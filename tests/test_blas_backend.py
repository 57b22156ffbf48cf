"""The kernels' BLAS backends (kernels/blas.py, kernels/gemm.py, engine/blas.py).

A process binds one backend, so each backend runs in a subprocess with BPTT_BLAS set;
the MKL runs skip without the `mkl` wheel. Checked: gemm is np.dot bit for bit with
OpenBLAS on every layout and shape class the kernels use; float64 central differences
with each backend; training is bit-reproducible for a given backend and plan; a cached
kernel runs on whichever backend the next process binds; BPTT_BLAS's errors.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import kernels.blas as blas

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = [pytest.param("openblas"),
            pytest.param("mkl", marks=pytest.mark.skipif(blas.mkl_path() is None, reason="the mkl extra is absent"))]


def run_with(backend, script, **environment):
    """Run python `script` in a fresh process on `backend`; its stdout parsed as JSON."""
    env = {**os.environ, "BPTT_BLAS": backend, "PYTHONPATH": ROOT, **environment}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


SAME_AS_NP_DOT = """
import json, numba, numpy as np
from kernels.gemm import BACKEND, gemm

@numba.njit
def both(a, b, ours, numpys):
    gemm(a, b, ours)
    np.dot(a, b, numpys)

rng = np.random.default_rng(0)
differ, cases = [], 0
# M, K, N: the dot, matrix-vector (either side), matrix product and empty branches
for dtype in (np.float32, np.float64):
    for M, K, N in [(1, 1, 1), (1, 9, 1), (7, 9, 1), (1, 9, 7), (1, 1, 7), (7, 1, 5), (5, 12, 48), (33, 16, 64),
                    (0, 3, 4), (3, 0, 4), (3, 4, 0), (8, 1, 64), (0, 1, 4), (3, 1, 0)]:
        for a_transposed in (False, True):
            for b_transposed in (False, True):
                a = rng.standard_normal((K, M) if a_transposed else (M, K)).astype(dtype)
                a.reshape(-1)[::3] = -0.0  # zero products of either sign
                b = rng.standard_normal((N, K) if b_transposed else (K, N)).astype(dtype)
                a, b = (a.T if a_transposed else a), (b.T if b_transposed else b)
                ours, numpys = np.full((M, N), np.nan, dtype), np.full((M, N), -1.0, dtype)
                both(a, b, ours, numpys)
                cases += 1
                if not SAME:
                    differ.append([str(dtype), M, K, N, a_transposed, b_transposed])
print(json.dumps({"backend": BACKEND.name, "cases": cases, "differ": differ}))
"""


def test_gemm_is_np_dot_bit_for_bit_with_openblas():
    """Every bit, the sign of zero included (np.array_equal takes -0 for +0)."""
    result = run_with("openblas", SAME_AS_NP_DOT.replace("SAME", "ours.tobytes() == numpys.tobytes()"))
    assert result["backend"] == "openblas" and result["cases"] == 2 * 14 * 4
    assert result["differ"] == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_gemm_shapes_on_each_backend(backend):
    """Same shapes on each backend: the right products (np.dot's up to rounding)."""
    script = SAME_AS_NP_DOT.replace("SAME", "np.allclose(ours, numpys, rtol=1e-5, atol=1e-5)")
    result = run_with(backend, script)
    assert result["backend"] == backend and result["differ"] == []


GRADIENT_CHECKS = """
import json, engine
worst = {}
for cell in ("lstm", "gru", "rnn"):
    for batch in (1, 3):  # one stream: the matrix-vector branch; three: matrix products
        check = engine.gradient_check(cell, input_size=2, hidden_size=4, output_size=2, num_layers=2,
                                      steps=4, batch=batch)
        worst[f"{cell},{batch}"] = check["max_rel_error"]
print(json.dumps({"backend": engine.blas.backend()["name"], "worst": worst}))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_checks_pass_on_each_backend(backend):
    result = run_with(backend, GRADIENT_CHECKS)
    assert result["backend"] == backend
    assert max(result["worst"].values()) < 1e-6, result["worst"]


TRAINING = """
import json, numpy as np, engine
rng = np.random.default_rng(0)
x = rng.standard_normal((60, 4, 2)).astype(np.float32)
y = rng.standard_normal((60, 4, 1)).astype(np.float32)
model = engine.Model("lstm", 2, 4, 1, dtype="float32", seed=0)
trainer = engine.Trainer(model, k1=10, shards=2)
trainer.fit(x, y, epochs=2)
print(json.dumps({"backend": engine.blas.backend()["name"], "plan": trainer.thread_plan["shards"],
                  "params": model.params.tobytes().hex()}))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_is_bit_reproducible_for_a_backend_and_plan(backend):
    first, second = run_with(backend, TRAINING), run_with(backend, TRAINING)
    assert first["backend"] == second["backend"] == backend and first["plan"] == 2
    assert first["params"] == second["params"]


CACHED = """
import json, sys, time
started = time.perf_counter()
import numpy as np
sys.path.insert(0, sys.argv[1])
from cached_product import product
from kernels.gemm import BACKEND
rng = np.random.default_rng(1)
a, b = rng.standard_normal((40, 70)), rng.standard_normal((30, 70)).T
out = np.empty((40, 30))
product(a, b, out)
print(json.dumps({"backend": BACKEND.name, "hits": sum(product.stats.cache_hits.values()),
                  "misses": sum(product.stats.cache_misses.values()), "out": out.tobytes().hex(),
                  "seconds": time.perf_counter() - started}))
"""


@pytest.mark.skipif(blas.mkl_path() is None, reason="the mkl extra is absent")
def test_a_cached_kernel_runs_on_the_next_process_backend(tmp_path):
    """The on-disk cache holds no library address: compiled with one backend, loaded by a
    process on the other, it gives that backend's results (those of a fresh compile)."""
    (tmp_path / "cached_product.py").write_text(
        "import numba\nfrom kernels.gemm import gemm\n\n\n"
        "@numba.njit(cache=True)\ndef product(a, b, out):\n    gemm(a, b, out)\n")

    def run(backend, cache):
        script = CACHED.replace("sys.argv[1]", repr(str(tmp_path)))
        return run_with(backend, script, NUMBA_CACHE_DIR=str(tmp_path / cache))

    compiled = run("openblas", "shared")
    cached = run("mkl", "shared")
    fresh = run("mkl", "other")
    assert (compiled["misses"], cached["misses"], cached["hits"]) == (1, 0, 1)
    assert cached["backend"] == "mkl" and cached["out"] == fresh["out"]


def test_an_unknown_backend_is_one_error_line(tmp_path):
    env = {**os.environ, "BPTT_BLAS": "atlas", "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-c", "from cli import main; main()", "info", str(tmp_path / "x.npz")],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr == "Error: BPTT_BLAS='atlas': expected one of openblas, mkl\n"


def test_mkl_forced_without_the_wheel(monkeypatch):
    """The library's error is an ImportError naming the extra; the CLI prints it as one
    line with status 2 (run for real where the wheel is absent)."""
    monkeypatch.setattr(blas, "mkl_path", lambda: None)
    with pytest.raises(ImportError, match=r"BPTT_BLAS=mkl: Intel MKL is not installed here \(pip install 'bptt\[mkl\]'"):
        blas._mkl()


@pytest.mark.skipif(blas.mkl_path() is not None, reason="the mkl extra is installed")
def test_mkl_forced_without_the_wheel_at_the_cli(tmp_path):
    env = {**os.environ, "BPTT_BLAS": "mkl", "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-c", "from cli import main; main()", "info", str(tmp_path / "x.npz")],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and done.stderr.startswith("Error: BPTT_BLAS=mkl: Intel MKL is not installed")
    assert done.stderr.count("\n") == 1


def test_the_default_and_what_the_engine_reports(monkeypatch):
    """Without BPTT_BLAS: MKL where the wheel is installed on an Intel x86-64 CPU, else
    OpenBLAS; engine.blas.backend() names the one in use."""
    import engine

    monkeypatch.delenv("BPTT_BLAS", raising=False)
    monkeypatch.setattr(blas, "is_intel_cpu", lambda: False)
    assert blas.chosen_name() == "openblas"
    monkeypatch.setattr(blas, "is_intel_cpu", lambda: True)
    assert blas.chosen_name() == ("mkl" if blas.mkl_path() is not None else "openblas")
    described = engine.blas.backend()
    assert described["name"] in blas.BACKENDS and os.path.exists(described["library"]) and described["version"]


def test_the_checkpoint_records_the_backend_and_info_shows_it(tmp_path):
    import engine
    from click.testing import CliRunner

    from cli import main

    path = tmp_path / "model.npz"
    engine.save(path, engine.Model("rnn", 1, 4, 1, seed=0))
    here = engine.blas.backend()
    assert engine.read_metadata(path)["blas"] == {"name": here["name"], "version": here["version"]}
    shown = CliRunner().invoke(main, ["info", str(path)])
    label = f"{here['name']} {here['version']}"
    assert shown.exit_code == 0 and f"BLAS:     {label} when saved; this process uses {label}" in shown.output


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_blas_thread_on_each_backend(backend):
    """Importing the engine leaves the backend, and SciPy's OpenBLAS that np.dot in jitted
    code calls, at one thread each."""
    script = ("import json, engine, kernels.blas as blas; "
              "print(json.dumps([engine.blas.blas_threads(), blas._openblas_threads(blas._scipy_openblas())[1]()]))")
    assert run_with(backend, script) == [1, 1]


def test_gemm_refuses_mismatched_shapes_as_np_dot_does():
    """The shape check, inside the code gemm emits in its caller: a ValueError, nothing
    written."""
    import numba

    from kernels.gemm import gemm

    @numba.njit
    def product(a, b, out):
        return gemm(a, b, out)

    a, b = np.ones((2, 3)), np.ones((3, 4))
    assert (product(a, b, np.empty((2, 4))) == 3).all()
    for b_shape, out_shape, message in [((2, 4), (2, 4), "incompatible array sizes"),
                                        ((3, 4), (3, 4), "incompatible output array size"),
                                        ((3, 4), (2, 5), "incompatible output array size")]:
        out = np.full(out_shape, 7.0)
        with pytest.raises(ValueError, match=rf"{message} for gemm\(a, b, out\)"):
            product(a, np.ones(b_shape), out)
        assert (out == 7).all()

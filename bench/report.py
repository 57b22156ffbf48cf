"""Plain-text tables of benchmark records (see bench.runner.run_bench)."""
import json

from bench.resets import MAX_COST
from engine.files import atomic_write
from engine.thread_plan import plan_label


def format_table(records):
    """Throughput (thousands of steps/s, GFLOP/s, engine/peer ratios), peak memory and
    start time per configuration; the engine's phases and workspace; full-BPTT memory
    growth; the cost of resets; packing a panel; the thread plans beside a busy core;
    compile time. Sections without records are left out."""
    train = [r for r in records if r["kind"] == "train"]
    peers = sorted({r["impl"] for r in train} - {"engine"})
    sections = [_throughput(train, peers), _phases([r for r in train if r["impl"] == "engine"]),
                _growth([r for r in records if r["kind"] == "full_bptt"]),
                _resets([r for r in records if r["kind"] == "resets"]),
                _panel([r for r in records if r["kind"] == "panel"]),
                _busy([r for r in records if r["kind"] == "busy_core"]),
                _compile([r for r in records if r["kind"] == "compile"])]
    return "\n\n".join(section for section in sections if section)


def _throughput(train, peers):
    if not train:
        return ""
    header = ["config", "impl", "k steps/s", "GFLOP/s"] + [f"vs {peer}" for peer in peers]
    rows = []
    for r in train:
        ratios = [_ratio(r.get(f"ratio_{peer}")) for peer in peers]
        rows.append([r["config"], r["impl"], f"{r['steps_per_s'] / 1e3:.1f}", f"{r['gflops']:.2f}",
                     *ratios, f"{r['peak_mb']:.0f}", f"{r['first_step_s']:.2f}", f"{r['other_load']:.2f}",
                     plan_label(r.get("plan"))])
    title = ("Training step (forward, MSE, backward, clip, Adam), float32; vs = engine / peer; "
             "other cores = CPU used by other processes meanwhile; plan = the engine's shards x "
             "streams per shard, or streams/h threads sharing each step by hidden blocks "
             "(engine/thread_plan.py)")
    table = _columns(header + ["peak MB", "first step s", "other cores", "plan"], rows)
    return title + "\n" + table + _blas_line([r for r in train if r["impl"] == "engine"])


def _blas_line(engine):
    """The BLAS backend of the engine's GEMMs (engine/blas.py; BPTT_BLAS forces one) and,
    for OpenBLAS, which kernels it ran and whether OPENBLAS_CORETYPE forced them (a forced
    older set, such as Haswell's AVX2 on an AVX-512 CPU, runs GEMMs at about half speed;
    the peers' BLAS ignores it)."""
    blas = next((r["blas"] for r in engine if r.get("blas")), None)
    if blas is None:
        return ""
    chosen = next((r.get("blas_forced") for r in engine if r.get("blas_forced")), None)
    forced_backend = f", forced by BPTT_BLAS={chosen}" if chosen else ""
    if blas["name"] == "mkl":
        return f"\nengine BLAS: Intel MKL {blas['version']}, one thread{forced_backend}"
    core = next((r.get("blas_core") for r in engine if r.get("blas_core")), None)
    forced = next((r.get("openblas_coretype") for r in engine if r.get("openblas_coretype")), None)
    how = (f"forced by OPENBLAS_CORETYPE={forced}; unset, OpenBLAS picks the kernels for this CPU"
           if forced else "OpenBLAS's own pick for this CPU")
    kernels = f", {core} kernels ({how})" if core else ""
    return f"\nengine BLAS: SciPy's OpenBLAS {blas['version'] or ''}{kernels}{forced_backend}"


def _phases(engine):
    if not engine:
        return ""
    header = ["config", "forward ms", "backward ms", "clip ms", "optimize ms", "phases ms",
              "step ms", "workspace KB", "minimum KB", "ratio"]
    rows = []
    for r in engine:
        phases = [r[f"{phase}_s"] for phase in ("forward", "backward", "clip", "optimize")]
        rows.append([r["config"], *(f"{s * 1e3:.3f}" for s in phases), f"{sum(phases) * 1e3:.3f}",
                     f"{r['seconds_per_step'] * 1e3:.3f}", f"{r['workspace_bytes'] / 1024:.0f}",
                     f"{r['min_activation_bytes'] / 1024:.0f}", f"{r['workspace_ratio']:.2f}"])
    title = ("Engine phases per step (step = Trainer.partial_fit; phases ms = their sum) and "
             "activation workspace against the minimum")
    return title + "\n" + _columns(header, rows)


def _growth(growth):
    if not growth:
        return ""
    header = ["config", "impl", "T", "peak MB", "growth B/step", "minimum B/step", "workspace MB"]
    rows = []
    for r in growth:
        if "skipped" in r:
            rows.append([r["config"], r["impl"], str(r["T"]), r["skipped"], "", "", ""])
            continue
        slope = r.get("growth_bytes_per_step")
        workspace = r.get("workspace_bytes")
        rows.append([r["config"], r["impl"], str(r["T"]), f"{r['peak_mb']:.0f}",
                     "" if slope is None else f"{slope:.0f}", f"{r['min_activation_bytes'] / r['T']:.0f}",
                     "" if workspace is None else f"{workspace / 2**20:.1f}"])
    title = "Full BPTT over T steps (one update), peak memory of a fresh process"
    return title + "\n" + _columns(header, rows)


def _resets(resets):
    return "\n".join(
        f"Resets ({r['config']}, a reset every {r['period']} steps per stream): "
        f"{r['seconds_per_step_resets'] * 1e3:.3f} ms per step against {r['seconds_per_step'] * 1e3:.3f} ms "
        f"without, cost {r['cost'] * 100:+.1f}% ({r['cpu_cost'] * 100:+.1f}% in CPU time; target "
        f"<= {MAX_COST * 100:.0f}%; other cores {r['other_load']:.2f})" for r in resets)


def _panel(panels):
    from bench.panel import describe  # here: `python -m bench.panel` runs clean

    return "\n".join(describe(r) for r in panels)


def _busy(records):
    if not records:
        return ""
    header = ["config", "plan", "quiet ms/step", "busy ms/step", "busy / quiet", "other cores"]
    rows = [[r["config"], r["plan"], f"{r['quiet_s'] * 1e3:.3f}", f"{r['busy_s'] * 1e3:.3f}", f"{r['ratio']:.2f}",
             f"{r['other_load_quiet']:.2f} / {r['other_load_busy']:.2f}"] for r in records]
    title = ("Thread plans beside a busy core: the step with each plan given, quiet and while another "
             "process burns one core (other cores = CPU used by other processes, quiet / busy, the "
             "neighbour included)")
    return title + "\n" + _columns(header, rows)


def _compile(compiles):
    return "\n".join(f"Engine compile, all kernels: cold {r['cold_s']:.1f} s, cached start "
                     f"{r['cached_s']:.2f} s" for r in compiles)


def _ratio(value):
    return "" if value is None else f"{value:.2f}x"


def _columns(header, rows):
    """Left-aligned first two columns, right-aligned numbers."""
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = []
    for row in [header] + rows:
        cells = [cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def write_json(path, result):
    """A benchmark's result as indented JSON at `path`, written atomically (its -o, checked
    by engine.files.check_output before the run)."""
    with atomic_write(path, "w") as file:
        json.dump(result, file, indent=1)

"""Verify a GPU machine in one command: tests, CuPy against NumPy, benchmarks, one report.

    python -m flmn_np.gpucheck [--steps 300] [--out results/gpucheck] [--repeats 10]

1. the GPU-only tests (pytest on the tests whose names say gpu or cupy);
2. training from the same seed on CuPy at each of the three levels of core/kernels.py
   (FLMN_FUSED unset: 'step'; 'elementwise'; 0: the plain xp code) and on NumPy (FLMN and MANN,
   Adam, random episodes of the real sizes): the losses of every step agree within 1e-9 in
   float64 and within 1e-3 in float32 (float32 GEMMs on a GPU sum in another order than on the
   CPU; the gap grows over the steps);
3. `flmn_np.bench` at B = 16, 64, 256 on CuPy at each level, the kernel launches per time step
   of each level (counted on the CPU by bench), and PyTorch CUDA eager
   (benchmarks/torch_flmn.py) when torch sees the GPU;
4. gpucheck_<card>.json and gpucheck_<card>.md in --out, with the seconds each part took.
Exit code 0 when the tests pass and the losses agree, 1 otherwise, 2 (one line) without a GPU.

Time, estimated from the step counts (B = 16, T = 50): the training comparisons are 4 curves of
300 steps on NumPy (~70 ms a step on a CPU: ~85 s) and 12 on CuPy (the xp level ~80 ms a step,
launch-bound at ~7,600 operations: ~100 s; the two fused levels well under half that: < 80 s);
the benchmarks 18 CuPy runs of ~25 steps (< 40 s) and PyTorch (< 10 s); the GPU tests compile
the kernels once (< 90 s); the launch counts ~10 s on the CPU. About 6 minutes in all; 8 at
most with --steps 300.
"""
import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .bench import bench, gpu_stack, operation_counts, stack_markdown
from .core.backend import BackendError, get_xp, to_numpy
from .core.models import ModelConfig, init_params, loss_and_grads
from .core.optim import Adam
from .cli import int_at_least, run_command

REPO = Path(__file__).resolve().parents[1]
LOSS_TOL = {"float64": 1e-9, "float32": 1e-3}
BATCH_SIZES = (16, 64, 256)
# level -> FLMN_FUSED (core/kernels.LEVELS; None: unset, the default)
LEVEL_ENV = {"step": None, "elementwise": "elementwise", "xp": "0"}


@contextlib.contextmanager
def fused_level(level):
    """FLMN_FUSED set for `level` inside the block, restored after it."""
    saved = os.environ.get("FLMN_FUSED")
    os.environ.pop("FLMN_FUSED", None)
    if LEVEL_ENV[level] is not None:
        os.environ["FLMN_FUSED"] = LEVEL_ENV[level]
    try:
        yield
    finally:
        os.environ.pop("FLMN_FUSED", None)
        if saved is not None:
            os.environ["FLMN_FUSED"] = saved


def gpu_tests():
    """Run the GPU-only tests; returns {'returncode', 'summary'}."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-k", "gpu or cupy",
                           str(REPO / "tests")], cwd=REPO, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    return {"returncode": proc.returncode, "summary": lines[-1] if lines else proc.stderr.strip()}


def train_losses(xp, model, dtype, steps, seed=0, batch_size=16):
    """The loss of each of `steps` Adam steps from init_params(seed), on random episodes drawn
    from a host Generator seeded with `seed` (the same batches on every backend)."""
    cfg = ModelConfig(model=model)
    params = init_params(cfg, seed, xp, dtype)
    opt = Adam(params)
    rng = np.random.default_rng(seed)
    T = cfg.n_classes * 10
    losses = []
    for _ in range(steps):
        x = (rng.random((batch_size, T, cfg.input_size)) < 0.1).astype(dtype)
        y = rng.integers(0, cfg.n_classes, size=(batch_size, T))
        loss, _, grads = loss_and_grads(params, xp.asarray(x), xp.asarray(y), cfg)
        opt.step(params, grads)
        losses.append(float(to_numpy(loss)))
    return np.array(losses)


def compare_losses(a, b, dtype):
    """{'max_abs_diff', 'tolerance', 'ok'} for two loss curves of the same run."""
    diff = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    return {"max_abs_diff": diff, "tolerance": LOSS_TOL[dtype], "ok": diff <= LOSS_TOL[dtype],
            "final_loss": [float(a[-1]), float(b[-1])]}


def bench_cupy(batch_sizes, repeats):
    """flmn_np.bench on CuPy for each level, model and B."""
    rows = []
    for level in LEVEL_ENV:
        with fused_level(level):
            for model in ("flmn", "mann"):
                for B in batch_sizes:
                    r = bench(model, B, "cupy", repeats=repeats, count=False)
                    rows.append({"impl": f"cupy {level}", "model": model, "batch_size": B,
                                 "ms_per_step": r["ms_per_step"],
                                 "episodes_per_s": r["episodes_per_s"]})
    return rows


def launch_counts():
    """Kernel launches per time step of each level at B = 16 (bench's count, on the CPU; on
    the xp level every array operation is a launch)."""
    rows = []
    for model, reads in (("flmn", 1), ("mann", 1), ("mann", 4)):
        r = operation_counts(ModelConfig(model=model, reads=reads), 16)
        rows.append({"model": model, "reads": reads,
                     "step": r["cupy_launches_per_time_step"],
                     "elementwise": r["cupy_elementwise_launches_per_time_step"],
                     "xp": r["array_ops_per_time_step"]})
    return rows


def bench_torch_cuda(batch_sizes, repeats, warmup=3):
    """FLMN steps of benchmarks/torch_flmn.py on CUDA (eager), or (None, why not)."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    if not torch.cuda.is_available():
        return None, f"torch {torch.__version__} sees no CUDA device"
    path = REPO / "benchmarks" / "torch_flmn.py"
    if not path.is_file():
        return None, f"{path.name} is not beside the package"
    spec = importlib.util.spec_from_file_location("torch_flmn", path)
    torch_flmn = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(torch_flmn)
    cfg = ModelConfig(model="flmn")
    rows = []
    torch.set_default_device("cuda")     # flmn_loss makes its state with the default device
    try:
        for B in batch_sizes:
            p = {k: torch.tensor(v, requires_grad=True) for k, v in init_params(cfg, 0, np).items()}
            opt = torch.optim.Adam(p.values(), lr=1e-3)
            rng = np.random.default_rng(0)
            x = torch.tensor((rng.random((B, 50, cfg.input_size)) < 0.1).astype(np.float32))
            y = torch.tensor(rng.integers(0, cfg.n_classes, (B, 50)))
            times = []
            for i in range(warmup + repeats):
                torch.cuda.synchronize()
                start = time.perf_counter()
                opt.zero_grad()
                torch_flmn.flmn_loss(p, x, y, cfg).backward()
                opt.step()
                torch.cuda.synchronize()
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1e3)
            ms = statistics.median(times)
            rows.append({"impl": f"torch {torch.__version__} cuda eager", "model": "flmn",
                         "batch_size": B, "ms_per_step": round(ms, 3),
                         "episodes_per_s": round(B / ms * 1e3, 1)})
    finally:
        torch.set_default_device("cpu")
    return rows, None


def card_name():
    """The GPU's name as CUDA reports it, e.g. 'NVIDIA H100 80GB HBM3'."""
    import cupy
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def markdown(report):
    """The report as a short markdown page."""
    lines = [f"# gpucheck: {report['card']}", "",
             f"CuPy {report['cupy']}, CUDA runtime {report['cuda_runtime']}, "
             f"NumPy {report['numpy']}, {report['host']}", "",
             f"GPU-only tests: {report['tests']['summary']} (exit {report['tests']['returncode']})", "",
             f"## Training {report['steps']} steps from one seed, CuPy vs NumPy", "",
             "| level | model | dtype | max abs loss difference | tolerance "
             "| final loss (cupy, numpy) | ok |",
             "|---|---|---|---|---|---|---|"]
    for r in report["training"]:
        lines.append(f"| {r['level']} | {r['model']} | {r['dtype']} | {r['max_abs_diff']:.2e} "
                     f"| {r['tolerance']:.0e} | {r['final_loss'][0]:.6f}, {r['final_loss'][1]:.6f} "
                     f"| {'yes' if r['ok'] else 'NO'} |")
    lines += ["", "## Kernel launches per time step at B = 16 (counted on the CPU by bench)", "",
              "| model | R | step | elementwise | xp |", "|---|---|---|---|---|"]
    for r in report["launches"]:
        lines.append(f"| {r['model']} | {r['reads']} | {r['step']} | {r['elementwise']} "
                     f"| {r['xp']} |")
    lines += ["", "## Training step (forward, backward, Adam), T = 50, float32", "",
              "| implementation | model | B | ms/step | episodes/s |", "|---|---|---|---|---|"]
    for r in report["bench"]:
        lines.append(f"| {r['impl']} | {r['model']} | {r['batch_size']} | {r['ms_per_step']:.2f} "
                     f"| {r['episodes_per_s']:.0f} |")
    if report.get("torch_note"):
        lines += ["", f"PyTorch not measured: {report['torch_note']}."]
    if report.get("stack"):
        lines += stack_markdown(report["stack"])
    lines += ["", "Seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in report["seconds"].items())]
    return "\n".join(lines) + "\n"


def write_report(report, out_dir):
    """gpucheck_<card>.json and .md in out_dir; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"gpucheck_{slug(report['card'])}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path


def run(args):
    cp = get_xp("cupy")                        # BackendError, one line, without a usable GPU
    import cupy
    report = {"card": card_name(), "cupy": cupy.__version__,
              "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(), "numpy": np.__version__,
              "host": platform.platform(), "steps": args.steps}
    seconds = report["seconds"] = {}

    @contextlib.contextmanager
    def part(name):
        print(f"{name} ...", flush=True)
        start = time.perf_counter()
        yield
        seconds[name] = round(time.perf_counter() - start, 1)

    print(f"gpucheck on {report['card']}", flush=True)
    with part("GPU-only tests"):
        report["tests"] = gpu_tests()
    report["training"] = []
    with part(f"training {args.steps} steps, each level and NumPy"):
        for model in ("flmn", "mann"):
            for dtype in ("float64", "float32"):
                reference = train_losses(np, model, dtype, args.steps)
                for level in LEVEL_ENV:
                    with fused_level(level):
                        result = compare_losses(train_losses(cp, model, dtype, args.steps),
                                                reference, dtype)
                    report["training"].append({"level": level, "model": model, "dtype": dtype,
                                               **result})
    with part("launch counts"):
        report["launches"] = launch_counts()
    with part("benchmarks"):
        report["bench"] = bench_cupy(BATCH_SIZES, args.repeats)
        torch_rows, report["torch_note"] = bench_torch_cuda(BATCH_SIZES, args.repeats)
        report["bench"] += torch_rows or []
    with part("a stack of models"):
        report["stack"] = gpu_stack(args.repeats)
    report["ok"] = report["tests"]["returncode"] == 0 and all(r["ok"] for r in report["training"])
    paths = write_report(report, args.out)
    print(markdown(report))
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0 if report["ok"] else 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m flmn_np.gpucheck",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int_at_least(1), default=300,
                        help="training steps per comparison")
    parser.add_argument("--repeats", type=int_at_least(1), default=10,
                        help="timed steps per benchmark")
    parser.add_argument("--out", type=str, default="results/gpucheck", help="report folder")
    args = parser.parse_args(argv)
    return run_command("gpucheck", run_on_gpu, args)


def run_on_gpu(args):
    try:
        return run(args)
    except BackendError as e:
        raise BackendError(f"no usable GPU: {e}") from None


if __name__ == "__main__":
    sys.exit(main())

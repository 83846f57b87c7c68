"""Verify a GPU machine in one command, within the window a lent GPU gives: a plan of parts,
each with its own time budget, cut and reported when it overruns; one report.

    python -m flmn_np.gpucheck --quick        at most 2 minutes: the real launch path
    python -m flmn_np.gpucheck                at most 8 minutes: the quick parts, then the rest
                               [--steps 300] [--out results/gpucheck] [--repeats 10]

The quick parts (QUICK_PLAN, 115 s in all):
1. start-up: get_xp('cupy') compiles every kernel and launches each once (backend._start_cupy);
2. every kernel of every level launched once: one tiny training step (FLMN; MANN R = 2, its add
   vector separate and the key) in float32 and float64 at each of the three levels of
   core/kernels.py (FLMN_FUSED unset: 'step'; 'elementwise'; 0: the plain xp code), its loss
   against NumPy's;
3. a stack of 2 models at the 'step' level: after an Adam step every parameter is still a view
   of the optimizer's flat buffer (device pointers) and each model equals itself trained alone;
4. 20 training steps per level against NumPy at the real sizes (B = 16, T = 50).
The full check adds (FULL_PLAN, 475 s in all): the GPU-only tests (pytest on the tests whose
names say gpu or cupy), --steps training steps per level against NumPy, the kernel launches per
time step of each level (counted on the CPU by bench), `flmn_np.bench` at B = 16, 64, 256 at
each level and PyTorch CUDA eager (benchmarks/torch_flmn.py) where torch sees the GPU, and a
stack of G = 1, 8, 32 models against as many single ones.

Training comparisons: the losses of every step agree within 1e-9 in float64 and within 1e-3 in
float32 (float32 GEMMs on a GPU sum in another order than on the CPU; the gap grows over the
steps). The NumPy references are sized from a measured time model: one NumPy step and one step
of each level are timed first, and the number of compared steps is what the part's budget
holds (at most the steps asked for; the report says how many ran). Measured on a CPU at B = 16,
one thread: 190-343 ms per NumPy reference step (float32/float64, FLMN/MANN).
Every part prints its progress; the report (gpucheck_<card>.json and .md in --out) gives each
part's budget, seconds and whether it finished or was cut. Exit code 0 when every part finished
and every comparison agrees, 1 otherwise, 2 (one line) without a GPU.
"""
import argparse
import dataclasses
import importlib.util
import json
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .bench import bench, gpu_stack, operation_counts, random_batch, stack_markdown
from .core import backend, levels
from .core.backend import BackendError, get_xp, to_numpy
from .core.models import ModelConfig, init_params, loss_and_grads, stack_params
from .core.optim import Adam
from .cli import int_at_least, run_command
from .errors import FlmnError

REPO = Path(__file__).resolve().parents[1]
LOSS_TOL = {"float64": 1e-9, "float32": 1e-3}
BATCH_SIZES = (16, 64, 256)
# the levels compared, each with the FLMN_FUSED value that chooses it at start-up
LEVEL_ENV = {"step": None, "elementwise": "elementwise", "xp": "0"}


def fused_level(level):
    """The device's arrays at `level` inside the block (levels.use_level), restored after it."""
    return levels.use_level(DEVICE_BACKEND, level)


DEVICE_BACKEND = "cupy"      # whose level fused_level sets (a stood-in device's, in the tests)


def gpu_tests(timeout):
    """Run the GPU-only tests, cut at `timeout` seconds; returns {'returncode', 'summary'}."""
    if not (REPO / "tests").is_dir():
        return {"returncode": None, "summary": "no tests/ beside the package (an installed "
                                               "package): run gpucheck in a checkout for them"}
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-k", "gpu or cupy",
                               str(REPO / "tests")], cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"returncode": None, "summary": f"cut after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    return {"returncode": proc.returncode, "summary": lines[-1] if lines else proc.stderr.strip()}


def train_losses(xp, model, dtype, steps, seed=0, batch_size=16, cfg=None):
    """The loss of each of `steps` Adam steps from init_params(seed), on random episodes drawn
    from a host Generator seeded with `seed` (the same batches on every backend). cfg: the
    model (default: the paper's sizes of `model`)."""
    cfg = cfg or ModelConfig(model=model)
    params = init_params(cfg, seed, xp, dtype)
    opt = Adam(params)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        x, y = random_batch(cfg, batch_size, 10, xp, rng=rng, dtype=dtype)
        loss, _, grads = loss_and_grads(params, x, y, cfg)
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
    """The report as a short markdown page (the sections of the parts that ran)."""
    lines = [f"# gpucheck{' --quick' if report.get('quick') else ''}: {report['card']}", "",
             f"CuPy {report['cupy']}, CUDA runtime {report['cuda_runtime']}, "
             f"NumPy {report['numpy']}, {report['host']}", "",
             "| part | budget s | seconds | status |", "|---|---|---|---|"]
    for r in report["parts"]:
        lines.append(f"| {r['name']} | {r['budget_s']:.0f} | {r['seconds']:.1f} | {r['status']} |")
    if "tests" in report:
        lines += ["", f"GPU-only tests: {report['tests']['summary']} "
                      f"(exit {report['tests']['returncode']})"]
    for r in report.get("checks", []):
        lines += ["", f"{r['check']}: {'ok' if r['ok'] else 'FAILED'} ({r['detail']})"]
    if report.get("training"):
        lines += ["", "## Training from one seed, CuPy vs NumPy", "",
                  "| part | level | model | dtype | steps | max abs loss difference | tolerance "
                  "| final loss (cupy, numpy) | ok |", "|---|---|---|---|---|---|---|---|---|"]
        for r in report["training"]:
            lines.append(f"| {r['part']} | {r['level']} | {r['model']} | {r['dtype']} "
                         f"| {r['steps']} | {r['max_abs_diff']:.2e} | {r['tolerance']:.0e} "
                         f"| {r['final_loss'][0]:.6f}, {r['final_loss'][1]:.6f} "
                         f"| {'yes' if r['ok'] else 'NO'} |")
    if report.get("launches"):
        lines += ["", "## Kernel launches per time step at B = 16 (counted on the CPU by bench)",
                  "", "| model | R | step | elementwise | xp |", "|---|---|---|---|---|"]
        for r in report["launches"]:
            lines.append(f"| {r['model']} | {r['reads']} | {r['step']} | {r['elementwise']} "
                         f"| {r['xp']} |")
    if report.get("bench"):
        lines += ["", "## Training step (forward, backward, Adam), T = 50, float32", "",
                  "| implementation | model | B | ms/step | episodes/s |", "|---|---|---|---|---|"]
        for r in report["bench"]:
            lines.append(f"| {r['impl']} | {r['model']} | {r['batch_size']} "
                         f"| {r['ms_per_step']:.2f} | {r['episodes_per_s']:.0f} |")
    if report.get("torch_note"):
        lines += ["", f"PyTorch not measured: {report['torch_note']}."]
    if report.get("stack"):
        lines += stack_markdown(report["stack"])
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


class PartCut(FlmnError):
    """A part ran past its budget (raised by the alarm set for it)."""


@dataclasses.dataclass
class Part:
    """One part of the plan: its name, budget in seconds and what it does, fn(check)."""
    name: str
    budget_s: float
    fn: object


@dataclasses.dataclass
class Check:
    """What the parts share: the device's namespace, the arguments, the report being filled
    and the running part's deadline (time.monotonic)."""
    xp: object
    args: object
    report: dict
    deadline: float = 0.0

    def left(self):
        return self.deadline - time.monotonic()


def run_part(part, check, number, total):
    """Run one part under its budget: an alarm cuts it at the budget, and what it had added to
    the report stays. -> its row for report['parts']."""
    print(f"[{number}/{total}] {part.name} (budget {part.budget_s:.0f} s) ...", flush=True)
    start = time.monotonic()
    check.deadline = start + part.budget_s

    def alarm(signum, frame):
        raise PartCut(part.name)
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, part.budget_s)
    try:
        part.fn(check)
        status = "done"
    except PartCut:
        status = "cut"
    except Exception as e:          # reported, and the plan goes on
        lines = str(e).strip().splitlines()
        status = f"failed: {type(e).__name__}: {lines[0] if lines else ''}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    seconds = round(time.monotonic() - start, 1)
    print(f"    {status} in {seconds:.1f} s", flush=True)
    return {"name": part.name, "budget_s": part.budget_s, "seconds": seconds, "status": status}


def device_pointer(a):
    """The address of an array's first element: CuPy's device pointer, else the host's."""
    data = getattr(a, "data", None)
    return data.ptr if hasattr(data, "ptr") else a.__array_interface__["data"][0]


def tiny_configs():
    """FLMN and MANN R = 2 (its add vector separate and the key), tiny: one step of each
    launches every kernel of a level."""
    tiny = dict(input_size=8, n_classes=3, hidden=6, slots=5, width=4)
    return (ModelConfig(model="flmn", **tiny), ModelConfig(model="mann", reads=2, **tiny),
            ModelConfig(model="mann", reads=2, mann_add="key", **tiny))


def part_startup(check):
    """get_xp('cupy'): compile every kernel and launch each once (backend._start_cupy)."""
    check.xp = get_xp("cupy")


def part_every_kernel(check):
    """One tiny training step per model and dtype at each level, against NumPy's."""
    rows = check.report.setdefault("checks", [])
    worst, n = 0.0, 0
    for cfg in tiny_configs():
        for dtype in ("float64", "float32"):
            want = train_losses(np, cfg.model, dtype, 1, batch_size=3, cfg=cfg)
            for level in LEVEL_ENV:
                with fused_level(level):
                    got = train_losses(check.xp, cfg.model, dtype, 1, batch_size=3, cfg=cfg)
                r = compare_losses(got, want, dtype)
                worst, n = max(worst, r["max_abs_diff"] / r["tolerance"]), n + 1
                if not r["ok"]:
                    rows.append({"check": "every kernel launched", "ok": False,
                                 "detail": f"{cfg.model} R={cfg.reads} {dtype} {level}: loss "
                                           f"{r['max_abs_diff']:.1e} off"})
                    return
    rows.append({"check": "every kernel of every level launched once", "ok": True,
                 "detail": f"{n} tiny training steps, each loss within "
                           f"{worst:.2g} of its tolerance to NumPy's"})


def stack_views(xp, cfg, G=2, B=3, steps=2):
    """G tiny models stacked at the 'step' level, `steps` Adam steps: (every parameter a view
    of Adam's flat buffer, the largest difference to each model trained alone, relative)."""
    rng = np.random.default_rng(3)
    T = cfg.n_classes * 3
    batches = [((rng.random((G, B, T, cfg.input_size)) < 0.3).astype("float64"),
                rng.integers(0, cfg.n_classes, (G, B, T))) for _ in range(steps)]
    params = stack_params([init_params(cfg, s, xp, "float64") for s in range(G)])
    opt = Adam(params, lr=[1e-2] * G, lead=(G,))
    for x, y in batches:
        opt.step(params, loss_and_grads(params, xp.asarray(x), xp.asarray(y), cfg)[2])
    lo = device_pointer(opt.p)
    views = opt.p is not None and all(
        lo <= device_pointer(params[k]) < lo + opt.p.nbytes for k in params)
    worst = 0.0
    for s in range(G):
        alone = init_params(cfg, s, np, "float64")
        one = Adam(alone, lr=1e-2)
        with fused_level("xp"):         # NumPy's plain code (a stood-in device's too)
            for x, y in batches:
                one.step(alone, loss_and_grads(alone, x[s], y[s], cfg)[2])
        worst = max(worst, max(float(np.max(np.abs(to_numpy(params[k])[s] - alone[k])))
                               / float(np.max(np.abs(alone[k]))) for k in alone))
    return views, worst


def part_stack_views(check):
    rows = check.report.setdefault("checks", [])
    with fused_level("step"):
        views, worst = stack_views(check.xp, tiny_configs()[0])
    rows.append({"check": "a stack at the 'step' level", "ok": views and worst <= 1e-12,
                 "detail": f"parameters {'are' if views else 'are NOT'} views of Adam's flat "
                           f"buffer; largest difference to a model alone {worst:.1e} (float64)"})


TRAINING_BATCH = 16         # the training comparisons' B, at the paper's sizes (training_cfg)


def training_cfg(model):
    return ModelConfig(model=model)


def step_seconds(xp, model, dtype):
    """Seconds of one training step of the comparisons (the faster of a warm-up and one more)."""
    cfg = training_cfg(model)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        train_losses(xp, model, dtype, 1, batch_size=TRAINING_BATCH, cfg=cfg)
        times.append(time.perf_counter() - start)
    return min(times)


def training_part(max_steps, name):
    """A part: each model, dtype and level trained against NumPy, as many steps (<= max_steps)
    as its share of the budget holds by the time model (one step of each timed first)."""
    cases = [(m, d) for m in ("flmn", "mann") for d in ("float64", "float32")]

    def run(check):
        rows = check.report.setdefault("training", [])
        for i, (model, dtype) in enumerate(cases):
            t_np = step_seconds(np, model, dtype)
            t_levels = {}
            for level in LEVEL_ENV:
                with fused_level(level):
                    t_levels[level] = step_seconds(check.xp, model, dtype)
            share = 0.9 * check.left() / (len(cases) - i)
            steps = int(min(max_steps, share / (t_np + sum(t_levels.values()))))
            if steps < 1:
                print(f"    {model} {dtype}: no time left for a step", flush=True)
                continue
            kwargs = dict(batch_size=TRAINING_BATCH, cfg=training_cfg(model))
            reference = train_losses(np, model, dtype, steps, **kwargs)
            for level in LEVEL_ENV:
                with fused_level(level):
                    result = compare_losses(train_losses(check.xp, model, dtype, steps, **kwargs),
                                            reference, dtype)
                rows.append({"part": name, "level": level, "model": model, "dtype": dtype,
                             "steps": steps, "numpy_ms_per_step": round(t_np * 1e3, 1),
                             **result})
                print(f"    {model} {dtype} {level}: {steps} steps, max loss difference "
                      f"{result['max_abs_diff']:.1e}", flush=True)
    return run


def part_tests(check):
    check.report["tests"] = gpu_tests(max(1.0, check.left() - 2.0))


def part_launch_counts(check):
    check.report["launches"] = launch_counts()


def part_bench(check):
    rows = check.report.setdefault("bench", [])
    rows += bench_cupy(BATCH_SIZES, check.args.repeats)
    torch_rows, check.report["torch_note"] = bench_torch_cuda(BATCH_SIZES, check.args.repeats)
    rows += torch_rows or []


def part_stack_bench(check):
    check.report["stack"] = gpu_stack(check.args.repeats)


def plan(quick, steps):
    """The parts to run: QUICK_PLAN, and for the full check the rest after it."""
    parts = [Part("start-up: compile and launch every kernel", 45, part_startup),
             Part("every kernel of every level launched once", 15, part_every_kernel),
             Part("a stack: parameters views of Adam's buffer", 10, part_stack_views),
             Part("20 training steps per level against NumPy", 45,
                  training_part(20, "quick"))]
    if not quick:
        parts += [Part("GPU-only tests", 120, part_tests),
                  Part(f"up to {steps} training steps per level against NumPy", 100,
                       training_part(steps, "full")),
                  Part("launch counts (on the CPU)", 20, part_launch_counts),
                  Part("benchmarks at B = 16, 64, 256", 80, part_bench),
                  Part("a stack of models against single ones", 40, part_stack_bench)]
    return parts


QUICK_LIMIT_S, FULL_LIMIT_S = 120, 480     # what the two plans' budgets may add up to


def device_info():
    """The card and versions for the report's head."""
    import cupy
    return {"card": card_name(), "cupy": cupy.__version__,
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion()}


def run(args):
    usable, reason = backend.cupy_status()
    if not usable:
        raise BackendError(reason)
    report = {**device_info(), "numpy": np.__version__, "host": platform.platform(),
              "quick": args.quick, "steps": args.steps, "parts": []}
    parts = plan(args.quick, args.steps)
    print(f"gpucheck{' --quick' if args.quick else ''} on {report['card']}: {len(parts)} parts, "
          f"{sum(p.budget_s for p in parts):.0f} s of budgets", flush=True)
    check = Check(xp=None, args=args, report=report)
    for i, part in enumerate(parts, 1):
        if check.xp is None and i > 1:
            report["parts"].append({"name": part.name, "budget_s": part.budget_s,
                                    "seconds": 0.0, "status": "skipped: no start-up"})
            continue
        report["parts"].append(run_part(part, check, i, len(parts)))
    report["ok"] = (all(r["status"] == "done" for r in report["parts"])
                    and all(r["ok"] for r in report.get("training", []))
                    and all(r["ok"] for r in report.get("checks", []))
                    and report.get("tests", {}).get("returncode", 0) == 0)
    paths = write_report(report, args.out)
    print(markdown(report))
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0 if report["ok"] else 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m flmn_np.gpucheck",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="the quick parts only (at most 2 minutes)")
    parser.add_argument("--steps", type=int_at_least(1), default=300,
                        help="training steps per comparison in the full check, at most")
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

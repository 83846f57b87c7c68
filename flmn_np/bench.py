"""Benchmark full training steps and their GEMM floor.

    python -m flmn_np.bench --model {flmn,mann} --batch-size B --backend {numpy,cupy} [--json]
    python -m flmn_np.bench --stack G [G ...]    a stack of G models against G single models
    python -m flmn_np.bench --levels [B ...]     NumPy's plain code, its CPU step level and
                                                 the GEMM floor, side by side (default B 16 64)

Times forward + backward + Adam on random inputs of the real shapes, after warm-up, and prints
the median ms per step, episodes per second and peak memory. The GEMM floor is the time of
the same step's matrix products alone: one step runs with the backend's matmul wrapped to
record every operand pair (with its layout), then those products are replayed back to back
and timed. step / floor says how much time goes to everything that is not a matrix product.

It also counts the step's array operations, on the CPU whatever the backend (counting_ops):
array_ops_per_step (and per time step) for the plain xp code, the path NumPy takes, each a
Python dispatch there; and for the CuPy path, where kernels.py fuses parts of the step,
cupy_fused_calls_per_step and cupy_launches_per_step: the same step through the kernel
wrappers, each kernel launch counted once, and views (slices, reshapes, transposes) and
allocations, which launch nothing, left out; a reshape that cannot be a view (of a permuted or
strided array) copies, a launch on a GPU, and counts as `reshape (copy)`.
"""
import argparse
import collections
import contextlib
import functools
import importlib
import json
import os
import pkgutil
import statistics
import sys
import time
import tracemalloc

import numpy as np

from . import core
from .core import cpu_kernels, cpu_level, levels
from .core.backend import BACKENDS, asarray, backend_name, get_xp
from .core.models import ModelConfig, init_params, loss_and_grads, stack_params
from .core.optim import Adam, clip_by_global_norm
from .cli import int_at_least, run_command
from .errors import FlmnError


def _sync(xp):
    """Wait for the device (CuPy); nothing to wait for on the CPU."""
    if backend_name(xp) == "cupy":
        import cupy
        cupy.cuda.Device().synchronize()


def random_batch(cfg, batch_size, samples_per_class, xp, seed=0, rng=None, dtype="float32"):
    """Binary images with 10% ink and random labels, of the real shapes, drawn from `rng` (else
    a Generator seeded with `seed`), x in `dtype`."""
    rng = np.random.default_rng(seed) if rng is None else rng
    T = cfg.n_classes * samples_per_class
    x = (rng.random((batch_size, T, cfg.input_size)) < 0.1).astype(dtype)
    y = rng.integers(0, cfg.n_classes, size=(batch_size, T))
    return asarray(x, xp), asarray(y, xp)


def record_matmuls(xp, fn):
    """Run fn() with xp.matmul wrapped; return the list of operand pairs it multiplied."""
    calls, original = [], xp.matmul

    def recording(a, b):
        calls.append((a, b))
        return original(a, b)

    xp.matmul = recording
    try:
        fn()
    finally:
        xp.matmul = original
    return calls


def time_it(fn, xp, repeats):
    """Median wall time of fn() in ms, device synced."""
    times = []
    for _ in range(repeats):
        _sync(xp)
        start = time.perf_counter()
        fn()
        _sync(xp)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_memory_mb(xp, fn):
    """Peak memory allocated while fn() runs: host arrays (tracemalloc) or CuPy's pool."""
    if backend_name(xp) == "cupy":
        import cupy
        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()
        fn()
        _sync(xp)
        return pool.total_bytes() / 2**20
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


# --- counting array operations --------------------------------------------------------------
#
# One training step runs on array_api_strict (CPU) with every core module's array_namespace
# patched to return a counting proxy of the namespace, and the strict Array's operators,
# indexing and transposes wrapped. A call counts if no counted call is already running
# (top-level calls only: what array_api_strict does inside an operation is not counted).
# The count is the same whatever backend the step is timed on: the xp code is one code path.

_ARRAY_PROPERTIES = ("mT", "T")          # counted: they make (transposed) arrays
_NOT_OPERATIONS = {"__new__", "__repr__", "__str__", "__array__", "__buffer__", "__reduce__",
                   "__array_namespace__", "__dlpack__", "__dlpack_device__", "__hash__",
                   "__iter__", "__init_subclass__"}
# Namespace functions that return information about a dtype, not an array: not operations.
_NOT_NAMESPACE_OPERATIONS = {"finfo", "iinfo", "isdtype"}
# Operations that only make a view of their input, or allocate: no kernel launch on a GPU.
VIEW_OPERATIONS = {"__getitem__", "mT", "T", "reshape", "permute_dims", "expand_dims",
                   "squeeze", "matrix_transpose", "empty"}
# Kinds for the summary (operator and namespace spellings of the same operation together).
OPERATION_KINDS = {
    "multiply": {"__mul__", "__rmul__", "__imul__", "multiply"},
    "add/subtract": {"__add__", "__radd__", "__iadd__", "add", "__sub__", "__rsub__", "__isub__",
                     "subtract", "__neg__", "negative"},
    "divide": {"__truediv__", "__rtruediv__", "__itruediv__", "divide"},
    "slice": {"__getitem__", "__setitem__"},
    "product": {"matmul", "__matmul__", "__rmatmul__", "vecdot", "tensordot"},
    "transpose/reshape": {"mT", "T", "permute_dims", "matrix_transpose", "reshape", "expand_dims"},
    "concat/stack": {"concat", "stack"},
    "reduction": {"sum", "max", "min", "argmin", "argmax", "argsort"},
    "elementwise function": {"tanh", "exp", "log", "sqrt", "minimum", "maximum", "where", "abs"},
}


class OpCounter:
    """Counts top-level calls by name; `counts` is a Counter."""

    def __init__(self):
        self.counts = collections.Counter()
        self.depth = 0

    def wrap(self, name, fn):
        @functools.wraps(fn)
        def counted(*args, **kwargs):
            if self.depth == 0:
                self.counts[name] += 1
            self.depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
        return counted


RESHAPE_COPY = "reshape (copy)"     # counted beside the 'reshape' call itself


def _reshape_copies(reshape, counter):
    """xp.reshape, its copies also counted as 'reshape (copy)' (a top-level reshape whose result
    shares no memory with its input)."""
    @functools.wraps(reshape)
    def counted(x, *args, **kwargs):
        out = reshape(x, *args, **kwargs)
        if counter.depth == 0 and not np.shares_memory(np.asarray(x._array),
                                                       np.asarray(out._array)):
            counter.counts[RESHAPE_COPY] += 1
        return out
    return counted


class _CountingNamespace:
    """The array namespace with every function counted (other attributes passed through)."""

    def __init__(self, xp, counter):
        self._xp, self._counter, self._wrapped = xp, counter, {}

    def __getattr__(self, name):
        if name not in self._wrapped:
            value = getattr(self._xp, name)
            if (callable(value) and not isinstance(value, type) and not name.startswith("_")
                    and name not in _NOT_NAMESPACE_OPERATIONS):
                value = self._counter.wrap(name, value)
            if name == "reshape":
                value = _reshape_copies(value, self._counter)
            self._wrapped[name] = value
        return self._wrapped[name]


def counting_level(name, counter):
    """A levels.Level `name` whose launchers stand in for CuPy's when the CuPy path is counted
    on the CPU: a launch counts once, 'kernel:<name>', and leaves the outputs as allocated. The
    counts do not depend on the values (tested), so the step runs on to the end on whatever
    they hold."""
    def count(spec, *args):
        if counter.depth == 0:
            counter.counts[f"kernel:{spec.name}"] += 1
    return levels.Level(name, elementwise_ops=True, launch=count, launch_raw=count)


def _core_modules():
    return [importlib.import_module(f"{core.__name__}.{m.name}") for m in pkgutil.iter_modules(core.__path__)]


@contextlib.contextmanager
def counting_ops(fuse=False):
    """Within the block, count the array operations done on array_api_strict arrays by the core
    modules; yields the OpCounter. fuse takes the CuPy path at a level of levels.py ('step', or
    True for it, or 'elementwise'): array_api_strict arrays run at it, and the kernel wrappers
    of kernels.py and step_kernels.py run as written (their own xp calls are counted) with each
    kernel launch counted once, as 'kernel:<kernel name>' (counting_level).
    counter.namespace is the counted array_api_strict namespace, for code outside the core
    modules to count its own calls (benchmarks/op_floor.py)."""
    import array_api_strict
    counter = OpCounter()
    namespace = counter.namespace = _CountingNamespace(array_api_strict, counter)
    Array = type(array_api_strict.asarray(0.0))
    saved = []
    stack = contextlib.ExitStack()

    def patch(obj, name, value):
        saved.append((obj, name, vars(obj)[name]))
        setattr(obj, name, value)

    try:
        for module in _core_modules():
            if "array_namespace" in vars(module):
                patch(module, "array_namespace", lambda *arrays: namespace)
        for name, value in list(vars(Array).items()):
            if name in _ARRAY_PROPERTIES:
                patch(Array, name, property(counter.wrap(name, value.fget)))
            elif name.startswith("__") and callable(value) and name not in _NOT_OPERATIONS:
                patch(Array, name, counter.wrap(name, value))
        if fuse:
            level = "step" if fuse is True else fuse
            stack.enter_context(levels.use_level("array_api_strict",
                                                 counting_level(level, counter)))
        with np.errstate(all="ignore"):    # fused: the kernels' outputs hold arbitrary values
            yield counter
    finally:
        stack.close()
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def count_ops(cfg, batch_size=16, samples_per_class=10, fuse=False, stack=None):
    """The array operations of one training step (forward, backward, Adam) of `cfg`, counted on
    the CPU  ->  Counter {operation name: calls}. fuse: the CuPy path (see counting_ops).
    stack=G: a stack of G models, clipped per model (stack_step)."""
    import array_api_strict as xp
    if stack is None:
        params = init_params(cfg, 0, xp)
        opt = Adam(params)
        x, y = random_batch(cfg, batch_size, samples_per_class, xp)
        with counting_ops(fuse) as counter:
            _, _, grads = loss_and_grads(params, x, y, cfg)
            opt.step(params, grads)
        return counter.counts
    step = stack_step(cfg, stack, batch_size, samples_per_class, xp)
    with counting_ops(fuse) as counter:
        step()
    return counter.counts


def by_kind(counts):
    """Totals per OPERATION_KINDS kind ('fused kernel' and 'other' for the rest)."""
    kinds = collections.Counter()
    for name, n in counts.items():
        if name == RESHAPE_COPY:           # its reshape is counted already
            continue
        kind = next((k for k, names in OPERATION_KINDS.items() if name in names),
                    "fused kernel" if name.startswith("kernel:") else "other")
        kinds[kind] += n
    return dict(kinds.most_common())


def operation_counts(cfg, batch_size, samples_per_class=10):
    """The counting fields of bench's result (see the module docstring)."""
    T = cfg.n_classes * samples_per_class
    counts = count_ops(cfg, batch_size, samples_per_class)
    total = sum(n for name, n in counts.items() if name != RESHAPE_COPY)
    result = {"array_ops_per_step": total, "array_ops_per_time_step": round(total / T, 1),
              "ops_by_kind": by_kind(counts)}
    for level, prefix in (("step", "cupy"), ("elementwise", "cupy_elementwise")):
        fused = count_ops(cfg, batch_size, samples_per_class, fuse=level)
        n_launches = launches(fused)
        result.update({f"{prefix}_ops_per_step": sum(n for name, n in fused.items()
                                                     if name != RESHAPE_COPY),
                       f"{prefix}_fused_calls_per_step": sum(n for name, n in fused.items()
                                                             if name.startswith("kernel:")),
                       f"{prefix}_launches_per_step": n_launches,
                       f"{prefix}_launches_per_time_step": round(n_launches / T, 1)})
    return result


def bench(model="flmn", batch_size=16, backend="numpy", reads=1, samples_per_class=10,
          warmup=3, repeats=20, count=True):
    xp = get_xp(backend)
    cfg = ModelConfig(model=model, reads=reads)
    params = init_params(cfg, 0, xp)
    opt = Adam(params)
    x, y = random_batch(cfg, batch_size, samples_per_class, xp)

    def step():
        _, _, grads = loss_and_grads(params, x, y, cfg)
        opt.step(params, grads)

    for _ in range(warmup):
        step()
    ms = time_it(step, xp, repeats)
    calls = record_matmuls(xp, step)
    floor = time_it(lambda: [xp.matmul(a, b) for a, b in calls], xp, repeats)
    return {
        "model": model, "reads": cfg.reads, "batch_size": batch_size, "backend": backend_name(xp),
        "steps_per_episode": cfg.n_classes * samples_per_class,
        "ms_per_step": round(ms, 3), "episodes_per_s": round(batch_size / ms * 1e3, 1),
        "gemm_floor_ms": round(floor, 3), "floor_ratio": round(ms / floor, 2),
        "matmuls_per_step": len(calls), "peak_mem_mb": round(peak_memory_mb(xp, step), 1),
        **(operation_counts(cfg, batch_size, samples_per_class) if count else {}),
    }


STACK_CLIP = 10.0


def stack_step(cfg, G, batch_size, samples_per_class, xp, seed=0):
    """One training step of G models (seeds seed..seed+G-1) as a stack: params (G, ...),
    episodes (G, B, T, D), clipping and Adam per model, one lr per model. G = None: one model
    as a single run holds it (no model axis). -> a function doing one step."""
    seeds = [seed] if G is None else range(seed, seed + G)
    singles = [init_params(cfg, s, xp) for s in seeds]
    batches = [random_batch(cfg, batch_size, samples_per_class, xp, seed=s) for s in seeds]
    if G is None:
        params, (x, y), lead = singles[0], batches[0], ()
        opt = Adam(params)
    else:
        params, lead = stack_params(singles), (G,)
        x, y = (xp.stack([b[i] for b in batches]) for i in (0, 1))
        opt = Adam(params, lr=[1e-3] * G, lead=lead)

    def step():
        _, _, grads = loss_and_grads(params, x, y, cfg)
        opt.step(params, clip_by_global_norm(grads, STACK_CLIP, lead)[0])
    return step


def bench_stack(stacks=(1, 2, 5, 10), model="flmn", batch_size=16, backend="numpy", reads=1,
                samples_per_class=10, warmup=2, repeats=5, count=True):
    """Episodes/s of a stack of G models against G single models stepped one after another, in
    the same process and interleaved (stack step, then the G single steps, `repeats` times), so
    both see the same load; peak memory of each; the CuPy path's launches per stacked step."""
    xp = get_xp(backend)
    cfg = ModelConfig(model=model, reads=reads)
    # one model at the 'step' level, as a single run steps it (unclipped): what a stack's
    # launches are held against
    one = launches(count_ops(cfg, batch_size, samples_per_class, fuse=True)) if count else None
    rows = []
    for G in stacks:
        stack = stack_step(cfg, G, batch_size, samples_per_class, xp)
        singles = [stack_step(cfg, None, batch_size, samples_per_class, xp, seed=s)
                   for s in range(G)]

        def singles_step():
            for one in singles:
                one()
        for _ in range(warmup):
            stack()
            singles_step()
        ms_stack, ms_singles = [], []
        for _ in range(repeats):
            ms_stack.append(time_it(stack, xp, 1))
            ms_singles.append(time_it(singles_step, xp, 1))
        ms, ms1 = statistics.median(ms_stack), statistics.median(ms_singles)
        row = {"G": G, "stack_ms_per_step": round(ms, 2), "singles_ms_per_step": round(ms1, 2),
               "stack_episodes_per_s": round(G * batch_size / ms * 1e3, 1),
               "singles_episodes_per_s": round(G * batch_size / ms1 * 1e3, 1),
               "speedup": round(ms1 / ms, 2),
               "stack_peak_mem_mb": round(peak_memory_mb(xp, stack), 1),
               "single_peak_mem_mb": round(peak_memory_mb(xp, singles[0]), 1)}
        if count:
            row["cupy_launches_per_step"] = launches(count_ops(cfg, batch_size, samples_per_class,
                                                               fuse=True, stack=G))
            row["cupy_launches_vs_one_model"] = round(row["cupy_launches_per_step"] / one, 3)
        rows.append(row)
    return {"model": model, "reads": cfg.reads, "batch_size": batch_size,
            "backend": backend_name(xp), "steps_per_episode": cfg.n_classes * samples_per_class,
            "one_model_cupy_launches_per_step": one, "stacks": rows}


def launches(counts):
    """Kernel launches in count_ops' counts: every operation but views and allocations."""
    return sum(n for name, n in counts.items() if name not in VIEW_OPERATIONS)


def bench_levels(models=(("flmn", 1), ("mann", 1), ("mann", 4)), batch_sizes=(16, 64),
                 samples_per_class=10, warmup=3, repeats=15):
    """NumPy's two levels and the GEMM floor in one process, interleaved (a plain step, then a
    step at the CPU step level, `repeats` times; medians), for each model and B: what the CPU
    build of the step kernels (core/cpu_level.py) gains, and how far each is above the floor.
    Threads: BLAS's from OPENBLAS_NUM_THREADS, the kernels' from OMP_NUM_THREADS."""
    cpu = cpu_level.cpu_step_level()
    rows = []
    for model, reads in models:
        cfg = ModelConfig(model=model, reads=reads)
        for B in batch_sizes:
            steps = {}
            for name, level in (("plain", levels.PLAIN), ("cpu", cpu)):
                with levels.use_level("numpy", level):
                    params = init_params(cfg, 0, np)
                    opt = Adam(params)
                    x, y = random_batch(cfg, B, samples_per_class, np)

                    def step(params=params, opt=opt, x=x, y=y, level=level):
                        with levels.use_level("numpy", level):
                            _, _, grads = loss_and_grads(params, x, y, cfg)
                            opt.step(params, grads)
                    steps[name] = step
            for _ in range(warmup):
                for step in steps.values():
                    step()
            times = {name: [] for name in steps}
            for _ in range(repeats):
                for name, step in steps.items():
                    times[name].append(time_it(step, np, 1))
            # each level's own products: the plain code's include the memory step's (k M^T,
            # w M, ...), which the step kernels compute inside; the CPU level's are the
            # controller's and the output layer's alone
            floors = {}
            for name, step in steps.items():
                calls = record_matmuls(np, step)
                floors[name] = time_it(lambda: [np.matmul(a, b) for a, b in calls], np, repeats)
            floor, own = floors["plain"], floors["cpu"]
            plain, step_ms = (statistics.median(times[n]) for n in ("plain", "cpu"))
            rows.append({"model": model, "reads": reads, "batch_size": B,
                         "plain_ms": round(plain, 2), "cpu_step_ms": round(step_ms, 2),
                         "gemm_floor_ms": round(floor, 2), "cpu_step_gemm_floor_ms": round(own, 2),
                         "speedup": round(plain / step_ms, 2),
                         "plain_floor_ratio": round(plain / floor, 2),
                         "cpu_step_floor_ratio": round(step_ms / own, 2)})
            print(f"{model} R={reads} B={B}: plain {plain:.1f} ms (GEMM floor {floor:.1f}), CPU "
                  f"step level {step_ms:.1f} ms ({plain / step_ms:.2f}x; its GEMM floor "
                  f"{own:.1f})",
                  file=sys.stderr, flush=True)
    return {"blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "kernel_threads": cpu_kernels.num_threads(), "rows": rows}


GPU_STACKS = (1, 8, 32)   # the sizes gpucheck times on CuPy at B = 16


def gpu_stack(repeats):
    """bench_stack on CuPy for GPU_STACKS at B = 16 (what gpucheck reports)."""
    return bench_stack(GPU_STACKS, batch_size=16, backend="cupy", repeats=repeats, count=False)


def stack_markdown(r):
    """bench_stack's result as markdown lines (a heading and a table)."""
    lines = ["", f"## A stack of G models against G single models, {r['model']}, "
             f"B = {r['batch_size']}, T = {r['steps_per_episode']}, {r['backend']}", "",
             "| G | stack ms/step | singles ms/step | stack episodes/s | singles episodes/s "
             "| speedup | stack MB | single MB |", "|---|---|---|---|---|---|---|---|"]
    for row in r["stacks"]:
        lines.append(f"| {row['G']} | {row['stack_ms_per_step']:.1f} "
                     f"| {row['singles_ms_per_step']:.1f} | {row['stack_episodes_per_s']:.0f} "
                     f"| {row['singles_episodes_per_s']:.0f} | {row['speedup']:.2f}x "
                     f"| {row['stack_peak_mem_mb']:.0f} | {row['single_peak_mem_mb']:.0f} |")
    return lines


def print_stack(r):
    print(f"{r['model']} R={r['reads']} B={r['batch_size']} T={r['steps_per_episode']} on "
          f"{r['backend']}: a stack of G models against G single models, interleaved")
    if r.get("one_model_cupy_launches_per_step"):
        print(f"CuPy 'step' level, counted on the CPU: one model "
              f"{r['one_model_cupy_launches_per_step']} launches per step; a stack of G clipped "
              f"per model: the last column")
    print(f"{'G':>3} {'stack ms':>9} {'singles ms':>11} {'stack ep/s':>11} {'singles ep/s':>13} "
          f"{'speedup':>8} {'stack MB':>9} {'single MB':>10} {'CuPy launches':>14}")
    for row in r["stacks"]:
        print(f"{row['G']:>3} {row['stack_ms_per_step']:>9.1f} {row['singles_ms_per_step']:>11.1f} "
              f"{row['stack_episodes_per_s']:>11.0f} {row['singles_episodes_per_s']:>13.0f} "
              f"{row['speedup']:>7.2f}x {row['stack_peak_mem_mb']:>9.0f} "
              f"{row['single_peak_mem_mb']:>10.0f} {row.get('cupy_launches_per_step', '-'):>14}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m flmn_np.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["flmn", "mann"], default="flmn")
    parser.add_argument("--reads", type=int_at_least(1), default=1, help="MANN heads R")
    parser.add_argument("--batch-size", type=int_at_least(1), default=16)
    parser.add_argument("--backend", choices=[b for b in BACKENDS if b != "array_api_strict"], default="numpy")
    parser.add_argument("--repeats", type=int_at_least(1), default=20,
                        help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int_at_least(0), default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--ops", action="store_true", help="also print the array operations by kind")
    parser.add_argument("--levels", type=int_at_least(1), nargs="*", metavar="B",
                        help="NumPy's plain code against its CPU step level and the GEMM floor, "
                             "FLMN, MANN R = 1 and 4, at each B (default 16 64); one JSON line")
    parser.add_argument("--stack", type=int_at_least(1), nargs="+", metavar="G",
                        help="time stacks of G models against G single models (e.g. 1 2 5 10)")
    args = parser.parse_args(argv)
    return run_command("bench", bench_and_print, args)


def bench_and_print(args):
    try:
        if args.levels is not None:
            print(json.dumps(bench_levels(batch_sizes=tuple(args.levels or (16, 64)),
                                          warmup=args.warmup, repeats=args.repeats)))
            return 0
        if args.stack:
            result = bench_stack(args.stack, args.model, args.batch_size, args.backend,
                                 args.reads, warmup=args.warmup, repeats=args.repeats)
        else:
            result = bench(args.model, args.batch_size, args.backend, args.reads,
                           warmup=args.warmup, repeats=args.repeats)
    except ValueError as e:     # a model the flags cannot make (ModelConfig, FLMN_FUSED)
        raise FlmnError(str(e)) from None
    if args.json:
        print(json.dumps(result))
    elif args.stack:
        print_stack(result)
    else:
        r = result
        print(f"{r['model']} R={r['reads']} B={r['batch_size']} T={r['steps_per_episode']} on {r['backend']}: "
              f"{r['ms_per_step']:.1f} ms/step, {r['episodes_per_s']:.0f} episodes/s, "
              f"GEMM floor {r['gemm_floor_ms']:.1f} ms ({r['matmuls_per_step']} products), "
              f"step/floor {r['floor_ratio']:.2f}, peak memory {r['peak_mem_mb']:.0f} MB")
        print(f"array operations: {r['array_ops_per_step']} per step, "
              f"{r['array_ops_per_time_step']} per time step (counted on the CPU)")
        if "cupy_launches_per_step" in r:
            for level, prefix in (("step", "cupy"), ("elementwise", "cupy_elementwise")):
                print(f"CuPy path, level '{level}': {r[f'{prefix}_fused_calls_per_step']} fused "
                      f"kernel calls, {r[f'{prefix}_launches_per_step']} kernel launches per step "
                      f"({r[f'{prefix}_launches_per_time_step']} per time step; views and "
                      f"allocations not counted)")
        if args.ops:
            print("by kind: " + ", ".join(f"{kind} {n}" for kind, n in r["ops_by_kind"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark full training steps and their GEMM floor.

    python -m flmn_np.bench --model {flmn,mann} --batch-size B --backend {numpy,cupy} [--json]

Times forward + backward + Adam on random inputs of the real shapes, after warm-up, and prints
the median ms per step, episodes per second and peak memory. The GEMM floor is the time of
the same step's matrix products alone: one step runs with the backend's matmul wrapped to
record every operand pair (with its layout), then those products are replayed back to back
and timed. step / floor says how much time goes to everything that is not a matrix product.
"""
import argparse
import json
import statistics
import sys
import time
import tracemalloc

import numpy as np

from .core.backend import BACKENDS, BackendError, asarray, backend_name, get_xp
from .core.models import ModelConfig, init_params, loss_and_grads
from .core.optim import Adam


def _sync(xp):
    """Wait for the device (CuPy); nothing to wait for on the CPU."""
    if backend_name(xp) == "cupy":
        import cupy
        cupy.cuda.Device().synchronize()


def random_batch(cfg, batch_size, samples_per_class, xp, seed=0):
    """Binary images with 10% ink and random labels, of the real shapes."""
    rng = np.random.default_rng(seed)
    T = cfg.n_classes * samples_per_class
    x = (rng.random((batch_size, T, cfg.input_size)) < 0.1).astype(np.float32)
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


def bench(model="flmn", batch_size=16, backend="numpy", reads=1, samples_per_class=10,
          warmup=3, repeats=20):
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
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m flmn_np.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["flmn", "mann"], default="flmn")
    parser.add_argument("--reads", type=int, default=1, help="MANN heads R")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backend", choices=[b for b in BACKENDS if b != "array_api_strict"], default="numpy")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    try:
        result = bench(args.model, args.batch_size, args.backend, args.reads,
                       warmup=args.warmup, repeats=args.repeats)
    except (BackendError, ValueError) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        r = result
        print(f"{r['model']} R={r['reads']} B={r['batch_size']} T={r['steps_per_episode']} on {r['backend']}: "
              f"{r['ms_per_step']:.1f} ms/step, {r['episodes_per_s']:.0f} episodes/s, "
              f"GEMM floor {r['gemm_floor_ms']:.1f} ms ({r['matmuls_per_step']} products), "
              f"step/floor {r['floor_ratio']:.2f}, peak memory {r['peak_mem_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

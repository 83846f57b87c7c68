"""Per-call times of the step level's kernels built for the CPU (flmn_np/core/cpu_kernels.py).

    python benchmarks/cpu_kernels.py [--batch-sizes 16 64] [--threads 1 2] [--dtype float32]
                                     [--strict] [--repeats 15]

At the paper's sizes (FLMN: N = 64 slots, W = 40, H = 200; MANN: N = 128, W = 40, R = 1 and
4; the LSTM cell at H = 200; Adam over FLMN's ~540k parameters), each kernel is called through
the launcher with the arguments its wrapper hands over (recorded once), on a state after a few
plain NumPy steps. Printed: microseconds per call, the min and the median of `--repeats` rounds
(each the mean of enough calls to take ~5 ms; on a shared machine the min is the kernel's own
time), per batch size and thread count; then the call overhead: the same launches with no
episode (E = 0, every argument converted and checked, no work), and per training step (T = 50)
what the kernels and the overhead add up to.
--strict builds without reassociation, to compare the flags. Set OPENBLAS_NUM_THREADS=1.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flmn_np.core import cpu_kernels, kernels, step_kernels    # noqa: E402
from flmn_np.core.addressing import COSINE_EPS                  # noqa: E402
from flmn_np.core.models import ModelConfig, param_shapes       # noqa: E402

T_STEPS = 50
MEMORIES = (("FLMN", dict(model="flmn")), ("MANN R=1", dict(model="mann", reads=1)),
            ("MANN R=4", dict(model="mann", reads=4)))


def recorded(wrapper, *args, **kw):
    """[(spec, n_threads, args)] or [(spec, inputs, outputs)] a wrapper hands its launcher."""
    calls = []
    wrapper(*args, **kw, launch=lambda spec, a, b=None: calls.append((spec, a, b)))
    return calls


def memory_calls(cfg, B, dtype, rng, launch):
    """(forward call, backward call) of one memory step at a realistic state."""
    mod, n_head = cfg.memory, cfg.memory.head_size(cfg)
    mem = mod.initial_memory(cfg, B, np, dtype)
    for _ in range(5):
        _, mem, _ = mod.memory_step_forward(rng.standard_normal((B, n_head)).astype(dtype), mem,
                                            cfg)
    heads = rng.standard_normal((B, n_head)).astype(dtype)
    b_head = (0.1 * rng.standard_normal(n_head)).astype(dtype)
    RW = mod.read_size(cfg)
    rh = np.zeros((B, RW + cfg.hidden), dtype)
    fwd = recorded(step_kernels.STEP_FORWARD[cfg.model], heads, b_head, mem, cfg, COSINE_EPS,
                   rh=rh)[0]
    _, mem_t, cache = step_kernels.STEP_FORWARD[cfg.model](heads, b_head, mem, cfg, COSINE_EPS,
                                                           rh=rh, launch=launch)
    carried = ("M_f", "M_l", "w_r", "w_wf") if cfg.model == "flmn" else ("M", "w_r")
    dmem = mem_t._replace(**{f: rng.standard_normal(getattr(mem_t, f).shape).astype(dtype)
                             for f in carried},
                          **{f: None for f in mem_t._fields if f not in carried})
    drh = rng.standard_normal((2, B, RW + cfg.hidden)).astype(dtype)
    bwd = recorded(step_kernels.STEP_BACKWARD[cfg.model], drh[0], drh[1], dmem, cache, cfg,
                   COSINE_EPS, dheads=np.empty((B, n_head), dtype))[0]
    return fwd, bwd


def lstm_calls(H, B, dtype, rng):
    z_in, z_rec = rng.standard_normal((2, B, 4 * H)).astype(dtype)
    c_prev, dh, dh_next, dh_out = rng.standard_normal((4, B, H)).astype(dtype)
    rh = np.zeros((B, 40 + H), dtype)
    fwd = recorded(kernels.lstm_cell_forward_sum, z_in, z_rec, c_prev, rh[:, 40:])[0]
    _, c, cache = kernels.lstm_cell_forward_sum(z_in, z_rec, c_prev, rh[:, 40:],
                                                launch=cpu_kernels.launch_cpu_elementwise)
    bwd = recorded(kernels.lstm_cell_backward_sum, dh, dh_next, dh_out, c, cache,
                   np.empty((B, 4 * H), dtype))[0]
    return fwd, bwd


def adam_call(cfg, dtype, rng):
    n = sum(int(np.prod(shape)) for shape in param_shapes(cfg).values())
    p, m, g = rng.standard_normal((3, n)).astype(dtype)
    v = np.abs(rng.standard_normal(n)).astype(dtype)
    return recorded(kernels.adam_update, p, m, v, g, 1e-3, 0.9, 0.999, 1e-8)[0]


def time_call(fn, repeats, target=0.005):
    """(min, median) wall-clock microseconds per call over `repeats` rounds of ~`target` s."""
    fn()
    n = 1
    while True:                      # calls per round: enough for `target` seconds
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed > target / 4 or n > 1e6:
            break
        n *= 4
    n = max(1, int(n * target / max(elapsed, 1e-9)))
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - start) / n * 1e6)
    return min(rounds), statistics.median(rounds)


def empty_args(spec, args):
    """The same arguments with no episode: E = 0 (the int E, every array kept)."""
    kinds = step_kernels.param_kinds(spec)
    return tuple(0 if name == "E" else a for (_, name), a in zip(kinds, args))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--strict", action="store_true", help="build without reassociation")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    dtype = np.dtype(args.dtype).type
    lib = cpu_kernels.build(reassociate=not args.strict)
    launch, launch_ew = cpu_kernels.launcher(lib)
    built = f"compiled in {lib.seconds:.1f} s" if lib.compiled else "cached"
    print(f"library {lib.path.name} ({built}), libmvec {lib.libmvec}")
    print(f"flags: {' '.join(lib.flags)}")
    print(f"dtype {args.dtype}; us per call: min / median of {args.repeats} rounds of ~5 ms; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    rng = np.random.default_rng(0)
    rows, per_step = [], {}
    for B in args.batch_sizes:
        calls = []
        for label, kw in MEMORIES:
            cfg = ModelConfig(**kw)
            fwd, bwd = memory_calls(cfg, B, dtype, rng, launch)
            calls += [(f"{label} forward", "raw", fwd), (f"{label} backward", "raw", bwd)]
        fwd, bwd = lstm_calls(200, B, dtype, rng)
        calls += [("LSTM forward (H=200)", "ew", fwd), ("LSTM backward (H=200)", "ew", bwd)]
        calls.append(("Adam (FLMN, 542k params)", "ew", adam_call(ModelConfig(), dtype, rng)))
        for threads in args.threads:
            cpu_kernels.set_num_threads(threads)
            for name, kind, (spec, a, b) in calls:
                fn = ((lambda s=spec, a=a, b=b: launch(s, a, b)) if kind == "raw" else
                      (lambda s=spec, a=a, b=b: launch_ew(s, a, b)))
                t = time_call(fn, args.repeats)
                rows.append((name, B, threads, t))
                per_step[(name, B, threads)] = t
    names = list(dict.fromkeys(r[0] for r in rows))
    cols = [(B, t) for B in args.batch_sizes for t in args.threads]
    print(f"\n{'kernel':26s}" + "".join(f"  {f'B={B} {t} thr':>13s}" for B, t in cols))
    for name in names:
        print(f"{name:26s}" + "".join("  %6.1f/%6.1f" % per_step[(name, B, t)] for B, t in cols))

    # the overhead: E = 0 (raw) or 0 rows (elementwise), every argument converted and checked
    cfg = ModelConfig()
    fwd, bwd = memory_calls(cfg, 16, dtype, rng, launch)
    lf, lb = lstm_calls(200, 16, dtype, rng)
    print("\ncall overhead (no work: E = 0 / 0 rows; Python glue + ctypes + checks), us:")
    over = {}
    for name, spec, a, kind in (("FLMN forward", fwd[0], fwd[2], "raw"),
                                ("FLMN backward", bwd[0], bwd[2], "raw"),
                                ("LSTM forward", lf[0], lf[1:], "ew"),
                                ("LSTM backward", lb[0], lb[1:], "ew")):
        if kind == "raw":
            e = empty_args(spec, a)
            fn = lambda s=spec, e=e: launch(s, 0, e)           # noqa: E731
            n_args = len(e)
        else:
            ins, outs = (tuple(x[:0] for x in part) for part in a)
            fn = lambda s=spec, i=ins, o=outs: launch_ew(s, i, o)   # noqa: E731
            n_args = len(ins) + len(outs)
        over[name] = time_call(fn, args.repeats)[0]
        print(f"  {name:16s} {n_args:2d} arguments  {over[name]:6.2f}")
    # the same with __array_interface__ pointers, for comparison
    arrays = [a for a in fwd[2] if isinstance(a, np.ndarray)]
    t_ai = time_call(lambda: [a.__array_interface__["data"][0] for a in arrays], args.repeats)[0]
    print(f"  (for comparison: __array_interface__['data'][0] of the {len(arrays)} arrays of "
          f"FLMN forward alone: {t_ai:.2f} us)")
    per_ts = over["FLMN forward"] + over["FLMN backward"] + over["LSTM forward"] + \
        over["LSTM backward"]
    print(f"  per training step (T = {T_STEPS}, 4 calls per time step): "
          f"{per_ts * T_STEPS / 1000:.2f} ms")

    print(f"\nkernels per training step (T = {T_STEPS}: memory step and LSTM cell forward and "
          f"backward per time step, Adam once; from the min), ms:")
    for B in args.batch_sizes:
        for t in args.threads:
            parts = []
            for label, _ in MEMORIES:
                ms = (T_STEPS * sum(per_step[(f"{label} {d}", B, t)][0] + per_step[
                    (f"LSTM {d} (H=200)", B, t)][0] for d in ("forward", "backward"))
                    + per_step[("Adam (FLMN, 542k params)", B, t)][0]) / 1000
                parts.append(f"{label} {ms:6.2f}")
            print(f"  B={B:<3d} {t} thread(s): " + "   ".join(parts))


if __name__ == "__main__":
    main()

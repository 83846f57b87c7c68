"""The side-by-side table of docs/performance.md, measured in one run: ms/step, episodes/s,
array operations per time step, step / GEMM floor and peak memory for FLMN, MANN R = 1 and
MANN R = 4 at each batch size and thread count, with the PyTorch eager FLMN step
(benchmarks/torch_flmn.py) timed in the same process as flmn_np's, right after it.

    python benchmarks/perf_table.py [--threads 1 2] [--batch-sizes 16 64] [--repeats 15]

Each thread count runs in its own process: OPENBLAS_NUM_THREADS must be set before NumPy
loads. Pause anything else running on the machine first; the figures are medians.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = (("flmn", 1), ("mann", 1), ("mann", 4))


def child(threads, batch_sizes, repeats):
    """Measure every row for one thread count; print one JSON line per row."""
    sys.path.insert(0, str(ROOT))
    from flmn_np.bench import bench
    try:
        import torch
        torch.set_num_threads(threads)
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from torch_flmn import bench_torch
    except ImportError:
        bench_torch = None
    counts = {}   # the count does not depend on B (tests/test_bench.py): once per model
    for B in batch_sizes:
        for model, reads in MODELS:
            r = bench(model, B, "numpy", reads, repeats=repeats, count=(model, reads) not in counts)
            counts.setdefault((model, reads), {k: v for k, v in r.items() if "ops" in k or "launches" in k or "fused" in k})
            r.update(counts[(model, reads)])
            print(json.dumps({**r, "threads": threads}), flush=True)
            if model == "flmn" and bench_torch is not None:
                ms = bench_torch(B, repeats=repeats)
                print(json.dumps({"model": "flmn", "impl": f"torch {torch.__version__} eager",
                                  "reads": 1, "batch_size": B, "threads": threads,
                                  "ms_per_step": round(ms, 3), "episodes_per_s": round(B / ms * 1e3, 1),
                                  "flmn_np_ms_per_step": r["ms_per_step"]}), flush=True)


def table(rows):
    """Markdown table of the rows, in measurement order."""
    out = ["| model | B | threads | implementation | ms / step | episodes / s | array ops / time step "
           "| CuPy launches / time step | GEMM floor (ms) | step / floor | peak memory |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = "FLMN" if r["model"] == "flmn" else f"MANN R = {r['reads']}"
        if "impl" in r:
            ratio = r["ms_per_step"] / r["flmn_np_ms_per_step"]
            out.append(f"| {name} | {r['batch_size']} | {r['threads']} | {r['impl']} | {r['ms_per_step']:.1f} "
                       f"| {r['episodes_per_s']:.0f} | (flmn_np {ratio:.2f}x faster) | | | | |")
        else:
            out.append(f"| {name} | {r['batch_size']} | {r['threads']} | flmn_np (NumPy) | {r['ms_per_step']:.1f} "
                       f"| {r['episodes_per_s']:.0f} | {r['array_ops_per_time_step']} "
                       f"| {r['cupy_launches_per_time_step']} | {r['gemm_floor_ms']:.1f} "
                       f"| {r['floor_ratio']:.2f} | {r['peak_mem_mb']:.0f} MB |")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON lines too")
    args = parser.parse_args()
    if args.child:
        child(args.threads[0], args.batch_sizes, args.repeats)
        return 0
    rows = []
    for n in args.threads:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": str(n), "OMP_NUM_THREADS": str(n)}
        out = subprocess.run([sys.executable, __file__, "--child", "--threads", str(n),
                              "--batch-sizes", *map(str, args.batch_sizes), "--repeats", str(args.repeats)],
                             env=env, check=True, capture_output=True, text=True).stdout
        rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if args.json:
        print("\n".join(json.dumps(r) for r in rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

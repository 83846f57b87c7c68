"""NumPy's plain code, its CPU step level, the GEMM floor and PyTorch, side by side, in one run:
at B = 16 and 64, 1 and 2 threads, FLMN, MANN R = 1 and R = 4, and the PyTorch FLMN step of
benchmarks/torch_flmn.py eager and under torch.compile (its compile time apart).

    python benchmarks/cpu_level.py [--repeats 15] [--no-compile] [--json FILE]

Each thread count runs in processes of its own (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and
torch.set_num_threads set to it): `python -m flmn_np.bench --levels 16 64` (plain and CPU level
interleaved, medians) and `python benchmarks/torch_flmn.py --bench --json` (where torch is
installed; torch.compile at B = 16 only: its compile takes minutes per shape). Prints a
markdown table. Time it with other work on the machine paused.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(args, threads):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        return None, (proc.stderr.strip().splitlines() or ["failed"])[-1]
    return json.loads(proc.stdout.strip().splitlines()[-1]), None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()
    result = {}
    for threads in (1, 2):
        levels, err = child(["-m", "flmn_np.bench", "--levels", "16", "64",
                             "--repeats", str(args.repeats)], threads)
        torch_flags = ["benchmarks/torch_flmn.py", "--bench", "--json", "--threads",
                       str(threads), "--batch-size", "16", "64"]
        torch_eager, torch_err = child(torch_flags, threads)
        compiled = None
        if not args.no_compile and torch_eager is not None:
            compiled, _ = child(["benchmarks/torch_flmn.py", "--bench", "--json", "--compile",
                                 "--threads", str(threads), "--batch-size", "16"], threads)
        result[threads] = {"levels": levels, "levels_error": err, "torch": torch_eager,
                           "torch_error": torch_err, "torch_compile": compiled}
    print("| threads | model | B | plain NumPy ms (its GEMM floor) | CPU step level ms (its GEMM "
          "floor) | speedup | CPU level / its floor | torch eager ms | torch.compile ms "
          "(compile s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for threads, r in result.items():
        if r["levels"] is None:
            print(f"| {threads} | bench failed: {r['levels_error']} |")
            continue
        torch_rows = {(t["impl"], t["batch_size"]): t
                      for part in ("torch", "torch_compile") if r[part]
                      for t in r[part]["rows"]}
        for row in r["levels"]["rows"]:
            eager = compiled = "-"
            if row["model"] == "flmn":
                e = torch_rows.get(("torch eager", row["batch_size"]))
                c = torch_rows.get(("torch.compile", row["batch_size"]))
                eager = f"{e['ms_per_step']:.1f}" if e else "-"
                compiled = f"{c['ms_per_step']:.1f} ({c['compile_s']:.0f})" if c else "-"
            name = "FLMN" if row["model"] == "flmn" else f"MANN R = {row['reads']}"
            print(f"| {threads} | {name} | {row['batch_size']} | {row['plain_ms']:.1f} "
                  f"({row['gemm_floor_ms']:.1f}) | {row['cpu_step_ms']:.1f} "
                  f"({row['cpu_step_gemm_floor_ms']:.1f}) | {row['speedup']:.2f}x "
                  f"| {row['cpu_step_floor_ratio']:.2f} | {eager} | {compiled} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

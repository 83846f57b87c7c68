"""The commands that re-evaluate every committed evaluation (results/**/eval_*.json) on enough
test episodes that the episode standard error of the 2nd instance is at most 0.2 points
(`python -m flmn_np.evaluate ... --target-se 0.2`): same run, checkpoint (last or best.npz),
dataset, evaluation seed and JSON file as the file it replaces; the first 1,000 (or 2,000)
episodes of each are the episodes of the old file. Printed one per line, the runs behind the
summary tables first; a file whose checkpoint is not kept (best.npz of results/seeds) or no longer
matches the file's step is listed as a comment and left as it is.

    python results/reevaluate.py > results/reevaluate-commands.txt
    FLMN_DATA_DIR=/path/to/data OPENBLAS_NUM_THREADS=1 bash results/reevaluate-commands.txt
"""
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["results/seeds/*-exp1-product-s*", "results/seeds/mann4-exp1-s*", "results/seeds/*exp2-s*",
         "results/public/*-s?", "results/authors/*-s?", "results/candidates/*",
         "results/seeds/*-inside-s*", "results/*"]
MAIN_FIRST = ["eval_omniglot.json", "eval_omniglot_best.json", "eval_mnist.json",
              "eval_mnist_best.json"]


def checkpoint_step(path):
    with np.load(path, allow_pickle=False) as z:
        return int(z["step"]) if "step" in z.files else None


def main():
    seen, lines, skipped = set(), [], []
    for pattern in ORDER:
        for run in sorted(ROOT.glob(pattern)):
            if not (run / "config.json").is_file() or run in seen:
                continue
            seen.add(run)
            files = sorted(run.glob("eval_*.json"),
                           key=lambda f: (MAIN_FIRST.index(f.name) if f.name in MAIN_FIRST
                                          else len(MAIN_FIRST), f.name))
            for f in files:
                r = json.loads(f.read_text())
                best = f.name.startswith(f"eval_{r['dataset']}_best")
                rel = run.relative_to(ROOT)
                ckpt = run / ("best.npz" if best else "checkpoint.npz")
                if not ckpt.is_file():
                    skipped.append(f"# {rel}/{f.name}: {ckpt.name} not kept")
                    continue
                step = checkpoint_step(ckpt)
                if step is not None and step != int(r["checkpoint_step"]):
                    skipped.append(f"# {rel}/{f.name}: step {r['checkpoint_step']}, "
                                   f"{ckpt.name} at {step}")
                    continue
                lines.append(f"python -m flmn_np.evaluate {rel} --dataset {r['dataset']}"
                             f"{' --best' if best else ''} --seed {r['seed']} "
                             f"--episodes {r['episodes']} --target-se 0.2 --json {rel}/{f.name}")
    print("# made by results/reevaluate.py: every committed evaluation to an episode SE of at "
          "most 0.2 points at the 2nd instance")
    print("\n".join(lines))
    print("\n".join(skipped))


if __name__ == "__main__":
    sys.exit(main())

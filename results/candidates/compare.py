"""Validation 2nd-instance accuracy of each candidate beside the public-protocol FLMN runs at the
same training steps (validation classes only; the test classes are not read).

Usage, from the repository root:
    python results/candidates/compare.py > results/candidates/compare.md
"""
import csv
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
PUBLIC = HERE.parent / "public"
BASELINES = ["flmn-s1", "flmn-s2", "flmn-s3"]            # hidden 200, 64 x 40 memory, lr 1e-3


def validation(run_dir):
    """{step: 2nd-instance validation accuracy (%)} of a run directory."""
    with open(run_dir / "validation.csv", newline="") as f:
        return {int(r["step"]): 100 * float(r["val_acc_2"]) for r in csv.DictReader(f)}


def table(title, candidates, baselines, steps, offset=0):
    """Markdown rows: each candidate's and baseline's score at each step (offset: the step the
    candidate started from, for a run started --init-from a baseline's best.npz)."""
    lines = [f"### {title}", "", "| step | " + " | ".join(candidates + baselines) + " |",
             "|---" * (1 + len(candidates) + len(baselines)) + "|"]
    scores = {name: validation(HERE / name) for name in candidates}
    scores.update({name: validation(PUBLIC / name) for name in baselines})
    for step in steps:
        cells = [scores[n].get(step - offset) for n in candidates]
        cells += [scores[n].get(step) for n in baselines]
        if all(c is None for c in cells[:len(candidates)]):
            continue
        lines.append(f"| {step:,} | " + " | ".join("" if c is None else f"{c:.1f}" for c in cells)
                     + " |")
    return lines


def main():
    grow = [d.name for d in sorted(HERE.iterdir())
            if (d / "validation.csv").is_file() and "-ft-" not in d.name]
    lines = table("From fresh parameters, at equal steps", grow, BASELINES,
                  range(1000, 100_001, 1000))
    for d in sorted(HERE.iterdir()):
        if "-ft-" in d.name and (d / "validation.csv").is_file():
            seed = d.name.split("-")[1]                     # flmn-s1-ft-... starts at flmn-s1
            start = json.loads((PUBLIC / f"flmn-{seed}" / "best.json").read_text())["step"]
            lines += [""] + table(f"{d.name}: from flmn-{seed}'s best.npz (step {start:,}); "
                                  f"steps counted from the start of flmn-{seed}", [d.name],
                                  [f"flmn-{seed}"], range(start, 200_001, 1000), offset=start)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

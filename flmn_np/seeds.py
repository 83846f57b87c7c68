"""Rows over training seeds: per-seed numbers, mean and 95% confidence interval, curves with bands.

    python -m flmn_np.seeds RUN_DIR [RUN_DIR ...] --csv per_seed.csv --md summary.md
                            [--png curves.png] [--reference paper.csv]

Run directories are grouped by name with the seed tag `-sN` removed, at the end or between two
dashes (`flmn-exp1-product-s3` belongs to `flmn-exp1-product`, `flmn-s3-ft-lr1e-4` to
`flmn-ft-lr1e-4`); the members `OUT/seed-N` of a `train.py --seeds` stack are one group, named
`OUT`. For every run it reads the test-class evaluations written at the end of
training (eval_omniglot.json, eval_omniglot_best.json when the run kept a best.npz, and
eval_mnist.json when `python -m flmn_np.evaluate RUN --dataset mnist` was run), validation.csv
and metrics.csv, and writes:
- `--csv`: one line per run and evaluation, % correct at every instance and its episode
  standard error (`se_k`, points; blank for an evaluation made before evaluate wrote it);
- `--md`: per group, the mean over seeds and the half-width of the 95% t-interval
  (mean +- t_{0.975, n-1} s / sqrt(n)), and separately the test episodes per run and the episode
  standard error of the mean, sqrt(sum se_i^2) / n (how much of the spread a test set of as many
  episodes adds; the t-interval over seeds already contains it); per table, every two groups
  compared at each instance: the difference of the means, Welch's t-test over seeds at 5%
  (two-sided, degrees of freedom rounded down), whether the 95% intervals overlap, and in how many
  of the seed pairs the first group is ahead; then, per run, the training statistics
  (largest logged gradient norm, the step training leaves chance, validation accuracy);
- `--png`: held-out 2nd-instance accuracy against steps, the mean over seeds with a 95% band.
`--reference` puts rows from a CSV (the paper's numbers, say) under each group's row.
"""
import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from .runs.config import ConfigError
from .runs.metrics import column, ordinal, read_metrics
from .cli import run_command

INSTANCES = (1, 2, 3, 4, 5, 10)
EVALUATIONS = (("omniglot", "last", "eval_omniglot.json"),
               ("omniglot", "best", "eval_omniglot_best.json"),
               ("mnist", "last", "eval_mnist.json"),
               ("mnist", "best", "eval_mnist_best.json"))
# Two-sided 95% quantiles of Student's t, t_{0.975, df}, for df = 1..10 (any statistics table).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
         17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000,
         120: 1.980}
LEAVES_CHANCE = 0.45   # training 2nd-instance accuracy; chance is 1 / 5 = 0.2


def group_name(run_dir):
    """'flmn-exp1-product-s3' -> 'flmn-exp1-product'; 'flmn-s3-ft-lr1e-4' -> 'flmn-ft-lr1e-4';
    'OUT/seed-3' (a member of `train.py --seeds ... --out OUT`) -> 'OUT'."""
    path = Path(run_dir)
    if re.fullmatch(r"seed-\d+", path.name):
        return path.absolute().parent.name
    return re.sub(r"-s\d+(?=-|$)", "", path.name)


def t_975(df):
    """t_{0.975, df} for df >= 1, a fractional df rounded down to the table (conservative)."""
    keys = [k for k in T_975 if k <= df]
    return T_975[max(keys)] if keys else math.nan


def mean_ci(values):
    """(mean, half-width of the 95% t-interval) over seeds; half-width nan for a single seed."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return float(v.mean()), math.nan
    return float(v.mean()), t_975(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)


def welch(a, b):
    """(difference of the means, Welch's t, its degrees of freedom, significant at 5% two-sided)
    for two samples of at least two values each; t, df nan (and not significant) otherwise or
    when both have no spread."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return d, math.nan, math.nan, False
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0:
        return d, math.nan, math.nan, False
    t = d / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    return d, t, df, abs(t) > t_975(df)


def mean_se(ses):
    """Episode standard error of a mean over runs, sqrt(sum se_i^2) / n; nan if one is missing."""
    v = np.asarray(ses, dtype=float)
    return float(np.sqrt(np.sum(v ** 2)) / v.size)


def run_evaluations(run_dir):
    """[(dataset, checkpoint, step, episodes, {k: accuracy}, {k: episode SE})] for the
    evaluations the run has (SE nan where the file has no accuracy_se)."""
    out = []
    for dataset, which, name in EVALUATIONS:
        path = Path(run_dir) / name
        if path.is_file():
            try:
                r = json.loads(path.read_text())
                acc = {int(k): float(v) for k, v in r["accuracy"].items()}
                se = {int(k): float(v) for k, v in r.get("accuracy_se", {}).items()}
                out.append((dataset, which, int(r["checkpoint_step"]), int(r["episodes"]),
                            {k: acc[k] for k in INSTANCES},
                            {k: se.get(k, math.nan) for k in INSTANCES}))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise ConfigError(f"{path} is damaged or incomplete ({type(e).__name__}: {e})") \
                    from None
    return out


def training_stats(run_dir):
    """Largest logged gradient norm (each metrics.csv row holds the mean over its logging
    interval), the first logged step whose training 2nd-instance accuracy passes LEAVES_CHANCE,
    and the best and last validation 2nd-instance accuracy (nan without validation.csv)."""
    rows = read_metrics(Path(run_dir) / "metrics.csv")
    steps, acc2 = column(rows, "step"), column(rows, "train_acc_2")
    above = np.flatnonzero(acc2 > LEAVES_CHANCE)
    stats = {"max_grad_norm": float(np.nanmax(column(rows, "grad_norm"))),
             "leaves_chance_step": int(steps[above[0]]) if above.size else math.nan,
             "val_best_2": math.nan, "val_last_2": math.nan}
    val = Path(run_dir) / "validation.csv"
    if val.is_file():
        v = column(read_metrics(val), "val_acc_2")
        stats.update(val_best_2=float(np.max(v)), val_last_2=float(v[-1]))
    return stats


def write_csv(path, run_dirs):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["group", "run", "dataset", "checkpoint", "step", "episodes"]
                   + [f"acc_{k}" for k in INSTANCES] + [f"se_{k}" for k in INSTANCES])
        for d in run_dirs:
            for dataset, which, step, episodes, acc, se in run_evaluations(d):
                w.writerow([group_name(d), run_label(d), dataset, which, step, episodes]
                           + [f"{100 * acc[k]:.2f}" for k in INSTANCES]
                           + ["" if math.isnan(se[k]) else f"{100 * se[k]:.2f}"
                              for k in INSTANCES])


def run_label(run_dir):
    """A run's name in the tables: 'OUT/seed-3' for a stack member, else the folder's name."""
    path = Path(run_dir)
    return f"{group_name(path)}/{path.name}" if re.fullmatch(r"seed-\d+", path.name) else path.name


def fmt(mean, half, digits=1):
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def read_reference(path):
    """A CSV of reference rows (group, dataset, label, acc_1 ... acc_10; blank where not
    reported) -> {(group, dataset): [(label, {k: cell text})]}."""
    rows = {}
    if path is None:
        return rows
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            cells = {k: r.get(f"acc_{k}", "") or "" for k in INSTANCES}
            rows.setdefault((r["group"], r["dataset"]), []).append((r["label"], cells))
    return rows


def _span(values, thousands=True):
    values = sorted(set(values))
    f = (lambda v: f"{v:,}") if thousands else str
    return f(values[0]) if len(values) == 1 else f"{f(values[0])}-{f(values[-1])}"


def _se_text(evals, k):
    se = mean_se([e[5][k] for e in evals])
    return "n/a" if math.isnan(se) else f"{100 * se:.2f}"


def comparison_rows(named_evals):
    """Markdown rows comparing every two groups of one table, at every instance."""
    rows = []
    names = list(named_evals)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            cells = []
            for k in INSTANCES:
                va = [100 * e[4][k] for e in named_evals[a]]
                vb = [100 * e[4][k] for e in named_evals[b]]
                d, t, df, sig = welch(va, vb)
                (ma, ha), (mb, hb) = mean_ci(va), mean_ci(vb)
                if math.isnan(t):
                    test = "no test"
                else:
                    test = "Welch sig." if sig else "Welch n.s."
                if math.isnan(ha) or math.isnan(hb):
                    overlap = ""
                else:
                    overlap = "; CIs overlap" if (ma - ha <= mb + hb and mb - hb <= ma + ha) \
                        else "; CIs apart"
                ahead = sum(x > y for x in va for y in vb)
                cells.append(f"{d:+.1f}; {test}{overlap}; {ahead}/{len(va) * len(vb)}")
            rows.append(f"| {a} - {b} | " + " | ".join(cells) + " |")
    return rows


def summary_markdown(groups, reference=None):
    """Markdown: one table per (dataset, checkpoint) with a row per group, each followed by its
    reference rows (e.g. the paper's), the comparisons of every two groups, then per-run
    training statistics."""
    reference = reference or {}
    lines = []
    for dataset, which, _ in EVALUATIONS:
        rows, named = [], {}
        for name, dirs in groups.items():
            evals = [e for d in dirs for e in run_evaluations(d) if e[:2] == (dataset, which)]
            if not evals:
                continue
            named[name] = evals
            cells = [fmt(*mean_ci([100 * e[4][k] for e in evals])) for k in INSTANCES]
            rows.append(f"| {name} | {len(evals)} | {_span(e[2] for e in evals)} | "
                        + " | ".join(cells)
                        + f" | {_span(e[3] for e in evals)} | {_se_text(evals, 2)} / "
                          f"{_se_text(evals, 10)} |")
            for label, ref in reference.get((name, dataset), []):
                rows.append(f"| {label} | | | " + " | ".join(ref[k] for k in INSTANCES)
                            + " | | |")
        if rows:
            title = {"last": "last checkpoint", "best": "best.npz (chosen on validation classes)"}
            lines += [f"### {dataset}, {title[which]}", "",
                      "Mean ± half-width of the 95% t-interval over training seeds; then the test "
                      "episodes of each run and the episode standard error of the mean (points, "
                      "2nd / 10th instance; n/a: an evaluation older than the standard error).",
                      "",
                      "| runs | seeds | steps | " + " | ".join(ordinal(k) for k in INSTANCES)
                      + " | test episodes per run | episode SE of the mean, 2nd / 10th |",
                      "|---|---|---|" + "---|" * len(INSTANCES) + "---|---|", *rows, ""]
            if len(named) > 1:
                lines += ["Every two groups (first minus second, points): Welch's t-test over "
                          "seeds at 5% two-sided, whether the 95% intervals overlap, seed pairs "
                          "with the first ahead.", "",
                          "| groups | " + " | ".join(ordinal(k) for k in INSTANCES) + " |",
                          "|---|" + "---|" * len(INSTANCES), *comparison_rows(named), ""]
    lines += ["### Training statistics per run", "",
              "| run | largest grad norm (50-step mean) | training 2nd > 45% at step "
              "| validation 2nd, best | validation 2nd, last |", "|---|---|---|---|---|"]
    for dirs in groups.values():
        for d in dirs:
            s = training_stats(d)
            lines.append(f"| {run_label(d)} | {s['max_grad_norm']:.2f} | {s['leaves_chance_step']} "
                         f"| {100 * s['val_best_2']:.1f} | {100 * s['val_last_2']:.1f} |")
    lines += ["", "### Training statistics per group (mean ± 95% t-interval over seeds)", "",
              "| runs | seeds | largest grad norm | training 2nd > 45% at step "
              "| validation 2nd, best | validation 2nd, last |", "|---|---|---|---|---|---|"]
    for name, dirs in groups.items():
        stats = [training_stats(d) for d in dirs]
        cells = [fmt(*mean_ci([s[key] * scale for s in stats]), digits)
                 for key, scale, digits in (("max_grad_norm", 1, 2), ("leaves_chance_step", 1, 0),
                                            ("val_best_2", 100, 1), ("val_last_2", 100, 1))]
        lines.append(f"| {name} | {len(dirs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_bands(path, groups, column_name="test_acc_2"):
    """Mean over seeds of a metrics.csv column against steps, with the 95% t-interval as a band,
    over the steps every seed reached; each seed's own curve as a thin line (runs may stop at
    different steps)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    batch_sizes = set()          # episodes per step, where metrics.csv records them
    for name, dirs in groups.items():
        curves, per_seed = {}, []
        for d in dirs:
            rows = read_metrics(Path(d) / "metrics.csv")
            per_step = column(rows, "episodes")[0] / column(rows, "step")[0]
            batch_sizes.add(None if math.isnan(per_step) else round(per_step))
            seed_curve = [(int(s), 100 * v) for s, v in zip(column(rows, "step"),
                                                             column(rows, column_name))
                          if not math.isnan(v)]
            per_seed.append(seed_curve)
            for s, v in seed_curve:
                curves.setdefault(s, []).append(v)
        steps = sorted(s for s, v in curves.items() if len(v) == len(dirs))
        stats = [mean_ci(curves[s]) for s in steps]
        mean = np.array([m for m, _ in stats])
        half = np.nan_to_num(np.array([h for _, h in stats]))
        seeds_text = f"{len(dirs)} seed{'s' if len(dirs) > 1 else ''}"
        (line,) = ax.plot(steps, mean, label=f"{name} ({seeds_text})")
        ax.fill_between(steps, mean - half, mean + half, color=line.get_color(), alpha=0.2)
        for seed_curve in per_seed:
            ax.plot(*zip(*seed_curve), color=line.get_color(), linewidth=0.6, alpha=0.5)
    per_step = batch_sizes.pop() if len(batch_sizes) == 1 else None
    ax.set_xlabel(f"training step ({per_step} episodes each)" if per_step else "training step")
    ax.set_ylabel(f"held-out {ordinal(int(column_name.rsplit('_', 1)[1]))}-instance accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m flmn_np.seeds",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--csv", required=True, help="per-seed numbers")
    parser.add_argument("--md", required=True, help="summary tables")
    parser.add_argument("--png", help="learning curves with bands over seeds")
    parser.add_argument("--reference", help="CSV of rows to show beside each group (e.g. the "
                        "paper's): group, dataset, label, acc_1 ... acc_10")
    args = parser.parse_args(argv)
    return run_command("seeds", summarize, args)


def summarize(args):
    """Write --csv, --md and --png for the runs; ConfigError for a directory that is no run."""
    groups = {}
    for d in args.run_dirs:
        if not (Path(d) / "metrics.csv").is_file():
            raise ConfigError(f"{d} is not a run directory (no metrics.csv)")
        groups.setdefault(group_name(d), []).append(d)
    write_csv(args.csv, args.run_dirs)
    Path(args.md).write_text(summary_markdown(groups, read_reference(args.reference)))
    if args.png:
        plot_bands(args.png, groups)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Learning curves of one or more runs from their metrics.csv, as in the paper's Figures 3-5.

    python -m flmn_np.plot RUN_DIR [RUN_DIR ...] --out curves.png

One panel per run: training accuracy at the 1st, 2nd, 3rd, 5th and 10th presentation against
episodes (solid), with the held-out accuracy at evaluation points (dots, same colour); for a run
trained with --val-classes also its validation 2nd-instance accuracy (crosses) and the step of
best.npz (dotted vertical line). A last panel
overlays the loss curves of all runs (FLMN vs MANN, Figure 5). Runs are labelled from their
config.json (model, experiment, seed).
"""
import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)

from .runs.metrics import column, ordinal, read_metrics  # noqa: E402

PLOT_INSTANCES = (1, 2, 3, 5, 10)
EXPERIMENT_NAMES = {1: "I", 2: "II"}


def run_label(run_dir):
    """'FLMN, Experiment I, seed 0' ('MANN R = 4, ...') from RUN_DIR/config.json; the folder name
    if there is none."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return Path(run_dir).name
    cfg = json.loads(path.read_text())["config"]
    exp = EXPERIMENT_NAMES.get(cfg["experiment"], cfg["experiment"])
    model = cfg["model"].upper() + (f" R = {cfg['reads']}" if cfg["model"] == "mann" else "")
    return f"{model}, Experiment {exp}, seed {cfg['seed']}"


def plot_validation(ax, run_dir, batch_size):
    """Validation 2nd-instance accuracy (validation.py) and best.npz's step, if the run has them."""
    path = Path(run_dir) / "validation.csv"
    if not path.is_file():
        return
    rows = read_metrics(path)
    ax.plot(column(rows, "step") * batch_size, 100 * column(rows, "val_acc_2"), "x--", color="k",
            ms=4, lw=0.8, label="2nd, validation")
    best = Path(run_dir) / "best.json"
    if best.is_file():
        step = json.loads(best.read_text())["step"]
        ax.axvline(step * batch_size, color="k", ls=":", lw=1, label="best.npz")


def plot_accuracy(ax, rows, label, run_dir=None):
    """Per-instance training (lines) and held-out (dots) accuracy against episodes, and the
    validation curve of runs that have one."""
    episodes = column(rows, "episodes")
    for i, k in enumerate(PLOT_INSTANCES):
        name = f"train_acc_{k}"
        if not rows or name not in rows[0]:
            continue
        colour = f"C{i}"
        ax.plot(episodes, 100 * column(rows, name), color=colour, lw=1.2, label=ordinal(k))
        test = 100 * column(rows, f"test_acc_{k}")
        ax.plot(episodes, test, "o", color=colour, ms=3)
    if run_dir is not None and rows:
        batch_size = float(rows[0]["episodes"]) / float(rows[0]["step"])
        plot_validation(ax, run_dir, batch_size)
    ax.set_title(label, fontsize=10)
    ax.set_xlabel("episodes")
    ax.set_ylabel("% correct (lines: training, dots: held-out)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(title="instance", fontsize=8, loc="lower right")


def plot_losses(ax, runs):
    """The training loss of every run against episodes, overlaid."""
    for label, rows in runs:
        ax.plot(column(rows, "episodes"), column(rows, "loss"), lw=1.2, label=label)
    ax.set_title("training loss", fontsize=10)
    ax.set_xlabel("episodes")
    ax.set_ylabel("cross-entropy per step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_runs(run_dirs, out):
    """Draw every run of `run_dirs` into one PNG at `out`."""
    runs = [(run_label(d), read_metrics(Path(d) / "metrics.csv")) for d in run_dirs]
    n = len(runs) + 1
    cols = min(n, 3)
    rows_ = -(-n // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(5 * cols, 4 * rows_), squeeze=False)
    flat = axes.ravel()
    for ax, (label, rows), run_dir in zip(flat, runs, run_dirs):
        plot_accuracy(ax, rows, label, run_dir)
    plot_losses(flat[len(runs)], runs)
    for ax in flat[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m flmn_np.plot",
                                description="Plot learning curves from run directories.")
    p.add_argument("run_dirs", nargs="+", type=str, help="run directories holding metrics.csv")
    p.add_argument("--out", type=str, default="curves.png",
                   help="PNG to write (default curves.png)")
    args = p.parse_args(argv)
    missing = [d for d in args.run_dirs if not (Path(d) / "metrics.csv").is_file()]
    if missing:
        print(f"error: no metrics.csv in {', '.join(missing)}", file=sys.stderr)
        return 2
    plot_runs(args.run_dirs, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

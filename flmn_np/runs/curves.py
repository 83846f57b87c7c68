"""Learning curves of runs from their metrics.csv, as in the paper's Figures 3-5: drawn by
train.py at each evaluation and by the command `python -m flmn_np.plot`.

One panel per run: training accuracy at the 1st, 2nd, 3rd, 5th and 10th presentation against
episodes (solid), with the held-out accuracy at evaluation points (dots, same colour); for a run
trained with --val-classes also its validation 2nd-instance accuracy (crosses) and the step of
best.npz (dotted vertical line). A last panel overlays the loss curves of all runs (FLMN vs MANN,
Figure 5). Runs are labelled from their config.json (model, experiment, seed).
"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)

from ..data.files import atomic_write  # noqa: E402
from .config import ConfigError  # noqa: E402
from .metrics import column, ordinal, read_metrics  # noqa: E402
from .rundir import read_record  # noqa: E402

PLOT_INSTANCES = (1, 2, 3, 5, 10)
EXPERIMENT_NAMES = {1: "I", 2: "II"}


def run_label(run_dir):
    """'FLMN, Experiment I, seed 0' ('MANN R = 4, ...') from RUN_DIR/config.json; the folder name
    if there is none. ConfigError for a damaged config.json."""
    if not (Path(run_dir) / "config.json").is_file():
        return Path(run_dir).name
    _, cfg = read_record(run_dir)
    exp = EXPERIMENT_NAMES.get(cfg.experiment, cfg.experiment)
    model = cfg.model.upper() + (f" R = {cfg.reads}" if cfg.model == "mann" else "")
    return f"{model}, Experiment {exp}, seed {cfg.seed}"


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
        try:
            step = int(json.loads(best.read_text())["step"])
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{best} is damaged ({type(e).__name__}: {e})") from None
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
    fmt = Path(out).suffix.lstrip(".") or "png"
    atomic_write(out, lambda f: fig.savefig(f, format=fmt, dpi=120))
    plt.close(fig)


def check_image_path(out):
    """ConfigError unless matplotlib can write the format that `out`'s suffix names."""
    fmt = Path(out).suffix.lstrip(".").lower() or "png"
    supported = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    if fmt not in supported:
        raise ConfigError(f"--out {out}: cannot write .{fmt} images; use one of "
                          f"{', '.join('.' + f for f in sorted(supported))}")

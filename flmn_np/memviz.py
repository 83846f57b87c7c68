"""Memory access over one test episode, from trained runs: which slots are written and read
at every step, as heatmaps, FLMN against MANN. The paper argues that MANN's single memory
suffers interference between features and labels; this shows what each model actually does.

    python -m flmn_np.memviz RUN_DIR [RUN_DIR ...] --out memory.png [--seed S] [--data-dir D]

Each run gets a column: its read weights w_r and write weights (FLMN: w_wf, MANN: w_w of
head 1) over slots (rows) and steps (columns), with the episode's labels along the top and a
mark where the prediction was wrong. Every run is shown the same episode (same seed).
"""
import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from .core.backend import get_xp, to_numpy, asarray
from .data.episodes import EpisodeSource, draw_batch
from .data.files import atomic_write
from .data.sources import omniglot_data
from .cli import int_at_least, run_command
from .runs.config import check_episode_sizes, model_config
from .runs.curves import check_image_path
from .runs.datafolder import run_data_dir
from .runs.evaluation import load_run, params_from_checkpoint
from .core.models import initial_state, step_forward
from .core.ops import previous_label_onehot


def trace_episode(params, x, y, cfg):
    """Run one episode step by step: read weights (T, N), write weights (T, N) of head 1,
    and predictions (T,).  x (1, T, D), y (1, T) on the params' backend."""
    xp = x.__array_namespace__()
    y_prev = previous_label_onehot(y, cfg.n_classes, x.dtype)
    state = initial_state(cfg, 1, xp, x.dtype)
    reads, writes, preds = [], [], []
    for t in range(x.shape[1]):
        logits, state, _ = step_forward(params, x[:, t, :], y_prev[:, t, :], state, cfg)
        mem = state.mem
        reads.append(to_numpy(mem.w_r)[0, 0])
        writes.append(to_numpy(mem.w_wf if cfg.model == "flmn" else mem.w_w)[0, 0])
        preds.append(int(to_numpy(xp.argmax(logits, axis=-1))[0]))
    return np.stack(reads), np.stack(writes), np.array(preds)


def same_class_lift(reads, writes, y):
    """How much more read weight lands on slots holding the current class than chance would put
    there: each slot is labelled with the class of the step that wrote it most; at each step t
    with an earlier same-class write, (read mass on same-class slots / read mass on written
    slots) / (same-class slots / written slots); the mean over those steps. 1 = no preference."""
    T = len(y)
    owner = np.full(writes.shape[1], -1)
    best = np.zeros(writes.shape[1])
    lifts = []
    for t in range(T):
        written = owner >= 0
        same = owner == y[t]
        if same.any():
            mass = reads[t, same].sum() / reads[t, written].sum()
            lifts.append(mass / (same.sum() / written.sum()))
        stronger = writes[t] > best              # slots this step's write dominates
        owner[stronger], best[stronger] = y[t], writes[t, stronger]
    return float(np.mean(lifts)) if lifts else float("nan")


def load_trace(run_dir, data_dir, seed, backend="numpy"):
    """Load a run, draw one test episode of its split (seed `seed`) and trace it."""
    record, cfg, ckpt = load_run(run_dir)
    mcfg = model_config(cfg)
    xp = get_xp(backend)
    params = params_from_checkpoint(ckpt, mcfg, xp)
    images, _ = omniglot_data(dataclasses.replace(cfg, experiment=1),
                              run_data_dir(record, data_dir))
    test_ids = np.asarray(record["split"]["test_ids"])
    check_episode_sizes(cfg, {"held-out test": test_ids.size}, images.shape[1])
    x, y, _ = draw_batch(EpisodeSource(images, test_ids, {}), 1, mcfg.n_classes, cfg.samples,
                         np.random.default_rng(seed))
    reads, writes, preds = trace_episode(params, asarray(x, xp, "float32"), asarray(y, xp, "int64"), mcfg)
    label = f"{cfg.model.upper()}" + (f" R={cfg.reads}" if cfg.model == "mann" else "") + f", step {ckpt.step}"
    return label, reads, writes, preds, y[0]


def plot_traces(traces, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, len(traces), figsize=(6.5 * len(traces), 7.5), squeeze=False)
    for col, (label, reads, writes, preds, y) in enumerate(traces):
        T = len(y)
        # Softmax over cosines in [-1, 1] gives flat read weights (no key strength [FLMN eq 2]):
        # the read row is shown centred and scaled per step so that its pattern is visible.
        centred = reads - reads.mean(axis=1, keepdims=True)
        centred /= np.abs(centred).max(axis=1, keepdims=True) + 1e-12
        panels = [("read weights w_r (centred, scaled per step)", centred, "RdBu_r", (-1, 1)),
                  ("write weights", writes, "viridis", (0, 1))]
        for row, (name, w, cmap, (vmin, vmax)) in enumerate(panels):
            ax = axes[row, col]
            im = ax.imshow(w.T, aspect="auto", origin="lower", cmap=cmap, vmin=vmin, vmax=vmax,
                           interpolation="nearest")
            ax.set_title(f"{label}: {name}", fontsize=10)
            ax.set_ylabel("memory slot")
            ax.set_xlabel("step t (label on top; red = wrong prediction)")
            ax.set_xticks(range(T))
            ax.set_xticklabels([str(v) for v in y], fontsize=6)
            for t in range(T):
                if preds[t] != y[t]:
                    ax.get_xticklabels()[t].set_color("red")
            fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fmt = Path(out).suffix.lstrip(".") or "png"
    atomic_write(out, lambda f: fig.savefig(f, format=fmt, dpi=110))
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m flmn_np.memviz", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", help="run directories (config.json, checkpoint.npz)")
    parser.add_argument("--out", type=str, required=True, help="PNG file to write")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="which test episode")
    parser.add_argument("--data-dir", type=str, default=None)
    args = parser.parse_args(argv)
    return run_command("memviz", draw, args)


def draw(args):
    """Trace every run, draw the figure, print a summary line per run."""
    check_image_path(args.out)
    traces = [load_trace(d, args.data_dir, args.seed) for d in args.run_dirs]
    plot_traces(traces, args.out)
    for label, reads, writes, preds, y in traces:
        print(f"{label}: accuracy on this episode {np.mean(preds == y):.2f}, "
              f"slots written (weight > 0.5) {len(set(np.flatnonzero(writes.max(0) > 0.5)))}, "
              f"mean max read weight {reads.max(1).mean():.3f}, "
              f"same-class read lift {same_class_lift(reads, writes, y):.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

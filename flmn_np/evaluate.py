"""Held-out evaluation: per-instance accuracy of a trained run on Omniglot test classes or on
miniMNIST.

    python -m flmn_np.evaluate RUN_DIR --dataset {omniglot,mnist} [--episodes N] [--seed S]
                               [--best] [--json FILE] [--backend B] [--data-dir DIR]

Omniglot episodes use the run's recorded test classes (and, for Experiment II, the same rotation
and shift augmentation as training: "414 classes (plus augmentations) were used for testing"
[FLMN §5.3]). miniMNIST episodes draw C of the 10 digits, S samples each, from 20 images per digit
[FLMN §5.4]. Episode batch i is drawn from np.random.default_rng((seed, i)), so the same seed and
batch size give the same episodes; the default seed is the run's --eval-seed, so 1000 episodes
here equal the run's final evaluation in metrics.csv. --best evaluates the run's best.npz (the
checkpoint chosen on validation classes, validation.py) instead of its latest checkpoint.npz.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .data.augment import rotate_classes_90
from .core.backend import (BACKENDS, BackendError, array_namespace, asarray, backend_name, get_xp,
                      to_numpy)
from .runs.checkpoint import CHECKPOINT_NAME, CheckpointError, check_shapes, load_checkpoint
from .runs.config import ConfigError, TrainConfig, int_at_least, model_config
from .data.datasets import DataError, load_mini_mnist, load_omniglot, load_omniglot_full, resolve_data_dir
from .data.episodes import instance_index, sample_episodes
from .runs.metrics import accuracy_on_host, format_accuracy_table, per_instance_counts
from .core.models import forward, param_shapes
from .runs.validation import BEST_NAME

EVAL_BATCH = 50   # episodes per forward pass during evaluation


class EpisodeSource(NamedTuple):
    """Where episodes come from: an image array, the class ids to draw from, augmentation args."""
    images: np.ndarray
    class_ids: np.ndarray
    augment: dict


def draw_batch(source, batch_size, classes, samples, rng):
    """A batch of episodes on the host: x (B, T, 400) float32, y (B, T) int64 and the 0-based
    presentation index of each step (B, T); all randomness from `rng`."""
    x, y = sample_episodes(source.images, source.class_ids, batch_size, classes, samples, rng,
                           **source.augment)
    return x, y, instance_index(y)


def evaluate_params(params, mcfg, source, episodes, samples, seed, batch_size=EVAL_BATCH):
    """Per-instance accuracy (S,) and mean loss of `params` on `episodes` episodes from `source`.

    Runs forward only, in batches of `batch_size`; counts stay on the device and are synced once.
    Draws from its own generators (seed, i), so it never touches the training randomness.
    """
    xp = array_namespace(next(iter(params.values())))
    correct = total = loss_sum = 0.0
    for i, start in enumerate(range(0, episodes, batch_size)):
        n = min(batch_size, episodes - start)
        rng = np.random.default_rng((seed, i))
        x, y, inst = draw_batch(source, n, mcfg.n_classes, samples, rng)
        yd = asarray(y, xp, "int64")
        loss, logits = forward(params, asarray(x, xp, "float32"), yd, mcfg)
        c, t = per_instance_counts(logits, yd, asarray(inst, xp, "int64"), samples)
        correct, total, loss_sum = correct + c, total + t, loss_sum + loss * n
    return accuracy_on_host(correct, total), float(to_numpy(loss_sum)) / episodes


def omniglot_data(cfg, data_dir):
    """(images, augment): the run's Omniglot images (n, 20, 400) and the sample_episodes keyword
    arguments of its experiment (Experiment II: full-resolution images, rotated and shifted).
    With --rotations90 every class is also there turned by 90/180/270 degrees, as class
    i + k * 1623 (augment.rotate_classes_90); class ids below 1623 are the plain characters."""
    images = load_omniglot(data_dir).images
    full = load_omniglot_full(data_dir) if cfg.experiment == 2 else None
    if cfg.rotations90:
        images = rotate_classes_90(images)
        full = None if full is None else rotate_classes_90(full)
    return images, {"full_images": full, "augment": cfg.experiment == 2}


def mnist_source(cfg, data_dir):
    """EpisodeSource over the 10 miniMNIST digits (20 seeded images each, no augmentation)."""
    images = load_mini_mnist(data_dir)
    if cfg.classes > images.shape[0] or cfg.samples > images.shape[1]:
        raise ConfigError(f"miniMNIST has {images.shape[0]} digits of {images.shape[1]} images; "
                          f"this run's episodes need {cfg.classes} classes of {cfg.samples}")
    return EpisodeSource(images, np.arange(images.shape[0]), {})


# ---------------------------------------------------------------- command line

def load_run(run_dir, checkpoint_name=CHECKPOINT_NAME):
    """RUN_DIR -> (config.json record, TrainConfig, Checkpoint); CheckpointError if unusable."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} holds no run (no config.json)")
    record = json.loads(path.read_text())
    if checkpoint_name == BEST_NAME and not (run_dir / BEST_NAME).is_file():
        raise CheckpointError(f"{run_dir} has no {BEST_NAME}: only runs trained with "
                              f"--val-classes keep one")
    ckpt = load_checkpoint(run_dir / checkpoint_name)
    return record, TrainConfig.from_dict(record["config"]), ckpt


def params_from_checkpoint(ckpt, mcfg, xp):
    """The checkpoint's parameters on `xp`, after checking them against the model's shapes."""
    expected = {k: np.empty(s) for k, s in param_shapes(mcfg).items()}
    check_shapes(ckpt.params, expected)
    return {k: asarray(v, xp) for k, v in ckpt.params.items()}


def build_parser():
    p = argparse.ArgumentParser(prog="python -m flmn_np.evaluate",
                                description="Per-instance accuracy of a trained run.")
    p.add_argument("run_dir", type=str, help="run directory (config.json, checkpoint.npz)")
    p.add_argument("--dataset", choices=("omniglot", "mnist"), default="omniglot",
                   help="omniglot: the run's held-out classes; mnist: zero-shot miniMNIST")
    p.add_argument("--episodes", type=int_at_least(1), default=1000,
                   help="episodes to test (default 1000)")
    p.add_argument("--seed", type=int_at_least(0), default=None,
                   help="seed of the test episodes (default: the run's --eval-seed)")
    p.add_argument("--best", action="store_true",
                   help=f"evaluate {BEST_NAME} (chosen on validation classes) instead of "
                        f"{CHECKPOINT_NAME}")
    p.add_argument("--json", type=str, default=None,
                   help="where to write the result (default RUN_DIR/eval_<dataset>.json, "
                        "eval_<dataset>_best.json with --best)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="array backend")
    p.add_argument("--data-dir", type=str, default=None,
                   help="dataset folder (default: the run's, else $FLMN_DATA_DIR, else ./data)")
    return p


def run_evaluation(args):
    """Evaluate, print the table, write the JSON; returns the result dict."""
    record, cfg, ckpt = load_run(args.run_dir, BEST_NAME if args.best else CHECKPOINT_NAME)
    xp = get_xp(args.backend)
    mcfg = model_config(cfg)
    params = params_from_checkpoint(ckpt, mcfg, xp)
    data_dir = resolve_data_dir(args.data_dir or cfg.data_dir)
    if args.dataset == "omniglot":
        images, augment = omniglot_data(cfg, data_dir)
        source = EpisodeSource(images, np.asarray(record["split"]["test_ids"]), augment)
    else:
        source = mnist_source(cfg, data_dir)
    seed = cfg.eval_seed if args.seed is None else args.seed
    acc, loss = evaluate_params(params, mcfg, source, args.episodes, cfg.samples, seed)
    title = (f"{cfg.model.upper()} exp {cfg.experiment} step {ckpt.step} {args.dataset}"
             + (" (best.npz)" if args.best else ""))
    print(format_accuracy_table(acc, args.episodes, title=title))
    result = eval_record(args.run_dir, cfg, args.dataset, args.episodes, seed, ckpt.step,
                         backend_name(xp), loss, acc)
    name = f"eval_{args.dataset}{'_best' if args.best else ''}.json"
    out = Path(args.json or Path(args.run_dir) / name)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


def eval_record(run_dir, cfg, dataset, episodes, seed, step, backend, loss, acc):
    """The JSON content of an evaluation (this command's and train.py's final one)."""
    return {"run_dir": str(run_dir), "dataset": dataset, "episodes": episodes,
            "seed": seed, "checkpoint_step": step, "model": cfg.model, "reads": cfg.reads,
            "experiment": cfg.experiment, "backend": backend, "loss": loss,
            "accuracy": {str(k): float(a) for k, a in enumerate(acc, start=1)}}


def main(argv=None):
    """Command-line entry point; exit code 2 with a one-line message on any usage problem."""
    args = build_parser().parse_args(argv)
    try:
        run_evaluation(args)
    except (CheckpointError, ConfigError, BackendError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

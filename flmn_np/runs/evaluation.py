"""Scoring a trained run: its parameters from a checkpoint, per-instance accuracy on held-out
episodes, and the record of an evaluation. Used by train.py's final evaluations and by the
commands `python -m flmn_np.evaluate` and `memviz`.

Episode batch i is drawn from np.random.default_rng((seed, i)), so the same seed and batch size
give the same episodes, and evaluation never touches the training randomness.
"""
from pathlib import Path

import numpy as np

from ..core.backend import array_namespace, asarray, to_numpy
from ..core.models import forward, param_shapes
from ..data.episodes import draw_batch
from .checkpoint import CHECKPOINT_NAME, CheckpointError, check_shapes, load_checkpoint
from .metrics import accuracy_on_host, per_instance_counts
from .rundir import check_belongs, read_record
from .validation import BEST_NAME

EVAL_BATCH = 50   # episodes per forward pass during evaluation


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


def load_run(run_dir, checkpoint_name=CHECKPOINT_NAME):
    """RUN_DIR -> (config.json record, TrainConfig, Checkpoint), checked as --resume checks them:
    a readable config.json, a readable checkpoint with finite values, saved by this run.
    ConfigError / CheckpointError (one line) otherwise."""
    run_dir = Path(run_dir)
    record, cfg = read_record(run_dir)
    if checkpoint_name == BEST_NAME and not (run_dir / BEST_NAME).is_file():
        raise CheckpointError(f"{run_dir} has no {BEST_NAME}: only runs trained with "
                              f"--val-classes keep one")
    ckpt = load_checkpoint(run_dir / checkpoint_name)
    check_belongs(ckpt, cfg, run_dir / checkpoint_name)
    return record, cfg, ckpt


def params_from_checkpoint(ckpt, mcfg, xp):
    """The checkpoint's parameters on `xp`, after checking them against the model's shapes."""
    expected = {k: np.empty(s) for k, s in param_shapes(mcfg).items()}
    check_shapes(ckpt.params, expected)
    return {k: asarray(v, xp) for k, v in ckpt.params.items()}


def eval_record(run_dir, cfg, dataset, episodes, seed, step, backend, loss, acc):
    """The JSON content of an evaluation (this command's and train.py's final one)."""
    return {"run_dir": str(run_dir), "dataset": dataset, "episodes": episodes,
            "seed": seed, "checkpoint_step": step, "model": cfg.model, "reads": cfg.reads,
            "experiment": cfg.experiment, "backend": backend, "loss": loss,
            "accuracy": {str(k): float(a) for k, a in enumerate(acc, start=1)}}

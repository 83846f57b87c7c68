"""Scoring a trained run: its parameters from a checkpoint, per-instance accuracy on held-out
episodes, and the record of an evaluation. Used by train.py's final evaluations and by the
commands `python -m flmn_np.evaluate` and `memviz`.

Episode batch i is drawn from np.random.default_rng((seed, i)), so the same seed and batch size
give the same episodes, and evaluation never touches the training randomness.
"""
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..core.backend import array_namespace, asarray, to_numpy
from ..core.models import forward, param_shapes
from ..data.episodes import draw_batch
from .checkpoint import CHECKPOINT_NAME, CheckpointError, check_shapes, load_checkpoint
from .metrics import accuracy_on_host
from .rundir import check_belongs, read_record
from .validation import BEST_NAME

EVAL_BATCH = 50   # episodes per forward pass during evaluation
SE_BLOCK = 1000   # with a target standard error, episodes between two checks of it
MAX_EPISODES = 100_000   # with a target standard error, the most episodes evaluated


def evaluate_params(params, mcfg, source, episodes, samples, seed, batch_size=EVAL_BATCH,
                    with_se=False, progress=False, target_se=None, se_instance=2):
    """Per-instance accuracy (S,) and mean loss of `params` on `episodes` episodes from `source`;
    with `with_se`, also the episode standard error of each accuracy (S,), see episode_se.

    Runs forward only, in batches of `batch_size`; counts stay on the device and are synced once
    (once per SE_BLOCK episodes with `target_se`). Draws from its own generators (seed, i), so it
    never touches the training randomness, and the first n episodes of a longer evaluation are
    the n episodes of a shorter one. `progress` shows a tqdm bar (on stderr). `target_se`
    (a fraction, e.g. 0.002 for 0.2 points): `episodes` is the least number of episodes, and
    the evaluation goes on in blocks of SE_BLOCK episodes until the standard error at instance
    `se_instance` is at most `target_se` (or MAX_EPISODES are reached); the number of episodes
    used is then returned last: (acc, loss, se, episodes).
    """
    xp = array_namespace(next(iter(params.values())))
    sums = [0.0] * 5            # sum over episodes of c, t, c*c, c*t, t*t, per instance
    loss_sum = 0.0
    limit = episodes if target_se is None else max(episodes, MAX_EPISODES)
    bar = tqdm(total=episodes if target_se is None else None, unit="episode", disable=not progress,
               mininterval=2.0, dynamic_ncols=True, file=sys.stderr)
    done = 0
    try:
        for i, start in enumerate(range(0, limit, batch_size)):
            n = min(batch_size, limit - start)
            rng = np.random.default_rng((seed, i))
            x, y, inst = draw_batch(source, n, mcfg.n_classes, samples, rng)
            yd = asarray(y, xp, "int64")
            loss, logits = forward(params, asarray(x, xp, "float32"), yd, mcfg)
            c, t = per_episode_counts(logits, yd, asarray(inst, xp, "int64"), samples)
            sums = [a + b for a, b in zip(sums, _moments(xp, c, t))]
            loss_sum = loss_sum + loss * n
            done += n
            bar.update(n)
            if target_se is not None and done >= episodes and done % SE_BLOCK == 0:
                se = episode_se(*(to_numpy(v) for v in sums), done)
                bar.set_postfix_str(f"SE {100 * se[se_instance - 1]:.3f} points", refresh=False)
                if se[se_instance - 1] <= target_se:
                    break
    finally:
        bar.close()
    host = [to_numpy(v).astype(np.float64) for v in sums]
    acc = accuracy_on_host(sums[0], sums[1])
    loss = float(to_numpy(loss_sum)) / done
    if not with_se and target_se is None:
        return acc, loss
    se = episode_se(*host, done)
    return (acc, loss, se) if target_se is None else (acc, loss, se, done)


def per_episode_counts(logits, y, instance, samples):
    """(correct (B, S), total (B, S)) predictions at the k-th presentation in each episode, on the
    logits' backend, in float64 (exact); summed over episodes they are metrics.per_instance_counts.
    """
    xp = array_namespace(logits)
    correct = xp.astype(xp.argmax(logits, axis=-1) == y, xp.float64)         # (B, T)
    at_k = xp.astype(instance[..., None] == xp.arange(samples, dtype=instance.dtype),
                     xp.float64)                                             # (B, T, S)
    return xp.sum(at_k * correct[..., None], axis=1), xp.sum(at_k, axis=1)


def _moments(xp, c, t):
    return [xp.sum(c, axis=0), xp.sum(t, axis=0), xp.sum(c * c, axis=0), xp.sum(c * t, axis=0),
            xp.sum(t * t, axis=0)]


def episode_se(sc, st, scc, sct, stt, n):
    """Standard error (S,) of the accuracy sum(c) / sum(t) over n independent episodes, from the
    sums over episodes of c, t, c^2, c t and t^2 (c, t: an episode's correct and total
    predictions at an instance): the ratio estimator's
    sqrt(n / (n - 1) * sum (c - r t)^2) / sum t, r = sum c / sum t. Every class of an episode
    is shown `samples` times, so t is the number of classes in every episode and this is the
    standard deviation of the per-episode accuracy over the episodes, divided by sqrt(n).
    nan for n < 2."""
    sc, st, scc, sct, stt = (np.asarray(v, dtype=np.float64) for v in (sc, st, scc, sct, stt))
    if n < 2:
        return np.full(sc.shape, np.nan)
    r = sc / st
    ss = np.maximum(scc - 2 * r * sct + r * r * stt, 0.0)
    return np.sqrt(n / (n - 1) * ss) / st


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


def eval_record(run_dir, cfg, dataset, episodes, seed, step, backend, loss, acc, se=None):
    """The JSON content of an evaluation (this command's and train.py's final one); with `se`,
    the episode standard error of each accuracy (`accuracy_se`, episode_se)."""
    record = {"run_dir": str(run_dir), "dataset": dataset, "episodes": episodes,
            "seed": seed, "checkpoint_step": step, "model": cfg.model, "reads": cfg.reads,
            "experiment": cfg.experiment, "backend": backend, "loss": loss,
            "accuracy": {str(k): float(a) for k, a in enumerate(acc, start=1)}}
    if se is not None:
        record["accuracy_se"] = {str(k): float(e) for k, e in enumerate(se, start=1)}
    return record

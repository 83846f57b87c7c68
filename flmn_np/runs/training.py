"""The training run behind train.py: set up or resume a run directory, train, log, evaluate, save.

Run directory (--out):
    config.json     the TrainConfig, model config, class split, version, backend, start time
    metrics.csv     one row per --log-every steps (see metrics.csv_columns); test_acc_* filled at
                    evaluation points
    checkpoint.npz  written at every evaluation point, at the end and on Ctrl-C (checkpoint.py)
    eval_omniglot.json, curves.png   at the end
    validation.csv, best.npz, best.json, eval_omniglot_best.json   with --val-classes
                    (validation.py: early stopping on training classes held out of training)

Randomness: the initial parameters come from --seed; the batch of step s from
np.random.default_rng((seed, s)); evaluation episodes from their own fixed --eval-seed. Nothing
else draws random numbers, so a run resumed from its checkpoint at step s continues exactly as the
uninterrupted run would (bitwise on NumPy), and evaluation never changes what training sees.

Host syncs: none per step. Loss, gradient norm and per-instance counts are summed on the device
and read back every --log-every steps (progress bar, metrics.csv, the NaN check).
"""
import dataclasses
import datetime
import functools
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..data.augment import rotated_class_ids
from ..core.backend import (BackendError, array_namespace, asarray, backend_name, cupy_status, get_xp,
                      to_numpy)
from .checkpoint import (CHECKPOINT_NAME, CheckpointError, check_shapes, load_checkpoint,
                         save_checkpoint)
from .config import (ConfigError, TrainConfig, identity_diff, merge_for_resume, model_config,
                     parse_args, to_json)
from ..data.datasets import DataError, make_split, resolve_data_dir
from ..data.episodes import Prefetcher
from ..evaluate import (EpisodeSource, draw_batch, eval_record, evaluate_params, omniglot_data,
                       params_from_checkpoint)
from .metrics import (accuracy_on_host, append_metrics, format_accuracy_table, make_row,
                      per_instance_counts, start_metrics)
from ..core.models import init_params, loss_and_grads
from ..core.optim import clip_by_global_norm, make_optimizer
from ..plot import plot_runs
from .validation import BEST_NAME, BestTracker, split_validation

DTYPE = "float32"     # SPEC: float32 for training


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss is no longer finite); the message says why."""


class Run(NamedTuple):
    """Everything a training loop needs, built once by `setup`."""
    cfg: TrainConfig
    dir: Path
    xp: object
    mcfg: object          # models.ModelConfig
    params: dict
    opt: object
    start_step: int
    train: EpisodeSource
    test: EpisodeSource
    val: EpisodeSource | None     # validation classes (--val-classes), else None
    best: BestTracker | None


# ---------------------------------------------------------------- run directory

def open_run_dir(cfg, given):
    """Check --out / --resume and return (final config, checkpoint or None).

    A fresh run needs a directory without a run in it; --resume needs config.json and
    checkpoint.npz, and flags that agree with the recorded run (config.merge_for_resume)."""
    run_dir = Path(cfg.out)
    has_run = any((run_dir / name).exists() for name in ("config.json", CHECKPOINT_NAME))
    if not cfg.resume:
        if has_run:
            raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it, "
                              f"or choose another --out")
        return cfg, None
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"--resume: {run_dir} holds no run (no config.json); "
                          f"drop --resume to start one there")
    if not (run_dir / CHECKPOINT_NAME).is_file():
        raise ConfigError(f"--resume: no {CHECKPOINT_NAME} in {run_dir} (the run stopped before "
                          f"its first checkpoint); delete {run_dir} or choose another --out")
    recorded = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text())["config"])
    cfg = merge_for_resume(recorded, {**given, "out": cfg.out})   # the directory opened here
    ckpt = load_checkpoint(run_dir / CHECKPOINT_NAME)
    diff = identity_diff(TrainConfig.from_dict(ckpt.config), cfg)
    if diff:
        raise CheckpointError(f"{run_dir / CHECKPOINT_NAME} is from another run: it has {diff}")
    return cfg, ckpt


def choose_backend(name):
    """get_xp, printing which backend runs and, for 'auto' without CuPy, why."""
    xp = get_xp(name)
    note = ""
    if name == "auto" and backend_name(xp) == "numpy":
        note = f" ({cupy_status()[1]})"
    print(f"backend: {backend_name(xp)}{note}")
    return xp


def class_split(cfg):
    """(train_ids, test_ids, val_ids): the run's split, with --val-classes of the training
    classes moved to val_ids (empty without it)."""
    train_ids, test_ids = make_split(cfg.split, cfg.split_seed)
    val_ids = np.zeros(0, dtype=np.int64)
    if cfg.val_classes:
        try:
            train_ids, val_ids = split_validation(train_ids, cfg.val_classes, cfg.split_seed)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return train_ids, test_ids, val_ids


def load_sources(cfg):
    """(data_dir, EpisodeSource for training, held-out test and validation (None without
    --val-classes), (train_ids, test_ids, val_ids)). With --rotations90 the training classes
    include their rotations; held-out and validation ones do not."""
    data_dir = resolve_data_dir(cfg.data_dir)
    train_ids, test_ids, val_ids = class_split(cfg)
    images, augment = omniglot_data(cfg, data_dir)
    train_classes = train_ids
    if cfg.rotations90:   # images holds 4 blocks: the plain classes, then 3 rotations of them
        train_classes = rotated_class_ids(train_ids, images.shape[0] // 4)
    val = EpisodeSource(images, val_ids, augment) if val_ids.size else None
    return (data_dir, EpisodeSource(images, np.asarray(train_classes), augment),
            EpisodeSource(images, np.asarray(test_ids), augment), val,
            (train_ids, test_ids, val_ids))


def run_record(cfg, mcfg, xp, split_ids, data_dir):
    """The content of config.json for a fresh run."""
    train_ids, test_ids, val_ids = split_ids
    split = {"name": cfg.split, "seed": cfg.split_seed,
             "train_ids": [int(i) for i in train_ids], "test_ids": [int(i) for i in test_ids]}
    if val_ids.size:
        split["val_ids"] = [int(i) for i in val_ids]
    return {
        "config": cfg.to_dict(),
        "model_config": {**dataclasses.asdict(mcfg), "n_slots": mcfg.n_slots},
        "seed": cfg.seed,
        "split": split,
        "data_dir": str(data_dir),
        "version": __version__,
        "backend": backend_name(xp),
        "dtype": DTYPE,
        "start_time": now(),
        "resumes": [],
    }


def now():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def write_json(path, obj):
    """Write JSON atomically (temp file + rename)."""
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(to_json(obj) + "\n")
    os.replace(tmp, path)


def setup(cfg, ckpt):
    """Load data, build params and optimizer or restore them from `ckpt`, write config.json."""
    mcfg = model_config(cfg)
    xp = choose_backend(cfg.backend)
    if cfg.patience and not cfg.val_classes:
        raise ConfigError("--patience needs --val-classes (the classes that decide when to stop)")
    data_dir, train, test, val, split_ids = load_sources(cfg)
    run_dir = Path(cfg.out)
    params = init_params(mcfg, cfg.seed, xp, DTYPE)
    opt = make_optimizer(cfg.optimizer, params, lr=cfg.lr)
    if ckpt is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        record = run_record(cfg, mcfg, xp, split_ids, data_dir)
        start_step = 0
    else:
        record = json.loads((run_dir / "config.json").read_text())
        if record["split"]["test_ids"] != [int(i) for i in split_ids[1]]:
            raise CheckpointError(f"the class split made now differs from the one recorded in "
                                  f"{run_dir / 'config.json'}; cannot resume")
        check_shapes(ckpt.params, params)
        params = {k: asarray(v, xp) for k, v in ckpt.params.items()}
        opt.load_state_dict({k: v if v.dtype.kind in "iu" else asarray(v, xp)
                             for k, v in ckpt.opt_state.items()})
        record["config"] = cfg.to_dict()
        record["resumes"].append({"time": now(), "step": ckpt.step, "backend": backend_name(xp)})
        start_step = ckpt.step
        print(f"resuming {run_dir} at step {start_step}")
    write_json(run_dir / "config.json", record)
    best = None
    if val is not None:
        best = BestTracker(run_dir, cfg.samples, resume_step=start_step if ckpt else None)
    return Run(cfg, run_dir, xp, mcfg, params, opt, start_step, train, test, val, best)


# ---------------------------------------------------------------- the loop

class IntervalStats:
    """Sums of loss, gradient norm and per-instance counts over the steps since the last log row,
    kept on the device; `read` syncs them once and starts a new interval."""

    def __init__(self, samples):
        self.samples = samples
        self.reset()

    def reset(self):
        self.steps, self.loss, self.gnorm, self.correct, self.total = 0, 0.0, 0.0, 0.0, 0.0
        self.restart_clock()

    def restart_clock(self):
        self.since = time.perf_counter()

    def add(self, loss, gnorm, logits, y, inst):
        c, t = per_instance_counts(logits, y, inst, self.samples)
        self.steps += 1
        self.loss, self.gnorm = self.loss + loss, self.gnorm + gnorm
        self.correct, self.total = self.correct + c, self.total + t

    def read(self):
        """-> (steps, mean loss, mean grad norm, per-instance accuracy (S,) np, seconds); resets."""
        steps = self.steps
        loss = float(to_numpy(self.loss)) / steps
        gnorm = float(to_numpy(self.gnorm)) / steps
        acc = accuracy_on_host(self.correct, self.total)
        seconds = time.perf_counter() - self.since
        self.reset()
        return steps, loss, gnorm, acc, seconds


def train_on_batch(run, batch, stats):
    """One optimizer step on a host batch (x, y, instance index): move it to the device,
    loss and gradients, clip, update the params in place, add to the interval's sums."""
    x, y, inst = batch
    xp = run.xp
    y = asarray(y, xp, "int64")
    loss, logits, grads = loss_and_grads(run.params, asarray(x, xp, DTYPE), y, run.mcfg)
    grads, gnorm = clip_by_global_norm(grads, run.cfg.clip)
    run.opt.step(run.params, grads)
    stats.add(loss, gnorm, logits, y, asarray(inst, xp, "int64"))


def batch_for_step(run, step):
    """The host batch of training step `step` (1-based): a function of (seed, step) only."""
    rng = np.random.default_rng((run.cfg.seed, step))
    return draw_batch(run.train, run.cfg.batch_size, run.cfg.classes, run.cfg.samples, rng)


def is_eval_step(cfg, step):
    return step == cfg.steps or (cfg.eval_every > 0 and step % cfg.eval_every == 0)


def evaluate_on_test(run, params, step, episodes, title, json_name=None):
    """Held-out per-instance accuracy (S,) of `params` on `episodes` test episodes, printed as a
    table and, given json_name, written as the file `python -m flmn_np.evaluate` writes."""
    acc, loss = evaluate_params(params, run.mcfg, run.test, episodes, run.cfg.samples,
                                run.cfg.eval_seed)
    tqdm.write(format_accuracy_table(acc, episodes, title=title))
    if json_name is not None:
        write_json(run.dir / json_name,
                   eval_record(run.dir, run.cfg, "omniglot", episodes, run.cfg.eval_seed, step,
                               backend_name(run.xp), loss, acc))
    return acc


def evaluate_now(run, step, final):
    """Held-out per-instance accuracy (S,) at `step` (eval_omniglot.json when final); None when
    the number of episodes for this point (--eval-episodes, or --final-eval-episodes) is 0."""
    episodes = run.cfg.final_eval_episodes if final else run.cfg.eval_episodes
    if episodes == 0:
        return None
    return evaluate_on_test(run, run.params, step, episodes, f"held-out, step {step}",
                            "eval_omniglot.json" if final else None)


def validate_now(run, step):
    """Score the parameters on the validation classes, keep best.npz up to date. Returns True
    when --patience evaluation points have passed without a better score (stop early)."""
    acc, loss = evaluate_params(run.params, run.mcfg, run.val, run.cfg.val_episodes,
                                run.cfg.samples, run.cfg.eval_seed)
    improved = run.best.update(step, acc, loss, run.params, run.opt.state_dict(),
                               run.cfg.to_dict())
    tqdm.write(format_accuracy_table(acc, run.cfg.val_episodes, title=f"validation, step {step}")
               + ("   (best so far: best.npz)" if improved else ""))
    return run.best.exhausted(run.cfg.patience)


def evaluate_best(run):
    """Evaluate best.npz on the test classes like the final checkpoint (eval_omniglot_best.json)."""
    if run.cfg.final_eval_episodes == 0:
        return
    ckpt = load_checkpoint(run.dir / BEST_NAME)
    evaluate_on_test(run, params_from_checkpoint(ckpt, run.mcfg, run.xp), ckpt.step,
                     run.cfg.final_eval_episodes, f"held-out, best.npz (step {ckpt.step})",
                     "eval_omniglot_best.json")


def params_finite(params):
    """True when every parameter is finite (one sync; only before a checkpoint)."""
    xp = array_namespace(next(iter(params.values())))
    return all(bool(xp.all(xp.isfinite(p))) for p in params.values())


def kept_checkpoint(run_dir):
    """What a stopped run leaves behind, for its error message."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        return "no checkpoint was written yet"
    return f"the last good checkpoint (step {load_checkpoint(path).step}) is kept in {run_dir}"


def checkpoint(run, step):
    """Save params/optimizer at `step`, refusing a non-finite state."""
    if not params_finite(run.params):
        raise TrainingError(f"the parameters are not finite at step {step}; stopped, "
                            f"{kept_checkpoint(run.dir)} (try a smaller --lr or --clip)")
    save_checkpoint(run.dir / CHECKPOINT_NAME, run.params, run.opt.state_dict(), step,
                    run.cfg.to_dict())


def check_finite(loss, step, run_dir):
    """Stop the run (keeping the last checkpoint) when the loss is nan or inf."""
    if not math.isfinite(loss):
        raise TrainingError(f"the loss is not finite ({loss}) at step {step}; stopped, "
                            f"{kept_checkpoint(run_dir)} (try a smaller --lr or --clip)")


def install_interrupt_flag():
    """Ctrl-C sets the returned Event (the loop then stops at the end of the step, so parameters
    are never saved half-updated); a second Ctrl-C interrupts at once. Returns (event, restore)."""
    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    return stop, lambda: signal.signal(signal.SIGINT, previous)


def log_point(run, stats, step, bar, wall_time, stopping):
    """At a logging step: sync the interval's sums, stop on a non-finite loss, update the bar,
    evaluate (at evaluation points; validation first, which may end the run early), append the
    metrics.csv row, and checkpoint (at evaluation points and when stopping).
    Returns True when the run ends here (last step, or --patience ran out)."""
    cfg = run.cfg
    n_steps, loss, gnorm, acc, seconds = stats.read()
    check_finite(loss, step, run.dir)
    bar.set_postfix(loss=f"{loss:.3f}", acc2=f"{acc[min(1, len(acc) - 1)]:.3f}",
                    eps=f"{n_steps * cfg.batch_size / seconds:.0f}/s")
    evaluating = is_eval_step(cfg, step)
    final = step == cfg.steps
    if evaluating and run.best is not None:
        if validate_now(run, step) and not final:
            tqdm.write(f"no better validation score in {cfg.patience} evaluation points: "
                       f"stopping early at step {step} (best: step {run.best.best_step})")
            final = True
    test_acc = evaluate_now(run, step, final) if evaluating else None
    row = make_row(step, step * cfg.batch_size, loss, gnorm, acc, test_acc, wall_time)
    append_metrics(run.dir / "metrics.csv", row, cfg.samples)
    if evaluating or stopping:
        checkpoint(run, step)
    stats.restart_clock()   # episodes/s counts training only, not evaluation
    return final


def train(run):
    """The training loop from run.start_step to cfg.steps (or an early stop).
    Returns (last step taken, whether the run finished rather than being interrupted)."""
    cfg = run.cfg
    wall_offset = start_metrics(run.dir / "metrics.csv", cfg.samples,
                                keep_until_step=run.start_step if run.start_step else None)
    started = time.perf_counter() - wall_offset
    stats = IntervalStats(cfg.samples)
    stop, restore_sigint = install_interrupt_flag()
    bar = tqdm(total=cfg.steps, initial=run.start_step, unit="step", dynamic_ncols=True,
               mininterval=1.0)
    step, finished = run.start_step, False
    # NumPy's overflow / invalid-value warnings are silenced: a non-finite loss is caught at
    # the next log point and stops the run with one clear message instead.
    try:
        with np.errstate(all="ignore"), Prefetcher(functools.partial(batch_for_step, run),
                                                   run.start_step + 1, cfg.steps + 1) as batches:
            for step, batch in batches:
                train_on_batch(run, batch, stats)
                bar.update(1)
                stopping = stop.is_set()
                if is_eval_step(cfg, step) or stopping or step % cfg.log_every == 0:
                    finished = log_point(run, stats, step, bar, time.perf_counter() - started,
                                         stopping)
                if stopping or finished:
                    break
                if cfg.stop_after == step:
                    os.kill(os.getpid(), signal.SIGKILL)   # testing hook: a hard crash
    finally:
        bar.close()
        restore_sigint()
    return step, finished


# ---------------------------------------------------------------- entry point

def run_training(argv=None):
    """Parse, set up, train. Returns the process exit code."""
    cfg, ckpt = open_run_dir(*parse_args(argv))
    if ckpt is not None and ckpt.step >= cfg.steps:
        print(f"{cfg.out} is already trained to step {ckpt.step}; pass a larger --steps "
              f"to train on")
        return 0
    run = setup(cfg, ckpt)
    step, finished = train(run)
    if not finished:
        print(f"interrupted at step {step}; checkpoint saved. Resume with:\n"
              f"  python train.py --out {run.dir} --resume", file=sys.stderr)
        return 130
    plot_runs([run.dir], run.dir / "curves.png")
    if run.best is not None:
        evaluate_best(run)
    print(f"done: {step} steps ({step * run.cfg.batch_size} episodes); run in {run.dir} "
          f"(eval_omniglot.json, curves.png{', best.npz' if run.best else ''})")
    return 0


def main(argv=None):
    """train.py: exit code 2 with a one-line message (no traceback) for every problem it knows."""
    try:
        return run_training(argv)
    except (ConfigError, CheckpointError, BackendError, DataError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

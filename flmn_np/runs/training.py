"""The training run behind train.py: set up or resume a run, train, log, evaluate, save.

Run directory (--out; opened, locked and checked by rundir.py):
    config.json     the TrainConfig, model config, class split, where the data came from (the
                    checksums of the Omniglot files, no machine path), version, backend, start time
    metrics.csv     one row per --log-every steps (see metrics.csv_columns); test_acc_* filled at
                    evaluation points
    checkpoint.npz  written at every evaluation point, at the end and on Ctrl-C or SIGTERM,
                    never with non-finite values (checkpoint.py)
    eval_omniglot.json, curves.png   at the end, after the last checkpoint
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
from ..core.backend import (array_namespace, asarray, backend_name, cupy_status, get_xp,
                            to_numpy)
from .checkpoint import (CHECKPOINT_NAME, CheckpointError, check_shapes, load_checkpoint,
                         save_checkpoint)
from .curves import plot_runs
from .datafolder import run_data_dir
from .evaluation import eval_record, evaluate_params, params_from_checkpoint
from .config import (ConfigError, TrainConfig, check_episode_sizes, model_config, parse_args)
from ..data.episodes import EpisodeSource, Prefetcher, draw_batch
from ..data.files import KNOWN_FILES, file_hashes, resolve_data_dir
from ..data.sources import omniglot_data
from ..data.splits import make_split
from .metrics import (accuracy_on_host, append_metrics, format_accuracy_table, make_row,
                      per_instance_counts, start_metrics)
from ..core.models import init_params, loss_and_grads
from ..core.optim import clip_by_global_norm, make_optimizer
from ..cli import memory_error_line, os_error_line, run_command
from .rundir import CONFIG_NAME, TrainingError, open_run_dir, write_json
from .validation import BEST_NAME, BestTracker, ended_early, split_validation

DTYPE = "float32"     # float32 to train (float64 only in the gradient checks)
OMNIGLOT_FILES = ("images_background.zip", "images_evaluation.zip")


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


# ---------------------------------------------------------------- setting up

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


def load_sources(cfg, data_dir):
    """(data_dir, EpisodeSource for training, held-out test and validation (None without
    --val-classes), (train_ids, test_ids, val_ids)). With --rotations90 the training classes
    include their rotations; held-out and validation ones do not. ConfigError when an episode
    size does not fit a class set (checked here, before the first step)."""
    train_ids, test_ids, val_ids = class_split(cfg)
    sizes = {"held-out test": test_ids.size, "validation": val_ids.size or None}
    check_episode_sizes(cfg, {"training": train_ids.size * (4 if cfg.rotations90 else 1),
                              **{k: v for k, v in sizes.items() if v}}, drawers=cfg.samples)
    images, augment = omniglot_data(cfg, data_dir)
    check_episode_sizes(cfg, {}, drawers=images.shape[1])
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
        "data": data_record(cfg, data_dir),
        "version": __version__,
        "backend": backend_name(xp),
        "dtype": DTYPE,
        "start_time": now(),
        "resumes": [],
    }


def data_record(cfg, data_dir):
    """Where the run's data came from, without a path of this machine: how the folder was chosen,
    the folder only when it was given as a relative path, and the sha256 of the Omniglot files;
    "folder", the absolute path, is for the commands that read the run later (datafolder.py)
    and is removed before a run is published."""
    chosen_by = ("--data-dir" if cfg.data_dir is not None else
                 "FLMN_DATA_DIR" if os.environ.get("FLMN_DATA_DIR") else "default")
    data_dir = Path(data_dir)
    sha256 = {}
    for name in OMNIGLOT_FILES:
        relpath = KNOWN_FILES[name].relpath
        sha256[relpath] = file_hashes(data_dir / relpath)[0]
    return {"chosen_by": chosen_by, "dir": None if data_dir.is_absolute() else str(data_dir),
            "folder": str(data_dir.resolve()), "sha256": sha256}


def now():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def setup(rd):
    """Load data, build params and optimizer or restore them from the checkpoint, and write
    config.json last: a start that fails before it leaves nothing (rundir.RunDir.abandon)."""
    cfg, ckpt = rd.cfg, rd.ckpt
    mcfg = model_config(cfg)
    if cfg.patience and not cfg.val_classes:
        raise ConfigError("--patience needs --val-classes (the classes that decide when to stop)")
    xp = choose_backend(cfg.backend)
    if rd.record is None:
        data_dir = resolve_data_dir(cfg.data_dir)
    else:   # --data-dir given now, else the folder the run recorded (datafolder.py)
        given = cfg.data_dir if cfg.data_dir != rd.record["config"].get("data_dir") else None
        data_dir = run_data_dir(rd.record, given)
    data_dir, train, test, val, split_ids = load_sources(cfg, data_dir)
    params = init_params(mcfg, cfg.seed, xp, DTYPE)
    opt = make_optimizer(cfg.optimizer, params, lr=cfg.lr)
    start_step = 0 if ckpt is None else ckpt.step
    if rd.record is None:
        record = run_record(cfg, mcfg, xp, split_ids, data_dir)
    else:
        record = rd.record
        if record["split"]["test_ids"] != [int(i) for i in split_ids[1]]:
            raise CheckpointError(f"the class split made now differs from the one recorded in "
                                  f"{rd.path / CONFIG_NAME}; cannot resume")
        if ckpt is not None:
            params = restore(ckpt, params, opt, xp)
        record["config"] = cfg.to_dict()
        record.setdefault("resumes", []).append(
            {"time": now(), "step": start_step, "backend": backend_name(xp)})
        print(f"resuming {rd.path} at step {start_step}"
              + ("" if ckpt else " (it stopped before its first checkpoint)"))
    write_json(rd.path / CONFIG_NAME, record)
    best = None
    if val is not None:
        best = BestTracker(rd.path, cfg.samples,
                           resume_step=None if rd.record is None else start_step)
    return Run(cfg, rd.path, xp, mcfg, params, opt, start_step, train, test, val, best)


def restore(ckpt, params, opt, xp):
    """The checkpoint's parameters on `xp`, and its state loaded into `opt`, after checking both
    against the model's shapes."""
    check_shapes(ckpt.params, params)
    if not ckpt.opt_state:
        raise CheckpointError("the checkpoint holds parameters only (optimizer state stripped for "
                              "publishing): it can be evaluated, not resumed")
    check_shapes(ckpt.opt_state, opt.state_dict(), "optimizer state")
    opt.load_state_dict({k: v if v.dtype.kind in "iu" else asarray(v, xp)
                         for k, v in ckpt.opt_state.items()})
    return {k: asarray(v, xp) for k, v in ckpt.params.items()}


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


def evaluate_on_test(run, params, step, episodes, title):
    """Held-out per-instance accuracy (S,) of `params` on `episodes` test episodes, printed as a
    table, and the record `python -m flmn_np.evaluate` would write for it."""
    acc, loss = evaluate_params(params, run.mcfg, run.test, episodes, run.cfg.samples,
                                run.cfg.eval_seed)
    tqdm.write(format_accuracy_table(acc, episodes, title=title))
    return acc, eval_record(run.dir, run.cfg, "omniglot", episodes, run.cfg.eval_seed, step,
                            backend_name(run.xp), loss, acc)


def evaluate_now(run, step, final):
    """(held-out per-instance accuracy (S,), its eval record) at `step`; (None, None) when the
    number of episodes for this point (--eval-episodes, or --final-eval-episodes) is 0."""
    episodes = run.cfg.final_eval_episodes if final else run.cfg.eval_episodes
    if episodes == 0:
        return None, None
    return evaluate_on_test(run, run.params, step, episodes, f"held-out, step {step}")


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
    _, record = evaluate_on_test(run, params_from_checkpoint(ckpt, run.mcfg, run.xp), ckpt.step,
                                 run.cfg.final_eval_episodes,
                                 f"held-out, best.npz (step {ckpt.step})")
    write_json(run.dir / "eval_omniglot_best.json", record)


def params_finite(params):
    """True when every parameter is finite (one sync; only before a checkpoint)."""
    xp = array_namespace(next(iter(params.values())))
    return all(bool(xp.all(xp.isfinite(p))) for p in params.values())


def kept_checkpoint(run_dir):
    """What a stopped run leaves behind, for its error message."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        return "no checkpoint was written yet (--resume starts the run again from step 0)"
    try:
        step = load_checkpoint(path).step
    except CheckpointError as e:
        return f"no usable checkpoint is left ({e})"
    return f"the last good checkpoint (step {step}) is kept in {run_dir}"


def check_params_finite(run, step):
    """Stop the run before a non-finite state is scored, compared or saved."""
    if not params_finite(run.params):
        raise TrainingError(f"the parameters are not finite at step {step}; stopped, "
                            f"{kept_checkpoint(run.dir)} (try a smaller --lr or --clip)")


def checkpoint(run, step):
    """Save params/optimizer at `step` (save_checkpoint refuses a non-finite state)."""
    save_checkpoint(run.dir / CHECKPOINT_NAME, run.params, run.opt.state_dict(), step,
                    run.cfg.to_dict())


def check_finite(loss, step, run_dir):
    """Stop the run (keeping the last checkpoint) when the loss is nan or inf."""
    if not math.isfinite(loss):
        raise TrainingError(f"the loss is not finite ({loss}) at step {step}; stopped, "
                            f"{kept_checkpoint(run_dir)} (try a smaller --lr or --clip)")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install_interrupt_flag():
    """Ctrl-C or SIGTERM sets the returned Event and its `signum` (the loop then stops at the
    end of the step and saves a checkpoint, so parameters are never saved half-updated); a second
    one interrupts at once. Returns (event, restore)."""
    stop = threading.Event()
    stop.signum = None

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.signum = signum
        stop.set()

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    return stop, lambda: [signal.signal(s, h) for s, h in previous.items()]


def log_point(run, stats, step, bar, wall_time, stopping):
    """At a logging step: sync the interval's sums, stop on a non-finite loss, update the bar,
    evaluate (at evaluation points; validation first, which may end the run early), append the
    metrics.csv row, checkpoint (at evaluation points and when stopping), and at the end write
    eval_omniglot.json (after its checkpoint, so it never names a step the run does not have).
    Returns True when the run ends here (last step, or --patience ran out)."""
    cfg = run.cfg
    n_steps, loss, gnorm, acc, seconds = stats.read()
    check_finite(loss, step, run.dir)
    bar.set_postfix(loss=f"{loss:.3f}", acc2=f"{acc[min(1, len(acc) - 1)]:.3f}",
                    eps=f"{n_steps * cfg.batch_size / seconds:.0f}/s")
    evaluating = is_eval_step(cfg, step)
    if evaluating or stopping:
        check_params_finite(run, step)
    final = step == cfg.steps
    if evaluating and run.best is not None:
        if validate_now(run, step) and not final:
            tqdm.write(f"no better validation score in {cfg.patience} evaluation points: "
                       f"stopping early at step {step} (best: step {run.best.best_step})")
            final = True
    test_acc, record = evaluate_now(run, step, final) if evaluating else (None, None)
    row = make_row(step, step * cfg.batch_size, loss, gnorm, acc, test_acc, wall_time)
    append_metrics(run.dir / "metrics.csv", row, cfg.samples)
    if evaluating or stopping:
        checkpoint(run, step)
    if final and record is not None:
        write_json(run.dir / "eval_omniglot.json", record)
    stats.restart_clock()   # episodes/s counts training only, not evaluation
    return final


def train(run):
    """The training loop from run.start_step to cfg.steps (or an early stop). Returns (last
    step taken, None if the run finished, else the signal that interrupted it)."""
    cfg = run.cfg
    wall_offset = start_metrics(run.dir / "metrics.csv", cfg.samples,
                                keep_until_step=run.start_step if run.start_step else None)
    started = time.perf_counter() - wall_offset
    stats = IntervalStats(cfg.samples)
    stop, restore_signals = install_interrupt_flag()
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
    finally:
        bar.close()
        restore_signals()
    return step, None if finished else stop.signum


# ---------------------------------------------------------------- entry point

def run_training(argv=None):
    """Parse, open and lock the run directory, set up, train. Returns the process exit code."""
    rd = open_run_dir(*parse_args(argv))
    try:
        return train_in(rd)
    finally:
        rd.close()


def _recorded_step(path, key="checkpoint_step"):
    """The step a JSON file of the run names (eval_*.json, best.json), None if it cannot say."""
    try:
        return int(json.loads(Path(path).read_text())[key])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def end_files_missing(rd):
    """What the end of a finished run writes after its last checkpoint and a kill left out (or
    left from an earlier end): eval_omniglot.json, curves.png, eval_omniglot_best.json."""
    d, cfg, missing = rd.path, rd.cfg, []
    if cfg.final_eval_episodes and _recorded_step(d / "eval_omniglot.json") != rd.ckpt.step:
        missing.append("eval_omniglot.json")
    curves, metrics = d / "curves.png", d / "metrics.csv"
    if metrics.is_file() and (not curves.is_file()
                              or curves.stat().st_mtime < metrics.stat().st_mtime):
        missing.append("curves.png")
    best_step = _recorded_step(d / "best.json", "step")
    if cfg.val_classes and cfg.final_eval_episodes and (d / BEST_NAME).is_file() and \
            _recorded_step(d / "eval_omniglot_best.json") != best_step:
        missing.append("eval_omniglot_best.json")
    return missing


def finish(run, step, missing):
    """Write the end-of-run files named in `missing` (see end_files_missing)."""
    if "eval_omniglot.json" in missing:
        _, record = evaluate_now(run, step, final=True)
        write_json(run.dir / "eval_omniglot.json", record)
    if "curves.png" in missing:
        plot_runs([run.dir], run.dir / "curves.png")
    if "eval_omniglot_best.json" in missing:
        evaluate_best(run)


def train_in(rd):
    """Train the opened run `rd` to its end; 128 + signal number when interrupted. A run already
    at its last step (or ended early by --patience) only gets the end files a kill left out."""
    early = rd.ckpt is not None and ended_early(rd.path, rd.cfg, rd.ckpt.step)
    if rd.ckpt is not None and (rd.ckpt.step >= rd.cfg.steps or early):
        missing = end_files_missing(rd) if rd.ckpt.step <= rd.cfg.steps else []
        if not missing:
            print(f"{rd.path} is already trained to step {rd.ckpt.step}; pass a larger "
                  + ("--patience" if early else "--steps") + " to train on")
            return 0
        print(f"{rd.path} is trained to step {rd.ckpt.step}; writing what its end left out: "
              f"{', '.join(missing)}")
        finish(setup(rd), rd.ckpt.step, missing)
        return 0
    try:
        run = setup(rd)
    except BaseException:
        rd.abandon()
        raise
    try:
        step, signum = train(run)
        if signum is None:   # the end files (a failed write here is resumed like one in train)
            plot_runs([run.dir], run.dir / "curves.png")
            if run.best is not None:
                evaluate_best(run)
    except OSError as e:
        raise TrainingError(f"{os_error_line(e)}; stopped, {kept_checkpoint(run.dir)}; once "
                            f"fixed, resume with: python train.py --out {run.dir} --resume") \
            from None
    except MemoryError as e:
        raise TrainingError(f"{memory_error_line(e)}; stopped, {kept_checkpoint(run.dir)}") \
            from None
    if signum is not None:
        print(f"interrupted ({signal.Signals(signum).name}) at step {step}; checkpoint saved. "
              f"Resume with:\n  python train.py --out {run.dir} --resume", file=sys.stderr)
        return 128 + signum
    print(f"done: {step} steps ({step * run.cfg.batch_size} episodes); run in {run.dir} "
          f"(eval_omniglot.json, curves.png{', best.npz' if run.best else ''})")
    return 0


def main(argv=None):
    """train.py: exit code 2 with a one-line message (no traceback) for every problem it knows,
    130 on a second Ctrl-C."""
    return run_command("train.py", run_training, argv)

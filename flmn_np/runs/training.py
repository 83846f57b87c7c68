"""The training loop behind train.py: set up (setup.py) or resume a run, train, log, evaluate,
checkpoint, and write the end of the run (finish.py).

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
import functools
import math
import signal
import sys
import threading
import time

import numpy as np
from tqdm import tqdm

from ..cli import memory_error_line, os_error_line, run_command
from ..core.backend import array_namespace, asarray, to_numpy
from ..core.models import loss_and_grads
from ..core.optim import clip_by_global_norm
from ..data.episodes import Prefetcher, draw_batch
from .checkpoint import CHECKPOINT_NAME, save_checkpoint
from .config import parse_args
from .curves import plot_runs
from .evaluation import evaluate_params
from .finish import end_files_missing, evaluate_best, evaluate_now, finish
from .metrics import (accuracy_on_host, append_metrics, format_accuracy_table, make_row,
                      per_instance_counts, start_metrics)
from .rundir import TrainingError, kept_checkpoint, open_run_dir, write_json
from .setup import DTYPE, setup
from .validation import ended_early

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


def params_finite(params):
    """True when every parameter is finite (one sync; only before a checkpoint)."""
    xp = array_namespace(next(iter(params.values())))
    return all(bool(xp.all(xp.isfinite(p))) for p in params.values())


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

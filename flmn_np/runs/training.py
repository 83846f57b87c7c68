"""The training loop behind train.py: set up (setup.py) or resume a run, train (one step:
step.py), log, evaluate (evalpoint.py), checkpoint, and write the end of the run (finish.py).

Run directory (--out; opened, locked and checked by rundir.py):
    config.json     the TrainConfig, model config, class split, where the data came from (the
                    checksums of the Omniglot files, no machine path), version, backend, start time
    metrics.csv     one row per --log-every steps (see metrics.csv_columns); test_acc_* filled at
                    evaluation points
    checkpoint.npz  written at every evaluation point, at the end and on Ctrl-C or SIGTERM,
                    never with non-finite values (checkpoint.py)
    eval_omniglot.json, curves.png   at the end, after the last checkpoint (finish.py)
    validation.csv, best.npz, best.json, eval_omniglot_best.json   with --val-classes
                    (validation.py: early stopping on training classes held out of training)

Randomness: the initial parameters come from --seed; the batch of step s from
np.random.default_rng((seed, s)) (step.batch_for_step); evaluation episodes from their own fixed
--eval-seed. Nothing else draws random numbers, so a run resumed from its checkpoint at step s
continues exactly as the uninterrupted run would (bitwise on NumPy), and evaluation never changes
what training sees.

--seeds N,M,... trains the seeds' runs side by side as one stack (stack.py): the loop below
steps the stack and gives each run its own log points, checkpoints and end, as if it ran alone.

Host syncs: none per step. Loss, gradient norm and per-instance counts are summed on the device
and read back every --log-every steps (progress bar, metrics.csv, the NaN check).
"""
import math
import signal
import sys
import threading
import time
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from ..cli import memory_error_line, os_error_line, run_command
from ..core.backend import array_namespace, to_numpy
from ..data.episodes import Prefetcher
from .checkpoint import CHECKPOINT_NAME, save_checkpoint
from .config import parse_command_line
from .evalpoint import evaluate_now, is_eval_step, validate_now
from .finish import already_trained, end_files, finish
from .metrics import accuracy_on_host, append_metrics, make_row, per_instance_counts, start_metrics
from .rundir import TrainingError, kept_checkpoint, open_run_dir
from .setup import Loaded, setup
from .stack import Stack, abandon_all, open_members

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
    """At a logging step: sync the interval's sums, stop on a non-finite loss, update the bar
    (None: the bar shows another member of the stack), evaluate (at evaluation points;
    validation first, which may end the run early), append the metrics.csv row, and checkpoint
    (at evaluation points and when stopping). Returns (True when the run ends here: its last
    step, or --patience ran out; the record of this point's test evaluation or None), the
    record for the end of the run (finish.finish, after this checkpoint, so that
    eval_omniglot.json never names a step the run does not have)."""
    cfg = run.cfg
    n_steps, loss, gnorm, acc, seconds = stats.read()
    check_finite(loss, step, run.dir)
    if bar is not None:
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
    stats.restart_clock()   # episodes/s counts training only, not evaluation
    return final, record


def train(stack, prog="train.py"):
    """The training loop of a stack's runs from their start step to cfg.steps, each run until it
    ends (its last step, or --patience ran out) and leaves the stack. Returns (last step taken,
    the signal that interrupted the loop or None, {seed: step} of the runs that ended, and the
    runs that stopped on an error, only in a stack of --seeds: one run alone raises it).
    `prog`: the command's name in the lines it prints (Command.name)."""
    cfg, start = stack.cfg, stack.runs[0].start_step
    stats, started = {}, {}
    for run in stack.runs:
        wall_offset = start_metrics(run.dir / "metrics.csv", cfg.samples,
                                    keep_until_step=start if start else None)
        started[run.cfg.seed] = time.perf_counter() - wall_offset
        stats[run.cfg.seed] = IntervalStats(cfg.samples)
    stop, restore_signals = install_interrupt_flag()
    bar = tqdm(total=cfg.steps, initial=start, unit="step", dynamic_ncols=True, mininterval=1.0)
    step, ended, failed = start, {}, []
    # NumPy's overflow / invalid-value warnings are silenced: a non-finite loss is caught at
    # the next log point and stops the run with one clear message instead.
    try:
        with np.errstate(all="ignore"), Prefetcher(stack.batches, start + 1,
                                                   cfg.steps + 1) as batches:
            for step, batch in batches:
                stack.train_on_batch(batch, stats)
                bar.update(1)
                stopping = stop.is_set()
                if is_eval_step(cfg, step) or stopping or step % cfg.log_every == 0:
                    first, errors = stack.runs[0], []
                    for run in stack.runs:
                        try:
                            done, record = log_point(run, stats[run.cfg.seed], step,
                                                     bar if run is first else None,
                                                     time.perf_counter() - started[run.cfg.seed],
                                                     stopping)
                        except TrainingError as e:
                            if not stack.lead:
                                raise
                            errors.append(e)
                            failed.append(run)
                            stack.drop(run)
                            continue
                        if done:
                            finish(run, step, record)
                            ended[run.cfg.seed] = step
                            stack.drop(run)
                    report_stopped(errors, stack, prog)
                if stopping or not stack.runs:
                    break
    finally:
        bar.close()
        restore_signals()
    return step, stop.signum if stack.runs else None, ended, failed


def report_stopped(errors, stack, prog="train.py"):
    """One line on stderr for each member of a stack that stopped on an error at this log point,
    saying whether the others go on (said once every member of the point has been logged)."""
    left = [run.cfg.seed for run in stack.runs]
    goes_on = (f"; seed{'s' if len(left) > 1 else ''} {', '.join(map(str, left))} "
               f"go{'' if len(left) > 1 else 'es'} on" if left else "")
    for e in errors:
        tqdm.write(f"{prog}: {e}{goes_on}", file=sys.stderr)


# ---------------------------------------------------------------- entry point

class Command(NamedTuple):
    """How the training command was started, for what it prints: `name` begins its error lines
    (cli.run_command), `usage` is its --help and usage lines' name, `typed` begins the --resume
    command it prints."""
    name: str
    usage: str
    typed: str


CHECKOUT = Command("train.py", "train.py", "python train.py")      # train.py in a checkout


def run_training(argv=None, command=CHECKOUT):
    """Parse, open and lock the run directory (with --seeds, one per seed: stack.open_members),
    set up, train. Returns the process exit code."""
    cfg, given, seeds = parse_command_line(argv, command.usage)
    if seeds is None:
        rds, resume = [open_run_dir(cfg, given)], f"{command.typed} --out {cfg.out} --resume"
    else:
        rds = open_members(cfg, given, seeds)
        resume = (f"{command.typed} --seeds {','.join(map(str, seeds))} --out {cfg.out} "
                  f"--resume")
    try:
        return train_in(rds, seeds is not None, resume, command.name)
    finally:
        for rd in rds:
            rd.close()


def train_in(rds, stacked=False, resume=None, prog="train.py"):
    """Train the opened runs `rds` to their ends (one run, or the members of --seeds as one
    stack); 128 + signal number when interrupted, 2 when a member of a stack stopped on an
    error. Members resumed at different steps (a kill between two of their checkpoints) train
    as one stack per step, one after another. `resume`: the command that resumes them; `prog`:
    the command's name."""
    loaded = Loaded()
    rds = [rd for rd in rds if not already_trained(rd, loaded)]
    try:
        runs = [setup(rd, loaded) for rd in rds]
    except BaseException:
        abandon_all(rds)
        raise
    code = 0
    for start in sorted({run.start_step for run in runs}):
        code = max(code, train_stack(Stack([r for r in runs if r.start_step == start], stacked),
                                     resume, prog))
        if code >= 128:
            break
    return code


def kept_checkpoints(runs):
    return "; ".join(kept_checkpoint(run.dir) for run in runs)


def train_stack(stack, resume, prog="train.py"):
    """train(stack), its errors as one line naming what was kept, and its last words."""
    runs = stack.runs
    try:
        step, signum, ended, failed = train(stack, prog)
    except OSError as e:
        raise TrainingError(f"{os_error_line(e)}; stopped, {kept_checkpoints(runs)}; once "
                            f"fixed, resume with: {resume}") from None
    except MemoryError as e:
        raise TrainingError(f"{memory_error_line(e)}; stopped, {kept_checkpoints(runs)}") \
            from None
    if signum is not None:
        print(f"interrupted ({signal.Signals(signum).name}) at step {step}; checkpoint"
              f"{'s' if stack.lead else ''} saved. Resume with:\n  {resume}", file=sys.stderr)
        return 128 + signum
    files = ", ".join(end_files(runs[0]))
    if not stack.lead:
        print(f"done: {step} steps ({step * stack.cfg.batch_size} episodes); run in "
              f"{runs[0].dir} ({files})")
        return 0
    print(stack_summary(runs, ended, failed, files))
    return 2 if failed else 0


def stack_summary(runs, ended, failed, files):
    """The last line of a stack: the runs that ended and the end files each wrote, and those
    that stopped on an error (each reported above, with the checkpoint it kept)."""
    done = ", ".join(f"{run.dir} (step {ended[run.cfg.seed]})" for run in runs
                     if run.cfg.seed in ended)
    stopped = ", ".join(str(run.dir) for run in failed)
    if not done:
        return f"stopped: no run ended, every one stopped on an error (above): {stopped}"
    return f"done: {done}; each with {files}" + (f"; stopped on an error (above): {stopped}"
                                                  if failed else "")


def main(argv=None, command=CHECKOUT):
    """train.py (and `python -m flmn_np.train`, flmn-train: flmn_np/train.py, each its own
    `command`): exit code 2 with a one-line message (no traceback) for every problem it knows,
    130 on a second Ctrl-C."""
    return run_command(command.name, run_training, argv, command)

"""The end of a training run, one function for both ends (`finish`): after the last
checkpoint, the evaluation on the test classes of its last step (evalpoint.py) as
eval_omniglot.json, curves.png and, with --val-classes, best.npz scored as
eval_omniglot_best.json. The loop (training.py) calls it when a run ends; for a run killed after
its last checkpoint, --resume finds which of those files its end left out (`end_files_missing`)
and calls it for only them (`already_trained`).
"""
import json
from pathlib import Path

from .checkpoint import load_checkpoint
from .curves import plot_runs
from .evalpoint import evaluate_now, evaluate_on_test
from .evaluation import params_from_checkpoint
from .rundir import remove_stale_temporary_files, write_json
from .setup import setup
from .validation import BEST_NAME, ended_early


def evaluate_best(run):
    """Evaluate best.npz on the test classes like the final checkpoint (eval_omniglot_best.json)."""
    if run.cfg.final_eval_episodes == 0:
        return
    ckpt = load_checkpoint(run.dir / BEST_NAME)
    _, record = evaluate_on_test(run, params_from_checkpoint(ckpt, run.mcfg, run.xp), ckpt.step,
                                 run.cfg.final_eval_episodes,
                                 f"held-out, best.npz (step {ckpt.step})")
    write_json(run.dir / "eval_omniglot_best.json", record)


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


END_FILES = ("eval_omniglot.json", "curves.png", "eval_omniglot_best.json")


def finish(run, step, record=None, files=END_FILES):
    """The end of a run, after its last checkpoint (at `step`), the same at both ends: the
    loop's last log point (`record`: the final test evaluation it made) and --resume of a run
    whose end a kill cut short (`files`: what it left out, end_files_missing). Writes, in this
    order: eval_omniglot.json (`record`, or the final evaluation made now; with
    --final-eval-episodes 0 none), curves.png, and with --val-classes best.npz's evaluation,
    eval_omniglot_best.json."""
    if "eval_omniglot.json" in files and run.cfg.final_eval_episodes:
        if record is None:
            _, record = evaluate_now(run, step, final=True)
        write_json(run.dir / "eval_omniglot.json", record)
    if "curves.png" in files:
        plot_runs([run.dir], run.dir / "curves.png")
    if "eval_omniglot_best.json" in files and run.best is not None:
        evaluate_best(run)


def end_files(run):
    """The files the end of `run` writes beside its checkpoint, as a run's last line names
    them."""
    return (["eval_omniglot.json"] if run.cfg.final_eval_episodes else []) + ["curves.png"] + \
        (["best.npz"] if run.best is not None else [])


def already_trained(rd, loaded=None):
    """True (after writing the end files a kill left out) for a run already at its last step or
    ended early by --patience. loaded: the data the process has loaded (setup.Loaded)."""
    early = rd.ckpt is not None and ended_early(rd.path, rd.cfg, rd.ckpt.step)
    if rd.ckpt is None or not (rd.ckpt.step >= rd.cfg.steps or early):
        return False
    missing = end_files_missing(rd) if rd.ckpt.step <= rd.cfg.steps else []
    if not missing:
        remove_stale_temporary_files(rd.path)
        print(f"{rd.path} is already trained to step {rd.ckpt.step}; pass a larger "
              + ("--patience" if early else "--steps") + " to train on")
        return True
    print(f"{rd.path} is trained to step {rd.ckpt.step}; writing what its end left out: "
          f"{', '.join(missing)}")
    finish(setup(rd, loaded), rd.ckpt.step, files=missing)
    return True

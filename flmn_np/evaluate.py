"""Held-out evaluation: per-instance accuracy of a trained run on Omniglot test classes or on
miniMNIST.

    python -m flmn_np.evaluate RUN_DIR --dataset {omniglot,mnist} [--episodes N] [--seed S]
                               [--target-se POINTS] [--best] [--json FILE] [--backend B]
                               [--data-dir DIR]

Omniglot episodes use the run's recorded test classes (and, for Experiment II, the same rotation
and shift augmentation as training: "414 classes (plus augmentations) were used for testing"
[FLMN §5.3]). miniMNIST episodes draw C of the 10 digits, S samples each, from 20 images per digit
[FLMN §5.4]. Episode batch i is drawn from np.random.default_rng((seed, i)), so the same seed and
batch size give the same episodes; the default seed is the run's --eval-seed, so 1000 episodes
here equal the run's final evaluation in metrics.csv. --best evaluates the run's best.npz (the
checkpoint chosen on validation classes, validation.py) instead of its latest checkpoint.npz.

Every evaluation also gives the episode standard error of each accuracy (`accuracy_se` in the
JSON, in the printed table as "episode SE"): the standard deviation of the per-episode accuracy
over the episodes, divided by sqrt(episodes) (runs/evaluation.py, episode_se), i.e. how far
another test set of as many episodes would typically move the number; it says nothing about
training seeds. `--target-se 0.2` goes on past --episodes, in blocks of 1,000 episodes, until the
2nd instance's standard error is at most 0.2 points (at most 100,000 episodes); the JSON then
records the episodes used, and `--episodes` that number gives the same result. Evaluations of
more than 1,000 episodes show a progress bar on stderr.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

from .cli import int_at_least, run_command
from .core.backend import BACKENDS, backend_name, get_xp
from .data.episodes import EpisodeSource
from .data.sources import mnist_source, omniglot_data
from .runs.checkpoint import CHECKPOINT_NAME
from .runs.config import check_episode_sizes, model_config
from .runs.datafolder import run_data_dir
from .runs.evaluation import eval_record, evaluate_params, load_run, params_from_checkpoint
from .runs.metrics import TABLE_INSTANCES, format_accuracy_table
from .runs.rundir import write_json
from .runs.validation import BEST_NAME


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
    p.add_argument("--target-se", type=positive_float, default=None, metavar="POINTS",
                   help="go on in blocks of 1,000 episodes until the episode standard error of "
                        "the 2nd instance is at most POINTS percentage points (e.g. 0.2)")
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


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def format_se_line(se, episodes, title, instances=TABLE_INSTANCES):
    """The episode standard errors (points) as a line under format_accuracy_table's columns."""
    width = max(len(f"instance (% correct, {episodes} episodes)"), len(title))
    shown = [k for k in instances if k <= len(se)]
    return "episode SE (points)".ljust(width) + "".join(f"{100 * se[k - 1]:7.2f}" for k in shown)


def run_evaluation(args):
    """Evaluate, print the table, write the JSON; returns the result dict."""
    record, cfg, ckpt = load_run(args.run_dir, BEST_NAME if args.best else CHECKPOINT_NAME)
    xp = get_xp(args.backend)
    mcfg = model_config(cfg)
    params = params_from_checkpoint(ckpt, mcfg, xp)
    data_dir = run_data_dir(record, args.data_dir)
    if args.dataset == "omniglot":
        images, augment = omniglot_data(cfg, data_dir)
        source = EpisodeSource(images, np.asarray(record["split"]["test_ids"]), augment)
        check_episode_sizes(cfg, {"held-out test": source.class_ids.size}, images.shape[1])
    else:
        source = mnist_source(cfg, data_dir)
    seed = cfg.eval_seed if args.seed is None else args.seed
    until = "" if args.target_se is None else \
        f" or more, until the 2nd instance's episode SE is at most {args.target_se:g} points"
    print(f"evaluating {args.run_dir} (step {ckpt.step}) on {args.episodes} {args.dataset} "
          f"episodes{until}", flush=True)
    target = None if args.target_se is None else args.target_se / 100
    progress = args.episodes > 1000 or target is not None
    out = evaluate_params(params, mcfg, source, args.episodes, cfg.samples, seed, with_se=True,
                          progress=progress, target_se=target)
    acc, loss, se = out[:3]
    episodes = out[3] if target is not None else args.episodes
    title = (f"{cfg.model.upper()} exp {cfg.experiment} step {ckpt.step} {args.dataset}"
             + (" (best.npz)" if args.best else ""))
    print(format_accuracy_table(acc, episodes, title=title))
    print(format_se_line(se, episodes, title))
    result = eval_record(args.run_dir, cfg, args.dataset, episodes, seed, ckpt.step,
                         backend_name(xp), loss, acc, se=se)
    name = f"eval_{args.dataset}{'_best' if args.best else ''}.json"
    out = Path(args.json or Path(args.run_dir) / name)
    write_json(out, result)
    print(f"wrote {out}")
    return result


def main(argv=None):
    """Command-line entry point: exit code 2 with a one-line message for a problem with the run,
    the data or the system; 130 on Ctrl-C; never a traceback for those."""
    args = build_parser().parse_args(argv)

    def evaluate():
        run_evaluation(args)
        return 0
    return run_command("evaluate", evaluate)


if __name__ == "__main__":
    sys.exit(main())

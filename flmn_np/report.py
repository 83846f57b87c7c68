"""Markdown rows of per-instance accuracy from runs' evaluation JSON files, for results/README.md.

    python -m flmn_np.report RUN_DIR [RUN_DIR ...] [--dataset omniglot|mnist] [--best]
                             [--instances 1 2 3 4 5 10]

One row per run: the run's name, training steps (and episodes), test episodes, then % correct
at each instance, read from RUN_DIR/eval_<dataset>.json (written by train.py at the end of a run
and by `python -m flmn_np.evaluate`); with --best from eval_<dataset>_best.json, the evaluation of
the run's best.npz (validation.py). Where the JSON files hold the episode standard error
(`accuracy_se`, written by evaluate since it has one), a last column gives it at the 2nd instance,
in points: how far another test set of as many episodes would typically move the number.
"""
import argparse
import json
import sys
from pathlib import Path

from .runs.config import ConfigError
from .runs.metrics import ordinal
from .cli import run_command


def row(run_dir, dataset, instances, best=False):
    """(markdown row without its end, episode SE of the 2nd instance in points or None)."""
    suffix = "_best" if best else ""
    path = Path(run_dir) / f"eval_{dataset}{suffix}.json"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: run `python -m flmn_np.evaluate {run_dir} "
                          f"--dataset {dataset}{' --best' if best else ''}`")
    try:
        result = json.loads(path.read_text())
        batch = json.loads((Path(run_dir) / "config.json").read_text())["config"]["batch_size"]
        step, episodes = int(result["checkpoint_step"]), int(result["episodes"])
        cells = [f"{100 * result['accuracy'][str(k)]:.1f}" for k in instances]
        steps = f"{step:,} ({step * int(batch):,})"
        se = result.get("accuracy_se", {}).get("2")
        se = None if se is None else 100 * float(se)
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{run_dir}: a damaged or incomplete JSON file "
                          f"({type(e).__name__}: {e})") from None
    name = Path(run_dir).name + (" (best.npz)" if best else "")
    return f"| {name} | {steps} | {episodes:,} | " + " | ".join(cells) + " |", se


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m flmn_np.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--dataset", choices=["omniglot", "mnist"], default="omniglot")
    parser.add_argument("--best", action="store_true",
                        help="the evaluation of best.npz (eval_<dataset>_best.json)")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2, 3, 4, 5, 10])
    args = parser.parse_args(argv)
    return run_command("report", table, args)


def table(args):
    rows = [row(d, args.dataset, args.instances, args.best) for d in args.run_dirs]
    with_se = any(se is not None for _, se in rows)
    columns = " | ".join(ordinal(k) for k in args.instances)
    print(f"| run | steps (episodes) | test episodes | {columns} |"
          + (" episode SE, 2nd |" if with_se else ""))
    print("|---|---|---|" + "---|" * len(args.instances) + ("---|" if with_se else ""))
    for text, se in rows:
        print(text + ((" n/a |" if se is None else f" {se:.2f} |") if with_se else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

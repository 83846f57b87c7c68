"""The episode noise of `python -m flmn_np.evaluate`: one run's accuracy on SETS independent test
sets of EPISODES episodes each (evaluation seeds 5001, 5002, ...; never used elsewhere), their
standard deviation over the sets, beside the episode standard error that each set reports by
itself (runs/evaluation.py, episode_se) and the per-episode standard deviation it implies.

    python results/noise/measure.py RUN_DIR [RUN_DIR ...] [--dataset omniglot|mnist] [--best]
                                    [--sets 20] [--episodes 1000] > results/noise/LOG

Run from the repository root; the dataset folder is the runs' recorded one (or $FLMN_DATA_DIR).
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[2]))   # after $PYTHONPATH
from flmn_np.core.backend import get_xp                                      # noqa: E402
from flmn_np.data.episodes import EpisodeSource                              # noqa: E402
from flmn_np.data.sources import mnist_source, omniglot_data                 # noqa: E402
from flmn_np.runs.config import model_config                                 # noqa: E402
from flmn_np.runs.datafolder import run_data_dir                             # noqa: E402
from flmn_np.runs.evaluation import evaluate_params, load_run, params_from_checkpoint  # noqa
from flmn_np.runs.checkpoint import CHECKPOINT_NAME                          # noqa: E402
from flmn_np.runs.validation import BEST_NAME                                # noqa: E402

INSTANCES = (1, 2, 3, 4, 5, 10)


def source_of(record, cfg, dataset):
    data_dir = run_data_dir(record, None)
    if dataset == "mnist":
        return mnist_source(cfg, data_dir)
    images, augment = omniglot_data(cfg, data_dir)
    return EpisodeSource(images, np.asarray(record["split"]["test_ids"]), augment)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--dataset", choices=("omniglot", "mnist"), default="omniglot")
    p.add_argument("--best", action="store_true")
    p.add_argument("--sets", type=int, default=20)
    p.add_argument("--episodes", type=int, default=1000)
    args = p.parse_args()
    xp = get_xp("numpy")
    print(f"{args.sets} independent test sets of {args.episodes} {args.dataset} episodes each "
          f"(seeds 5001-{5000 + args.sets}); points; instances {INSTANCES}")
    for run in args.run_dirs:
        record, cfg, ckpt = load_run(run, BEST_NAME if args.best else CHECKPOINT_NAME)
        mcfg = model_config(cfg)
        params = params_from_checkpoint(ckpt, mcfg, xp)
        source = source_of(record, cfg, args.dataset)
        accs, ses = [], []
        for s in range(args.sets):
            acc, _, se = evaluate_params(params, mcfg, source, args.episodes, cfg.samples,
                                         5001 + s, with_se=True)
            accs.append(100 * acc)
            ses.append(100 * se)
        accs, ses = np.array(accs), np.array(ses)
        col = [k - 1 for k in INSTANCES]
        print(f"\n{run} ({'best.npz' if args.best else 'last'}, step {ckpt.step})")
        print("  per set, 2nd: " + " ".join(f"{a:.1f}" for a in accs[:, 1]))
        rows = (("mean over sets", accs.mean(0)), ("min over sets", accs.min(0)),
                ("max over sets", accs.max(0)),
                ("SD over sets (the noise)", accs.std(0, ddof=1)),
                ("episode SE, mean of the sets'", ses.mean(0)),
                ("per-episode SD (SE x sqrt(n))", ses.mean(0) * np.sqrt(args.episodes)),
                ("episodes for SE <= 0.2",
                 np.ceil((ses.mean(0) * np.sqrt(args.episodes) / 0.2) ** 2)))
        for name, v in rows:
            print(f"  {name:32s}" + "".join(f"{x:9.2f}" for x in v[col]))
        sys.stdout.flush()


if __name__ == "__main__":
    main()

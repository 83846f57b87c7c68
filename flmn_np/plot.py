"""Learning curves of one or more runs from their metrics.csv, as in the paper's Figures 3-5
(drawn by runs/curves.py).

    python -m flmn_np.plot RUN_DIR [RUN_DIR ...] --out curves.png
"""
import argparse
import sys
from pathlib import Path

from .runs.config import ConfigError
from .runs.curves import check_image_path, plot_runs
from .cli import run_command


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m flmn_np.plot",
                                description="Plot learning curves from run directories.")
    p.add_argument("run_dirs", nargs="+", type=str, help="run directories holding metrics.csv")
    p.add_argument("--out", type=str, default="curves.png",
                   help="PNG to write (default curves.png)")
    args = p.parse_args(argv)
    return run_command("plot", plot, args)


def plot(args):
    check_image_path(args.out)
    missing = [d for d in args.run_dirs if not (Path(d) / "metrics.csv").is_file()]
    if missing:
        raise ConfigError(f"no metrics.csv in {', '.join(missing)}")
    plot_runs(args.run_dirs, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The data command: check the files, or plot one episode as the model sees it.

    python -m flmn_np.data check [--data-dir D]
    python -m flmn_np.data show --out episode.png [--dataset omniglot|mnist] [--augment]
                                [--classes C] [--samples S] [--seed N] [--data-dir D]

`check` verifies every known file's checksum and counts the characters and digits (exit status 1
if anything is off); `show` draws one episode in presentation order with each step's label and
the previous label fed to the model. Errors in the files end with exit status 2 and one line,
`data: error: ...`, as in every command (cli.run_command).
"""
import argparse
import sys

import numpy as np

from ..cli import int_at_least, run_command
from ..core.ops import previous_label_onehot
from .episodes import sample_episodes
from .files import KNOWN_FILES, DataError, checksum_status, resolve_data_dir
from .images import IMAGE_SIZE
from .mnist import load_mini_mnist, load_mnist_test
from .omniglot import N_DRAWERS, OMNIGLOT_PARTS, count_characters, load_omniglot, load_omniglot_full


def check(data_dir):
    """Verify checksums of every known file and print counts; 1 if anything is off, else 0."""
    data_dir = resolve_data_dir(data_dir)
    bad = 0
    for spec in KNOWN_FILES.values():
        status = checksum_status(data_dir / spec.relpath, spec)
        bad += status != "ok"
        print(f"{status:8s} {data_dir / spec.relpath}")
    for (stem, first, last) in OMNIGLOT_PARTS:
        path = data_dir / "omniglot" / f"{stem}.zip"
        if path.is_file():
            try:
                n = count_characters(path, first, last)
                print(f"{path.name}: {n} characters, {n * N_DRAWERS} images")
            except DataError as e:
                print(f"error: {e}")
                bad += 1
    try:
        _, labels = load_mnist_test(data_dir, download=False)
        print(f"MNIST test: {labels.size} images, per digit {np.bincount(labels, minlength=10).tolist()}")
    except DataError as e:
        print(f"error: {e}")
        bad += 1
    print("all files present and verified" if not bad else f"{bad} problem(s) found")
    return 1 if bad else 0


def show(args):
    """Plot one episode in presentation order: image, step, label, previous label."""
    import matplotlib       # imported here so that `check` works without a plotting backend
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data_dir = resolve_data_dir(args.data_dir)
    download = not args.no_download
    full = None
    if args.dataset == "omniglot":
        images = load_omniglot(data_dir, args.cache_dir, download=download).images
        if args.augment:
            full = load_omniglot_full(data_dir, args.cache_dir, download=download)
    else:
        images = load_mini_mnist(data_dir, download=download)   # the fixed seed-0 set
    if args.classes > images.shape[0] or args.samples > images.shape[1]:
        raise DataError(f"{args.dataset} has {images.shape[0]} classes of {images.shape[1]} "
                        f"images; an episode of --classes {args.classes} --samples "
                        f"{args.samples} needs more")
    rng = np.random.default_rng(args.seed)
    class_ids = np.arange(images.shape[0])
    x, y = sample_episodes(images, class_ids, 1, args.classes, args.samples, rng,
                           full_images=full, augment=args.augment)
    prev = previous_label_onehot(y, args.classes, np.float32)
    T, ncols = y.shape[1], min(args.samples, 10)
    nrows = -(-T // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.5 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for t in range(T):
        ax = axes.flat[t]
        ax.imshow(x[0, t].reshape(IMAGE_SIZE, IMAGE_SIZE), cmap="gray_r", vmin=0, vmax=1)
        seen = "-" if t == 0 else str(int(prev[0, t].argmax()))
        ax.set_title(f"t={t} y={y[0, t]} in={seen}", fontsize=7)
    what = f"{args.dataset}{' augmented' if args.augment else ''}"
    fig.suptitle(f"one episode ({what}, C={args.classes}, S={args.samples}, seed {args.seed}); "
                 f"'in' = previous label fed to the model", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(args.out, dpi=100)
    except (OSError, ValueError) as e:     # a missing folder, an unknown image suffix
        raise DataError(f"cannot write {args.out}: {e}") from None
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m flmn_np.data",
                                     description="Check the data files, or plot one episode.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("check", "verify checksums and print counts"),
                            ("show", "plot one episode to a PNG")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--data-dir", type=str, default=None,
                       help="data folder (default: env FLMN_DATA_DIR, else ./data)")
    p = sub.choices["show"]
    p.add_argument("--out", type=str, required=True, help="PNG file to write")
    p.add_argument("--dataset", type=str, choices=("omniglot", "mnist"), default="omniglot")
    p.add_argument("--augment", action="store_true", help="Experiment II augmentation (Omniglot)")
    p.add_argument("--classes", type=int_at_least(1), default=5, help="C, classes per episode")
    p.add_argument("--samples", type=int_at_least(1), default=10, help="S, samples per class")
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument("--cache-dir", type=str, default=None)
    p.add_argument("--no-download", action="store_true", help="never try to download")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "show" and args.augment and args.dataset != "omniglot":
        parser.error("--augment needs --dataset omniglot (it works on the 105x105 images)")
    if args.command == "check":
        return run_command("data", check, args.data_dir)
    return run_command("data", show, args)


if __name__ == "__main__":
    sys.exit(main())

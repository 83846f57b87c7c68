"""Zero-shot miniMNIST: which preparation of the digits (how a 28 x 28 MNIST image becomes a
20 x 20 input) and which pool of images moves FLMN's accuracy, evaluation only (no training).

    python results/minimnist/experiment.py --stage select RUN_DIR [RUN_DIR ...] > LOG
    python results/minimnist/experiment.py --stage final --variants A B ... RUN_DIR ... > LOG

The MNIST test set (the only MNIST files the project uses) is split by image index: even
indices are the *selection* images, odd indices the *final* ones, so that a choice made on the
selection images is then measured once on images it never saw. A pool is what the paper calls
miniMNIST: 20 images per digit drawn at random (np.random.default_rng(pool seed)) from one half;
an episode draws 5 of the 10 digits and 10 of each digit's 20 images, as
flmn_np.data.mnist.load_mini_mnist and flmn_np.evaluate do. Every (run, variant, pool) is scored
on EPISODES episodes (evaluation seed 1234, batches of 50), with its episode standard error.

Variants (each gives images in [0, 1], ink = 1, like the Omniglot inputs):
  lanczos      the project's preparation: the whole 28 x 28 image, Pillow LANCZOS to 20 x 20
  bilinear, bicubic, box, nearest
               the same with Pillow's other filters (nearest: Pillow's default before 7.0)
  crop20       the central 20 x 20 pixels, no resizing (MNIST digits sit in a 20 x 20 box,
               centred by mass, inside 28 x 28)
  bbox         the ink's bounding box, scaled (LANCZOS) to fit 20 x 20 keeping its aspect,
               centred
  binary       lanczos after thresholding the 28 x 28 image at 0.5 (Omniglot's images are
               binary before downscaling)
  binary_after lanczos, then thresholded at 0.5 (a binary 20 x 20 input)
  thin         lanczos of the 28 x 28 image after one 3 x 3 grey erosion (thinner strokes, nearer
               Omniglot's ink at 20 x 20)
  thin_hr      thinner strokes made at 4x resolution: the 28 x 28 image upsampled (bilinear) to
               112 x 112, thresholded at 0.5, one 3 x 3 erosion (a quarter of an MNIST pixel off
               each side of a stroke), LANCZOS to 20 x 20
  ink_matched  lanczos, scaled by a constant so that the mean ink per image is Omniglot's
  pad36        the 28 x 28 image padded to 36 x 36 (a smaller digit in the frame), LANCZOS
  inverted     1 - lanczos (ink = 0): what a mismatch of ink polarity would do
Pools: `--pools K` pool seeds per half (selection: 100, 101, ...; final: 200, 201, ...);
`--pool-size 0` draws each episode's images from the whole half instead of a pool of 20.
The mean ink per image (sum of the 400 values) is printed for every variant beside Omniglot's.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.append(str(Path(__file__).resolve().parents[2]))   # after $PYTHONPATH
from flmn_np.core.backend import get_xp                                      # noqa: E402
from flmn_np.data.episodes import EpisodeSource                              # noqa: E402
from flmn_np.data.images import downscale                                    # noqa: E402
from flmn_np.data.mnist import load_mnist_test                               # noqa: E402
from flmn_np.data.omniglot import load_omniglot                              # noqa: E402
from flmn_np.runs.config import model_config                                 # noqa: E402
from flmn_np.runs.datafolder import run_data_dir                             # noqa: E402
from flmn_np.runs.evaluation import evaluate_params, load_run, params_from_checkpoint  # noqa

INSTANCES = (1, 2, 3, 5, 10)
FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
           "box": Image.Resampling.BOX, "nearest": Image.Resampling.NEAREST}


def pil_resize(img, size, resample):
    out = Image.fromarray(img.astype(np.float32), mode="F").resize((size, size), resample=resample)
    return np.clip(np.asarray(out, dtype=np.float32), 0, 1)


def erode(img):
    pad = np.pad(img, 1)
    windows = [pad[i:i + img.shape[0], j:j + img.shape[1]] for i in range(3) for j in range(3)]
    return np.min(windows, axis=0)


def bbox_fit(img, size=20):
    rows, cols = np.flatnonzero(img.max(1) > 0), np.flatnonzero(img.max(0) > 0)
    box = img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = box.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = Image.fromarray(box.astype(np.float32), mode="F").resize(
        (nw, nh), resample=Image.Resampling.LANCZOS)
    out = np.zeros((size, size), np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = np.clip(np.asarray(small), 0, 1)
    return out


def prepare(images, variant):
    """(n, 28, 28) float in [0, 1] -> (n, 400) float32 in [0, 1]."""
    if variant == "lanczos":
        return downscale(images)
    if variant in FILTERS:
        return np.stack([pil_resize(im, 20, FILTERS[variant]).ravel() for im in images])
    if variant == "crop20":
        return images[:, 4:24, 4:24].reshape(len(images), 400).astype(np.float32)
    if variant == "bbox":
        return np.stack([bbox_fit(im).ravel() for im in images])
    if variant == "binary":
        return downscale((images >= 0.5).astype(np.float32))
    if variant == "binary_after":
        return (downscale(images) >= 0.5).astype(np.float32)
    if variant == "thin":
        return downscale(np.stack([erode(im) for im in images]))
    if variant == "thin_hr":
        big = np.stack([pil_resize(im, 112, Image.Resampling.BILINEAR) for im in images])
        return downscale(np.stack([erode((b >= 0.5).astype(np.float32)) for b in big]))
    if variant == "ink_matched":
        return np.clip(downscale(images) * INK_SCALE, 0, 1)
    if variant == "pad36":
        return downscale(np.pad(images, ((0, 0), (4, 4), (4, 4))))
    if variant == "inverted":
        return 1 - downscale(images)
    raise SystemExit(f"unknown variant {variant}")


VARIANTS = ["lanczos", "bilinear", "bicubic", "box", "nearest", "crop20", "bbox", "binary",
            "binary_after", "thin", "thin_hr", "ink_matched", "pad36", "inverted"]
INK_SCALE = 1.0      # set in main: Omniglot's mean ink / lanczos's, on the selection images


def pool_images(images, labels, half, pool_seed, pool_size):
    """(10, pool_size, 28, 28): pool_size images per digit from one half of the test set."""
    keep = np.arange(len(labels)) % 2 == (0 if half == "select" else 1)
    rng = np.random.default_rng(pool_seed)
    per_digit = []
    for d in range(10):
        idx = np.flatnonzero(keep & (labels == d))
        per_digit.append(idx if pool_size == 0 else rng.choice(idx, pool_size, replace=False))
    n = min(len(i) for i in per_digit)          # whole half: the same count for every digit
    return np.stack([images[i[:n]] for i in per_digit]).astype(np.float32) / 255.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--stage", choices=("select", "final"), required=True)
    p.add_argument("--variants", nargs="+", default=VARIANTS)
    p.add_argument("--pools", type=int, default=3)
    p.add_argument("--pool-size", type=int, default=20)
    p.add_argument("--episodes", type=int, default=5000)
    args = p.parse_args()
    xp = get_xp("numpy")
    runs = []
    for run in args.run_dirs:
        record, cfg, ckpt = load_run(run)
        mcfg = model_config(cfg)
        runs.append((run, cfg, mcfg, params_from_checkpoint(ckpt, mcfg, xp)))
    data_dir = run_data_dir(load_run(args.run_dirs[0])[0], None)
    images, labels = load_mnist_test(data_dir)
    omni = load_omniglot(data_dir).images
    global INK_SCALE
    INK_SCALE = float(omni.sum(-1).mean()
                      / downscale(pool_images(images, labels, "select", 0, 0).reshape(-1, 28, 28))
                      .sum(-1).mean())
    print(f"stage {args.stage}: {'even' if args.stage == 'select' else 'odd'}-index MNIST test "
          f"images; {args.pools} pools of {args.pool_size or 'all'} per digit; "
          f"{args.episodes} episodes per (run, variant, pool); % correct, (episode SE)")
    print(f"mean ink per image: Omniglot {omni.sum(-1).mean():.1f} (ink_matched scale "
          f"{INK_SCALE:.3f})", end="")
    first = pool_images(images, labels, args.stage, 0, 20).reshape(-1, 28, 28)
    for v in args.variants:
        print(f", {v} {prepare(first, v).sum(-1).mean():.1f}", end="")
    print(flush=True)
    base = 100 if args.stage == "select" else 200
    header = "".join(f"{k:>14}" for k in INSTANCES)
    for v in args.variants:
        print(f"\n## {v}\n{'run':38s}{'pool':>6}{header}", flush=True)
        table = []
        for pool in range(args.pools):
            raw = pool_images(images, labels, args.stage, base + pool, args.pool_size)
            prepared = prepare(raw.reshape(-1, 28, 28), v).reshape(10, raw.shape[1], 400)
            source = EpisodeSource(prepared, np.arange(10), {})
            for run, cfg, mcfg, params in runs:
                acc, _, se = evaluate_params(params, mcfg, source, args.episodes, cfg.samples,
                                             1234, with_se=True)
                table.append(100 * acc)
                cells = "".join(f"{100 * acc[k - 1]:7.1f} ({100 * se[k - 1]:.2f})"
                                for k in INSTANCES)
                print(f"{Path(run).parent.name + '/' + Path(run).name:38s}"
                      f"{base + pool:>6}{cells}", flush=True)
        t = np.array(table)
        print(f"{'mean over runs and pools':44s}"
              + "".join(f"{t[:, k - 1].mean():14.1f}" for k in INSTANCES), flush=True)


if __name__ == "__main__":
    main()

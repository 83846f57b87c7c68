"""Omniglot and miniMNIST as arrays: decode, downscale, cache, split.   [SPEC "Data"]

The files themselves (where they live, checksums, downloads, where caches go) are the business of
flmn_np.datafiles; DataError and resolve_data_dir are importable from here as well.

Images are downscaled with Pillow's LANCZOS filter (the antialiasing filter Pillow used to call
ANTIALIAS) on float images, applied as the equivalent (20, n) matrix `resize_matrix(n, 20)` taken
from Pillow once: small = clip(A @ img @ A.T, 0, 1). The same matrix serves the augmentation, so
an augmentation by angle 0 and shift 0 gives back exactly the plain image.

Decoded arrays are cached as .npz in datafiles.cache_dir_for(data_dir): `<data_dir>/.cache/`, or a
user cache when the data directory is read-only. A cache file's name carries a hash of the zips'
sha256, the image size, the filter and CACHE_VERSION.

Every problem with the input files raises DataError with a one-line message: which file, what is
wrong, what to do.

CLI:  python -m flmn_np.data check [--data-dir D]
      python -m flmn_np.data show --out episode.png [--dataset omniglot|mnist] [--augment] ...
"""
import argparse
import functools
import gzip
import hashlib
import io
import re
import sys
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

# DataError and resolve_data_dir are re-exported: callers import them from flmn_np.data.
from .files import (KNOWN_FILES, MNIST_FILES, DataError, atomic_write, cache_dir_for,
                        checksum_status, require_files, resolve_data_dir)

IMAGE_SIZE = 20                       # side of the downscaled images: D = 20 * 20 = 400
FULL_SIZE = 105                       # side of the Omniglot PNGs
N_DRAWERS = 20
FILTER = "lanczos"                    # Pillow resampling filter used for every downscale
CACHE_VERSION = 1                     # bump when the cached arrays change meaning

# (zip stem, first id, last id): global class index = id - 1. Tests shrink this to fake data.
OMNIGLOT_PARTS = (("images_background", 1, 964), ("images_evaluation", 965, 1623))


class Omniglot(NamedTuple):
    """images (n_classes, 20, 400) float32 in [0, 1], ink = 1; row n of images is character id n+1.
    names[n] = "Alphabet/characterNN"; classes 0..n_background-1 are the background set."""
    images: np.ndarray
    names: list
    n_background: int


# ----------------------------------------------------------------------------- downscaling

_PIL_FILTERS = {"lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX}


@functools.lru_cache(maxsize=None)
def resize_matrix(src, dst=IMAGE_SIZE, filt=FILTER):
    """A (dst, src) float32 matrix with  A @ v  equal to Pillow resizing a length-src signal to dst.

    Pillow resizes separably, so for a (src, src) float image:  resize(img) = A @ img @ A.T.
    Obtained by resizing the identity image (each column a basis vector) horizontally once.
    """
    eye = Image.fromarray(np.eye(src, dtype=np.float32), mode="F")
    resized = eye.resize((dst, src), resample=_PIL_FILTERS[filt])     # (src rows, dst cols)
    A = np.ascontiguousarray(np.asarray(resized, dtype=np.float32).T)  # (dst, src)
    A.flags.writeable = False
    return A


def downscale(images, dst=IMAGE_SIZE, chunk=64):
    """images (..., n, n) bool/uint8/float in [0, 1]  ->  (..., dst*dst) float32 in [0, 1].

    small = clip(A @ img @ A.T, 0, 1) with A = resize_matrix(n, dst): Pillow's LANCZOS resize
    (clipped, since the Lanczos kernel's negative lobes can step slightly outside [0, 1]).
    Works through `chunk` images at a time so the float32 temporaries stay in cache, and uses
    per-image (stacked) matmuls: OpenBLAS keeps those single-threaded, whereas one big
    (m*n, n) @ (n, dst) product was 20x slower on a 2-core VM with threaded OpenBLAS.
    """
    lead, n = images.shape[:-2], images.shape[-1]
    A = resize_matrix(n, dst)
    A_T = resize_matrix_T(n, dst)
    images = images.reshape(-1, n, n)
    small = np.empty((images.shape[0], dst, dst), dtype=np.float32)
    for i in range(0, images.shape[0], chunk):
        block = np.asarray(images[i:i + chunk], dtype=np.float32)          # (m, n, n)
        rows = np.matmul(block, A_T)                                       # (m, n, dst)
        np.matmul(A, rows, out=small[i:i + chunk])                         # (m, dst, dst)
    np.clip(small, 0.0, 1.0, out=small)
    return small.reshape(*lead, dst * dst)


@functools.lru_cache(maxsize=None)
def resize_matrix_T(src, dst=IMAGE_SIZE, filt=FILTER):
    """resize_matrix(src, dst, filt).T as a contiguous (src, dst) array."""
    A_T = np.ascontiguousarray(resize_matrix(src, dst, filt).T)
    A_T.flags.writeable = False
    return A_T


# ----------------------------------------------------------------------------- Omniglot

_PNG_RE = re.compile(r"^[^/]+/([^/]+)/([^/]+)/(\d{4})_(\d{2})\.png$")


def _open_zip(path):
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable zip ({e}); it is truncated or corrupt: "
                        f"delete it and copy or download it again") from e


def index_omniglot_zip(zf, path, first_id, last_id):
    """Check a zip's layout and return (entries, names): entries[c][d] is the member name of
    class first_id-1+c, drawer d; names[c] = "Alphabet/characterNN". DataError if any character
    id in first_id..last_id is missing or extra, or a character lacks one of its 20 drawers."""
    entries, names = {}, {}
    for member in zf.namelist():
        if member.endswith("/") or member.startswith("__MACOSX/") or not member.endswith(".png"):
            continue
        m = _PNG_RE.match(member)
        if m is None:
            raise DataError(f"{path}: unexpected entry {member!r} (expected "
                            f"<set>/<Alphabet>/characterNN/XXXX_YY.png); is this an Omniglot zip?")
        alphabet, character, cid, drawer = m.group(1), m.group(2), int(m.group(3)), int(m.group(4))
        entries.setdefault(cid, {})[drawer] = member
        names.setdefault(cid, f"{alphabet}/{character}")
    want = set(range(first_id, last_id + 1))
    if set(entries) != want:
        extra, lost = sorted(set(entries) - want), sorted(want - set(entries))
        raise DataError(f"{path} has {len(entries)} characters, expected {len(want)} "
                        f"(ids {first_id:04d}-{last_id:04d}; missing {lost[:3]}, unexpected {extra[:3]}): "
                        f"replace it with the canonical file")
    for cid, drawers in entries.items():
        if sorted(drawers) != list(range(1, N_DRAWERS + 1)):
            raise DataError(f"{path}: character {cid:04d} has drawers {sorted(drawers)}, "
                            f"expected 01-{N_DRAWERS:02d}: replace it with the canonical file")
    ids = range(first_id, last_id + 1)
    table = [[entries[cid][d] for d in range(1, N_DRAWERS + 1)] for cid in ids]
    return table, [names[cid] for cid in ids]


def _decode_png(data, path, member):
    """PNG bytes -> (105, 105) bool, ink = True (Omniglot draws ink black on white)."""
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as e:  # Pillow raises many types for bad images
        raise DataError(f"{path}: cannot decode {member} ({e}): the zip is corrupt, replace it") from e
    if im.size != (FULL_SIZE, FULL_SIZE):
        raise DataError(f"{path}: {member} is {im.size[0]}x{im.size[1]}, expected "
                        f"{FULL_SIZE}x{FULL_SIZE}: this is not the canonical Omniglot zip")
    if im.mode == "1":
        return ~np.asarray(im)
    return np.asarray(im.convert("L")) < 128


def decode_omniglot_zip(path, first_id, last_id):
    """Decode every PNG of one Omniglot zip (without extracting it).

    Returns full (n, 20, 105, 105) bool with ink = True, and names (n,) of that zip's classes.
    """
    with _open_zip(path) as zf:
        table, names = index_omniglot_zip(zf, path, first_id, last_id)
        full = np.empty((len(table), N_DRAWERS, FULL_SIZE, FULL_SIZE), dtype=bool)
        for c, members in enumerate(table):
            for d, member in enumerate(members):
                try:
                    data = zf.read(member)
                except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
                    raise DataError(f"{path}: cannot read {member} ({e}): the zip is corrupt, "
                                    f"delete it and copy or download it again") from e
                full[c, d] = _decode_png(data, path, member)
    return full, names


def _omniglot_paths(data_dir, download):
    names = [f"{stem}.zip" for stem, _, _ in OMNIGLOT_PARTS]
    specs = {n: KNOWN_FILES.get(n) for n in names}
    if all(s is not None for s in specs.values()):
        return require_files(data_dir, names, download)
    paths = [Path(data_dir) / "omniglot" / n for n in names]   # parts replaced (tests)
    for p in paths:
        if not p.is_file():
            raise DataError(f"missing {p}: put the Omniglot zip there (see data/README.md)")
    return paths


def _zip_digests(paths):
    """(name, sha256 digest) of each zip: what the cached arrays are made from."""
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append((Path(p).name, hashlib.file_digest(f, "sha256").hexdigest()))
    return tuple(out)


def _cache_files(data_dir, cache_dir, paths):
    """(small cache path, full cache path) for these zips. A name ends in a hash of the zips'
    sha256, OMNIGLOT_PARTS, the image size (and filter) and CACHE_VERSION."""
    where = cache_dir_for(data_dir, cache_dir)
    made_from = (CACHE_VERSION, _zip_digests(paths), tuple(OMNIGLOT_PARTS))

    def key(*extra):
        return hashlib.sha256(repr(made_from + extra).encode()).hexdigest()[:16]

    small = where / f"omniglot_{IMAGE_SIZE}x{IMAGE_SIZE}_{FILTER}_{key(IMAGE_SIZE, FILTER)}.npz"
    full = where / f"omniglot_full_{key(FULL_SIZE)}.npz"
    return small, full


def _save_cache(path, **arrays):
    """Write an .npz atomically; if the cache folder cannot be written, warn and go on."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as e:
        warnings.warn(f"could not write cache {path} ({e}); pass cache_dir= or set FLMN_CACHE_DIR",
                      stacklevel=3)


def _load_cache(path, keys):
    """The arrays `keys` from an .npz cache, or None if absent or unreadable (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            return {k: z[k] for k in keys}
    except Exception as e:  # a damaged cache is rebuilt, never fatal
        warnings.warn(f"ignoring unreadable cache {path} ({e}); rebuilding it", stacklevel=3)
        return None


def _build_omniglot(paths, small_path, full_path):
    """Decode both zips, write both caches, return (images, names, n_background, full)."""
    fulls, names = [], []
    for path, (_, first, last) in zip(paths, OMNIGLOT_PARTS):
        full, part_names = decode_omniglot_zip(path, first, last)
        fulls.append(full)
        names += part_names
    full = np.concatenate(fulls)                                         # (n, 20, 105, 105)
    images = downscale(full)                                             # (n, 20, 400)
    n_background = fulls[0].shape[0]
    names_arr = np.array(names)
    _save_cache(small_path, images=images, names=names_arr, n_background=n_background)
    packed = np.packbits(full.reshape(*full.shape[:2], -1), axis=-1)     # (n, 20, 1379)
    _save_cache(full_path, packed=packed)
    return images, names, n_background, full


def load_omniglot(data_dir=None, cache_dir=None, download=True):
    """Omniglot as 20x20 images: Omniglot(images (1623, 20, 400) float32, names, n_background=964).

    Class n is character id n+1 (file XXXX_YY.png: class XXXX-1, drawer YY-1). Ink = 1.
    The first call decodes 32,460 PNGs straight from the zips (a few seconds) and caches the
    result; later calls read the cache (well under a second).
    """
    data_dir = resolve_data_dir(data_dir)
    paths = _omniglot_paths(data_dir, download)
    small_path, full_path = _cache_files(data_dir, cache_dir, paths)
    cached = _load_cache(small_path, ("images", "names", "n_background"))
    if cached is not None:
        return Omniglot(cached["images"], [str(s) for s in cached["names"]], int(cached["n_background"]))
    images, names, n_background, _ = _build_omniglot(paths, small_path, full_path)
    return Omniglot(images, names, n_background)


def load_omniglot_full(data_dir=None, cache_dir=None, download=True):
    """Full-resolution Omniglot for augmentation: (1623, 20, 105, 105) bool, ink = True
    (about 360 MB in memory; stored bit-packed in the cache, about 45 MB)."""
    data_dir = resolve_data_dir(data_dir)
    paths = _omniglot_paths(data_dir, download)
    small_path, full_path = _cache_files(data_dir, cache_dir, paths)
    cached = _load_cache(full_path, ("packed",))
    if cached is None:
        return _build_omniglot(paths, small_path, full_path)[3]
    packed = cached["packed"]
    bits = np.unpackbits(packed, axis=-1, count=FULL_SIZE * FULL_SIZE)
    return bits.view(bool).reshape(*packed.shape[:2], FULL_SIZE, FULL_SIZE)


# ----------------------------------------------------------------------------- MNIST

_IDX_MAGIC = {2049: 1, 2051: 3}   # labels: 1 dim, images: 3 dims; data type ubyte


def read_idx(path):
    """Parse a gzip-compressed idx file (magic 2049 labels / 2051 images, big-endian uint32 dims,
    then uint8 data) -> uint8 array of those dims. DataError if truncated or malformed."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataError(f"{path} is not a readable gzip file ({e}): delete it and copy or "
                        f"download it again") from e
    if len(raw) < 8:
        raise DataError(f"{path}: only {len(raw)} bytes, no idx header: the file is truncated")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in _IDX_MAGIC:
        raise DataError(f"{path}: idx magic number {magic}, expected 2049 or 2051: not an MNIST file")
    ndim = _IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: idx header cut short: the file is truncated")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(f"{path}: {len(raw) - header} data bytes for dims {dims} "
                        f"(expected {expected}): the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist_test(data_dir=None, download=True):
    """MNIST test set: images (10000, 28, 28) uint8 (ink = 255), labels (10000,) uint8."""
    images_path, labels_path = require_files(resolve_data_dir(data_dir), MNIST_FILES, download)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: images of shape {images.shape}, expected (n, 28, 28)")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{labels_path}: {labels.shape} labels for {images.shape[0]} images")
    if labels.max(initial=0) > 9:
        raise DataError(f"{labels_path}: label {labels.max()} outside 0-9")
    return images, labels


def load_mini_mnist(data_dir=None, per_digit=20, seed=0, download=True):
    """miniMNIST: per_digit test images of each digit, drawn by default_rng(seed), downscaled
    28x28 -> 20x20 with the Omniglot filter.   [SPEC "Data": miniMNIST zero-shot]

    Returns (10, per_digit, 400) float32 in [0, 1], ink = 1; row d holds digit d.
    """
    images, labels = load_mnist_test(data_dir, download)
    rng = np.random.default_rng(seed)
    picks = []
    for digit in range(10):
        pool = np.flatnonzero(labels == digit)
        if pool.size < per_digit:
            raise DataError(f"MNIST test set has {pool.size} images of digit {digit}, need {per_digit}")
        picks.append(rng.choice(pool, size=per_digit, replace=False))
    chosen = images[np.stack(picks)].astype(np.float32) / 255.0         # (10, per_digit, 28, 28)
    return downscale(chosen)


# ----------------------------------------------------------------------------- class splits

def paper_split(seed, n_classes=1623, n_train=1209):
    """The paper's split: a seeded permutation of all characters, n_train for training and the
    rest for testing.   [SPEC "Data": 1209 / 414]  -> (train_ids, test_ids), sorted int64."""
    if not 0 < n_train < n_classes:
        raise ValueError(f"n_train={n_train} must be between 1 and n_classes-1={n_classes - 1}")
    perm = np.random.default_rng(seed).permutation(n_classes)
    return np.sort(perm[:n_train]).astype(np.int64), np.sort(perm[n_train:]).astype(np.int64)


def background_split(n_background=964, n_classes=1623):
    """The dataset authors' split: background classes train, evaluation classes test."""
    return np.arange(n_background, dtype=np.int64), np.arange(n_background, n_classes, dtype=np.int64)


SPLITS = ("paper", "background")


def make_split(name, seed, n_classes=1623, n_train=1209, n_background=964):
    """(train_ids, test_ids) for split `name` in SPLITS ('background' ignores the seed)."""
    if name == "paper":
        return paper_split(seed, n_classes, n_train)
    if name == "background":
        return background_split(n_background, n_classes)
    raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")


# ----------------------------------------------------------------------------- CLI

def _check(args):
    """Verify checksums of every known file and print counts; exit status 1 if anything is off."""
    data_dir = resolve_data_dir(args.data_dir)
    bad = 0
    for name, spec in KNOWN_FILES.items():
        status = checksum_status(data_dir / spec.relpath, spec)
        bad += status != "ok"
        print(f"{status:8s} {data_dir / spec.relpath}")
    for (stem, first, last) in OMNIGLOT_PARTS:
        path = data_dir / "omniglot" / f"{stem}.zip"
        if path.is_file():
            try:
                with _open_zip(path) as zf:
                    table, _ = index_omniglot_zip(zf, path, first, last)
                print(f"{path.name}: {len(table)} characters, {len(table) * N_DRAWERS} images")
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


def _show(args):
    """Plot one episode in presentation order: image, step, label, previous label."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .episodes import sample_episodes
    from ..core.ops import previous_label_onehot

    data_dir = resolve_data_dir(args.data_dir)
    full = None
    if args.dataset == "omniglot":
        images = load_omniglot(data_dir, args.cache_dir, download=not args.no_download).images
        if args.augment:
            full = load_omniglot_full(data_dir, args.cache_dir, download=not args.no_download)
    else:
        images = load_mini_mnist(data_dir, download=not args.no_download)   # the fixed seed-0 set
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
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m flmn_np.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("check", "verify checksums and print counts"),
                            ("show", "plot one episode to a PNG")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--data-dir", type=str, default=None,
                       help="data folder (default: env FLMN_DATA_DIR, else ./data)")
    show = sub.choices["show"]
    show.add_argument("--out", type=str, required=True, help="PNG file to write")
    show.add_argument("--dataset", type=str, choices=("omniglot", "mnist"), default="omniglot")
    show.add_argument("--augment", action="store_true", help="Experiment II augmentation (Omniglot)")
    show.add_argument("--classes", type=_positive_int, default=5, help="C, classes per episode")
    show.add_argument("--samples", type=_positive_int, default=10, help="S, samples per class")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--cache-dir", type=str, default=None)
    show.add_argument("--no-download", action="store_true", help="never try to download")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "show" and args.augment and args.dataset != "omniglot":
        parser.error("--augment needs --dataset omniglot (it works on the 105x105 images)")
    try:
        return _check(args) if args.command == "check" else _show(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

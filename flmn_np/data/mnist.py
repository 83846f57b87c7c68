"""MNIST's test set and miniMNIST, the zero-shot evaluation set.   [FLMN §5.4; docs/model.md]

The two gzip-compressed idx files mnist/t10k-images-idx3-ubyte.gz and
mnist/t10k-labels-idx1-ubyte.gz are parsed here (no extra dependency). miniMNIST is a fixed,
seeded choice of 20 test images per digit, downscaled 28x28 -> 20x20 like Omniglot.

Every problem with the files raises DataError with a one-line message.
"""
import gzip
import zlib

import numpy as np

from .files import MNIST_FILES, DataError, require_files, resolve_data_dir
from .images import downscale

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
    28x28 -> 20x20 with the Omniglot filter.   [FLMN §5.4]

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

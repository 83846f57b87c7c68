"""Omniglot and miniMNIST: find or download the files, decode, downscale, cache, split.   [SPEC "Data"]

Layout under the data directory (`--data-dir`, else env FLMN_DATA_DIR, else `data`):

    omniglot/images_background.zip   964 characters (ids 0001-0964) x 20 drawers, 105x105 PNGs
    omniglot/images_evaluation.zip   659 characters (ids 0965-1623)
    mnist/t10k-images-idx3-ubyte.gz  MNIST test set (miniMNIST is drawn from it)
    mnist/t10k-labels-idx1-ubyte.gz

Images are downscaled with Pillow's LANCZOS filter (the antialiasing filter Pillow used to call
ANTIALIAS) on float images, applied as the equivalent (20, n) matrix `resize_matrix(n, 20)` taken
from Pillow once: small = clip(A @ img @ A.T, 0, 1). The same matrix serves the augmentation, so
an augmentation by angle 0 and shift 0 gives back exactly the plain image.

Decoded arrays are cached as .npz under `<data_dir>/.cache/`, or, when the data directory is
read-only, under env FLMN_CACHE_DIR, else $XDG_CACHE_HOME/flmn_np, else ~/.cache/flmn_np. A cache
file's name carries a hash of the zips' sha256, the image size, the filter and CACHE_VERSION.

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
import os
import re
import stat
import sys
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

DEFAULT_DATA_DIR = Path(os.environ.get("FLMN_DATA_DIR", "data"))
IMAGE_SIZE = 20                       # side of the downscaled images: D = 20 * 20 = 400
FULL_SIZE = 105                       # side of the Omniglot PNGs
N_DRAWERS = 20
FILTER = "lanczos"                    # Pillow resampling filter used for every downscale
CACHE_VERSION = 1                     # bump when the cached arrays change meaning
DOWNLOAD_TIMEOUT_S = 10.0

# (zip stem, first id, last id): global class index = id - 1. Tests shrink this to fake data.
OMNIGLOT_PARTS = (("images_background", 1, 964), ("images_evaluation", 965, 1623))

_OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{}"
_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/{}",
               "https://yann.lecun.com/exdb/mnist/{}")


class FileSpec(NamedTuple):
    """A known data file: where it lives, where to get it, and the hashes it may have."""
    relpath: str                  # relative to the data directory
    urls: tuple                   # tried in order by download
    sha256: frozenset             # our copies (see /work/shared/data/SHA256SUMS)
    md5: frozenset = frozenset()  # canonical files that differ byte-wise from ours


KNOWN_FILES = {
    "images_background.zip": FileSpec(
        "omniglot/images_background.zip", (_OMNIGLOT_URL.format("images_background.zip"),),
        frozenset({"544ac2c9ac1ead88ea7375ca7cb95db7d39fa748ca4177a9d5a85eb8db5a7823"}),
        frozenset({"68d2efa1b9178cc56df9314c21c6e718"})),
    "images_evaluation.zip": FileSpec(
        "omniglot/images_evaluation.zip", (_OMNIGLOT_URL.format("images_evaluation.zip"),),
        frozenset({"7d0d1190463fd5ad69a24b188bb0b969ca37bca1383065ac06bf1d0a4754e851"}),
        frozenset({"6b91aef0f799c5bb55b94e3f2daec811"})),
    "t10k-images-idx3-ubyte.gz": FileSpec(
        "mnist/t10k-images-idx3-ubyte.gz", tuple(u.format("t10k-images-idx3-ubyte.gz") for u in _MNIST_URLS),
        frozenset({"8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"}),
        frozenset({"9fb629c4189551a2d022fa330f9573f3"})),
    "t10k-labels-idx1-ubyte.gz": FileSpec(
        "mnist/t10k-labels-idx1-ubyte.gz", tuple(u.format("t10k-labels-idx1-ubyte.gz") for u in _MNIST_URLS),
        frozenset({"f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"}),
        frozenset({"ec29112dd5afa0611ce80d1b7f02629c"})),
}
MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

# Tests replace this to serve fake downloads; it is called as _urlopen(url, timeout=...).
_urlopen = urllib.request.urlopen


class DataError(Exception):
    """A data file is missing, corrupt or not what it should be (the message says what to do)."""


class Omniglot(NamedTuple):
    """images (n_classes, 20, 400) float32 in [0, 1], ink = 1; row n of images is character id n+1.
    names[n] = "Alphabet/characterNN"; classes 0..n_background-1 are the background set."""
    images: np.ndarray
    names: list
    n_background: int


# ----------------------------------------------------------------------------- paths and files

def resolve_data_dir(arg=None):
    """The data directory: `arg` if given, else env FLMN_DATA_DIR, else `data` (as given, relative
    to the working directory)."""
    if arg is not None:
        return Path(arg)
    return Path(os.environ.get("FLMN_DATA_DIR", "data"))


def _is_writable(path):
    """True if `path` is a directory we may write to. Mode bits count even for root, so a
    directory marked read-only (like the shared data) is treated as read-only."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return False
    return stat.S_ISDIR(mode) and bool(mode & 0o222) and os.access(path, os.W_OK)


def user_cache_dir():
    """env FLMN_CACHE_DIR, else $XDG_CACHE_HOME/flmn_np, else ~/.cache/flmn_np."""
    if os.environ.get("FLMN_CACHE_DIR"):
        return Path(os.environ["FLMN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "flmn_np"


def cache_dir_for(data_dir, cache_dir=None):
    """Where caches go: `cache_dir` if given, else `<data_dir>/.cache` if the data directory is
    writable, else user_cache_dir()."""
    if cache_dir is not None:
        return Path(cache_dir)
    data_dir = Path(data_dir)
    if _is_writable(data_dir / ".cache") or (not (data_dir / ".cache").exists() and _is_writable(data_dir)):
        return data_dir / ".cache"
    return user_cache_dir()


def file_hashes(path):
    """(sha256, md5) hex digests of a file."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def checksum_status(path, spec):
    """'ok' (our copy or the canonical file), 'unknown' (other hashes) or 'missing'."""
    if not Path(path).is_file():
        return "missing"
    sha, md5 = file_hashes(path)
    return "ok" if sha in spec.sha256 or md5 in spec.md5 else "unknown"


def _atomic_write(path, write):
    """Call write(fileobj) on a temp file beside `path`, then os.replace it into place; on any
    error the temp file is removed, so no partial file is ever left under `path`'s name."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _Offline(Exception):
    """The network is unreachable: stop trying further URLs."""


def _nearest_existing(path):
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def download_file(spec, data_dir):
    """Download one known file into data_dir/spec.relpath, verified against its hashes, written
    atomically. Returns the path; raises DataError (or _Offline when there is no network)."""
    dest = Path(data_dir) / spec.relpath
    if not _is_writable(_nearest_existing(dest.parent)):
        raise DataError(f"{_nearest_existing(dest.parent)} is read-only: cannot download {dest.name} into it")
    errors = []
    for url in spec.urls:
        try:
            with _urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                payload = response.read()
        except urllib.error.HTTPError as e:
            errors.append(f"{url}: HTTP {e.code}")
            continue
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise _Offline(f"{url}: {getattr(e, 'reason', e)}") from e
        sha, md5 = hashlib.sha256(payload).hexdigest(), hashlib.md5(payload).hexdigest()
        if sha not in spec.sha256 and md5 not in spec.md5:
            errors.append(f"{url}: checksum mismatch (sha256 {sha[:12]}...)")
            continue
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(dest, lambda f: f.write(payload))
        except OSError as e:
            raise DataError(f"cannot write {dest} ({e.strerror})") from e
        return dest
    raise DataError(f"could not download {dest.name}: " + "; ".join(errors))


def require_files(data_dir, names, download=True):
    """Paths of the known files `names` under data_dir; missing ones are downloaded when
    `download` is true. Raises one DataError naming every file still missing and where it goes."""
    data_dir = Path(data_dir)
    paths, missing, reason = [], [], None
    for name in names:
        spec = KNOWN_FILES[name]
        path = data_dir / spec.relpath
        if not path.is_file() and download and reason is None:
            try:
                download_file(spec, data_dir)
            except _Offline as e:
                reason = f"download failed, no network ({e})"
            except DataError as e:
                reason = str(e)
        if not path.is_file():
            missing.append(spec)
        paths.append(path)
    if missing:
        where = ", ".join(f"{s.relpath} (from {s.urls[0]})" for s in missing)
        why = reason if reason is not None else "downloading is off (download=False)"
        raise DataError(f"missing data file(s) under {data_dir}: {where}; {why}. "
                        f"Put them there, or point --data-dir / FLMN_DATA_DIR at a folder that has them.")
    return paths


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
        _atomic_write(path, lambda f: np.savez(f, **arrays))
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

    from flmn_np.episodes import sample_episodes
    from flmn_np.ops import previous_label_onehot

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

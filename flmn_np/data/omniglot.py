"""Omniglot as arrays: decode the two zips, downscale, cache.   [FLMN §5; docs/model.md]

The zips are read without extracting them: omniglot/images_background.zip (characters
0001-0964) and omniglot/images_evaluation.zip (0965-1623), 20 drawers each, 105x105 PNGs with
black ink on white. Class n is character id n+1; ink = 1 (True at full resolution).

Decoded arrays are cached as .npz in files.cache_dir_for(data_dir): `<data_dir>/.cache/`, or a
user cache when the data directory is read-only. A cache file's name carries a hash of the zips'
sha256, the image size, the filter and CACHE_VERSION, so a changed zip never reads a stale cache.

Every problem with the zips raises DataError with a one-line message: which file, what is
wrong, what to do.
"""
import hashlib
import io
import re
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from .files import KNOWN_FILES, DataError, atomic_write, cache_dir_for, require_files, resolve_data_dir
from .images import FILTER, IMAGE_SIZE, downscale

FULL_SIZE = 105                       # side of the Omniglot PNGs
N_DRAWERS = 20
CACHE_VERSION = 1                     # bump when the cached arrays change meaning

# (zip stem, first id, last id): global class index = id - 1. Tests shrink this to fake data.
OMNIGLOT_PARTS = (("images_background", 1, 964), ("images_evaluation", 965, 1623))


def omniglot_files():
    """The names of OMNIGLOT_PARTS' zips, in order (files.KNOWN_FILES's keys for them)."""
    return [f"{stem}.zip" for stem, _, _ in OMNIGLOT_PARTS]


class Omniglot(NamedTuple):
    """images (n_classes, 20, 400) float32 in [0, 1], ink = 1; row n of images is character id n+1.
    names[n] = "Alphabet/characterNN"; classes 0..n_background-1 are the background set."""
    images: np.ndarray
    names: list
    n_background: int


# ----------------------------------------------------------------------------- reading the zips

_PNG_RE = re.compile(r"^[^/]+/([^/]+)/([^/]+)/(\d{4})_(\d{2})\.png$")


def open_zip(path):
    """zipfile.ZipFile(path), or DataError saying the file is truncated or corrupt."""
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


def count_characters(path, first_id, last_id):
    """How many characters one zip holds, after checking its layout (index_omniglot_zip)."""
    with open_zip(path) as zf:
        table, _ = index_omniglot_zip(zf, path, first_id, last_id)
    return len(table)


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
    with open_zip(path) as zf:
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
    names = omniglot_files()
    specs = {n: KNOWN_FILES.get(n) for n in names}
    if all(s is not None for s in specs.values()):
        return require_files(data_dir, names, download)
    paths = [Path(data_dir) / "omniglot" / n for n in names]   # parts replaced (tests)
    for p in paths:
        if not p.is_file():
            raise DataError(f"missing {p}: put the Omniglot zip there (see data/README.md)")
    return paths


# ----------------------------------------------------------------------------- the cache

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


def _expected_arrays():
    """What a cache holds for OMNIGLOT_PARTS: {key: (shape, dtype kind)} of the small cache
    (images, names, n_background) and of the full one (packed bits)."""
    counts = [last - first + 1 for _, first, last in OMNIGLOT_PARTS]
    n = sum(counts)
    small = {"images": ((n, N_DRAWERS, IMAGE_SIZE * IMAGE_SIZE), "f"), "names": ((n,), "U"),
             "n_background": ((), "i")}
    full = {"packed": ((n, N_DRAWERS, -(-FULL_SIZE * FULL_SIZE // 8)), "u")}
    return small, full, counts[0]


def _cache_problem(arrays, expected, n_background):
    """Why the arrays read from a cache are not what it should hold, or None."""
    for k, (shape, kind) in expected.items():
        a = arrays[k]
        if a.shape != shape or a.dtype.kind != kind:
            return f"{k} is {a.dtype} {a.shape}, expected shape {shape}"
    if "images" in arrays:
        images = arrays["images"]
        if images.dtype != np.float32 or not (images.min() >= 0 and images.max() <= 1):
            return f"images are {images.dtype} outside [0, 1], expected float32 in [0, 1]"
        if int(arrays["n_background"]) != n_background:
            return f"n_background is {int(arrays['n_background'])}, expected {n_background}"
    return None


def _load_cache(path, expected, n_background):
    """The arrays `expected` names ({key: (shape, dtype kind)}) from an .npz cache, or None if
    absent, unreadable or not of those shapes, dtypes and counts (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in expected}
    except Exception as e:  # a damaged cache is rebuilt, never fatal
        warnings.warn(f"ignoring unreadable cache {path} ({e}); rebuilding it", stacklevel=3)
        return None
    problem = _cache_problem(arrays, expected, n_background)
    if problem is not None:
        warnings.warn(f"ignoring damaged cache {path} ({problem}); rebuilding it", stacklevel=3)
        return None
    return arrays


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


# ----------------------------------------------------------------------------- loading

def load_omniglot(data_dir=None, cache_dir=None, download=True):
    """Omniglot as 20x20 images: Omniglot(images (1623, 20, 400) float32, names, n_background=964).

    Class n is character id n+1 (file XXXX_YY.png: class XXXX-1, drawer YY-1). Ink = 1.
    The first call decodes 32,460 PNGs straight from the zips (a few seconds) and caches the
    result; later calls read the cache (well under a second).
    """
    data_dir = resolve_data_dir(data_dir)
    paths = _omniglot_paths(data_dir, download)
    small_path, full_path = _cache_files(data_dir, cache_dir, paths)
    small, _, n_background = _expected_arrays()
    cached = _load_cache(small_path, small, n_background)
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
    _, full, n_background = _expected_arrays()
    cached = _load_cache(full_path, full, n_background)
    if cached is None:
        return _build_omniglot(paths, small_path, full_path)[3]
    packed = cached["packed"]
    bits = np.unpackbits(packed, axis=-1, count=FULL_SIZE * FULL_SIZE)
    return bits.view(bool).reshape(*packed.shape[:2], FULL_SIZE, FULL_SIZE)

"""Data files: where they live, their checksums, downloads, and where caches go.

Layout under the data directory (resolve_data_dir: `--data-dir`, else env FLMN_DATA_DIR, else `data`):

    omniglot/images_background.zip   964 characters (ids 0001-0964) x 20 drawers, 105x105 PNGs
    omniglot/images_evaluation.zip   659 characters (ids 0965-1623)
    mnist/t10k-images-idx3-ubyte.gz  MNIST test set (miniMNIST is drawn from it)
    mnist/t10k-labels-idx1-ubyte.gz

KNOWN_FILES gives each file's URLs and the hashes it may have: the sha256 listed in
data/README.md, or the md5 of the canonical files. A missing file is downloaded (unless
download=False), checked against those hashes and written atomically; without a network the
first failure stops all further tries.

Caches go under `<data_dir>/.cache/`, or, when the data directory is read-only, under env
FLMN_CACHE_DIR, else $XDG_CACHE_HOME/flmn_np, else ~/.cache/flmn_np.

Every problem with the input files raises DataError with a one-line message: which file, what is
wrong, what to do.
"""
import hashlib
import os
import stat
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

from ..errors import FlmnError

DOWNLOAD_TIMEOUT_S = 10.0

_OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{}"
_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/{}",
               "https://yann.lecun.com/exdb/mnist/{}")


class FileSpec(NamedTuple):
    """A known data file: where it lives, where to get it, and the hashes it may have."""
    relpath: str                  # relative to the data directory
    urls: tuple                   # tried in order by download
    sha256: frozenset             # accepted copies (the table in data/README.md)
    md5: frozenset = frozenset()  # canonical files, where they differ byte-wise from those


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


class DataError(FlmnError):
    """A data file is missing, corrupt or not what it should be (the message says what to do)."""


# ----------------------------------------------------------------------------- data directory and caches

def resolve_data_dir(arg=None):
    """The data directory: `arg` (a --data-dir option) if given, else env FLMN_DATA_DIR, else
    `data` (as given, relative to the working directory). The one place this is decided."""
    if arg is not None:
        return Path(arg)
    return Path(os.environ.get("FLMN_DATA_DIR", "data"))


def _is_writable(path):
    """True if `path` is a directory we may write to. Mode bits count even for root, so a
    directory marked read-only (like a shared, read-only copy) is treated as read-only."""
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


# ----------------------------------------------------------------------------- checksums

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


# ----------------------------------------------------------------------------- writing and downloading

def atomic_write(path, write):
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
            atomic_write(dest, lambda f: f.write(payload))
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

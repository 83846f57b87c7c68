"""The run directory (--out): one writer at a time, files that are whole or absent, a recorded
config that every reader checks. (How a command reports what went wrong: cli.run_command.)

    .lock           held (fcntl.flock) by the train.py writing the directory, for the life of its
                    process; it names the holder's pid. The kernel drops the lock when the process
                    dies, so even a `kill -9` leaves no stale lock; the file goes when the run ends.
    config.json     the run's record (setup.run_record); read back with `read_record`

Every file of a run is written whole (data.files.atomic_write: a temp file .NAME.PID.tmp renamed
into place; one a kill -9 left mid-write is removed when the next run starts there,
`remove_stale_temporary_files`) except the two logs, metrics.csv and validation.csv, which grow
by one flushed row at a time. A crash can cut their last row short; readers drop such a row with
a warning, and a resumed run first drops every row past its checkpoint's step
(`keep_rows_until`), so it appends exactly the rows the uninterrupted run would have.
"""
import csv
import fcntl
import io
import json
import os
import sys
from pathlib import Path

from ..cli import temporary_file
from ..data.files import atomic_write
from ..data.splits import make_split
from ..errors import FlmnError
from .checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint
from .config import ConfigError, TrainConfig, identity_diff, merge_for_resume, model_config, to_json

LOCK_NAME = ".lock"
CONFIG_NAME = "config.json"


class TrainingError(FlmnError, RuntimeError):
    """Training cannot go on (a non-finite loss, a disk that is full); the message says why and
    what was kept."""


# ---------------------------------------------------------------- one writer

class RunLock:
    """An exclusive flock on RUN_DIR/.lock, held until `release` or the end of the process."""

    def __init__(self, path, fd):
        self.path, self.fd = path, fd

    @classmethod
    def acquire(cls, run_dir):
        """Lock `run_dir`, or raise ConfigError naming the pid that holds it."""
        path = Path(run_dir) / LOCK_NAME
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise ConfigError(f"{run_dir} is in use by another train.py (pid {holder}); wait "
                                  f"for it to end, or choose another --out") from None
            try:   # the holder may have removed the file between our open and our lock
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    def release(self):
        """Remove the lock file (while still holding it) and unlock; safe to call twice."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------- opening a run directory

class RunDir:
    """An opened, locked run directory: the config to run with, the checkpoint to resume from
    (None for a fresh run, or a run stopped before its first checkpoint), and the folders this
    process created (removed again by `abandon` if the run never started)."""

    def __init__(self, path, cfg, ckpt, record, lock, created):
        self.path, self.cfg, self.ckpt, self.record = path, cfg, ckpt, record
        self.lock, self.created = lock, created

    def close(self):
        self.lock.release()

    def abandon(self):
        """A start that failed before config.json was written: leave nothing behind."""
        self.close()
        if not (self.path / CONFIG_NAME).exists():
            remove_created(self.created)


def remove_created(created):
    """Remove the folders make_dirs created, deepest first, each only while it is empty; stops at
    the first one that is not."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break


def open_run_dir(cfg, given):
    """Check --out, create and lock it, and return a RunDir.

    A fresh run needs a new or empty folder. --resume needs config.json; flags must agree with the
    recorded run (config.merge_for_resume) and its checkpoint.npz, if there is one yet, must
    belong to it. Everything refused is a ConfigError / CheckpointError with a one-line message."""
    if not cfg.out or not cfg.out.strip():
        raise ConfigError("--out is empty; name the run directory")
    path = Path(cfg.out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a folder; choose another --out")
    if cfg.resume and not (path / CONFIG_NAME).is_file():
        raise ConfigError(f"--resume: {path} holds no run (no {CONFIG_NAME}); drop --resume "
                          f"to start one there")
    created = make_dirs(path)
    try:
        lock = RunLock.acquire(path)
    except BaseException:       # in use, or an OS error (too many open files)
        remove_created(created)
        raise
    try:
        if cfg.resume:
            return _open_for_resume(path, given, lock, created)
        _check_empty(path)
        return RunDir(path, cfg, None, None, lock, created)
    except BaseException:
        RunDir(path, cfg, None, None, lock, created).abandon()
        raise


def make_dirs(path):
    """mkdir -p; returns the folders it created, outermost first. One that fails (a name too
    long, a read-only parent) leaves none of them."""
    missing = []
    p = Path(path)
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    missing.reverse()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except BaseException:
        remove_created([p for p in missing if p.is_dir()])
        raise
    return missing


def _check_empty(path):
    """ConfigError unless `path` is a folder a fresh run may use: empty but for a lock and the
    temporary files of a killed write (removed when the run starts)."""
    if (path / CONFIG_NAME).exists() or (path / CHECKPOINT_NAME).exists():
        raise ConfigError(f"{path} already holds a run; pass --resume to continue it, "
                          f"or choose another --out")
    stale = set(stale_temporary_files(path))
    others = sorted(p.name for p in path.iterdir() if p.name != LOCK_NAME and p not in stale)
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise ConfigError(f"--out {path} is a folder with other files in it ({shown}) and no "
                          f"run; choose a new or empty folder")


def _open_for_resume(path, given, lock, created):
    record, recorded = read_record(path)
    cfg = merge_for_resume(recorded, {**given, "out": str(path)})   # the directory opened here
    ckpt = None
    if os.path.lexists(path / CHECKPOINT_NAME):    # a folder or broken link is refused
        ckpt = load_checkpoint(path / CHECKPOINT_NAME)
        check_belongs(ckpt, cfg, path / CHECKPOINT_NAME)
    return RunDir(path, cfg, ckpt, record, lock, created)


# ---------------------------------------------------------------- what a kill -9 leaves

def stale_temporary_files(run_dir):
    """The temporary files of atomic writes (cli.temporary_file) in `run_dir` whose writer is no
    longer running: what a process killed while writing a file leaves beside it."""
    stale = []
    for p in sorted(Path(run_dir).iterdir()):
        found = temporary_file(p)
        if found and p.is_file() and not p.is_symlink() and not _is_running(found[1]):
            stale.append(p)
    return stale


def _is_running(pid):
    """True when a process `pid` exists (or may: pid 0 is not a writer's, and is kept)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:      # another user's process
        return True
    return True


def remove_stale_temporary_files(run_dir):
    """Remove what stale_temporary_files finds, saying so in one line; called by a train.py that
    holds the directory's lock and is past every refusal (a refusal changes nothing)."""
    removed = [p.name for p in stale_temporary_files(run_dir)]
    for name in removed:
        (Path(run_dir) / name).unlink(missing_ok=True)
    if removed:
        print(f"{run_dir}: removed what a killed write left: {', '.join(removed)}")


# ---------------------------------------------------------------- the recorded config

def read_record(run_dir):
    """RUN_DIR/config.json -> (record dict, TrainConfig); ConfigError if missing or damaged."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"{run_dir} holds no run (no {CONFIG_NAME})")
    try:
        record = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"{path} is damaged (not JSON: {e})") from None
    split = record.get("split") if isinstance(record, dict) else None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict) \
            or not isinstance(split, dict) or not _id_list(split.get("test_ids")) \
            or not all(_id_list(split[k]) for k in ("train_ids", "val_ids") if k in split):
        raise ConfigError(f"{path} is damaged: it lacks the 'config' or 'split' of a run")
    try:
        cfg = TrainConfig.from_dict(record["config"])
        model_config(cfg)
    except ConfigError as e:
        raise ConfigError(f"{path} is damaged: {e}") from None
    if split["test_ids"] != [int(i) for i in make_split(cfg.split, cfg.split_seed)[1]]:
        raise ConfigError(f"{path} is damaged: its test_ids are not the held-out classes of "
                          f"--split {cfg.split} --split-seed {cfg.split_seed}")
    return record, cfg


def _id_list(v):
    return isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v)


def check_belongs(ckpt, cfg, path):
    """CheckpointError unless the checkpoint was saved by a run with cfg's identity."""
    diff = identity_diff(TrainConfig.from_dict(ckpt.config), cfg)
    if diff:
        raise CheckpointError(f"{path} is from another run: it has {diff}")


def kept_checkpoint(run_dir):
    """What a stopped run leaves behind, for its error message."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        return "no checkpoint was written yet (--resume starts the run again from step 0)"
    try:
        step = load_checkpoint(path).step
    except CheckpointError as e:
        return f"no usable checkpoint is left ({e})"
    return f"the last good checkpoint (step {step}) is kept in {run_dir}"


def write_json(path, obj):
    """Write JSON atomically (sorted keys, readable)."""
    atomic_write(path, lambda f: f.write((to_json(obj) + "\n").encode()))


# ---------------------------------------------------------------- the CSV logs

def read_rows(path):
    """A run's CSV log -> list of row dicts. A last row cut short (no newline: the writer stopped
    mid-row) is dropped with a warning; any other damaged row is a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is damaged: not a text file") from None
    if not text:
        raise ConfigError(f"{path} is empty (not even a header); delete it to start a new log")
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
        print(f"warning: {path}: the last row was cut short (the run stopped while writing it); "
              f"ignoring it", file=sys.stderr)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    for i, r in enumerate(rows, start=2):
        if None in r or None in r.values() or not r.get("step", "").isdigit() \
                or not all(_is_number(v) for v in r.values()):
            raise ConfigError(f"{path}: line {i} is damaged; delete that line and the ones "
                              f"after it, or start a new run")
    return rows


def _is_number(text):
    """True for a CSV cell a reader can use: blank, or a number (nan included)."""
    if text == "":
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def keep_rows_until(path, columns, step):
    """Rewrite a run's CSV log with its header and only the rows up to `step` (None: no rows), so
    that a resumed run appends exactly what the uninterrupted run did. Returns the kept rows."""
    path = Path(path)
    rows = []
    if step is not None and path.is_file():
        rows = [r for r in read_rows(path) if int(r["step"]) <= step]
        if rows and list(rows[0]) != list(columns):
            raise ConfigError(f"{path} has the columns of another run; cannot resume")
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))
    return rows


def append_row(path, columns, row):
    """Append one row to a CSV log, flushed, so that a killed run keeps its rows."""
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=columns, lineterminator="\n").writerow(row)

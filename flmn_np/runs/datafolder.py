"""Which data folder a run reads.

A fresh run records, in config.json's "data", how its folder was chosen, the sha256 of the
Omniglot files it read and, as "folder", where they were. Every command that reads the run later
(`train.py --resume`, `python -m flmn_np.evaluate`, `memviz`) takes, unless it is given
--data-dir: the recorded folder while it still holds files with the recorded checksums, else
$FLMN_DATA_DIR, else ./data, and says which it took when it is not the recorded one. Runs recorded
before "folder" existed read their relative "dir" the same way, else $FLMN_DATA_DIR or ./data.

"folder" is a path of one machine: `python -m flmn_np.runs.checkpoint strip` removes it before a
run directory is published (drop_folder).
"""
import os
from pathlib import Path

from ..data.files import file_hashes, resolve_data_dir


def holds_recorded_files(folder, sha256):
    """True when every file of `sha256` ({relative path: digest}) is under `folder` with that
    digest."""
    folder = Path(folder)
    return bool(sha256) and all((folder / rel).is_file() and file_hashes(folder / rel)[0] == digest
                                for rel, digest in sha256.items())


def run_data_dir(record, given=None, say=print):
    """The data folder for the run of config.json `record`: `given` (--data-dir) when given, else
    the recorded folder while it holds the recorded files, else $FLMN_DATA_DIR, else ./data."""
    if given is not None:
        return resolve_data_dir(given)
    data = record.get("data") or {}
    folder = data.get("folder") or data.get("dir")
    fallback = resolve_data_dir(None)
    if folder is None:
        return fallback
    if holds_recorded_files(folder, data.get("sha256") or {}):
        return Path(folder)
    chosen = "$FLMN_DATA_DIR" if os.environ.get("FLMN_DATA_DIR") else "the default"
    say(f"data: {folder}, recorded by the run, no longer holds its files; using {fallback} "
        f"({chosen})")
    return fallback


def drop_folder(record):
    """`record` without the machine path of its data folder (for publishing a run)."""
    data = {k: v for k, v in (record.get("data") or {}).items() if k != "folder"}
    return {**record, "data": data} if "data" in record else record

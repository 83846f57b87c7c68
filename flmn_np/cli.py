"""What every command shares: the wrapper `run_command` (one line on stderr instead of a
traceback, the exit status, Ctrl-C and SIGTERM) and the argparse types of numeric flags.
The bottom layer, with errors.py: it imports nothing else of the package."""
import argparse
import errno
import math
import os
import re
import signal
import sys
from pathlib import Path

from .errors import FlmnError


# ---------------------------------------------------------------- the command wrapper

def run_command(prog, fn, *args):
    """Call fn(*args) and return its exit code; a FlmnError, an OSError or a MemoryError prints
    one line `prog: error: ...` and gives 2, Ctrl-C or SIGTERM gives 130 (no traceback in any
    case)."""
    def terminate(signum, frame):
        raise KeyboardInterrupt

    # SIGINT explicitly too: a process started as a background job of a script (`cmd &`)
    # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt for it.
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, terminate),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    try:
        return fn(*args)
    except FlmnError as e:
        return _fail(prog, str(e))
    except OSError as e:
        return _fail(prog, os_error_line(e))
    except MemoryError as e:
        return _fail(prog, memory_error_line(e))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _fail(prog, message):
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def os_error_line(e):
    """An OSError as one line: which file (the one the user knows, not the temporary file it was
    being written as), what the system said."""
    names, temporary = [], False
    for f in (e.filename, e.filename2):
        if f is None:
            continue
        target = written_file(f)
        temporary = temporary or target is not None
        shown = str(target or f)
        if shown not in names:
            names.append(shown)
    where = " -> ".join(names)
    what = e.strerror or str(e) or type(e).__name__
    if e.errno == errno.ENOSPC:
        what += " (the disk is full)"
    elif e.errno in (errno.EMFILE, errno.ENFILE):
        what += " (the limit on open files: raise it with `ulimit -n`, or open fewer at once)"
    elif e.errno == errno.ENAMETOOLONG and temporary:
        what += " (it is written first under a longer, temporary name beside it: choose a " \
                "shorter name)"
    return f"{where}: {what}" if where else what


# data.files.atomic_write writes FOLDER/NAME as the temporary file FOLDER/.NAME.PID.tmp (PID:
# the writer's process id) and renames it into place.
TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>[0-9]+)\.tmp")


def temporary_file(path):
    """(the file it stands for, the writer's pid) for a temporary file of an atomic write, else
    None."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    path = Path(path)
    match = TEMPORARY_NAME.fullmatch(path.name)
    return (path.with_name(match["name"]), int(match["pid"])) if match else None


def written_file(path):
    """The file a temporary file of an atomic write stands for; None for any other path."""
    found = temporary_file(path)
    return found[0] if found else None


def memory_error_line(e):
    """A MemoryError as one line: sizes (--batch-size, --hidden, --slots, --width, --episodes)
    too large for this machine."""
    what = str(e).split(" for an array")[0] if str(e) else "MemoryError"
    return (f"out of memory ({what}); use smaller sizes (--batch-size, --hidden, --slots, "
            f"--width, --classes, --samples)")


# ---------------------------------------------------------------- numeric flags

def int_at_least(low):
    """argparse type: an int >= low."""
    def parse(s):
        v = int(s)
        if v < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {s}")
        return v
    parse.__name__ = "int"
    return parse


def float_in(low, high, low_open=False):
    """argparse type: a finite float in [low, high] (or (low, high] with low_open)."""
    def parse(s):
        v = float(s)
        if not (low < v if low_open else low <= v) or not v <= high or not math.isfinite(v):
            if high == math.inf:
                want = f"a finite number {'>' if low_open else '>='} {low}"
            else:
                want = f"a number in {'(' if low_open else '['}{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be {want}, got {s}")
        return v
    parse.__name__ = "float"
    return parse

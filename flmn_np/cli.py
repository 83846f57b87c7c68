"""What every command shares: the wrapper `run_command` (one line on stderr instead of a
traceback, the exit status, Ctrl-C and SIGTERM) and the argparse types of numeric flags.
The bottom layer, with errors.py: it imports nothing else of the package."""
import argparse
import errno
import math
import signal
import sys

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
    """An OSError as one line: which file, what the system said."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    what = e.strerror or str(e) or type(e).__name__
    if e.errno == errno.ENOSPC:
        what += " (the disk is full)"
    return f"{where}: {what}" if where else what


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

"""Helpers for the tests that train tiny runs (test_train, test_train_seeds, test_faults,
test_rundir, test_validation, test_figures): train.py flags, running a command in a fresh process,
a one-line error, a full disk at a chosen write, a child train.py paused at a known step or in
the middle of a write, and `tiny_run`, one finished tiny run per test module.
"""
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flmn_np.runs.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
STEPS = 6


def tiny_flags(data_dir, out, **over):
    """train.py flags for a tiny FLMN run: 6 steps of 2 episodes, evaluated every 2 steps."""
    flags = {"--hidden": 16, "--slots": 8, "--width": 4, "--batch-size": 2, "--steps": STEPS,
             "--eval-every": 2, "--eval-episodes": 4, "--final-eval-episodes": 6,
             "--log-every": 1, "--backend": "numpy", "--data-dir": data_dir, "--out": out}
    flags.update(over)
    return [str(a) for kv in flags.items() for a in kv if a is not None]


def train_in_process(argv):
    from flmn_np.runs.training import main
    return main(argv)


def run_cli(args, timeout=120):
    """Run a command-line entry point in a fresh process from the repository root."""
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def assert_clean_error(proc, *fragments):
    """Exit code 2, a one-line message holding every fragment, and no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


def one_line_error(capsys, code, *fragments):
    """An in-process command returned 2 and printed exactly one line holding the fragments."""
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], err
    return lines[0]


def fail_on(monkeypatch, module, name, call):
    """Make module.atomic_write fail with ENOSPC on the `call`-th write of a file called `name`,
    after writing part of it (as a full disk does)."""
    real, calls = module.atomic_write, []

    def atomic_write(path, write):
        if str(path).endswith(name):
            calls.append(path)
            if len(calls) == call:
                def half(f):
                    f.write(b"half a file")
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real(path, half)
        return real(path, write)
    monkeypatch.setattr(module, "atomic_write", atomic_write)


def params_of(run_dir):
    return load_checkpoint(Path(run_dir) / "checkpoint.npz").params


# A child train.py that stops after logging `step` and waits there to be killed: a patch the test
# applies to its own child, so that a SIGKILL from the test lands at a known step.
# A signal (Ctrl-C, SIGTERM) ends the pause and reaches train.py's own handler.
PAUSED_CHILD = """
import signal, sys, time
from flmn_np.runs import training
log_point = training.log_point

def pause_after(run, stats, step, *rest):
    done = log_point(run, stats, step, *rest)
    if step == {step}:
        woken = []
        for s in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(s)
            signal.signal(s, lambda n, f, h=handler: (woken.append(n), h(n, f)))
        print("paused at step", step, flush=True)
        deadline = time.monotonic() + 600
        while not woken and time.monotonic() < deadline:
            time.sleep(0.02)
    return done

training.log_point = pause_after
sys.exit(training.main(sys.argv[1:]))
"""


def start_paused(argv, step):
    """Start train.py `argv` in a child process that holds still after logging `step`."""
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_CHILD.format(step=step), *argv],
                            cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in proc.stdout:
        if line.startswith("paused at step"):
            return proc
    proc.wait(timeout=60)
    raise AssertionError(f"train.py ended before step {step}: {proc.stderr.read()}")


# A child train.py that stops halfway through its `call`-th atomic write of a file called `name`
# (the temporary file beside it half written) and waits there to be killed.
PAUSED_WRITE_CHILD = """
import sys, time
from flmn_np.data import files
real, calls = files.atomic_write, []

def atomic_write(path, write):
    if str(path).endswith({name!r}):
        calls.append(path)
        if len(calls) == {call}:
            def half(f):
                f.write(b"half a file")
                f.flush()
                print("paused in the write of", path, flush=True)
                time.sleep(600)
            return real(path, half)
    return real(path, write)

for module in ("checkpoint", "rundir", "validation", "curves"):
    __import__("flmn_np.runs." + module, fromlist=["_"]).atomic_write = atomic_write
from flmn_np.runs import training
sys.exit(training.main(sys.argv[1:]))
"""


def start_paused_in_write(argv, name, call=1):
    """Start train.py `argv` in a child process that holds still halfway through its `call`-th
    write of a file called `name` (kill it with kill_hard: what a kill -9 mid-write leaves)."""
    child = PAUSED_WRITE_CHILD.format(name=name, call=call)
    proc = subprocess.Popen([sys.executable, "-c", child, *argv], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in proc.stdout:
        if line.startswith("paused in the write of"):
            return proc
    proc.wait(timeout=60)
    raise AssertionError(f"train.py never wrote {name} {call} times: {proc.stderr.read()}")


def kill_hard(proc):
    """SIGKILL a child started by this test and reap it."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir):
    """A finished tiny run directory (trained in this process)."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert train_in_process(tiny_flags(data_dir, out)) == 0
    return out

"""The bottom layer every command shares: the error base (errors.FlmnError), the wrapper
(cli.run_command) and the numeric flag types; and that every command goes through the wrapper."""
import argparse
import ast
import errno
import importlib
import inspect
import signal
from pathlib import Path

import pytest

import flmn_np
from flmn_np.cli import float_in, int_at_least, run_command
from flmn_np.core.backend import BackendError
from flmn_np.data.files import DataError
from flmn_np.errors import FlmnError
from flmn_np.runs.checkpoint import CheckpointError
from flmn_np.runs.config import ConfigError
from flmn_np.runs.rundir import TrainingError

ROOT = Path(flmn_np.__file__).parent


def modules():
    """Every module of the package, imported."""
    names = [".".join(p.relative_to(ROOT.parent).with_suffix("").parts) for p in ROOT.rglob("*.py")]
    return [importlib.import_module(n.removesuffix(".__init__")) for n in sorted(names)
            if not n.endswith("__main__")]


def test_every_error_class_of_the_package_derives_from_the_base():
    """Every public one; a private one (data.files._Offline) is caught where it is raised."""
    found = {obj for m in modules() for _, obj in inspect.getmembers(m, inspect.isclass)
             if obj.__module__.startswith("flmn_np.") and issubclass(obj, Exception)
             and not obj.__name__.startswith("_")}
    assert {BackendError, DataError, ConfigError, CheckpointError, TrainingError} <= found
    assert [c.__name__ for c in found if not issubclass(c, FlmnError)] == []
    # the standard bases they had stay, so that older `except RuntimeError` still catch them
    assert issubclass(ConfigError, ValueError) and issubclass(BackendError, RuntimeError)
    assert issubclass(CheckpointError, RuntimeError) and issubclass(TrainingError, RuntimeError)


def main_calls(path):
    """The names main() of a module calls."""
    tree = ast.parse(path.read_text())
    main = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "main"]
    return {n.func.id for f in main for n in ast.walk(f)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


COMMANDS = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                  if "def main(" in p.read_text())


def test_the_commands_are_the_known_ones():
    assert {"bench.py", "data/cli.py", "evaluate.py", "gpucheck.py", "gradcheck.py", "memviz.py",
            "plot.py", "report.py", "runs/checkpoint.py", "runs/training.py",
            "seeds.py", "train.py"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_goes_through_the_one_wrapper(command):
    assert "run_command" in main_calls(ROOT / command)


@pytest.mark.parametrize("error", [FlmnError("a  problem\n  here"), DataError("a problem here"),
                                   ConfigError("a problem here")])
def test_a_package_error_is_one_line_and_exit_2(error, capsys):
    def fail():
        raise error
    assert run_command("prog", fail) == 2
    assert capsys.readouterr().err == "prog: error: a problem here\n"


def test_os_and_memory_errors_are_one_line_and_exit_2(capsys):
    def full_disk():
        raise OSError(errno.ENOSPC, "No space left on device", "out/metrics.csv")

    def too_big():
        raise MemoryError("Unable to allocate 9 GiB for an array with shape (9,)")
    assert run_command("prog", full_disk) == 2
    assert capsys.readouterr().err == ("prog: error: out/metrics.csv: No space left on device "
                                       "(the disk is full)\n")
    assert run_command("prog", too_big) == 2
    assert capsys.readouterr().err.startswith("prog: error: out of memory (Unable to allocate")


def test_other_exceptions_are_not_swallowed():
    def bug():
        raise ZeroDivisionError("a bug")
    with pytest.raises(ZeroDivisionError):
        run_command("prog", bug)


def test_ctrl_c_is_130_and_the_handlers_come_back(capsys):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    seen = []

    def interrupted(a, b=2):
        seen.append((a, b, signal.getsignal(signal.SIGINT)))
        raise KeyboardInterrupt
    assert run_command("prog", interrupted, 1) == 130
    assert seen == [(1, 2, signal.default_int_handler)]
    assert capsys.readouterr().err == "prog: interrupted\n"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_the_return_value_is_the_exit_code():
    assert run_command("prog", lambda: 0) == 0
    assert run_command("prog", lambda n: n, 1) == 1


def test_the_flag_types():
    assert int_at_least(1)("3") == 3 and int_at_least(0)("0") == 0
    with pytest.raises(argparse.ArgumentTypeError, match="must be an integer >= 1, got 0"):
        int_at_least(1)("0")
    with pytest.raises(ValueError):
        int_at_least(1)("x")
    assert float_in(0.0, 1.0)("1") == 1.0
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be a number in \[0.0, 1.0\]"):
        float_in(0.0, 1.0)("1.5")
    with pytest.raises(argparse.ArgumentTypeError, match="must be a finite number > 0"):
        float_in(0.0, float("inf"), low_open=True)("0")
    with pytest.raises(argparse.ArgumentTypeError):
        float_in(0.0, float("inf"))("nan")

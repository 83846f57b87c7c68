"""Damaged files, full disks, diverging runs and interrupts: one line each, nothing half-written,
the last good checkpoint kept."""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from run_helpers import (REPO, STEPS, assert_clean_error, fail_on, kill_hard, one_line_error,
                         params_of, run_cli, start_paused, start_paused_in_write, tiny_flags,
                         tiny_run, train_in_process)  # noqa: F401

from flmn_np import bench, gpucheck, gradcheck
from flmn_np.data import cli as data_cli
from flmn_np.evaluate import main as evaluate_main
from flmn_np.memviz import main as memviz_main
from flmn_np.plot import main as plot_main
from flmn_np.report import main as report_main
from flmn_np.seeds import main as seeds_main
from flmn_np.runs import checkpoint as checkpoint_module, rundir
from flmn_np.runs.checkpoint import load_checkpoint, save_checkpoint
from flmn_np.runs.metrics import csv_columns, read_metrics





def commands(run_dir, data_dir, tmp_path):
    """resume, evaluate and memviz on `run_dir`, each as (name, () -> exit code)."""
    return [
        ("resume", lambda: train_in_process(["--out", str(run_dir), "--resume", "--steps", "8"])),
        ("evaluate", lambda: evaluate_main([str(run_dir), "--episodes", "2", "--backend", "numpy",
                                            "--data-dir", str(data_dir)])),
        ("memviz", lambda: memviz_main([str(run_dir), "--out", str(tmp_path / "m.png"),
                                        "--data-dir", str(data_dir)])),
    ]


def rewrite_checkpoint(path, **change):
    """Rewrite an npz checkpoint with entries replaced (value None: removed)."""
    with np.load(path, allow_pickle=False) as z:
        entries = {k: z[k] for k in z.files}
    for k, v in change.items():
        if v is None:
            entries = {e: a for e, a in entries.items() if not e.startswith(k)}
        else:
            entries[k] = v
    np.savez(path, **entries)


def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p):
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


DAMAGE = {
    "truncated": (_truncate, "damaged"),
    "empty": (lambda p: p.write_bytes(b""), "not an npz file"),
    "bit-flipped": (_flip, "damaged"),
    "random bytes": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
                     "not an npz file"),
    "negative step": (lambda p: rewrite_checkpoint(p, step=np.asarray(-3)), "step -3"),
    "nan parameters": (lambda p: rewrite_checkpoint(
        p, **{"param/b_out": np.full_like(load_checkpoint(p).params["b_out"], np.nan)}),
        "non-finite"),
    "pickled": (lambda p: rewrite_checkpoint(p, **{"param/b_out": np.array([{}], dtype=object)}),
                "damaged"),
    "integer parameters": (lambda p: rewrite_checkpoint(
        p, **{"param/b_out": load_checkpoint(p).params["b_out"].astype(np.int64)}),
        "not floating point"),
    "a broken link": (lambda p: (p.unlink(), p.symlink_to(p.parent / "gone.npz")), "not a file"),
    "a folder": (lambda p: (p.unlink(), p.mkdir()), "not a file"),
    "a step past the run's end": (lambda p: rewrite_checkpoint(p, step=np.asarray(10**15)),
                                  "past the"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_checkpoint_is_one_line_everywhere(damage, tiny_run, data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    spoil, fragment = DAMAGE[damage]
    spoil(run / "checkpoint.npz")
    for name, command in commands(run, data_dir, tmp_path):
        line = one_line_error(capsys, command(), "checkpoint.npz", fragment)
        assert "pickled" not in line or damage == "pickled", (name, line)


def test_checkpoint_without_optimizer_state_is_refused_by_resume(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    rewrite_checkpoint(run / "checkpoint.npz", **{"opt/": None})
    code = train_in_process(["--out", str(run), "--resume", "--steps", "8"])
    one_line_error(capsys, code, "optimizer state", "parameters only")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"config": {"hidden": "big"}, '
                                     '"split": {"test_ids": [1]}}'])
def test_broken_config_json_is_one_line_everywhere(content, tiny_run, data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "config.json").write_text(content)
    for name, command in commands(run, data_dir, tmp_path):
        one_line_error(capsys, command(), "config.json", "damaged")
    one_line_error(capsys, plot_main([str(run), "--out", str(tmp_path / "p.png")]),
                   "config.json", "damaged")


def test_evaluate_refuses_a_checkpoint_of_another_run(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ckpt = load_checkpoint(run / "checkpoint.npz")
    save_checkpoint(run / "checkpoint.npz", ckpt.params, ckpt.opt_state, ckpt.step,
                    {**ckpt.config, "gamma": 0.5})
    code = evaluate_main([str(run), "--episodes", "2", "--backend", "numpy"])
    one_line_error(capsys, code, "from another run", "--gamma 0.5 (asked: 0.95)")


# ---------------------------------------------------------------- non-finite values

def test_a_diverging_run_saves_nothing_non_finite(data_dir, tmp_path):
    out = tmp_path / "inf"
    flags = {"--lr": 1e39, "--val-classes": 10, "--eval-every": 1}
    proc = run_cli(["train.py", *tiny_flags(data_dir, out, **flags)])
    assert_clean_error(proc, "not finite", "no checkpoint was written yet")
    assert "last good" not in proc.stderr
    assert not (out / "best.npz").exists() and not (out / "checkpoint.npz").exists()


def test_save_checkpoint_refuses_non_finite_values(tmp_path):
    with pytest.raises(checkpoint_module.CheckpointError, match="non-finite"):
        save_checkpoint(tmp_path / "c.npz", {"w": np.array([1.0, np.inf])}, {}, 1, {})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("lr", ["inf", "nan", "0", "-1e-3"])
def test_lr_must_be_finite_and_positive(lr):
    proc = run_cli(["train.py", "--lr", lr])
    assert proc.returncode == 2 and "--lr" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- OS errors




def test_disk_full_at_the_last_checkpoint_keeps_the_previous_one(tiny_run, data_dir, tmp_path,
                                                                 monkeypatch, capsys):
    out = tmp_path / "full"
    fail_on(monkeypatch, checkpoint_module, "checkpoint.npz", call=3)    # steps 2, 4 saved; 6 not
    code = train_in_process(tiny_flags(data_dir, out))
    one_line_error(capsys, code, "No space left", "the disk is full",
                   "last good checkpoint (step 4)")
    assert load_checkpoint(out / "checkpoint.npz").step == 4
    assert not (out / "eval_omniglot.json").exists()       # never a step past its checkpoint
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert train_in_process(["--out", str(out), "--resume"]) == 0
    ours, ref = params_of(out), params_of(tiny_run)
    for k in ref:
        np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)


EARLY = {"--val-classes": 10, "--val-episodes": 2, "--patience": 1}   # stops early at step 4


@pytest.fixture(scope="module")
def early_run(tmp_path_factory, data_dir):
    """A tiny run that --patience stops early, trained without a fault."""
    out = tmp_path_factory.mktemp("runs") / "early"
    assert train_in_process(tiny_flags(data_dir, out, **EARLY)) == 0
    assert load_checkpoint(out / "checkpoint.npz").step == 4
    return out


def end_state(run_dir):
    """What a finished run must have whether or not it was stopped on the way: its eval files
    (without the run's folder), the CSV logs without wall time, best.json."""
    state = {name: (run_dir / name).read_text() for name in ("validation.csv", "best.json")}
    for name in ("eval_omniglot.json", "eval_omniglot_best.json"):
        state[name] = {**json.loads((run_dir / name).read_text()), "run_dir": None}
    state["metrics.csv"] = [{k: v for k, v in row.items() if k != "wall_time"}
                            for row in read_metrics(run_dir / "metrics.csv")]
    return state


@pytest.mark.parametrize("module, name, call, kept", [
    (checkpoint_module, "checkpoint.npz", 2, 2),     # at step 4, the early stop
    (rundir, "eval_omniglot.json", 1, 4),            # after the last checkpoint
    (rundir, "eval_omniglot_best.json", 1, 4)])      # at the very end
def test_disk_full_resumes_exactly_to_the_uninterrupted_end(module, name, call, kept, early_run,
                                                            data_dir, tmp_path, monkeypatch,
                                                            capsys):
    """A run stopped early by --patience: a full disk at its last writes said nothing of what to
    type, and --resume trained on past the early stop (other parameters, other metrics rows)."""
    out = tmp_path / "full"
    fail_on(monkeypatch, module, name, call)
    code = train_in_process(tiny_flags(data_dir, out, **EARLY))
    line = one_line_error(capsys, code, "the disk is full")
    assert load_checkpoint(out / "checkpoint.npz").step == kept
    evals = [json.loads(p.read_text())["checkpoint_step"] for p in out.glob("eval_*.json")]
    assert evals in ([], [kept]) and not (out / "eval_omniglot_best.json").exists()
    monkeypatch.undo()
    assert train_in_process(["--out", str(out), "--resume"]) == 0
    ours, ref = params_of(out), params_of(early_run)
    assert ours.keys() == ref.keys() and all(np.array_equal(ours[k], ref[k]) for k in ref)
    assert end_state(out) == end_state(early_run)
    assert json.loads((out / "eval_omniglot.json").read_text())["checkpoint_step"] == 4
    capsys.readouterr()
    assert train_in_process(["--out", str(out), "--resume"]) == 0
    assert "already trained to step 4; pass a larger --patience" in capsys.readouterr().out
    assert all(np.array_equal(params_of(out)[k], ref[k]) for k in ref)
    assert f"last good checkpoint (step {kept})" in line, line     # what happened, what to type
    assert f"python train.py --out {out} --resume" in line, line


def test_disk_full_before_config_json_leaves_nothing(data_dir, tmp_path, monkeypatch, capsys):
    fail_on(monkeypatch, rundir, "config.json", call=1)
    code = train_in_process(tiny_flags(data_dir, tmp_path / "new" / "run"))
    one_line_error(capsys, code, "No space left")
    assert not (tmp_path / "new").exists()


def test_evaluate_into_a_missing_folder_is_one_line(tiny_run, data_dir, tmp_path, capsys):
    code = evaluate_main([str(tiny_run), "--episodes", "2", "--backend", "numpy",
                          "--json", str(tmp_path / "no" / "such" / "e.json")])
    one_line_error(capsys, code, "No such file or directory")


# ---------------------------------------------------------------- interrupted and cut short

def test_a_row_cut_mid_line_is_dropped_with_a_warning(tiny_run, data_dir, tmp_path, capsys):
    out = tmp_path / "cut"
    kill_hard(start_paused(tiny_flags(data_dir, out), step=5))
    with open(out / "metrics.csv", "a") as f:
        f.write("6,12,1.6")                                    # what a crash mid-row leaves
    assert plot_main([str(out), "--out", str(tmp_path / "p.png")]) == 0
    assert "cut short" in capsys.readouterr().err
    for _ in range(2):                                          # and every later resume works
        assert train_in_process(["--out", str(out), "--resume"]) == 0
    assert "cut short" in capsys.readouterr().err
    rows, ref = read_metrics(out / "metrics.csv"), read_metrics(tiny_run / "metrics.csv")
    for name in csv_columns(10)[:-1]:
        assert [r[name] for r in rows] == [r[name] for r in ref], name


def test_ctrl_c_during_evaluate_exits_130_without_a_traceback(tiny_run, data_dir):
    proc = subprocess.Popen([sys.executable, "-m", "flmn_np.evaluate", str(tiny_run),
                             "--episodes", "1000000", "--backend", "numpy", "--json",
                             str(tiny_run / "never.json"), "--data-dir", str(data_dir)],
                            cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith("evaluating")
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:   # a Ctrl-C that lands before the loop may be lost: again
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (tiny_run / "never.json").exists()


def _ctrl_c_as_in_a_terminal():
    """SIGINT at its default, as a command typed at a terminal gets it, whatever the test runner
    inherited (under `pytest &` it is ignored, which the package leaves as it is)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("argv,handled", [(["-m", "flmn_np.evaluate", "run"], True),
                                           (["-c", "import flmn_np"], False),
                                           (["-m", "mypackage.main"], False)])
def test_ctrl_c_while_a_command_loads_is_one_line(argv, handled):
    """`python -m flmn_np.<command>`: a Ctrl-C between the package's import and the command's
    own handler ends with one line and 130. Importing flmn_np anywhere else leaves SIGINT alone.
    (The SIGINT is sent right after the package's import, standing in for one during the
    command's imports; a Ctrl-C in Python's own start-up, before that, is Python's.)"""
    code = (f"import os, signal, sys, time; sys.orig_argv = [sys.executable, *{argv!r}]; "
            "import flmn_np; os.kill(os.getpid(), signal.SIGINT); time.sleep(10)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, text=True, capture_output=True,
                          timeout=60, preexec_fn=_ctrl_c_as_in_a_terminal)
    if handled:
        assert proc.returncode == 130 and proc.stderr == "evaluate: interrupted\n", proc.stderr
    else:
        assert proc.returncode != 130 and "KeyboardInterrupt" in proc.stderr


def test_ctrl_c_while_train_py_loads_is_one_line():
    """train.py, interrupted while it imports the training code: one line and 130, the same
    handler as `python -m flmn_np.<command>` (the SIGINT is sent as the import starts)."""
    code = ("import builtins, os, runpy, signal, sys, time\n"
            "real_import = builtins.__import__\n"
            "def slow_import(name, *args, **kwargs):\n"
            "    if name == 'flmn_np.runs.training':\n"
            "        os.kill(os.getpid(), signal.SIGINT); time.sleep(10)\n"
            "    return real_import(name, *args, **kwargs)\n"
            "builtins.__import__ = slow_import\n"
            "sys.argv = ['train.py']; runpy.run_path('train.py', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, text=True, capture_output=True,
                          timeout=60, preexec_fn=_ctrl_c_as_in_a_terminal)
    assert proc.returncode == 130 and proc.stderr == "train.py: interrupted\n", proc.stderr


def test_a_stripped_checkpoint_evaluates_but_does_not_resume(tmp_path, data_dir):
    """Publishing a finished run: parameters only, evaluated as before, --resume refused in a line."""
    out = tmp_path / "run"
    assert train_in_process(tiny_flags(data_dir, out)) == 0
    before = load_checkpoint(out / "checkpoint.npz")
    size = (out / "checkpoint.npz").stat().st_size
    assert checkpoint_module.main(["strip", str(out / "checkpoint.npz")]) == 0
    after = load_checkpoint(out / "checkpoint.npz")
    assert after.opt_state == {} and after.step == before.step
    assert all(np.array_equal(after.params[k], before.params[k]) for k in before.params)
    assert (out / "checkpoint.npz").stat().st_size < size / 2
    assert evaluate_main([str(out), "--episodes", "4", "--data-dir", str(data_dir)]) == 0
    r = subprocess.run([sys.executable, "train.py", *tiny_flags(data_dir, out), "--resume",
                        "--steps", "8"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "parameters only" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------- found by the fault probe

def test_a_size_too_large_for_memory_is_one_line_and_leaves_nothing(data_dir, tmp_path, capsys):
    out = tmp_path / "huge"
    code = train_in_process(tiny_flags(data_dir, out, **{"--hidden": 100_000_000}))
    one_line_error(capsys, code, "out of memory", "--hidden")
    assert not out.exists()


def test_test_ids_that_are_not_the_runs_split_are_refused(tiny_run, data_dir, tmp_path, capsys):
    """Negative ids would silently evaluate other classes, ids past the end gave an IndexError."""
    for ids in ([-1] * 414, [99_999] * 414):
        run = tmp_path / f"run{ids[0]}"
        shutil.copytree(tiny_run, run)
        record = json.loads((run / "config.json").read_text())
        record["split"]["test_ids"] = ids
        (run / "config.json").write_text(json.dumps(record))
        for name, command in commands(run, data_dir, tmp_path):
            one_line_error(capsys, command(), "config.json", "test_ids")


@pytest.mark.parametrize("name", ["metrics.csv", "validation.csv"])
@pytest.mark.parametrize("content", [b"step,loss\n1,nan2000\n", b"\xbd\xff\x00garbage\n", b""])
def test_a_csv_log_with_garbage_is_one_line(name, content, data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_in_process(tiny_flags(data_dir, run, **{"--val-classes": 10,
                                                         "--val-episodes": 2})) == 0
    (run / name).write_bytes(content)
    one_line_error(capsys, plot_main([str(run), "--out", str(tmp_path / "p.png")]), name)
    one_line_error(capsys, train_in_process(["--out", str(run), "--resume", "--steps", "8"]), name)
    one_line_error(capsys, seeds_main([str(run), "--csv", str(tmp_path / "s.csv"),
                                       "--md", str(tmp_path / "s.md")]), name)


@pytest.mark.parametrize("content", ["", "{x", "[1]", '{"checkpoint_step": 6, "episodes": 4}',
                                     '{"checkpoint_step": "six", "episodes": 4, "accuracy": '
                                     '{"1": 0.5, "2": 0.5, "3": 0.5, "4": 0.5, "5": 0.5, '
                                     '"10": 0.5}}'])
def test_damaged_eval_json_is_one_line_in_report_and_seeds(content, tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "eval_omniglot.json").write_text(content)
    one_line_error(capsys, report_main([str(run)]), "damaged")
    one_line_error(capsys, seeds_main([str(run), "--csv", str(tmp_path / "s.csv"),
                                       "--md", str(tmp_path / "s.md")]), "eval_omniglot.json")


def test_seeds_into_a_missing_folder_is_one_line(tiny_run, tmp_path, capsys):
    code = seeds_main([str(tiny_run), "--csv", str(tmp_path / "no" / "s.csv"),
                       "--md", str(tmp_path / "s.md")])
    one_line_error(capsys, code, "No such file")


def test_an_image_format_matplotlib_cannot_write_is_one_line(tiny_run, data_dir, tmp_path, capsys):
    one_line_error(capsys, plot_main([str(tiny_run), "--out", str(tmp_path / "c.xyz")]), ".xyz")
    code = memviz_main([str(tiny_run), "--out", str(tmp_path / "m.xyz"), "--data-dir",
                        str(data_dir)])
    one_line_error(capsys, code, ".xyz")
    assert not list(tmp_path.iterdir())


def test_memviz_refuses_a_negative_seed(tiny_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        memviz_main([str(tiny_run), "--out", str(tmp_path / "m.png"), "--seed", "-1"])
    assert e.value.code == 2 and "--seed" in capsys.readouterr().err


@pytest.mark.parametrize("command, argv, flag", [
    (bench.main, ["--batch-size", "0"], "--batch-size"),      # was a ZeroDivisionError
    (bench.main, ["--repeats", "0"], "--repeats"),
    (bench.main, ["--warmup", "-1"], "--warmup"),
    (bench.main, ["--reads", "0"], "--reads"),
    (gradcheck.main, ["--slots", "0"], "--slots"),
    (gradcheck.main, ["--tol", "nan"], "--tol"),
    (gradcheck.main, ["--seed", "-2"], "--seed"),
    (gpucheck.main, ["--steps", "0"], "--steps"),
    (gpucheck.main, ["--repeats", "-1"], "--repeats"),
    (evaluate_main, ["run", "--episodes", "0"], "--episodes"),
    (data_cli.main, ["show", "--out", "e.png", "--classes", "0"], "--classes"),
    (data_cli.main, ["show", "--out", "e.png", "--seed", "x"], "--seed"),
])
def test_every_commands_numeric_flags_are_checked(command, argv, flag, capsys):
    """A number out of range ends as train.py's do: one line naming the flag, exit status 2."""
    with pytest.raises(SystemExit) as e:
        command(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert f"error: argument {flag}" in err.splitlines()[-1]


def test_the_benchmark_scripts_answer_help_and_a_missing_torch_in_one_line():
    proc = run_cli(["benchmarks/op_floor.py", "--help"])
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python benchmarks/op_floor.py")
    if importlib.util.find_spec("torch") is None:
        assert_clean_error(run_cli(["benchmarks/torch_flmn.py"]), "needs PyTorch")


def test_ctrl_c_reaches_evaluate_started_as_a_background_job(tiny_run, data_dir):
    """`cmd &` in a script starts cmd with SIGINT ignored; Python then raised no KeyboardInterrupt
    and every Ctrl-C (kill -INT) to evaluate was lost, while train.py honoured it."""
    proc = subprocess.Popen([sys.executable, "-m", "flmn_np.evaluate", str(tiny_run),
                             "--episodes", "1000000", "--backend", "numpy", "--json",
                             str(tiny_run / "never.json"), "--data-dir", str(data_dir)],
                            cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert proc.stdout.readline().startswith("evaluating")
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err


def test_resume_writes_the_end_files_a_kill_during_the_final_evaluation_left_out(data_dir,
                                                                                tmp_path):
    """kill -9 after the last checkpoint, while best.npz was being evaluated: --resume said
    'already trained' and eval_omniglot_best.json was never written."""
    out = tmp_path / "run"
    assert train_in_process(tiny_flags(data_dir, out, **{"--val-classes": 10,
                                                         "--val-episodes": 2})) == 0
    best = (out / "eval_omniglot_best.json").read_text()
    (out / "eval_omniglot_best.json").unlink()
    (out / "curves.png").unlink()
    proc = run_cli(["train.py", "--out", str(out), "--resume"])
    assert proc.returncode == 0 and "left out" in proc.stdout, proc.stderr
    assert (out / "eval_omniglot_best.json").read_text() == best and (out / "curves.png").is_file()
    proc = run_cli(["train.py", "--out", str(out), "--resume"])
    assert proc.returncode == 0 and "already trained" in proc.stdout


# ---------------------------------------------------------------- a resumed run keeps its dtype

def test_resume_casts_a_parameter_saved_as_float64_and_says_so(tiny_run, data_dir, tmp_path,
                                                               capsys):
    """A checkpoint whose W_out (and its Adam moment) was saved as float64 in a float32 run: the
    resume trained on in mixed precision and wrote float64 back. It casts, as --init-from does,
    says so in one line, and ends bit for bit as the uninterrupted run."""
    out = tmp_path / "run"
    assert train_in_process(tiny_flags(data_dir, out, **{"--steps": 4})) == 0
    ckpt = load_checkpoint(out / "checkpoint.npz")
    rewrite_checkpoint(out / "checkpoint.npz",
                       **{"param/W_out": ckpt.params["W_out"].astype(np.float64),
                          "opt/m/W_out": ckpt.opt_state["m/W_out"].astype(np.float64)})
    capsys.readouterr()
    assert train_in_process(["--out", str(out), "--resume", "--steps", str(STEPS)]) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "cast to" in line]
    assert said == [f"{out / 'checkpoint.npz'}: W_out (float64), m/W_out (float64) cast to "
                    f"float32, the dtype this run trains in"], said
    done = load_checkpoint(out / "checkpoint.npz")
    assert {v.dtype for v in (*done.params.values(), *done.opt_state.values())
            if v.dtype.kind == "f"} == {np.dtype(np.float32)}
    ref = params_of(tiny_run)
    for k in ref:
        np.testing.assert_array_equal(done.params[k], ref[k], err_msg=k)


# ---------------------------------------------------------------- strip: no path of one machine

def machine_paths_in(run_dir, *paths):
    """{file name: the paths of `paths` it holds} for every file of RUN_DIR holding one: in its
    bytes, or in a text entry of an npz (a checkpoint's config, stored as UTF-32)."""
    found = {}
    for f in sorted(run_dir.iterdir()):
        text = f.read_bytes()
        if f.suffix == ".npz":
            with np.load(f, allow_pickle=False) as z:
                text += "".join(str(z[k]) for k in z.files if z[k].dtype.kind == "U").encode()
        held = [p for p in paths if str(p).encode() in text]
        if held:
            found[f.name] = held
    return found


def test_strip_leaves_no_path_of_this_machine_in_the_run(data_dir, tmp_path):
    """A run trained with an absolute --out, --data-dir and --init-from: strip left the --out
    path in config.json, in the checkpoints' recorded config and in eval_omniglot.json. Now no
    file holds one, and evaluate still reads checkpoint.npz and best.npz."""
    val = {"--val-classes": 10, "--val-episodes": 2}
    src, out = tmp_path / "first", tmp_path / "published"
    assert train_in_process(tiny_flags(data_dir, src, **val)) == 0
    assert train_in_process(tiny_flags(data_dir, out, **{"--init-from": src / "best.npz"},
                                       **val)) == 0
    paths = (tmp_path, data_dir, data_dir.resolve())
    assert set(machine_paths_in(out, *paths)) >= {"config.json", "checkpoint.npz", "best.npz",
                                                  "eval_omniglot.json"}
    proc = run_cli(["-m", "flmn_np.runs.checkpoint", "strip", str(out / "checkpoint.npz")])
    assert proc.returncode == 0 and "parameters only" in proc.stdout, proc.stderr
    assert machine_paths_in(out, *paths) == {}
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["out"], config["init_from"]) == ("published", "best.npz")
    assert load_checkpoint(out / "checkpoint.npz").opt_state == {}
    assert load_checkpoint(out / "best.npz").opt_state != {}          # only its paths changed
    for best in ([], ["--best"]):
        assert evaluate_main([str(out), "--episodes", "2", "--backend", "numpy",
                              "--data-dir", str(data_dir), "--json",
                              str(tmp_path / "e.json"), *best]) == 0


def test_strip_of_a_run_with_a_damaged_file_changes_nothing(tiny_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    (out / "eval_omniglot.json").write_text("{cut short")
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    code = checkpoint_module.main(["strip", str(out / "checkpoint.npz")])
    one_line_error(capsys, code, "eval_omniglot.json is damaged")
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before


# ---------------------------------------------------------------- what a kill -9 mid-write leaves

def temporary_files(run_dir):
    return sorted(p.name for p in run_dir.iterdir() if p.name.endswith(".tmp"))


def test_resume_removes_the_temporary_file_a_kill_during_a_checkpoint_left(tiny_run, data_dir,
                                                                           tmp_path):
    """kill -9 halfway through the checkpoint of step 4: its temporary file stayed forever.
    --resume removes it, says so, and ends bit for bit as the uninterrupted run."""
    out = tmp_path / "run"
    kill_hard(start_paused_in_write(tiny_flags(data_dir, out), "checkpoint.npz", call=2))
    left = temporary_files(out)
    assert len(left) == 1 and left[0].startswith(".checkpoint.npz."), left
    assert load_checkpoint(out / "checkpoint.npz").step == 2
    proc = run_cli(["train.py", "--out", str(out), "--resume"])
    assert proc.returncode == 0, proc.stderr
    assert f"{out}: removed what a killed write left: {left[0]}" in proc.stdout
    assert temporary_files(out) == []
    ours, ref = params_of(out), params_of(tiny_run)
    assert ours.keys() == ref.keys() and all(np.array_equal(ours[k], ref[k]) for k in ref)


def test_a_fresh_run_where_a_kill_cut_the_first_write_starts_again(tiny_run, data_dir,
                                                                   tmp_path):
    """kill -9 while a fresh run wrote config.json: the folder held the lock and a temporary file,
    and the same command again was refused (a folder with other files in it)."""
    out = tmp_path / "run"
    kill_hard(start_paused_in_write(tiny_flags(data_dir, out), "config.json"))
    assert len(temporary_files(out)) == 1
    assert sorted(p.name for p in out.iterdir()) == sorted([".lock", *temporary_files(out)])
    refused = run_cli(["train.py", "--out", str(out), "--resume"])      # there is no run yet
    assert_clean_error(refused, "holds no run")
    assert len(temporary_files(out)) == 1                               # a refusal changes nothing
    proc = run_cli(["train.py", *tiny_flags(data_dir, out)])
    assert proc.returncode == 0, proc.stderr
    assert temporary_files(out) == []
    ours, ref = params_of(out), params_of(tiny_run)
    assert all(np.array_equal(ours[k], ref[k]) for k in ref)


def test_a_write_in_progress_is_not_taken_for_a_killed_one(tmp_path):
    """The temporary file of a writer still running (evaluate writing into the run, say) stays."""
    live = tmp_path / f".eval_omniglot.json.{os.getpid()}.tmp"
    live.write_text("{")
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    dead = tmp_path / f".checkpoint.npz.{int(done.stdout)}.tmp"
    dead.write_text("half")
    (tmp_path / "notes.tmp").write_text("mine")
    assert rundir.stale_temporary_files(tmp_path) == [dead]


def test_an_error_names_the_file_not_its_temporary_file(tiny_run, data_dir, tmp_path):
    """evaluate --json FOLDER (a folder given for a file): the error named the temporary file
    .FOLDER.PID.tmp -> FOLDER. It names FOLDER, and nothing is left beside it."""
    folder = tmp_path / "evals"
    folder.mkdir()
    proc = run_cli(["-m", "flmn_np.evaluate", str(tiny_run), "--episodes", "2", "--backend",
                    "numpy", "--data-dir", str(data_dir), "--json", str(folder)])
    assert_clean_error(proc, f"{folder}: Is a directory")
    assert ".tmp" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evals"]


def test_a_deep_out_whose_temporary_names_are_too_long_is_one_line_naming_the_file(data_dir,
                                                                                   tmp_path):
    """An --out so deep that config.json fits in the system's path limit (4095) but its
    temporary file .config.json.PID.tmp does not: the error named the temporary file."""
    out = tmp_path
    while len(str(out)) < 4080 - 256:
        out = out / ("d" * 200)
    out = out / ("d" * (4080 - len(str(out)) - 1))          # a last part of 55 to 255 characters
    assert len(str(out)) == 4080
    proc = run_cli(["train.py", *tiny_flags(data_dir, out)])
    assert_clean_error(proc, f"{out / 'config.json'}: File name too long", "a shorter name")
    assert ".tmp" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert list(tmp_path.iterdir()) == []                                # a failed start

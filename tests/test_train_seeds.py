"""train.py --seeds: several seeds' models trained as one stack in one process (runs/stack.py),
each into its own run directory OUT/seed-N that equals the run its seed trains alone, bit for
bit on NumPy (each model of a stack computes what it computes alone: tests/test_stack.py).
"""
import json
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from run_helpers import (REPO, fail_on, kill_hard, one_line_error, run_cli, start_paused,
                         tiny_flags, train_in_process)

from flmn_np import evaluate
from flmn_np.runs import checkpoint as checkpoint_module
from flmn_np.runs.checkpoint import load_checkpoint
from flmn_np.runs.config import ConfigError, parse_command_line, parse_seeds
from flmn_np.runs.metrics import csv_columns, read_metrics
from flmn_np.runs import stack as stack_module

VAL = {"--val-classes": 10, "--val-episodes": 5}


def assert_same_run(member, alone):
    """Every file the two runs wrote says the same, but for where the run is (its --out) and
    the wall time: parameters and optimizer state, metrics.csv, validation.csv, best.npz, the
    evaluation files."""
    for name in ("checkpoint.npz", "best.npz"):
        if not (alone / name).exists():
            assert not (member / name).exists()
            continue
        a, b = np.load(member / name), np.load(alone / name)
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            if k != "config":
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{member}/{name}: {k}")
    rows, ref = read_metrics(member / "metrics.csv"), read_metrics(alone / "metrics.csv")
    assert [r["step"] for r in rows] == [r["step"] for r in ref]
    for name in csv_columns(10)[:-1]:                                    # all but wall_time
        assert [r[name] for r in rows] == [r[name] for r in ref], name
    for name in ("validation.csv", "best.json"):
        assert (member / name).exists() == (alone / name).exists()
        if (alone / name).exists():
            assert (member / name).read_text() == (alone / name).read_text(), name
    for name in ("eval_omniglot.json", "eval_omniglot_best.json"):
        assert (member / name).exists() == (alone / name).exists(), name
        if (alone / name).exists():
            a, b = (json.loads((d / name).read_text()) for d in (member, alone))
            assert {k for k in a if a[k] != b[k]} == {"run_dir"}, name


def train_alone(data_dir, tmp_path, seeds, **flags):
    """Each seed trained alone (train.py --seed N) -> {seed: run directory}."""
    alone = {}
    for seed in seeds:
        alone[seed] = tmp_path / f"alone-{seed}"
        assert train_in_process(tiny_flags(data_dir, alone[seed], **{"--seed": seed},
                                           **flags)) == 0
    return alone


# ---------------------------------------------------------------- the flag

@pytest.mark.parametrize("text, seeds", [("1,2,3", (1, 2, 3)), ("1-5", (1, 2, 3, 4, 5)),
                                         ("0-2, 7", (0, 1, 2, 7)), ("4", (4,))])
def test_seeds_name_lists_and_ranges(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("argv, fragment", [
    (["--seeds", ""], "each item must be"), (["--seeds", "1,,2"], "each item must be"),
    (["--seeds", "a-c"], "each item must be"), (["--seeds", "1.5"], "each item must be"),
    (["--seeds", "3-1"], "A <= B"), (["--seeds", "-1"], "non-negative"),
    (["--seeds", "1,2,1"], "names seed 1 twice"), (["--seeds", "1-3,2"], "names seed 2 twice"),
    (["--seeds", "0-998,998"], "names seed 998 twice"),
    (["--seeds", "0-1000"], "names 1001 seeds; one process trains at most 1000"),
    (["--seeds", "1,2", "--seed", "3"], "--seeds and --seed together")])
def test_bad_seeds_are_one_line(argv, fragment, capsys):
    with pytest.raises(ConfigError, match=fragment):
        parse_command_line(argv)
    assert train_in_process(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("train.py: ") and err.count("\n") == 1 and fragment in err, err


@pytest.mark.parametrize("text, count", [("0-99999", 100000), ("0-9,10-99999", 100000),
                                         ("0-999999999999999999", 10 ** 18)])
def test_a_slip_in_seeds_is_answered_at_once(text, count, tmp_path):
    """--seeds 0-99999 (for 0-9) printed nothing for over a minute (a quadratic check for a seed
    given twice); a range is now counted before it is expanded."""
    out = tmp_path / "stack"
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"names {count} seeds"):
        parse_seeds(text)
    assert time.perf_counter() - start < 0.1
    proc = run_cli(["train.py", "--seeds", text, "--out", str(out)], timeout=30)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr == (f"train.py: error: --seeds {text!r} names {count} seeds; one process "
                           f"trains at most 1000 (each holds its run directory open): give "
                           f"fewer\n")
    assert list(tmp_path.iterdir()) == []


def test_seeds_put_each_run_in_a_folder_of_out():
    cfg, given, seeds = parse_command_line(["--seeds", "1-2", "--model", "mann"])
    assert seeds == (1, 2) and cfg.out == "runs/mann-exp1" and "seeds" not in given
    assert str(stack_module.member_dir(cfg.out, 2)) == "runs/mann-exp1/seed-2"


# ---------------------------------------------------------------- equal to training alone

@pytest.mark.parametrize("model", [{"--model": "flmn"}, {"--model": "mann"},
                                   {"--model": "mann", "--reads": 4},
                                   {"--model": "flmn", "--backend": "array_api_strict"}],
                         ids=["flmn", "mann-R1", "mann-R4", "flmn-array-api-strict"])
def test_each_seed_of_a_stack_equals_its_run_alone(model, data_dir, tmp_path):
    """float32 training, as train.py does: every file equal, parameters bit for bit."""
    out = tmp_path / "stack"
    assert train_in_process(tiny_flags(data_dir, out, **{"--seeds": "1,2"}, **model, **VAL)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["seed-1", "seed-2"]
    alone = train_alone(data_dir, tmp_path, (1, 2), **model, **VAL)
    for seed in (1, 2):
        record = json.loads((out / f"seed-{seed}" / "config.json").read_text())
        assert record["seed"] == seed and record["config"]["out"] == str(out / f"seed-{seed}")
        assert_same_run(out / f"seed-{seed}", alone[seed])
    assert not np.array_equal(load_checkpoint(out / "seed-1" / "checkpoint.npz").params["b_out"],
                              load_checkpoint(out / "seed-2" / "checkpoint.npz").params["b_out"])


def test_a_seed_that_stops_early_leaves_the_stack_and_the_others_go_on(data_dir, tmp_path,
                                                                      monkeypatch):
    """--patience per run: the seeds stop at different steps, each as it would alone, and each
    that stops is dropped: the stack is stacked again from the runs left (never frozen in it)."""
    stacked = []
    restack = stack_module.Stack._stack

    def spy(self, params_list, states):
        restack(self, params_list, states)
        stacked.append(tuple(self.seeds))
    monkeypatch.setattr(stack_module.Stack, "_stack", spy)
    flags = {"--steps": 12, "--eval-every": 1, "--patience": 1, **VAL}
    out = tmp_path / "stack"
    assert train_in_process(tiny_flags(data_dir, out, **{"--seeds": "1-3"}, **flags)) == 0
    ends = {s: load_checkpoint(out / f"seed-{s}" / "checkpoint.npz").step for s in (1, 2, 3)}
    assert len(set(ends.values())) > 1 and min(ends.values()) < 12, ends
    left, expected = [1, 2, 3], [(1, 2, 3)]
    for seed in sorted(left, key=lambda s: (ends[s], s)):      # dropped one at a time
        left.remove(seed)
        expected += [tuple(left)] if left else []
    assert stacked == expected, ends
    alone = train_alone(data_dir, tmp_path, (1, 2, 3), **flags)
    for seed in (1, 2, 3):
        assert_same_run(out / f"seed-{seed}", alone[seed])


def test_a_seed_that_diverges_stops_alone(data_dir, tmp_path, monkeypatch, capsys):
    """Seed 2's images turn to NaN from step 3: its loss is not finite at the next log point,
    it stops with its last good checkpoint (step 2) and one line, and seeds 1 and 3 end as
    they do alone; the exit code is 2."""
    draw = stack_module.batch_for_step

    def poisoned(run, step):
        x, y, inst = draw(run, step)
        return (x * np.nan if run.cfg.seed == 2 and step >= 3 else x), y, inst
    monkeypatch.setattr(stack_module, "batch_for_step", poisoned)
    out = tmp_path / "stack"
    assert train_in_process(tiny_flags(data_dir, out, **{"--seeds": "1-3"})) == 2
    said = capsys.readouterr()
    assert f"train.py: the loss is not finite (nan) at step 3; stopped, the last good " \
           f"checkpoint (step 2) is kept in {out / 'seed-2'} (try a smaller --lr or --clip); " \
           f"seeds 1, 3 go on\n" in said.err
    assert said.out.splitlines()[-1] == (
        f"done: {out / 'seed-1'} (step 6), {out / 'seed-3'} (step 6); each with "
        f"eval_omniglot.json, curves.png; stopped on an error (above): {out / 'seed-2'}")
    assert load_checkpoint(out / "seed-2" / "checkpoint.npz").step == 2
    assert not (out / "seed-2" / "eval_omniglot.json").exists()
    monkeypatch.undo()
    alone = train_alone(data_dir, tmp_path, (1, 3))
    for seed in (1, 3):
        assert_same_run(out / f"seed-{seed}", alone[seed])


def test_a_stack_whose_every_seed_diverges_names_no_run_done(data_dir, tmp_path, monkeypatch,
                                                            capsys):
    """Every seed's images turn to NaN from step 3: the last line was 'done: ; each with
    eval_omniglot.json, curves.png' (no run, files that do not exist) and each stop line said
    'the other seeds go on' when none did."""
    draw = stack_module.batch_for_step

    def poisoned(run, step):
        x, y, inst = draw(run, step)
        return (x * np.nan if step >= 3 else x), y, inst
    monkeypatch.setattr(stack_module, "batch_for_step", poisoned)
    out = tmp_path / "stack"
    assert train_in_process(tiny_flags(data_dir, out, **{"--seeds": "1,2"})) == 2
    said = capsys.readouterr()
    stops = [line[line.index("train.py: "):] for line in said.err.splitlines()
             if "train.py: " in line]
    assert stops == [f"train.py: the loss is not finite (nan) at step 3; stopped, the last good "
                     f"checkpoint (step 2) is kept in {out / f'seed-{s}'} (try a smaller --lr or "
                     f"--clip)" for s in (1, 2)], stops
    assert said.out.splitlines()[-1] == (f"stopped: no run ended, every one stopped on an error "
                                         f"(above): {out / 'seed-1'}, {out / 'seed-2'}")
    for seed in (1, 2):
        assert load_checkpoint(out / f"seed-{seed}" / "checkpoint.npz").step == 2
        assert not (out / f"seed-{seed}" / "eval_omniglot.json").exists()
        assert not (out / f"seed-{seed}" / "curves.png").exists()


def test_the_last_line_names_only_the_end_files_a_stack_writes(data_dir, tmp_path, capsys):
    out = tmp_path / "stack"
    assert train_in_process(tiny_flags(data_dir, out, **{"--seeds": "1,2",
                                                         "--final-eval-episodes": 0})) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"done: {out / 'seed-1'} (step 6), {out / 'seed-2'} (step 6); each with curves.png")
    assert not (out / "seed-1" / "eval_omniglot.json").exists()


# ---------------------------------------------------------------- a start that fails

@pytest.mark.parametrize("seeds, flags, open_files, fragment", [
    ("1,2", {"--classes": 415}, None, "--classes 415 is more than the 414 held-out test"),
    ("0-999", {}, 64, "Too many open files")], ids=["classes", "open-files"])
def test_a_fresh_stack_whose_start_fails_leaves_nothing(seeds, flags, open_files, fragment,
                                                        data_dir, tmp_path):
    """A failed start of a fresh stack left an empty OUT: the seed folders were removed in the
    order they were made, so OUT was not yet empty at its turn (and the folder of the seed whose
    lock could not be opened stayed)."""
    out = tmp_path / "new" / "stack"
    limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))) \
        if open_files else None
    proc = subprocess.run([sys.executable, "train.py",
                           *tiny_flags(data_dir, out, **{"--seeds": seeds}, **flags)],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          preexec_fn=limit)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert fragment in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- resume, Ctrl-C, readers

def test_a_killed_stack_resumes_to_the_runs_alone(data_dir, tmp_path):
    out = tmp_path / "stack"
    argv = tiny_flags(data_dir, out, **{"--seeds": "1,2"})
    kill_hard(start_paused(argv, step=5))                   # kill -9 after step 5: checkpoint 4
    assert {load_checkpoint(out / f"seed-{s}" / "checkpoint.npz").step for s in (1, 2)} == {4}
    assert train_in_process(["--seeds", "1,2", "--out", str(out), "--resume"]) == 0
    alone = train_alone(data_dir, tmp_path, (1, 2))
    for seed in (1, 2):
        assert_same_run(out / f"seed-{seed}", alone[seed])


def test_seeds_resumed_at_different_steps_train_one_stack_per_step(data_dir, tmp_path, capsys):
    """Seed 1 resumed alone to step 4, seed 2 left at step 2: the stack's --resume takes each
    from its own step to the end, equal to a run trained straight through."""
    out = tmp_path / "stack"
    assert train_in_process(tiny_flags(data_dir, out, **{"--seeds": "1,2", "--steps": 2})) == 0
    assert train_in_process(["--out", str(out / "seed-1"), "--resume", "--steps", "4"]) == 0
    assert train_in_process(["--seeds", "1,2", "--out", str(out), "--resume",
                             "--steps", "6"]) == 0
    alone = train_alone(data_dir, tmp_path, (1, 2))
    for seed in (1, 2):
        assert load_checkpoint(out / f"seed-{seed}" / "checkpoint.npz").step == 6
        for k, v in load_checkpoint(alone[seed] / "checkpoint.npz").params.items():
            got = load_checkpoint(out / f"seed-{seed}" / "checkpoint.npz").params[k]
            np.testing.assert_array_equal(got, v, err_msg=k)
    assert "already trained" not in capsys.readouterr().out


def test_resuming_a_finished_stack_says_so_for_each_seed(data_dir, tmp_path, capsys):
    out = tmp_path / "stack"
    assert train_in_process(tiny_flags(data_dir, out, **{"--seeds": "1,2"})) == 0
    capsys.readouterr()
    assert train_in_process(["--seeds", "1,2", "--out", str(out), "--resume"]) == 0
    said = capsys.readouterr().out
    assert all(f"{out / f'seed-{s}'} is already trained to step 6" in said for s in (1, 2))


def test_a_stack_whose_seeds_differ_in_a_flag_is_refused(data_dir, tmp_path, capsys):
    out = tmp_path / "stack"
    assert train_in_process(tiny_flags(data_dir, out, **{"--seeds": "1,2", "--steps": 2})) == 0
    assert train_in_process(["--out", str(out / "seed-1"), "--resume", "--steps", "4"]) == 0
    capsys.readouterr()
    assert train_in_process(["--seeds", "1,2", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "differ in --steps 4 / 2" in err and err.count("\n") == 1, err


def test_a_new_stack_into_an_occupied_seed_folder_is_refused_and_leaves_nothing(data_dir,
                                                                               tmp_path):
    out = tmp_path / "stack"
    assert train_in_process(tiny_flags(data_dir, out / "seed-2")) == 0
    proc = run_cli(["train.py", *tiny_flags(data_dir, out, **{"--seeds": "1,2"})])
    assert proc.returncode == 2 and "already holds a run" in proc.stderr, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["seed-2"]      # seed-1 was not left behind


def test_ctrl_c_stops_every_seed_with_a_checkpoint_and_one_resume_command(data_dir, tmp_path):
    out = tmp_path / "stack"
    argv = tiny_flags(data_dir, out, **{"--seeds": "1,2", "--steps": 100_000,
                                        "--eval-episodes": 0})
    proc = subprocess.Popen([sys.executable, "train.py", *argv], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (out / "seed-2" / "checkpoint.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"python train.py --seeds 1,2 --out {out} --resume" in err and "Traceback" not in err
    steps = {load_checkpoint(out / f"seed-{s}" / "checkpoint.npz").step for s in (1, 2)}
    assert len(steps) == 1 and 2 <= steps.pop() < 100_000


def test_each_seed_folder_is_read_as_a_run(data_dir, tmp_path):
    out = tmp_path / "stack"
    assert train_in_process(tiny_flags(data_dir, out, **{"--seeds": "1,2"})) == 0
    assert evaluate.main([str(out / "seed-2"), "--episodes", "4",
                          "--json", str(tmp_path / "eval.json")]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["checkpoint_step"] == 6
    proc = run_cli(["-m", "flmn_np.seeds", str(out / "seed-1"), str(out / "seed-2"),
                    "--csv", str(tmp_path / "seeds.csv"), "--md", str(tmp_path / "seeds.md")])
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "seeds.csv").read_text().count("\n") == 3        # header and 2 seeds


def test_a_full_disk_stops_the_stack_in_one_line_and_it_resumes_to_the_runs_alone(
        data_dir, tmp_path, monkeypatch, capsys):
    """The 3rd checkpoint write (seed 1 at step 4) fails with ENOSPC: one line naming each
    seed's kept checkpoint (seed 1 and 2 at step 2) and the --seeds resume command; once the
    disk has room, --resume ends both runs as they end alone."""
    out = tmp_path / "stack"
    fail_on(monkeypatch, checkpoint_module, "checkpoint.npz", call=3)
    code = train_in_process(tiny_flags(data_dir, out, **{"--seeds": "1,2"}))
    err = one_line_error(capsys, code, "the disk is full")
    for seed in (1, 2):
        assert f"the last good checkpoint (step 2) is kept in {out / f'seed-{seed}'}" in err
        assert load_checkpoint(out / f"seed-{seed}" / "checkpoint.npz").step == 2
    assert f"resume with: python train.py --seeds 1,2 --out {out} --resume" in err
    monkeypatch.undo()
    assert train_in_process(["--seeds", "1,2", "--out", str(out), "--resume"]) == 0
    alone = train_alone(data_dir, tmp_path, (1, 2))
    for seed in (1, 2):
        assert_same_run(out / f"seed-{seed}", alone[seed])

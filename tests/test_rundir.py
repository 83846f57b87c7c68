"""The run directory: one writer, what --out may be, failed starts, takeover, what is recorded."""
import json
import os
import shutil
import signal

import numpy as np
import pytest
from run_helpers import (STEPS, assert_clean_error, kill_hard, params_of, run_cli,
                         start_paused, tiny_flags, tiny_run, train_in_process)  # noqa: F401

from flmn_np.evaluate import main as evaluate_main
from flmn_np.memviz import main as memviz_main
from flmn_np.runs.checkpoint import load_checkpoint, main as checkpoint_main
from flmn_np.runs.metrics import read_metrics
from flmn_np.runs.rundir import LOCK_NAME, keep_rows_until


def assert_same_params(run_dir, ref_dir):
    ours, ref = params_of(run_dir), params_of(ref_dir)
    for k in ref:
        np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)


# ---------------------------------------------------------------- one writer

def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_lock(tiny_run, data_dir, tmp_path):
    out = tmp_path / "shared"
    first = start_paused(tiny_flags(data_dir, out), step=3)
    try:
        resume = run_cli(["train.py", "--out", str(out), "--resume"])
        assert_clean_error(resume, "in use", f"pid {first.pid}")
        other_seed = run_cli(["train.py", *tiny_flags(data_dir, out, **{"--seed": 1})])
        assert_clean_error(other_seed, "in use", f"pid {first.pid}")
        assert len(resume.stderr.strip().splitlines()) == 1
    finally:
        kill_hard(first)
    # the lock died with its process: the run resumes and ends as the uninterrupted one
    assert json.loads((out / "config.json").read_text())["config"]["seed"] == 0
    assert train_in_process(["--out", str(out), "--resume"]) == 0
    assert_same_params(out, tiny_run)
    rows = read_metrics(out / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert not (out / LOCK_NAME).exists()


# ---------------------------------------------------------------- what --out may be

def test_out_must_name_a_new_or_empty_folder(data_dir, tmp_path):
    assert_clean_error(run_cli(["train.py", *tiny_flags(data_dir, "")]), "--out is empty")
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    assert_clean_error(run_cli(["train.py", *tiny_flags(data_dir, a_file)]), "is a file")
    assert a_file.read_text() == "keep me"
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "metrics.csv").write_text("mine\n")
    assert_clean_error(run_cli(["train.py", *tiny_flags(data_dir, notes)]),
                       "other files", "metrics.csv")
    assert sorted(p.name for p in notes.iterdir()) == ["metrics.csv"]
    assert (notes / "metrics.csv").read_text() == "mine\n"


def test_os_errors_on_out_are_one_line(data_dir, tmp_path):
    long_name = tmp_path / ("x" * 300)
    assert_clean_error(run_cli(["train.py", *tiny_flags(data_dir, long_name)]), "too long")
    try:
        os.mkdir("/sys/flmn-np-probe")
    except OSError:      # a folder no one may write into, even root
        proc = run_cli(["train.py", *tiny_flags(data_dir, "/sys/flmn-np-probe/run")])
        assert_clean_error(proc, "/sys/flmn-np-probe")
    else:
        os.rmdir("/sys/flmn-np-probe")
        pytest.skip("/sys is writable here")


@pytest.mark.parametrize("flags, fragments", [
    ({"--classes": 415}, ("--classes 415", "414 held-out test")),
    ({"--classes": 2000}, ("--classes 2000", "1209 training")),
    ({"--samples": 21}, ("--samples 21", "only 20 samples")),
    ({"--val-classes": 3}, ("--classes 5", "3 validation", "--val-classes of at least 5")),
    ({"--val-classes": 1209}, ("--val-classes 1209",)),
])
def test_episode_sizes_are_checked_before_the_first_step(data_dir, tmp_path, flags, fragments):
    out = tmp_path / "new" / "run"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_error(run_cli(["train.py", *tiny_flags(data_dir, out, **flags)]), *fragments)
    assert not (tmp_path / "new").exists()                 # a failed start leaves nothing
    assert_clean_error(run_cli(["train.py", *tiny_flags(data_dir, empty, **flags)]), *fragments)
    assert list(empty.iterdir()) == []


def test_resume_takes_over_a_run_killed_before_its_first_checkpoint(tiny_run, data_dir,
                                                                     tmp_path):
    out = tmp_path / "early"
    kill_hard(start_paused(tiny_flags(data_dir, out, **{"--eval-every": 0}), step=3))
    assert (out / "config.json").is_file() and not (out / "checkpoint.npz").exists()
    assert_clean_error(run_cli(["train.py", *tiny_flags(data_dir, out)]), "already holds a run")
    assert train_in_process(["--out", str(out), "--resume"]) == 0
    assert_same_params(out, tiny_run)      # evaluation never changes what training sees
    assert [int(r["step"]) for r in read_metrics(out / "metrics.csv")] == list(range(1, 7))
    assert json.loads((out / "config.json").read_text())["resumes"][0]["step"] == 0


# ---------------------------------------------------------------- what a run records

def test_config_records_where_the_data_came_from(tiny_run, data_dir):
    """The absolute --data-dir is kept only as data.folder, which strip removes (below)."""
    record = json.loads((tiny_run / "config.json").read_text())
    assert record["config"]["data_dir"] is None
    assert record["data"]["folder"] == str(data_dir.resolve())
    assert record["data"]["chosen_by"] == "--data-dir" and record["data"]["dir"] is None
    assert set(record["data"]["sha256"]) == {"omniglot/images_background.zip",
                                             "omniglot/images_evaluation.zip"}
    assert all(len(h) == 64 for h in record["data"]["sha256"].values())
    ckpt_config = load_checkpoint(tiny_run / "checkpoint.npz").config
    assert ckpt_config["data_dir"] is None


def test_a_relative_data_dir_is_recorded_as_given(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(data_dir.parent)
    out = tmp_path / "relative"
    assert train_in_process(tiny_flags(data_dir.name, out, **{"--steps": 1})) == 0
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["data_dir"] == record["data"]["dir"] == data_dir.name


def test_run_files_follow_the_umask(tiny_run):
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "checkpoint.npz", "metrics.csv", "eval_omniglot.json",
                 "curves.png"):
        assert (tiny_run / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert not list(tiny_run.glob("*.tmp")) and not list(tiny_run.glob(".*.tmp"))


def test_sigterm_saves_a_checkpoint_like_ctrl_c(data_dir, tmp_path):
    out = tmp_path / "terminated"
    proc = start_paused(tiny_flags(data_dir, out, **{"--steps": 1000, "--eval-episodes": 0}),
                        step=3)
    proc.send_signal(signal.SIGTERM)       # arrives while paused after step 3: step 4 saves
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM" in err and "--resume" in err and "Traceback" not in err
    step = load_checkpoint(out / "checkpoint.npz").step
    assert step == 4 == int(read_metrics(out / "metrics.csv")[-1]["step"])
    assert not (out / LOCK_NAME).exists()


# ---------------------------------------------------------------- the CSV logs

def test_keep_rows_until_drops_a_cut_row_and_rows_past_the_step(tmp_path, capsys):
    path = tmp_path / "log.csv"
    path.write_text("step,x\n1,0.1\n2,0.2\n3,0.3\n4,0.")        # the last row cut short
    rows = keep_rows_until(path, ["step", "x"], 2)
    assert [r["step"] for r in rows] == ["1", "2"]
    assert path.read_text() == "step,x\n1,0.1\n2,0.2\n"
    assert "cut short" in capsys.readouterr().err
    assert keep_rows_until(path, ["step", "x"], None) == []
    assert path.read_text() == "step,x\n"


def test_child_helper_really_pauses(data_dir, tmp_path):
    """start_paused holds the child after the asked step: nothing past it is written."""
    out = tmp_path / "paused"
    proc = start_paused(tiny_flags(data_dir, out), step=2)
    try:
        assert [int(r["step"]) for r in read_metrics(out / "metrics.csv")] == [1, 2]
        assert proc.poll() is None
    finally:
        kill_hard(proc)


# ---------------------------------------------------------------- where a run's data comes from

def _data_copy(data_dir, where):
    """A read-only copy of the Omniglot zips (read-only: the caches stay in the user cache)."""
    shutil.copytree(data_dir / "omniglot", where / "omniglot")
    for d in (where / "omniglot", where):
        d.chmod(0o555)
    return where


def _writable(folder):
    for d in (folder, folder / "omniglot"):
        d.chmod(0o755)


def test_a_run_takes_the_data_folder_it_recorded(data_dir, tmp_path, monkeypatch, capsys):
    """train.py --data-dir DIR, then --resume, evaluate and memviz without the flag looked in
    ./data and stopped with 'missing data file(s)'."""
    monkeypatch.delenv("FLMN_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)                                     # no ./data here
    out = tmp_path / "run"
    assert train_in_process(tiny_flags(data_dir.resolve(), out, **{"--steps": 4})) == 0
    record = json.loads((out / "config.json").read_text())
    assert record["data"]["folder"] == str(data_dir.resolve())
    assert record["config"]["data_dir"] is None                    # an absolute path is not kept
    assert train_in_process(["--out", str(out), "--resume", "--steps", str(STEPS)]) == 0
    assert load_checkpoint(out / "checkpoint.npz").step == STEPS
    assert evaluate_main([str(out), "--episodes", "2", "--json", str(tmp_path / "e.json")]) == 0
    assert memviz_main([str(out), "--out", str(tmp_path / "m.png")]) == 0
    assert "no longer holds" not in capsys.readouterr().out


def test_a_moved_data_folder_falls_back_and_says_so(data_dir, tmp_path, monkeypatch, capsys):
    copy = _data_copy(data_dir, tmp_path / "copy")
    out = tmp_path / "run"
    try:
        assert train_in_process(tiny_flags(copy, out, **{"--steps": 2})) == 0
    finally:
        _writable(copy)
    shutil.rmtree(copy)
    monkeypatch.setenv("FLMN_DATA_DIR", str(data_dir))
    capsys.readouterr()
    assert evaluate_main([str(out), "--episodes", "2", "--json", str(tmp_path / "e.json")]) == 0
    said = capsys.readouterr().out
    assert f"{copy}, recorded by the run, no longer holds its files" in said
    assert f"using {data_dir} ($FLMN_DATA_DIR)" in said


def test_a_run_recorded_without_a_folder_still_resumes(tiny_run, data_dir, tmp_path, monkeypatch):
    """Runs written before the folder was recorded: data {chosen_by, dir, sha256} only."""
    out = tmp_path / "old"
    shutil.copytree(tiny_run, out)
    record = json.loads((out / "config.json").read_text())
    del record["data"]["folder"]
    (out / "config.json").write_text(json.dumps(record))
    monkeypatch.setenv("FLMN_DATA_DIR", str(data_dir))
    assert train_in_process(["--out", str(out), "--resume", "--steps", str(STEPS + 2)]) == 0
    assert evaluate_main([str(out), "--episodes", "2", "--json", str(tmp_path / "e.json")]) == 0


def test_strip_removes_the_data_folder_from_a_published_run(tiny_run, data_dir, tmp_path):
    out = tmp_path / "published"
    shutil.copytree(tiny_run, out)
    assert "folder" in json.loads((out / "config.json").read_text())["data"]
    assert checkpoint_main(["strip", str(out / "checkpoint.npz")]) == 0
    text = (out / "config.json").read_text()
    data = json.loads(text)["data"]
    assert "folder" not in data and set(data) == {"chosen_by", "dir", "sha256"}
    assert str(data_dir.resolve()) not in text and str(data_dir) not in text
    assert str(data_dir.resolve()) not in (out / "config.json").read_text()
